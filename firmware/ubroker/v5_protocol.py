"""The server side of MQTT 5.0 where it differs from 3.1.1: CONNECT/CONNACK with properties,
PUBLISH in (properties, Topic Alias, Payload Format Indicator), the acknowledgements with
reason codes, SUBSCRIBE and UNSUBSCRIBE (v5_subscribe.py's), DISCONNECT both ways. Loaded by protocol.py at
the first CONNECT with protocol level 5 (load()), then reached through Broker.v5 for
connections that carry Conn.v5; what goes out to v5 subscribers is v5_route.py's.

Every error here is a Malformed whose second argument is the reason code (0x81 when none):
before CONNACK it is answered with a CONNACK of that code, after it with a DISCONNECT
(MQTT 5.0 section 4.13), and the connection is closed."""

import gc

from micropython import const

gc.collect()  # before the other v5 modules load: they need the heap in few pieces

from .codec import PINGRESP_PKT, Malformed, check_utf8, field, u16, utf8
from .topics import forbidden, valid_topic
from .v5_codec import ack, disconnect, packet, props, put_str, put_u
from .v5_route import forward
from .v5_session import Timers

# v5_codec.py's packet kinds (where a property may appear)
_IN_CONNECT = const(1)
_IN_WILL = const(2)
_IN_PUBLISH = const(4)
_IN_ACK = const(8)
_IN_DISCONNECT = const(64)
# Property identifiers (MQTT 5.0 table 2-4)
_P_RESPONSE_TOPIC = const(0x08)
_P_SESSION_EXPIRY = const(0x11)
_P_WILL_DELAY = const(0x18)
_P_ASSIGNED_ID = const(0x12)
_P_SERVER_KEEPALIVE = const(0x13)
_P_AUTH_METHOD = const(0x15)
_P_REQUEST_PROBLEM = const(0x17)
_P_REQUEST_RESPONSE = const(0x19)
_P_RECEIVE_MAX = const(0x21)
_P_ALIAS_MAX = const(0x22)
_P_ALIAS = const(0x23)
_P_MAX_QOS = const(0x24)
_P_RETAIN_AVAILABLE = const(0x25)
_P_MAX_PACKET = const(0x27)
# Wildcard, Subscription Identifier and Shared Subscription Available (0x28-0x2A) are never
# sent: absent means available (MQTT 5.0 sections 3.2.2.3.11-13), and all three are.
# Topic aliases a client may set on one connection (CONNACK Topic Alias Maximum) when the
# config has no max_topic_alias (the boards' profiles): each alias in use is a dict slot and
# a topic kept for the connection's life. The unix profile sets Mosquitto's 10.
_ALIASES = const(8)
# session.py's entry layout
_QOS = const(1)
_STAGE = const(3)
_AWAIT_ACK = const(0)
_AWAIT_COMP = const(1)
# Builtins used per message, as module globals (broker.py's _len)
_len = len
_bytes = bytes
# The v5 mark on a subscription's QoS in the subscription index: the routing sends entries
# with it to v5_route.py (broker.py, Broker.publish)
_MARK = const(4)

# Fixed-header flag bits each type must carry (MQTT 5.0 section 2.1.3); PUBLISH apart. 0xFF:
# a type a client may not send once connected (CONNECT again, MQTT-3.1.0-2, and the server's
# own). Bytes, not a tuple of ints and None: 96 B less heap once loaded (64-bit unix).
_FLAGS = b"\xff\xff\xff\xff\x00\x00\x02\x00\x02\xff\x02\xff\x00\xff\x00\x00"


def _auto_id():
    """The Assigned Client Identifier of a client that gave none (MQTT-3.1.3-6/7): `auto-`
    and a random (version 4) UUID, Mosquitto's form. Random rather than counted: a session
    kept under it (Session Expiry) must not go to another client given the same id after a
    restart. (A 3.1.1 client without an id has a clean session: protocol.py counts.)"""
    from binascii import hexlify
    from os import urandom

    r = bytearray(urandom(16))
    r[6] = r[6] & 0x0F | 0x40  # version 4 (RFC 4122: random)
    r[8] = r[8] & 0x3F | 0x80  # its variant
    h = hexlify(r)  # type: ignore[arg-type]  # any buffer, in MicroPython
    return b"auto-%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


