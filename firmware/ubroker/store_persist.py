"""What is durable and when acknowledgements may go out. The broker tells this module what
happens (a persistent session appears, subscribes, a QoS 1/2 message goes to it, a client
acknowledges); this module writes the records to the store (store_log.py) and decides when the
publisher's PUBACK / PUBREC / PUBCOMP is safe to send:

- at once, when no persistent session must get the message;
- without any flash write, when every persistent subscriber acknowledged within hold_ms;
- else after the message and its deliveries are committed to flash (group commit, once per
  loop pass).

Acknowledgements leave in the order their packets came (MQTT-4.6.0-2/3/4): each connection
keeps a queue of them (Conn.acks). At start the log is replayed (store_replay.py, start-up
code that leaves the heap after) to rebuild sessions, subscriptions, queued and in-flight
messages, inbound QoS 2 ids and retained messages, and MQTT 5's state (store_v5.py).

Versions: a record's type says its form, and a form once written is never changed; what MQTT
5 added has types of its own (_SUB5, _MSG5), written only for v5 sessions and messages with
properties, so a store written before them reads as it always did, and a type this code does
not know is skipped. So is a delivery written before it was first sent (DUP 0 when it goes
out after a restart): _QUEUED, _ENQ's body under a type of its own."""

import struct
import time

from micropython import const

from .session import RETAINED
from .store_log import Store

# session.py's entry layout (tests/unit/test_layouts.py keeps the copies equal)
_PID = const(0)
_QOS = const(1)
_MSG = const(2)
_STAGE = const(3)
_AWAIT_COMP = const(1)

# record types (0 is the store's END)
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
# MQTT 5 (issue 15): a v5 session's subscription with its options and Subscription Identifier;
# a message with its properties and what is known of its expiry (store_v5.py writes and reads
# their bodies, loaded only for them)
_SUB5 = const(13)
_MSG5 = const(14)
# Then: a retained message's v5 properties (after its _RET); a v5 session's Session Expiry
# and waiting will (store_v5.py); a delivery written as not sent yet (_ENQ's body), and its
# first sending since (lazy: lost, it costs DUP 0 on a resend after a restart)
_RETP = const(15)
_TIMER = const(16)
_SENT = const(17)
_QUEUED = const(18)
_LAST = const(18)

# entry fields beyond session.py's, on deliveries to persistent sessions only: the hold
# waiting on it, whether it is on flash, and its session (this module owns them)
_HOLD = const(4)
_STORED = const(5)
_SESS = const(6)
_NOT_STORED = const(0)
_IS_STORED = const(1)
_RECOVERED = const(2)  # on flash from before a restart, perhaps sent then: sent again with DUP
_UNSENT = const(3)  # on flash as not sent yet: its first sending (DUP 0) appends _SENT

_LAZY_MS = const(1000)
_LAZY_BYTES = const(2048)

# hold fields: [ack packet, ready, subscribers still to acknowledge, due (ticks), entries, conn]
_PKT = const(0)
_READY = const(1)
_WAIT = const(2)
_DUE = const(3)
_ENTRIES = const(4)
_CONN = const(5)


def _s(b):
    return struct.pack(">H", len(b)) + b


def _unmark(msg):
    if msg[2] < 0:
        msg[2] = -msg[2]


