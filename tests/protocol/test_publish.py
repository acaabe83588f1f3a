"""PUBLISH through the network: the acknowledgement flows at QoS 0, 1 and 2 in both
directions, exactly-once at QoS 2, ordering per topic, the RETAIN flag on live delivery, and
the malformed PUBLISH packets that must close the connection.

Clients are raw sockets (tests/support/mqttraw.py) so that every flag and packet id on the wire can be
checked. A test that must show a message was NOT delivered publishes a marker afterwards, on
the same connection, and checks what the subscriber got before the marker."""

import socket

import mqttraw as m
from marker import MARK, connected, until_marker
from conftest import wait_for

PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK = 3, 4, 5, 6, 7, 9


# ----------------------------------------------------------------------------- helpers


def subscriber(broker, cid, *filters):
    """A raw client subscribed to (filter, qos) pairs and to the marker topic at QoS 0.
    Returns (client, granted codes for `filters`)."""
    c = connected(broker, cid)
    c.send(m.subscribe(1, *(filters + ((MARK.decode(), 0),))))
    p = c.expect(SUBACK)
    assert p.pid == 1
    return c, list(p.body[2:-1])


def publish(c, topic, payload, qos=0, pid=1, retain=False, dup=False):
    """Publish from raw client c and run the whole acknowledgement flow of its QoS."""
    c.send(m.publish(topic, payload, qos=qos, retain=retain, dup=dup, pid=pid))
    if qos == 1:
        assert c.expect(PUBACK).pid == pid
    elif qos == 2:
        assert c.expect(PUBREC).pid == pid
        c.send(m.pubrel(pid))
        assert c.expect(PUBCOMP).pid == pid


def nothing_within(c, seconds):
    """True when no packet arrives on c for `seconds`."""
    try:
        p = c.recv_packet(seconds)
    except socket.timeout:
        return True
    return False if p is not None else True


def assert_still_serving(broker):
    """Another client can still connect and get an answer to PINGREQ."""
    c = connected(broker, "still-serving")
    c.send(m.PINGREQ)
    c.expect(13)
    c.close()


# ------------------------------------------------------------------ publisher -> broker


def test_qos0_publish_is_not_acknowledged_and_is_delivered_with_qos0_dup0(broker):
    """QoS 0 has no acknowledgement; outbound QoS 0 has DUP=0 (MQTT-4.3.1-1)."""
    sub, granted = subscriber(broker, "s", ("q0/t", 2))
    assert granted == [2]
    pub = connected(broker, "p")
    pub.send(m.publish("q0/t", b"hello", qos=0))
    pub.send(m.PINGREQ)
    # The first thing back to the publisher is the PINGRESP: no PUBACK/PUBREC for QoS 0.
    assert pub.expect(13).type == 13
    p = sub.expect(PUBLISH)
    assert (p.topic, p.payload, p.qos, p.dup, p.retain) == (b"q0/t", b"hello", 0, False, False)
    # A QoS 0 PUBLISH carries no packet id: the body is exactly topic + payload.
    assert p.body == b"\x00\x04q0/thello"


def test_qos1_publish_gets_puback_with_its_packet_id(broker):
    """The receiver of a QoS 1 PUBLISH responds with a PUBACK with the same packet id
    (MQTT-4.3.2-2, MQTT-3.3.4-1)."""
    pub = connected(broker, "p")
    for pid in (1, 2, 0x1234, 0x8000, 65535):
        pub.send(m.publish("q1/t", b"x", qos=1, pid=pid))
        p = pub.expect(PUBACK)
        assert p.b0 == 0x40 and p.body == bytes((pid >> 8, pid & 0xFF))


def test_qos2_publish_gets_pubrec_and_pubrel_gets_pubcomp(broker):
    """QoS 2 receiver: PUBREC with the packet id, then PUBCOMP for the PUBREL
    (MQTT-4.3.3-2, MQTT-3.5.4-1, MQTT-3.6.4-1)."""
    pub = connected(broker, "p")
    for pid in (1, 0x0102, 65535):
        pub.send(m.publish("q2/t", b"x", qos=2, pid=pid))
        p = pub.expect(PUBREC)
        assert p.b0 == 0x50 and p.pid == pid and len(p.body) == 2
        pub.send(m.pubrel(pid))
        p = pub.expect(PUBCOMP)
        assert p.b0 == 0x70 and p.pid == pid and len(p.body) == 2


