"""MQTT 5.0 wire format: properties (read, checked against the packet that carries them, and
written back), reason codes, and the v5 forms of CONNACK, the acknowledgements, SUBACK,
UNSUBACK and DISCONNECT. No I/O and no state.

Design (issue 15, phase 1; docs/mqtt5.md): MQTT 5 is a feature group of its own, the `v5_`
modules, imported by protocol.py when the first CONNECT with protocol level 5 arrives, so a
board that never sees a v5 client carries none of it in its heap. The 3.1.1 modules keep
their paths and gain only hooks on fields that exist on v5 objects alone (Conn.v5,
Session.v5, Broker.v5, a subscription's QoS with the v5 mark in the index). A Malformed
raised here carries the reason code as its second argument (0x81 when it has none); the v5
handlers turn it into CONNACK or DISCONNECT with that code before closing."""

from micropython import const

from .codec import Malformed, check_utf8, decode_length, put_length

# Reason codes are written as numbers where they are sent, each with its name beside it
# (MQTT 5.0 section 2.4; the list is in docs/mqtt5.md): a public const here would be a global
# of this module and of every module importing it.
_PROTOCOL_ERROR = const(0x82)

# Property identifiers (MQTT 5.0 table 2-4) this module treats apart
_EXPIRY = const(0x02)
_ALIAS = const(0x23)
_WILL_DELAY = const(0x18)

# Where a property may appear, as bits of the packet kinds a client sends (the `where` of
# props(); v5_protocol.py keeps private copies). Private: a public const() is also a global
# of the module (a slot of its dict on the heap), and nothing imports them.
_IN_CONNECT = const(1)
_IN_WILL = const(2)
_IN_PUBLISH = const(4)
_IN_ACK = const(8)  # PUBACK, PUBREC, PUBREL, PUBCOMP
_IN_SUBSCRIBE = const(16)
_IN_UNSUBSCRIBE = const(32)
_IN_DISCONNECT = const(64)

# Value types
_BYTE = const(1)
_U16 = const(2)
_U32 = const(3)
_VBI = const(4)
_STR = const(5)
_BIN = const(6)
_PAIR = const(7)

# By property id (0x00-0x27): its type (0: not one a client may send; Assigned Client
# Identifier, Server Keep Alive, Maximum QoS and the other CONNACK ones only a server sends)
# and the packets a client may put it in (_IN_* bits). Two bytes objects: constants in the
# bytecode, where a dict of tuples was 1.5 kB of heap.
_TYPE = (
    b"\x00\x01\x03\x05\x00\x00\x00\x00\x05\x06\x00\x04\x00\x00\x00\x00"
    b"\x00\x03\x00\x00\x00\x05\x06\x01\x03\x01\x00\x00\x05\x00\x00\x05"
    b"\x00\x02\x02\x02\x00\x00\x07\x03"
)
_WHERE = (
    b"\x00\x06\x06\x06\x00\x00\x00\x00\x06\x06\x00\x10\x00\x00\x00\x00"
    b"\x00\x41\x00\x00\x00\x01\x01\x01\x02\x01\x00\x00\x40\x00\x00\x48"
    b"\x00\x01\x01\x04\x00\x00\x7f\x01"
)


def vbi(buf, pos, end):
    """A Variable Byte Integer (MQTT 5.0 section 1.5.5) inside a packet: (value, next pos)."""
    value, pos = decode_length(buf, pos, end)
    if value < 0:
        raise Malformed("variable byte integer beyond the packet")
    return value, pos


