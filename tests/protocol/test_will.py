"""Will messages (MQTT 3.1.1 section 3.1.2.5): published when the network connection closes
without DISCONNECT (client gone, keepalive expiry, protocol error, takeover), never after
DISCONNECT, with the will's QoS and retain flag. Checked with raw sockets so the flags on
the wire are visible."""

import time

import pytest

import mqttraw as m
from marker import until_pingresp

CONNACK, PUBLISH, PUBREL, SUBACK = 2, 3, 6, 9


def subscriber(broker, flt, qos=2, cid=None):
    r = broker.raw()
    assert r.connect(cid or "wsub-%x" % id(r)) == (0, 0)
    r.send(m.subscribe(1, (flt, qos)))
    p = r.expect(SUBACK)
    assert p.body[2] == qos
    return r


def ack(raw, p):
    """Complete the QoS flow of a PUBLISH the broker sent us."""
    if p.qos == 1:
        raw.send(m.puback(p.pid))
    elif p.qos == 2:
        raw.send(m.pubrec(p.pid))
        assert raw.expect(PUBREL).pid == p.pid
        raw.send(m.pubcomp(p.pid))


def with_will(broker, cid, topic, payload=b"gone", qos=0, retain=False, keepalive=60):
    r = broker.raw()
    assert r.connect(cid, will=(topic, payload, qos, retain), keepalive=keepalive) == (0, 0)
    return r


def publish_marker(broker, topic, payload=b"marker"):
    p = broker.raw()
    p.connect("marker-%x" % id(p))
    p.send(m.publish(topic, payload))
    assert until_pingresp(p) == []


# ---------------------------------------------------------------------- when it is published


def test_will_published_when_socket_closed_without_disconnect(broker):
    """MQTT-3.1.2-8: the will is published when the network connection is closed without a
    DISCONNECT; topic and (binary) payload are exactly as given."""
    sub = subscriber(broker, "will/abrupt")
    payload = b"\x00bye\xff\x01"
    c = with_will(broker, "abrupt", "will/abrupt", payload)
    c.close()
    p = sub.expect(PUBLISH)
    assert (p.topic, p.payload) == (b"will/abrupt", payload)


def test_will_published_on_keepalive_expiry(broker):
    """MQTT-3.1.2-8 with MQTT-3.1.2-24: a client silent past 1.5 x keepalive is disconnected
    by the server, and its will is published."""
    sub = subscriber(broker, "will/ka")
    t0 = time.time()
    c = with_will(broker, "ka-will", "will/ka", b"timeout", keepalive=1)
    p = sub.expect(PUBLISH, timeout=8.0)
    assert p.payload == b"timeout"
    assert time.time() - t0 >= 1.0
    assert c.closed()


@pytest.mark.parametrize("bad", [
    m.publish("will/x", b"", qos=3),           # MQTT-3.3.1-4: QoS 3
    b"\x83\x00",                               # SUBSCRIBE with no body, wrong flags
    m.connect("again"),                        # MQTT-3.1.0-2: second CONNECT
    b"\xf0\x00",                               # reserved packet type 15
    m.publish("will/+", b"wild"),              # MQTT-3.3.2-2: wildcard in topic name
])
def test_will_published_on_protocol_error_close(broker, bad):
    """MQTT-3.1.2-8 and MQTT-4.8.0-1: when the server closes the connection for a protocol
    error, the will is published."""
    sub = subscriber(broker, "will/proto")
    c = with_will(broker, "proto-will", "will/proto", b"violated")
    c.send(bad)
    assert c.closed()
    p = sub.expect(PUBLISH)
    assert p.payload == b"violated"


