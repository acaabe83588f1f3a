"""MQTT 5.0 CONNECT and CONNACK through the network: what the server says it supports, the
client id it assigns, Server Keep Alive, sessions by Clean Start and Session Expiry Interval,
and a reason code for every refusal, each followed by the close the standard requires.
Statement numbers are the MQTT 5.0 standard's (OASIS, 2019). Raw clients
(tests/support/mqttraw5.py) check the bytes; paho-mqtt 2.x's MQTTv5 client checks that a
real client library gets along."""

import re
import time

import paho.mqtt.client as mqtt
import pytest

import mqttraw
import mqttraw5 as m
from mqttraw5 import board_heap_on_64_bits
from mqttraw5 import broker5  # noqa: F401 (the `broker` fixture)
from mqttraw5 import prop



def client(broker):
    c = m.Client5(broker.port)
    broker._clients.append(c)
    return c


def test_connack_says_what_the_server_supports(broker):
    """MQTT-3.2.2-1..3, section 3.2.2.3: CONNACK 0 with Receive Maximum (the esp32 profile's
    max_inflight_messages 8, as Mosquitto announces its own), Maximum Packet Size (its
    max_packet_size 2048, a whole packet's size as both count it), Topic Alias Maximum (the firmware's 8, which
    the board keeps); no Wildcard, Subscription Identifier nor Shared Subscription Available,
    since absent means available (sections 3.2.2.3.11-13); no Server Keep Alive when the
    client's keepalive is within max_keepalive."""
    ack = client(broker).connect5("c5", keepalive=30)
    assert (ack.present, ack.code) == (0, 0)
    p = ack.props
    assert prop(p, m.RECEIVE_MAXIMUM) == 8
    assert prop(p, m.MAXIMUM_PACKET_SIZE) == 2048
    assert prop(p, m.TOPIC_ALIAS_MAXIMUM) == 8
    assert prop(p, m.WILDCARD_AVAILABLE) is None  # absent: available (3.2.2.3.11)
    assert prop(p, m.SUBSCRIPTION_ID_AVAILABLE) is None  # (3.2.2.3.12)
    assert prop(p, m.SHARED_AVAILABLE) is None  # (3.2.2.3.13)
    assert prop(p, m.SERVER_KEEP_ALIVE) is None
    assert prop(p, m.MAXIMUM_QOS) is None  # QoS 2 is supported: absent means 2
    assert prop(p, m.ASSIGNED_CLIENT_ID) is None


def _connack_bytes(broker, cid="cb"):
    c = client(broker)
    c.send(m.connect(cid, keepalive=30))
    p = c.expect(m.CONNACK)
    return bytes((p.b0, len(p.body))) + bytes(p.body)


def test_connack_bytes_are_mosquittos(broker):
    """The esp32 profile's CONNACK byte for byte: Topic Alias Maximum 8, Maximum Packet Size
    2048 (max_packet_size, a whole packet's size, as Mosquitto announces its own), Receive
    Maximum 8, in the order Mosquitto writes them (properties may come in any
    order, section 2.2.2; a test comparing bytes then compares content), nothing else."""
    assert _connack_bytes(broker) == bytes.fromhex("200e00000b" "220008" "2700000800" "210008")


def test_connack_of_the_unix_profile_and_of_max_topic_alias(broker_factory):
    """The unix profile (what `ubroker run` starts) announces Mosquitto's defaults, byte for
    byte: Topic Alias Maximum 10, Receive Maximum 20 (max_inflight_messages) and no Maximum
    Packet Size (its max_packet_size 0: no limit, section 3.2.2.3.6); a max_packet_size set
    is announced as it is (256k: it counts a whole packet); `max_topic_alias 0` leaves Topic Alias Maximum
    out (absent: 0, section 3.2.2.3.8) and then any alias from the client is DISCONNECT 0x94
    (MQTT-3.2.2-17 and section 3.3.2.3.4)."""
    b = broker_factory(board="unix")
    assert _connack_bytes(b) == bytes.fromhex("2009000006" "22000a" "210014")
    b = broker_factory(board="unix", config="max_packet_size 256k\n")
    assert _connack_bytes(b) == bytes.fromhex("200e00000b" "22000a" "2700040000" "210014")
    b = broker_factory(board="unix", config="max_topic_alias 0\nmax_inflight_messages 3\n")
    assert _connack_bytes(b) == bytes.fromhex("2006000003" "210003")
    c = client(b)
    assert c.connect5("ta0").code == 0
    c.send(m.publish("t", b"x", properties=[(m.TOPIC_ALIAS, 1)]))
    assert c.disconnected() == 0x94


def test_empty_client_id_gets_an_assigned_one(broker):
    """MQTT-3.1.3-6/7: a zero-length ClientID is given a unique one, returned in CONNACK's
    Assigned Client Identifier; also with Clean Start 0. Its form is Mosquitto's, `auto-` and
    a random (version 4) UUID, so that one assigned before a restart is not assigned again."""
    ids = set()
    for clean in (True, False):
        c = client(broker)
        ack = c.connect5("", clean_start=clean)
        assert ack.code == 0
        cid = prop(ack.props, m.ASSIGNED_CLIENT_ID)
        assert re.fullmatch(rb"auto-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", cid), cid
        ids.add(cid)
        c.send(mqttraw.PINGREQ)
        c.expect(m.PINGRESP)
    assert len(ids) == 2


