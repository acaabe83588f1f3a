"""What goes out to MQTT 5 subscribers: a message routed to a subscription with the v5 mark
(Broker.publish hands those here), with the publisher's properties passed on unchanged but for
the Topic Alias (dropped) and the Message Expiry Interval (the time left), the subscription's
options applied (No Local, Retain As Published) and its Subscription Identifiers added; and
every PUBLISH written to a v5 connection (Broker._write_publish hands those here).

A message's properties travel through the broker as `props`, a tuple (properties to forward,
Message Expiry Interval in s or 0, ticks_ms of its arrival or -1 for "when routed"). A QoS 1/2
copy for a v5 subscriber carries its own (forward, expiry, arrival, subscription ids, retain)
as a fourth field of its message (session.py's [topic, payload, mid]), found again by packet id
when the broker writes it (deliver, refill, resend)."""

import time

from micropython import const

from .broker import _WRITTEN, expired
from .codec import put_length
from .session import ENTRY_COST, RETAINED, cost
from .topics import match_levels
from .v5_codec import vbi_len

# Builtins used per message, as module globals (broker.py's _len: a builtin is looked up in
# the module's globals, then in the builtins table)
_len = len
_bytes = bytes
_getattr = getattr

_EXPIRY = const(0x02)  # Message Expiry Interval
_NO_LOCAL = const(4)
_RETAIN_AS_PUBLISHED = const(8)
# An extra field's retain flag set by Retain As Published, not True: RETAIN 1 for a v5 client
# only. A 3.1.1 client that takes the session back gets such a message with RETAIN 0
# (MQTT-3.3.1-9 of 3.1.1); True, a retained message's copy for a new subscription, keeps it
# (Broker.refill, resend)
_RAP = const(2)
_PID = const(0)
_QOS = const(1)
_MSG = const(2)
_STAGE = const(3)
_AWAIT_ACK = const(0)
# A topic gets a Topic Alias from the server (v5_asked.py) only from this length on: its
# first PUBLISH costs 3 bytes more, each later one saves len(topic) - 3, so from 4 bytes on
# every alias saves (paho's interoperability suite expects one for `TopicA`)
_ALIAS_MIN = const(4)


def forward(buf, found, now):
    """The props tuple of a message whose properties were parsed into `found` (v5_codec.props)
    from buf: the property bytes without Topic Alias and Will Delay Interval, the Message Expiry Interval first (so
    that write() can rewrite the time left in place), user properties in their order
    (MQTT-3.3.2-17/18)."""
    a, stop = found[0]
    cut = []
    for k in (_EXPIRY | 0x100, 0x123, 0x118):  # Message Expiry, Topic Alias, Will Delay
        if k in found:
            at = found[k]
            cut.append((at, at + (3 if k == 0x123 else 5)))
    cut.sort()
    out = bytearray()
    expiry = found.get(_EXPIRY, 0)
    if expiry:
        out.append(_EXPIRY)
        out += bytes(4)  # its place; a bytes constant is 64 B of heap once loaded
    for x, y in cut:
        out += buf[a:x]
        a = y
    out += buf[a:stop]
    if not out:
        return None
    return bytes(out), expiry, now


