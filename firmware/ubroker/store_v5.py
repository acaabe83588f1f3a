"""The durable store's MQTT 5 records, their bodies written and read (store_persist.py owns
the record types and appends them): a v5 session's subscription with its options and
Subscription Identifier (_SUB5), and a message with its properties (_MSG5). Imported only when
a v5 session subscribes or a message with properties is written, or a store holding them is
read: a broker without v5 clients carries none of this.

_SUB5: QoS with the v5 mark (u8), the options kept, No Local and Retain As Published (u8),
the Subscription Identifier (u32, 0 for none), client id, filter.
_MSG5: message id (u32), flags (u8: 1 = Retain As Published made it retained), the seconds
of Message Expiry left when written (u32, 0 for none), the deadline on the wall clock (u32, 0
when the clock was not set), topic, properties as forwarded (v5_route.py: the Message Expiry
Interval first), the Subscription Identifiers to add, payload. Strings are u16-length-prefixed.

Message Expiry across a restart: the arrival time a queued message carries (ticks_ms) means
nothing after one. With a wall clock that was set (an RTC, or NTP before the store is read),
the deadline is kept and what expired while the broker was off is dropped; without one (a
board without an RTC after a power cut) the message gets the seconds it had left when written,
counted from the restart: the time off is not counted, so it may be delivered late, never
early."""

import struct
import time

from micropython import const

from .codec import field

_MARK = const(4)  # the v5 mark on a subscription's QoS in the index (v5_protocol.py)
# A wall clock that reads a year before this was never set (a board starts at its epoch)
_CLOCK_SET = const(2025)


def _s(b):
    return struct.pack(">H", len(b)) + b


def _take(body, pos):
    a, b = field(body, pos, len(body))
    return bytes(body[a:b]), b


def _wall():
    """Seconds on a wall clock that has been set, else 0."""
    t = int(time.time())  # a float on the unix port
    return t if time.gmtime(t)[0] >= _CLOCK_SET else 0


def sub5(s, cid, flt, qos):
    """The body of a v5 session's subscription (Session.v5: filter -> (options, id))."""
    o = s.v5.get(flt)
    keep, sid = o if o is not None else (0, 0)
    return struct.pack(">BBI", (qos & 3) | _MARK, keep, sid) + cid + _s(flt)


def msg5(msg, mid):
    """The body of a message with v5 properties (msg[3], v5_route.py's (properties, expiry,
    arrival, subscription ids, retain flag))."""
    fwd, expiry, t0, sids, rflag = msg[3]
    left = deadline = 0
    if expiry:
        left = expiry - time.ticks_diff(time.ticks_ms(), t0) // 1000
        if left < 1:
            left = 1  # run out: dropped before it is sent (v5_route.Router.expire)
        w = _wall()
        if w:
            deadline = w + left
    return struct.pack(">IBII", mid, 1 if rflag else 0, left, deadline) + _s(msg[0]) + _s(fwd) + \
        _s(sids) + msg[1]


def message(body):
    """The message of a _MSG5 body, its expiry counted from now."""
    mid, flags, left, deadline = struct.unpack_from(">IBII", body, 0)
    topic, pos = _take(body, 13)
    fwd, pos = _take(body, pos)
    sids, pos = _take(body, pos)
    now = time.ticks_ms()
    if left:
        w = _wall()
        if deadline and w:
            left = deadline - w
        if left < 1:
            left = 1
            now = time.ticks_add(now, -2000)  # run out: Router.expire drops it
    return [topic, body[pos:], mid, (fwd, left, now, sids, bool(flags & 1))]


def replay(p, is_msg, body, msgs):
    """One _MSG5 (is_msg) or _SUB5 record read at start into Persist p's broker."""
    if is_msg:
        m = message(body)
        msgs[m[2]] = m
        if m[2] >= p.next_mid:
            p.next_mid = m[2] + 1
        return
    b = p.b
    cid, pos = _take(body, 6)
    flt, _ = _take(body, pos)
    s = b.sessions.get(cid)
    if s is None:
        return
    s.add_filter(flt)
    b.index.add(flt, s, body[0])
    opts = getattr(s, "v5", None)
    if opts is None:
        s.v5 = opts = {}  # v5 sessions only
    keep, sid = struct.unpack_from(">BI", body, 1)
    if keep or sid:
        opts[flt] = (keep, sid)
    elif flt in opts:
        del opts[flt]
