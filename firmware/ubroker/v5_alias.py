"""Topic Aliases from the server to a v5 client (MQTT 5.0 section 3.3.2.3.4): which topic has
which alias on one connection (V5Conn.aout, topic -> alias), and the PUBLISH's topic and
properties with it. v5_protocol.py loads this module at the first CONNECT whose Topic Alias
Maximum is above 0 (with max_topic_alias_out above 0); v5_route.Router.write calls alias()
for a topic of _ALIAS_MIN bytes or more to a connection with V5Conn.amax set."""

from .v5_route import _size  # the PUBLISH's size as Maximum Packet Size counts it


def alias(v, topic, payload, qos, pr):
    """(topic, properties) of a PUBLISH to the connection whose V5Conn is v: a topic given an
    alias before goes as the empty topic and its alias; a new one, while aliases are left, as
    the topic and the next alias (1..v.amax: never 0 nor above the client's maximum,
    MQTT-3.3.2-8, 3.3.2-11), unless those 3 bytes would take it over the client's Maximum
    Packet Size. The first topics keep their aliases for the connection's life: an alias is
    never given to another topic, and none outlives the connection (MQTT-3.3.2-7)."""
    t = v.aout
    a = t.get(topic) if t is not None else None
    if a is not None:
        return b"", bytes((0x23, a >> 8, a & 0xFF)) + pr
    if t is None:
        v.aout = t = {}
    a = len(t) + 1
    if a > v.amax or (v.max_out and _size(topic, payload, qos, len(pr) + 3) > v.max_out):
        return topic, pr
    t[topic] = a
    return topic, bytes((0x23, a >> 8, a & 0xFF)) + pr
