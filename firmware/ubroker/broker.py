"""The broker's state and the routing of messages: the session table, the subscription index,
retained messages, delivery with bounded in-flight windows and queues, and the counters that
$SYS reports. It knows nothing of sockets: outgoing bytes are appended to Conn.out and the
connection is listed in `dirty` for the server to flush."""

import gc
import time

from .buffers import Pool, rebuild, table
from .codec import ack, put_length
from micropython import const

from .session import ENTRY_COST, RETAINED, Session, cost
from .topics import Index, forbidden, match_levels

# Builtins the routing calls per message, as module globals: MicroPython looks a builtin up
# in the module's globals first and then searches the builtins table, about 5x the cost of
# finding a global (measured with native code: len() 89 ns, _len() 17 ns).
_len = len
_bytes = bytes

# session.py's entry layout, inlined here by the compiler: an imported name is a global,
# looked up at every use, and these are used several times per message.
_PID = const(0)
_QOS = const(1)
_MSG = const(2)
_STAGE = const(3)
_AWAIT_ACK = const(0)
_PUBREL = const(6)  # codec.py's packet type
# store_persist.py's field on entries of persistent sessions, its value for one recovered from
# flash (sent before the restart, perhaps: DUP) and for one written before it was sent
_STORED = const(5)
_RECOVERED = const(2)
_UNSENT = const(3)  # on flash as not sent yet


def expired(e, now):
    """Whether queue entry e is dropped at ticks_ms `now` rather than sent (MQTT-3.3.2-5):
    its message's Message Expiry Interval (v5_route.py's extra field) has passed and its
    delivery has not started. One recovered from flash as sent, or past PUBREC, may have
    gone out before a restart: it goes again (DUP, or PUBREL; MQTT-4.4.0-1). For queue
    entries only: one in the window may have been sent on an earlier connection with no
    mark on it, and Router.write knows that by its DUP. Here, not beside session.py's
    layout: this module already has copies of both layouts it reads (session.py's and
    store_persist.py's) and `time`, which session.py would have to import; there it cost
    more heap at start on every board (esp32, 32 bits, tools/heap32: 128 B against 80)."""
    m = e[_MSG]
    return _len(m) > 3 and m[3][1] and e[_STAGE] == _AWAIT_ACK and (_len(e) <= _STORED or e[_STORED] != _RECOVERED) \
        and time.ticks_diff(now, m[3][2]) >= m[3][1] * 1000


# The counters messages move, and the bound they are kept under (carry): on 32 bits an int
# of 2**30 or more is a heap object, and every count past it would allocate.
_MOVED = ("msgs_in", "msgs_out", "pub_in", "pub_out", "bytes_in", "bytes_out")
_LOW = const(1 << 29)

# The message of an in-flight entry whose PUBLISH was written at once to a 3.1.1 clean
# session's connection (Broker.publish): no copy is kept, as none is ever sent again: the
# session ends with its connection (MQTT-3.1.2-6) and 3.1.1 resends only on reconnection
# (MQTT-4.4.0-1). Its cost() is ENTRY_COST, the entry's own, for held_bytes.
_WRITTEN = (b"", b"", 0)


class Stats:
    """Counters reported under $SYS. msgs_in counts every packet taken, msgs_out every packet
    other than PUBLISH sent (Broker.send: acknowledgements, CONNACK, SUBACK, PINGRESP...),
    pub_in/pub_out the PUBLISHes: $SYS messages/sent is msgs_out + pub_out, as Mosquitto
    counts all packets there. `limits` counts how often each limit was hit. Read a counter
    that messages move through total(): past 2**29 its high part is in `high`."""

    high = None  # name -> the counter's count of 2**29, once it has passed it (carry)

    def __init__(self):
        self.connected = 0
        self.max_connected = 0
        self.msgs_in = 0
        self.msgs_out = 0
        self.pub_in = 0
        self.pub_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.dropped = 0
        self.limits = {}

    def carry(self):
        """Once a second (Server.tick): a counter that messages move and that passed 2**29
        gives 2**29 to its high part, so that it stays a small int on 32 bits (a second would
        have to count 2**29 messages or bytes to reach 2**30)."""
        for name in _MOVED:
            v = getattr(self, name)
            if v >= _LOW:
                if self.high is None:
                    self.high = {}
                self.high[name] = self.high.get(name, 0) + 1
                setattr(self, name, v - _LOW)

    def total(self, name):
        h = self.high
        return getattr(self, name) + (h.get(name, 0) << 29 if h else 0)

    def hit(self, name):
        try:
            self.limits[name] = self.limits.get(name, 0) + 1
        except MemoryError:  # a new name's slot when the heap is exhausted: that count is lost
            pass