def test_pubrel_is_always_answered_with_pubcomp(broker):
    """A PUBREL, even for a packet id the broker holds nothing for, or a second PUBREL for
    the same id, gets a PUBCOMP with the same id (MQTT-3.6.4-1, MQTT-4.3.3-2)."""
    pub = connected(broker, "p")
    pub.send(m.pubrel(77))
    assert pub.expect(PUBCOMP).pid == 77
    pub.send(m.publish("q2/t", b"x", qos=2, pid=5))
    assert pub.expect(PUBREC).pid == 5
    pub.send(m.pubrel(5))
    assert pub.expect(PUBCOMP).pid == 5
    pub.send(m.pubrel(5))
    assert pub.expect(PUBCOMP).pid == 5


# ------------------------------------------------------------------ broker -> subscriber


def _deliveries_for_granted(broker, granted):
    sub, codes = subscriber(broker, "s%d" % granted, ("g/t", granted))
    assert codes == [granted]
    pub = connected(broker, "p")
    for q in (0, 1, 2):
        publish(pub, "g/t", b"m%d" % q, qos=q, pid=10 + q)
    publish(pub, MARK.decode(), b"")
    return until_marker(sub)


def test_delivered_qos_is_min_of_published_and_granted_granted0(broker):
    """Delivered QoS = min(published QoS, granted QoS) (MQTT-3.8.4-6)."""
    got = _deliveries_for_granted(broker, 0)
    assert [(p.payload, p.qos) for p in got] == [(b"m0", 0), (b"m1", 0), (b"m2", 0)]


def test_delivered_qos_is_min_of_published_and_granted_granted1(broker):
    """Delivered QoS = min(published QoS, granted QoS) (MQTT-3.8.4-6); outbound packet ids
    at QoS > 0 are nonzero (MQTT-2.3.1-1)."""
    got = _deliveries_for_granted(broker, 1)
    assert [(p.payload, p.qos) for p in got] == [(b"m0", 0), (b"m1", 1), (b"m2", 1)]
    assert all(p.pid != 0 for p in got if p.qos)


def test_delivered_qos_is_min_of_published_and_granted_granted2(broker):
    """Delivered QoS = min(published QoS, granted QoS) (MQTT-3.8.4-6); outbound packet ids
    at QoS > 0 are nonzero (MQTT-2.3.1-1), DUP=0 on a first delivery (MQTT-3.3.1-1)."""
    got = _deliveries_for_granted(broker, 2)
    assert [(p.payload, p.qos) for p in got] == [(b"m0", 0), (b"m1", 1), (b"m2", 2)]
    assert all(p.pid != 0 for p in got if p.qos)
    assert not any(p.dup for p in got)


def test_incoming_dup_flag_is_not_propagated(broker):
    """The DUP flag of an incoming PUBLISH is not passed on to subscribers (MQTT-3.3.1-3)."""
    sub, _ = subscriber(broker, "s", ("dup/t", 2))
    pub = connected(broker, "p")
    publish(pub, "dup/t", b"a", qos=1, pid=3, dup=True)
    publish(pub, "dup/t", b"b", qos=2, pid=4, dup=True)
    publish(pub, MARK.decode(), b"")
    got = until_marker(sub)
    assert [(p.payload, p.qos, p.dup) for p in got] == [(b"a", 1, False), (b"b", 2, False)]


def test_outbound_packet_ids_in_flight_are_distinct(broker):
    """Each QoS 1 message in flight to a client has its own unused, nonzero packet id
    (MQTT-2.3.1-1, MQTT-2.3.1-2). The esp32 profile allows 8 in flight."""
    sub, _ = subscriber(broker, "s", ("ids/t", 1))
    pub = connected(broker, "p")
    for i in range(8):
        publish(pub, "ids/t", b"%d" % i, qos=1, pid=i + 1)
    got = [sub.expect(PUBLISH) for _ in range(8)]
    pids = [p.pid for p in got]
    assert [p.payload for p in got] == [b"%d" % i for i in range(8)]
    assert 0 not in pids and len(set(pids)) == 8, pids


def test_qos1_to_subscriber_puback_frees_the_window(broker):
    """A subscriber's PUBACK completes a QoS 1 delivery (MQTT-4.3.2-1): with 8 in flight
    allowed, 3x that many messages all arrive once each as the subscriber acknowledges."""
    sub, _ = subscriber(broker, "s", ("w/t", 1))
    pub = connected(broker, "p")
    n = 24
    for i in range(n):
        pub.send(m.publish("w/t", b"%d" % i, qos=1, pid=i + 1))
    got = []
    for _ in range(n):
        p = sub.expect(PUBLISH)
        assert p.qos == 1 and p.pid != 0 and not p.dup
        got.append(p.payload)
        sub.send(m.puback(p.pid))
    assert got == [b"%d" % i for i in range(n)]
    assert [pub.expect(PUBACK).pid for _ in range(n)] == list(range(1, n + 1))
    assert nothing_within(sub, 0.3)