def test_server_keep_alive_replaces_a_keepalive_above_max(broker_factory):
    """MQTT-3.2.2-21/22: above max_keepalive (or 0, none) the server answers with Server Keep
    Alive = max_keepalive instead of refusing as it must for 3.1.1; within it, nothing."""
    b = broker_factory(config="max_keepalive 60\n", heap=board_heap_on_64_bits())
    for asked, told in ((0, 60), (600, 60), (30, None)):
        ack = m.Client5(b.port).connect5("ka%d" % asked, keepalive=asked)
        assert ack.code == 0
        assert prop(ack.props, m.SERVER_KEEP_ALIVE) == told


def test_session_expiry_keeps_the_session(broker):
    """MQTT-3.1.2-4/5/23, MQTT-3.2.2-2/3: with a Session Expiry Interval above 0 the session
    outlives the connection (Session Present 1 on a Clean Start 0 reconnect; the server uses
    the client's interval, so CONNACK names none, section 3.2.2.3.2); with 0 it ends with the
    connection; Clean Start 1 discards it."""
    c = client(broker)
    ack = c.connect5("keep", properties=[(m.SESSION_EXPIRY, 300)])
    assert prop(ack.props, m.SESSION_EXPIRY) is None
    c.send(m.subscribe(1, ("k/t", 1)))
    c.next(m.SUBACK)
    c.close()
    time.sleep(0.2)
    ack = client(broker).connect5("keep", clean_start=False, properties=[(m.SESSION_EXPIRY, 300)])
    assert (ack.present, ack.code) == (1, 0)
    ack = client(broker).connect5("keep", clean_start=True)
    assert ack.present == 0
    time.sleep(0.2)
    ack = client(broker).connect5("keep", clean_start=False)
    assert ack.present == 0  # the last connection had Session Expiry 0: gone with it


def test_unknown_protocol_level_is_still_refused(broker):
    """MQTT-3.1.2-2: a level the server does not speak (6, or 5 from a bridge, 0x85) is refused
    with the 3.1.1 CONNACK 0x01 the client can read, then closed."""
    for level in (6, 0x85):
        c = client(broker)
        c.send(m.connect("lvl", level=level))
        p = c.expect(m.CONNACK)
        assert bytes(p.body) == b"\x00\x01"
        assert c.closed()


REFUSED = [
    # (id, CONNECT keywords, reason code)
    ("duplicate property", dict(properties=[(m.RECEIVE_MAXIMUM, 5), (m.RECEIVE_MAXIMUM, 5)]), 0x82),
    ("unknown property", dict(properties=[(0x7F, b"\x00")]), 0x81),
    ("property of another packet", dict(properties=[(m.TOPIC_ALIAS, 1)]), 0x81),
    # Section 2.2.2.2: only in a client's PUBLISH is a Subscription Identifier a protocol
    # error (MQTT-3.3.4-6); elsewhere it is a property of another packet, malformed
    ("subscription identifier in CONNECT", dict(properties=[(m.SUBSCRIPTION_ID, 1)]), 0x81),
    ("receive maximum 0", dict(properties=[(m.RECEIVE_MAXIMUM, 0)]), 0x82),
    ("maximum packet size 0", dict(properties=[(m.MAXIMUM_PACKET_SIZE, 0)]), 0x82),
    ("request problem information 2", dict(properties=[(m.REQUEST_PROBLEM, 2)]), 0x82),
    ("authentication method", dict(properties=[(m.AUTH_METHOD, "SCRAM-SHA-1")]), 0x8C),
    ("client id too long", dict(client_id="x" * 65), 0x85),
    ("will QoS 3", dict(flags=0x02 | 0x04 | 0x18), 0x81),
    ("will payload not UTF-8", dict(will=("w/t", b"\xff\xfe", 0, False, [(m.PAYLOAD_FORMAT, 1)])), 0x99),
    ("will topic with a wildcard", dict(will=("w/#", b"x", 0, False, [])), 0x90),
]


@pytest.mark.parametrize("kw,code", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_refusals_get_their_reason_code_then_close(broker, kw, code):
    """MQTT-3.2.2-4/5/6, section 4.13: a refused CONNECT gets CONNACK with its reason code
    (0x81 malformed, 0x82 protocol error: MQTT-3.1.2-3/12, sections 2.2.2.2, 3.1.2.11;
    0x85 client id: MQTT-3.1.3-8; 0x8C no enhanced authentication: section 4.12; 0x99 will
    payload: section 3.1.3.2.3; 0x90 will topic: MQTT-3.1.3-11), Session Present 0, then the
    connection is closed; other clients are still served."""
    kw.setdefault("client_id", "bad")
    c = client(broker)
    ack = c.connect5(**kw)
    assert (ack.present, ack.code) == (0, code)
    assert c.closed()
    assert client(broker).connect5("after").code == 0


def test_too_many_clients_is_quota_exceeded(broker_factory):
    """Section 3.2.2.2: max_connections reached gives CONNACK 0x97 (Quota exceeded), then close."""
    b = broker_factory(config="max_connections 2\n", heap=board_heap_on_64_bits())
    kept = [m.Client5(b.port) for _ in range(2)]
    for i, c in enumerate(kept):
        assert c.connect5("q%d" % i).code == 0
    c = m.Client5(b.port)
    assert c.connect5("q2").code == 0x97
    assert c.closed()


def test_paho_mqttv5_client_connects(broker):
    """paho-mqtt 2.x with protocol=MQTTv5: CONNACK Success, and the properties it reads."""
    got = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho5", protocol=mqtt.MQTTv5)
    c.on_connect = lambda cl, u, f, rc, p: got.append((rc, p))
    c.connect(broker.host, broker.port, 30)
    c.loop_start()
    try:
        deadline = time.time() + 5
        while not got and time.time() < deadline:
            time.sleep(0.01)
        assert got and not got[0][0].is_failure
        assert got[0][1].TopicAliasMaximum == 8
    finally:
        c.disconnect()
        c.loop_stop()
