"""MQTT 5.0 Reason String (0x1F) on what the server sends when it refuses or fails something,
through the network with raw clients (tests/support/mqttraw5.py). Off by default, as Mosquitto
sends none; with `reason_strings true`: CONNACK refusals, PUBACK,
PUBREC, SUBACK, UNSUBACK and DISCONNECT carry one; success never does; with Request
Problem Information 0 only CONNACK and DISCONNECT may (MQTT-3.1.2-29); never when it would take
the packet over the client's Maximum Packet Size (MQTT-3.2.2-19, 3.4.2-2, 3.5.2-2, 3.7.2-2,
3.9.2-1, 3.11.2-1, 3.14.2-3)."""

import pytest

import mqttraw
import mqttraw5 as m
from mqttraw5 import PROFILES, connected, prop

QUIET = [(m.REQUEST_PROBLEM, 0)]


@pytest.fixture(params=sorted(PROFILES))
def broker(request, broker_factory):
    """The smallest board's profile (with and without pooled output buffers), with
    `reason_strings true`."""
    config, heap = PROFILES[request.param]
    return broker_factory(config=(config or "") + "reason_strings true\n", heap=heap)


def test_no_reason_strings_by_default(broker_factory):
    """Without `reason_strings` the refusals carry their reason codes alone (a Reason String
    is a MAY, section 3.4.2.2.2), as Mosquitto sends them: PUBACK 0x87, SUBACK 0x8F, CONNACK
    0x85 and DISCONNECT 0x94 without properties."""
    config, heap = PROFILES["esp32"]
    b = broker_factory(config=config, heap=heap)
    c = connected(b, "rs-none")
    c.send(m.publish("$oops", b"x", qos=1, pid=1))
    assert code_props(c.next(m.PUBACK)) == (0x87, [])
    c.send(m.subscribe(2, ("rs/#/b", 0)))
    assert codes_props(c.next(m.SUBACK)) == ([0x8F], [])
    c.send(m.publish("rs/t", b"x", properties=[(m.TOPIC_ALIAS, 9)]))
    assert code_props(m.Ack(c.expect(m.DISCONNECT))) == (0x94, [])
    r = m.Client5(b.port)
    b._clients.append(r)
    ack = r.connect5("x" * 65)
    assert (ack.code, ack.props) == (0x85, [])


def size(raw):
    """The whole packet's size, as Maximum Packet Size counts it."""
    return 1 + len(mqttraw.varint(len(raw.body))) + len(raw.body)


def code_props(a):
    return a.code, a.props


def codes_props(a):
    return a.codes, a.props


def test_puback_and_pubrec_refusals_say_why(broker):
    """MQTT-3.4.2-2, 3.5.2-2 (section 3.4.2.2.2): PUBACK and PUBREC 0x87 for a `$` topic and
    0x99 for a payload that is not UTF-8 carry a Reason String; a PUBACK 0x00 or 0x10 (no
    matching subscribers: not a failure) carries none."""
    c = connected(broker, "rs-pub")
    c.send(m.subscribe(1, ("rs/ok", 1)))
    c.next(m.SUBACK)
    c.send(m.publish("$oops", b"x", qos=1, pid=1))
    a = c.next(m.PUBACK)
    assert (a.code, prop(a.props, m.REASON_STRING)) == (0x87, b"not authorized")
    c.send(m.publish("$oops", b"x", qos=2, pid=2))
    a = c.next(m.PUBREC)
    assert (a.code, prop(a.props, m.REASON_STRING)) == (0x87, b"not authorized")
    c.send(m.publish("rs/t", b"\xff", qos=1, pid=3, properties=[(m.PAYLOAD_FORMAT, 1)]))
    a = c.next(m.PUBACK)
    assert (a.code, prop(a.props, m.REASON_STRING)) == (0x99, b"payload not UTF-8")
    c.send(m.publish("rs/nobody", b"x", qos=1, pid=4))
    a = c.next(m.PUBACK)
    assert (a.code, a.props) == (0x10, [])
    c.send(m.publish("rs/ok", b"x", qos=1, pid=5))
    a = c.next(m.PUBACK)
    assert (a.code, a.props) == (0, [])


def test_suback_and_unsuback_failures_say_why(broker):
    """MQTT-3.9.2-1, 3.11.2-1: a SUBACK with a refused filter and an UNSUBACK with an invalid
    one carry a Reason String (the highest code's); a SUBACK that grants all carries none."""
    c = connected(broker, "rs-sub")
    c.send(m.subscribe(1, ("rs/a", 1), ("rs/#/b", 0)))
    a = c.next(m.SUBACK)
    assert (a.codes, prop(a.props, m.REASON_STRING)) == ([1, 0x8F], b"topic filter invalid")
    c.send(m.subscribe(2, ("rs/b", 0)))
    a = c.next(m.SUBACK)
    assert (a.codes, a.props) == ([0], [])
    c.send(m.unsubscribe(3, "rs/a", "rs/#/b"))
    a = c.next(m.UNSUBACK)
    assert (a.codes, prop(a.props, m.REASON_STRING)) == ([0, 0x8F], b"topic filter invalid")


def test_request_problem_information_0_keeps_acknowledgements_plain(broker):
    """MQTT-3.1.2-29: with Request Problem Information 0 no Reason String on PUBACK, PUBREC,
    SUBACK or UNSUBACK; the reason codes are the same."""
    c = connected(broker, "rs-quiet", properties=QUIET)
    c.send(m.publish("$oops", b"x", qos=1, pid=1))
    assert code_props(c.next(m.PUBACK)) == (0x87, [])
    c.send(m.publish("$oops", b"x", qos=2, pid=2))
    assert code_props(c.next(m.PUBREC)) == (0x87, [])
    c.send(m.subscribe(1, ("rs/#/b", 0)))
    assert codes_props(c.next(m.SUBACK)) == ([0x8F], [])
    c.send(m.unsubscribe(2, "rs/#/b"))
    assert codes_props(c.next(m.UNSUBACK)) == ([0x8F], [])


