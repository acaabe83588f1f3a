"""MQTT 5.0 Topic Aliases from the server to a client (section 3.3.2.3.4) through the network:
only to a client whose CONNECT has Topic Alias Maximum above 0 (MQTT-3.1.2-27), never above it
nor above the server's max_topic_alias_out (MQTT-3.1.2-26, 3.3.2-11), never 0 (MQTT-3.3.2-8),
topic and alias the first time, then the empty topic and the alias, an alias never given to
another topic, none carried to a new connection (MQTT-3.3.2-7). Raw clients
(tests/support/mqttraw5.py) check the bytes; paho-mqtt 2.x's MQTTv5 client, which resolves
aliases, gets every message on its topic."""

import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import mqttraw5 as m
from mqttraw5 import board_heap_on_64_bits
from mqttraw5 import broker5  # noqa: F401 (the `broker` fixture)
from mqttraw5 import connected, prop

LONG = ["alias/topic/%d" % i for i in range(6)]  # 13 bytes: long enough to be aliased


def receiver(broker, cid, alias_max=None, qos=0):
    props = [] if alias_max is None else [(m.TOPIC_ALIAS_MAXIMUM, alias_max)]
    c = connected(broker, cid, properties=props)
    c.send(m.subscribe(1, ("alias/#", qos), ("a/b", qos)))
    assert c.next(m.SUBACK).codes == [qos, qos]
    return c


def received(c, n):
    """n PUBLISHes as (topic as sent, Topic Alias or None, payload), acknowledged."""
    got = []
    for _ in range(n):
        p = c.next(m.PUBLISH)
        got.append((p.topic, prop(p.props, m.TOPIC_ALIAS), p.payload))
        if p.qos == 1:
            c.send(m.ack(m.PUBACK, p.pid))
    return got


def publish(broker, cid, topics, qos=0):
    p = connected(broker, cid)
    for i, t in enumerate(topics):
        p.send(m.publish(t, b"%d" % i, qos=qos, pid=i + 1))
        if qos:
            assert p.next(m.PUBACK).code == 0
    return p


def test_no_alias_to_a_client_that_did_not_ask(broker):
    """MQTT-3.1.2-27: without Topic Alias Maximum, or with 0, no PUBLISH carries a Topic
    Alias; every one carries its topic."""
    quiet = receiver(broker, "ta-none")
    zero = receiver(broker, "ta-zero", 0)
    topics = [LONG[0]] * 3
    publish(broker, "ta-p0", topics)
    for c in (quiet, zero):
        assert received(c, 3) == [(LONG[0].encode(), None, b"%d" % i) for i in range(3)]


def test_topic_then_alias_alone(broker):
    """Section 3.3.2.3.4: the first PUBLISH on a long topic carries the topic and alias 1
    (never 0, MQTT-3.3.2-8), the next ones the empty topic and alias 1; a second topic gets
    alias 2; a short topic (a/b) gets none, as an alias would not save bytes. QoS 1 too."""
    for qos in (0, 1):
        c = receiver(broker, "ta-%d" % qos, 10, qos)
        publish(broker, "ta-p%d" % qos, [LONG[0], LONG[0], "a/b", LONG[1], LONG[0], LONG[1]], qos)
        t0, t1 = LONG[0].encode(), LONG[1].encode()
        assert received(c, 6) == [(t0, 1, b"0"), (b"", 1, b"1"), (b"a/b", None, b"2"), (t1, 2, b"3"),
                                  (b"", 1, b"4"), (b"", 2, b"5")]


def test_a_four_byte_topic_gets_an_alias(broker):
    """Section 3.3.2.3.4: from 4 bytes on an alias saves bytes on every PUBLISH after the
    first (the alias costs 3, the topic it stands for len(topic)), so `ab/c` gets one and
    `a/b` none (paho's test_server_topic_alias expects one for `TopicA`)."""
    c = connected(broker, "ta-4", properties=[(m.TOPIC_ALIAS_MAXIMUM, 10)])
    c.send(m.subscribe(1, ("ab/c", 0), ("a/b", 0)))
    assert c.next(m.SUBACK).codes == [0, 0]
    publish(broker, "ta-p4", ["ab/c", "ab/c", "a/b", "a/b"])
    assert received(c, 4) == [(b"ab/c", 1, b"0"), (b"", 1, b"1"), (b"a/b", None, b"2"), (b"a/b", None, b"3")]


def test_aliases_bounded_by_the_client_and_the_server(broker_factory):
    """MQTT-3.1.2-26, 3.3.2-11: no alias above the client's Topic Alias Maximum (2 here) nor
    above max_topic_alias_out (3 here); topics beyond go with their topic each time, and an
    alias once given stays with its topic (never reused for another without the topic)."""
    b = broker_factory(config="max_topic_alias_out 3\n", heap=board_heap_on_64_bits())
    two = receiver(b, "ta-two", 2)
    many = receiver(b, "ta-many", 100)
    topics = LONG[:5] + LONG[:5]
    publish(b, "ta-pb", topics)
    got2 = received(two, 10)
    gotm = received(many, 10)
    assert max(a for _, a, _ in got2 if a) == 2
    assert max(a for _, a, _ in gotm if a) == 3
    for got, n in ((got2, 2), (gotm, 3)):
        seen = {}
        for i, (topic, alias, _) in enumerate(got):
            want = topics[i].encode()
            if alias is None:
                assert topic == want
                continue
            assert topic in (want, b"")
            if topic:
                assert alias not in seen  # a new alias with its topic, never a second topic
                seen[alias] = topic
            assert seen[alias] == want
        assert len(seen) == n


