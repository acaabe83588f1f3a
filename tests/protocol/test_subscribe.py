"""SUBSCRIBE and UNSUBSCRIBE through the network: wildcard matching, filter validation,
SUBACK codes and the granted QoS, overlapping subscriptions, resubscription, unsubscription,
and the malformed packets that must close the connection.

A test that must show a message was NOT delivered publishes a marker afterwards, from the same
publisher, and checks what the subscriber got before the marker."""

import socket

import pytest

import mqttraw as m
from marker import MARK, connected, until_marker
from robust_util import until_closed

PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK = 3, 4, 5, 6, 7, 9, 11


# ----------------------------------------------------------------------------- helpers


def suback(c, pid, *filters):
    """SUBSCRIBE and return the SUBACK's return codes."""
    c.send(m.subscribe(pid, *filters))
    p = c.expect(SUBACK)
    assert p.pid == pid  # MQTT-3.8.4-2
    return list(p.body[2:])


def subscriber(broker, cid, *filters):
    """Raw client subscribed to (filter, qos) pairs plus the marker topic at QoS 0."""
    c = connected(broker, cid)
    codes = suback(c, 1, *(filters + ((MARK.decode(), 0),)))
    return c, codes[:-1]


def publish(c, topic, payload, qos=0, pid=1, retain=False):
    c.send(m.publish(topic, payload, qos=qos, retain=retain, pid=pid))
    if qos == 1:
        assert c.expect(PUBACK).pid == pid
    elif qos == 2:
        assert c.expect(PUBREC).pid == pid
        c.send(m.pubrel(pid))
        assert c.expect(PUBCOMP).pid == pid


def mark(pub):
    pub.send(m.publish(MARK.decode(), b""))


def closes(broker, data):
    """After CONNECT, `data` must make the broker close the connection; others still served."""
    c = connected(broker, "bad")
    c.send(data)
    assert c.closed(), "broker kept the connection open after %r" % data
    ok = connected(broker, "after")
    ok.send(m.PINGREQ)
    ok.expect(13)
    ok.close()


# ------------------------------------------------------------------ matching table

# (filter, topic, matches?) -- MQTT 4.7.1 and its examples.
CASES = [
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/tennis/player1/#", "sport/tennis/player2", False),
    ("sport/#", "sport", True),
    ("sport/#", "sport/tennis", True),
    ("sport/#", "sports", False),
    ("sport/#", "sport/", True),
    ("#", "sport/tennis/player1", True),
    ("#", "/finance", True),
    ("#", "/", True),
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player2", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/tennis/+", "sport/tennis", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+", "sport", True),
    ("+", "/finance", False),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("/+", "finance", False),
    ("+/+", "a/b", True),
    ("+/+", "a", False),
    ("+/+", "a/b/c", False),
    ("+/+", "/", True),
    ("+/tennis/#", "sport/tennis", True),
    ("+/tennis/#", "sport/tennis/x/y", True),
    ("+/tennis/#", "sport/golf", False),
    ("a/+/c", "a//c", True),
    ("+/+/+", "a//b", True),
    ("a//b", "a//b", True),
    ("a//b", "a/b", False),
    ("a/b", "a/b", True),
    ("a/b", "A/b", False),
    ("a/b", "a/b/", False),
    ("a/b", "a/bc", False),
    ("a/b", "a", False),
    ("a/b/", "a/b", False),
    ("a b/+", "a b/c d", True),
    ("caf\u00e9/+", "caf\u00e9/x", True),
    ("caf\u00e9/+", "cafe/x", False),
]


def test_wildcard_matching_table_through_the_network(broker):
    """Each filter of the table, subscribed alone by a fresh client, receives exactly the
    topics it matches (MQTT 4.7.1, MQTT-4.7.1-1..3, case sensitive, empty levels)."""
    pub = connected(broker, "pub")
    wrong = []
    for i, (flt, topic, expected) in enumerate(CASES):
        sub, codes = subscriber(broker, "sub%d" % i, (flt, 0))
        assert codes == [0]
        publish(pub, topic, b"case%d" % i)
        mark(pub)
        got = [(p.topic, p.payload) for p in until_marker(sub)]
        want = [(topic.encode(), b"case%d" % i)] if expected else []
        if got != want:
            wrong.append((flt, topic, expected, got))
        sub.send(m.DISCONNECT)
        sub.close()
    assert not wrong, "filter/topic cases delivered wrongly: %r" % wrong


