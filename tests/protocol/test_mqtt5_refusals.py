"""MQTT 5.0 refusals and limits through the network: the server's Receive Maximum exceeded
(DISCONNECT 0x93), Maximum QoS and Retain Available (CONNACK properties, DISCONNECT and
CONNACK 0x9B/0x9A), CONNACK 0x86/0x87/0x88 (bad credentials, not authorised, heap below
heap_reserve) and ill-formed UTF-8 in strings (a Malformed Packet: 0x81). Statement numbers
are the MQTT 5.0 standard's (OASIS, 2019). Raw clients (tests/support/mqttraw5.py) check the
bytes."""

import pytest

import mqttraw
import mqttraw5 as m
from mqttraw5 import board_heap_on_64_bits
from mqttraw5 import broker5  # noqa: F401 (the `broker` fixture)
from mqttraw5 import connected as v5
from mqttraw5 import prop
from test_security import users_file


def client(broker):
    c = m.Client5(broker.port)
    broker._clients.append(c)
    return c


def _raw(c, ptype):
    """The next packet, of type ptype, as its bytes on the wire."""
    p = c.expect(ptype)
    return bytes((p.b0,)) + mqttraw.varint(len(p.body)) + bytes(p.body)


# ------------------------------------------------------------------ Receive Maximum (server's)

def test_receive_maximum_of_the_server_exceeded_gets_disconnect_0x93(broker):
    """MQTT-3.3.4-7 (the client MUST NOT send more than the server's Receive Maximum QoS 1/2
    PUBLISHes not yet acknowledged; for QoS 2, until PUBCOMP), section 3.3.4 and 4.9: the
    server announces Receive Maximum 8 (0x21, the esp32 profile's max_inflight_messages);
    8 QoS 2 PUBLISHes with ids 1..8 and no PUBREL each get PUBREC 0 (short form,
    section 3.5.2.1); the 9th gets DISCONNECT 0x93 (Receive Maximum exceeded), then the
    connection is closed (section 4.13). The broker serves on."""
    p = client(broker)
    ack = p.connect5("rmx")
    assert ack.code == 0
    rm = prop(ack.props, m.RECEIVE_MAXIMUM)
    assert rm == 8, rm
    for pid in range(1, rm + 1):
        p.send(m.publish("rmx/t", b"%d" % pid, qos=2, pid=pid))
        assert _raw(p, m.PUBREC) == bytes((0x50, 2, 0, pid))
    p.send(m.publish("rmx/t", b"over", qos=2, pid=rm + 1))
    assert p.disconnected() == 0x93
    assert v5(broker, "after")


def test_receive_maximum_of_the_server_counts_until_pubrel(broker):
    """MQTT-3.3.4-7, section 4.9: the server's quota is of QoS 2 exchanges awaiting PUBREL:
    with Receive Maximum (8) held, a PUBREL for one (PUBCOMP 0 back, short form) frees its
    slot and the next QoS 2 PUBLISH gets PUBREC 0, not DISCONNECT 0x93; the connection
    stays (PINGRESP)."""
    p = client(broker)
    rm = prop(p.connect5("rmf").props, m.RECEIVE_MAXIMUM)
    assert rm == 8, rm
    for pid in range(1, rm + 1):
        p.send(m.publish("rmf/t", b"%d" % pid, qos=2, pid=pid))
        assert _raw(p, m.PUBREC) == bytes((0x50, 2, 0, pid))
    p.send(m.ack(m.PUBREL, 3))
    assert _raw(p, m.PUBCOMP) == b"\x70\x02\x00\x03"
    p.send(m.publish("rmf/t", b"one more", qos=2, pid=rm + 1))
    assert _raw(p, m.PUBREC) == bytes((0x50, 2, 0, rm + 1))
    p.send(mqttraw.PINGREQ)
    assert _raw(p, m.PINGRESP) == b"\xd0\x00"


# ------------------------------------------------------------------ Maximum QoS, Retain Available

LIMITED = "max_qos 1\nretain_available false\n"


@pytest.fixture
def limited(broker_factory):
    """The esp32 profile with `max_qos 1` and `retain_available false`, at the heap its 100k
    amounts to on the 64-bit port."""
    return broker_factory(config=LIMITED, heap=board_heap_on_64_bits())


def test_connack_says_maximum_qos_1_and_retain_not_available(limited):
    """MQTT-3.2.2-9 (a server without QoS 2 sends Maximum QoS), section 3.2.2.3.4 and
    3.2.2.3.5: CONNACK 0 carries Maximum QoS (0x24) = 1 and Retain Available (0x25) = 0,
    beside the profile's Topic Alias Maximum 8, Maximum Packet Size 2048 and Receive
    Maximum 8, byte for byte in the firmware's (Mosquitto's) order."""
    c = client(limited)
    c.send(m.connect("lim", keepalive=30))
    p = c.expect(m.CONNACK)
    ack = m.Connack(p)
    assert (ack.present, ack.code) == (0, 0)
    assert prop(ack.props, m.MAXIMUM_QOS) == 1
    assert prop(ack.props, m.RETAIN_AVAILABLE) == 0
    assert bytes((p.b0, len(p.body))) + bytes(p.body) == bytes.fromhex(
        "201200000f" "220008" "2500" "2700000800" "210008" "2401")