def test_max_topic_alias_out_0_sends_none(broker_factory):
    """max_topic_alias_out 0: no Topic Alias to any client, also one that allows them."""
    b = broker_factory(config="max_topic_alias_out 0\n", heap=board_heap_on_64_bits())
    c = receiver(b, "ta-off", 10)
    publish(b, "ta-poff", [LONG[0], LONG[0]])
    assert received(c, 2) == [(LONG[0].encode(), None, b"0"), (LONG[0].encode(), None, b"1")]


def test_aliases_do_not_outlive_the_connection(broker):
    """MQTT-3.3.2-7: after the client reconnects (its session kept) the first PUBLISH on a
    topic aliased before carries the topic again."""
    props = [(m.TOPIC_ALIAS_MAXIMUM, 10), (m.SESSION_EXPIRY, 60)]
    c = connected(broker, "ta-again", properties=props)
    c.send(m.subscribe(1, ("alias/#", 0)))
    c.next(m.SUBACK)
    p = publish(broker, "ta-pa", [LONG[0], LONG[0]])
    assert received(c, 2) == [(LONG[0].encode(), 1, b"0"), (b"", 1, b"1")]
    c.close()
    c = connected(broker, "ta-again", clean_start=False, properties=props)
    p.send(m.publish(LONG[0], b"2"))
    assert received(c, 1) == [(LONG[0].encode(), 1, b"2")]


def test_no_alias_that_would_exceed_the_maximum_packet_size(broker):
    """MQTT-3.1.2-24: a PUBLISH that fits the client's Maximum Packet Size without the alias's
    3 bytes but not with them goes with its topic and no alias."""
    t = LONG[0]
    payload = b"p" * 10
    whole = 1 + 1 + 2 + len(t) + 1 + len(payload)  # QoS 0, no properties
    c = connected(broker, "ta-mps", properties=[(m.TOPIC_ALIAS_MAXIMUM, 10), (m.MAXIMUM_PACKET_SIZE, whole)])
    c.send(m.subscribe(1, ("alias/#", 0)))
    c.next(m.SUBACK)
    p = connected(broker, "ta-pm")
    p.send(m.publish(t, payload))
    got = c.next(m.PUBLISH)
    assert (got.topic, prop(got.props, m.TOPIC_ALIAS), got.payload) == (t.encode(), None, payload)


def paho_receive(broker, cid, alias_max, topics):
    """(topic, Topic Alias or None, payload) of each message a paho-mqtt 2.x MQTTv5 client
    subscribed to alias/# hands its application while `topics` are published."""
    got = []
    ready = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    props = None
    if alias_max is not None:
        props = Properties(PacketTypes.CONNECT)
        props.TopicAliasMaximum = alias_max
    c.on_message = lambda cl, u, msg: got.append(
        (msg.topic, getattr(msg.properties, "TopicAlias", None), msg.payload))
    c.on_subscribe = lambda cl, u, mid, codes, p: ready.append(codes)
    c.connect(broker.host, broker.port, 30, properties=props)
    c.loop_start()
    try:
        c.subscribe("alias/#", 0)
        deadline = time.time() + 5
        while not ready and time.time() < deadline:
            time.sleep(0.01)
        assert [x.value for x in ready[0]] == [0]
        publish(broker, cid + "-p", topics)
        while len(got) < len(topics) and time.time() < deadline + 5:
            time.sleep(0.01)
        assert c.is_connected()
    finally:
        c.disconnect()
        c.loop_stop()
    return got


def test_paho_client_gets_aliases_only_when_it_asks(broker):
    """paho-mqtt 2.x (MQTTv5) asks for no Topic Aliases by default (MQTT-3.1.2-27: it gets
    none, every message on its topic). With TopicAliasMaximum 4 it reads the aliased PUBLISHes
    and stays connected; paho 2.2 hands the alias to the application (msg.properties) with an
    empty topic instead of resolving it, so the mapping is checked here: each alias first
    comes with its topic, and resolves to the topic published."""
    topics = [LONG[0], LONG[1], LONG[0], LONG[1], LONG[0]]
    plain = paho_receive(broker, "paho-plain", None, topics)
    assert plain == [(t, None, b"%d" % i) for i, t in enumerate(topics)]
    aliased = paho_receive(broker, "paho-ta", 4, topics)
    assert len(aliased) == len(topics)
    seen = {}
    for i, (topic, alias, payload) in enumerate(aliased):
        assert alias is not None and 1 <= alias <= 4
        if topic:
            seen[alias] = topic
        assert (seen[alias], payload) == (topics[i], b"%d" % i)
    assert [t for t, _, _ in aliased] == [LONG[0], LONG[1], "", "", ""]
