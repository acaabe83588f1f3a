"""A bridge to an upstream broker (a `connection NAME` section, as in Mosquitto): an MQTT
client inside the broker's own loop, no thread.

What goes up is held by a local session of its own, `$bridge/NAME`, persistent and subscribed
to the `out` patterns: the broker queues, stores on flash and resends for it exactly as for
any persistent subscriber, and a message leaves that session only when the upstream broker
acknowledges it (PUBACK, or PUBCOMP for QoS 2). The upstream connection is that session's
connection, so the upstream's PUBACK/PUBREC/PUBCOMP and its PUBLISHes (the `in` patterns)
go through the ordinary handlers; this module only adds what a client does that a server
does not: CONNECT, SUBSCRIBE, PINGREQ, reading CONNACK/SUBACK, and reconnecting with a
growing, jittered delay.

No loops: a message that came from upstream is routed locally with this session as its
origin, which routing skips, and the CONNECT says "bridge" (protocol level 0x84, Mosquitto's
try_private) so the upstream does not echo our own messages back.

With `bridge_protocol_version mqttv50` the link speaks MQTT 5 (bridge_v5.py, loaded with the
v5 modules only then): the session's subscriptions carry the v5 mark, so what goes up keeps
its properties, and what comes down is parsed there."""

import gc
import random
import socket
import time

from .codec import CONNACK, PINGREQ, SUBACK, const, put_length
from .session import AWAIT_ACK, STAGE, Conn
from .topics import match_levels

_IN_OUT = const(5)  # select.POLLIN | select.POLLOUT: writable once the TCP connection is made
_CONNACK_TEXT = ("accepted", "unacceptable protocol level", "client id rejected", "server unavailable",
                 "bad user name or password", "not authorised")


def _str(out, s):
    b = s.encode()
    out.append(len(b) >> 8)
    out.append(len(b) & 0xFF)
    out.extend(b)


def start_all(server):
    """Each configured bridge takes its local session and starts connecting; the session of
    a bridge no longer configured is dropped with what it held (it goes nowhere now)."""
    server.bridges = bridges = [Bridge(server, bc) for bc in server.cfg["connection"]]
    for br in bridges:
        if br.v5:
            gc.collect()  # the v5 modules come now: they need the heap in few pieces
            try:
                from .bridge_v5 import install

                install(server)
            except MemoryError:
                # A board whose heap has no room for the v5 modules still bridges, at 3.1.1;
                # what loaded before the heap ran out goes again
                import ubroker

                for name in ("bridge_v5", "v5_protocol", "v5_route", "v5_codec"):
                    ubroker.forget(name)
                gc.collect()
                for x in bridges:
                    if x.v5:
                        x.v5 = False
                        server.log("bridge %s: no heap for MQTT 5 (%d bytes free): using MQTT 3.1.1"
                                   % (x.name, gc.mem_free()))
            break
    names = [br.cid for br in bridges]
    b = server.broker
    for cid in list(b.sessions):
        if cid.startswith(b"$bridge/") and cid not in names:
            server.log("bridge %s is no longer configured: its queue is dropped" % cid[8:].decode())
            b.drop_session(b.sessions[cid])
    for br in bridges:
        br.start(server.now)
        br.tick(server.now)


