"""A client that publishes QoS 1/2 to a topic it is itself subscribed to gets the
acknowledgement of its PUBLISH before its own copy of the message. MQTT 3.1.1 allows either
order (MQTT-4.6.0-2..4 order a client's own PUBLISHes, not the broker's answers against
deliveries), but Mosquitto sends the acknowledgement first and clients and test suites
written against it expect it (Mosquitto's broker tests 02-subpub-qos1 and 02-subpub-qos2
read the PUBACK/PUBREC as the very next packet). Without the durable store only: with it,
the acknowledgement waits for the flash (never acknowledge what may be lost)."""

from mqttraw import publish, pubrec, pubrel, puback, subscribe


def test_qos1_puback_comes_before_the_publishers_own_copy(broker):
    """MQTT-4.3.2-2 (PUBACK for the QoS 1 PUBLISH), then the copy at QoS 1 (MQTT-3.8.4-6)."""
    c = broker.raw()
    assert c.connect("ack-order-1") == (0, 0)
    c.send(subscribe(530, ("subpub/qos1", 1)))
    c.expect(9)
    c.send(publish("subpub/qos1", b"message", qos=1, pid=300))
    first = c.recv_packet(5)
    assert first is not None and first.type == 4 and first.pid == 300, first
    copy = c.recv_packet(5)
    assert copy is not None and copy.type == 3 and copy.qos == 1 and copy.payload == b"message", copy
    c.send(puback(copy.pid))


def test_qos2_pubrec_comes_before_the_copy_and_the_flow_completes(broker):
    """MQTT-4.3.3-2: PUBREC as the next packet; after PUBREL, PUBCOMP and the copy (in either
    order), and the copy's own QoS 2 flow completes."""
    c = broker.raw()
    assert c.connect("ack-order-2") == (0, 0)
    c.send(subscribe(530, ("subpub/qos2", 2)))
    c.expect(9)
    c.send(publish("subpub/qos2", b"message", qos=2, pid=301))
    first = c.recv_packet(5)
    assert first is not None and first.type == 5 and first.pid == 301, first
    c.send(pubrel(301))
    got = {}
    while len(got) < 2:
        p = c.recv_packet(5)
        assert p is not None, got
        got[p.type] = p
    assert got[7].pid == 301
    copy = got[3]
    assert copy.qos == 2 and copy.payload == b"message"
    c.send(pubrec(copy.pid))
    rel = c.recv_packet(5)
    assert rel is not None and rel.type == 6 and rel.pid == copy.pid


def test_a_burst_of_self_published_messages_keeps_every_ack_ahead_of_its_copy(broker):
    """20 QoS 1 messages sent in one write: each PUBACK arrives before the copy of the same
    message, and the copies come in the order published (MQTT-4.6.0-2)."""
    n = 20
    c = broker.raw()
    assert c.connect("ack-order-3") == (0, 0)
    c.send(subscribe(1, ("subpub/burst", 1)))
    c.expect(9)
    c.send(b"".join(publish("subpub/burst", b"m%d" % i, qos=1, pid=i + 1) for i in range(n)))
    acked, copies = [], []
    while len(acked) < n or len(copies) < n:
        p = c.recv_packet(5)
        assert p is not None, (acked, copies)
        if p.type == 4:
            acked.append(p.pid)
        elif p.type == 3:
            i = int(p.payload[1:])
            assert i + 1 in acked, "copy of message %d came before its PUBACK" % i
            copies.append(i)
            c.send(puback(p.pid))
    assert copies == list(range(n))
