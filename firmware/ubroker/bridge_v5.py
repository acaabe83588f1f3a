"""MQTT 5 on a bridge's upstream link (`bridge_protocol_version mqttv50`): what a client does
at level 5 that bridge.py's 3.1.1 link does not. The CONNECT's properties; CONNACK, SUBACK
and DISCONNECT from the upstream with their reason codes and properties; the upstream's
PUBLISHes with their properties routed locally; and the topic of what goes up rewritten as
bridge.py's prefixes say. The acknowledgements both ways are v5_protocol.py's, unchanged.

Loaded at start only when a bridge speaks MQTT 5 (the v5 modules come with it): install()
makes the broker's v5 handlers (Broker.v5) a Link, which hands the packets of connections
that are bridge links (Conn.bridge) to this module and every other one to v5_protocol.py.
A 3.1.1 bridge, and a broker without bridges, never import it.

No loops: the `in` subscriptions carry No Local, so the upstream never sends back what this
link published (MQTT-3.8.3-3), which is what protocol level 0x84 (try_private) asks of a
Mosquitto at 3.1.1; level 5 has no bridge bit. They also carry Retain As Published, as a
bridge needs to pass on which messages are retained."""

from micropython import const

from .codec import Malformed, field, put_length, u16
from .topics import match_levels
from .v5_codec import ack, put_u, vbi, vbi_len
from .v5_protocol import V5, V5Conn

_P_EXPIRY = const(0x02)
_P_SUBSCRIPTION_ID = const(0x0B)
_P_ALIAS = const(0x23)
_P_SESSION_EXPIRY = const(0x11)
_P_SERVER_KEEPALIVE = const(0x13)
_P_REASON = const(0x1F)
_P_RECEIVE_MAX = const(0x21)
_P_MAX_QOS = const(0x24)
_P_MAX_PACKET = const(0x27)

# The value type of each property a server may send, by identifier (MQTT 5.0 table 2-4):
# 1 byte, 2 two-byte integer, 3 four-byte integer, 4 variable byte integer, 5 string or
# binary data, 7 string pair, 0 no such property. v5_codec.props checks what clients send
# and refuses the properties only a server sends (CONNACK's).
_KIND = (
    b"\x00\x01\x03\x05\x00\x00\x00\x00\x05\x05\x00\x04\x00\x00\x00\x00"
    b"\x00\x03\x05\x02\x00\x05\x05\x01\x03\x01\x05\x00\x05\x00\x00\x05"
    b"\x00\x02\x02\x02\x01\x01\x07\x03\x01\x01\x01"
)


def install(server):
    """The broker's v5 handlers become a Link, before any client connects."""
    b = server.broker
    if not isinstance(getattr(b, "v5", None), Link):
        b.v5 = Link(server.proto)


def _block(buf, pos, end):
    """(start, stop) of the property block at buf[pos:end]."""
    n, pos = vbi(buf, pos, end)
    if pos + n > end:
        raise Malformed("property length beyond the packet")
    return pos, pos + n


def _value(buf, pos, stop):
    """The property at buf[pos]: (its id, its value, the position after it); a user property's
    value is None (skipped), strings and binary data are bytes."""
    pid = buf[pos]
    pos += 1
    k = _KIND[pid] if pid < len(_KIND) else 0
    if not k:
        raise Malformed("unknown property 0x%02x" % pid)
    if k == 4:
        v, pos = vbi(buf, pos, stop)
        return pid, v, pos
    if k == 5 or k == 7:
        a, pos = field(buf, pos, stop)
        if k == 7:
            return pid, None, field(buf, pos, stop)[1]
        return pid, bytes(buf[a:pos]), pos
    w = 4 if k == 3 else k
    if pos + w > stop:
        raise Malformed("truncated property")
    v = 0
    for i in range(w):
        v = (v << 8) | buf[pos + i]
    return pid, v, pos + w


def server_props(buf, pos, end):
    """The property block at buf[pos:end] of a CONNACK or DISCONNECT from a server: (dict
    id -> value, next pos); user properties are skipped."""
    pos, stop = _block(buf, pos, end)
    found = {}
    while pos < stop:
        pid, v, pos = _value(buf, pos, stop)
        if v is not None:
            found[pid] = v
    if pos != stop:
        raise Malformed("property beyond the property length")
    return found, pos


