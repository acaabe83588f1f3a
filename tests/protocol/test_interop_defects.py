"""Defects the interoperability runs found (docs/interop.md, "What fails"), each checked
through the network with raw packets (tests/support/mqttraw.py, mqttraw5.py): the message
after one dropped for the client's Maximum Packet Size, empty topic filters in UNSUBSCRIBE,
the CONNACK of MQTT 3.1, and the short form of MQTT 5 acknowledgements. Statement numbers
are the MQTT 5.0 standard's where the test is about level 5, 3.1.1's otherwise."""

import pytest

import mqttraw
import mqttraw5 as m
from mqttraw5 import broker5  # noqa: F401 (the `broker` fixture)
from mqttraw5 import connected as v5


def ping(c):
    """A PINGREQ answered: everything the server sent before the PINGRESP is returned (the
    server answers packets in order, so what it sends for earlier packets comes first)."""
    c.send(mqttraw.PINGREQ)
    got = []
    while True:
        p = c.recv_packet(5.0)
        assert p is not None, "the server closed the connection"
        if p.type == m.PINGRESP:
            return got
        got.append(p)


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_message_after_one_above_maximum_packet_size_arrives(broker, qos):
    """MQTT-3.1.2-25: a PUBLISH above the client's Maximum Packet Size (20 bytes here) is
    discarded as if it had been sent; the next one, small enough, is sent (Mosquitto's
    12-prop-maximum-packet-size-publish*: the client subscribes to what it publishes)."""
    c = v5(broker, "mps-self", properties=[(m.MAXIMUM_PACKET_SIZE, 20)])
    c.send(m.subscribe(1, ("t/x", qos)))
    assert c.next(m.SUBACK).codes == [qos]
    c.send(m.publish("t/x", b"12345678901234567890", qos=qos, pid=1))  # 29 bytes out
    got = ping(c)
    assert [p.type for p in got] == ([m.PUBACK] if qos == 1 else [m.PUBREC] if qos == 2 else [])
    if qos == 2:
        c.send(m.ack(m.PUBREL, 1))
        assert c.next(m.PUBCOMP).pid == 1
    c.send(m.publish("t/x", b"7890", qos=qos, pid=2))  # 13 bytes out, 15 with a packet id
    got = ping(c)
    pubs = [m.Publish(p) for p in got if p.type == m.PUBLISH]
    assert [(p.topic, p.payload, p.qos) for p in pubs] == [(b"t/x", b"7890", qos)]


@pytest.mark.parametrize("mps", [20, 21])
def test_maximum_packet_size_counts_the_whole_packet(broker, mps):
    """MQTT 5.0 section 3.1.2.11.4 (MQTT-3.1.2-24/25): the Maximum Packet Size bounds the
    whole packet, fixed header included. Mosquitto's 12-prop-maximum-packet-size-publish-qos1
    expects a 21-byte PUBLISH (topic test/topic, QoS 1, payload 7890) to reach a client whose
    Maximum Packet Size is 20: Mosquitto leaves the first byte out of its count
    (packet__check_oversize), which is why that script reported "the next one did not come".
    ubroker sends it from 21 on."""
    c = v5(broker, "mps-edge", properties=[(m.MAXIMUM_PACKET_SIZE, mps)])
    c.send(m.subscribe(1, ("test/topic", 1)))
    assert c.next(m.SUBACK).codes == [1]
    pkt = m.publish("test/topic", b"7890", qos=1, pid=2)
    assert len(pkt) == 21
    c.send(pkt)
    got = ping(c)
    assert [p.type for p in got if p.type == m.PUBACK] == [m.PUBACK]
    pubs = [m.Publish(p) for p in got if p.type == m.PUBLISH]
    assert [(p.payload, p.qos) for p in pubs] == ([(b"7890", 1)] if mps >= 21 else [])
    for p in pubs:
        c.send(m.ack(m.PUBACK, p.pid))
    assert ping(c) == []


