"""The durable store read at start: its records replayed into the broker (Persist.start, in
store_persist.py, which owns the record types; this module's copies of them are checked by
tests/unit/test_store_record_types.py). Start-up code: it leaves the heap once the store is read
(ubroker.forget), like the config parser.

Sessions, subscriptions, queued and in-flight messages (a delivery written before it was
sent, _QUEUED, goes out with DUP 0, one noted as sent since by _SENT with DUP 1), inbound QoS
2 ids and retained messages; MQTT 5's records (their forms: store_v5.py, which writes them)
with their expiry counted across the restart, and what needs the v5 handlers (a v5
subscription routes through them, a retained message's properties and a session's timers
live there) applied at the end with them loaded."""

import struct
import time

from micropython import const

from .codec import field
from .session import Session, cost

# store_persist.py's record types and entry fields
_S_ADD = const(1)
_S_DEL = const(2)
_SUB = const(3)
_UNSUB = const(4)
_MSG_REC = const(5)
_ENQ = const(6)
_REL = const(7)
_DONE = const(8)
_Q2_ADD = const(9)
_Q2_DEL = const(10)
_RET = const(11)
_RET_DEL = const(12)
_SUB5 = const(13)
_MSG5 = const(14)
_RETP = const(15)
_TIMER = const(16)
_SENT = const(17)
_QUEUED = const(18)
_MSG = const(2)
_STAGE = const(3)
_AWAIT_COMP = const(1)
_STORED = const(5)
_RECOVERED = const(2)
_UNSENT = const(3)
_NEVER = const(0xFFFFFFFF)


def _take(body, pos):
    """A length-prefixed field of a record body: (its bytes, the position after it)."""
    a, b = field(body, pos, len(body))
    return bytes(body[a:b]), b


def replay(p, proto):
    """Replay the log of Persist p into its broker."""
    b = p.b
    msgs = {}
    pend = {}  # v5 state for the v5 handlers, once the store is read (store_v5.py)
    w = -1  # the wall clock (store_v5._wall), read with the first v5 record
    sessions = b.sessions
    for rtype, body in p.store.recover():
        if rtype >= _SUB5 and rtype != _SENT and rtype != _QUEUED:  # MQTT 5's, or a newer version's
            if rtype <= _TIMER:
                if w < 0:
                    from .store_v5 import _wall  # with the first v5 record

                    w = _wall()
                replay5(p, rtype, body, msgs, pend, w)
            continue
        if rtype == _RET:
            topic, pos = _take(body, 1)
            b.retained[topic] = (body[pos:], body[0])
            b.retained_bytes += len(topic) + len(body) - pos
            continue
        if rtype == _RET_DEL:
            topic, _ = _take(body, 0)
            old = b.retained.pop(topic, None)
            if old is not None:
                b.retained_bytes -= len(topic) + len(old[0])
                b.gone_retained += 1  # see buffers.rebuild
            continue
        if rtype == _MSG_REC:
            mid = struct.unpack_from(">I", body, 0)[0]
            topic, pos = _take(body, 4)
            msgs[mid] = [topic, body[pos:], mid]
            if mid >= p.next_mid:
                p.next_mid = mid + 1
            continue
        if rtype in (_ENQ, _REL, _DONE, _SENT, _QUEUED):
            mid = struct.unpack_from(">I", body, 0)[0]
            extra = 7 if rtype == _ENQ or rtype == _QUEUED else 4
            cid, _ = _take(body, extra)
            s = sessions.get(cid)
            if s is None:
                continue
            if extra == 7:
                msg = msgs.get(mid)
                if msg is None:
                    continue
                pid = (body[5] << 8) | body[6]
                if s.queue is None:
                    s.queue = []
                s.queue.append([pid, body[4], msg, 0, None, _UNSENT if rtype == _QUEUED else _RECOVERED, s])
                s.pid = pid
                b.held_bytes += cost(msg)
            else:
                q = s.queue or []
                for i in range(len(q)):
                    if q[i][_MSG][2] == mid:
                        if rtype == _REL:
                            q[i][_STAGE] = _AWAIT_COMP
                        elif rtype == _SENT:
                            q[i][_STORED] = _RECOVERED
                        else:
                            b.held_bytes -= cost(q[i][_MSG])
                            q.pop(i)
                        break
            continue
        if rtype == _SUB:
            cid, pos = _take(body, 1)
            flt, _ = _take(body, pos)
            s = sessions.get(cid)
            if s is not None:
                s.add_filter(flt)
                b.index.add(flt, s, body[0])
            continue
        cid, pos = _take(body, 2 if rtype in (_Q2_ADD, _Q2_DEL) else 0)
        if rtype == _S_ADD:
            if cid not in sessions:
                sessions[cid] = Session(cid, False)
        elif rtype == _S_DEL:
            s = sessions.get(cid)
            if s is not None:
                b.drop_session(s)
        elif rtype == _UNSUB:
            flt, _ = _take(body, pos)
            s = sessions.get(cid)
            if s is not None and s.drop_filter(flt):
                b.index.remove(flt, s)  # a v5 session's options for it stay, unread
        else:
            s = sessions.get(cid)
            if s is not None:
                pid = (body[0] << 8) | body[1]
                if rtype == _Q2_ADD:
                    if s.qos2in is None:
                        s.qos2in = []
                    if pid not in s.qos2in:
                        s.qos2in.append(pid)
                elif s.qos2in and pid in s.qos2in:
                    s.qos2in.remove(pid)
    if pend and proto is not None:  # v5 state: the v5 handlers for it
        from .v5_protocol import load

        restore5(p, load(proto), pend, w)


