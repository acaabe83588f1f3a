"""MQTT 5.0 wills through the network: the will's properties reach its subscribers, the Will
Delay Interval holds it back until the delay or the session's end, whichever comes first,
and a client back in time discards it. Statement numbers are the MQTT 5.0 standard's; the
Will Delay Interval's rules are in section 3.1.3.2.2."""

import time

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

import mqttraw5 as m
from mqttraw5 import board_heap_on_64_bits
from mqttraw5 import broker5  # noqa: F401 (the `broker` fixture)
from mqttraw5 import connected as v5

WILL_PROPS = [
    (m.PAYLOAD_FORMAT, 1),
    (m.MESSAGE_EXPIRY, 120),
    (m.CONTENT_TYPE, "text/plain"),
    (m.RESPONSE_TOPIC, "will/answer"),
    (m.CORRELATION_DATA, b"\x00\x01corr"),
    (m.USER_PROPERTY, ("k1", "v1")),
    (m.USER_PROPERTY, ("k2", "v2")),
]


def watcher(broker, cid="watch"):
    w = v5(broker, cid)
    w.send(m.subscribe(1, ("will/#", 0)))
    assert w.next(m.SUBACK).codes == [0]
    return w


def no_will(w, within):
    """Nothing arrives for the watcher within `within` seconds."""
    try:
        p = w.recv_packet(within)
    except TimeoutError:
        return
    assert p is None or p.type != m.PUBLISH, "a will came early: %r" % p


def test_will_properties_reach_a_v5_subscriber(broker):
    """MQTT-3.1.3-10 (the will's properties are sent with it), MQTT-3.3.2-17/18 (user
    properties unchanged and in order); the Will Delay Interval is the server's and is not
    forwarded (section 3.1.3.2.2); Message Expiry counts from publication (MQTT-3.3.2-6)."""
    w = watcher(broker)
    c = v5(broker, "wp", will=("will/wp", b"bye", 0, False, WILL_PROPS + [(m.WILL_DELAY, 0)]))
    c.close()
    p = w.next(m.PUBLISH)
    assert (p.topic, p.payload) == (b"will/wp", b"bye")
    got = [(k, v) for k, v in p.props if k != m.MESSAGE_EXPIRY]
    want = [(k, v.encode() if isinstance(v, str) else v) for k, v in WILL_PROPS if k != m.MESSAGE_EXPIRY]
    want = [(k, tuple(x.encode() for x in v) if k == m.USER_PROPERTY else v) for k, v in want]
    assert sorted(x for x in got if x[0] != m.USER_PROPERTY) == sorted(x for x in want if x[0] != m.USER_PROPERTY)
    assert [v for k, v in got if k == m.USER_PROPERTY] == [(b"k1", b"v1"), (b"k2", b"v2")]
    assert 118 <= m.prop(p.props, m.MESSAGE_EXPIRY) <= 120
    assert m.prop(p.props, m.WILL_DELAY) is None


def test_will_properties_with_paho(broker):
    """The same through paho-mqtt 2.x at MQTTv5: the subscriber's message carries the will's
    Content Type, Response Topic, Correlation Data and User Properties."""
    got = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-sub", protocol=mqtt.MQTTv5)
    sub.on_message = lambda cl, u, msg: got.append(msg)
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    try:
        sub.subscribe("will/paho", 1)
        time.sleep(0.5)
        wp = Properties(PacketTypes.WILLMESSAGE)
        wp.ContentType = "application/json"
        wp.ResponseTopic = "will/reply"
        wp.CorrelationData = b"id-7"
        wp.UserProperty = [("a", "1")]
        c = m.Client5(broker.port)
        broker._clients.append(c)
        props = [(m.CONTENT_TYPE, "application/json"), (m.RESPONSE_TOPIC, "will/reply"),
                 (m.CORRELATION_DATA, b"id-7"), (m.USER_PROPERTY, ("a", "1"))]
        assert c.connect5("paho-will", will=("will/paho", b"{}", 1, False, props)).code == 0
        c.close()
        deadline = time.time() + 5
        while not got and time.time() < deadline:
            time.sleep(0.05)
        assert got, "no will"
        p = got[0].properties
        assert (p.ContentType, p.ResponseTopic, p.CorrelationData) == (wp.ContentType, wp.ResponseTopic,
                                                                       wp.CorrelationData)
        assert p.UserProperty == [("a", "1")]
    finally:
        sub.loop_stop()
        sub.disconnect()


def test_will_waits_for_its_delay(broker):
    """Section 3.1.3.2.2: with a Will Delay Interval the will is published once the delay has
    passed, not when the connection closes (the session, 60 s, outlives the delay)."""
    w = watcher(broker)
    c = v5(broker, "wd", properties=[(m.SESSION_EXPIRY, 60)],
           will=("will/wd", b"late", 0, False, [(m.WILL_DELAY, 2)]))
    c.close()
    no_will(w, 1.0)
    p = w.next(m.PUBLISH, timeout=4.0)
    assert p.payload == b"late"


