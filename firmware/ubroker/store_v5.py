"""The durable store's MQTT 5 records, their bodies written (store_persist.py owns the record
types and appends them; store_replay.py, start-up code, reads them): a v5 session's
subscription with its options and Subscription Identifier (_SUB5), a message with its
properties (_MSG5), a retained message's properties (_RETP), a v5 session's Session Expiry
and waiting will (_TIMER). Imported only when a v5 session subscribes or a message with
properties is written, or a store holding them is read: a broker without v5 clients carries
none of this.

_SUB5: QoS with the v5 mark (u8), the options kept, No Local and Retain As Published (u8),
the Subscription Identifier (u32, 0 for none), client id, filter.
_MSG5: message id (u32), flags (u8: 1 = a retained message's copy for a new subscription, 2 =
Retain As Published made it retained: v5_route.py's retain flags True and _RAP), the seconds
of Message Expiry left when written (u32, 0 for none), the deadline on the wall clock (u32, 0
when the clock was not set), topic, properties as forwarded (v5_route.py: the Message Expiry
Interval first), the Subscription Identifiers to add, payload. Strings are u16-length-prefixed.
_RETP (after the _RET of the message it belongs to): its Message Expiry left and deadline (as
_MSG5's, 0 for none), topic, properties as forwarded.
_TIMER: a v5 session's Session Expiry Interval left (u32, 0xFFFFFFFF never) and its deadline
(u32, 0 for none), the Will Delay Interval left and its deadline (u32 each), flags (u8: 1 a
will waits, 2 it is retained, its QoS << 2), client id; with a will: its topic, properties as
forwarded, Message Expiry Interval (u32), payload. The last one read for a session holds. One
is written when a v5 client connects (the interval, counted from the restart: its connection
ends with the broker), when its connection ends (Timers.left: the deadlines) and when a
waiting will is published; without one a session never expires (a store before them).

Message Expiry across a restart: the arrival time a queued message carries (ticks_ms) means
nothing after one. With a wall clock that was set (an RTC, or NTP before the store is read),
the deadline is kept and what expired while the broker was off is dropped; without one (a
board without an RTC after a power cut) the message gets the seconds it had left when written,
counted from the restart: the time off is not counted, so it may be delivered late, never
early."""

import struct
import time

from micropython import const


# record types (store_persist.py's)
_RETP = const(15)
_TIMER = const(16)
_NEVER = const(0xFFFFFFFF)
_MARK = const(4)  # the v5 mark on a subscription's QoS in the index (v5_protocol.py)
# A wall clock that reads a year before this was never set (a board starts at its epoch)
_CLOCK_SET = const(2025)


def _s(b):
    return struct.pack(">H", len(b)) + b


def _wall():
    """Seconds on a wall clock that has been set, else 0."""
    t = int(time.time())  # a float on the unix port
    return t if time.gmtime(t)[0] >= _CLOCK_SET else 0


def sub5(s, cid, flt, qos):
    """The body of a v5 session's subscription (Session.v5: filter -> (options, id))."""
    o = s.v5.get(flt)
    keep, sid = o if o is not None else (0, 0)
    return struct.pack(">BBI", (qos & 3) | _MARK, keep, sid) + cid + _s(flt)


def _until(expiry, t0):
    """A Message Expiry of expiry s counted from ticks t0, as written: (s left, deadline on
    the wall clock or 0)."""
    left = deadline = 0
    if expiry:
        left = expiry - time.ticks_diff(time.ticks_ms(), t0) // 1000
        if left < 1:
            left = 1  # run out: dropped before it is sent (v5_route.Router.expire)
        w = _wall()
        if w:
            deadline = w + left
    return left, deadline


def msg5(msg, mid):
    """The body of a message with v5 properties (msg[3], v5_route.py's (properties, expiry,
    arrival, subscription ids, retain flag))."""
    fwd, expiry, t0, sids, rflag = msg[3]
    left, deadline = _until(expiry, t0)
    return struct.pack(">IBII", mid, int(rflag), left, deadline) + _s(msg[0]) + _s(fwd) + \
        _s(sids) + msg[1]


def kept(per, topic, props):
    """A retained message's properties (v5_route.Router.kept), after its _RET: to flash with
    it."""
    per.store.append(_RETP, _retp(topic, props))


def _retp(topic, props):
    fwd, expiry, t0 = props
    return struct.pack(">II", *_until(expiry, t0)) + _s(topic) + fwd


def timer(per, s, exp, wait=0, will=None, wprops=None, live=False):
    """Session s's Session Expiry (exp s from now, _NEVER) and will waiting wait s (with its
    props, v5_route.forward's), to flash: a _TIMER record. live: s's client is connected, so
    its interval starts when the connection ends (MQTT-3.1.2-23), which a restart is: no
    deadline on the wall clock."""
    w = 0 if live else _wall()
    flags = 0
    tail = b""
    if will is not None:
        flags = 1 | (2 if will[3] else 0) | (will[2] << 2)
        fwd, mexp = (wprops[0], wprops[1]) if wprops is not None else (b"", 0)
        tail = _s(will[0]) + _s(fwd) + struct.pack(">I", mexp) + will[1]
    per.store.append(_TIMER, struct.pack(">IIIIB", exp, w + exp if w and exp != _NEVER else 0, wait,
                                         w + wait if w and will is not None else 0, flags) + _s(s.cid) + tail)


def snapshot(p, v):
    """Compaction (store_persist.Persist._snapshot), with the v5 handlers v loaded: the
    retained messages' properties, the v5 sessions' timers."""
    b = p.b
    st = p.store
    rp = v.rprops
    if rp:
        for topic in rp:
            e, props = rp[topic]
            if b.retained.get(topic) is e:
                st.append(_RETP, _retp(topic, props))
    now = -1
    for s in b.sessions.values():
        if s.clean:
            continue
        t = s.timer  # [expiry, will at, will, will props] in ms of v's clock (v5_session.py)
        if t is not None:
            if now < 0:
                now = v.clock(v.server.now)
            exp = _NEVER if t[0] < 0 else max(0, (t[0] - now + 999) // 1000)
            if t[2] is None:
                timer(p, s, exp)
            else:
                timer(p, s, exp, max(0, (t[1] - now + 999) // 1000), t[2], t[3])
        elif s.conn is not None and s.conn.v5 is not None:
            timer(p, s, s.conn.v5.expiry, live=True)
        if len(st.buf) > 4096:
            st.snapshot_flush()