def _wait_live_sys(witness, timeout=5.0):
    """Wait for a live (RETAIN=0) $SYS/broker/uptime update on the witness."""
    while True:
        p = witness.recv_packet(timeout)
        assert p is not None and p.type == PUBLISH, p
        if p.topic == b"$SYS/broker/uptime" and not p.retain:
            return p


def test_leading_wildcard_does_not_match_dollar_topics(broker_factory):
    """'#', '+/...' do not match topics beginning with '$' (MQTT-4.7.2-1): they get no
    $SYS message, neither retained on subscribe nor live, while a '$SYS/broker/uptime'
    subscriber gets live updates."""
    b = broker_factory(config="sys_interval 1\n")
    witness = connected(b, "witness")
    assert suback(witness, 1, ("$SYS/broker/uptime", 0)) == [0]
    # The first report is out (retained, so sent on subscribe, or live): $SYS topics exist.
    first = witness.recv_packet(5)
    assert first is not None and first.topic == b"$SYS/broker/uptime"
    negatives = ["#", "+/broker/uptime", "+/broker/#", "+/+/+", "+/#"]
    subs = [subscriber(b, "neg%d" % i, (f, 0))[0] for i, f in enumerate(negatives)]
    _wait_live_sys(witness)
    pub = connected(b, "pub")
    mark(pub)
    leaked = {}
    for f, s in zip(negatives, subs):
        got = [p.topic for p in until_marker(s) if p.topic.startswith(b"$")]
        if got:
            leaked[f] = got
    assert not leaked, "leading wildcard matched $ topics: %r" % leaked


def test_sys_filters_match_sys_topics(broker_factory):
    """Filters that begin with '$SYS' match the broker's $SYS topics: '$SYS/#',
    '$SYS/broker/+', '$SYS/+/uptime' and the exact name (MQTT 4.7.2)."""
    b = broker_factory(config="sys_interval 1\n")
    positives = ["$SYS/#", "$SYS/broker/+", "$SYS/+/uptime", "$SYS/broker/uptime"]
    subs = [subscriber(b, "pos%d" % i, (f, 0))[0] for i, f in enumerate(positives)]
    missing = []
    for f, s in zip(positives, subs):
        s.sock.settimeout(5)
        try:
            seen = False
            for _ in range(200):
                p = s.recv_packet(5)
                if p is None:
                    break
                if p.type == PUBLISH and p.topic == b"$SYS/broker/uptime":
                    seen = True
                    break
        except socket.timeout:
            seen = False
        if not seen:
            missing.append(f)
    assert not missing, "no $SYS/broker/uptime through %r" % missing


# ------------------------------------------------------------------ invalid filters


def test_hash_not_last_closes(broker):
    """'#' must be the last level (MQTT-4.7.1-2): 'a/#/b'."""
    closes(broker, m.subscribe(1, ("a/#/b", 0)))


def test_hash_inside_a_level_closes(broker):
    """'#' must occupy a whole level (MQTT-4.7.1-2): 'a#'."""
    closes(broker, m.subscribe(1, ("a#", 0)))


def test_hash_followed_by_a_level_closes(broker):
    """'#' must be the last character (MQTT-4.7.1-2): '#/a'."""
    closes(broker, m.subscribe(1, ("#/a", 0)))


def test_plus_inside_a_level_closes(broker):
    """'+' must occupy a whole level (MQTT-4.7.1-3): 'a/b+'."""
    closes(broker, m.subscribe(1, ("a/b+", 0)))


def test_plus_prefix_of_a_level_closes(broker):
    """'+' must occupy a whole level (MQTT-4.7.1-3): '+a/b'."""
    closes(broker, m.subscribe(1, ("+a/b", 0)))


def test_empty_filter_closes(broker):
    """A topic filter is at least one character long (MQTT-4.7.3-1)."""
    closes(broker, m.subscribe(1, ("", 0)))


def test_filter_with_null_character_closes(broker):
    """Topic filters must not include U+0000 (MQTT-4.7.3-2)."""
    closes(broker, m.subscribe(1, ("a/\x00", 0)))