def test_qos2_four_part_handshake_with_subscriber(broker):
    """Broker as QoS 2 sender: PUBLISH QoS 2, PUBREL (flags 0010) only after the
    subscriber's PUBREC, same packet id, and no resend of the PUBLISH once PUBREL is sent
    (MQTT-4.3.3-1, MQTT-3.6.1-1)."""
    sub, _ = subscriber(broker, "s", ("h/t", 2))
    pub = connected(broker, "p")
    publish(pub, "h/t", b"exactly-once", qos=2, pid=9)
    p = sub.expect(PUBLISH)
    assert (p.qos, p.dup, p.payload) == (2, False, b"exactly-once") and p.pid != 0
    # No PUBREL until the subscriber sends PUBREC.
    assert nothing_within(sub, 0.3)
    sub.send(m.pubrec(p.pid))
    r = sub.recv_packet(5)
    assert r is not None and r.type == PUBREL, r
    assert r.b0 == 0x62 and r.pid == p.pid and len(r.body) == 2
    sub.send(m.pubcomp(p.pid))
    assert nothing_within(sub, 0.3)


def test_qos2_handshakes_complete_and_free_the_window(broker):
    """Three windows' worth of QoS 2 messages each go through PUBLISH/PUBREC/PUBREL/PUBCOMP
    with the subscriber, in order, once each (MQTT-4.3.3-1, MQTT-4.6.0-4)."""
    sub, _ = subscriber(broker, "s", ("h2/t", 2))
    pub = connected(broker, "p")
    n = 24
    for i in range(n):
        publish(pub, "h2/t", b"%d" % i, qos=2, pid=i + 1)
    got = []
    pending = []
    while len(got) < n or pending:
        p = sub.recv_packet(5)
        assert p is not None
        if p.type == PUBLISH:
            assert p.qos == 2 and not p.dup
            got.append(p.payload)
            pending.append(p.pid)
            sub.send(m.pubrec(p.pid))
        else:
            assert p.type == PUBREL and p.b0 == 0x62, p
            # PUBRELs come in the order of the PUBRECs (MQTT-4.6.0-4).
            assert p.pid == pending.pop(0)
            sub.send(m.pubcomp(p.pid))
    assert got == [b"%d" % i for i in range(n)]
    assert nothing_within(sub, 0.3)


# ------------------------------------------------------------------ exactly once


def test_qos2_duplicate_before_pubrel_is_acknowledged_not_redelivered(broker):
    """Until PUBREL, a PUBLISH with the same packet id is answered with PUBREC again and not
    delivered a second time (MQTT-4.3.3-2)."""
    sub, _ = subscriber(broker, "s", ("eo/t", 2))
    pub = connected(broker, "p")
    pub.send(m.publish("eo/t", b"once", qos=2, pid=42))
    assert pub.expect(PUBREC).pid == 42
    pub.send(m.publish("eo/t", b"once", qos=2, pid=42, dup=True))
    assert pub.expect(PUBREC).pid == 42
    pub.send(m.publish("eo/t", b"once", qos=2, pid=42, dup=True))
    assert pub.expect(PUBREC).pid == 42
    pub.send(m.pubrel(42))
    assert pub.expect(PUBCOMP).pid == 42
    publish(pub, MARK.decode(), b"")
    got = until_marker(sub)
    assert [p.payload for p in got] == [b"once"]


def test_qos2_same_packet_id_after_pubcomp_is_a_new_message(broker):
    """After PUBCOMP, a PUBLISH reusing the packet id is a new publication (MQTT-4.3.3-2)."""
    sub, _ = subscriber(broker, "s", ("eo/t", 2))
    pub = connected(broker, "p")
    publish(pub, "eo/t", b"first", qos=2, pid=7)
    publish(pub, "eo/t", b"second", qos=2, pid=7)
    publish(pub, "eo/t", b"third", qos=2, pid=7, dup=True)
    publish(pub, MARK.decode(), b"")
    got = until_marker(sub)
    assert [p.payload for p in got] == [b"first", b"second", b"third"]


