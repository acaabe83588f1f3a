"""Raw MQTT 3.1.1 packets for tests, written independently of firmware/ubroker/codec.py so
that a codec bug cannot hide itself: builders for every packet a client sends, and a blocking
socket client that reads whole packets back."""

import socket
import struct
import time


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def s(x):
    if isinstance(x, str):
        x = x.encode()
    return struct.pack("!H", len(x)) + x


def packet(b0, body):
    return bytes((b0,)) + varint(len(body)) + body


def connect(client_id="", clean=True, keepalive=60, will=None, username=None, password=None,
            proto=b"MQTT", level=4, flags=None):
    """will: (topic, payload, qos, retain)."""
    f = 0x02 if clean else 0
    payload = s(client_id)
    if will is not None:
        topic, msg, qos, retain = will
        f |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += s(topic) + s(msg)
    if username is not None:
        f |= 0x80
        payload += s(username)
    if password is not None:
        f |= 0x40
        payload += s(password)
    if flags is not None:
        f = flags
    return packet(0x10, s(proto) + bytes((level, f)) + struct.pack("!H", keepalive) + payload)


def publish(topic, payload=b"", qos=0, retain=False, dup=False, pid=1):
    b0 = 0x30 | (qos << 1) | (1 if retain else 0) | (8 if dup else 0)
    body = s(topic) + (struct.pack("!H", pid) if qos else b"") + payload
    return packet(b0, body)


def subscribe(pid, *filters):
    """filters: (filter, qos) pairs."""
    return packet(0x82, struct.pack("!H", pid) + b"".join(s(f) + bytes((q,)) for f, q in filters))


def unsubscribe(pid, *filters):
    return packet(0xA2, struct.pack("!H", pid) + b"".join(s(f) for f in filters))


def puback(pid):
    return packet(0x40, struct.pack("!H", pid))


def pubrec(pid):
    return packet(0x50, struct.pack("!H", pid))


def pubrel(pid):
    return packet(0x62, struct.pack("!H", pid))


def pubcomp(pid):
    return packet(0x70, struct.pack("!H", pid))


PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"


class Packet:
    def __init__(self, b0, body):
        self.b0 = b0
        self.type = b0 >> 4
        self.flags = b0 & 0x0F
        self.body = body

    @property
    def qos(self):
        return (self.b0 >> 1) & 3

    @property
    def retain(self):
        return bool(self.b0 & 1)

    @property
    def dup(self):
        return bool(self.b0 & 8)

    @property
    def topic(self):
        n = struct.unpack("!H", self.body[:2])[0]
        return self.body[2:2 + n]

    @property
    def pid(self):
        if self.type == 3:
            n = struct.unpack("!H", self.body[:2])[0]
            return struct.unpack("!H", self.body[2 + n:4 + n])[0] if self.qos else None
        return struct.unpack("!H", self.body[:2])[0]

    @property
    def payload(self):
        n = struct.unpack("!H", self.body[:2])[0]
        return self.body[2 + n + (2 if self.qos else 0):]

    def __repr__(self):
        return "Packet(0x%02x, %r)" % (self.b0, self.body)


class RawClient:
    """A blocking socket that speaks bytes; recv_packet() returns one whole Packet or None
    when the broker closed the connection."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0  # start of unread bytes in buf

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, n):
        while len(self.buf) - self.pos < n:
            if self.pos > 65536:
                del self.buf[:self.pos]
                self.pos = 0
            chunk = self.sock.recv(262144)
            if not chunk:
                return False
            self.buf += chunk
        return True

    def recv_packet(self, timeout=None):
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            if not self._fill(2):
                return None
            mult, rl, i = 1, 0, 1
            while True:
                if not self._fill(i + 1):
                    return None
                b = self.buf[self.pos + i]
                rl += (b & 0x7F) * mult
                mult *= 128
                i += 1
                if not b & 0x80:
                    break
            if not self._fill(i + rl):
                return None
            at = self.pos
            p = Packet(self.buf[at], bytes(self.buf[at + i:at + i + rl]))
            self.pos = at + i + rl
            return p
        except ConnectionResetError:
            return None

    def expect(self, ptype, timeout=5.0):
        p = self.recv_packet(timeout)
        assert p is not None, "connection closed while waiting for packet type %d" % ptype
        assert p.type == ptype, "expected packet type %d, got %r" % (ptype, p)
        return p

    def connect(self, client_id="", **kw):
        """CONNECT and return the CONNACK (session present, return code)."""
        self.send(connect(client_id, **kw))
        p = self.expect(2)
        return p.body[0], p.body[1]

    def closed(self, timeout=5.0):
        """True when the broker closes the connection within timeout (any packets it sends
        first are skipped)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                p = self.recv_packet(max(0.05, deadline - time.time()))
            except socket.timeout:
                return False
            except OSError:
                return True
            if p is None:
                return True
        return False

    def close(self):
        self.sock.close()