def test_disconnect_says_why_also_with_request_problem_information_0(broker):
    """MQTT-3.1.2-29 allows a Reason String on DISCONNECT whatever the client asked; the
    server's DISCONNECT 0x94 for a Topic Alias above its maximum carries one."""
    for cid, props in (("rs-d1", []), ("rs-d0", QUIET)):
        c = connected(broker, cid, properties=props)
        c.send(m.publish("rs/t", b"x", properties=[(m.TOPIC_ALIAS, 9)]))
        raw = c.recv_packet(5)
        d = m.Ack(raw)
        assert (d.type, d.code) == (m.DISCONNECT, 0x94)
        assert b"topic alias 9" in prop(d.props, m.REASON_STRING)
        assert c.closed()


def test_session_takeover_disconnect_says_why(broker):
    """MQTT-3.1.4-3 with section 3.14.2.2.3: the DISCONNECT 0x8E a v5 client gets when another
    takes its session over says so."""
    old = connected(broker, "rs-take")
    connected(broker, "rs-take")
    d = m.Ack(old.recv_packet(5))
    assert (d.type, d.code, prop(d.props, m.REASON_STRING)) == (m.DISCONNECT, 0x8E, b"taken over by a new connection")


def test_keep_alive_timeout_disconnect_says_why(broker):
    """Section 3.14.2.2.3 (MQTT-3.1.2-29 allows it on DISCONNECT whatever the client asked):
    the DISCONNECT 0x8D a v5 client gets after one and a half Keep Alive periods of silence
    (MQTT-3.1.2-22) says so, also with Request Problem Information 0."""
    for cid, props in (("rs-ka1", []), ("rs-ka0", QUIET)):
        c = connected(broker, cid, keepalive=1, properties=props)
        d = m.Ack(c.recv_packet(6))
        assert (d.type, d.code, prop(d.props, m.REASON_STRING)) == (m.DISCONNECT, 0x8D, b"keepalive expired")
        assert c.closed()


def test_malformed_packet_disconnect_says_why(broker):
    """Section 4.13: a packet the server cannot read at all (here a remaining length of five
    bytes, MQTT-1.5.5-1's four at most) gets DISCONNECT 0x81 with a Reason String, then the
    close."""
    c = connected(broker, "rs-malformed")
    c.send(b"\x30\xff\xff\xff\xff\x01")
    d = m.Ack(c.recv_packet(5))
    assert (d.type, d.code) == (m.DISCONNECT, 0x81)
    assert prop(d.props, m.REASON_STRING).startswith(b"protocol error: ")
    assert c.closed()


@pytest.mark.parametrize("props", [[], QUIET], ids=["default", "request-problem-0"])
def test_connack_refusal_says_why(broker, props):
    """Section 3.2.2.3.9 (MQTT-3.1.2-29 allows it on CONNACK whatever the client asked): a
    client id above max_client_id_length gets CONNACK 0x85 with a Reason String, then the
    close."""
    c = m.Client5(broker.port)
    broker._clients.append(c)
    ack = c.connect5("x" * 65, properties=props)
    assert (ack.code, prop(ack.props, m.REASON_STRING)) == (0x85, b"client id not valid")
    assert c.closed()


def test_connack_refusal_of_an_unreadable_connect_has_no_reason_string(broker):
    """MQTT-3.2.2-19: when the CONNECT's properties could not be read, its Maximum Packet Size
    is not known, so the refusal (0x82, a property twice) goes without a Reason String."""
    c = m.Client5(broker.port)
    broker._clients.append(c)
    ack = c.connect5("rs-dup", properties=[(m.MAXIMUM_PACKET_SIZE, 6), (m.MAXIMUM_PACKET_SIZE, 6)])
    assert (ack.code, ack.props) == (0x82, [])


def test_reason_strings_stay_within_the_maximum_packet_size(broker):
    """MQTT-3.2.2-19, 3.4.2-2, 3.9.2-1, 3.14.2-3: a client whose Maximum Packet Size
    (12 bytes) leaves no room for the words gets the same reason codes without them, each
    packet within the size."""
    c = m.Client5(broker.port)
    broker._clients.append(c)
    ack = c.connect5("x" * 65, properties=[(m.MAXIMUM_PACKET_SIZE, 12)])
    assert (ack.code, ack.props) == (0x85, [])
    c = connected(broker, "rs-small", properties=[(m.MAXIMUM_PACKET_SIZE, 12)])
    c.send(m.publish("$oops", b"x", qos=1, pid=1))
    raw = c.expect(m.PUBACK)
    assert (m.Ack(raw).code, m.Ack(raw).props, size(raw) <= 12) == (0x87, [], True)
    c.send(m.subscribe(1, ("rs/#/b", 0)))
    raw = c.expect(m.SUBACK)
    assert (m.Ack(raw).codes, m.Ack(raw).props, size(raw) <= 12) == ([0x8F], [], True)
    c.send(m.publish("rs/t", b"x", properties=[(m.TOPIC_ALIAS, 9)]))
    raw = c.expect(m.DISCONNECT)
    assert (m.Ack(raw).code, m.Ack(raw).props, size(raw) <= 12) == (0x94, [], True)