def test_one_invalid_filter_among_valid_ones_closes_and_subscribes_nothing(broker):
    """A SUBSCRIBE with a malformed filter is malformed as a whole (MQTT-4.7.1-2): the
    connection closes (MQTT-4.8.0-1) with no SUBACK, and none of its filters is subscribed:
    the client's persistent session, resumed (MQTT-3.2.2-2), gets nothing published on the
    valid ones."""
    c = broker.raw()
    assert c.connect("bad", clean=False) == (0, 0)
    c.send(m.subscribe(1, ("ok/a", 0), ("a/#/b", 0), ("ok/b", 0)))
    closed, got = until_closed(c)
    assert closed, "broker kept the connection open after a malformed SUBSCRIBE"
    assert got == [], "answered a malformed SUBSCRIBE with %r" % got
    again = broker.raw()
    assert again.connect("bad", clean=False) == (1, 0)
    assert suback(again, 2, (MARK.decode(), 0)) == [0]
    pub = connected(broker, "p")
    publish(pub, "ok/a", b"a")
    publish(pub, "ok/b", b"b")
    mark(pub)
    assert until_marker(again) == []


# ------------------------------------------------------------------ SUBACK


def test_suback_one_code_per_filter_in_order(broker):
    """SUBACK carries the SUBSCRIBE's packet id and one return code per filter, in the
    order of the filters (MQTT-3.8.4-1, MQTT-3.8.4-2, MQTT-3.8.4-4, MQTT-3.8.4-5)."""
    c = connected(broker, "s")
    assert suback(c, 0x1234, ("a/2", 2), ("a/0", 0), ("a/1", 1), ("b/#", 2), ("+/c", 0)) == [
        2, 0, 1, 2, 0]
    assert suback(c, 65535, ("x", 1)) == [1]


def test_subscription_takes_effect(broker):
    """After SUBACK, the subscription delivers at each granted QoS."""
    sub, codes = subscriber(broker, "s", ("t/0", 0), ("t/1", 1), ("t/2", 2))
    assert codes == [0, 1, 2]
    pub = connected(broker, "p")
    for q in (0, 1, 2):
        publish(pub, "t/%d" % q, b"x", qos=2, pid=q + 1)
    mark(pub)
    assert [(p.topic, p.qos) for p in until_marker(sub)] == [(b"t/0", 0), (b"t/1", 1), (b"t/2", 2)]


def test_granted_qos_capped_by_max_qos(broker_factory):
    """With `max_qos 1` the broker grants at most QoS 1 (MQTT-3.8.4-6 lets it grant less)
    and delivers at most QoS 1."""
    b = broker_factory(config="max_qos 1\n")
    sub, codes = subscriber(b, "s", ("c/2", 2), ("c/1", 1), ("c/0", 0))
    assert codes == [1, 1, 0]
    pub = connected(b, "p")
    pub.send(m.publish("c/2", b"x", qos=1, pid=1))
    assert pub.expect(PUBACK).pid == 1
    mark(pub)
    got = until_marker(sub)
    assert [(p.topic, p.qos) for p in got] == [(b"c/2", 1)]


def test_max_qos_0(broker_factory):
    """With `max_qos 0` every subscription is granted QoS 0 and delivered at QoS 0."""
    b = broker_factory(config="max_qos 0\n")
    sub, codes = subscriber(b, "s", ("c/2", 2), ("c/1", 1))
    assert codes == [0, 0]
    pub = connected(b, "p")
    pub.send(m.publish("c/2", b"x", qos=1, pid=1))
    assert pub.expect(PUBACK).pid == 1
    mark(pub)
    assert [(p.topic, p.qos) for p in until_marker(sub)] == [(b"c/2", 0)]


# ------------------------------------------------------------------ malformed SUBSCRIBE


def test_requested_qos_3_closes(broker):
    """A requested QoS other than 0, 1, 2 is malformed (MQTT-3-8.3-4)."""
    closes(broker, m.subscribe(1, ("a/b", 3)))


def test_reserved_bits_of_requested_qos_close(broker):
    """Reserved upper bits of the requested QoS byte must be zero (MQTT-3-8.3-4)."""
    closes(broker, m.subscribe(1, ("a/b", 0x81)))


def test_subscribe_without_filter_closes(broker):
    """A SUBSCRIBE needs at least one filter/QoS pair (MQTT-3.8.3-3)."""
    closes(broker, m.packet(0x82, b"\x00\x01"))


def test_subscribe_filter_without_qos_byte_closes(broker):
    """A SUBSCRIBE whose last filter lacks its QoS byte is malformed (MQTT 3.8.3)."""
    closes(broker, m.packet(0x82, b"\x00\x01\x00\x03a/b"))