class Router:
    # Retained messages' properties: topic -> (the entry of Broker.retained they belong to, the
    # props tuple). Kept beside the broker's table, so a 3.1.1 board's entries stay 2-tuples:
    # an entry replaced or cleared since (by a 3.1.1 client, say) is no longer the one here.
    rprops = None
    # route()'s last props tuple without expiry, subscription ids or retain flag, and the
    # extra field made for it
    lastp = None
    laste = None

    def __init__(self, broker, server):
        self.b = broker
        self.server = server
        self.sender = None  # the publishing session while a v5 client's PUBLISH is routed (No Local)

    def expire(self, s):
        """Before what session s holds goes out to the connection (s.conn) that took it back:
        drop the in-flight messages too large for its Maximum Packet Size (MQTT-3.1.2-25:
        discarded as if sent; left in the window, one would hold its slot for good, and
        Broker.resend, which walks the window, cannot take them out as write() does for the
        others) and the queued messages whose Message Expiry Interval has passed
        (MQTT-3.3.2-5, broker.expired): Broker.refill and write() would drop each as it
        starts out; here their heap and queue slots are freed at once."""
        w = s.inflight
        c = s.conn  # None for a bridge's session here (bridge_v5.py sets it after)
        if w and c is not None and c.v5 is not None and c.v5.max_out:
            for i in range(len(w) - 1, -1, -1):
                m = w[i][_MSG]
                n = len(m[3][0]) + len(m[3][3]) if len(m) > 3 else 0
                if w[i][_STAGE] == _AWAIT_ACK and _size(m[0], m[1], 1, n) > c.v5.max_out:
                    self.dropped(s, i)
        q = s.queue
        if not q:
            return
        b = self.b
        now = self.server.now
        for e in list(q):
            if expired(e, now):
                q.remove(e)
                b.held_bytes -= cost(e[_MSG])
                if len(e) > 4 and b.persist is not None:
                    b.persist.entry_done(s, e)
        if not q:
            s.queue = None

    def kept(self, topic, props):
        """A retained message on topic was published with props (a v5 client's, a will's):
        note them for the retained entry the broker now holds, if any."""
        e = self.b.retained.get(topic)
        rp = self.rprops
        if e is None or props is None:
            if rp and topic in rp:
                del rp[topic]
            return
        if props[2] < 0:  # a will's expiry counts from now (forward())
            props = (props[0], props[1], self.server.now)
        if rp is None:
            rp = self.rtable()
        rp[topic] = (e, props)
        if self.b.persist is not None:  # to flash after the message's _RET (store_v5.py)
            from .store_v5 import kept

            kept(self.b.persist, topic, props)

    def plain(self, props, retain=False):
        """The extra field (as route() makes it) of a copy for a 3.1.1 subscriber of a message
        with a Message Expiry Interval: its expiry kept (MQTT-3.3.2-5 holds for every
        subscriber), on flash as well (store_v5.msg5); retain: RETAIN 1, a retained message's
        copy for a new subscription. Its properties to forward are that interval's alone, in
        the place forward() gives it: a v5 client that takes the session back, or a v5 member
        the copy is handed over to (v5_shared.py), gets the time left (MQTT-3.3.2-6), which
        write() can only rewrite there (an empty one went out as 4 bytes without their
        identifier, malformed: section 2.2.2.2; or, with nothing else to add, not at all)."""
        t0 = props[2]
        e = props[1]
        fwd = bytes((_EXPIRY, e >> 24, (e >> 16) & 0xFF, (e >> 8) & 0xFF, e & 0xFF))
        return (fwd, e, t0 if t0 >= 0 else self.server.now, b"", retain)

    def retained_extra(self, topic):
        """Broker.retained_extra: the extra field of the retained message on topic's copy for a
        3.1.1 subscription, with its Message Expiry if it has one."""
        r = self.rprops.get(topic)  # type: ignore[union-attr]
        if r is not None and r[0] is self.b.retained.get(topic) and r[1][1]:
            return self.plain(r[1], True)
        return RETAINED

    def resend(self, s):
        """Broker.resend, on the broker instance once the v5 modules are loaded: expire()
        first, for a session taken back by a client of either version."""
        self.expire(s)
        type(self.b).resend(self.b, s)

    def rtable(self):
        """rprops, made at the first retained message with properties. From then on a 3.1.1
        subscription's retained messages come through plain_retained, on the broker instance
        (so a broker that has none pays nothing in Broker.send_retained)."""
        self.rprops = {}
        self.b.send_retained = self.plain_retained
        self.b.retained_extra = self.retained_extra
        return self.rprops

    def plain_retained(self, s, flt, granted):
        """Broker.send_retained for a 3.1.1 subscription, once retained messages may have a
        Message Expiry Interval: those whose interval has passed leave the table first
        (MQTT-3.3.2-5 holds for every subscriber), cleared as an empty retained message would."""
        b = self.b
        rp = self.rprops
        now = self.server.now
        for topic in [t for t in rp if rp[t][1][1] and time.ticks_diff(now, rp[t][1][2]) >= rp[t][1][1] * 1000]:
            e = rp.pop(topic)[0]
            if b.retained.get(topic) is e:
                b.retain(topic, b"", e[1])
        type(b).send_retained(b, s, flt, granted)

    def send_retained(self, s, flt, granted, sid):
        """Broker.send_retained for a v5 subscription: each retained message with its
        properties (one whose Message Expiry has passed is not sent, MQTT-3.3.2-5), the
        subscription's identifier (MQTT-3.3.4-3) and RETAIN 1 also when it waits in the queue
        (section 3.3.1.3)."""
        b = self.b
        if flt.startswith(b"$SYS"):
            b.send_retained(s, flt, granted)
            return
        sids = b""
        if sid:
            ids = bytearray()
            ids.append(0x0B)  # Subscription Identifier (no bytes constant: 64 B of heap)
            put_length(ids, sid)
            sids = bytes(ids)
        levels = flt.split(b"/")
        c = s.conn
        now = self.server.now
        rp = self.rprops
        table = b.retained
        for topic in table:
            if not match_levels(levels, topic):
                continue
            e = table[topic]
            fwd = b""
            expiry = t0 = 0
            r = rp.get(topic) if rp else None
            if r is not None and r[0] is e:
                fwd, expiry, t0 = r[1]
                if expiry and time.ticks_diff(now, t0) >= expiry * 1000:
                    continue
            extra = (fwd, expiry, t0, sids, True)
            payload = e[0]
            q = e[1] if e[1] < granted else granted
            if q == 0:
                self.write(c, topic, payload, 0, True, False, 0, extra)
            elif b.room(s, len(topic) + len(payload) + ENTRY_COST):
                b.deliver(s, [topic, payload, 0, extra], q, True)
            else:
                b.stats.dropped += 1
        if b.persist is not None:
            b.persist.forget_fresh()

    def route(self, s, q, topic, payload, qos, retain, props, size, group=None):
        """One message for session s, whose subscription in the index carries the v5 mark;
        group: the shared subscription (v5_shared.Group) that chose s, whose options apply."""
        q &= 3
        if q > qos:
            q = qos
        opts = _getattr(s, "v5", None)  # set on sessions a v5 client has had (v5_protocol.py)
        sids = b""
        rflag = 0
        if opts:
            local = group is not None or s is not self.sender  # no No Local when shared (MQTT-3.8.3-4)
            ids = bytearray()
            for flt in s.filters():
                if group is not None:
                    if flt != group.name:
                        continue
                elif flt[0] == 36 and flt.startswith(b"$share/") or not match_levels(flt.split(b"/"), topic):
                    continue
                o = opts.get(flt)
                if o is None:
                    local = True
                    continue
                if not o[0] & _NO_LOCAL:
                    local = True  # MQTT-3.8.3-3: No Local only holds when every match has it
                if o[0] & _RETAIN_AS_PUBLISHED:
                    rflag = retain and _RAP  # MQTT-3.3.1-12/13
                if o[1]:
                    ids.append(0x0B)  # Subscription Identifier (MQTT-3.3.4-3/5)
                    put_length(ids, o[1])
            if not local:
                return
            sids = bytes(ids)
        if props is self.lastp and props is not None and not sids and not rflag:
            # The same properties as the last message's (one tuple for a publisher's that
            # stay the same, v5_protocol's pubp), without a Message Expiry: its extra field
            extra = self.laste
            fwd = props[0]
        else:
            fwd = b""
            expiry = 0
            t0 = 0
            if props is not None:
                fwd, expiry, t0 = props
                if expiry:
                    if t0 < 0:
                        t0 = self.server.now
                    elif time.ticks_diff(self.server.now, t0) >= expiry * 1000:
                        return  # expired before it could start out (MQTT-3.3.2-5)
            extra = None
            if fwd or sids or rflag:
                extra = (fwd, expiry, t0, sids, rflag)
                if not expiry and not sids and not rflag:  # (its arrival time is not read then)
                    self.lastp = props
                    self.laste = extra
        c = s.conn
        b = self.b
        v = c.v5 if c is not None else None
        if v is not None and v.max_out and _size(topic, payload, q, len(fwd) + len(sids)) > v.max_out:
            b.stats.hit("v5_max_packet")  # discarded as if sent (MQTT-3.1.2-24/25)
            return
        if q == 0:
            if c is not None and (c.out is None or _len(c.out) < b.out_limit):
                if v is None:  # a 3.1.1 client took the v5 session back: no properties, no RAP
                    b._write_publish(c, topic, payload, 0, False, False, 0)
                else:
                    self.write(c, topic, payload, 0, rflag, False, 0, extra)
            elif c is not None:
                b.stats.dropped += 1
                b.stats.hit("out_buffer")
            return
        w = s.queue
        # Broker.publish's inline case for a 3.1.1 clean session, for a v5 one: written now,
        # and no copy of the message kept (_WRITTEN), since a clean session is never resumed
        # (Broker.detach ends it) and so never sends it again. Its extra field goes to write()
        # as an argument. The size check above is write()'s own, so write() never finds this
        # entry too large to send.
        at_once = not w and group is None and s.clean and v is not None and c.bridge is None and \
            (not s.inflight or _len(s.inflight) < (c.wmax or b.max_inflight)) and \
            (c.out is None or _len(c.out) < b.out_limit)
        if w or at_once:  # both take the packet id here; deliver() takes its own
            pid = s.pid + 1  # next_pid()'s usual case, as in Broker.deliver()
            if pid > 65535:
                pid = 1
            if s.safe:
                s.pid = pid
                s.safe -= 1
            else:
                pid = s.next_pid()
            if at_once:
                e = b.nspare
                if e:  # a spare entry (Broker.release)
                    b.nspare = e = e - 1
                    e = b.spare[e]
                    e[_PID] = pid
                    e[_QOS] = q
                    e[_STAGE] = _AWAIT_ACK
                else:
                    e = [pid, q, _WRITTEN, _AWAIT_ACK]
                f = s.inflight
                if f is None:
                    s.inflight = f = []
                f.append(e)
                b.held_bytes += ENTRY_COST
                self.write(c, topic, payload, q, False, False, pid, extra)  # (RETAIN: extra's)
                return
        # The extra field (and the group that gave it, should s's session end first) in the
        # list as made: an append would grow it (a second block)
        if group is not None:
            msg = [topic, _bytes(payload), 0, extra or (b"", 0, 0, b"", False), group]
        else:
            msg = [topic, _bytes(payload), 0] if extra is None else [topic, _bytes(payload), 0, extra]
        if not w:
            b.deliver(s, msg, q, False, size)
            return
        # Broker.deliver's case when messages wait already (a busy subscriber's usual one):
        # behind them, in the same steps, without deliver()'s call
        if _len(w) >= (s.qmax or b.max_queued):
            b.stats.dropped += 1
            b.stats.hit("queued_messages")
            return
        e = [pid, q, msg, _AWAIT_ACK]
        w.append(e)
        b.held_bytes += size or cost(msg)
        if b.persist is not None and not s.clean:
            b.persist.delivered(s, e)

    def write(self, c, topic, payload, qos, retain, dup, pid, extra=None):
        """A PUBLISH to v5 connection c, with its properties."""
        at = -1  # where in the window, for a message found there
        if extra is None and qos:
            s = c.sess
            inflight = s.inflight if s is not None else None
            if inflight:
                # From the end, where deliver() and refill() have just put it: a while, as a
                # range() would be made per message
                i = _len(inflight) - 1
                while i >= 0:
                    e = inflight[i]
                    if e[_PID] == pid:
                        at = i
                        m = e[_MSG]
                        if _len(m) > 3:
                            extra = m[3]
                        break
                    i -= 1
        pr = b""
        if extra is not None:
            fwd, expiry, t0, sids, rflag = extra
            if rflag:
                retain = True
            if expiry:
                left = expiry - time.ticks_diff(self.server.now, t0) // 1000  # MQTT-3.3.2-6
                if left < 1:
                    if not dup and at >= 0:
                        # It expired in the queue and would start out now: it is dropped
                        # (MQTT-3.3.2-5). A resent one (DUP) had started: it goes with 1 s.
                        self.dropped(c.sess, at)
                        return
                    left = 1
                fwd = bytearray(fwd)
                fwd[1:5] = bytes((left >> 24, (left >> 16) & 0xFF, (left >> 8) & 0xFF, left & 0xFF))
            pr = fwd + sids if sids else fwd
        b = self.b
        v = c.v5
        if v.max_out and _size(topic, payload, qos, len(pr)) > v.max_out:
            b.stats.hit("v5_max_packet")  # MQTT-3.1.2-24
            if at >= 0 and at == len(c.sess.inflight) - 1:
                # Discarded as if sent (MQTT-3.1.2-25): out of the window, or it would wait
                # for an acknowledgement that cannot come and hold its slot for good. Only
                # the entry just added (Broker.deliver, refill) is taken here; Broker.resend
                # walks the window, whose oversized entries expire() took out first.
                self.dropped(c.sess, at)
            return
        if v.amax and _len(topic) >= _ALIAS_MIN:  # only to a client that asked (MQTT-3.1.2-27)
            topic, pr = self.alias(v, topic, payload, qos, pr)  # type: ignore[attr-defined]
        out = c.out
        if not out:  # _out() and _done() only when they have something to do (Broker._out)
            out = b._out(c)
        tl = _len(topic)
        n = _len(pr)
        # The lengths under 128, the usual ones, written without put_length's call
        rl = 2 + tl + (1 if n < 128 else vbi_len(n)) + n + _len(payload)
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
        if n < 128:
            out.append(n)
        else:
            put_length(out, n)
        out += pr
        out += payload
        b.stats.pub_out += 1
        if out is b.scratch or _len(out) >= b.flush_at:
            b._done(c, out)


    def dropped(self, s, i):
        """Take the entry at i out of s's in-flight window, unsent (Broker.release without the
        refill: this runs inside one)."""
        b = self.b
        e = s.inflight.pop(i)
        b.held_bytes -= cost(e[_MSG])
        if len(e) > 4 and b.persist is not None:
            b.persist.entry_done(s, e)
        b.freed = True


def _size(topic, payload, qos, nprops):
    """The whole PUBLISH's size in bytes, as Maximum Packet Size counts it."""
    rl = 2 + len(topic) + (2 if qos else 0) + vbi_len(nprops) + nprops + len(payload)
    return 1 + vbi_len(rl) + rl