def props(buf, pos, end, where):
    """The properties at buf[pos:end] of a packet of kind `where`: (found, next pos), found
    a dict id -> value (user properties checked, not kept: what forwards them copies the
    block's bytes; under 0 the block's (start, stop); under id | 0x100 where Message Expiry,
    Topic Alias and Will Delay Interval start), or None when there are none. Every id, type,
    count and value is checked: unknown or misplaced ids are malformed (MQTT 5.0 section
    2.2.2.2), a second copy of a single one and a value the spec forbids are protocol errors."""
    n = buf[pos] if pos < end else 128
    if n < 128:  # a one-byte length, the usual one: no tuples from vbi()
        pos += 1
    else:
        n, pos = vbi(buf, pos, end)
    stop = pos + n
    if stop > end:
        raise Malformed("property length beyond the packet")
    if not n:
        return None, pos
    found = {0: (pos, stop)}  # the block's bounds, and where Message Expiry and Topic Alias start
    while pos < stop:
        pid = buf[pos]
        if pid == _EXPIRY or pid == _ALIAS or pid == _WILL_DELAY:
            found[pid | 0x100] = pos
        pos += 1
        t = _TYPE[pid] if pid < 0x28 else 0
        if not t:
            raise Malformed("unknown property 0x%02x" % pid)
        if not _WHERE[pid] & where:
            # Section 2.2.2.2: an identifier not valid for the packet type is malformed; a
            # Subscription Identifier is valid in PUBLISH, but from a client a protocol error
            raise Malformed("property 0x%02x not allowed here" % pid,
                            _PROTOCOL_ERROR if pid == 0x0B and where == _IN_PUBLISH else 0x81)
        if t == _BYTE:
            if pos >= stop:
                raise Malformed("truncated property")
            v = buf[pos]
            pos += 1
            if v > 1 and (pid == 0x01 or pid == 0x17 or pid == 0x19):
                # Payload Format Indicator, Request Problem/Response Information: 0 or 1
                raise Malformed("property 0x%02x value %d" % (pid, v), _PROTOCOL_ERROR)
        elif t == _U16 or t == _U32:
            k = 2 if t == _U16 else 4
            if pos + k > stop:
                raise Malformed("truncated property")
            v = 0
            for i in range(k):
                v = (v << 8) | buf[pos + i]
            pos += k
        elif t == _VBI:
            v, pos = vbi(buf, pos, stop)
        elif t == _PAIR:  # a User Property (may repeat, MQTT-3.3.2-17): checked, not kept
            pos = _field(buf, _field(buf, pos, stop, True), stop, True)
            continue
        else:
            v = _field(buf, pos, stop, t != _BIN)
            v, pos = bytes(buf[pos + 2 : v]), v
        if pid in found:
            raise Malformed("property 0x%02x twice" % pid, _PROTOCOL_ERROR)
        found[pid] = v
    if pos != stop:
        raise Malformed("property beyond the property length")
    return found, pos


def _field(buf, pos, end, text):
    """The end of the string or binary data field at buf[pos:end], its UTF-8 checked when
    text: an ASCII one without NUL is found good in two C loops, with no call of
    check_utf8 (whose frame is a heap block on MicroPython)."""
    if pos + 2 > end:
        raise Malformed("truncated property")
    b = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
    if b > end:
        raise Malformed("truncated property")
    if text:
        v = buf[pos + 2 : b]
        if v and (min(v) == 0 or max(v) > 0x7F):  # ASCII without U+0000 needs no more
            check_utf8(v)
    return b


def put_u(out, pid, n, size):
    """A one, two or four byte integer property."""
    out.append(pid)
    for shift in (24, 16, 8, 0)[4 - size :]:
        out.append((n >> shift) & 0xFF)


def put_str(out, pid, s):
    out.append(pid)
    out.append(len(s) >> 8)
    out.append(len(s) & 0xFF)
    out += s


def packet(b0, head, prop):
    """A packet: fixed header, `head` (the variable header before the properties), the
    property block."""
    out = bytearray((b0,))
    put_length(out, len(head) + vbi_len(len(prop)) + len(prop))
    out += head
    put_length(out, len(prop))
    out += prop
    return out


def vbi_len(n):
    k = 1
    while n > 127:
        n >>= 7
        k += 1
    return k


def ack(b0, pid, code):
    """PUBACK, PUBREC, PUBREL or PUBCOMP: the reason code is left out when it is 0 and there
    are no properties (MQTT 5.0 section 3.4.2.1), which is the 3.1.1 form."""
    if not code:
        return bytes((b0, 2, pid >> 8, pid & 0xFF))
    return bytes((b0, 3, pid >> 8, pid & 0xFF, code))


def disconnect(code):
    # (0xE0, 0), not a bytes constant: that is 64 B of heap once loaded
    return bytes((0xE0, 1, code)) if code else bytes((0xE0, 0))


def codes_packet(b0, pid, codes):
    """SUBACK or UNSUBACK: packet id, no properties, one reason code per filter."""
    out = bytearray((b0,))
    put_length(out, 3 + len(codes))
    out.append(pid >> 8)
    out.append(pid & 0xFF)
    out.append(0)
    out += codes
    return out