def test_will_published_on_session_takeover(broker):
    """MQTT-3.1.4-2: the server disconnects the old connection when the same client id
    connects again; the old connection ended without DISCONNECT and its clean session with
    it, so its will is published (MQTT-3.1.2-8). The new connection has no will and publishes
    nothing."""
    sub = subscriber(broker, "will/takeover")
    old = with_will(broker, "tk", "will/takeover", b"replaced")
    new = broker.raw()
    assert new.connect("tk") == (0, 0)
    assert old.closed()
    p = sub.expect(PUBLISH)
    assert p.payload == b"replaced"
    assert until_pingresp(sub) == []
    new.send(m.DISCONNECT)
    assert new.closed()
    publish_marker(broker, "will/takeover")
    assert sub.expect(PUBLISH).payload == b"marker"


@pytest.mark.parametrize("old_clean,new_clean", [(True, False), (False, True)], ids=["old-clean", "new-clean"])
def test_will_published_on_takeover_that_ends_the_session(broker, old_clean, new_clean):
    """MQTT-3.1.4-2 with MQTT-3.1.2-6/8: a takeover where either connection is clean ends the
    old session, and with it the old connection's will goes (Mosquitto's 07-will-takeover)."""
    sub = subscriber(broker, "will/tend")
    old = broker.raw()
    assert old.connect("tend", clean=old_clean, will=("will/tend", b"ended", 0, False))[1] == 0
    new = broker.raw()
    assert new.connect("tend", clean=new_clean)[1] == 0
    assert old.closed()
    assert sub.expect(PUBLISH).payload == b"ended"


# ---------------------------------------------------------------------- when it is not


def test_no_will_on_takeover_that_keeps_the_session(broker):
    """MQTT-3.1.4-2: a takeover where both connections ask for a persistent session (clean
    session 0) keeps the session going in the new connection, so the old connection's will is
    not published (a will goes when its session ends or its client does not come back:
    Mosquitto's reading, its test 07-will-takeover). The session is there (Session Present 1)."""
    sub = subscriber(broker, "will/tkeep")
    old = broker.raw()
    assert old.connect("tkeep", clean=False, will=("will/tkeep", b"never", 0, False)) == (0, 0)
    new = broker.raw()
    assert new.connect("tkeep", clean=False) == (1, 0)
    assert old.closed()
    publish_marker(broker, "will/tkeep")
    assert sub.expect(PUBLISH).payload == b"marker"


def test_no_will_after_disconnect(broker):
    """MQTT-3.1.2-10 / MQTT-3.14.4-3: after DISCONNECT the will is discarded. A marker
    published on the same topic afterwards is the first thing the subscriber gets."""
    sub = subscriber(broker, "will/dc")
    c = with_will(broker, "dc-will", "will/dc", b"must-not-appear", qos=1, retain=True)
    c.send(m.DISCONNECT)
    assert c.closed()
    publish_marker(broker, "will/dc")
    p = sub.expect(PUBLISH)
    assert p.payload == b"marker"
    # Nor was it kept as a retained message.
    late = subscriber(broker, "will/dc", cid="dc-late")
    assert until_pingresp(late) == []


def test_will_published_only_once(broker):
    """MQTT-3.1.2-10: once published the will is removed: a later connection with the same
    client id but no will (MQTT-3.1.2-12) closes abruptly and nothing is published."""
    sub = subscriber(broker, "will/once")
    c = with_will(broker, "once", "will/once", b"first", keepalive=60)
    c.close()
    assert sub.expect(PUBLISH).payload == b"first"
    c2 = broker.raw()
    assert c2.connect("once") == (0, 0)
    c2.close()
    time.sleep(0.3)
    publish_marker(broker, "will/once")
    assert sub.expect(PUBLISH).payload == b"marker"


def test_will_with_wildcard_topic_refused(broker):
    """MQTT-4.7.1-1 / MQTT-3.1.2-9: the will topic is a topic name and may not hold
    wildcards; such a CONNECT is not accepted, and nothing is published on close."""
    sub = subscriber(broker, "#", qos=0)
    c = broker.raw()
    c.send(m.connect("wild-will", will=("will/+/x", b"bad", 0, False)))
    while True:
        p = c.recv_packet(5.0)
        if p is None:
            break
        assert not (p.type == CONNACK and p.body[1] == 0), "accepted a wildcard will topic"
    publish_marker(broker, "will/marker")
    got = sub.expect(PUBLISH)
    assert got.topic == b"will/marker"


