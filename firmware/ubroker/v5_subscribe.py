"""MQTT 5.0 SUBSCRIBE and UNSUBSCRIBE (section 3.8, 3.10): subscription options (No Local,
Retain As Published, Retain Handling), the Subscription Identifier, shared subscriptions'
checks, and SUBACK/UNSUBACK with a reason code per filter. Functions of v5_protocol.V5 (self
is the V5 instance), kept here so that module stays readable; loaded with it."""

import gc

from micropython import const

from .codec import Malformed, u16, utf8
from .topics import valid_filter
from .v5_codec import codes_packet, props

_IN_SUBSCRIBE = const(16)  # v5_codec.py's packet kinds
_IN_UNSUBSCRIBE = const(32)
_P_SUBSCRIPTION_ID = const(0x0B)
# The v5 mark on a subscription's QoS in the subscription index (v5_protocol.py's)
_MARK = const(4)
# Subscription options (MQTT 5.0 section 3.8.3.1)
_RETAIN_HANDLING = const(0x30)
_RESERVED = const(0xC0)


def subscribe(self, c, buf, pos, end):
    pid, found, pos = _head(buf, pos, end, _IN_SUBSCRIBE)
    sid = 0
    if found is not None and _P_SUBSCRIPTION_ID in found:
        sid = found[_P_SUBSCRIPTION_ID]
        if not sid:
            raise Malformed("subscription identifier 0", 0x82)  # section 3.8.2.1.2
    reqs = []
    while pos < end:
        flt, pos = utf8(buf, pos, end)  # MQTT-3.8.3-1
        if not flt:
            # MQTT-4.7.3-1: an empty filter is malformed (DISCONNECT 0x81), as in UNSUBSCRIBE;
            # one with misplaced wildcards is refused in SUBACK (0x8F, below)
            raise Malformed("invalid topic filter")
        if pos >= end:
            raise Malformed("SUBSCRIBE filter without options")
        o = buf[pos]
        pos += 1
        if o & _RESERVED or o & 3 == 3 or o & _RETAIN_HANDLING == _RETAIN_HANDLING:
            raise Malformed("subscription options 0x%02x" % o)  # MQTT-3.8.3-5
        if o & 4 and flt.startswith(b"$share/"):
            raise Malformed("No Local on a shared subscription", 0x82)  # MQTT-3.8.3-4
        reqs.append((flt, o))
    b_ = self.b
    s = c.sess
    cfg = self.cfg
    opts = getattr(s, "v5", None)  # filter -> (options, subscription id), v5 sessions only
    if opts is None:
        s.v5 = opts = {}
    codes = bytearray()
    retained = []
    for flt, o in reqs:
        q = o & 3
        if q > b_.max_qos:
            q = b_.max_qos
        fresh = not s.has_filter(flt)
        code = q
        share = flt.startswith(b"$share/")
        if share:
            gc.collect()  # v5_shared.py's code needs a block the heap may have in pieces
            from .v5_shared import valid as valid_share  # with the first shared subscription
        if not valid_filter(flt) or (share and not valid_share(flt)):
            code = 0x8F  # MQTT-4.7.1-1/2, 4.7.3-1
        elif fresh and (len(flt) > cfg["max_topic_length"] or s.nfilters() >= cfg["max_subscriptions_per_client"]
                        or b_.index.count >= cfg["max_subscriptions"] or b_.low_heap()):
            b_.stats.hit("subscriptions")
            code = 0x97
        elif self.p.acl is not None and not self.p.acl.can_subscribe(c.user, s.cid, flt):
            b_.stats.hit("acl_denied_subscribe")
            code = 0x87
        codes.append(code)
        if code > 2:
            continue
        if fresh:
            s.add_filter(flt)
        b_.index.add(flt, s, q | _MARK)  # replaces an identical filter's (MQTT-3.8.4-3)
        keep = o & 0x0C  # No Local, Retain As Published
        if keep or sid:
            opts[flt] = (keep, sid)
        elif flt in opts:
            del opts[flt]
        if b_.persist is not None:
            b_.persist.subscribed(s, flt, q)
        rh = o & _RETAIN_HANDLING
        if share:
            continue  # no retained messages for a shared subscription (section 4.8.2)
        if rh == 0 or (rh == 0x10 and fresh):  # MQTT-3.3.1-9/10/11
            retained.append((flt, q))
    b_.send(c, self.told(c, codes_packet(0x90, pid, codes)) if max(codes) > 0x7F else codes_packet(0x90, pid, codes))  # MQTT-3.8.4-1, 3.8.4-6
    for flt, q in retained:
        self.send_retained(s, flt, q, sid)
    return True

def unsubscribe(self, c, buf, pos, end):
    pid, found, pos = _head(buf, pos, end, _IN_UNSUBSCRIBE)
    flts = []
    while pos < end:
        flt, pos = utf8(buf, pos, end)
        if not flt:
            raise Malformed("invalid topic filter")  # MQTT-4.7.3-1: empty, DISCONNECT 0x81
        flts.append(flt)
    s = c.sess
    b_ = self.b
    codes = bytearray()
    for flt in flts:
        if s.drop_filter(flt):
            b_.index.remove(flt, s)
            opts = getattr(s, "v5", None)
            if opts and flt in opts:
                del opts[flt]
            if b_.persist is not None:
                b_.persist.unsubscribed(s, flt)
            codes.append(0)
        else:  # No subscription existed, or Topic Filter invalid (none can exist then)
            codes.append(0x11 if valid_filter(flt) else 0x8F)
    b_.send(c, self.told(c, codes_packet(0xB0, pid, codes)) if max(codes) > 0x7F else codes_packet(0xB0, pid, codes))  # MQTT-3.11.3-1
    return True


def _head(buf, pos, end, where):
    """SUBSCRIBE's or UNSUBSCRIBE's packet id and properties: (pid, properties, position of
    the first filter); at least one filter must follow (MQTT-3.8.3-2, MQTT-3.10.3-2)."""
    pid = u16(buf, pos, end)
    if pid == 0:
        raise Malformed("packet id 0")  # MQTT-2.2.1-3
    found, pos = props(buf, pos + 2, end, where)
    if pos == end:
        raise Malformed("no topic filter", 0x82)
    return pid, found, pos