def down_props(buf, pos, end, now):
    """The properties of a PUBLISH from the upstream: (the props tuple Broker.publish takes,
    or None; the Subscription Identifiers; the position of the payload). The ids are the
    link's own and are not passed on; the Message Expiry Interval goes first with room for
    the time left, as v5_route.forward lays it out."""
    pos, stop = _block(buf, pos, end)
    out = bytearray()
    sids = []
    expiry = 0
    while pos < stop:
        at = pos
        pid, v, pos = _value(buf, pos, stop)
        if pid == _P_SUBSCRIPTION_ID:
            sids.append(v)
        elif pid == _P_EXPIRY:
            expiry = v
        elif pid == _P_ALIAS:
            raise Malformed("topic alias from the upstream", 0x94)  # we allow none (MQTT-3.2.2-17)
        else:
            out += buf[at:pos]
    if pos != stop:
        raise Malformed("property beyond the property length")
    if expiry:
        return (b"\x02\x00\x00\x00\x00" + out, expiry, now), sids, stop
    return ((bytes(out), 0, now) if out else None), sids, stop


class Link(V5):
    """V5 with the bridge links' packets; its own methods are named link_* so that they never
    take the name of one V5 has or gains."""

    def link_open(self, c):
        """A new upstream connection speaks v5 from its first packet."""
        c.v5 = V5Conn()

    def link_subscribe(self, br, c):
        """One SUBSCRIBE per `in` line, with a Subscription Identifier of its own (its place
        among the topic lines, from 1: see _pick), No Local and Retain As Published."""
        ins = []  # (levels, QoS, id) of each, for _pick: split once, not per message
        i = 0
        for pattern, direction, qos, _local, remote in br.topics:
            i += 1
            if direction == "out":
                continue
            flt = (remote + pattern).encode()
            ins.append((flt.split(b"/"), qos, i))
            body = bytearray((i >> 8, i & 0xFF, 2 if i < 128 else 3, _P_SUBSCRIPTION_ID))
            put_length(body, i)  # the identifier, a variable byte integer
            body.append(len(flt) >> 8)
            body.append(len(flt) & 0xFF)
            body += flt
            body.append(qos | 0x0C)
            self.b.send(c, br.packet(0x82, body))
        br.ins = ins

    def link_props(self, br):
        """The CONNECT's property block. cleansession false asks the upstream to keep the
        session for ever (Session Expiry Interval 0xFFFFFFFF): what a 3.1.1 persistent session
        is, and what QoS 2 exactly once across a broken link needs. The Receive Maximum is the
        inbound QoS 2 bound (as a v5 client's CONNACK says), the Maximum Packet Size
        max_packet_size, a whole packet's size (with none, the most long_packet.py takes), so the
        upstream drops what we could not read rather than us closing the link for it."""
        pr = bytearray()
        if not br.clean:
            put_u(pr, _P_SESSION_EXPIRY, 0xFFFFFFFF, 4)
        put_u(pr, _P_RECEIVE_MAX, self.receive_max, 2)
        mp = self.cfg["max_packet_size"]
        if not mp:  # none: the longest packet long_packet.py takes (never loaded with a limit)
            from .long_packet import most

            rl = most(self.cfg)  # a remaining length: the whole packet is longer
            mp = rl + 1 + vbi_len(rl)
        put_u(pr, _P_MAX_PACKET, mp, 4)
        out = bytearray()
        out.append(len(pr))  # under 128 bytes: one byte of length
        out += pr
        return out

    # ------------------------------------------------------------------ in

    def handle(self, c, b0, buf, pos, end):
        br = c.bridge
        if br is None:
            return V5.handle(self, c, b0, buf, pos, end)
        try:
            return self._link(c, br, b0, buf, pos, end)
        except Malformed as e:
            self.drop(c, e.args[1] if len(e.args) > 1 else 0x81, "protocol error from upstream: " + e.args[0])
            return True

    def publish(self, c, b0, buf, pos, end):
        if c.bridge is None:
            return V5.publish(self, c, b0, buf, pos, end)
        return self.handle(c, b0, buf, pos, end)

    def _link(self, c, br, b0, buf, pos, end):
        ptype = b0 >> 4
        if ptype == 2:
            return self.link_connack(c, br, buf, pos, end)
        if not br.connected:
            raise Malformed("packet before CONNACK", 0x82)
        if ptype == 3:
            return self.link_down(c, br, b0, buf, pos, end)
        if 4 <= ptype <= 7:
            if b0 & 0x0F != (2 if ptype == 6 else 0):
                raise Malformed("reserved flags of packet type %d" % ptype)
            return self.ack_in(c, ptype, buf, pos, end)
        if ptype == 9:  # SUBACK: a reason code per `in` pattern
            for i in range(_block(buf, pos + 2, end)[1], end):
                if buf[i] >= 0x80:
                    br.last_error = "upstream refused a subscription (reason 0x%02x)" % buf[i]
                    self.b.log("bridge %s: %s" % (br.name, br.last_error))
                    break
            return True
        if ptype == 11 or ptype == 13:  # UNSUBACK, PINGRESP: receiving them was the point
            return True
        if ptype == 14:  # DISCONNECT from the upstream, with its reason (MQTT 5.0 section 3.14)
            code = buf[pos] if end > pos else 0
            why = b""
            if end - pos > 1:
                why = server_props(buf, pos + 1, end)[0].get(_P_REASON, b"")
            self.server.close(c, "upstream disconnected: reason 0x%02x %s" % (code, why.decode()), False)
            return True
        raise Malformed("packet type %d from the upstream" % ptype, 0x82)

    def link_connack(self, c, br, buf, pos, end):
        if end - pos < 2 or br.connected:
            raise Malformed("unexpected CONNACK", 0x82)
        code = buf[pos + 1]
        if end - pos == 2:
            # The 3.1.1 form: a server that does not speak MQTT 5 answers so (section 3.1.2.2)
            why = "CONNACK %d in the MQTT 3.1.1 form: the upstream does not speak MQTT 5" % code
            self.server.close(c, "upstream refused: " + why, False)
            return True
        found, p = server_props(buf, pos + 2, end)
        if p != end:
            raise Malformed("bytes after the CONNACK properties")
        if code >= 0x80:
            why = found.get(_P_REASON, b"")
            self.server.close(c, "upstream refused: reason 0x%02x %s" % (code, why.decode()), False)  # type: ignore[union-attr]
            return True
        rm = found.get(_P_RECEIVE_MAX)
        if rm is not None and rm < self.b.max_inflight:
            c.wmax = rm  # MQTT-3.3.4-9: the upstream's window
        if _P_MAX_PACKET in found:
            c.v5.max_out = found[_P_MAX_PACKET]  # MQTT-3.2.2-15
        if _P_SERVER_KEEPALIVE in found:
            br.keepalive = found[_P_SERVER_KEEPALIVE]  # MQTT-3.2.2-21: its value, not ours
        mq = found.get(_P_MAX_QOS)
        if mq is not None and mq < 2:
            br.last_error = "upstream's Maximum QoS is %d" % mq
            self.b.log("bridge %s: %s: QoS above it is refused there" % (br.name, br.last_error))
        self.expire(br.sess)  # what expired while the link was down does not go up
        br.up_(c, buf[pos] & 1)
        return True

    def link_down(self, c, br, b0, buf, pos, end):
        """A PUBLISH from the upstream: its properties kept for local v5 subscribers, routed
        under its local name with the link's session as its origin (never sent back up)."""
        qos = (b0 >> 1) & 3
        if qos == 3:
            raise Malformed("PUBLISH QoS 3")  # MQTT-3.3.1-4
        a, p = field(buf, pos, end)
        topic = bytes(buf[a:p])
        pid = 0
        if qos:
            pid = u16(buf, p, end)
            if pid == 0:
                raise Malformed("packet id 0")  # MQTT-2.2.1-3
            p += 2
        fwd, sids, p = down_props(buf, p, end, self.server.now)
        if not topic:
            raise Malformed("empty topic", 0x82)
        b_ = self.b
        s = c.sess
        if qos == 2 and s.qos2in:
            if pid in s.qos2in:
                b_.send(c, ack(0x50, pid, 0))  # resent before PUBREL: never delivered twice
                return True
            if len(s.qos2in) >= self.receive_max:
                raise Malformed("Receive Maximum exceeded", 0x93)  # MQTT-3.3.4-7
        # One copy per `in` subscription the topic matches (MQTT-3.3.4-5, as Mosquitto sends
        # them): only the one the link picks is routed, the others only acknowledged
        retain = bool(b0 & 1) and self.cfg["retain_available"]
        if not sids or _pick(br, topic) in sids:
            topic = br.local_topic(topic)
            if not b_.publish(topic, self.server.rmv[p:end], qos, retain, False, None, s, None, fwd):
                br.received -= 1  # offered again once there is room, and counted then
                return False
            b_.stats.pub_in += 1
        if qos == 0:
            return True
        per = b_.persist
        durable = retain and per is not None  # a retained copy not taken: nothing stored, no harm
        if qos == 2 and self.p.qos2_taken(s, pid):
            durable = True
        pkt = ack(0x40 if qos == 1 else 0x50, pid, 0)
        if per is not None and (durable or per.fresh or c.acks):
            per.acknowledge(c, pkt, durable)
        else:
            b_.send(c, pkt)
        return True

    # ------------------------------------------------------------------ out

    def write(self, c, topic, payload, qos, retain, dup, pid, extra=None):
        if c.bridge is not None:
            topic = c.bridge.remote_topic(topic)
        return V5.write(self, c, topic, payload, qos, retain, dup, pid, extra)


def _pick(br, topic):
    """The Subscription Identifier of the one `in` subscription whose copy of a message on
    this (upstream) topic is taken: the highest QoS, then the first line."""
    best = 0
    bq = -1
    for levels, qos, sid in br.ins:
        if qos > bq and match_levels(levels, topic):
            best = sid
            bq = qos
    return best
