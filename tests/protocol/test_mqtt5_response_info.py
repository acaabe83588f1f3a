"""MQTT 5.0 Request Response Information / Response Information through the network: CONNACK
carries Response Information (0x1A, section 3.2.2.3.15), `response_topic_prefix`/<client id>,
only when the client's CONNECT asked for it with Request Response Information 1 (section
3.1.2.11.6, MQTT-3.1.2-28), never over the client's Maximum Packet Size (MQTT-3.1.2-24), and
what clients publish or subscribe there is still under the access rules. Raw clients
(tests/support/mqttraw5.py) check the bytes; paho-mqtt 2.x's MQTTv5 client runs a request and
its response through the topic it was given."""

import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import mqttraw
import mqttraw5 as m
from mqttraw5 import board_heap_on_64_bits
from mqttraw5 import broker5  # noqa: F401 (the `broker` fixture)
from mqttraw5 import connected, prop
from test_security import users_file


def test_response_information_only_when_requested(broker):
    """MQTT-3.1.2-28: without Request Response Information, or with 0, no Response Information;
    with 1, the default prefix `response` and the client id (section 3.2.2.3.15)."""
    for cid, props in (("ri-none", []), ("ri-0", [(m.REQUEST_RESPONSE, 0)])):
        c = m.Client5(broker.port)
        broker._clients.append(c)
        ack = c.connect5(cid, properties=props)
        assert ack.code == 0
        assert prop(ack.props, 0x1A) is None
    c = m.Client5(broker.port)
    broker._clients.append(c)
    ack = c.connect5("ri-1", properties=[(m.REQUEST_RESPONSE, 1)])
    assert ack.code == 0
    assert prop(ack.props, 0x1A) == b"response/ri-1"


def test_response_information_for_an_assigned_client_id(broker):
    """MQTT-3.1.3-6/7 with section 3.2.2.3.15: a client with an empty client id gets its
    Response Information built on the id the server assigned it."""
    c = m.Client5(broker.port)
    broker._clients.append(c)
    ack = c.connect5("", properties=[(m.REQUEST_RESPONSE, 1)])
    cid = prop(ack.props, m.ASSIGNED_CLIENT_ID)
    assert cid
    assert prop(ack.props, 0x1A) == b"response/" + cid


def test_response_topic_prefix_from_the_config(broker_factory):
    """`response_topic_prefix app/replies` in the config: Response Information is
    app/replies/<client id>."""
    b = broker_factory(config="response_topic_prefix app/replies\n", heap=board_heap_on_64_bits())
    ack = m.Client5(b.port).connect5("cfg", properties=[(m.REQUEST_RESPONSE, 1)])
    assert ack.code == 0
    assert prop(ack.props, 0x1A) == b"app/replies/cfg"


def test_no_response_information_that_is_not_a_valid_topic(broker):
    """Section 3.2.2.3.15 lets the server leave Response Information out: it does for a client id
    with a wildcard character, which would not give a topic name (MQTT-3.3.2-2), and the
    connection is accepted."""
    c = m.Client5(broker.port)
    broker._clients.append(c)
    ack = c.connect5("a+b#", properties=[(m.REQUEST_RESPONSE, 1)])
    assert ack.code == 0
    assert prop(ack.props, 0x1A) is None


def test_response_information_never_over_the_maximum_packet_size(broker):
    """MQTT-3.1.2-24: with a Maximum Packet Size the CONNACK with Response Information would
    exceed, the CONNACK comes without it and within the size."""
    c = m.Client5(broker.port)
    broker._clients.append(c)
    cid = "r" * 40
    c.send(m.connect(cid, properties=[(m.REQUEST_RESPONSE, 1), (m.MAXIMUM_PACKET_SIZE, 48)]))
    raw = c.expect(m.CONNACK)
    ack = m.Connack(raw)
    assert ack.code == 0
    assert prop(ack.props, 0x1A) is None
    assert 1 + len(mqttraw.varint(len(raw.body))) + len(raw.body) <= 48
    big = m.Client5(broker.port)
    broker._clients.append(big)
    ack = big.connect5(cid, properties=[(m.REQUEST_RESPONSE, 1), (m.MAXIMUM_PACKET_SIZE, 200)])
    assert prop(ack.props, 0x1A) == b"response/" + cid.encode()


