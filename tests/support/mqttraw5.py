"""Raw MQTT 5.0 packets for tests, written from the standard (OASIS MQTT 5.0, sections 2-3)
and independently of firmware/ubroker/v5_codec.py, so that a codec bug cannot hide itself:
builders for the packets a client sends, with properties given as (identifier, value) pairs,
and readers for what the server sends back. The socket client is mqttraw's RawClient."""

import json
import os
import struct
import time

import pytest

import mqttraw
from mqttraw import RawClient, varint

# Property identifiers (MQTT 5.0 table 2-4) and their value types
PAYLOAD_FORMAT = 0x01
MESSAGE_EXPIRY = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_ID = 0x0B
SESSION_EXPIRY = 0x11
ASSIGNED_CLIENT_ID = 0x12
SERVER_KEEP_ALIVE = 0x13
AUTH_METHOD = 0x15
AUTH_DATA = 0x16
REQUEST_PROBLEM = 0x17
WILL_DELAY = 0x18
REQUEST_RESPONSE = 0x19
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
WILDCARD_AVAILABLE = 0x28
SUBSCRIPTION_ID_AVAILABLE = 0x29
SHARED_AVAILABLE = 0x2A

_TYPES = {
    0x01: "byte", 0x02: "u32", 0x03: "str", 0x08: "str", 0x09: "bin", 0x0B: "vbi", 0x11: "u32",
    0x12: "str", 0x13: "u16", 0x15: "str", 0x16: "bin", 0x17: "byte", 0x18: "u32", 0x19: "byte",
    0x1A: "str", 0x1C: "str", 0x1F: "str", 0x21: "u16", 0x22: "u16", 0x23: "u16", 0x24: "byte",
    0x25: "byte", 0x26: "pair", 0x27: "u32", 0x28: "byte", 0x29: "byte", 0x2A: "byte",
}

CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, PINGRESP, DISCONNECT = \
    2, 3, 4, 5, 6, 7, 9, 11, 13, 14


def s(x):
    if isinstance(x, str):
        x = x.encode()
    return struct.pack("!H", len(x)) + x


def props(pairs=()):
    """A property block: its length, then each (identifier, value). A raw bytes value is
    written as it is (for malformed values)."""
    body = b""
    for pid, value in pairs:
        body += bytes((pid,))
        if isinstance(value, (bytes, bytearray)) and _TYPES.get(pid) not in ("str", "bin"):
            body += bytes(value)
            continue
        t = _TYPES[pid]
        if t == "byte":
            body += bytes((value,))
        elif t == "u16":
            body += struct.pack("!H", value)
        elif t == "u32":
            body += struct.pack("!I", value)
        elif t == "vbi":
            body += varint(value)
        elif t in ("str", "bin"):
            body += s(value)
        else:
            body += s(value[0]) + s(value[1])
    return varint(len(body)) + body


def packet(b0, body):
    return bytes((b0,)) + varint(len(body)) + body


def connect(client_id="", clean_start=True, keepalive=60, properties=(), will=None, username=None,
            password=None, flags=None, level=5):
    """will: (topic, payload, qos, retain, properties)."""
    f = 0x02 if clean_start else 0
    payload = s(client_id)
    if will is not None:
        topic, msg, qos, retain, wprops = will
        f |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += props(wprops) + s(topic) + s(msg)
    if username is not None:
        f |= 0x80
        payload += s(username)
    if password is not None:
        f |= 0x40
        payload += s(password)
    if flags is not None:
        f = flags
    return packet(0x10, s(b"MQTT") + bytes((level, f)) + struct.pack("!H", keepalive) + props(properties) + payload)


def publish(topic, payload=b"", qos=0, retain=False, dup=False, pid=1, properties=()):
    b0 = 0x30 | (qos << 1) | (1 if retain else 0) | (8 if dup else 0)
    return packet(b0, s(topic) + (struct.pack("!H", pid) if qos else b"") + props(properties) + payload)


def subscribe(pid, *filters, properties=()):
    """filters: (filter, options byte) pairs: QoS | 4 No Local | 8 Retain As Published |
    Retain Handling << 4."""
    return packet(0x82, struct.pack("!H", pid) + props(properties) + b"".join(s(f) + bytes((o,)) for f, o in filters))


def unsubscribe(pid, *filters, properties=()):
    return packet(0xA2, struct.pack("!H", pid) + props(properties) + b"".join(s(f) for f in filters))


