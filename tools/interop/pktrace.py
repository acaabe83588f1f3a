"""A loopback TCP proxy that writes the MQTT packets passing through it, one short line each
(time, connection, direction, packet type and the fields that tell an exchange apart), so a
failing paho test can be read as the packet exchange it was. run.py --trace puts it between a
paho suite and the broker."""

import socket
import struct
import threading
import time

NAMES = ("?", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP", "SUBSCRIBE",
         "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT", "AUTH")


def _varint(data, i):
    n = shift = 0
    while True:
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def _string(data, i):
    n = struct.unpack_from("!H", data, i)[0]
    return data[i + 2:i + 2 + n].decode("utf-8", "replace"), i + 2 + n


def describe(head, body, conn):
    """One line for one packet; conn is the connection's dict (its protocol level)."""
    kind = head >> 4
    name = NAMES[kind]
    v5 = conn.get("level") == 5
    try:
        if kind == 1:
            _proto, i = _string(body, 0)
            level, flags, keepalive = body[i], body[i + 1], struct.unpack_from("!H", body, i + 2)[0]
            conn["level"] = level
            i += 4
            if level == 5:
                n, i = _varint(body, i)
                i += n
            cid, i = _string(body, i)
            return "%s v%d id=%r clean=%d will=%d keepalive=%d" % (name, level, cid, flags >> 1 & 1, flags >> 2 & 1,
                                                                    keepalive)
        if kind == 2:
            return "%s sp=%d rc=0x%02x%s" % (name, body[0] & 1, body[1], " props=%dB" % (len(body) - 3) if v5 else "")
        if kind == 3:
            qos = head >> 1 & 3
            topic, i = _string(body, 0)
            mid = ""
            if qos:
                mid = " id=%d" % struct.unpack_from("!H", body, i)[0]
                i += 2
            if v5:
                n, j = _varint(body, i)
                i = j + n
            return "%s q%d%s%s%s %r %dB" % (name, qos, " r" if head & 1 else "", " dup" if head & 8 else "", mid,
                                            topic, len(body) - i)
        if kind in (4, 5, 6, 7, 11):
            rc = " rc=0x%02x" % body[2] if len(body) > 2 else ""
            return "%s id=%d%s" % (name, struct.unpack_from("!H", body, 0)[0], rc)
        if kind in (8, 10):
            i = 2
            if v5:
                n, i = _varint(body, i)
                i += n
            filters = []
            while i < len(body):
                f, i = _string(body, i)
                if kind == 8:
                    f += ":%d" % body[i]
                    i += 1
                filters.append(f)
            return "%s id=%d %s" % (name, struct.unpack_from("!H", body, 0)[0], " ".join(filters))
        if kind == 9:
            i = 2
            if v5:
                n, i = _varint(body, i)
                i += n
            return "%s id=%d codes=%s" % (name, struct.unpack_from("!H", body, 0)[0],
                                           ",".join("0x%02x" % c for c in body[i:]))
        if kind == 14 and body:
            return "%s rc=0x%02x" % (name, body[0])
    except (IndexError, struct.error):
        return "%s (undecodable, %dB)" % (name, len(body))
    return name


class Tracer:
    """Listens on a free loopback port and relays each connection to target_port, writing
    to out (a text file) as packets pass."""

    def __init__(self, target_port, out):
        self.target = target_port
        self.out = out
        self.lock = threading.Lock()
        self.count = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def write(self, line):
        with self.lock:
            self.out.write("%.3f %s\n" % (time.time(), line))
            self.out.flush()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.count += 1
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError as e:
                self.write("c%d refused by the broker: %s" % (self.count, e))
                client.close()
                continue
            conn = {}
            for src, dst, arrow in ((client, server, ">"), (server, client, "<")):
                threading.Thread(target=self._pump, args=(src, dst, "c%d %s" % (self.count, arrow), conn),
                                 daemon=True).start()

    def _pump(self, src, dst, tag, conn):
        buf = b""
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                self.write("%s closed" % tag)
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            buf += data
            while len(buf) >= 2:
                try:
                    n, i = _varint(buf, 1)
                except IndexError:
                    break
                if len(buf) < i + n:
                    break
                self.write("%s %s" % (tag, describe(buf[0], buf[i:i + n], conn)))
                buf = buf[i + n:]
            try:
                dst.sendall(data)
            except OSError:
                self.write("%s could not be relayed" % tag)
                return

    def close(self):
        self.sock.close()


def window(path, start, end, limit=80):
    """The lines of trace file `path` written between start and end (epoch seconds), their
    times made relative to start; the first `limit` of them."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                t, _, rest = line.partition(" ")
                if start <= float(t) <= end + 0.5:
                    out.append("%7.3f %s" % (float(t) - start, rest.rstrip()))
    except (OSError, ValueError):
        pass
    if len(out) > limit:
        out = out[:limit] + ["... %d lines more" % (len(out) - limit)]
    return out