def test_access_rules_apply_under_the_response_prefix(broker_factory, tmp_path):
    """Section 4.10 with the access rules: the Response Information names a topic like any
    other; an acl_file `pattern readwrite response/%c/#` lets each client use its own, and
    another client's is refused (PUBACK 0x87, SUBACK 0x87). A 128k heap: the esp32 profile's
    100k on the 64-bit port has no room for the v5 modules beside the security ones (also
    before Response Information: 'out of memory' at the first v5 CONNECT)."""
    f = users_file(tmp_path, alice="a")
    a = tmp_path / "acl.txt"
    a.write_text("pattern readwrite response/%c/#\n")
    b = broker_factory(config="password_file %s\nacl_file %s\nallow_anonymous true\n" % (f, a), heap="128k")
    me = m.Client5(b.port)
    ack = me.connect5("me", properties=[(m.REQUEST_RESPONSE, 1)])
    mine = prop(ack.props, 0x1A)
    assert mine == b"response/me"
    me.send(m.subscribe(1, (mine + b"/#", 1), (b"response/other/#", 1)))
    assert me.next(m.SUBACK).codes == [1, 0x87]
    other = m.Client5(b.port)
    assert other.connect5("other").code == 0
    other.send(m.publish(mine + b"/r", b"to me", qos=1, pid=1))
    assert other.next(m.PUBACK).code == 0x87  # response/other/# is its own; response/me is not
    me.send(m.publish(mine + b"/r", b"mine", qos=1, pid=2))
    assert me.next(m.PUBACK).code == 0
    got = me.next(m.PUBLISH)
    assert (got.topic, got.payload) == (b"response/me/r", b"mine")


def test_paho_request_and_response_through_the_response_information(broker):
    """paho-mqtt 2.x (MQTTv5): a requester asks for Response Information, sends a request whose
    Response Topic is built on it (section 4.10), a responder answers there, and the
    requester gets the answer."""
    info = []
    answers = []
    subacks = []
    req = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-req", protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.RequestResponseInformation = 1
    req.on_connect = lambda cl, u, f, rc, p: info.append(getattr(p, "ResponseInformation", None))
    req.on_message = lambda cl, u, msg: answers.append((msg.topic, msg.payload))
    req.on_subscribe = lambda cl, u, mid, codes, p: subacks.append(codes)
    req.connect(broker.host, broker.port, 30, properties=props)
    req.loop_start()
    responder = connected(broker, "responder")
    responder.send(m.subscribe(1, ("svc/ask", 0)))
    assert responder.next(m.SUBACK).codes == [0]
    try:
        deadline = time.time() + 5
        while not info and time.time() < deadline:
            time.sleep(0.01)
        assert info == ["response/paho-req"]
        topic = info[0] + "/answers"
        assert req.subscribe(topic, 0)[0] == mqtt.MQTT_ERR_SUCCESS
        while not subacks and time.time() < deadline + 5:
            time.sleep(0.01)
        assert [c.value for c in subacks[0]] == [0]  # subscribed before the request goes
        p = Properties(PacketTypes.PUBLISH)
        p.ResponseTopic = topic
        req.publish("svc/ask", b"2+2", 0, properties=p)
        ask = responder.next(m.PUBLISH)
        rt = prop(ask.props, m.RESPONSE_TOPIC)
        assert rt == b"response/paho-req/answers"
        responder.send(m.publish(rt, b"4"))
        while not answers and time.time() < deadline + 5:
            time.sleep(0.01)
        assert answers == [("response/paho-req/answers", b"4")]
    finally:
        req.disconnect()
        req.loop_stop()
