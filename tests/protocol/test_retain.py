"""Retained messages through the network: set, replace, clear with an empty payload, sent
with RETAIN=1 to a new subscription at min(stored QoS, granted QoS), to wildcard
subscriptions, and not resent on an unrelated subscribe.

After a SUBSCRIBE, the retained messages the broker sends follow the SUBACK on the same
connection; a marker published afterwards by another client closes the list."""

import pytest

import mqttraw as m
from marker import MARK, connected
from marker import until_marker as collect

PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK = 3, 4, 5, 6, 7, 9


def publish(c, topic, payload, qos=0, pid=1, retain=True):
    c.send(m.publish(topic, payload, qos=qos, retain=retain, pid=pid))
    if qos == 1:
        assert c.expect(PUBACK).pid == pid
    elif qos == 2:
        assert c.expect(PUBREC).pid == pid
        c.send(m.pubrel(pid))
        assert c.expect(PUBCOMP).pid == pid


def subscribe(c, pid, *filters):
    c.send(m.subscribe(pid, *filters))
    p = c.expect(SUBACK)
    assert p.pid == pid
    return list(p.body[2:])


def retained_for(broker, cid, pub, *filters):
    """A new client subscribes to filters (and the marker); returns (client, the PUBLISH
    packets that the subscription brought before the marker)."""
    c = connected(broker, cid)
    codes = subscribe(c, 1, *(filters + ((MARK.decode(), 0),)))
    assert codes == [q for _, q in filters] + [0]
    pub.send(m.publish(MARK.decode(), b""))
    return c, collect(c)


def test_retained_message_sent_on_subscribe_with_retain_flag(broker):
    """A retained message is stored and sent to a new subscription with RETAIN=1
    (MQTT-3.3.1-5, MQTT-3.3.1-6)."""
    pub = connected(broker, "p")
    publish(pub, "r/t", b"kept", qos=0)
    _, got = retained_for(broker, "s", pub, ("r/t", 0))
    assert [(p.topic, p.payload, p.retain, p.qos) for p in got] == [(b"r/t", b"kept", True, 0)]


def test_retained_message_survives_its_publisher(broker):
    """The retained message stays after the publisher has gone (it is not session state)."""
    pub = connected(broker, "p")
    publish(pub, "r/gone", b"still here", qos=1, pid=3)
    pub.send(m.DISCONNECT)
    pub.close()
    other = connected(broker, "other")
    _, got = retained_for(broker, "s", other, ("r/gone", 1))
    assert [(p.payload, p.retain) for p in got] == [(b"still here", True)]


def test_retained_message_replaced(broker):
    """A new retained message on a topic replaces the stored one (MQTT-3.3.1-5,
    MQTT-3.3.1-7)."""
    pub = connected(broker, "p")
    publish(pub, "r/t", b"one", qos=1, pid=1)
    publish(pub, "r/t", b"two", qos=0)
    publish(pub, "r/t", b"three", qos=2, pid=2)
    _, got = retained_for(broker, "s", pub, ("r/t", 2))
    assert [(p.payload, p.retain, p.qos) for p in got] == [(b"three", True, 2)]


def test_non_retained_publish_leaves_retained_message(broker):
    """A PUBLISH with RETAIN=0 neither stores nor replaces the retained message
    (MQTT-3.3.1-12)."""
    pub = connected(broker, "p")
    publish(pub, "r/t", b"retained", qos=0)
    publish(pub, "r/t", b"live only", qos=1, pid=1, retain=False)
    publish(pub, "r/other", b"live only", qos=1, pid=2, retain=False)
    _, got = retained_for(broker, "s", pub, ("r/#", 0))
    assert [(p.topic, p.payload) for p in got] == [(b"r/t", b"retained")]