def test_subscribe_packet_id_zero_closes(broker):
    """SUBSCRIBE with packet id 0 is malformed (MQTT-2.3.1-1)."""
    closes(broker, m.packet(0x82, b"\x00\x00\x00\x03a/b\x00"))


@pytest.mark.parametrize("b0, body", [
    (0x80, b"\x00\x01\x00\x03a/b\x00"),  # SUBSCRIBE 0000
    (0x83, b"\x00\x01\x00\x03a/b\x00"),  # SUBSCRIBE 0011
    (0x8A, b"\x00\x01\x00\x03a/b\x00"),  # SUBSCRIBE 1010
    (0xA0, b"\x00\x01\x00\x03a/b"),  # UNSUBSCRIBE 0000
    (0xA6, b"\x00\x01\x00\x03a/b"),  # UNSUBSCRIBE 0110
], ids=["sub-0000", "sub-0011", "sub-1010", "unsub-0000", "unsub-0110"])
def test_subscribe_and_unsubscribe_flags_other_than_0010_close(broker, b0, body):
    """SUBSCRIBE and UNSUBSCRIBE fixed-header flags must be 0010 (MQTT-3.8.1-1,
    MQTT-3.10.1-1); anything else closes the connection."""
    closes(broker, m.packet(b0, body))


def test_unsubscribe_without_filter_closes(broker):
    """An UNSUBSCRIBE needs at least one filter (MQTT-3.10.3-2)."""
    closes(broker, m.packet(0xA2, b"\x00\x01"))


# ------------------------------------------------------------------ overlapping, replacing


def test_overlapping_subscriptions_deliver_once_at_highest_qos(broker):
    """A message matching several of a client's subscriptions is delivered once, at the
    highest granted QoS of them (MQTT-3.3.5-1)."""
    sub, codes = subscriber(broker, "s", ("ov/+", 1), ("ov/#", 2), ("ov/x", 0), ("#", 0))
    assert codes == [1, 2, 0, 0]
    pub = connected(broker, "p")
    publish(pub, "ov/x", b"q2", qos=2, pid=1)
    publish(pub, "ov/x", b"q1", qos=1, pid=2)
    publish(pub, "ov/x", b"q0", qos=0)
    mark(pub)
    got = until_marker(sub)
    assert [(p.payload, p.qos) for p in got] == [(b"q2", 2), (b"q1", 1), (b"q0", 0)]


def test_overlapping_subscriptions_highest_qos_from_a_later_filter(broker):
    """Delivered once at the highest QoS whatever the order the filters were subscribed in
    (MQTT-3.3.5-1)."""
    sub, codes = subscriber(broker, "s", ("ov/x", 0), ("+/x", 1))
    assert codes == [0, 1]
    pub = connected(broker, "p")
    publish(pub, "ov/x", b"m", qos=2, pid=1)
    mark(pub)
    assert [(p.payload, p.qos) for p in until_marker(sub)] == [(b"m", 1)]


def test_resubscribe_replaces_qos(broker):
    """Subscribing again to an identical filter replaces the subscription: the new QoS
    applies and messages are delivered once (MQTT-3.8.4-3)."""
    sub, codes = subscriber(broker, "s", ("re/t", 2))
    assert codes == [2]
    assert suback(sub, 2, ("re/t", 0)) == [0]
    pub = connected(broker, "p")
    publish(pub, "re/t", b"a", qos=2, pid=1)
    mark(pub)
    assert [(p.payload, p.qos) for p in until_marker(sub)] == [(b"a", 0)]
    assert suback(sub, 3, ("re/t", 1)) == [1]
    publish(pub, "re/t", b"b", qos=2, pid=2)
    mark(pub)
    assert [(p.payload, p.qos) for p in until_marker(sub)] == [(b"b", 1)]