def test_queued_message_above_maximum_packet_size_frees_its_window_slot(broker):
    """MQTT-3.1.2-25 and MQTT-3.3.4-9: messages queued for a session while its client was
    away are measured against the Maximum Packet Size of the connection that takes the
    session back. One too large for it is discarded as if it had been sent, so it does not
    keep the client's only in-flight slot (Receive Maximum 1) and the next message comes."""
    s = v5(broker, "mps-q", properties=[(m.SESSION_EXPIRY, 60)])
    s.send(m.subscribe(1, ("mq/#", 1)))
    assert s.next(m.SUBACK).codes == [1]
    s.send(m.disconnect(0))
    assert s.closed()
    p = v5(broker, "mps-qp")
    for i, payload in enumerate((b"x" * 200, b"small"), 1):
        p.send(m.publish("mq/t", payload, qos=1, pid=i))
        assert p.next(m.PUBACK).pid == i
    s = v5(broker, "mps-q", clean_start=False,
           properties=[(m.SESSION_EXPIRY, 60), (m.MAXIMUM_PACKET_SIZE, 100), (m.RECEIVE_MAXIMUM, 1)])
    g = s.next(m.PUBLISH)
    assert (g.payload, g.qos) == (b"small", 1)
    s.send(m.ack(m.PUBACK, g.pid))
    assert ping(s) == []


def test_in_flight_message_above_maximum_packet_size_is_not_resent(broker):
    """MQTT-3.1.2-25, MQTT-4.4.0-1: a message sent but not acknowledged before the client
    went away is resent (DUP) when it comes back, unless the new connection's Maximum Packet
    Size is too small for it: then it is discarded as if sent, and frees its slot for the
    next (Receive Maximum 1)."""
    s = v5(broker, "mps-r", properties=[(m.SESSION_EXPIRY, 60)])
    s.send(m.subscribe(1, ("mr/#", 1)))
    assert s.next(m.SUBACK).codes == [1]
    p = v5(broker, "mps-rp")
    p.send(m.publish("mr/t", b"x" * 200, qos=1, pid=1))
    assert p.next(m.PUBACK).pid == 1
    assert s.next(m.PUBLISH).payload == b"x" * 200  # not acknowledged
    s.send(m.disconnect(0))
    assert s.closed()
    p.send(m.publish("mr/t", b"small", qos=1, pid=2))
    assert p.next(m.PUBACK).pid == 2
    s = v5(broker, "mps-r", clean_start=False,
           properties=[(m.SESSION_EXPIRY, 60), (m.MAXIMUM_PACKET_SIZE, 100), (m.RECEIVE_MAXIMUM, 1)])
    g = s.next(m.PUBLISH)
    assert (g.payload, g.qos, g.dup) == (b"small", 1, False)
    s.send(m.ack(m.PUBACK, g.pid))
    assert ping(s) == []


# ------------------------------------------------------------------ empty topic filters

EMPTY_UNSUB5 = m.packet(0xA2, b"\x00\x01" + b"\x00" + b"\x00\x00")  # pid 1, no properties, ""
EMPTY_SUB5 = m.packet(0x82, b"\x00\x01" + b"\x00" + b"\x00\x00" + b"\x01")  # "" at QoS 1


@pytest.mark.parametrize("pkt", [EMPTY_UNSUB5, m.unsubscribe(1, "e/a", ""), EMPTY_SUB5],
                         ids=["unsubscribe", "unsubscribe-second-filter", "subscribe"])
def test_v5_empty_topic_filter_gets_disconnect_0x81(broker, pkt):
    """MQTT-4.7.3-1 (topic filters are at least one character long), MQTT 5.0 section 4.13:
    an UNSUBSCRIBE or SUBSCRIBE with an empty filter is answered with DISCONNECT 0x81
    (Malformed Packet) and the connection is closed; nothing of it is carried out, and the
    session's subscription made before stays (a v5 client sees it after reconnecting)."""
    c = v5(broker, "empty5", properties=[(m.SESSION_EXPIRY, 60)])
    c.send(m.subscribe(1, ("e/a", 0)))
    assert c.next(m.SUBACK).codes == [0]
    c.send(pkt)
    assert c.disconnected() == 0x81
    c = v5(broker, "empty5", clean_start=False, properties=[(m.SESSION_EXPIRY, 60)])
    c.send(m.publish("e/a", b"still"))
    assert m.Publish(c.expect(m.PUBLISH)).payload == b"still"


@pytest.mark.parametrize("pkt", [mqttraw.unsubscribe(1, ""), mqttraw.unsubscribe(1, "e/a", "")],
                         ids=["only", "second"])