def test_empty_retained_payload_clears_and_is_not_stored(broker):
    """A retained PUBLISH with an empty payload removes the retained message and is not
    stored itself (MQTT-3.3.1-10, MQTT-3.3.1-11), but it is delivered as normal to current
    subscribers (MQTT-3.3.1-10), with RETAIN=0 (MQTT-3.3.1-9)."""
    pub = connected(broker, "p")
    live, _ = retained_for(broker, "live", pub, ("r/t", 1))
    publish(pub, "r/t", b"soon gone", qos=1, pid=1)
    publish(pub, "r/t", b"", qos=1, pid=2)
    pub.send(m.publish(MARK.decode(), b""))
    assert [(p.payload, p.retain) for p in collect(live)] == [(b"soon gone", False), (b"", False)]
    _, got = retained_for(broker, "s", pub, ("r/t", 1))
    assert got == []
    _, got = retained_for(broker, "s2", pub, ("#", 1))
    assert got == []


def test_empty_retained_payload_on_a_topic_with_nothing_retained(broker):
    """Clearing a topic that has no retained message stores nothing (MQTT-3.3.1-11)."""
    pub = connected(broker, "p")
    publish(pub, "r/none", b"", qos=0)
    _, got = retained_for(broker, "s", pub, ("r/none", 0))
    assert got == []


def test_clear_then_set_again(broker):
    """After clearing, a new retained message on the topic is stored again."""
    pub = connected(broker, "p")
    publish(pub, "r/t", b"a")
    publish(pub, "r/t", b"")
    publish(pub, "r/t", b"b")
    _, got = retained_for(broker, "s", pub, ("r/t", 0))
    assert [p.payload for p in got] == [b"b"]


def test_retained_qos_is_min_of_stored_and_granted(broker):
    """A retained message is sent at min(QoS it was published with, granted QoS)
    (MQTT-3.8.4-6), with RETAIN=1 (MQTT-3.3.1-6), and a nonzero packet id at QoS > 0."""
    pub = connected(broker, "p")
    for q in (0, 1, 2):
        publish(pub, "rq/%d" % q, b"stored at %d" % q, qos=q, pid=q + 1)
    for granted in (0, 1, 2):
        c, got = retained_for(broker, "s%d" % granted, pub, ("rq/+", granted))
        seen = sorted((p.topic, p.qos, p.retain) for p in got)
        assert seen == [(b"rq/%d" % q, min(q, granted), True) for q in (0, 1, 2)], (granted, seen)
        assert all(p.pid != 0 for p in got if p.qos)


def test_retained_qos2_delivery_completes_four_part_handshake(broker):
    """A retained QoS 2 message sent on subscribe goes through PUBREC/PUBREL/PUBCOMP like any
    QoS 2 delivery (MQTT-4.3.3-1)."""
    pub = connected(broker, "p")
    publish(pub, "r2/t", b"x", qos=2, pid=4)
    c = connected(broker, "s")
    assert subscribe(c, 1, ("r2/t", 2)) == [2]
    p = c.expect(PUBLISH)
    assert (p.topic, p.qos, p.retain) == (b"r2/t", 2, True)
    c.send(m.pubrec(p.pid))
    r = c.expect(PUBREL)
    assert r.b0 == 0x62 and r.pid == p.pid
    c.send(m.pubcomp(p.pid))
    c.send(m.PINGREQ)
    c.expect(13)


def test_wildcard_subscription_receives_every_matching_retained_message(broker):
    """A wildcard subscription gets every retained message it matches, each once, with
    RETAIN=1, and none that it does not match (MQTT-3.3.1-6)."""
    pub = connected(broker, "p")
    topics = ["home/kitchen/temp", "home/kitchen/hum", "home/hall/temp", "home", "office/temp",
              "home/garage/door/state"]
    for i, t in enumerate(topics):
        publish(pub, t, b"v%d" % i, qos=1, pid=i + 1)

    def payloads(flt):
        _, got = retained_for(broker, "s-" + flt, pub, (flt, 1))
        assert all(p.retain for p in got)
        return sorted((p.topic.decode(), p.payload) for p in got)

    assert payloads("home/#") == sorted((t, b"v%d" % i) for i, t in enumerate(topics)
                                        if t.startswith("home"))
    assert payloads("home/+/temp") == [("home/hall/temp", b"v2"), ("home/kitchen/temp", b"v0")]
    assert payloads("+/temp") == [("office/temp", b"v4")]
    assert payloads("#") == sorted((t, b"v%d" % i) for i, t in enumerate(topics))
    assert payloads("nothing/+") == []