def test_qos2_duplicates_from_several_ids_interleaved(broker):
    """Several QoS 2 messages awaiting PUBREL at once; each resent once with DUP; each is
    delivered exactly once, in order (MQTT-4.3.3-2, MQTT-4.6.0-3)."""
    sub, _ = subscriber(broker, "s", ("eo/#", 2))
    pub = connected(broker, "p")
    ids = (100, 101, 102, 103)
    for i in ids:
        pub.send(m.publish("eo/%d" % i, b"v%d" % i, qos=2, pid=i))
    # PUBRECs in the order of the PUBLISHes (MQTT-4.6.0-3).
    assert [pub.expect(PUBREC).pid for _ in ids] == list(ids)
    for i in ids:
        pub.send(m.publish("eo/%d" % i, b"v%d" % i, qos=2, pid=i, dup=True))
    assert [pub.expect(PUBREC).pid for _ in ids] == list(ids)
    for i in ids:
        pub.send(m.pubrel(i))
    assert [pub.expect(PUBCOMP).pid for _ in ids] == list(ids)
    publish(pub, MARK.decode(), b"")
    got = until_marker(sub)
    assert [p.payload for p in got] == [b"v%d" % i for i in ids]


# ------------------------------------------------------------------ ordering


def test_qos1_order_of_200_messages_and_their_pubacks(broker):
    """Messages on one topic from one client reach the subscriber in the order sent
    (MQTT-4.6.0-5, MQTT-4.6.0-6), and the publisher's PUBACKs come in the order of its
    PUBLISHes (MQTT-4.6.0-2). 200 messages exceed the esp32 window (8) and queue (32), so
    this also runs through the broker's backpressure."""
    sub, _ = subscriber(broker, "s", ("ord/t", 1))
    pub = connected(broker, "p")
    n = 200
    pub.send(b"".join(m.publish("ord/t", b"%03d" % i, qos=1, pid=i + 1) for i in range(n)))
    got = []
    while len(got) < n:
        p = sub.expect(PUBLISH)
        assert p.qos == 1 and p.topic == b"ord/t"
        got.append(p.payload)
        sub.send(m.puback(p.pid))
    assert got == [b"%03d" % i for i in range(n)]
    assert [pub.expect(PUBACK).pid for _ in range(n)] == list(range(1, n + 1))
    assert nothing_within(sub, 0.3)


def test_qos2_order_with_paho(broker):
    """Ordering per topic at QoS 2 with real clients: 100 messages arrive once each, in order
    (MQTT-4.6.0-6)."""
    sub = broker.client()
    acked = []
    sub.on_subscribe = lambda *a: acked.append(a)
    sub.subscribe("ord2/t", 2)
    assert wait_for(lambda: acked, 5)
    pub = broker.client()
    n = 100
    infos = [pub.publish("ord2/t", b"%03d" % i, qos=2) for i in range(n)]
    for info in infos:
        info.wait_for_publish(10)
    assert wait_for(lambda: len(sub.messages) >= n, 10)
    assert [x.payload for x in sub.messages] == [b"%03d" % i for i in range(n)]
    assert all(x.qos == 2 for x in sub.messages)


# ------------------------------------------------------------------ RETAIN on live delivery


def test_retain_flag_cleared_on_delivery_to_established_subscription(broker):
    """A PUBLISH sent because it matches an established subscription has RETAIN=0, however
    it was published (MQTT-3.3.1-9)."""
    sub, _ = subscriber(broker, "s", ("rt/#", 2))
    pub = connected(broker, "p")
    for q in (0, 1, 2):
        publish(pub, "rt/%d" % q, b"r%d" % q, qos=q, pid=20 + q, retain=True)
    publish(pub, MARK.decode(), b"")
    got = until_marker(sub)
    assert [(p.topic, p.qos, p.retain) for p in got] == [
        (b"rt/0", 0, False), (b"rt/1", 1, False), (b"rt/2", 2, False)]


# ------------------------------------------------------------------ malformed PUBLISH


def _closes(broker, data, sub_filter="#"):
    """Send `data` after CONNECT; the broker must close that connection, deliver nothing to
    a subscriber, and keep serving."""
    sub, _ = subscriber(broker, "watcher", (sub_filter, 2))
    c = connected(broker, "bad")
    c.send(data)
    assert c.closed(), "broker kept the connection open after %r" % data
    pub = connected(broker, "p")
    publish(pub, MARK.decode(), b"")
    got = until_marker(sub)
    assert got == [], "delivered from a malformed PUBLISH: %r" % got
    assert_still_serving(broker)


def test_packet_id_zero_at_qos1_closes(broker):
    """A QoS 1 PUBLISH with packet id 0 is malformed (MQTT-2.3.1-1)."""
    _closes(broker, m.publish("bad/t", b"x", qos=1, pid=0))