def test_311_unsubscribe_with_an_empty_topic_filter_closes(broker, pkt):
    """MQTT-4.7.3-1, MQTT-4.8.0-1: 3.1.1 has no way to refuse one filter of an UNSUBSCRIBE, so
    an empty filter closes the connection, as it does in SUBSCRIBE; no UNSUBACK is sent."""
    c = mqttraw.RawClient(broker.port)
    broker._clients.append(c)
    assert c.connect("empty311") == (0, 0)
    c.send(pkt)
    p = c.recv_packet(5.0)
    assert p is None, "expected the connection closed, got %r" % p
    c = mqttraw.RawClient(broker.port)
    broker._clients.append(c)
    assert c.connect("after") == (0, 0)


def test_311_subscribe_with_an_empty_topic_filter_closes(broker):
    """MQTT-4.7.3-1, MQTT-4.8.0-1: the SUBSCRIBE counterpart (already so before)."""
    c = mqttraw.RawClient(broker.port)
    broker._clients.append(c)
    assert c.connect("empty311s") == (0, 0)
    c.send(mqttraw.subscribe(1, ("", 0)))
    assert c.recv_packet(5.0) is None


# ------------------------------------------------------------------ MQTT 3.1's CONNACK


def raw_connack(broker, proto, level, cid):
    """The CONNACK's bytes for a CONNECT with CleanSession 0 (its session kept)."""
    c = mqttraw.RawClient(broker.port)
    broker._clients.append(c)
    c.send(mqttraw.connect(cid, clean=False, proto=proto, level=level))
    p = c.expect(2)
    return c, bytes((p.b0, len(p.body))) + p.body


def test_mqtt31_connack_has_no_session_present_flag(broker):
    """MQTT 3.1 (protocol name MQIsdp, level 3) has no Session Present flag: its CONNACK's
    variable header is a reserved byte 0 and the return code, so a resumed session still
    gets 20 02 00 00 (3.1.1 sets the flag, MQTT-3.2.2-2, below). The session is resumed all
    the same: a QoS 1 message queued while the client was away is delivered."""
    c, connack = raw_connack(broker, b"MQIsdp", 3, "old31")
    assert connack == b"\x20\x02\x00\x00"
    c.send(mqttraw.subscribe(1, ("o31/t", 1)))
    c.expect(9)
    c.send(mqttraw.DISCONNECT)
    assert c.closed()
    p = broker.raw()
    p.connect("o31-pub")
    p.send(mqttraw.publish("o31/t", b"kept", qos=1, pid=1))
    p.expect(4)
    c, connack = raw_connack(broker, b"MQIsdp", 3, "old31")
    assert connack == b"\x20\x02\x00\x00"
    g = c.expect(3)
    assert (g.topic, g.payload, g.qos) == (b"o31/t", b"kept", 1)


def _dup(pkt):
    """The same packet with the DUP bit (0x08) of its first byte set."""
    return bytes((pkt[0] | 0x08,)) + pkt[1:]


def test_mqtt31_client_may_set_dup_on_pubrel_subscribe_unsubscribe(broker):
    """MQTT 3.1 (level 3) sets the DUP flag when it sends a PUBREL, SUBSCRIBE or UNSUBSCRIBE
    again (MQTT V3.1, section 2.1, DUP: "set when the client or server attempts to
    re-deliver a PUBLISH, PUBREL, SUBSCRIBE or UNSUBSCRIBE message"); 3.1.1 fixed those flags
    at 0010, so only a 3.1 client may. Mosquitto's 03-publish-c2b-disconnect-qos2 resends a
    PUBREL so after a reconnect: it gets its PUBCOMP, and the exchange is done once."""
    c, connack = raw_connack(broker, b"MQIsdp", 3, "dup31")
    assert connack == b"\x20\x02\x00\x00"
    c.send(_dup(mqttraw.subscribe(1, ("d31/t", 2))))
    assert c.expect(9).pid == 1
    p, _ = raw_connack(broker, b"MQIsdp", 3, "d31-pub")
    p.send(mqttraw.publish("d31/t", b"x", qos=2, pid=7))
    p.expect(5)
    p.send(_dup(mqttraw.pubrel(7)))
    assert p.expect(7).pid == 7
    assert c.expect(3).payload == b"x"
    c.send(_dup(mqttraw.unsubscribe(2, "d31/t")))
    assert c.expect(11).pid == 2
    p.send(mqttraw.publish("d31/t", b"y", qos=2, pid=8))
    p.expect(5)
    p.send(_dup(mqttraw.pubrel(8)))
    assert p.expect(7).pid == 8  # only once delivered, as before; and nothing to c now
    assert ping(c) == []


