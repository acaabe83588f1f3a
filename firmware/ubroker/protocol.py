"""The server side of MQTT 3.1.1: one function per control packet, dispatched on the packet
type. Each checks the packet as the spec demands and raises Malformed for anything that must
close the connection (MQTT-4.8.0-1); the server does the closing. A handler returns False
when the packet cannot be taken yet (a subscriber has no room) and must be offered again."""

from micropython import const

from .codec import PINGRESP_PKT, Malformed, ack, check_utf8, field, suback, u16, utf8
from .topics import forbidden, valid_filter, valid_topic

# codec.py's packet types and return codes (MQTT 3.1.1 tables 2.1, 3.1) and session.py's
# entry layout, as private consts: imported names would each be a global of this module
# (tests/unit/test_layouts.py keeps the copies equal to their owners)
_CONNECT = const(1)
_PUBLISH = const(3)
_PUBACK = const(4)
_PUBREC = const(5)
_PUBREL = const(6)
_PUBCOMP = const(7)
_SUBSCRIBE = const(8)
_UNSUBSCRIBE = const(10)
_PINGREQ = const(12)
_DISCONNECT = const(14)
_BAD_PROTOCOL = const(1)
_BAD_CLIENT_ID = const(2)
_UNAVAILABLE = const(3)
_SUB_FAILURE = const(0x80)
_QOS = const(1)
_STAGE = const(3)
_AWAIT_COMP = const(1)
# Read-buffer views kept for reuse (Protocol.view), at most
_VIEWS = const(8)
_VEND = const(1 << 14)  # view()'s keys, end << 16 | start, stay small ints on 32 bits below it

# Fixed-header flag bits each type must carry (MQTT-2.2.2-1/2); PUBLISH is checked apart.
_FLAGS = (None, 0, None, None, 0, 0, 2, 0, 2, None, 2, None, 0, None, 0, None)

_bytes = bytes  # a module global is found 5x faster than a builtin (broker.py, _len)
_len = len