class V5Conn:
    """What a v5 connection has beyond a Conn (Conn.v5): set on v5 connections only."""

    aliases = None  # Topic Alias -> topic name, from the client, for this connection
    max_out = 0  # the client's Maximum Packet Size (0: none given)
    expiry = 0  # Session Expiry Interval from CONNECT, or from DISCONNECT
    wdelay = 0  # the will's Will Delay Interval
    wprops = None  # the will's properties, as v5_route.forward gives them
    # Topic Aliases the server may set: the client's maximum within the server's; with it
    # (v5_asked.py) aout, topic -> the alias set; quiet: Request Problem Information 0
    amax = 0
    # The topic of this client's last PUBLISH that passed the checks (V5._publish): a
    # publisher keeps to few topics, and several publishing at once would each push the
    # others' out of a single broker-wide one
    ltopic = None
    # The Topic Alias that stands for ltopic, 0 none: a publisher's burst by alias is then
    # resolved without the aliases' dict
    lal = 0


def load(proto):
    """The v5 handlers, made once for the broker at the first v5 CONNECT."""
    b = proto.b
    v = getattr(b, "v5", None)  # an attribute of the broker only once loaded
    if v is None:
        b.v5 = v = V5(proto)
        # Messages of v5 publishers may expire in any session, a 3.1.1 client's too
        # (MQTT-3.3.2-5): a session taken back drops them first (Router.resend)
        b.resend = v.resend
        proto.server.shutdown = v.shutdown
    return v


