"""MQTT 5.0 retained messages through the network: a retained message keeps its properties
(and its Message Expiry: an expired one is not sent), a new subscription's Subscription
Identifier comes with the retained messages it brings, and a retained QoS 1 message that
waits in the queue keeps RETAIN 1; messages that expire while they wait in an online client's
queue are dropped. Statement numbers are the MQTT 5.0 standard's."""

import time

import mqttraw
import mqttraw5 as m
from mqttraw5 import board_heap_on_64_bits
from mqttraw5 import broker5  # noqa: F401 (the `broker` fixture)
from mqttraw5 import connected as v5

PROPS = [(m.CONTENT_TYPE, "text/plain"), (m.RESPONSE_TOPIC, "rp/answer"), (m.CORRELATION_DATA, b"c1"),
         (m.USER_PROPERTY, ("k", "v"))]


def retain(broker, topic, payload, properties=(), qos=1):
    p = v5(broker, "pub-%d" % time.monotonic_ns())
    p.send(m.publish(topic, payload, qos=qos, retain=True, pid=1, properties=properties))
    if qos:
        p.next(m.PUBACK)
    return p


def first_retained_311(broker, cid, flt):
    """A 3.1.1 client subscribing to flt at QoS 0: (the client, the first PUBLISH it gets)."""
    c = broker.raw()
    assert c.connect(cid) == (0, 0)
    c.send(mqttraw.subscribe(1, (flt, 0)))
    c.expect(9)
    return c, c.expect(3)


def test_retained_message_keeps_its_properties(broker):
    """MQTT-3.3.1-6 (RETAIN 1 on the retained message a new subscription gets) with its
    properties as published: Content Type, Response Topic, Correlation Data, User Property
    (MQTT-3.3.2-17/18), and the time left of its Message Expiry (MQTT-3.3.2-6)."""
    retain(broker, "rp/t", b"kept", PROPS + [(m.MESSAGE_EXPIRY, 300)])
    s = v5(broker, "sub")
    s.send(m.subscribe(1, ("rp/#", 1)))
    s.next(m.SUBACK)
    p = s.next(m.PUBLISH)
    assert (p.topic, p.payload, p.retain) == (b"rp/t", b"kept", True)
    assert m.prop(p.props, m.CONTENT_TYPE) == b"text/plain"
    assert m.prop(p.props, m.RESPONSE_TOPIC) == b"rp/answer"
    assert m.prop(p.props, m.CORRELATION_DATA) == b"c1"
    assert m.prop(p.props, m.USER_PROPERTY) == (b"k", b"v")
    assert 295 <= m.prop(p.props, m.MESSAGE_EXPIRY) <= 300


def test_expired_retained_message_is_not_sent(broker):
    """MQTT-3.3.2-5: a retained message whose Message Expiry Interval has passed is not sent
    to a new subscription (one with time left is)."""
    retain(broker, "rx/old", b"old", [(m.MESSAGE_EXPIRY, 1)])
    retain(broker, "rx/new", b"new", [(m.MESSAGE_EXPIRY, 100)])
    time.sleep(2.2)
    s = v5(broker, "sub")
    s.send(m.subscribe(1, ("rx/#", 1)))
    s.next(m.SUBACK)
    p = s.next(m.PUBLISH)
    assert p.payload == b"new"
    s.send(m.ack(m.PUBACK, p.pid))
    s.send(mqttraw.PINGREQ)
    assert s.recv_packet(2.0).type == m.PINGRESP  # and no "old" before it


def test_expired_retained_message_is_not_sent_to_a_311_subscriber(broker):
    """MQTT-3.3.2-5 holds for every matching subscriber: a 3.1.1 subscription does not get a
    v5 client's retained message whose Message Expiry Interval has passed (one with time left
    it gets, without properties)."""
    retain(broker, "r3x/old", b"old", [(m.MESSAGE_EXPIRY, 1)])
    retain(broker, "r3x/new", b"new", [(m.MESSAGE_EXPIRY, 100)])
    time.sleep(2.2)
    c, p = first_retained_311(broker, "old311", "r3x/#")
    assert (p.payload, p.retain) == (b"new", True)
    c.send(mqttraw.PINGREQ)
    c.expect(13)  # and no "old" before it


def test_retained_delivery_carries_the_subscription_identifier(broker):
    """MQTT-3.3.4-3: the Subscription Identifier of the subscription that brings a retained
    message comes with it."""
    retain(broker, "ri/t", b"x")
    s = v5(broker, "sub")
    s.send(m.subscribe(1, ("ri/+", 1), properties=[(m.SUBSCRIPTION_ID, 77)]))
    s.next(m.SUBACK)
    p = s.next(m.PUBLISH)
    assert m.prop(p.props, m.SUBSCRIPTION_ID) == 77
    assert p.retain


def test_queued_retained_message_keeps_retain_1(broker):
    """Section 3.3.1.3: retained messages sent for a new subscription carry RETAIN 1, also one
    that waited in the queue (Receive Maximum 1: the second goes after the first's PUBACK)."""
    retain(broker, "rq/a", b"a")
    retain(broker, "rq/b", b"b")
    s = v5(broker, "sub", properties=[(m.RECEIVE_MAXIMUM, 1)])
    s.send(m.subscribe(1, ("rq/+", 1)))
    s.next(m.SUBACK)
    first = s.next(m.PUBLISH)
    s.send(m.ack(m.PUBACK, first.pid))
    second = s.next(m.PUBLISH)
    assert (first.retain, second.retain) == (True, True)
    assert sorted((first.payload, second.payload)) == [b"a", b"b"]


