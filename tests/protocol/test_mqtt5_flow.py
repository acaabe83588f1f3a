"""MQTT 5.0 flow control towards a client through the network: the client's Receive Maximum
with QoS 2 (a slot is freed by PUBCOMP, not by PUBREC), and its Maximum Packet Size (a
message too large for one subscriber is dropped for that subscriber only). Statement numbers
are the MQTT 5.0 standard's (OASIS, 2019). Raw clients (tests/support/mqttraw5.py) check the
bytes."""

import socket

import pytest

import mqttraw
import mqttraw5 as m
from mqttraw5 import broker5  # noqa: F401 (the `broker` fixture)
from mqttraw5 import MARK, until_mark
from mqttraw5 import connected as v5


def _raw(c, ptype):
    """The next packet, of type ptype, as its bytes on the wire."""
    p = c.expect(ptype)
    return bytes((p.b0,)) + mqttraw.varint(len(p.body)) + bytes(p.body)


def publish_qos2(p, topic, payload, pid):
    """A whole QoS 2 exchange from the publisher: PUBREC 0, PUBREL, PUBCOMP 0."""
    p.send(m.publish(topic, payload, qos=2, pid=pid))
    a = p.next(m.PUBREC)
    assert (a.pid, a.code) == (pid, 0)
    p.send(m.ack(m.PUBREL, pid))
    a = p.next(m.PUBCOMP)
    assert (a.pid, a.code) == (pid, 0)


def test_receive_maximum_of_the_client_with_qos2_is_freed_by_pubcomp(broker):
    """MQTT-3.3.4-9: the server sends no more QoS 1/2 PUBLISHes not yet acknowledged than
    the client's Receive Maximum (1 here), where a QoS 2 one stays unacknowledged until
    PUBCOMP (or a PUBREC of 0x80 or more, section 4.9). The subscriber gets the first
    PUBLISH (QoS 2), sends PUBREC 0, gets PUBREL (short form, flags 0010: MQTT-3.6.1-1) and
    not the second PUBLISH (nothing within 0.5 s); after its PUBCOMP the second comes."""
    s = v5(broker, "rm2", properties=[(m.RECEIVE_MAXIMUM, 1)])
    s.send(m.subscribe(1, ("rm2/#", 2)))
    assert s.next(m.SUBACK).codes == [2]
    p = v5(broker, "prm2")
    publish_qos2(p, "rm2/t", b"first", 1)
    publish_qos2(p, "rm2/t", b"second", 2)
    first = s.next(m.PUBLISH)
    assert (first.topic, first.payload, first.qos, first.dup) == (b"rm2/t", b"first", 2, False)
    with pytest.raises(socket.timeout):
        s.recv_packet(0.5)  # the window (1) is full: no second PUBLISH before the PUBREC either
    s.send(m.ack(m.PUBREC, first.pid))
    assert _raw(s, m.PUBREL) == bytes((0x62, 2, first.pid >> 8, first.pid & 0xFF))
    with pytest.raises(socket.timeout):
        s.recv_packet(0.5)  # still in flight until PUBCOMP
    s.send(m.ack(m.PUBCOMP, first.pid))
    second = s.next(m.PUBLISH)
    assert (second.topic, second.payload, second.qos) == (b"rm2/t", b"second", 2)
    s.send(m.ack(m.PUBREC, second.pid))
    assert _raw(s, m.PUBREL) == bytes((0x62, 2, second.pid >> 8, second.pid & 0xFF))
    s.send(m.ack(m.PUBCOMP, second.pid))
    s.send(mqttraw.PINGREQ)
    assert _raw(s, m.PINGRESP) == b"\xd0\x00"  # nothing else was sent


@pytest.mark.parametrize("qos", [0, 1])
def test_message_above_a_clients_maximum_packet_size_is_dropped_for_that_client_only(broker, qos):
    """MQTT-3.1.2-24 (the server must not send a packet above the client's Maximum Packet
    Size) and MQTT-3.1.2-25 (such a message is discarded, as if sent, for that client only),
    section 3.1.2.11.4: two v5 subscribers to mps/t, one with Maximum Packet Size 64 and one
    without; a publisher sends a 200-byte payload then a small one. The limited subscriber
    gets only the small one, every packet it gets within 64 bytes; the other gets both, in
    order."""
    small = v5(broker, "mps-small", properties=[(m.MAXIMUM_PACKET_SIZE, 64)])
    big = v5(broker, "mps-big")
    for c in (small, big):
        c.send(m.subscribe(1, ("mps/t", qos), (MARK, 0)))
        assert c.next(m.SUBACK).codes == [qos, 0]
    p = v5(broker, "mps-pub")
    for pid, payload in ((1, b"B" * 200), (2, b"s" * 8)):
        p.send(m.publish("mps/t", payload, qos=qos, pid=pid))
        if qos:
            a = p.next(m.PUBACK)
            assert (a.pid, a.code) == (pid, 0)
    p.send(m.publish(MARK, b"."))
    got_big = until_mark(big)
    assert [(g.topic, g.payload, g.qos) for g in got_big] == [(b"mps/t", b"B" * 200, qos), (b"mps/t", b"s" * 8, qos)]
    sizes = []
    got_small = []
    while True:
        raw = small.expect(m.PUBLISH)
        sizes.append(1 + len(mqttraw.varint(len(raw.body))) + len(raw.body))
        g = m.Publish(raw)
        if g.topic == MARK.encode():
            break
        got_small.append(g)
        if g.qos == 1:
            small.send(m.ack(m.PUBACK, g.pid))
    assert [(g.topic, g.payload, g.qos) for g in got_small] == [(b"mps/t", b"s" * 8, qos)]
    assert max(sizes) <= 64, sizes
    small.send(mqttraw.PINGREQ)
    assert _raw(small, m.PINGRESP) == b"\xd0\x00"  # the limited client is still served