class V5(Timers):
    # Router's two per-message methods in this class's own table: found on V5 they are
    # looked up in one table, not three (V5, Timers, Router). On the class, not the
    # instance: bound there, they were slower (measured earlier)
    route = Timers.route
    write = Timers.write
    # The Maximum Packet Size of the CONNECT being handled, for the Reason String of a refusal:
    # 0 none, -1 not known (its properties not read, or a value of 0)
    lim = -1

    def __init__(self, proto):
        Timers.__init__(self, proto.b, proto.server)
        self.p = proto
        cfg = proto.cfg
        self.cfg = cfg
        # CONNACK Receive Maximum, and the inbound QoS 2 ids a v5 client may leave waiting for
        # PUBREL (MQTT-3.3.4-7): max_inflight_messages, the outbound window, as Mosquitto
        # announces it. 3.1.1 clients, told nothing, keep protocol.py's larger bound.
        self.receive_max = min(65535, self.b.max_inflight)
        # CONNACK Topic Alias Maximum: max_topic_alias, 0 none (section 3.2.2.3.8)
        self.aliases = min(65535, cfg.get("max_topic_alias", _ALIASES))
        # Reason Strings on refusals: off unless `reason_strings true`, as Mosquitto sends none
        # (and some clients read no acknowledgement longer than its short form)
        self.reasons = cfg.get("reason_strings", False)
        self.pubp = None  # (property block with its length, props(), fwd, chk, alias) of a PUBLISH: _publish

    def shutdown(self):
        """Server.shutdown, in its place from the first v5 CONNECT on: each v5 client gets
        what waits for it, then DISCONNECT 0x8B Server shutting down (section 3.14.2.1), its
        last packet; then Server.shutdown closes them all. As there, nothing is allocated (a
        SIGINT may come while the heap is locked). A bridge link is a client: no DISCONNECT
        0x8B from it."""
        sv = self.server
        conns = sv.conns
        for k in conns:
            c = conns[k]
            if c.v5 is not None and c.bridge is None:
                try:
                    out = c.out
                    if out:
                        c.out = None  # written once, as Server.shutdown would: not again there
                        if (c.sock.write(out) or 0) < len(out):
                            continue  # cut short: a DISCONNECT now would land inside a packet
                    c.sock.write(b"\xe0\x01\x8b")
                except Exception:  # also MemoryError: a WebSocket's write may need the heap
                    pass
        type(sv).shutdown(sv)

    # ------------------------------------------------------------------ CONNECT

    def connect(self, c, buf, pos, end, flags, keepalive):
        """CONNECT from the protocol level on (pos is after Keep Alive)."""
        self.lim = -1
        try:
            return self._connect(c, buf, pos, end, flags, keepalive)
        except Malformed as e:
            self.refuse(c, e.args[1] if len(e.args) > 1 else 0x81, "protocol error: " + e.args[0])
            return True

    def refuse(self, c, code, why):
        """CONNACK with a reason code of 0x80 or more, then close (MQTT-3.2.2-5); `why` goes
        with it as its Reason String when the client's Maximum Packet Size is known and room
        is left (MQTT-3.2.2-19). Request Problem Information 0 allows it on CONNACK
        (MQTT-3.1.2-29)."""
        self.b.send(c, self.told(c, bytes((0x20, 3, 0, code, 0)), why))
        self.server.close(c, why, False, True)

    def _connect(self, c, buf, pos, end, flags, keepalive):
        if flags & 1:
            raise Malformed("reserved CONNECT flag")  # MQTT-3.1.2-3
        will_flag = flags & 4
        will_qos = (flags >> 3) & 3
        will_retain = flags & 0x20
        if will_qos == 3:
            raise Malformed("will QoS 3")  # MQTT-3.1.2-12
        if not will_flag and (will_qos or will_retain):
            raise Malformed("will QoS/retain without will flag")  # MQTT-3.1.2-11/13
        found, pos = props(buf, pos, end, _IN_CONNECT)
        if found is None:
            found = {}
        self.lim = found.get(_P_MAX_PACKET, 0) or (-1 if _P_MAX_PACKET in found else 0)
        cid, pos = utf8(buf, pos, end)  # MQTT-3.1.3-4
        will = wp = None
        if will_flag:
            wp, pos = props(buf, pos, end, _IN_WILL)
            topic, pos = utf8(buf, pos, end)
            a, pos = field(buf, pos, end)
            if not valid_topic(topic):
                raise Malformed("will topic", 0x90)
            payload = bytes(buf[a:pos])
            if wp is not None and _check_message(wp, buf, a, pos):
                raise Malformed("will payload is not UTF-8", 0x99)
            if topic[0] == 36 and forbidden(topic):  # $: what a client may not publish (_publish), its will may not
                self.b.stats.hit("publish_to_dollar_topic")
                wp = None
            else:
                will = (topic, payload, will_qos, bool(will_retain))
        user = pw = None
        if flags & 0x80:
            user, pos = utf8(buf, pos, end)
        if flags & 0x40:  # a password alone is allowed in MQTT 5 (section 3.1.2.9)
            a, pos = field(buf, pos, end)
            pw = buf[a:pos]
        if pos != end:
            raise Malformed("bytes after the CONNECT payload")
        if found.get(_P_RECEIVE_MAX) == 0 or found.get(_P_MAX_PACKET) == 0:
            raise Malformed("Receive Maximum or Maximum Packet Size 0", 0x82)
        if _P_AUTH_METHOD in found:  # no enhanced authentication (section 4.12)
            self.refuse(c, 0x8C, "authentication method not supported")
            return True
        b_ = self.b
        if will is not None and (will_qos > b_.max_qos or (will_retain and not self.cfg["retain_available"])):
            self.refuse(c, 0x9B if will_qos > b_.max_qos else 0x9A, "will beyond the server's QoS or retain")
            return True
        p = self.p
        if p.sec is not None:
            code = p.sec.connect(c, user, pw, cid, will)
            if code is None:
                return False  # its password is being checked: offered again when done
            if code:
                self.refuse(c, 0x86 if code == 4 else 0x87, "bad user name or password" if code == 4 else "not authorized")
                return True
        assigned = None
        if not cid:
            cid = assigned = _auto_id()  # MQTT-3.1.3-6/7
        elif len(cid) > self.cfg["max_client_id_length"] or cid.startswith(b"$bridge/"):
            b_.stats.hit("client_id_length")
            self.refuse(c, 0x85, "client id not valid")  # MQTT-3.1.3-8
            return True
        mk = self.cfg["max_keepalive"]
        told = 0
        if mk and (keepalive > mk or not keepalive):
            keepalive = told = mk  # Server Keep Alive (MQTT-3.2.2-21)
        old = b_.sessions.get(cid)
        takeover = old is not None and old.conn is not None
        if not takeover and b_.stats.connected >= self.cfg["max_connections"]:
            b_.stats.hit("connections")
            self.refuse(c, 0x97, "too many clients")
            return True
        if b_.low_heap():
            self.refuse(c, 0x88, "heap below heap_reserve")
            return True
        if old is not None:  # once the CONNECT is taken: a refused one changes nothing
            b_.again(old, flags & 2)
        if takeover:
            self.drop(old.conn, 0x8E, "taken over by a new connection")  # MQTT-3.1.4-3
        expiry = found.get(_P_SESSION_EXPIRY, 0)
        if flags & 2 and old is not None:
            b_.drop_session(old)  # Clean Start (MQTT-3.1.2-4)
            old = None
        # An existing session is resumed (MQTT-3.1.2-5) even with an interval of 0: it then
        # ends with this connection
        s, present = b_.session(cid, not expiry and old is None)
        if s is None:
            self.refuse(c, 0x97, "too many sessions")
            return True
        if not expiry and not s.clean:
            s.clean = True  # resumed, and ends with this connection (MQTT-3.1.2-23)
        v = V5Conn()
        if expiry:
            v.expiry = expiry
        if wp is not None:
            # its Message Expiry counts from when it is published (-1, v5_route.forward)
            v.wprops = forward(buf, wp, -1)
            if _P_WILL_DELAY in wp:
                v.wdelay = wp[_P_WILL_DELAY]
        if _P_MAX_PACKET in found:
            v.max_out = found[_P_MAX_PACKET]
        info = None
        if _P_ALIAS_MAX in found or _P_REQUEST_RESPONSE in found or _P_REQUEST_PROBLEM in found:
            from .v5_asked import asked  # loaded at the first client asking for one of them

            info = asked(self, v, found, cid)
        rm = found.get(_P_RECEIVE_MAX, 65535)
        if rm < b_.max_inflight:
            c.wmax = rm  # MQTT-3.3.4-9
        c.v5 = v
        s.conn = c
        if b_.persist is not None and not s.clean:
            from .store_v5 import timer  # its interval, should the broker stop: store_v5.py

            timer(b_.persist, s, v.expiry, live=True)
        c.sess = s
        if will is not None:
            c.will = will
        if keepalive:
            c.ka = keepalive * 1500
        c.last = self.server.now
        if present:
            if p.acl is not None:
                p.acl.recheck(c, s)
            self.mark(s)
        st = b_.stats
        st.connected += 1
        if st.connected > st.max_connected:
            st.max_connected = st.connected
        b_.send(c, self.connack(present, assigned, told, info))
        self.server.log_event(c, "connected (MQTT 5)")
        if present:
            b_.resend(s)  # Router.resend: what expired meanwhile is dropped first
        return True

    def connack(self, present, assigned, keepalive, info=None):
        """CONNACK 0 with what the server supports (MQTT 5.0 section 3.2.2.3). No Session
        Expiry Interval: the client's is the one used (section 3.2.2.3.2). `info`: the
        Response Information property (v5_asked.py), left out unless the CONNACK stays
        within the client's Maximum Packet Size counting its header at the most (11 bytes)."""
        # Properties may come in any order; this is Mosquitto's, so that a CONNACK equal in
        # content is equal byte for byte. What has its default value is left out (Maximum QoS
        # 2, Retain Available 1, Receive Maximum 65535, Topic Alias Maximum 0).
        pr = bytearray()
        if keepalive:
            put_u(pr, _P_SERVER_KEEPALIVE, keepalive, 2)
        if self.aliases:
            put_u(pr, _P_ALIAS_MAX, self.aliases, 2)
        if assigned is not None:
            put_str(pr, _P_ASSIGNED_ID, assigned)
        if not self.cfg["retain_available"]:
            put_u(pr, _P_RETAIN_AVAILABLE, 0, 1)
        # A limit set is said (server.py refuses what is longer). max_packet_size 0 is none,
        # as absent means (section 3.2.2.3.6) and as Mosquitto's default CONNACK says: what
        # the heap and max_queued_bytes cannot take is then DISCONNECT 0x97 (long_packet.py).
        mp = self.cfg["max_packet_size"]
        if mp:
            put_u(pr, _P_MAX_PACKET, mp, 4)
        if self.receive_max < 65535:
            put_u(pr, _P_RECEIVE_MAX, self.receive_max, 2)
        mq = self.b.max_qos
        if mq < 2:
            put_u(pr, _P_MAX_QOS, mq, 1)
        if info is not None and (not self.lim or len(pr) + len(info) + 11 <= self.lim):
            pr += info
        return packet(0x20, bytes((1 if present else 0, 0)), pr)

    def mark(self, s):
        """A session resumed by a v5 client: its subscriptions carry the v5 mark, so that
        the routing sends their messages through v5_route.py."""
        idx = self.b.index
        for flt in s.filters():
            q = idx.qos_of(flt, s)
            if q < _MARK:
                idx.add(flt, s, q | _MARK)
        if getattr(s, "v5", None) is None:
            s.v5 = {}

    def drop(self, c, code, why):
        """DISCONNECT with a reason code and `why` as its Reason String (left out if it would
        exceed the client's Maximum Packet Size, MQTT-3.14.2-3), then close (MQTT-3.14.4-1/2)."""
        if c.v5 is not None:
            self.b.send(c, self.told(c, disconnect(code), why))
        self.server.close(c, why, True, True)

    # ------------------------------------------------------------------ after CONNECT

    def handle(self, c, b0, buf, pos, end):
        # One function, the try around the dispatch: a call less per packet (a frame of this
        # size is a heap block on MicroPython)
        try:
            if b0 == 0x40 and end - pos == 2 and (buf[pos] or buf[pos + 1]):
                # A PUBACK without reason code, one per QoS 1 delivery: ack_in's answer
                # without its frame, which is a heap block on MicroPython
                self.b.release(c.sess, 0, (buf[pos] << 8) | buf[pos + 1])  # the QoS 1 entry of that id, if any
                return True
            ptype = b0 >> 4
            if ptype == 3:
                return self._publish(c, b0, buf, pos, end)
            flags = _FLAGS[ptype]
            if flags == 0xFF:
                raise Malformed("packet type %d from a client after CONNECT" % ptype, 0x82)  # MQTT-3.1.0-2
            if b0 & 0x0F != flags:
                raise Malformed("reserved flags of packet type %d" % ptype)
            if ptype <= 7:
                return self.ack_in(c, ptype, buf, pos, end)
            if ptype == 8:
                return self.subscribe(c, buf, pos, end)
            if ptype == 10:
                return self.unsubscribe(c, buf, pos, end)
            if ptype == 12:
                if end != pos:
                    raise Malformed("remaining length must be 0")
                self.b.send(c, PINGRESP_PKT)
                return True
            if ptype == 14:
                return self.disconnect(c, buf, pos, end)
            raise Malformed("AUTH without an authentication method", 0x82)  # section 4.12
        except Malformed as e:
            self.drop(c, e.args[1] if len(e.args) > 1 else 0x81, "protocol error: " + e.args[0])
            return True

    def ack_in(self, c, ptype, buf, pos, end):
        """PUBACK, PUBREC, PUBREL, PUBCOMP, with their reason code and properties."""
        pid = u16(buf, pos, end)
        if pid == 0:
            raise Malformed("packet id 0")  # MQTT-2.2.1-3
        code = 0
        if end - pos > 2:
            code = buf[pos + 2]
            if end - pos > 3 and props(buf, pos + 3, end, _IN_ACK)[1] != end:
                raise Malformed("bytes after the properties")
        s = c.sess
        b_ = self.b
        per = b_.persist
        if ptype == 6:  # PUBREL
            pkt = ack(0x70, pid, 0)  # MQTT-4.3.3-11
            q2 = s.qos2in
            if q2 and pid in q2:
                q2.remove(pid)
                b_.freed = True  # a publisher held back by that bound may go on
                if per is not None:
                    per.acknowledge(c, pkt, per.q2_removed(s, pid))
                    return True
            # else already released: a PUBREL sent again after a reconnect, which is "not an
            # error during recovery" (section 3.7.2.1). Success, as Mosquitto answers, rather
            # than 0x92, which a client may take for a session out of step
            b_.send(c, pkt)
            return True
        i = s.find(pid)
        if i < 0:
            if ptype == 5 and code < 0x80:
                # A PUBREC for an id not in flight: PUBREL 0x92 Packet Identifier not found
                # (section 3.6.2.1) ends the client's side of the exchange, which would
                # otherwise wait for a PUBREL that never comes. Other acknowledgements of
                # nothing we sent are ignored
                b_.send(c, self.told(c, ack(0x62, pid, 0x92)))
            return True
        e = s.inflight[i]
        if ptype == 5 and code < 0x80:  # PUBREC: discard the message, keep the id
            if e[_QOS] == 2:
                e[_STAGE] = _AWAIT_COMP
                pkt = ack(0x62, pid, 0)
                if per is None or not per.released(s, e, pkt):
                    b_.send(c, pkt)
            return True
        # PUBACK, PUBCOMP, or a PUBREC with a reason code of 0x80 or more, which ends the
        # exchange (section 4.3.3): the message is done
        if e[_QOS] == (1 if ptype == 4 else 2) and e[_STAGE] == (_AWAIT_COMP if ptype == 7 else _AWAIT_ACK):
            b_.release(s, i)
        return True

    # ------------------------------------------------------------------ PUBLISH

    def _publish(self, c, b0, buf, pos, end):
        qos = (b0 >> 1) & 3
        if qos == 3:
            raise Malformed("PUBLISH QoS 3")  # MQTT-3.3.1-4
        # field() and u16() inline: their two calls were about 1.5 % of the broker's
        # instructions per message (native code, callgrind over bench/loadgen --v5)
        if end - pos < 2:
            raise Malformed("truncated field")
        a = pos + 2
        p = a + ((buf[pos] << 8) | buf[pos + 1])
        if p > end:
            raise Malformed("truncated string")
        mv = self.server.rmv  # buf's memoryview: slices of it copy nothing
        v = c.v5
        t = v.ltopic
        if t is not None and _len(t) == p - a and buf.startswith(t, a):
            topic = t  # a publisher's burst comes on one topic: no copy, and no hash to make
        elif p == a:
            topic = b""  # a Topic Alias stands for it (below): no slice of mv to make
        else:
            topic = _bytes(mv[a:p])
        pid = 0
        if qos:
            if p + 2 > end:
                raise Malformed("truncated field")
            pid = (buf[p] << 8) | buf[p + 1]
            if pid == 0:
                raise Malformed("packet id 0")  # MQTT-2.2.1-3
            p += 2
        # props() and forward() once for the property block the last PUBLISH with a short
        # one had (any v5 client's): the same bytes give the same answers, of which only the
        # values are read below, not the positions (a publisher's properties are often the
        # same on every message). The length is part of the bytes compared.
        last = self.pubp
        k = _len(last[0]) if last is not None else end  # end: no match
        if p + k <= end and buf.startswith(last[0], p):  # (a slice of mv is a heap block)
            p += k
            found = last[1]
            fwd = last[2]
            chk = last[3]
            al = last[4]
            if fwd is not None and fwd[1]:  # a Message Expiry counts from this arrival
                fwd = (fwd[0], fwd[1], self.server.now)
        else:
            a = p
            found, p = props(buf, p, end, _IN_PUBLISH)
            fwd = None
            if found is not None:
                if 0x102 in found or 0x123 in found or 0x118 in found:
                    fwd = forward(buf, found, self.server.now)
                else:  # nothing to cut (nor a Message Expiry): forward()'s result, without its call
                    fwd = (bytes(mv[found[0][0] : p]), 0, self.server.now)
            # What the checks below need of the block, kept with it: its Topic Alias (0 none),
            # checked here once, and whether it has a Response Topic or a Payload Format
            # Indicator to check; most blocks (User Properties, a Message Expiry) have neither
            al = 0
            chk = False
            if found is not None:
                if _P_ALIAS in found:
                    al = found[_P_ALIAS]
                    if not 0 < al <= self.aliases:
                        raise Malformed("topic alias %d" % al, 0x94)  # section 3.3.2.3.4
                chk = _P_RESPONSE_TOPIC in found or 1 in found
            if p - a <= 64:
                self.pubp = (bytes(mv[a:p]), found, fwd, chk, al)
        if al:
            if topic:
                if topic is not t:
                    check_utf8(topic)
                elif v.lal != al:  # the last topic, under another alias: which one now
                    v.lal = al
                if v.aliases is None:
                    v.aliases = {}
                v.aliases[al] = topic
            elif al == v.lal:
                topic = t  # the alias of the client's last topic (lal's rule)
            else:
                topic = v.aliases.get(al) if v.aliases else None  # type: ignore[assignment]
                if topic is None:
                    raise Malformed("topic alias %d not set" % al, 0x82)
        # The client's last topic (t) passed these checks, and max_topic_length stays the same
        if topic is not t and (not topic or _len(topic) > self.p.max_topic):
            self.b.stats.hit("topic_length")
            raise Malformed("topic name empty or too long", 0x90)  # MQTT-3.3.2-1
        b_ = self.b
        idx = b_.index
        r = idx.cache.get(topic)
        # A topic routed before, or equal to a filter without wildcards, was checked then
        # (as protocol.py does for 3.1.1)
        if r is None and topic is not t and topic not in idx.exact:
            check_utf8(topic)
            if not valid_topic(topic):
                raise Malformed("topic name with a wildcard", 0x90)  # MQTT-3.3.2-2
        if topic is not t:
            v.ltopic = topic
            if al or v.lal:  # no instance slot for a client that uses no alias
                v.lal = al
        if qos > b_.max_qos:
            raise Malformed("QoS above Maximum QoS", 0x9B)  # MQTT-3.2.2-11
        retain = b0 & 1
        if retain and not self.cfg["retain_available"]:
            raise Malformed("retain not available", 0x9A)  # MQTT-3.2.2-14
        s = c.sess
        if qos == 2 and s.qos2in:
            if pid in s.qos2in:
                b_.send(c, ack(0x50, pid, 0))  # resent before PUBREL: never delivered twice
                return True
            if len(s.qos2in) >= self.receive_max:
                raise Malformed("Receive Maximum exceeded", 0x93)  # MQTT-3.3.4-7
        if chk:
            if _P_RESPONSE_TOPIC in found and not valid_topic(found[_P_RESPONSE_TOPIC]):
                raise Malformed("response topic", 0x82)  # MQTT-3.3.2-14
            if 1 in found and found[1] == 1 and _check_message(found, mv, p, end):  # no call without the indicator
                if not qos:
                    raise Malformed("payload is not UTF-8", 0x99)
                b_.send(c, self.told(c, ack(0x40 if qos == 1 else 0x50, pid, 0x99)))
                return True
        code = 0
        per = b_.persist
        acked = None
        dollar = topic[0] == 36 and forbidden(topic)
        if dollar or (self.p.acl is not None and not self.p.acl.can_publish(c.user, s.cid, topic)):
            # $ topics and what the access rules forbid: not delivered, and said so
            b_.stats.hit("publish_to_dollar_topic" if dollar else "acl_denied_publish")
            code = 0x87
        else:
            if r is None:
                r = idx.route(topic)
            if not r:
                # No matching subscribers (section 3.4.2.1 allows it, MAY): on PUBACK only,
                # as Mosquitto; a PUBREC of 0 keeps the QoS 2 exchange as clients expect it
                code = 0x10 if qos == 1 else 0
            elif qos and per is None:
                # PUBACK/PUBREC 0 before any copy, written in place by the routing, as
                # protocol.py does for 3.1.1: a client subscribed to what it publishes gets
                # the acknowledgement first
                acked = c
                pkt = self.p.pkt
                pkt[0] = 0x40 if qos == 1 else 0x50
                pkt[2] = pid >> 8
                pkt[3] = pid & 0xFF
            self.sender = s
            ok = b_.publish(topic, mv[p:end], qos, retain == 1, False, None, None, acked, fwd)
            self.sender = None
            if not ok:
                return False
            if retain and (fwd is not None or self.rprops):
                self.kept(topic, fwd)
        b_.stats.pub_in += 1
        if qos == 0:
            return True
        durable = retain and per is not None
        # A PUBREC of 0x80 or more ends the exchange (section 4.3.3): no PUBREL comes to free
        # the id, which would count against Receive Maximum and make its reuse a duplicate
        # (section 2.2.1); not on flash either
        if qos == 2 and code < 0x80 and self.p.qos2_taken(s, pid):
            durable = True
        if acked is not None:
            return True
        if per is not None and (durable or per.fresh or c.acks):
            pkt = ack(0x40 if qos == 1 else 0x50, pid, code)
            per.acknowledge(c, self.told(c, pkt) if code > 0x7F else pkt, durable)
        elif code:
            pkt = ack(0x40 if qos == 1 else 0x50, pid, code)
            b_.send(c, self.told(c, pkt) if code > 0x7F else pkt)
        else:
            # Success without properties: the 4-byte form (section 3.4.2.1), written from the
            # shared buffer as protocol.py's answer() does, so no packet object per message
            # (the store on and nothing of this message waiting for flash)
            pkt = self.p.pkt
            pkt[0] = 0x40 if qos == 1 else 0x50
            pkt[2] = pid >> 8
            pkt[3] = pid & 0xFF
            b_.send(c, pkt)
        return True

    # A PUBLISH from Server._packets (or protocol.publish), without handle()'s call (1.8k
    # instructions per message under callgrind): its Malformed reaches Server.consume, whose
    # goodbye() and close() are drop()'s (the DISCONNECT with the reason code and the Reason
    # String, then the close)
    publish = _publish

    # SUBSCRIBE and UNSUBSCRIBE: v5_subscribe.py's functions, loaded at the first (a v5 client
    # that only publishes, a sensor's, never needs them: 1.6 kB less at its CONNECT)
    def subscribe(self, c, buf, pos, end):
        from .v5_subscribe import subscribe

        return subscribe(self, c, buf, pos, end)

    def unsubscribe(self, c, buf, pos, end):
        from .v5_subscribe import unsubscribe

        return unsubscribe(self, c, buf, pos, end)

    def told(self, c, pkt, text=None):
        """pkt, a CONNACK, PUBACK, PUBREC, PUBREL, SUBACK, UNSUBACK or DISCONNECT that
        refuses or fails something, with a Reason String where it may have one
        (v5_reason.told, the module loaded at the first); as it is when the heap has no room
        for that module: the refusal matters more than its words."""
        if not self.reasons:
            return pkt
        try:
            from .v5_reason import told

            return told(self, c, pkt, text) or pkt
        except MemoryError:
            return pkt

    # ------------------------------------------------------------------ DISCONNECT

    def disconnect(self, c, buf, pos, end):
        code = buf[pos] if end > pos else 0
        if end - pos > 1:
            found, p = props(buf, pos + 1, end, _IN_DISCONNECT)
            if p != end:
                raise Malformed("bytes after the properties")
            if found is not None and _P_SESSION_EXPIRY in found:
                e = found[_P_SESSION_EXPIRY]
                s = c.sess
                if e and not c.v5.expiry:
                    raise Malformed("session expiry set at DISCONNECT", 0x82)  # MQTT-3.14.2-2
                if not e and not s.clean:
                    s.clean = True  # the session ends with this connection
                c.v5.expiry = e  # section 3.14.2.2.2
        # 0x04: Disconnect with Will Message; any other code discards the will (MQTT-3.14.4-3)
        self.server.close(c, "disconnected (reason 0x%02x)" % code, code == 0x04)
        return True


def _check_message(found, buf, a, b):
    """True when a Payload Format Indicator of 1 comes with a payload (buf[a:b]) that is not
    UTF-8 (reason code 0x99, section 3.3.2.3.2)."""
    if found.get(1) == 1:
        try:
            check_utf8(bytes(buf[a:b]))
        except Malformed:
            return True
    return False

