"""Backpressure must not deadlock a client that subscribes to what it publishes: while its
PUBLISH waits for room in its own queue, the broker still takes the PUBACKs behind it."""

from mqttraw import puback, publish, subscribe


def test_self_subscriber_burst_beyond_window_and_queue_completes(broker):
    """esp32 profile: 8 in flight + 32 queued; 60 QoS 1 messages sent in one burst to a topic
    the sender subscribes to. Every message is acknowledged (MQTT-4.3.2-2), delivered once,
    in order (MQTT-4.6.0-2), and nothing stalls."""
    n = 60
    c = broker.raw()
    assert c.connect("self-sub") == (0, 0)
    c.send(subscribe(1, ("self/t", 1)))
    c.expect(9)
    c.send(b"".join(publish("self/t", b"m%d" % i, qos=1, pid=i + 1) for i in range(n)))
    acks, got = set(), []
    while len(acks) < n or len(got) < n:
        p = c.recv_packet(10)
        assert p is not None, "connection closed after %d acks, %d messages" % (len(acks), len(got))
        if p.type == 4:
            acks.add(p.pid)
        elif p.type == 3:
            got.append(p.payload)
            c.send(puback(p.pid))
    assert acks == set(range(1, n + 1))
    assert got == [b"m%d" % i for i in range(n)]