@pytest.mark.parametrize("pkt", [mqttraw.pubrel(1), mqttraw.subscribe(1, ("d/t", 0)), mqttraw.unsubscribe(1, "d/t")],
                         ids=["pubrel", "subscribe", "unsubscribe"])
def test_mqtt311_client_setting_dup_there_is_closed(broker, pkt):
    """MQTT-2.2.2-2 (3.1.1): PUBREL, SUBSCRIBE and UNSUBSCRIBE carry the flags 0010; any other
    value is a malformed packet and the connection is closed. The 3.1 leniency above is
    for 3.1 clients only."""
    c = broker.raw()
    c.connect("dup311")
    c.send(_dup(pkt))
    assert c.closed()


def test_mqtt311_connack_says_session_present(broker):
    """MQTT-3.2.2-2: the 3.1.1 counterpart, Session Present 1 for a resumed session."""
    c, connack = raw_connack(broker, b"MQTT", 4, "new311")
    assert connack == b"\x20\x02\x00\x00"
    c.send(mqttraw.DISCONNECT)
    assert c.closed()
    c, connack = raw_connack(broker, b"MQTT", 4, "new311")
    assert connack == b"\x20\x02\x01\x00"


# ------------------------------------------------------------------ short acknowledgements


def raw_next(c, ptype):
    """The next packet's whole bytes (fixed header included); it must be of ptype."""
    p = c.expect(ptype)
    assert len(p.body) < 128
    return bytes((p.b0, len(p.body))) + p.body


def short_ack_exchange(b):
    """A v5 subscriber and a v5 publisher through QoS 1 and 2: every PUBACK, PUBREC, PUBREL
    and PUBCOMP the server sends, as bytes."""
    s = v5(b, "short-sub")
    s.send(m.subscribe(1, ("sa/#", 2)))
    assert s.next(m.SUBACK).codes == [2]
    p = v5(b, "short-pub")
    got = {}
    p.send(m.publish("sa/1", b"one", qos=1, pid=1))
    got["PUBACK"] = raw_next(p, m.PUBACK)
    g = s.next(m.PUBLISH)
    s.send(m.ack(m.PUBACK, g.pid))
    p.send(m.publish("sa/2", b"two", qos=2, pid=2))
    got["PUBREC"] = raw_next(p, m.PUBREC)
    p.send(m.publish("sa/2", b"two", qos=2, pid=2, dup=True))  # resent before its PUBREL
    got["PUBREC again"] = raw_next(p, m.PUBREC)
    p.send(m.ack(m.PUBREL, 2))
    got["PUBCOMP"] = raw_next(p, m.PUBCOMP)
    g = s.next(m.PUBLISH)
    s.send(m.ack(m.PUBREC, g.pid))
    got["PUBREL"] = raw_next(s, m.PUBREL)
    s.send(m.ack(m.PUBCOMP, g.pid))
    assert ping(s) == [] and ping(p) == []
    return got, g.pid


SHORT = {"PUBACK": b"\x40\x02\x00\x01", "PUBREC": b"\x50\x02\x00\x02", "PUBREC again": b"\x50\x02\x00\x02",
         "PUBCOMP": b"\x70\x02\x00\x02"}


def test_v5_acknowledgements_with_reason_code_0_are_short(broker):
    """MQTT 5.0 sections 3.4.2.1, 3.5.2.1, 3.6.2.1, 3.7.2.1: the reason code 0x00 (Success)
    with no properties is left out (remaining length 2), as Mosquitto sends them and
    Mosquitto's tests compare them: PUBACK, PUBREC (also for a resent QoS 2 PUBLISH), PUBCOMP
    to a publisher, PUBREL to a subscriber."""
    got, pid = short_ack_exchange(broker)
    assert got == dict(SHORT, PUBREL=b"\x62\x02" + bytes((pid >> 8, pid & 0xFF)))


def test_v5_acknowledgements_with_reason_code_0_are_short_with_the_store(broker_factory, tmp_path):
    """The same with the durable store on (acknowledgements wait for it, store_persist.py)."""
    b = broker_factory(data=tmp_path / "data", heap="160k")
    got, pid = short_ack_exchange(b)
    assert got == dict(SHORT, PUBREL=b"\x62\x02" + bytes((pid >> 8, pid & 0xFF)))