class Protocol:
    def __init__(self, broker, server):
        self.b = broker
        self.server = server
        self.cfg = cfg = broker.cfg
        self._ids = 0
        # Fixed for the broker's life, kept here to save lookups per PUBLISH.
        self.rmv = server.rmv
        self.index = broker.index
        self.max_topic = cfg["max_topic_length"]
        self.pkt = broker.pkt  # acknowledgements written in place (answer(), publish)
        # The steady state allocates nothing (tools/heap32: a small board's heap is not churned
        # per message): views of the read buffer are kept by where they start and end (view)
        # and reused, as topic names are (Index.names)
        self.views = {}
        # Passwords and access rules (sec_auth.py, sec_acl.py) are loaded only when configured: a
        # broker without them pays neither their code nor a check per packet.
        # guard: auth.Guard, acl: acl.Acl, sec: the one that checks a CONNECT (secfiles.load)
        self.guard = self.acl = self.sec = None
        if cfg["acl_file"] or cfg["password_file"] or cfg["allow_anonymous"] is False:
            from .sec_files import load

            load(self)

    def handle(self, c, b0, buf, pos, end):
        if c.v5 is not None:
            return self.b.v5.handle(c, b0, buf, pos, end)
        if b0 == 0x40 and c.sess is not None:
            return self.puback(c, buf, pos, end)
        ptype = b0 >> 4
        if ptype == _PUBLISH:
            if c.sess is None:
                raise Malformed("PUBLISH before CONNECT")
            return self.publish(c, b0, buf, pos, end)
        flags = _FLAGS[ptype]
        if flags is None:
            if c.bridge is not None:  # our upstream link: CONNACK, SUBACK, ... (bridge.py)
                return c.bridge.handle(c, ptype, buf, pos, end)
            raise Malformed("packet type %d not accepted by a server" % ptype)
        if b0 & 0x0F != flags and not (flags == 2 and b0 & 0x0F == 10 and c.v31):
            # MQTT 3.1 sets DUP on a PUBREL, SUBSCRIBE or UNSUBSCRIBE sent again (its section
            # 2.1); 3.1.1 fixed their flags at 0010
            raise Malformed("reserved flags of packet type %d" % ptype)
        if c.sess is None:
            if ptype != _CONNECT:
                raise Malformed("first packet is not CONNECT")  # MQTT-3.1.0-1
            return self.connect(c, buf, pos, end)
        if ptype == _CONNECT:
            raise Malformed("second CONNECT")  # MQTT-3.1.0-2
        if ptype == _PINGREQ or ptype == _DISCONNECT:
            if end != pos:
                raise Malformed("remaining length must be 0")
            if ptype == _PINGREQ:
                self.b.send(c, PINGRESP_PKT)  # MQTT-3.12.4-1
            else:
                self.server.close(c, "disconnected", False)  # MQTT-3.14.4-1/3
            return True
        if ptype == _SUBSCRIBE:
            return self.subscribe(c, buf, pos, end)
        if ptype == _UNSUBSCRIBE:
            return self.unsubscribe(c, buf, pos, end)
        # PUBREC, PUBREL, PUBCOMP (PUBACK was taken above)
        if end - pos != 2:
            raise Malformed("acknowledgement length must be 2")
        pid = (buf[pos] << 8) | buf[pos + 1]
        if pid == 0:
            raise Malformed("packet id 0")  # MQTT-2.3.1-1
        s = c.sess
        per = self.b.persist
        if ptype == _PUBREL:
            durable = False
            q2 = s.qos2in
            if q2 and pid in q2:
                q2.remove(pid)
                self.b.freed = True  # a publisher held back by that bound may go on
                if per is not None:
                    durable = per.q2_removed(s, pid)
            self.acknowledge(c, _PUBCOMP, pid, durable)  # MQTT-4.3.3-2
            return True
        i = s.find(pid)
        if i < 0:
            return True  # an acknowledgement for nothing we sent: ignore
        e = s.inflight[i]
        if ptype == _PUBREC:
            if e[_QOS] == 2:
                e[_STAGE] = _AWAIT_COMP  # MQTT-4.3.3-1: discard the message, keep the id
                if per is None:
                    self.answer(c, 0x62, pid)  # PUBREL
                else:
                    pkt = ack(_PUBREL, pid)
                    if not per.released(s, e, pkt):
                        self.b.send(c, pkt)
        elif e[_QOS] == 2 and e[_STAGE] == _AWAIT_COMP:  # PUBCOMP
            self.b.release(s, i)
        return True

    def puback(self, c, buf, pos, end):
        """PUBACK, the other packet of every QoS 1 message (Server._packets calls it for a
        3.1.1 client directly): apart from handle(), whose frame is a heap block per call on
        MicroPython (more than 11 words of state; fun_bc_call), while this one's fits the C
        stack."""
        if end - pos != 2:
            raise Malformed("acknowledgement length must be 2")
        pid = (buf[pos] << 8) | buf[pos + 1]
        if pid == 0:
            raise Malformed("packet id 0")  # MQTT-2.3.1-1
        self.b.release(c.sess, 0, pid)  # the QoS 1 entry of pid, if there is one
        return True

    def answer(self, c, b0, pid):
        """A 4-byte acknowledgement written from one buffer into c's output (no packet
        object): only when nothing has to wait for the store."""
        pkt = self.pkt
        pkt[0] = b0
        pkt[2] = pid >> 8
        pkt[3] = pid & 0xFF
        self.b.send(c, pkt)

    # ------------------------------------------------------------------ CONNECT

    def connect(self, c, buf, pos, end):
        a, b = field(buf, pos, end)
        name = bytes(buf[a:b])
        if b + 4 > end:
            raise Malformed("truncated CONNECT")
        level = buf[b]
        flags = buf[b + 1]
        keepalive = (buf[b + 2] << 8) | buf[b + 3]
        pos = b + 4
        # 0x80 on the level marks a bridge (Mosquitto's try_private): it is not sent back
        # what it publishes, so two brokers bridged both ways do not loop.
        peer = level & 0x80
        level &= 0x7F
        if not ((name == b"MQTT" and level == 4) or (name == b"MQIsdp" and level == 3)):
            if name == b"MQTT" and level == 5 and not peer:
                # MQTT 5: its modules come into the heap with the first v5 client
                from .v5_protocol import load

                return load(self).connect(c, buf, pos, end, flags, keepalive)
            if name == b"MQTT" or name == b"MQIsdp":
                self.refuse(c, _BAD_PROTOCOL, "protocol level %d not supported" % level)  # MQTT-3.1.2-2
                return True
            raise Malformed("protocol name")  # MQTT-3.1.2-1
        if flags & 1:
            raise Malformed("reserved CONNECT flag")  # MQTT-3.1.2-3
        clean = bool(flags & 2)
        will_flag = flags & 4
        will_qos = (flags >> 3) & 3
        will_retain = flags & 0x20
        if will_qos == 3:
            raise Malformed("will QoS 3")  # MQTT-3.1.2-14
        if not will_flag and (will_qos or will_retain):
            raise Malformed("will QoS/retain without will flag")  # MQTT-3.1.2-13/15
        if flags & 0x40 and not flags & 0x80:
            raise Malformed("password without user name")  # MQTT-3.1.2-22
        cid, pos = utf8(buf, pos, end)  # MQTT-3.1.3-4
        will = None
        if will_flag:
            topic, pos = utf8(buf, pos, end)
            a, pos = field(buf, pos, end)
            if not valid_topic(topic):
                raise Malformed("will topic")
            if topic[0] == 36 and forbidden(topic):  # $: what a client may not publish (publish), its will may not
                self.b.stats.hit("publish_to_dollar_topic")
            else:
                will = (topic, bytes(buf[a:pos]), will_qos, bool(will_retain))
        user = pw = None
        if flags & 0x80:
            user, pos = utf8(buf, pos, end)
        if flags & 0x40:
            a, pos = field(buf, pos, end)
            pw = buf[a:pos]
        if pos != end:
            raise Malformed("bytes after the CONNECT payload")
        if self.sec is not None:
            code = self.sec.connect(c, user, pw, cid, will)
            if code is None:
                return False  # its password is being checked: offered again when done
            if code:
                self.refuse(c, code, "refused: CONNACK %d" % code)  # MQTT-3.2.2: 4 or 5
                return True
        if not cid:
            if not clean:
                self.refuse(c, _BAD_CLIENT_ID, "empty client id with a persistent session")  # MQTT-3.1.3-8
                return True
            self._ids += 1
            cid = b"ub-%d-%d" % (self._ids, self.server.now & 0xFFFF)  # MQTT-3.1.3-6
        elif len(cid) > self.cfg["max_client_id_length"]:
            self.b.stats.hit("client_id_length")
            self.refuse(c, _BAD_CLIENT_ID, "client id too long")
            return True
        elif cid.startswith(b"$bridge/"):
            self.refuse(c, _BAD_CLIENT_ID, "client id of a bridge")
            return True
        mk = self.cfg["max_keepalive"]
        if mk and (keepalive > mk or not keepalive):
            # 3.1.1 cannot tell a client to use a shorter keepalive: Mosquitto refuses it with
            # "identifier rejected", and so do we (0, no keepalive at all, is more than any).
            self.b.stats.hit("keepalive")
            self.refuse(c, _BAD_CLIENT_ID, "keepalive %d above max_keepalive %d" % (keepalive, mk))
            return True
        b_ = self.b
        old = b_.sessions.get(cid)
        takeover = old is not None and old.conn is not None
        if not takeover and b_.stats.connected >= self.cfg["max_connections"]:
            b_.stats.hit("connections")
            self.refuse(c, _UNAVAILABLE, "too many clients")
            return True
        if b_.low_heap():
            self.refuse(c, _UNAVAILABLE, "heap below heap_reserve")
            return True
        if old is not None:  # once the CONNECT is taken: a refused one changes nothing
            b_.again(old, clean)
        if takeover:
            oc = old.conn
            if oc.v5 is not None:  # a v5 connection taken over by a 3.1.1 one is still told
                b_.v5.drop(oc, 0x8E, "taken over by a new connection")  # type: ignore[attr-defined]  # MQTT-3.1.4-3
            else:
                self.server.close(oc, "taken over by a new connection", True)  # MQTT-3.1.4-2
        s, present = b_.session(cid, clean)
        if s is None:
            self.refuse(c, _UNAVAILABLE, "too many sessions")
            return True
        s.conn = c
        c.sess = s
        if level == 3:
            c.v31 = True  # counted apart in $SYS (sysinfo.py)
        if will is not None:  # an attribute set costs heap: only what differs from the default
            c.will = will
        if peer:
            c.peer = s
        if keepalive:
            c.ka = keepalive * 1500
        c.last = self.server.now  # until now it counted from accept (connect_timeout)
        if present and self.acl is not None:
            self.acl.recheck(c, s)
        st = b_.stats
        st.connected += 1
        if st.connected > st.max_connected:
            st.max_connected = st.connected
        # MQTT-3.2.2-1..3; 3.1 (level 3) has no Session Present flag: its first byte is 0
        b_.send(c, b"\x20\x02\x01\x00" if present and level == 4 else b"\x20\x02\x00\x00")
        self.server.log_event(c, "connected")
        if present:
            b_.resend(s)
        return True

    def refuse(self, c, code, why):
        # CONNACK 0x20 0x02, session present 0, the code: written like an acknowledgement, from
        # the one 4-byte buffer, so a heap too full or too fragmented for one more client can
        # still say so.
        self.answer(c, 0x20, code)
        self.server.close(c, why, False, True)

    # ------------------------------------------------------------------ PUBLISH

    def publish(self, c, b0, buf, pos, end):
        if c.v5 is not None:
            return self.b.v5.publish(c, b0, buf, pos, end)
        qos = (b0 >> 1) & 3
        if qos == 3:
            raise Malformed("PUBLISH QoS 3")  # MQTT-3.3.1-4
        if end - pos < 2:
            raise Malformed("truncated field")
        a = pos + 2
        p = a + ((buf[pos] << 8) | buf[pos + 1])  # the topic is buf[a:p]
        if p > end:
            raise Malformed("truncated string")
        if p - a > self.max_topic:
            self.b.stats.hit("topic_length")
            raise Malformed("topic longer than max_topic_length")
        rmv = self.rmv
        # A name published before is found without a copy: by a fingerprint of its length and
        # a few of its bytes, then compared whole. Those names were checked when first seen.
        names = self.index.names
        topic = None
        fp = 0
        if p > a:
            fp = ((p - a) & 255) << 21 ^ buf[p - 1] << 14 ^ buf[p - 2] << 7 ^ buf[(a + p) >> 1] ^ buf[a] << 3
            topic = names.get(fp)
            if topic is not None and (_len(topic) != p - a or not buf.startswith(topic, a)):
                topic = None
        if topic is None:
            topic = _bytes(rmv[a:p])
            index = self.index
            # A topic routed before, or equal to a filter without wildcards, was checked then.
            if topic not in index.cache and topic not in index.exact:
                check_utf8(topic)
                if not valid_topic(topic):
                    raise Malformed("topic name empty or with a wildcard")  # MQTT-3.3.2-2, 4.7.3-1
            if _len(names) >= self.index.cache_size:
                names.clear()
            try:
                names[fp] = topic  # a name of the same fingerprint makes way
            except MemoryError:
                # Only a cache, as Index.cache: its table (272 B at 16 names) may find no
                # block in a full heap, and that closed the publisher (test_64_subscribed_
                # clients_in_the_esp32_heap: its burst of 64 topics, in 2 of 3 runs)
                pass
        b_ = self.b
        s = c.sess
        pid = 0
        if qos:
            if p + 2 > end:
                raise Malformed("truncated field")
            pid = (buf[p] << 8) | buf[p + 1]
            if pid == 0:
                raise Malformed("packet id 0")  # MQTT-2.3.1-1
            p += 2
            if qos == 2 and s.qos2in:
                if pid in s.qos2in:
                    # A resent QoS 2 PUBLISH we already took: acknowledge, never deliver twice.
                    b_.send(c, ack(_PUBREC, pid))
                    return True
                if len(s.qos2in) >= 4 * b_.max_inflight + 16:
                    # The ids we keep are bounded: the publisher waits (backpressure) until
                    # its PUBRELs free some, as for a full queue.
                    b_.stats.hit("qos2_inbound")
                    return False
        retain = b0 & 1 and self.cfg["retain_available"]
        per = b_.persist
        br = c.bridge
        acked = None
        if br is not None:  # from upstream: under its local name, and never sent back up
            topic = br.local_topic(topic)
            if not b_.publish(topic, rmv[p:end], qos, retain, False, None, s):
                return False
        elif topic[0] == 36 and forbidden(topic):  # $
            # Clients may not write $ topics such as $SYS: acknowledged, not delivered.
            b_.stats.hit("publish_to_dollar_topic")
        elif self.acl is not None and not self.acl.can_publish(c.user, s.cid, topic):
            # Acknowledged as QoS 1/2 require (3.1.1 has no way to say no), not delivered.
            b_.stats.hit("acl_denied_publish")
        else:
            if qos and per is None:
                # Nothing to wait for: PUBACK/PUBREC written in place (no packet object) by
                # the routing, once the message is taken and before any copy of it.
                acked = c
                pkt = self.pkt
                pkt[0] = 0x40 if qos == 1 else 0x50
                pkt[2] = pid >> 8
                pkt[3] = pid & 0xFF
            # Views kept only for a packet at the start of the read buffer (pos < 6: the
            # usual one packet per read), not for a burst's packets, whose offsets vary.
            if pos < 6 and end < _VEND:
                payload = self.view(p, end)
                raw = self.view(pos, end) if qos == 0 else None
            else:
                payload = rmv[p:end]
                raw = rmv[pos:end] if qos == 0 else None
            if not b_.publish(topic, payload, qos, retain, False, raw, c.peer, acked):
                return False
        st = b_.stats
        st.pub_in += 1
        if qos == 0:
            return True
        # A retained message must be on flash before it is acknowledged, like a queued one.
        durable = retain and per is not None
        if qos == 2 and self.qos2_taken(s, pid):
            durable = True  # exactly once across a power cut needs the id on flash
        if acked is not None:
            return True
        if durable or (per is not None and (per.fresh or c.acks)):
            self.acknowledge(c, _PUBACK if qos == 1 else _PUBREC, pid, durable)  # MQTT-4.3.2-2, 4.3.3-2
            return True
        self.answer(c, 0x40 if qos == 1 else 0x50, pid)
        return True

    def view(self, a, b):
        """The read buffer's bytes a..b as a memoryview, made once for these offsets and kept
        (up to _VIEWS of them): a sensor's PUBLISH comes at the same offsets message after
        message, and a slice of rmv per packet was a heap block (16 B on 32 bits). The bytes
        seen through it are the buffer's at the time of use, as with a fresh slice."""
        views = self.views
        k = b << 16 | a
        v = views.get(k)
        if v is None:
            v = self.rmv[a:b]
            if _len(views) >= _VIEWS:
                views.clear()
            try:
                views[k] = v
            except MemoryError:  # only a cache (see publish's names)
                pass
        return v

    def qos2_taken(self, s, pid):
        """Note an inbound QoS 2 packet id awaiting PUBREL (3.1.1 and v5 alike); True when the
        store must have it on flash before PUBREC goes out."""
        q2 = s.qos2in
        if q2 is None:
            s.qos2in = q2 = []
        q2.append(pid)
        per = self.b.persist
        return per is not None and per.q2_added(s, pid)

    def acknowledge(self, c, ptype, pid, durable):
        """PUBACK/PUBREC/PUBCOMP: at once, written in place, or with the store as a packet
        sent once what it confirms is safe (store_persist.py)."""
        p = self.b.persist
        if p is None:
            self.answer(c, ptype << 4, pid)
        else:
            p.acknowledge(c, ack(ptype, pid), durable)

    # ------------------------------------------------------------------ SUBSCRIBE

    def subscribe(self, c, buf, pos, end):
        pid = u16(buf, pos, end)
        if pid == 0:
            raise Malformed("packet id 0")  # MQTT-2.3.1-1
        pos += 2
        if pos == end:
            raise Malformed("SUBSCRIBE without a filter")  # MQTT-3.8.3-3
        reqs = []
        while pos < end:
            flt, pos = utf8(buf, pos, end)  # MQTT-3.8.3-1
            if pos >= end:
                raise Malformed("SUBSCRIBE filter without QoS byte")
            q = buf[pos]
            pos += 1
            if q > 2:
                raise Malformed("SUBSCRIBE requested QoS byte")  # MQTT-3-8.3-4
            if not valid_filter(flt):
                raise Malformed("invalid topic filter")  # MQTT-4.7.1-2/3, 4.7.3-1
            reqs.append((flt, q))
        b_ = self.b
        s = c.sess
        codes = bytearray()
        granted_new = []
        for flt, q in reqs:
            if q > b_.max_qos:
                q = b_.max_qos
            fresh = not s.has_filter(flt)
            if fresh and len(flt) > self.cfg["max_topic_length"]:
                b_.stats.hit("topic_length")
                codes.append(_SUB_FAILURE)
                continue
            if fresh and s.nfilters() >= self.cfg["max_subscriptions_per_client"]:
                b_.stats.hit("subscriptions_per_client")
                codes.append(_SUB_FAILURE)
                continue
            if self.acl is not None and not self.acl.can_subscribe(c.user, s.cid, flt):
                b_.stats.hit("acl_denied_subscribe")
                codes.append(_SUB_FAILURE)  # MQTT-3.9.3-2: 0x80, failure
                continue
            if fresh and b_.index.count >= self.cfg["max_subscriptions"]:
                b_.stats.hit("subscriptions")
                codes.append(_SUB_FAILURE)
                continue
            if fresh and b_.low_heap():
                codes.append(_SUB_FAILURE)
                continue
            if fresh:
                s.add_filter(flt)
            b_.index.add(flt, s, q)  # replaces the QoS of an identical filter (MQTT-3.8.4-3)
            if b_.persist is not None:
                b_.persist.subscribed(s, flt, q)
            codes.append(q)
            granted_new.append((flt, q))
        b_.send(c, suback(pid, codes))  # MQTT-3.8.4-1, 3.8.4-5
        for flt, q in granted_new:
            b_.send_retained(s, flt, q)  # MQTT-3.3.1-6
        return True

    def unsubscribe(self, c, buf, pos, end):
        pid = u16(buf, pos, end)
        if pid == 0:
            raise Malformed("packet id 0")
        pos += 2
        if pos == end:
            raise Malformed("UNSUBSCRIBE without a filter")  # MQTT-3.10.3-2
        flts = []
        while pos < end:
            flt, pos = utf8(buf, pos, end)
            if not flt:
                raise Malformed("invalid topic filter")  # MQTT-4.7.3-1, as in SUBSCRIBE (valid_filter)
            flts.append(flt)
        s = c.sess
        for flt in flts:
            if s.drop_filter(flt):
                self.b.index.remove(flt, s)  # MQTT-3.10.4-1
                if self.b.persist is not None:
                    self.b.persist.unsubscribed(s, flt)
        self.b.send(c, ack(11, pid))  # UNSUBACK even when nothing matched (MQTT-3.10.4-5)
        return True