def ack(ptype, pid, code=None, properties=None):
    """PUBACK/PUBREC/PUBREL/PUBCOMP; code None: the short form without a reason code."""
    body = struct.pack("!H", pid)
    if code is not None:
        body += bytes((code,))
        if properties is not None:
            body += props(properties)
    return packet((ptype << 4) | (2 if ptype == PUBREL else 0), body)


def disconnect(code=None, properties=None):
    body = b""
    if code is not None:
        body = bytes((code,))
        if properties is not None:
            body += props(properties)
    return packet(0xE0, body)


# ------------------------------------------------------------------ reading


def _vbi(b, i):
    value, mult = 0, 1
    while True:
        x = b[i]
        i += 1
        value += (x & 0x7F) * mult
        mult *= 128
        if not x & 0x80:
            return value, i


def read_props(b, i):
    """(list of (identifier, value), position after the block)."""
    n, i = _vbi(b, i)
    end = i + n
    out = []
    while i < end:
        pid = b[i]
        i += 1
        assert pid in _TYPES, "malformed property block (section 2.2.2.2): identifier 0x%02x at %d of %r" % (
            pid, i - 1, bytes(b))
        t = _TYPES[pid]
        if t == "byte":
            v = b[i]
            i += 1
        elif t == "u16":
            v = struct.unpack("!H", b[i:i + 2])[0]
            i += 2
        elif t == "u32":
            v = struct.unpack("!I", b[i:i + 4])[0]
            i += 4
        elif t == "vbi":
            v, i = _vbi(b, i)
        else:
            k = struct.unpack("!H", b[i:i + 2])[0]
            v = bytes(b[i + 2:i + 2 + k])
            i += 2 + k
            if t == "pair":
                k = struct.unpack("!H", b[i:i + 2])[0]
                v = (v, bytes(b[i + 2:i + 2 + k]))
                i += 2 + k
        out.append((pid, v))
    assert i == end, "property block overrun"
    return out, end


def prop(pairs, pid, default=None):
    vals = [v for k, v in pairs if k == pid]
    assert len(vals) <= 1 or pid in (USER_PROPERTY, SUBSCRIPTION_ID), "property 0x%02x twice" % pid
    return vals[0] if vals else default


class Connack:
    def __init__(self, p):
        assert p.type == CONNACK, p
        self.present = p.body[0]
        self.code = p.body[1]
        self.props, end = read_props(p.body, 2) if len(p.body) > 2 else ([], 2)
        assert end == len(p.body)


class Publish:
    def __init__(self, p):
        assert p.type == PUBLISH, p
        b = p.body
        self.qos, self.retain, self.dup = p.qos, p.retain, p.dup
        n = struct.unpack("!H", b[:2])[0]
        self.topic = bytes(b[2:2 + n])
        i = 2 + n
        self.pid = None
        if self.qos:
            self.pid = struct.unpack("!H", b[i:i + 2])[0]
            i += 2
        self.props, i = read_props(b, i)
        self.payload = bytes(b[i:])


class Ack:
    """PUBACK/PUBREC/PUBREL/PUBCOMP, or SUBACK/UNSUBACK (codes: one per filter), or
    DISCONNECT (pid None)."""

    def __init__(self, p):
        b = p.body
        self.type = p.type
        self.props = []
        if p.type == DISCONNECT:
            self.pid = None
            self.code = b[0] if b else 0
            if len(b) > 1:
                self.props, _ = read_props(b, 1)
            return
        self.pid = struct.unpack("!H", b[:2])[0]
        if p.type in (SUBACK, UNSUBACK):
            self.props, i = read_props(b, 2)
            self.codes = list(b[i:])
            return
        self.code = b[2] if len(b) > 2 else 0
        if len(b) > 3:
            self.props, _ = read_props(b, 3)


class Client5(RawClient):
    def connect5(self, client_id="", **kw):
        self.send(connect(client_id, **kw))
        return Connack(self.expect(CONNACK))

    def next(self, ptype, timeout=5.0):
        p = self.expect(ptype, timeout)
        return Publish(p) if ptype == PUBLISH else Connack(p) if ptype == CONNACK else Ack(p)

    def disconnected(self, timeout=5.0):
        """The reason code of the DISCONNECT the server sends before closing, or None when it
        closed without one; asserts that it closes."""
        p = self.recv_packet(timeout)
        code = None
        if p is not None:
            assert p.type == DISCONNECT, "expected DISCONNECT, got %r" % p
            code = Ack(p).code
        assert self.closed(timeout), "server did not close the connection"
        return code


