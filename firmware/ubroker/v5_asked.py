"""What a v5 client may ask of the server in its CONNECT beyond its session, and what comes of
it: Request Problem Information 0 (no Reason String on acknowledgements, v5_reason.py), Request
Response Information 1 (Response Information in CONNACK, section 3.2.2.3.15), Topic Alias
Maximum above 0 (Topic Aliases from the server, section 3.3.2.3.4). v5_protocol.py loads this
module at the first CONNECT that carries one of these, so a broker whose v5 clients ask for
none of them carries none of it."""

from micropython import const

from .topics import valid_topic
from .v5_codec import put_str
from .v5_route import _size  # the PUBLISH's size as Maximum Packet Size counts it

# Topic aliases the server may set towards one client (max_topic_alias_out's default): each
# keeps its topic alive in the connection's table for the connection's life
_ALIASES_OUT = const(4)


def asked(v5, v, found, cid):
    """Note on V5Conn v what the client's CONNECT properties (`found`) ask for; returns the
    Response Information property for its CONNACK, or None."""
    if found.get(0x17) == 0:
        v.quiet = True  # MQTT-3.1.2-29
    am = found.get(0x22, 0)  # none or 0: no alias to this client (MQTT-3.1.2-27)
    if am:
        cap = v5.cfg.get("max_topic_alias_out", _ALIASES_OUT)
        if cap:
            v.amax = am if am < cap else cap  # MQTT-3.1.2-26
            v.aout = {}
            v5.alias = alias  # v5_route.Router.write's, a plain function on the instance
    if found.get(0x19) != 1:
        return None  # only when asked (MQTT-3.1.2-28)
    info = v5.cfg.get("response_topic_prefix", "response").encode() + b"/" + cid
    if len(info) > v5.p.max_topic or not valid_topic(info):
        return None  # not a topic a client could use (a wildcard in the id, say)
    out = bytearray()
    put_str(out, 0x1A, info)
    return out


def alias(v, topic, payload, qos, pr):
    """(topic, properties) of a PUBLISH to the connection whose V5Conn is v: a topic given an
    alias before goes as the empty topic and its alias; a new one, while aliases are left, as
    the topic and the next alias (1..v.amax: never 0 nor above the client's maximum,
    MQTT-3.3.2-8, 3.3.2-11), unless those 3 bytes would take it over the client's Maximum
    Packet Size. The first topics keep their aliases for the connection's life: an alias is
    never given to another topic, and none outlives the connection (MQTT-3.3.2-7)."""
    t = v.aout
    a = t.get(topic)
    if a is not None:
        return b"", bytes((0x23, a >> 8, a & 0xFF)) + pr
    a = len(t) + 1
    if a > v.amax or (v.max_out and _size(topic, payload, qos, len(pr) + 3) > v.max_out):
        return topic, pr
    t[topic] = a
    return topic, bytes((0x23, a >> 8, a & 0xFF)) + pr