def test_packet_id_zero_at_qos2_closes(broker):
    """A QoS 2 PUBLISH with packet id 0 is malformed (MQTT-2.3.1-1)."""
    _closes(broker, m.publish("bad/t", b"x", qos=2, pid=0))


def test_topic_with_plus_wildcard_closes(broker):
    """A topic name must not contain wildcards (MQTT-3.3.2-2): '+'."""
    _closes(broker, m.publish("bad/+", b"x"))


def test_topic_with_hash_wildcard_closes(broker):
    """A topic name must not contain wildcards (MQTT-3.3.2-2): '#'."""
    _closes(broker, m.publish("bad/#", b"x"))


def test_topic_with_wildcard_inside_a_level_closes(broker):
    """A topic name must not contain wildcard characters anywhere (MQTT-3.3.2-2)."""
    _closes(broker, m.publish("bad/a+b", b"x", qos=1, pid=1))


def test_empty_topic_closes(broker):
    """A topic name is at least one character long (MQTT-4.7.3-1)."""
    _closes(broker, m.publish("", b"x"))


def test_topic_with_null_character_closes(broker):
    """Topic names must not include U+0000 (MQTT-4.7.3-2)."""
    _closes(broker, m.publish("bad/\x00", b"x"))


def test_qos3_closes(broker):
    """A PUBLISH with both QoS bits set is malformed (MQTT-3.3.1-4)."""
    data = bytearray(m.publish("bad/t", b"x", qos=1, pid=1))
    data[0] |= 0x06
    _closes(broker, bytes(data))


def test_truncated_packet_id_closes(broker):
    """A QoS 1 PUBLISH whose remaining length ends inside the packet id is malformed."""
    topic = b"bad/t"
    body = b"\x00\x05" + topic + b"\x00"  # one byte of the two-byte packet id
    _closes(broker, m.packet(0x32, body))


# ------------------------------------------------------------------ $SYS is the broker's


def test_client_publish_to_sys_topic_is_not_delivered_nor_retained(broker):
    """$SYS belongs to the broker (MQTT 4.7.2): a client's PUBLISH to a $SYS topic reaches
    no subscriber and is not kept as a retained message."""
    sub, _ = subscriber(broker, "s", ("$SYS/fake/#", 1))
    pub = connected(broker, "p")
    pub.send(m.publish("$SYS/fake/a", b"forged", qos=0, retain=True))
    pub.send(m.publish("$SYS/fake/b", b"forged", qos=1, pid=3, retain=True))
    pub.send(m.publish(MARK.decode(), b""))
    got = until_marker(sub)
    assert got == [], got
    # Not stored either: a new subscription to the same topics gets no retained message.
    late, _ = subscriber(broker, "late", ("$SYS/fake/#", 1))
    pub2 = connected(broker, "p2")
    pub2.send(m.publish(MARK.decode(), b""))
    assert until_marker(late) == []


def test_a_bridge_state_topic_is_the_one_sys_topic_a_client_may_publish(broker):
    """A Mosquitto bridge (its `notifications`, on by default) publishes whether its link is
    up to `$SYS/broker/connection/NAME/state`, retained, and sets its will there: Mosquitto
    lets clients publish that topic alone under $SYS (its test 03-publish-dollar-v5), and so
    does ubroker; `$SYS/broker/connection/NAME` itself stays the broker's."""
    sub, _ = subscriber(broker, "s", ("$SYS/broker/connection/#", 1))
    bridge = broker.raw()
    assert bridge.connect("gw.up", will=("$SYS/broker/connection/gw.up/state", b"0", 1, True)) == (0, 0)
    bridge.send(m.publish("$SYS/broker/connection/gw.up", b"forged", qos=1, pid=1))
    assert bridge.expect(4).body == b"\x00\x01"
    bridge.send(m.publish("$SYS/broker/connection/gw.up/state", b"1", qos=1, pid=2, retain=True))
    assert bridge.expect(4).body == b"\x00\x02"
    p = sub.expect(3)
    assert (p.topic, p.payload) == (b"$SYS/broker/connection/gw.up/state", b"1")
    sub.send(m.puback(p.pid))
    bridge.close()  # no DISCONNECT: its will says the link is down
    p = sub.expect(3)
    assert (p.topic, p.payload) == (b"$SYS/broker/connection/gw.up/state", b"0")
    sub.send(m.puback(p.pid))
    late, _ = subscriber(broker, "late", ("$SYS/broker/connection/+/state", 1))
    p = late.expect(3)
    assert (p.topic, p.payload, p.retain) == (b"$SYS/broker/connection/gw.up/state", b"0", True)