def test_311_subscriber_gets_a_v5_retained_message_plain(broker):
    """A 3.1.1 subscriber gets a v5 client's retained message without properties (MQTT 3.1.1
    has none), RETAIN 1 (MQTT-3.3.1-8 of 3.1.1)."""
    retain(broker, "r3/t", b"plain", PROPS)
    _, p = first_retained_311(broker, "old", "r3/t")
    assert (p.payload, p.retain) == (b"plain", True)


def test_message_expired_while_a_311_subscriber_was_away_is_not_sent(broker):
    """MQTT-3.3.2-5 for a 3.1.1 subscriber: a v5 client's QoS 1 message queued for an offline
    3.1.1 session (clean session 0) whose Message Expiry Interval passes before the client
    is back is not sent; one with time left is, without properties."""
    m.expiry_while_away_311(broker, "away311", "e3/#", "e3")


def test_message_expiring_in_an_online_clients_queue_is_dropped(broker):
    """MQTT-3.3.2-5: a QoS 1 message that waits in the queue of an online client (its Receive
    Maximum 1 is taken by an unacknowledged message) and whose Message Expiry Interval passes
    there is not sent; one without expiry behind it is."""
    s = v5(broker, "slow", properties=[(m.RECEIVE_MAXIMUM, 1)])
    s.send(m.subscribe(1, ("qe/t", 1)))
    s.next(m.SUBACK)
    p = v5(broker, "pub")
    p.send(m.publish("qe/t", b"first", qos=1, pid=1))
    p.send(m.publish("qe/t", b"short", qos=1, pid=2, properties=[(m.MESSAGE_EXPIRY, 1)]))
    p.send(m.publish("qe/t", b"last", qos=1, pid=3))
    first = s.next(m.PUBLISH)
    assert first.payload == b"first"
    time.sleep(2.2)
    s.send(m.ack(m.PUBACK, first.pid))
    nxt = s.next(m.PUBLISH)
    assert nxt.payload == b"last"


def test_message_expiring_in_an_online_311_clients_queue_is_dropped(broker_factory):
    """MQTT-3.3.2-5 for a 3.1.1 subscriber that stays online: a v5 client's QoS 1 message
    waiting in its queue (its in-flight window, max_inflight_messages 1, taken by an
    unacknowledged message) whose Message Expiry Interval passes there is not sent; the
    message without expiry behind it is."""
    b = broker_factory(config="max_inflight_messages 1\n", heap=board_heap_on_64_bits())
    s = b.raw()
    assert s.connect("slow311") == (0, 0)
    s.send(mqttraw.subscribe(1, ("qe3/t", 1)))
    s.expect(9)
    p = v5(b, "pub-qe3")
    p.send(m.publish("qe3/t", b"first", qos=1, pid=1))
    p.send(m.publish("qe3/t", b"short", qos=1, pid=2, properties=[(m.MESSAGE_EXPIRY, 1)]))
    p.send(m.publish("qe3/t", b"last", qos=1, pid=3))
    for _ in range(3):
        p.next(m.PUBACK)
    first = s.expect(3)
    assert first.payload == b"first"
    time.sleep(2.2)
    s.send(mqttraw.puback(first.pid))
    nxt = s.expect(3)
    assert nxt.payload == b"last"
    s.send(mqttraw.puback(nxt.pid))
    s.send(mqttraw.PINGREQ)
    s.expect(13)  # and no "short" after it


def test_retained_message_expiring_in_a_311_clients_queue_is_dropped(broker_factory):
    """MQTT-3.3.2-5: a v5 client's retained message with a Message Expiry Interval, matched by
    a 3.1.1 client's new subscription while its in-flight window (max_inflight_messages 1) is
    taken, waits in the queue; its interval passes there: it is not sent. The one retained
    without expiry behind it is, with RETAIN 1 (MQTT-3.3.1-8 of 3.1.1)."""
    b = broker_factory(config="max_inflight_messages 1\n", heap=board_heap_on_64_bits())
    p = v5(b, "pub-rq")
    for pid, (topic, props) in enumerate((("rq5/a", []), ("rq5/b", [(m.MESSAGE_EXPIRY, 1)]), ("rq5/c", [])), 1):
        p.send(m.publish(topic, topic.encode(), qos=1, pid=pid, retain=True, properties=props))
        p.next(m.PUBACK)
    s = b.raw()
    assert s.connect("rq5-sub") == (0, 0)
    s.send(mqttraw.subscribe(1, ("rq5/#", 1)))
    s.expect(9)
    first = s.expect(3)
    time.sleep(2.2)
    s.send(mqttraw.puback(first.pid))
    rest = [s.expect(3)]
    s.send(mqttraw.puback(rest[0].pid))
    s.send(mqttraw.PINGREQ)
    while True:
        q = s.recv_packet(5)
        assert q is not None, "closed before PINGRESP"
        if q.type == 13:
            break
        rest.append(q)
    got = [(x.payload, x.retain) for x in [first] + rest]
    assert sorted(got) == [(b"rq5/a", True), (b"rq5/c", True)], got


def test_retained_will_keeps_its_properties(broker):
    """MQTT-3.1.3-10 with MQTT-3.3.1-6: a will published with RETAIN 1 is retained with its
    properties; a later subscription gets them."""
    c = v5(broker, "rw", will=("rw/state", b"offline", 1, True, [(m.CONTENT_TYPE, "text/plain")]))
    c.close()
    time.sleep(0.5)
    s = v5(broker, "sub")
    s.send(m.subscribe(1, ("rw/state", 1)))
    s.next(m.SUBACK)
    p = s.next(m.PUBLISH)
    assert (p.payload, p.retain) == (b"offline", True)
    assert m.prop(p.props, m.CONTENT_TYPE) == b"text/plain"
