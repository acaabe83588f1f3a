"""The MQTT 5 fan-in of `ubroker bench` (scenario `fanin1v5`): PUBS publishers at QoS 1, each
with WINDOW messages unacknowledged at most, to one subscriber, all at protocol level 5 with
raw packets encoded once up front; every PUBLISH carries a user property, so the broker's
property path is measured, not only the v5 framing. bench/loadgen speaks 3.1.1 only; this
client is CPython in one selector loop, so a broker faster than it is measured at the
client's pace (it moved about 170,000 msg/s through Mosquitto here, 30,000 through ubroker's
unix profile). Verifies as loadgen does: every
acknowledged message arrives, none twice, each publisher's in order."""

import selectors
import socket
import struct
import time

from .bench_rawmqtt import _packet, _str, decode_length

PUBS = 8
WINDOW = 20
TOPIC = b"bench/v5/%d"
USER = b"\x26" + _str(b"bench") + _str(b"v5")  # a User Property on every message


def _connect5(cid):
    return _packet(0x10, b"\x00\x04MQTT\x05\x02\x00\x3c\x00" + _str(cid))


def _publish5(topic, pub, seq):
    pid = seq % 65535 + 1
    props = bytes((len(USER),)) + USER
    return _packet(0x32, _str(topic) + struct.pack(">H", pid) + props + struct.pack(">BI", pub, seq).ljust(16, b"."))


def _open(port, cid, sub=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(_connect5(cid))
    head = s.recv(2)
    if len(head) < 2 or head[0] != 0x20:
        raise OSError("%s: no CONNACK" % cid)
    body = b""
    while len(body) < head[1]:
        body += s.recv(head[1] - len(body))
    if body[1] != 0:
        raise OSError("%s: CONNACK reason 0x%02x" % (cid, body[1]))
    if sub is not None:
        s.sendall(_packet(0x82, b"\x00\x01\x00" + _str(sub) + b"\x01"))
        s.recv(64)  # SUBACK
    # Blocking writes (a window is about 1 kB, far below the socket's buffer); reads only
    # when the selector says there is something
    s.settimeout(10)
    return s


def _packets(buf):
    """(first byte, body) of each whole packet at the start of buf, and what is left."""
    out = []
    pos = 0
    n = len(buf)
    while n - pos >= 2:
        rl, p = decode_length(buf, pos + 1, n)
        if rl < 0 or p + rl > n:
            break
        out.append((buf[pos], buf[p:p + rl]))
        pos = p + rl
    return out, buf[pos:]


def fanin_v5(port, duration, drain=10.0):
    """Run the fan-in; returns loadgen-like figures (rate in msg/s delivered, sent, acked,
    unique, lost_acked, duplicates, out_of_order, end)."""
    sub = _open(port, b"v5-sub", TOPIC.replace(b"%d", b"#"))
    pubs = [_open(port, b"v5-pub-%d" % i) for i in range(PUBS)]
    sel = selectors.DefaultSelector()
    sel.register(sub, selectors.EVENT_READ, -1)
    for i, s in enumerate(pubs):
        sel.register(s, selectors.EVENT_READ, i)
    rx = {k: b"" for k in range(-1, PUBS)}
    seq = [0] * PUBS
    inflight = [0] * PUBS
    acked = 0
    last = [-1] * PUBS
    got = dup = disorder = 0
    t0 = time.time()
    stop = t0 + duration
    t_last = t0
    idle_since = None
    end = "complete"
    while True:
        now = time.time()
        sending = now < stop
        if sending:
            for i, s in enumerate(pubs):
                k = WINDOW - inflight[i]
                if k > 0:
                    s.sendall(b"".join(_publish5(TOPIC % i, i, seq[i] + j) for j in range(k)))
                    seq[i] += k
                    inflight[i] += k
        elif got >= acked and not any(inflight):
            break
        events = sel.select(0.05)
        if not events and not sending:
            idle_since = idle_since or now
            if now - idle_since > 5 or now - stop > drain:
                end = "stalled"
                break
            continue
        idle_since = None
        for key, _ in events:
            who = key.data
            data = key.fileobj.recv(65536)
            if not data:
                raise OSError("the broker closed a v5 bench client")
            pkts, rx[who] = _packets(rx[who] + data)
            if who >= 0:
                for b0, _body in pkts:
                    if b0 >> 4 == 4:  # PUBACK, with or without a reason code
                        inflight[who] -= 1
                        acked += 1
                continue
            acks = []
            for b0, body in pkts:
                if b0 >> 4 != 3:
                    continue
                tl = (body[0] << 8) | body[1]
                p = 2 + tl
                pid = body[p:p + 2]
                n, q = decode_length(body, p + 2, len(body))
                pub, s_ = struct.unpack_from(">BI", body, q + n)
                got += 1
                if s_ <= last[pub]:
                    dup += 1
                elif s_ != last[pub] + 1:
                    disorder += 1
                if s_ > last[pub]:
                    last[pub] = s_
                acks.append(b"\x40\x02" + pid)
            if acks:
                sub.sendall(b"".join(acks))
                t_last = time.time()
    for s in pubs + [sub]:
        s.close()
    sent = sum(seq)
    span = max(t_last - t0, 1e-6)
    return {"rate": round((got - dup) / span), "sent": sent, "acked": acked, "unique": got - dup,
            "lost_acked": max(0, acked - (got - dup)), "duplicates": dup, "out_of_order": disorder,
            "qos": 1, "end": end}
