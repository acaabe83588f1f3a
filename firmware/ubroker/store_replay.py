"""The durable store read at start: its records replayed into the broker (Persist.start, in
store_persist.py, which owns the record types; this module's copies of them are checked by
tests/unit/test_store_record_types.py). Start-up code: it leaves the heap once the store is read
(ubroker.forget), like the config parser.

Sessions, subscriptions, queued and in-flight messages (a delivery written before it was sent,
_QUEUED, goes out with DUP 0, one noted as sent since by _SENT with DUP 1), inbound QoS 2 ids and retained messages; MQTT 5's records go to store_v5.py,
and what needs the v5 handlers (a v5 subscription routes through them, a retained message's
properties and a session's timers live there) is applied at the end with them loaded."""

import struct

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
_TIMER = const(16)
_SENT = const(17)
_QUEUED = const(18)
_MSG = const(2)
_STAGE = const(3)
_AWAIT_COMP = const(1)
_STORED = const(5)
_RECOVERED = const(2)
_UNSENT = const(3)


def _take(body, pos):
    """A length-prefixed field of a record body: (its bytes, the position after it)."""
    a, b = field(body, pos, len(body))
    return bytes(body[a:b]), b


def replay(p, proto):
    """Replay the log of Persist p into its broker."""
    b = p.b
    msgs = {}
    pend = {}  # v5 state for the v5 handlers, once the store is read (store_v5.py)
    sessions = b.sessions
    for rtype, body in p.store.recover():
        if rtype >= _SUB5 and rtype != _SENT and rtype != _QUEUED:  # MQTT 5's, or a newer version's
            if rtype <= _TIMER:
                from .store_v5 import replay as replay5

                replay5(p, rtype, body, msgs, pend)
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
        from .store_v5 import restore
        from .v5_protocol import load

        restore(p, load(proto), pend)