# ---------------------------------------------------------------------- QoS and retain


@pytest.mark.parametrize("will_qos,sub_qos,expect_qos", [
    (0, 2, 0), (1, 2, 1), (2, 2, 2), (2, 1, 1), (2, 0, 0), (1, 0, 0),
])
def test_will_qos_honoured(broker, will_qos, sub_qos, expect_qos):
    """MQTT-3.1.2-14 / 3.1.2.6: the will is published at its own QoS; a subscriber gets it at
    the lower of that and its granted QoS (MQTT-3.8.4-6), and can complete the flow."""
    sub = subscriber(broker, "will/qos", qos=sub_qos)
    c = with_will(broker, "wq", "will/qos", b"q", qos=will_qos)
    c.close()
    p = sub.expect(PUBLISH)
    assert p.payload == b"q"
    assert p.qos == expect_qos
    assert not p.dup
    ack(sub, p)
    assert until_pingresp(sub) == []


def test_retained_will_reaches_later_subscriber_with_retain_flag(broker):
    """MQTT-3.1.2-17: a will with will retain 1 is published as a retained message: a live
    subscriber gets it with RETAIN 0 (MQTT-3.3.1-9), a subscriber arriving later gets it with
    RETAIN 1 (MQTT-3.3.1-6/8) at the will's QoS."""
    live = subscriber(broker, "will/ret", qos=1)
    c = with_will(broker, "wr", "will/ret", b"last-words", qos=1, retain=True)
    c.close()
    p = live.expect(PUBLISH)
    assert p.payload == b"last-words"
    assert not p.retain
    ack(live, p)
    later = subscriber(broker, "will/#", qos=2, cid="later")
    p = later.expect(PUBLISH)
    assert (p.topic, p.payload) == (b"will/ret", b"last-words")
    assert p.retain
    assert p.qos == 1
    ack(later, p)
    assert until_pingresp(later) == []


def test_non_retained_will_not_kept(broker):
    """MQTT-3.1.2-16: a will with will retain 0 is published non-retained: a subscriber that
    arrives afterwards gets nothing."""
    live = subscriber(broker, "will/nr", qos=0)
    c = with_will(broker, "wnr", "will/nr", b"fleeting", qos=0, retain=False)
    c.close()
    p = live.expect(PUBLISH)
    assert p.payload == b"fleeting" and not p.retain
    later = subscriber(broker, "will/nr", cid="later-nr")
    assert until_pingresp(later) == []


def test_will_of_persistent_session_client(broker):
    """MQTT-3.1.2-8: the will belongs to the network connection whatever the session kind:
    a clean session 0 client that drops is announced too, and its session is still there."""
    sub = subscriber(broker, "will/persist")
    c = broker.raw()
    assert c.connect("wp", clean=False, will=("will/persist", b"offline", 1, False)) == (0, 0)
    c.close()
    p = sub.expect(PUBLISH)
    assert p.payload == b"offline"
    ack(sub, p)
    c2 = broker.raw()
    assert c2.connect("wp", clean=False) == (1, 0)


def test_a_will_on_a_dollar_topic_is_not_published(broker):
    """The rule for $ topics (section 4.7.2: they are the server's; a client's PUBLISH there is
    acknowledged, not delivered) holds for a will too: a client that closes without DISCONNECT
    leaves nothing on $SYS/fake, and a will elsewhere still goes (Mosquitto's
    07-will-control found a will on $CONTROL/... delivered)."""
    sub = subscriber(broker, "$SYS/fake/#", 0)
    plain = subscriber(broker, "will/after-dollar", 0)
    c = with_will(broker, "dollar-will", "$SYS/fake/state", b"spoofed")
    c.close()
    other = with_will(broker, "plain-will", "will/after-dollar", b"real")
    other.close()
    assert plain.expect(PUBLISH).payload == b"real"
    assert all(p.type != PUBLISH or not p.topic.startswith(b"$SYS/fake") for p in until_pingresp(sub))