def test_qos2_publish_above_maximum_qos_gets_disconnect_0x9b(limited):
    """MQTT-3.2.2-11 (a client told Maximum QoS 1 must not publish at QoS 2), section
    3.2.2.3.4: a QoS 2 PUBLISH is a Protocol Error answered with DISCONNECT 0x9B (QoS not
    supported), then close. A QoS 1 one before it is served (PUBACK 0x10: no subscribers)."""
    c = v5(limited, "q2")
    c.send(m.publish("lim/t", b"ok", qos=1, pid=1))
    assert _raw(c, m.PUBACK) == b"\x40\x03\x00\x01\x10"
    c.send(m.publish("lim/t", b"two", qos=2, pid=2))
    assert c.disconnected() == 0x9B
    assert v5(limited, "after")


def test_retained_publish_when_retain_not_available_gets_disconnect_0x9a(limited):
    """MQTT-3.2.2-14 (a client told Retain Available 0 must not send RETAIN 1), section
    3.2.2.3.5: such a PUBLISH is a Protocol Error answered with DISCONNECT 0x9A (Retain not
    supported), then close; nothing is retained for a later subscriber."""
    c = v5(limited, "rt")
    c.send(m.publish("lim/r", b"keep me", retain=True))
    assert c.disconnected() == 0x9A
    s = v5(limited, "late")
    s.send(m.subscribe(1, ("lim/r", 1)))
    assert s.next(m.SUBACK).codes == [1]
    s.send(mqttraw.PINGREQ)
    assert s.recv_packet(2).type == m.PINGRESP  # no retained PUBLISH before it


@pytest.mark.parametrize("will,code", [
    (("lim/w", b"bye", 2, False, []), 0x9B),
    (("lim/w", b"bye", 0, True, []), 0x9A),
], ids=["will qos 2: MQTT-3.2.2-12", "will retain: MQTT-3.2.2-13"])
def test_will_beyond_the_server_gets_connack(limited, will, code):
    """MQTT-3.2.2-12: a CONNECT whose Will QoS exceeds the server's Maximum QoS is refused
    with CONNACK 0x9B (QoS not supported); MQTT-3.2.2-13: one with Will Retain 1 where retain
    is not available with CONNACK 0x9A (Retain not supported); Session Present 0, then the
    connection is closed (section 3.2.2.2)."""
    c = client(limited)
    ack = c.connect5("w", will=will)
    assert (ack.present, ack.code) == (0, code)
    assert c.closed()
    assert v5(limited, "after")


# ------------------------------------------------------------------ CONNACK refusals

def test_bad_password_gets_connack_0x86(broker_factory, tmp_path):
    """Section 3.2.2.2: a v5 CONNECT with a wrong password (a password_file
    configured) gets CONNACK 0x86 (Bad User Name or Password), Session Present 0, then the
    connection is closed. A 128k heap: the esp32 profile's 100k on the 64-bit port has no
    room for the v5 modules beside the security ones (test_mqtt5_response_info.py)."""
    f = users_file(tmp_path, alice="wonderland")
    b = broker_factory(config="password_file %s\n" % f, heap="128k")
    c = client(b)
    c.send(m.connect("bad5", username="alice", password="Wonderland"))
    ack = m.Connack(c.expect(m.CONNACK, 10))
    assert (ack.present, ack.code) == (0, 0x86)
    assert c.closed(5)


def test_anonymous_client_gets_connack_0x87(broker_factory, tmp_path):
    """Section 3.2.2.2: with a password_file and allow_anonymous not set, a v5
    CONNECT without a user name gets CONNACK 0x87 (Not authorized), then close."""
    f = users_file(tmp_path, alice="wonderland")
    b = broker_factory(config="password_file %s\n" % f, heap="128k")
    c = client(b)
    c.send(m.connect("anon5"))
    ack = m.Connack(c.expect(m.CONNACK, 10))
    assert (ack.present, ack.code) == (0, 0x87)
    assert c.closed(5)