# ------------------------------------------------------------------ a 3.1.1 client away, and back

def away_311(broker, cid, flt):
    """A 3.1.1 session (clean session 0) subscribed to flt at QoS 1, left offline."""
    c = broker.raw()
    assert c.connect(cid, clean=False) == (0, 0)
    c.send(mqttraw.subscribe(1, (flt, 1)))
    c.expect(9)
    c.send(mqttraw.DISCONNECT)
    c.close()


def back_311_gets_only(broker, cid, payload):
    """The 3.1.1 session cid taken back (session present) gets one message, payload, and
    nothing after it (nothing before the answer to a PINGREQ)."""
    c = broker.raw()
    assert c.connect(cid, clean=False) == (1, 0)
    got = c.expect(3)
    assert got.payload == payload
    c.send(mqttraw.puback(got.pid))
    c.send(mqttraw.PINGREQ)
    c.expect(13)


def expiry_while_away_311(broker, cid, flt, prefix):
    """MQTT-3.3.2-5 for an offline 3.1.1 session (away_311) subscribed to flt: a v5 client
    publishes QoS 1 PREFIX/short (Message Expiry 1 s) and PREFIX/long (100 s); after 2.2 s
    the session taken back gets PREFIX/long only."""
    away_311(broker, cid, flt)
    p = connected(broker, "pub-" + cid)
    for pid, (name, expiry) in enumerate((("short", 1), ("long", 100)), 1):
        topic = "%s/%s" % (prefix, name)
        p.send(publish(topic, topic.encode(), qos=1, pid=pid, properties=[(MESSAGE_EXPIRY, expiry)]))
        p.next(PUBACK)
    time.sleep(2.2)
    back_311_gets_only(broker, cid, ("%s/long" % prefix).encode())


# ------------------------------------------------------------------ fixtures for the v5 tests

def board_heap_on_64_bits(board="esp32"):
    """A board's heap_budget scaled to the 64-bit unix port: by what the broker holds at start
    there over what it holds on 32 bits, where the boards are (tools/heap32/figures.json,
    measured in `make test`): esp32, 102,400 x 61,120 / 43,840 = 142,762 B. Objects are larger on
    64 bits (a word per pointer), the bytecode is not; the v5 modules and their clients, at the
    edge of the 64-bit port's 100k, get the room the board's own heap gives them."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "tools", "heap32", "figures.json")) as f:
        b = json.load(f)["boards"][board]
    off = "store_off"
    return str(b["heap_budget"] * b["64"][off]["start_broker"] // b["32"][off]["start_broker"])


# The smallest board's profile, on the 64-bit port with the heap that board's 32-bit heap
# amounts to there (the 3.1.1 tests run it at 100k, stricter than the board), and with pooled
# output buffers (docs/mqtt5.md).
PROFILES = {"esp32": (None, board_heap_on_64_bits()), "esp32+pool": ("buffer_pool_size 8\n", "128k")}


@pytest.fixture(params=sorted(PROFILES), name="broker")
def broker5(request, broker_factory):
    """`broker` in the modules that import this: a broker with the smallest board's profile,
    with and without pooled output buffers."""
    config, heap = PROFILES[request.param]
    return broker_factory(config=config, heap=heap)


def connected(broker, cid, **kw):
    """A v5 client whose CONNECT got CONNACK 0, closed with the broker."""
    c = Client5(broker.port)
    broker._clients.append(c)
    ack = c.connect5(cid, **kw)
    assert ack.code == 0, "CONNACK 0x%02x" % ack.code
    return c


# ------------------------------------------------------------------ reading up to a marker

# A test shows that something was NOT delivered by publishing to MARK afterwards and checking
# what came before it (no sleeping): the server keeps a subscriber's order.
MARK = "zz/mark"


def until_mark(c, timeout=5.0):
    """The PUBLISHes c receives before one on MARK, acknowledged as a client must (a PUBREL
    may come after the MARK)."""
    got = []
    while True:
        raw = c.recv_packet(timeout)
        assert raw is not None, "the server closed the subscriber's connection"
        if raw.type == PUBREL:
            c.send(ack(PUBCOMP, Ack(raw).pid))
            continue
        p = Publish(raw)
        if p.topic == MARK.encode():
            return got
        got.append(p)
        if p.qos == 1:
            c.send(ack(PUBACK, p.pid))
        elif p.qos == 2:
            c.send(ack(PUBREC, p.pid))