def test_filters_that_are_substrings_of_each_other_are_separate_subscriptions(broker_factory):
    """A session holding one filter 'sb/a/b' (kept as the bytes themselves, not in a list)
    that then subscribes to 'sb/a', a substring of it, gets a new subscription, not a
    replacement (MQTT-3.8.4-3 replaces only an identical filter): both deliver; unsubscribing
    one (MQTT-3.10.4-1) leaves the other delivering; and when the clean session ends, both
    are gone from the index ($SYS/broker/subscriptions/count back to the watcher's one).
    A check of 'sb/a' with `in` against the bytes 'sb/a/b' would keep 'sb/a' out of the
    session's filters and leave it behind in the index."""
    from test_sys import SYS, Watcher

    b = broker_factory(config=SYS)
    w = Watcher(b, flt="$SYS/broker/subscriptions/count")
    assert w.number("subscriptions/count") == 1
    sub = connected(b, "s")  # no marker subscription: one filter, then two
    assert suback(sub, 1, ("sb/a/b", 1)) == [1]
    assert suback(sub, 2, ("sb/a", 0)) == [0]
    assert suback(sub, 3, ("sb/a/b", 1)) == [1]  # the identical filter again: still one
    assert w.number("subscriptions/count", lambda n: n == 3) == 3
    pub = connected(b, "p")
    publish(pub, "sb/a/b", b"long", qos=1, pid=1)
    publish(pub, "sb/a", b"short", qos=1, pid=2)
    got = [sub.expect(PUBLISH) for _ in range(2)]
    assert [(p.payload, p.qos) for p in got] == [(b"long", 1), (b"short", 0)]
    sub.send(m.puback(got[0].pid))
    sub.send(m.unsubscribe(4, "sb/a/b"))
    assert sub.expect(UNSUBACK).pid == 4
    publish(pub, "sb/a/b", b"gone", qos=1, pid=3)
    publish(pub, "sb/a", b"kept", qos=1, pid=4)
    assert sub.expect(PUBLISH).payload == b"kept"
    assert w.number("subscriptions/count", lambda n: n == 2) == 2
    sub.send(m.DISCONNECT)
    sub.close()
    assert w.number("subscriptions/count", lambda n: n == 1) == 1


# ------------------------------------------------------------------ UNSUBSCRIBE


def test_unsubscribe_stops_delivery(broker):
    """After UNSUBACK the filter delivers nothing more (MQTT-3.10.4-1); UNSUBACK has the
    packet id of the UNSUBSCRIBE (MQTT-3.10.4-4); other subscriptions keep working."""
    sub, codes = subscriber(broker, "s", ("un/a", 1), ("un/b", 1))
    pub = connected(broker, "p")
    sub.send(m.unsubscribe(0x0102, "un/a"))
    p = sub.expect(UNSUBACK)
    assert p.b0 == 0xB0 and p.body == b"\x01\x02"
    publish(pub, "un/a", b"gone", qos=1, pid=1)
    publish(pub, "un/b", b"kept", qos=1, pid=2)
    mark(pub)
    assert [p.payload for p in until_marker(sub)] == [b"kept"]


def test_unsubscribe_compares_filters_character_by_character(broker):
    """UNSUBSCRIBE 'un/+' removes only the identical filter, not 'un/#' that also matches
    (MQTT-3.10.4-1)."""
    sub, codes = subscriber(broker, "s", ("un/#", 0), ("un/+", 1))
    pub = connected(broker, "p")
    sub.send(m.unsubscribe(5, "un/+"))
    assert sub.expect(UNSUBACK).pid == 5
    publish(pub, "un/x", b"m", qos=1, pid=1)
    mark(pub)
    # Still delivered through 'un/#', now at that filter's QoS 0.
    assert [(p.payload, p.qos) for p in until_marker(sub)] == [(b"m", 0)]


def test_unsuback_for_a_filter_never_subscribed(broker):
    """The broker answers UNSUBACK even when no filter matched (MQTT-3.10.4-5)."""
    c = connected(broker, "s")
    c.send(m.unsubscribe(9, "never/subscribed"))
    p = c.expect(UNSUBACK)
    assert p.pid == 9 and len(p.body) == 2
    c.send(m.unsubscribe(10, "x/#", "y/+", "z"))
    assert c.expect(UNSUBACK).pid == 10


def test_unsubscribe_several_filters_in_one_packet(broker):
    """One UNSUBSCRIBE with several filters removes each of them (MQTT-3.10.4-1) and is
    answered with one UNSUBACK (MQTT-3.10.4-6)."""
    sub, codes = subscriber(broker, "s", ("u/1", 0), ("u/2", 0), ("u/3", 0))
    sub.send(m.unsubscribe(4, "u/1", "u/3"))
    assert sub.expect(UNSUBACK).pid == 4
    pub = connected(broker, "p")
    for i in (1, 2, 3):
        publish(pub, "u/%d" % i, b"%d" % i)
    mark(pub)
    assert [p.payload for p in until_marker(sub)] == [b"2"]