class Broker:
    # In-flight entries of _WRITTEN messages given back by release(), reused by publish():
    # a QoS 1/2 delivery then allocates nothing (tools/heap32). spare[:nspare], in a list of
    # fixed length: one that grew and shrank would be reallocated as it did (13 % more
    # instructions per message in the in-process fan-in: each freed block sends the
    # allocator's search for the next frame back down the heap). The count in the list's
    # first slot instead of a field took 2.4 % more instructions there. Class defaults until
    # the first release(): the list and the two fields in this object's attribute table cost
    # 224 B of heap at start on 64 bits (esp32 profile) when made in __init__.
    spare = None  # type: list  # type: ignore[assignment]
    nspare = 0
    # The extra field of a retained message's copy for a 3.1.1 subscription when it is not
    # RETAINED: v5_route.Router.retained_extra (its expiry kept), once retained messages may
    # have properties. A class default: nothing in this object's table until then.
    retained_extra = None

    def __init__(self, cfg, log, write_out):
        self.cfg = cfg
        self.log = log
        self.max_inflight = cfg["max_inflight_messages"]
        self.max_queued = cfg["max_queued_messages"]
        self.max_held_bytes = cfg["max_queued_bytes"]
        # Free heap kept for connections and packets: below it, QoS 1/2 messages wait
        # (backpressure) rather than being taken on and lost to a MemoryError.
        self.heap_reserve = cfg["heap_reserve"]
        self.out_limit = cfg["out_buffer_size"]
        # A subscriber's output is written as soon as it passes this, not only at the end of
        # the loop pass: under a flood it keeps the subscriber fed instead of dropping.
        self.flush_at = self.out_limit // 2
        self.write_out = write_out  # the server's: send a connection's output now
        self.max_qos = cfg["max_qos"]
        # Sockets the server holds at most: the clients and a margin in which a client beyond
        # max_connections can still be told CONNACK 3 (server.py sizes its tables by it).
        self.max_sockets = cfg["max_connections"] + 8
        self.sessions = table(cfg["max_sessions"])  # client id -> Session
        self.index = Index(cfg["route_cache_size"], cfg["max_subscriptions"])
        self.retained = table(cfg["max_retained_messages"])  # topic -> (payload, qos)
        # Keys deleted from sessions and retained since their tables were built: past half
        # the table's size, the next insert rebuilds it (see buffers.rebuild).
        self.gone_sessions = self.gone_retained = 0
        self.retained_bytes = 0
        self.persist = None  # the durable store's bookkeeping (store_persist.py), when enabled
        self.sys_report = None  # set by the server: its $SYS report (Server.sysinfo), loaded
        self.held_bytes = 0  # heap bytes of messages in all in-flight windows and queues
        # Connections with fresh output, in a list allocated once: dirty[:ndirty], each at
        # most once (Conn.listed) until the flush takes it off; the flush has written
        # dirty[:fcur] so far, and what it fills while it writes is listed behind (a will, a
        # refill) and written in the same flush (Server.flush).
        self.dirty = [None] * self.max_sockets  # type: list
        self.ndirty = 0
        self.fcur = 0
        # The pool is filled now, while the heap is in one piece.
        # Each buffer starts with room for a small board's largest use (it grows if needed).
        rb = cfg["read_buffer_size"]
        self.pool = Pool(cfg["buffer_pool_size"], min(4096, max(cfg["out_buffer_size"], 2 * rb)),
                         cfg["out_buffer_size"] + (cfg["max_packet_size"] or rb) + 5 + rb)
        self.scratch = bytearray(cfg["out_buffer_size"])
        # A 4-byte acknowledgement (or refusing CONNACK) written in place: the protocol
        # fills it, publish() and send() copy it into the output (no packet object).
        self.pkt = bytearray(b"\x40\x02\x00\x00")
        self.freed = False  # a window or queue made room: paused publishers may resume
        self.stats = Stats()

    # ---------------------------------------------------------------- output

    # The writers call _out() only when conn has no output waiting (conn.out None or empty),
    # and _done() only when out is the scratch buffer or has reached flush_at: a call each
    # per packet otherwise (1.8k instructions each under callgrind, per message)

    def _out(self, conn):
        """Where to put bytes for conn, which has nothing waiting: its output buffer, listed
        for the next flush; or, when the pool has no buffer to spare, the shared scratch
        buffer, written out at once by _done (no heap used per connection)."""
        out = conn.out
        if out is None:
            if not self.pool.free:
                out = self.scratch
                out[:] = b""
                return out
            conn.out = out = self.pool.take()
        self.mark_dirty(conn)
        return out

    def _done(self, conn, out):
        self.write_out(conn, False, out if out is self.scratch else None)

    def mark_dirty(self, conn):
        # Once in the list: a connection whose output was written within the pass (a full
        # buffer, or its answers right after its read) and filled again is still listed, and
        # listing it twice could fill the list and leave another connection's output unsent.
        if conn.listed:
            return
        n = self.ndirty
        dirty = self.dirty
        if n == _len(dirty):
            # Full only in a flush that has listed more behind its cursor: what it wrote
            # makes room. No connection is listed twice, so the rest always fits.
            k = self.fcur
            for i in range(k, n):
                dirty[i - k] = dirty[i]
                dirty[i] = None
            n -= k
            self.fcur = 0
        dirty[n] = conn
        self.ndirty = n + 1
        conn.listed = True

    def send(self, conn, data):
        """A packet other than PUBLISH (those are encoded by _write_publish/_write_raw)."""
        out = conn.out
        if not out:
            out = self._out(conn)
        out += data
        self.stats.msgs_out += 1
        if out is self.scratch or _len(out) >= self.flush_at:
            self._done(conn, out)

    def _write_publish(self, conn, topic, payload, qos, retain, dup, pid):
        if conn.v5 is not None:  # with properties (v5_route.py)
            return self.v5.write(conn, topic, payload, qos, retain, dup, pid)  # type: ignore[attr-defined]
        if conn.bridge is not None:
            topic = conn.bridge.remote_topic(topic)
        out = conn.out
        if not out:
            out = self._out(conn)
        # The PUBLISH encoded here, inline: this runs for every message delivered
        tl = _len(topic)
        rl = 2 + tl + _len(payload)
        if qos:
            rl += 2
        out.append(0x30 | (8 if dup else 0) | (qos << 1) | (1 if retain else 0))
        if rl < 128:
            out.append(rl)
        else:
            put_length(out, rl)
        out.append(tl >> 8)
        out.append(tl & 0xFF)
        out += topic
        if qos:
            out.append(pid >> 8)
            out.append(pid & 0xFF)
        out += payload
        self.stats.pub_out += 1
        if out is self.scratch or _len(out) >= self.flush_at:
            self._done(conn, out)

    def _write_raw(self, conn, raw):
        out = conn.out
        if not out:
            out = self._out(conn)
        out.append(0x30)
        put_length(out, len(raw))
        out.extend(raw)
        self.stats.pub_out += 1
        if out is self.scratch or _len(out) >= self.flush_at:
            self._done(conn, out)

    # ---------------------------------------------------------------- routing

    def room(self, s, size):
        """Can session s take one more QoS 1/2 message without dropping anything?"""
        return self.budget(size) and self.slot(s, size)

    def budget(self, size):
        """Is there heap (max_queued_bytes, heap_reserve) for size more bytes of messages?
        With none held, yes whatever the size: nothing held would ever make room for a
        message whose copies alone are over max_queued_bytes, and its publisher would wait for
        good (seen: a 2 kB QoS 1 message to 4 subscribers on the esp32 profile's 6 kB)."""
        if self.held_bytes and self.held_bytes + size > self.max_held_bytes:
            self.stats.hit("queued_bytes")
            return False
        return not self.low_heap()

    def low_heap(self):
        """Is the free heap below heap_reserve, even after a collection? Then QoS 1/2 messages
        wait, and new clients and subscriptions are refused (CONNACK 3, SUBACK 0x80): the
        heap left is for the connections already served (counted as limits/heap_reserve)."""
        r = self.heap_reserve
        if r and gc.mem_free() < r:
            gc.collect()
            if gc.mem_free() < r:
                self.stats.hit("heap_reserve")
                return True
        return False

    def slot(self, s, size):
        """Has session s a place (window or queue, and store room if persistent)? (A shared
        subscription's group answers its own room(), which publish() asks.)"""
        if self.persist is not None and not s.clean and not self.persist.room(size):
            self.stats.hit("store_full")
            return False
        # A place in the queue, or none waiting there: deliver() then sends it at once if the
        # window and the output have room, else queues it
        if not s.queue or len(s.queue) < (s.qmax or self.max_queued):
            return True
        self.stats.hit("queued_messages")
        return False

    def tick(self, now):
        """Once a second, from Server.tick: what falls due with time. MQTT 5's timers (wills
        with a delay, sessions with an expiry interval) put their own tick in its place on
        the instance (v5_session.py), so a broker without them does nothing here."""

    def publish(self, topic, payload, qos, retain, force=False, raw=None, origin=None, first=None, props=None):
        """Route one message. Returns False, having changed nothing, when a subscriber that
        must get it at QoS 1/2 has no room: the caller then withholds the acknowledgement and
        stops reading from the publisher. With force (wills, $SYS) it never waits; a message
        that finds no room is dropped and counted. raw, for a QoS 0 PUBLISH as received, is
        its topic field and payload: forwarded at QoS 0 those bytes go out unchanged. origin,
        a bridge's session for what came from its upstream, is skipped (no loop). first, the
        publisher's connection, is sent the acknowledgement in self.pkt once the message is
        taken and before any copy: a client subscribed to what it publishes gets its
        PUBACK/PUBREC before its own copy, as Mosquitto orders them. props: an MQTT 5
        message's properties, for v5 subscribers (v5_route.py)."""
        idx = self.index
        r = idx.cache.get(topic)
        if r is None:
            r = idx.route(topic)
        n = _len(r)
        size = _len(topic) + _len(payload) + ENTRY_COST
        if qos and not force:
            # The heap budget once for all the copies this message will take, then a place
            # at each subscriber (a per-subscriber heap check would let the total overrun).
            k = 0
            usual = True
            i = 1
            while i < n:
                if r[i]:
                    s = r[i - 1]
                    if s is not origin:
                        k += 1
                        # slot()'s usual answer, inline (per subscriber per message: the call
                        # cost 5 % of the broker's CPU per QoS 1 message, measured in
                        # process): a clean session (nothing for the store) online, with room
                        # in its queue (an empty one has: deliver() sends the message at once
                        # or queues it). A subscriber whose window is full, the usual one
                        # under load, is taken here too, not by slot().
                        # A group (v5_shared.Group, no connection) is asked its room() below.
                        w = s.queue
                        if not (s.clean and s.conn is not None and (not w or _len(w) < (s.qmax or self.max_queued))):
                            usual = False
                i += 2
            if k and (self.heap_reserve or self.held_bytes + k * size > self.max_held_bytes) \
                    and not self.budget(k * size):
                return False
            if not usual:
                # (a while: range() is a heap block per message; a shared subscription's
                # group, QoS above 7, asked without slot()'s call)
                i = 1
                while i < n:
                    s = r[i - 1]
                    if r[i] and s is not origin and not (s.room(self, size) if r[i] > 7 else self.slot(s, size)):
                        return False
                    i += 2
        if first is not None:
            self.send(first, self.pkt)
        msg = None
        i = 0
        while i < n:
            s = r[i]
            q = r[i + 1]
            i += 2
            if s is origin:
                continue
            if q > qos:
                if q > 3:
                    if q > 7:  # a shared subscription's group (v5_shared.py): one of its members
                        s.route(self, topic, payload, qos, retain, props, size)
                    else:  # a v5 subscription (its QoS carries the v5 mark): options, properties
                        self.v5.route(s, q, topic, payload, qos, retain, props, size)  # type: ignore[attr-defined]
                    continue
                q = qos
            if q == 0:
                c = s.conn
                if c is not None and (c.out is None or len(c.out) < self.out_limit):
                    if raw is None or c.bridge is not None:
                        self._write_publish(c, topic, payload, 0, False, False, 0)
                    else:
                        self._write_raw(c, raw)
                    continue
                if c is not None:
                    self.stats.dropped += 1
                    self.stats.hit("out_buffer")
                if s.fwd is not None:  # QoS 0 is not kept for an upstream unreachable or backed up
                    s.fwd.dropped += 1
                continue
            c = s.conn
            # deliver()'s usual case for a 3.1.1 clean session (its test, inline): written
            # now, with no copy kept (_WRITTEN)
            w = s.inflight
            if s.clean and c is not None and c.v5 is None and c.bridge is None and not s.queue and \
                    (not w or _len(w) < (c.wmax or self.max_inflight)) and \
                    (c.out is None or _len(c.out) < self.out_limit):
                # Inline, not a call: a frame of that many words is a heap block per call
                # (MicroPython's fun_bc_call; more than 11 words of state)
                pid = s.pid + 1  # next_pid()'s usual case, as in deliver()
                if pid > 65535:
                    pid = 1
                if s.safe:
                    s.pid = pid
                    s.safe -= 1
                else:
                    pid = s.next_pid()
                e = self.nspare
                if e:  # a spare entry (release)
                    self.nspare = e = e - 1
                    e = self.spare[e]
                    e[_PID] = pid
                    e[_QOS] = q
                    e[_STAGE] = _AWAIT_ACK
                else:
                    e = [pid, q, _WRITTEN, _AWAIT_ACK]  # type: ignore[assignment]
                if w is None:
                    s.inflight = w = []
                w.append(e)
                self.held_bytes += ENTRY_COST
                self._write_publish(c, topic, payload, q, False, False, pid)
                continue
            if msg is None:
                msg = [topic, _bytes(payload), 0]  # MSG layout (session.py): topic, payload, mid
                if props is not None and props[1]:  # its Message Expiry holds for 3.1.1 too
                    msg.append(self.v5.plain(props))  # type: ignore[attr-defined]
            self.deliver(s, msg, q, False, size)
        if force and self.persist is not None:
            self.persist.forget_fresh()
        if retain:
            self.retain(topic, payload, qos)
        return True

    def deliver(self, s, msg, qos, retain=False, size=0):
        """Give a QoS 1/2 message to a session: into the in-flight window if the client is
        online and the window has room, else onto its queue. retain marks a retained message
        sent for a new subscription; size is cost(msg) when the caller has it. The packet id
        is given now, for good."""
        safe = s.safe
        if safe:  # next_pid's usual case, without the call
            pid = s.pid + 1
            if pid > 65535:
                pid = 1
            s.pid = pid
            s.safe = safe - 1
        else:
            pid = s.next_pid()
        entry = [pid, qos, msg, _AWAIT_ACK]
        c = s.conn
        inflight = s.inflight
        # Can it go out now? Online, nothing queued before it, a free place in the in-flight
        # window, and the output below out_buffer_size. Else it waits in the queue, so a
        # client that does not read never makes its output buffer grow (a large block, which
        # a small fragmented heap may not have); Server.write_out sends the queue on when the
        # output drains (refill). (Once a method, sendable(): inline, as the call cost 1-2 %
        # of the broker's CPU per QoS 1 message, measured in process.)
        if c is not None and not s.queue and (not inflight or _len(inflight) < (c.wmax or self.max_inflight)) \
                and (c.out is None or _len(c.out) < self.out_limit):
            if inflight is None:
                s.inflight = inflight = []
            inflight.append(entry)
            self._write_publish(c, msg[0], msg[1], qos, retain, False, pid)
        elif not s.queue or _len(s.queue) < (s.qmax or self.max_queued):
            if s.queue is None:
                s.queue = []
            s.queue.append(entry)
        else:
            self.stats.dropped += 1
            self.stats.hit("queued_messages")
            return
        self.held_bytes += size or cost(msg)
        if self.persist is not None and not s.clean:
            self.persist.delivered(s, entry)

    def refill(self, s):
        """Move queued messages into the in-flight window, and send them, as far as the
        window has room and the output is below out_buffer_size."""
        queue = s.queue
        c = s.conn
        if not queue or c is None:
            return
        if s.inflight is None:
            s.inflight = []
        inflight = s.inflight
        limit = self.out_limit
        win = c.wmax or self.max_inflight  # (read once: this runs per acknowledgement)
        while queue and _len(inflight) < win and (c.out is None or _len(c.out) < limit):
            self.freed = True  # the queue has room again: a paused publisher may go on
            e = queue.pop(0)
            k = e[_MSG]
            if _len(k) > 3 and c.v5 is None and expired(e, time.ticks_ms()):
                # A v5 publisher's message whose Message Expiry Interval passed while it waited
                # here, about to start out to a 3.1.1 client (a v5 client's is dropped in
                # v5_route.Router.write)
                self.held_bytes -= cost(k)
                if _len(e) > 4 and self.persist is not None:
                    self.persist.entry_done(s, e)
                continue
            inflight.append(e)
            if e[_STAGE] != _AWAIT_ACK:  # recovered from flash past PUBREC: PUBREL again
                self.send(c, ack(_PUBREL, e[_PID]))
                continue
            # One recovered from flash may have been sent before the restart: DUP. One on
            # flash as not sent yet is noted as sent (DUP after a restart).
            k = e[_STORED] if _len(e) > _STORED else 0
            if k == _UNSENT:
                self.persist.sent(s, e)  # type: ignore[union-attr]
            dup = k == _RECOVERED
            # RETAIN: a retained message's copy for a new subscription (True: RETAINED,
            # v5_route's); Retain As Published's flag (v5_route._RAP) is for a v5 client, which
            # v5_route.Router.write reads (MQTT-3.3.1-9 of 3.1.1)
            k = e[_MSG]
            if c.v5 is not None:
                # _write_publish's first case without its call (a v5 subscriber's every
                # message comes here once its window is full); its RETAIN from the extra field
                self.v5.write(c, k[0], k[1], e[_QOS], False, dup, e[_PID])  # type: ignore[attr-defined]
                continue
            self._write_publish(c, k[0], k[1], e[_QOS], _len(k) > 3 and k[3][4] is True, dup, e[_PID])
        if not queue:
            s.queue = None

    def release(self, s, i, pid=0):
        """An outbound message is done (PUBACK or PUBCOMP): free its slot, the i-th of s's
        window. With pid, a PUBACK's (Protocol.puback, V5.handle): the entry of that packet id
        if it is a QoS 1 one, found here (Session.find inline: a call less per QoS 1
        message), else nothing (an acknowledgement for nothing sent is ignored)."""
        w = s.inflight
        if pid:
            n = _len(w) if w else 0
            i = 0
            while i < n and w[i][_PID] != pid:
                i += 1
            if i == n or w[i][_QOS] != 1:
                return
        e = w.pop(i)
        m = e[_MSG]
        self.held_bytes -= _len(m[0]) + _len(m[1]) + ENTRY_COST  # cost(m)
        if m is _WRITTEN:
            i = self.nspare  # (i reused: a local more would put the frame on the heap)
            if self.spare is None:  # the first one
                self.spare = [None] * self.max_inflight
            if i < _len(self.spare):  # referenced nowhere else: reused
                self.spare[i] = e
                self.nspare = i + 1
        elif _len(e) > 4 and self.persist is not None:  # only entries with the store's fields
            self.persist.entry_done(s, e)
        self.freed = True
        if s.queue:
            self.refill(s)

    def resend(self, s):
        """On reconnect, resend what was in flight in its original order, with DUP, and the
        PUBRELs still unanswered (MQTT-4.4.0-1), then top the window up from the queue. Once
        the v5 modules are loaded, v5_route.Router.resend stands in on the instance."""
        c = s.conn
        if s.inflight:
            for e in s.inflight:
                if e[_STAGE] == _AWAIT_ACK:
                    m = e[_MSG]
                    self._write_publish(c, m[0], m[1], e[_QOS], len(m) > 3 and m[3][4] is True, True, e[_PID])
                else:
                    self.send(c, ack(_PUBREL, e[_PID]))
        self.refill(s)

    # ---------------------------------------------------------------- retained

    def retain(self, topic, payload, qos):
        """Store, replace or clear (empty payload, MQTT-3.3.1-10/11) a retained message. The
        old one goes first in every case (MQTT-3.3.1-7), even when the new one does not fit."""
        if topic.startswith(b"$SYS/") and forbidden(topic):
            return  # the broker's figures: the current ones are the retained ones (send_retained)
        old = self.retained.get(topic)
        if old is not None:
            del self.retained[topic]
            self.gone_retained += 1  # taken back below if the new one reuses the slot
            self.retained_bytes -= len(old[0]) + len(topic)
            if self.persist is not None:
                self.persist.retained(topic, b"", qos)
        if not payload:
            return
        size = len(topic) + len(payload)
        if len(self.retained) >= self.cfg["max_retained_messages"]:
            self.stats.hit("retained_messages")
            return
        if self.retained_bytes + size > self.cfg["max_retained_bytes"]:
            self.stats.hit("retained_bytes")
            return
        if self.gone_retained > self.cfg["max_retained_messages"] >> 1:
            self.gone_retained = 0
            self.retained = rebuild(self.retained, self.cfg["max_retained_messages"])
        self.retained[topic] = (bytes(payload), qos)
        if old is not None:  # a replacement leaves no more marks than there were before
            self.gone_retained -= 1
        self.retained_bytes += size
        if self.persist is not None:
            self.persist.retained(topic, payload, qos)

    def send_retained(self, s, flt, granted):
        """Retained messages matching a new subscription, with RETAIN set (MQTT-3.3.1-6).
        Nobody's acknowledgement waits on these deliveries. Once retained messages have MQTT 5
        properties, v5_route.Router.plain_retained stands in on the instance."""
        levels = flt.split(b"/")
        c = s.conn
        if flt.startswith(b"$SYS") and self.sys_report is not None:
            # $SYS values are not stored: the current ones are the retained ones.
            for topic, payload in self.sys_report().report():
                if match_levels(levels, topic):
                    self._write_publish(c, topic, payload, 0, True, False, 0)
        table = self.retained
        for topic in table:
            if not match_levels(levels, topic):
                continue
            payload, q = table[topic]
            q = q if q < granted else granted
            if q == 0:
                self._write_publish(c, topic, payload, 0, True, False, 0)
            elif self.room(s, len(topic) + len(payload) + ENTRY_COST):
                x = RETAINED if self.retained_extra is None else self.retained_extra(topic)
                self.deliver(s, [topic, payload, 0, x], q, True)
            else:
                self.stats.dropped += 1
        if self.persist is not None:
            self.persist.forget_fresh()

    # ---------------------------------------------------------------- sessions

    def again(self, s, clean):
        """A client connects again to session s, before its old connection (if any) is
        closed. A will that waits for its delay is not sent, with Clean Start or without ("a
        new Network Connection for the ClientID", MQTT-3.1.2-8); a session taken over from a
        live connection that goes on (neither side clean) takes that connection's will with it
        unpublished: a will goes when its session ends (MQTT-3.1.4-3 as Mosquitto reads it)."""
        if s.timer is not None:
            self.v5.back(s)  # type: ignore[attr-defined]  # v5_session.py
        c = s.conn
        if c is not None and not clean and not s.clean and c.will is not None:
            c.will = None

    def session(self, cid, clean):
        s = self.sessions.get(cid)
        if s is not None and clean:
            self.drop_session(s)
            s = None
        present = s is not None
        if present and s.timer is not None:
            self.v5.back(s)  # type: ignore[attr-defined]  # its client is back (v5_session.py)
        if s is None:
            if len(self.sessions) >= self.cfg["max_sessions"]:
                self.stats.hit("sessions")
                return None, False
            if self.gone_sessions > self.cfg["max_sessions"] >> 1:
                self.gone_sessions = 0
                self.sessions = rebuild(self.sessions, self.cfg["max_sessions"])
            s = self.sessions[cid] = Session(cid, clean)
            if self.persist is not None:
                self.persist.session_added(s)
        return s, present

    def drop_session(self, s):
        """Forget a session. Allocates nothing: it also runs when the heap is exhausted."""
        if self.persist is not None:
            self.persist.session_dropped(s)
        subs = s.subs
        if type(subs) is list:
            for flt in subs:
                self.index.remove(flt, s)
        elif subs is not None:
            self.index.remove(subs, s)
        q = s.inflight
        if q:
            for e in q:
                self.held_bytes -= cost(e[_MSG])
        q = s.queue
        if q:
            for e in q:
                self.held_bytes -= cost(e[_MSG])
        # Set only where the session has its own value: a new attribute on an object that
        # has only the class default would allocate (this runs with the heap exhausted).
        if s.subs is not None:
            s.subs = None
        if s.inflight is not None:
            s.inflight = None
        if s.queue is not None:
            s.queue = None
        if s.qos2in is not None:
            s.qos2in = None
        if self.sessions.get(s.cid) is s:
            del self.sessions[s.cid]
            self.gone_sessions += 1
        self.freed = True
        if s.timer is not None:  # an MQTT 5 will that waited goes with the session's end
            self.v5.ended(s)  # type: ignore[attr-defined]

    def detach(self, conn, abnormal):
        """A connection is gone. Publish its will if it did not say DISCONNECT
        (MQTT-3.1.2-8/10); end the session if it was a clean one (MQTT-3.1.2-6)."""
        s = conn.sess
        if s is not None:  # it had been accepted (CONNACK 0)
            self.stats.connected -= 1
        will = conn.will
        if will is not None:  # else there is only the class default: nothing to allocate
            conn.will = None
        if s is not None and s.conn is conn:
            s.conn = None
            if conn.v5 is not None:  # the will may wait, the session expire (v5_session.py)
                self.v5.left(conn, s, will, abnormal)  # type: ignore[attr-defined]
                will = None
            if self.persist is not None and not s.clean:
                self.persist.session_offline(s)
            if s.clean:
                self.drop_session(s)
        if will is not None and abnormal:
            self.publish(will[0], will[1], will[2], will[3], True)