class Bridge:
    def __init__(self, server, bc):
        self.server = server
        self.b = server.broker
        self.log = server.log
        self.name = bc["name"]
        self.host, self.port = bc["address"]
        self.client_id = bc.get("remote_clientid") or "ubroker." + self.name
        self.user = bc.get("remote_username")
        self.password = bc.get("remote_password")
        self.keepalive = bc["keepalive_interval"]
        self.clean = bc["cleansession"]
        self.private = bc["try_private"]
        self.v5 = bc.get("bridge_protocol_version") == "mqttv50"
        self.base, self.cap = bc["restart_timeout"]
        self.cafile = bc.get("bridge_cafile")
        self.insecure = bc["bridge_insecure"]
        self.tls = None  # the ssl context, made at the first TLS connection
        self.topics = bc["topic"]
        self.cid = b"$bridge/" + self.name.encode()
        # Prefix rewriting, only for the topic lines that have one: (filter levels, from, to).
        self.up = []  # local topic -> remote topic
        self.down = []  # remote topic -> local topic
        for pattern, direction, _q, local, remote in self.topics:
            if local == remote:
                continue
            if direction != "in":
                self.up.append(((local + pattern).encode().split(b"/"), local.encode(), remote.encode()))
            if direction != "out":
                self.down.append(((remote + pattern).encode().split(b"/"), remote.encode(), local.encode()))
        self.sess = None
        self.conn = None
        self.connected = False
        self.failures = 0
        self.due = 0  # ticks_ms of the next connection attempt
        self.pinged = 0
        self.sent = 0
        self.received = 0
        self.dropped = 0  # QoS 0 messages for upstream while it was unreachable
        self.last_error = ""

    # ------------------------------------------------------------------ start

    def start(self, now):
        """Take (or recover from flash) the bridge's local session and make its subscriptions
        the configured `out` patterns. Connecting starts at once."""
        b = self.b
        s, _present = b.session(self.cid, False)
        if s is None:
            raise MemoryError("no session left for bridge %s" % self.name)
        self.sess = s
        s.fwd = self
        s.qmax = b.cfg["bridge_max_queued_messages"]
        mark = 4 if self.v5 else 0  # the v5 mark (v5_protocol.py): routed with properties
        want = {}
        for pattern, direction, qos, local, _remote in self.topics:
            if direction != "in":
                flt = (local + pattern).encode()
                if want.get(flt, -1) < qos:
                    want[flt] = qos
        p = b.persist
        for flt in list(s.filters()):
            if flt not in want:
                s.drop_filter(flt)
                b.index.remove(flt, s)
                if p is not None:
                    p.unsubscribed(s, flt)
        for flt in want:
            had = b.index.qos_of(flt, s) if s.has_filter(flt) else -1
            if had != want[flt] | mark:
                s.add_filter(flt)
                b.index.add(flt, s, want[flt] | mark)
                if p is not None and had & 3 != want[flt]:  # the store keeps the QoS, not the mark
                    p.subscribed(s, flt, want[flt])
        self.due = now

    # ------------------------------------------------------------------ topics

    def remote_topic(self, topic):
        """The topic a local message goes up under; counts it as sent (a resend after a
        reconnect is taken back off in up_)."""
        self.sent += 1
        for levels, frm, to in self.up:
            if match_levels(levels, topic):
                return to + topic[len(frm):]
        return topic

    def local_topic(self, topic):
        self.received += 1
        for levels, frm, to in self.down:
            if match_levels(levels, topic):
                return to + topic[len(frm):]
        return topic

    # ------------------------------------------------------------------ connection

    def tick(self, now):
        """Once a second: connect when due, keep the link alive with PINGREQ."""
        c = self.conn
        if c is not None and c.sock is None:
            self.conn = c = None
        if c is None:
            if time.ticks_diff(now, self.due) >= 0:
                self.connect(now)
            return
        if self.connected and time.ticks_diff(now, self.pinged) >= self.keepalive * 1000:
            self.pinged = now
            self.b.send(c, bytes((PINGREQ << 4, 0)))

    def connect(self, now):
        sv = self.server
        try:
            addr = socket.getaddrinfo(self.host, self.port)[0][-1]
            s = socket.socket()
        except Exception as e:  # OSError, MemoryError (a tuple of types would allocate)
            self.failed(now, "address %s:%d: %s" % (self.host, self.port, e))
            return
        try:
            s.setblocking(False)
            try:
                s.connect(addr)
            except OSError as e:
                if e.args[0] not in (115, 119):  # EINPROGRESS (Linux, lwIP): connecting
                    raise e  # not a bare raise: the native emitter (emit native) has none
            if self.cafile is not None or self.insecure:
                s = self.wrap(s)
            c = Conn(s, now)
            c.bridge = self  # type: ignore[assignment]  # the class default is None
            if self.v5:
                self.b.v5.link_open(c)  # type: ignore[attr-defined]
            c.out = self.connect_packet()
            c.mask = _IN_OUT
            sv.poll.register(s, _IN_OUT)
        except Exception as e:  # OSError, MemoryError, ValueError (TLS): a tuple would allocate
            s.close()
            self.failed(now, "connect to %s:%d: %s" % (self.host, self.port, e))
            return
        sv.conns[s] = c
        self.conn = c

    def wrap(self, s):
        """TLS to the upstream, the handshake driven by the loop like any other I/O: the
        socket is non-blocking and the first write starts it. The certificate must chain to
        bridge_cafile and name the host of `address`, unless bridge_insecure is true."""
        ctx = self.tls
        if ctx is None:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            if self.insecure and self.cafile is None:
                ctx.verify_mode = ssl.CERT_NONE  # type: ignore[attr-defined]  # not in the stubs; the ports have it
            else:
                import ubroker
                from . import sec_tls

                ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]
                try:
                    ctx.load_verify_locations(cadata=sec_tls.der(self.cafile))
                finally:
                    ubroker.forget("sec_tls")
            self.tls = ctx
        return ctx.wrap_socket(s, server_hostname=None if self.insecure else self.host,
                               do_handshake_on_connect=False)

    def connect_packet(self):
        flags = 0x02 if self.clean else 0
        if self.user is not None:
            flags |= 0x80
            if self.password is not None:
                flags |= 0x40
        body = bytearray(b"\x00\x04MQTT")
        body.append(5 if self.v5 else 0x84 if self.private else 4)
        body.append(flags)
        body.append(self.keepalive >> 8)
        body.append(self.keepalive & 0xFF)
        if self.v5:
            body += self.b.v5.link_props(self)  # type: ignore[attr-defined]
        _str(body, self.client_id)
        if self.user is not None:
            _str(body, self.user)
            if self.password is not None:
                _str(body, self.password)
        return self.packet(0x10, body)

    def packet(self, b0, body):
        out = bytearray((b0,))
        put_length(out, len(body))
        out.extend(body)
        return out

    def failed(self, now, why):
        """One more failed attempt: the next one waits base * 2^failures seconds, capped, and
        shortened by a random part so gateways that lost the same uplink do not return in step."""
        self.last_error = why
        self.log("bridge %s: %s" % (self.name, why))
        delay = self.base << min(self.failures, 16)
        if delay > self.cap:
            delay = self.cap
        self.failures += 1
        ms = delay * 1000
        ms -= ms * random.getrandbits(8) // 512  # up to half of it
        self.due = time.ticks_add(now, ms)

    def closed(self, c, why):
        """The server closed the upstream connection (error, keepalive, refusal)."""
        if c is not self.conn:
            return
        was = self.connected
        self.connected = False
        self.conn = None
        if was:
            self.log("bridge %s: disconnected: %s" % (self.name, why))
            self.last_error = why
            self.failures = 0
            self.due = self.server.now  # try again at once, then back off
        else:
            self.failed(self.server.now, why)

    # ------------------------------------------------------------------ packets

    def handle(self, c, ptype, buf, pos, end):
        """The packets only a server sends: CONNACK, SUBACK, UNSUBACK, PINGRESP (a 3.1.1 link;
        bridge_v5.py has a v5 link's)."""
        from .codec import Malformed

        if ptype == CONNACK:
            if end - pos != 2 or self.connected:
                raise Malformed("unexpected CONNACK")
            code = buf[pos + 1]
            if code:
                if code == 1 and self.private:
                    self.private = False  # an upstream that does not know bridges: plain 3.1.1
                    self.log("bridge %s: upstream refuses bridge mode; using plain MQTT 3.1.1" % self.name)
                    self.failures = 0
                why = _CONNACK_TEXT[code] if code < len(_CONNACK_TEXT) else "code %d" % code
                self.server.close(c, "upstream refused: CONNACK %d (%s)" % (code, why), False)
                return True
            self.up_(c, buf[pos] & 1)
            return True
        if not self.connected:
            raise Malformed("packet before CONNACK")
        if ptype == SUBACK:
            for i in range(pos + 2, end):
                if buf[i] == 0x80:
                    self.last_error = "upstream refused a subscription"
                    self.log("bridge %s: %s" % (self.name, self.last_error))
                    break
        return True  # UNSUBACK, PINGRESP: receiving them was the point (c.last)

    def up_(self, c, present):
        sv = self.server
        b = self.b
        s = self.sess
        self.connected = True
        self.failures = 0
        self.last_error = ""
        self.pinged = sv.now
        c.ka = self.keepalive * 1500  # the server closes the link after 1.5 x keepalive of silence
        c.sess = s
        s.conn = c
        st = b.stats
        st.connected += 1
        if st.connected > st.max_connected:
            st.max_connected = st.connected
        self.log("bridge %s: connected to %s:%d%s" % (self.name, self.host, self.port,
                                                     " (session present)" if present else ""))
        if self.v5:
            b.v5.link_subscribe(self, c)  # type: ignore[attr-defined]
        else:
            body = bytearray(b"\x00\x01")
            n = 0
            for pattern, direction, qos, _local, remote in self.topics:
                if direction != "out":
                    _str(body, remote + pattern)
                    body.append(qos)
                    n += 1
            if n:
                self.b.send(c, self.packet(0x82, body))
        # resend() writes again, with DUP, every PUBLISH still awaiting its PUBACK/PUBREC: each
        # went up before the link broke and was counted then, so it is not counted twice.
        again = 0
        for e in s.inflight or ():
            if e[STAGE] == AWAIT_ACK:
                again += 1
        b.resend(s)
        self.sent -= again

    # ------------------------------------------------------------------ $SYS

    def figures(self):
        p = "bridge/" + self.name + "/"
        s = self.sess
        yield p + "connected", 1 if self.connected else 0
        yield p + "queued", s.held() if s is not None else 0
        yield p + "sent", self.sent
        yield p + "received", self.received
        yield p + "dropped", self.dropped
        yield p + "last_error", self.last_error or "none"