def test_will_on_a_topic_the_access_rules_forbid_gets_connack_0x87(broker_factory, tmp_path):
    """Section 3.2.2.2: the access rules' CONNECT-level check (a will on a topic
    the client may not write, refused as Mosquitto 2 does, sec_acl.connect): a v5 CONNECT
    with a will on `other/w` under `pattern readwrite own/%c/#` gets CONNACK 0x87 (Not
    authorized), then close; with a will on its own topic it is accepted."""
    a = tmp_path / "acl.txt"
    a.write_text("pattern readwrite own/%c/#\n")
    b = broker_factory(config="acl_file %s\nallow_anonymous true\n" % a, heap="128k")
    c = client(b)
    ack = c.connect5("wa", will=("other/w", b"bye", 0, False, []))
    assert (ack.present, ack.code) == (0, 0x87)
    assert c.closed(5)
    assert client(b).connect5("wa", will=("own/wa/w", b"bye", 0, False, [])).code == 0


def test_heap_below_reserve_gets_connack_0x88(broker_factory):
    """Section 3.2.2.2: when the free heap is below heap_reserve a new client is
    refused: a 3.1.1 one with CONNACK 3 (Server unavailable, as test_limits.py's heap test
    finds it), a v5 one with its equivalent CONNACK 0x88 (Server unavailable), then close.
    Here heap_reserve (1M) is above the whole heap, so that every CONNECT finds the heap
    below it, rather than filling the heap with clients."""
    b = broker_factory(config="heap_reserve 1M\n", heap=board_heap_on_64_bits())
    c = client(b)
    ack = c.connect5("low5")
    assert (ack.present, ack.code) == (0, 0x88)
    assert c.closed(5)
    r = b.raw()
    r.send(mqttraw.connect("low3"))
    assert r.expect(m.CONNACK).body == b"\x00\x03"
    assert r.closed(5)


# ------------------------------------------------------------------ ill-formed UTF-8

BAD_STRINGS = [
    (b"u/\xff", "0xFF byte"),
    (b"u/\xc3", "truncated sequence"),
    (b"u/\xc0\xaf", "overlong"),
    (b"u/\xed\xa0\x80", "surrogate U+D800"),
    (b"u/\x00x", "U+0000"),
]


@pytest.mark.parametrize("topic", [t for t, _ in BAD_STRINGS], ids=[i for _, i in BAD_STRINGS])
def test_ill_formed_topic_name_gets_disconnect_0x81(broker, topic):
    """MQTT-1.5.4-1 (a UTF-8 Encoded String must be well-formed: no surrogates, RFC 3629),
    MQTT-1.5.4-2 (no U+0000), MQTT-3.3.2-1 (the Topic Name is one): either is a Malformed
    Packet, answered with DISCONNECT 0x81 (Malformed Packet) then close (section 4.13)."""
    p = v5(broker, "ut")
    p.send(m.publish(topic, b"x", qos=1, pid=1))
    assert p.disconnected() == 0x81
    assert v5(broker, "after")


@pytest.mark.parametrize("flt", [t for t, _ in BAD_STRINGS], ids=[i for _, i in BAD_STRINGS])
def test_ill_formed_topic_filter_gets_disconnect_0x81(broker, flt):
    """MQTT-1.5.4-1/2 with MQTT-3.8.3-1 (a Topic Filter is a UTF-8 Encoded String): a
    SUBSCRIBE with an ill-formed one is a Malformed Packet: DISCONNECT 0x81, not a SUBACK
    0x8F, then close."""
    c = v5(broker, "uf")
    c.send(m.subscribe(1, (flt, 0)))
    assert c.disconnected() == 0x81
    assert v5(broker, "after")


@pytest.mark.parametrize("ct", [t[2:] for t, _ in BAD_STRINGS], ids=[i for _, i in BAD_STRINGS])
def test_ill_formed_content_type_gets_disconnect_0x81(broker, ct):
    """MQTT-1.5.4-1/2, section 3.3.2.3.9 (Content Type is a UTF-8 Encoded String): a PUBLISH
    whose Content Type is ill-formed is a Malformed Packet: DISCONNECT 0x81, then close."""
    p = v5(broker, "uc")
    p.send(m.publish("u/ct", b"x", properties=[(m.CONTENT_TYPE, ct)]))
    assert p.disconnected() == 0x81
    assert v5(broker, "after")


@pytest.mark.parametrize("cid", [t[2:] for t, _ in BAD_STRINGS], ids=[i for _, i in BAD_STRINGS])
def test_ill_formed_client_id_gets_connack_0x81(broker, cid):
    """MQTT-1.5.4-1/2 with MQTT-3.1.3-4 (the ClientID is a UTF-8 Encoded String) and
    MQTT-3.1.4-1: a CONNECT with an ill-formed one is a Malformed Packet; the server may say
    so with CONNACK 0x81 (section 3.1.4, 4.13; 0x85 is for a well-formed id it does not
    allow), Session Present 0, then close."""
    c = client(broker)
    ack = c.connect5(cid)
    assert (ack.present, ack.code) == (0, 0x81)
    assert c.closed()
    assert v5(broker, "after")