def test_retained_not_resent_on_unrelated_subscribe(broker):
    """Subscribing to another filter does not resend retained messages of the client's
    existing subscriptions (MQTT-3.3.1-6: only those matching the new subscription)."""
    pub = connected(broker, "p")
    publish(pub, "a/1", b"a1")
    publish(pub, "b/1", b"b1")
    c, got = retained_for(broker, "s", pub, ("a/#", 0))
    assert [p.payload for p in got] == [b"a1"]
    assert subscribe(c, 2, ("c/#", 0)) == [0]
    pub.send(m.publish(MARK.decode(), b""))
    assert collect(c) == []
    assert subscribe(c, 3, ("b/+", 0)) == [0]
    pub.send(m.publish(MARK.decode(), b""))
    assert [(p.payload, p.retain) for p in collect(c)] == [(b"b1", True)]


def test_resubscribe_same_filter_resends_retained(broker):
    """Resubscribing an identical filter re-sends the matching retained messages
    (MQTT-3.8.4-3)."""
    pub = connected(broker, "p")
    publish(pub, "rs/t", b"again")
    c, got = retained_for(broker, "s", pub, ("rs/+", 0))
    assert [p.payload for p in got] == [b"again"]
    assert subscribe(c, 2, ("rs/+", 1)) == [1]
    pub.send(m.publish(MARK.decode(), b""))
    assert [(p.payload, p.retain) for p in collect(c)] == [(b"again", True)]


def test_retained_and_live_to_a_new_subscriber(broker):
    """A subscriber first gets the retained message (RETAIN=1), then live ones (RETAIN=0)."""
    pub = connected(broker, "p")
    publish(pub, "rl/t", b"old")
    c, got = retained_for(broker, "s", pub, ("rl/t", 0))
    assert [(p.payload, p.retain) for p in got] == [(b"old", True)]
    publish(pub, "rl/t", b"new")
    pub.send(m.publish(MARK.decode(), b""))
    assert [(p.payload, p.retain) for p in collect(c)] == [(b"new", False)]
    _, got = retained_for(broker, "s2", pub, ("rl/t", 0))
    assert [(p.payload, p.retain) for p in got] == [(b"new", True)]


@pytest.mark.parametrize("store", [False, True], ids=["memory", "store"])
def test_retained_message_waiting_in_the_queue_keeps_retain_1(broker_factory, tmp_path, store):
    """MQTT-3.3.1-8 (3.1.1): a message sent because of a new subscription has RETAIN 1, also
    when it waits in the queue behind a full in-flight window (max_inflight_messages 1) and
    when its first sending is lost and it goes again with DUP after a reconnect."""
    b = broker_factory(config="max_inflight_messages 1\n", data=tmp_path / "d" if store else None)
    pub = b.raw()
    assert pub.connect("rq-pub") == (0, 0)
    for i in (1, 2):
        pub.send(m.publish("rq/%d" % i, b"kept%d" % i, qos=1, pid=i, retain=True))
        pub.expect(4)
    s = b.raw()
    assert s.connect("rq-sub", clean=False) == (0, 0)
    s.send(m.subscribe(1, ("rq/#", 1)))
    s.expect(9)
    first = s.expect(3)
    s.send(m.puback(first.pid))
    second = s.expect(3)  # it waited in the queue for the window
    assert [(p.payload, p.retain) for p in (first, second)] == [(b"kept1", True), (b"kept2", True)]
    s.close()  # second not acknowledged: sent again at the reconnect
    s = b.raw()
    assert s.connect("rq-sub", clean=False) == (1, 0)
    again = s.expect(3)
    assert (again.payload, again.retain, again.dup) == (b"kept2", True, True)