def test_reconnect_within_the_delay_discards_the_will(broker):
    """MQTT-3.1.3-9 (section 3.1.3.2.2): a new connection to the session before the Will
    Delay Interval has passed: the will is not sent."""
    w = watcher(broker)
    c = v5(broker, "wr", properties=[(m.SESSION_EXPIRY, 60)],
           will=("will/wr", b"never", 0, False, [(m.WILL_DELAY, 2)]))
    c.close()
    time.sleep(0.5)
    back = m.Client5(broker.port)
    broker._clients.append(back)
    assert back.connect5("wr", clean_start=False, properties=[(m.SESSION_EXPIRY, 60)]).present == 1
    no_will(w, 3.5)


def test_session_end_before_the_delay_sends_the_will(broker):
    """Section 3.1.3.2.2: the will goes when the session ends if that comes before the delay:
    Session Expiry 1 s, Will Delay 30 s."""
    w = watcher(broker)
    c = v5(broker, "we", properties=[(m.SESSION_EXPIRY, 1)],
           will=("will/we", b"ended", 0, False, [(m.WILL_DELAY, 30)]))
    c.close()
    p = w.next(m.PUBLISH, timeout=4.0)
    assert p.payload == b"ended"


def test_no_session_left_sends_the_will_at_once(broker):
    """Section 3.1.3.2.2: Session Expiry 0 ends the session with the connection, so a will
    with a delay goes at once."""
    w = watcher(broker)
    c = v5(broker, "w0", will=("will/w0", b"now", 0, False, [(m.WILL_DELAY, 30)]))
    c.close()
    assert w.next(m.PUBLISH, timeout=2.0).payload == b"now"


def test_reconnect_with_clean_start_within_the_delay_discards_the_will(broker):
    """MQTT-3.1.2-8: the will is not published when "a new Network Connection for the
    ClientID is opened before the Will Delay Interval has expired"; with Clean Start 1 too,
    which ends the old session (Mosquitto's reading, its test 07-will-delay-recover): the
    client is back."""
    w = watcher(broker)
    c = v5(broker, "wc", properties=[(m.SESSION_EXPIRY, 60)],
           will=("will/wc", b"cleaned", 0, False, [(m.WILL_DELAY, 2)]))
    c.close()
    no_will(w, 0.5)
    v5(broker, "wc")  # Clean Start 1
    no_will(w, 3.0)


def test_a_refused_reconnect_leaves_the_waiting_will(broker_factory):
    """MQTT-3.1.2-8: only a reconnect the server takes counts as the client's return: one
    refused with CONNACK 0x97 (max_connections reached) leaves the will waiting, and it goes
    when its delay has passed."""
    b = broker_factory(config="max_connections 2\n", heap=board_heap_on_64_bits())
    w = watcher(b)
    c = v5(b, "wf", properties=[(m.SESSION_EXPIRY, 60)],
           will=("will/wf", b"still gone", 0, False, [(m.WILL_DELAY, 2)]))
    c.close()
    v5(b, "wf-other")
    back = m.Client5(b.port)
    b._clients.append(back)
    assert back.connect5("wf", clean_start=False, properties=[(m.SESSION_EXPIRY, 60)]).code == 0x97
    assert w.next(m.PUBLISH, timeout=4.0).payload == b"still gone"


def test_takeover_that_keeps_the_session_sends_no_will(broker):
    """MQTT-3.1.4-3 with MQTT-3.1.2-8: a takeover by a connection with Clean Start 0 keeps the
    session (Session Expiry 60 on both), so the old connection's will, without a delay, is
    not published; its client is still there (Mosquitto's 07-will-takeover)."""
    w = watcher(broker)
    v5(broker, "wk", clean_start=False, properties=[(m.SESSION_EXPIRY, 60)],
       will=("will/wk", b"never", 0, False, []))
    back = m.Client5(broker.port)
    broker._clients.append(back)
    assert back.connect5("wk", clean_start=False, properties=[(m.SESSION_EXPIRY, 60)]).present == 1
    no_will(w, 1.0)


def test_takeover_with_clean_start_sends_the_will(broker):
    """MQTT-3.1.4-3 with MQTT-3.1.2-8: a takeover by a connection with Clean Start 1 ends the
    old session with its connection, so that connection's will goes, its delay (30 s) cut
    short by the session's end (section 3.1.3.2.2)."""
    w = watcher(broker)
    v5(broker, "wt", properties=[(m.SESSION_EXPIRY, 60)],
       will=("will/wt", b"ended", 0, False, [(m.WILL_DELAY, 30)]))
    v5(broker, "wt")  # Clean Start 1
    assert w.next(m.PUBLISH, timeout=2.0).payload == b"ended"


def test_a_will_on_a_dollar_topic_is_not_published(broker):
    """Section 4.7.2, as for a v5 PUBLISH to a $ topic (PUBACK 0x87, not delivered): a v5
    client's will on $SYS/... with properties is not published."""
    w = v5(broker, "dollar-watch")
    w.send(m.subscribe(1, ("$SYS/fake/#", 0)))
    assert w.next(m.SUBACK).codes == [0]
    c = v5(broker, "wd", will=("$SYS/fake/state", b"spoofed", 0, False, WILL_PROPS))
    c.close()
    no_will(w, 1.0)