# ------------------------------------------------------------------ MQTT 5's records

def _since(left, deadline, w):
    """What store_v5._until wrote, read after a restart with the wall clock at w (0: not
    set): (expiry in s, arrival in ticks)."""
    now = time.ticks_ms()
    if left:
        if deadline and w:
            left = deadline - w
        if left < 1:
            left = 1
            now = time.ticks_add(now, -2000)  # run out: Router.expire drops it
    return left, now


def _wait(left, deadline, w):
    """Seconds still to wait of a timer written with left s to go and a deadline."""
    if deadline and w:
        left = deadline - w
    return left if left > 0 else 0


def message(body, w):
    """The message of a _MSG5 body, its expiry counted from now (wall clock w)."""
    mid, flags, left, deadline = struct.unpack_from(">IBII", body, 0)
    topic, pos = _take(body, 13)
    fwd, pos = _take(body, pos)
    sids, pos = _take(body, pos)
    left, now = _since(left, deadline, w)
    return [topic, body[pos:], mid, (fwd, left, now, sids, flags & 2 or bool(flags & 1))]


def restore5(p, v, pend, w):
    """At the end of the store's reading, with the v5 handlers v loaded (v5 subscriptions
    route through them): the retained messages' properties and the sessions' timers put
    back."""
    b = p.b
    now = -1
    for k in pend:
        x = pend[k]
        if k is None:
            continue
        if type(k) is bytes:  # a retained message's properties, if it is still the one
            if b.retained.get(k) is x[0]:
                (v.rprops if v.rprops is not None else v.rtable())[k] = x
            continue
        if b.sessions.get(k.cid) is not k or k.clean:
            continue  # ended since
        exp, dl, wait, wd, flags = struct.unpack_from(">IIIIB", x, 0)
        _, pos = _take(x, 17)
        if now < 0:
            now = v.clock(v.server.now)
        t = [-1, -1, None, None]  # type: list
        if exp != _NEVER:
            t[0] = now + _wait(exp, dl, w) * 1000
        if flags & 1:
            topic, pos = _take(x, pos)
            fwd, pos = _take(x, pos)
            t[1] = now + _wait(wait, wd, w) * 1000
            t[2] = (topic, bytes(x[pos + 4:]), (flags >> 2) & 3, bool(flags & 2))
            t[3] = (fwd, struct.unpack_from(">I", x, pos)[0], -1) if fwd else None
        if t[0] >= 0 or t[1] >= 0:
            v.arm(k, t)


def replay5(p, rtype, body, msgs, pend, w):
    """One _MSG5, _SUB5, _RETP or _TIMER record read at start into Persist p's broker; what
    needs the v5 handlers waits in pend for restore5()."""
    if rtype == _MSG5:
        m = message(body, w)
        msgs[m[2]] = m
        if m[2] >= p.next_mid:
            p.next_mid = m[2] + 1
        return
    b = p.b
    pend[None] = None  # also for _SUB5: a v5 subscription routes through the v5 handlers
    if rtype == _RETP:
        left, deadline = struct.unpack_from(">II", body, 0)
        topic, pos = _take(body, 8)
        e = b.retained.get(topic)
        if e is not None:
            left, t0 = _since(left, deadline, w)
            pend[topic] = (e, (bytes(body[pos:]), left, t0))
        return
    if rtype == _TIMER:
        s = b.sessions.get(_take(body, 17)[0])
        if s is not None:
            pend[s] = body
        return
    if rtype != _SUB5:
        return
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
