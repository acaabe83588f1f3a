"""The real broker (firmware/ubroker) driven in one MicroPython process, without sockets: each
client is a fake socket that records what the broker writes, and a pass of the server loop is
run by hand (feed bytes, then the persist tick/commit and the flush the loop would do). Used
by the power-cut sweeps and wear measurements, which need thousands of broker restarts on an
emulated flash chip: a process and a TCP port per restart would be far too slow. tools/heap32
measures the broker's heap through it too (in a 32-bit MicroPython as well), store off or on.

Also holds the MQTT client model the durability checks need: a subscriber that acknowledges
what it gets, delivering QoS 2 messages on PUBREL (the receiver's "method B" of MQTT 4.3.3),
whose state survives a broker restart as a real client's would."""

import struct
import time

from ubroker import codec
from ubroker.config import resolve
from ubroker.server import Server
from ubroker.session import Conn


def config(path, **kw):
    cfg = resolve(
        {
            "persistence": True,
            "persistence_location": path,
            "store_size": 96 * 1024,
            "sys_interval": 0,
            "max_queued_messages": 200,
        }
    )
    cfg.update(kw)
    cfg["verbose"] = False
    return cfg


class FakeSock:
    def __init__(self):
        self.data = bytearray()
        self.closed = False

    def write(self, b):
        if self.closed:
            raise OSError(32)
        self.data.extend(b)
        return len(b)

    def close(self):
        self.closed = True


def _s(x):
    return struct.pack(">H", len(x)) + x


def connect_pkt(cid, clean, keepalive=0):
    body = _s(b"MQTT") + bytes((4, 2 if clean else 0, keepalive >> 8, keepalive & 255)) + _s(cid)
    out = bytearray((0x10,))
    codec.put_length(out, len(body))
    return bytes(out) + body


def subscribe_pkt(pid, flt, qos):
    body = struct.pack(">H", pid) + _s(flt) + bytes((qos,))
    out = bytearray((0x82,))
    codec.put_length(out, len(body))
    return bytes(out) + body


class Sim:
    def __init__(self, cfg, server=None):
        """A server for cfg, or server: one built already (tools/heap32 measures the heap it
        took before handing it over). Its durable store, if it has one, starts here."""
        self.sv = Server(cfg, lambda m: None) if server is None else server
        self.sv._mask = lambda c: None  # no poll registrations for fake sockets
        if self.sv.persist is not None:
            self.sv.persist.start()

    def feed(self, conn, data):
        sv = self.sv
        if conn.sock is None:
            return
        rx = conn.rx
        have = 0
        if rx is not None:
            have = len(rx)
            sv.rbuf[:have] = rx
            conn.rx = None
        sv.rbuf[have : have + len(data)] = data
        sv.consume(conn, have + len(data))
        self.end_pass()

    def end_pass(self):
        sv = self.sv
        sv.now = time.ticks_ms()
        if sv.broker.freed:
            sv.resume()
        p = sv.persist
        if p is not None:
            p.tick(sv.now)
            p.commit()
        sv.flush()

    def drop(self, conn):
        """The client's connection breaks (no DISCONNECT)."""
        self.sv.close(conn, "test: connection lost")
        self.end_pass()


class Client:
    """A client on a fake socket: send() feeds the broker, packets() returns what it wrote."""

    def __init__(self, sim, cid, clean=True, keepalive=0):
        self.sim = sim
        self.sock = FakeSock()
        self.conn = Conn(self.sock, sim.sv.now)
        sim.sv.conns[self.sock] = self.conn
        self.early = []
        self.send(connect_pkt(cid, clean, keepalive))
        p = self.packets()
        assert p and p[0][0] == 2 and p[0][2][1] == 0, p
        self.present = p[0][2][0]
        self.early = p[1:]  # what came with the CONNACK (resent messages), for packets()

    def send(self, data):
        self.sim.feed(self.conn, data)

    def packets(self):
        out = self.early
        self.early = []
        data = self.sock.data
        pos = 0
        while pos < len(data):
            rl, p = codec.decode_length(data, pos + 1, len(data))
            out.append((data[pos] >> 4, data[pos] & 15, bytes(data[p : p + rl])))
            pos = p + rl
        self.sock.data = bytearray()
        return out

    def drop(self):
        self.sim.drop(self.conn)


def publish_body(body, qos):
    n = (body[0] << 8) | body[1]
    topic = body[2 : 2 + n]
    pid = (body[2 + n] << 8) | body[3 + n] if qos else 0
    return topic, pid, body[2 + n + (2 if qos else 0) :]


class Subscriber:
    """What a subscribing client knows: delivered payloads (with counts) and QoS 2 messages
    received but not yet released (pid -> payload). Its state lives in a plain dict so that it
    survives the broker's restart, as the real client's would."""

    def __init__(self, state):
        self.st = state
        state.setdefault("delivered", {})
        state.setdefault("pending2", {})

    def take(self, client, ack=True, limit=None):
        """Handle what the broker sent; acknowledge (if ack) at most limit PUBLISHes."""
        st = self.st
        n = 0
        progress = True
        while progress:
            progress = False
            for ptype, flags, body in client.packets():
                progress = True
                if ptype == 3:
                    qos = (flags >> 1) & 3
                    topic, pid, payload = publish_body(body, qos)
                    if limit is not None and n >= limit:
                        continue
                    n += 1
                    if qos == 2:
                        # A PUBLISH for an id already received is the same message again.
                        if pid not in st["pending2"]:
                            st["pending2"][pid] = payload
                        if ack:
                            client.send(codec.ack(codec.PUBREC, pid))
                    else:
                        self._deliver(payload)
                        if ack and qos == 1:
                            client.send(codec.ack(codec.PUBACK, pid))
                elif ptype == 6:  # PUBREL: deliver now (method B), then complete
                    pid = struct.unpack(">H", body)[0]
                    payload = st["pending2"].pop(pid, None)
                    if payload is not None:
                        self._deliver(payload)
                    client.send(codec.ack(codec.PUBCOMP, pid))
        return n

    def _deliver(self, payload):
        d = self.st["delivered"]
        d[payload] = d.get(payload, 0) + 1


def encode_publish(topic, payload, qos=0, retain=False, dup=False, pid=0):
    """A PUBLISH packet (the broker encodes its own inline, in Broker._write_publish)."""
    out = bytearray((0x30 | (8 if dup else 0) | (qos << 1) | (1 if retain else 0),))
    codec.put_length(out, 2 + len(topic) + len(payload) + (2 if qos else 0))
    out += struct.pack(">H", len(topic)) + topic
    if qos:
        out += struct.pack(">H", pid)
    return bytes(out + payload)


def publish(client, acked, topic, payload, qos, pid):
    """Publish and run the publisher's side of the handshake; a payload goes into acked once
    the broker acknowledged it (PUBACK, or PUBREC for QoS 2), which may come later, while a
    later message is published."""
    if not hasattr(client, "unacked"):
        client.unacked = {}
    client.unacked[pid] = payload
    client.send(encode_publish(topic, payload, qos, False, False, pid))
    collect_acks(client, acked)


def collect_acks(client, acked):
    for ptype, flags, body in client.packets():
        if ptype in (4, 5):
            pid = struct.unpack(">H", body)[0]
            acked.append(client.unacked.pop(pid))
            if ptype == 5:
                client.send(codec.ack(codec.PUBREL, pid))
                client.packets()