class Persist:
    def __init__(self, broker, path, cfg, log):
        self.b = broker
        self.log = log
        self.store = Store(path, cfg["store_size"], log)
        self.hold_ms = cfg["store_hold_ms"]
        self.holds = []  # waiting for subscribers, oldest first
        self.committing = []  # ready once the pending records are on flash
        self.next_mid = 1
        self.fresh = []  # deliveries to persistent sessions of the message being routed
        self.lazy_due = None  # when waiting lazy records are committed anyway

    # ------------------------------------------------------------------ start

    def start(self, proto=None):
        """Replay the log into the broker (store_replay.py, whose code leaves the heap once it
        is done), then compact it into a new generation (which also leaves any torn tail
        behind). proto: the Protocol, whose v5 handlers are loaded when the store holds v5
        state."""
        from .store_replay import replay

        replay(self, proto)
        import ubroker

        ubroker.forget("store_replay")
        b = self.b
        n = len(b.sessions)
        self.compact()
        self.store.sweep()
        st = self.store
        self.log("store: %d sessions, %d messages, %d retained recovered; generation %d" % (
            n, sum(s.held() for s in b.sessions.values()), len(b.retained), st.gen))

    def compact(self):
        """Write the live state as the next generation; the older files go once it is whole.
        Nothing here needs a large block of heap (a long queue is written in pieces, and a
        message shared by sessions is marked written by negating its id rather than kept in
        a table): in a heap fragmented by thousands of queued messages, a table of them was
        what failed (found by the bridge benchmark, 8064 queued messages in 8M)."""
        st = self.store
        st.begin_snapshot()
        try:
            self._snapshot()
        except BaseException as e:
            st.abandon_snapshot()
            raise e  # not a bare raise: the native emitter (emit native) has none
        finally:
            self._each_stored(_unmark)
        st.end_snapshot()

    def _snapshot(self):
        st = self.store
        b = self.b
        for topic in b.retained:
            payload, q = b.retained[topic]
            st.append(_RET, bytes((q,)) + _s(topic) + payload)
        for s in b.sessions.values():
            if s.clean:
                continue
            cid = _s(s.cid)
            st.append(_S_ADD, cid)
            for flt in s.filters():
                self.subscribed(s, flt, b.index.qos_of(flt, s), cid)
            for q in (s.inflight, s.queue):
                if q:
                    for e in q:
                        if e[_STORED]:
                            self._write_entry(s, e, None)
                            if len(st.buf) > 4096:  # a long queue (a bridge's) in pieces
                                st.snapshot_flush()
            if s.qos2in:
                for pid in s.qos2in:
                    st.append(_Q2_ADD, struct.pack(">H", pid) + cid)
            if len(st.buf) > 4096:
                st.snapshot_flush()
        v = getattr(b, "v5", None)
        if v is not None:  # retained messages' properties, sessions' timers
            from .store_v5 import snapshot

            snapshot(self, v)

    def _each_stored(self, fn):
        for s in self.b.sessions.values():
            if not s.clean:
                for q in (s.inflight, s.queue):
                    if q:
                        for e in q:
                            if len(e) > _STORED and e[_STORED]:
                                fn(e[_MSG])

    # ------------------------------------------------------------------ events

    def session_added(self, s):
        if not s.clean:
            self.store.append(_S_ADD, _s(s.cid))

    def session_dropped(self, s):
        """The session's deliveries no longer hold anyone's acknowledgement back."""
        for q in (s.inflight, s.queue):
            if q:
                for e in q:
                    self.entry_done(s, e, False)
        if not s.clean:
            self.store.append(_S_DEL, _s(s.cid))

    def subscribed(self, s, flt, qos, cid=None):
        """A persistent subscription is on flash before its SUBACK (a message published
        right after must find it after a power cut). With cid (its _s form), a compaction
        writes it: no commit. A session a v5 client has had (Session.v5) gets _SUB5
        (store_v5.py, imported only then)."""
        if s.clean:
            return
        c = cid or _s(s.cid)
        if getattr(s, "v5", None) is None:
            self.store.append(_SUB, bytes((qos,)) + c + _s(flt))
        else:
            from .store_v5 import sub5

            self.store.append(_SUB5, sub5(s, c, flt, qos))
        if cid is None:
            self.commit()

    def unsubscribed(self, s, flt):
        if not s.clean:
            self.store.append(_UNSUB, _s(s.cid) + _s(flt))

    def delivered(self, s, e):
        """A QoS 1/2 message was given to session s (entry e)."""
        if not s.clean:
            e.extend((None, _NOT_STORED, s))  # _HOLD, _STORED, _SESS
            self.fresh.append(e)

    def forget_fresh(self):
        """Deliveries no publisher waits for (wills, retained messages on subscribe, $SYS)."""
        if self.fresh:
            self.fresh = []

    def sent(self, s, e):
        """Entry e, written as not sent yet, goes out for the first time (Broker.refill): after
        a restart it is a resend, with DUP. Lazy: lost to a power cut, it costs DUP 0 on one."""
        e[_STORED] = _IS_STORED
        self.store.append(_SENT, struct.pack(">I", e[_MSG][2]) + _s(s.cid), True)

    def released(self, s, e, pkt):
        """Entry e got its PUBREC (QoS 2); pkt is the PUBREL to send. For a message on flash
        the new stage goes to flash before the PUBREL: a subscriber that completes forgets
        the id, and a broker that then restarted and sent the PUBLISH again would have it
        delivered twice. Returns True when this module sends pkt."""
        if len(e) > _STORED and e[_STORED]:
            self.store.append(_REL, struct.pack(">I", e[_MSG][2]) + _s(s.cid))
            h = self._queue(s.conn, [pkt, False, 0, 0, None, s.conn])
            self.committing.append(h)
            return True
        return False

    def session_offline(self, s):
        """A persistent subscriber went away: what it was given cannot be acknowledged soon,
        so the publishers waiting on it get their acknowledgement once it is on flash."""
        for q in (s.inflight, s.queue):
            if q:
                for e in q:
                    if len(e) > _STORED and e[_HOLD] is not None and not e[_HOLD][_READY] \
                            and e[_HOLD][_ENTRIES] is not None:
                        self._store_hold(e[_HOLD])

    def entry_done(self, s, e, acked=True):
        """Entry e is finished (PUBACK, PUBCOMP, or its session ended)."""
        if len(e) <= _STORED:
            return
        h = e[_HOLD]
        if h is not None:
            e[_HOLD] = None
            if not h[_READY] and h not in self.committing:
                h[_WAIT] -= 1
                if h[_WAIT] <= 0:
                    h[_READY] = True
                    self.release(h[_CONN])
        if e[_STORED] and acked:
            self.store.append(_DONE, struct.pack(">I", e[_MSG][2]) + _s(s.cid), True)

    def q2_added(self, s, pid):
        if not s.clean:
            self.store.append(_Q2_ADD, struct.pack(">H", pid) + _s(s.cid))
            return True
        return False

    def q2_removed(self, s, pid):
        if not s.clean:
            self.store.append(_Q2_DEL, struct.pack(">H", pid) + _s(s.cid))
            return True
        return False

    def retained(self, topic, payload, qos):
        if payload:
            self.store.append(_RET, bytes((qos,)) + _s(topic) + bytes(payload))
        else:
            self.store.append(_RET_DEL, _s(topic))

    # ------------------------------------------------------------------ acknowledgements

    def acknowledge(self, c, pkt, must_commit):
        """Send pkt (PUBACK/PUBREC/PUBCOMP) to c once what it acknowledges is safe: the
        deliveries in self.fresh, and records already appended when must_commit."""
        entries = self.fresh
        if entries:
            self.fresh = []
        if not entries and not must_commit:
            if c.acks:
                c.acks.append([pkt, True])  # behind acknowledgements still waiting
            else:
                self.b.send(c, pkt)
            return
        h = self._queue(c, [pkt, False, len(entries), time.ticks_add(time.ticks_ms(), self.hold_ms),
                            entries, c])
        offline = False
        for e in entries:
            e[_HOLD] = h
            if e[_SESS].conn is None:
                offline = True  # it cannot acknowledge in time: to flash now
        if must_commit or offline or self.hold_ms <= 0:
            self._store_hold(h)
        else:
            self.holds.append(h)

    def _queue(self, c, h):
        """Put a pending acknowledgement last in c's queue (packet order)."""
        if c.acks is None:
            c.acks = []
        c.acks.append(h)
        return h

    def _store_hold(self, h):
        written = None
        for e in h[_ENTRIES]:
            if e[_HOLD] is h and not e[_STORED]:
                if written is None:
                    written = {}
                self._write_entry(e[_SESS], e, written)
        h[_ENTRIES] = None
        self.committing.append(h)

    def _write_entry(self, s, e, written):
        """Records of entry e: its message (once), its delivery, its stage. written: the
        messages already written ({mid: True}), or None during compaction, which marks a
        written message by negating its id (undone by _unmark)."""
        msg = e[_MSG]
        st = self.store
        if msg[2] == 0:
            msg[2] = self.next_mid
            self.next_mid += 1
        mid = msg[2]
        new = True
        if written is None:
            if mid > 0:
                msg[2] = -mid
            else:
                mid = -mid
                new = False
        elif mid in written:
            new = False
        else:
            written[mid] = True
        if new and len(msg) > 3 and msg[3] is not RETAINED:  # v5 properties (store_v5.py, only for them)
            from .store_v5 import msg5

            st.append(_MSG5, msg5(msg, mid))
        elif new:
            st.append(_MSG_REC, struct.pack(">I", mid) + _s(msg[0]) + msg[1])
        k = e[_STORED]
        if not k:  # not in the in-flight window: not sent yet
            k = _UNSENT
            for x in s.inflight or ():
                if x is e:
                    k = _IS_STORED
                    break
            e[_STORED] = k
        st.append(_QUEUED if k == _UNSENT else _ENQ, struct.pack(">IBH", mid, e[_QOS], e[_PID]) + _s(s.cid))
        if e[_STAGE] == _AWAIT_COMP:
            st.append(_REL, struct.pack(">I", mid) + _s(s.cid))

    def release(self, c):
        """Send c's acknowledgements that are ready, in order."""
        acks = c.acks
        if not acks:
            return
        if c.sock is None:
            c.acks = None
            return
        while acks and acks[0][_READY]:
            self.b.send(c, acks.pop(0)[_PKT])

    def room(self, extra):
        return not self.store.full(extra)

    # ------------------------------------------------------------------ each loop pass

    def tick(self, now):
        """Holds whose subscribers did not all acknowledge in time go to flash."""
        holds = self.holds
        while holds:
            h = holds[0]
            if h[_READY] or h[_ENTRIES] is None:
                holds.pop(0)
                continue
            if time.ticks_diff(now, h[_DUE]) < 0:
                break
            holds.pop(0)
            if h[_CONN].sock is None:
                continue  # the publisher is gone: no acknowledgement is owed
            self._store_hold(h)

    def commit(self):
        """Commit what this pass appended. Lazy records alone (deliveries done) wait up to
        _LAZY_MS or _LAZY_BYTES for company: a subscriber draining a stored queue would otherwise
        cost one file per loop pass, in time and in flash wear."""
        st = self.store
        if st.buf:
            if st.urgent or len(st.buf) >= _LAZY_BYTES:
                st.commit()
            else:
                now = time.ticks_ms()
                if self.lazy_due is None:
                    self.lazy_due = time.ticks_add(now, _LAZY_MS)
                elif time.ticks_diff(now, self.lazy_due) >= 0:
                    st.commit()
        if not st.buf:
            self.lazy_due = None
        if self.committing:
            done = self.committing
            self.committing = []
            for h in done:
                h[_READY] = True
            for h in done:
                self.release(h[_CONN])
        if st.wants_compaction():
            self.compact()

