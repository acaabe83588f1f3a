"""MQTT 3.1.1 wire format: the packet types, parsing fields in place from a buffer, and
encoding packets into a caller's bytearray. No I/O and no state: imported by the broker on
MicroPython and by the host tools and tests on CPython."""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# The packet types and return codes modules import by name are public; the others private:
# a public const() is a slot in this module's globals on a board, a private one is inlined.
_CONNECT = const(1)
CONNACK = const(2)
_PUBLISH = const(3)
PUBACK = const(4)
PUBREC = const(5)
PUBREL = const(6)
PUBCOMP = const(7)
_SUBSCRIBE = const(8)
SUBACK = const(9)
_UNSUBSCRIBE = const(10)
_UNSUBACK = const(11)
PINGREQ = const(12)
_PINGRESP = const(13)
_DISCONNECT = const(14)

# CONNACK return codes (MQTT 3.1.1 table 3.1)
_ACCEPTED = const(0)
_BAD_PROTOCOL = const(1)
_BAD_CLIENT_ID = const(2)
_UNAVAILABLE = const(3)
BAD_CREDENTIALS = const(4)
NOT_AUTHORISED = const(5)

_SUB_FAILURE = const(0x80)

PINGRESP_PKT = b"\xd0\x00"


class Malformed(Exception):
    """A packet that breaks the spec: the connection must be closed (MQTT-4.8.0-1)."""


def decode_length(buf, pos, end):
    """Remaining Length at buf[pos:end]. Returns (value, position after it), or (-1, pos)
    when more bytes are needed. Raises Malformed past four bytes (MQTT 2.2.3)."""
    value = 0
    shift = 0
    while pos < end:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 21:
            raise Malformed("remaining length longer than 4 bytes")
    if shift > 21:
        raise Malformed("remaining length longer than 4 bytes")
    return -1, pos


def put_length(out, n):
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return


def u16(buf, pos, end):
    if pos + 2 > end:
        raise Malformed("truncated field")
    return (buf[pos] << 8) | buf[pos + 1]


def field(buf, pos, end):
    """A length-prefixed field (string or binary data) as (start, stop) of its bytes."""
    n = u16(buf, pos, end)
    pos += 2
    if pos + n > end:
        raise Malformed("truncated string")
    return pos, pos + n


def check_utf8(b):
    """MQTT strings: well-formed UTF-8 as RFC 3629 defines it (MQTT-1.5.3-1), no U+0000
    (MQTT-1.5.3-2). The C decoder catches most faults; what it lets through (overlong forms,
    UTF-16 surrogates, code points above U+10FFFF) is checked here, only for non-ASCII."""
    try:
        n = len(str(b, "utf-8"))
    except UnicodeError:  # one class: a tuple here costs ~4 us a call on MicroPython
        raise Malformed("invalid UTF-8")
    if b"\x00" in b:
        raise Malformed("U+0000 in string")
    if n == len(b):
        return  # ASCII only
    last = len(b) - 1
    for i in range(len(b)):
        x = b[i]
        if x < 0xC0:
            continue
        y = b[i + 1] if i < last else 0
        if (
            x < 0xC2
            or x > 0xF4
            or (x == 0xE0 and y < 0xA0)
            or (x == 0xED and y >= 0xA0)
            or (x == 0xF0 and y < 0x90)
            or (x == 0xF4 and y >= 0x90)
        ):
            raise Malformed("ill-formed UTF-8 (overlong, surrogate or above U+10FFFF)")


def utf8(buf, pos, end):
    """A UTF-8 string field copied out as bytes, validated. Returns (bytes, next pos)."""
    a, b = field(buf, pos, end)
    s = bytes(buf[a:b])
    check_utf8(s)
    return s, b


def ack(ptype, pid):
    """PUBACK, PUBREC, PUBREL (flags 0010 as MQTT-3.6.1-1 requires), PUBCOMP, UNSUBACK."""
    return bytes(((ptype << 4) | (2 if ptype == PUBREL else 0), 2, pid >> 8, pid & 0xFF))


def suback(pid, codes):
    out = bytearray((0x90,))
    put_length(out, 2 + len(codes))
    out.append(pid >> 8)
    out.append(pid & 0xFF)
    out.extend(codes)
    return out
