"""Clean and persistent sessions (MQTT 3.1.1 sections 3.1.2.4 and 4.4): what the server keeps
for a client id between connections, what it delivers on return and how it resends what was
left unacknowledged. Raw sockets, so packet ids and the DUP flag can be checked."""

import time

import mqttraw as m
from marker import until_pingresp

CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK = 2, 3, 4, 5, 6, 7, 9


def connect(broker, cid, clean, expect_present=None):
    r = broker.raw()
    present, code = r.connect(cid, clean=clean)
    assert code == 0
    if expect_present is not None:
        assert present == expect_present, "session present %d" % present
    return r


def subscribe(r, flt, qos, pid=1):
    r.send(m.subscribe(pid, (flt, qos)))
    p = r.expect(SUBACK)
    assert p.pid == pid and p.body[2] == qos


def go_offline(r):
    """DISCONNECT and wait for the broker to close: the session is then offline for sure."""
    r.send(m.DISCONNECT)
    assert r.closed()
    r.close()


class Publisher:
    def __init__(self, broker):
        self.r = broker.raw()
        assert self.r.connect("pub-%x" % id(self))[1] == 0
        self.pid = 0

    def send(self, topic, payload, qos):
        """Publish and complete the inbound flow, so the broker has taken the message."""
        r = self.r
        self.pid += 1
        r.send(m.publish(topic, payload, qos=qos, pid=self.pid))
        if qos == 1:
            assert r.expect(PUBACK).pid == self.pid
        elif qos == 2:
            assert r.expect(PUBREC).pid == self.pid
            r.send(m.pubrel(self.pid))
            assert r.expect(PUBCOMP).pid == self.pid
        else:
            assert until_pingresp(r) == []


def ack(raw, p):
    if p.qos == 1:
        raw.send(m.puback(p.pid))
    elif p.qos == 2:
        raw.send(m.pubrec(p.pid))
        assert raw.expect(PUBREL).pid == p.pid
        raw.send(m.pubcomp(p.pid))


def receive(raw, n, timeout=5.0):
    out = []
    for _ in range(n):
        out.append(raw.expect(PUBLISH, timeout))
    return out


# ---------------------------------------------------------------------- clean session


def test_clean_session_discards_previous_session(broker):
    """MQTT-3.1.2-6: clean session 1 discards the previous session: the old subscription
    is gone (nothing published on it arrives) and session present is 0 (MQTT-3.2.2-1)."""
    r = connect(broker, "cs", clean=False, expect_present=0)
    subscribe(r, "cs/old", 1)
    go_offline(r)
    r = connect(broker, "cs", clean=True, expect_present=0)
    subscribe(r, "cs/marker", 0, pid=2)
    pub = Publisher(broker)
    pub.send("cs/old", b"stale", 1)
    pub.send("cs/marker", b"marker", 0)
    p = r.expect(PUBLISH)
    assert (p.topic, p.payload) == (b"cs/marker", b"marker")


def test_clean_session_state_ends_with_connection(broker):
    """MQTT-3.1.2-6: a clean session lasts as long as the network connection: connecting
    again with clean session 0 finds no session (present 0) and no subscription."""
    r = connect(broker, "cs2", clean=True)
    subscribe(r, "cs2/t", 1)
    go_offline(r)
    r = connect(broker, "cs2", clean=False, expect_present=0)
    subscribe(r, "cs2/marker", 0, pid=2)
    pub = Publisher(broker)
    pub.send("cs2/t", b"stale", 1)
    pub.send("cs2/marker", b"marker", 0)
    assert r.expect(PUBLISH).payload == b"marker"


# ---------------------------------------------------------------------- persistent session


def test_persistent_session_keeps_subscriptions(broker):
    """MQTT-3.1.2-4 / 3.1.2.4: with clean session 0 the subscriptions survive a reconnect:
    the client receives on the old subscription without subscribing again, at its QoS."""
    r = connect(broker, "ps", clean=False, expect_present=0)
    subscribe(r, "ps/+/v", 1)
    go_offline(r)
    r = connect(broker, "ps", clean=False, expect_present=1)
    pub = Publisher(broker)
    pub.send("ps/a/v", b"hello-again", 1)
    p = r.expect(PUBLISH)
    assert (p.topic, p.payload, p.qos) == (b"ps/a/v", b"hello-again", 1)
    ack(r, p)
    assert until_pingresp(r) == []


def test_persistent_session_survives_abrupt_close(broker):
    """MQTT-3.1.2-4: the session is kept whether the connection ended with DISCONNECT or
    was simply lost."""
    r = connect(broker, "ps-abrupt", clean=False)
    subscribe(r, "psa/t", 2)
    r.close()
    time.sleep(0.2)
    r = connect(broker, "ps-abrupt", clean=False, expect_present=1)
    pub = Publisher(broker)
    pub.send("psa/t", b"x", 2)
    p = r.expect(PUBLISH)
    assert (p.payload, p.qos) == (b"x", 2)
    ack(r, p)


def test_offline_qos1_and_qos2_delivered_on_return(broker):
    """MQTT-3.1.2-5: while a clean session 0 client is away the server stores QoS 1 and 2
    messages matching its subscriptions and delivers them when it returns, in the order
    published (MQTT-4.6.0-5/6), each at the right QoS. QoS 0 ones may be dropped, and are
    not checked."""
    r = connect(broker, "off", clean=False)
    subscribe(r, "off/#", 2)
    go_offline(r)
    pub = Publisher(broker)
    sent = [(b"off/a", b"one", 1), (b"off/b", b"two", 2), (b"off/a", b"three", 0),
            (b"off/a", b"four", 2), (b"off/c", b"five", 1)]
    for t, pl, q in sent:
        pub.send(t.decode(), pl, q)
    r = connect(broker, "off", clean=False, expect_present=1)
    got = []
    for p in until_pingresp(r):
        assert p.type == PUBLISH, p
        got.append(p)
        ack(r, p)
    # Anything else still on its way (QoS flows just completed may release more).
    got += [p for p in until_pingresp(r) if p.type == PUBLISH]
    qos12 = [(p.topic, p.payload, p.qos) for p in got if p.qos]
    assert qos12 == [(t, pl, q) for t, pl, q in sent if q]
    assert all(not p.dup for p in got), "first delivery of a queued message carries DUP"


def test_offline_queue_delivered_beyond_inflight_window(broker_factory):
    """MQTT-3.1.2-5 and MQTT-4.6.0-6: more offline QoS 1 messages than the in-flight window
    (set to 8 here) all arrive, in order, as the client acknowledges them."""
    broker = broker_factory(config="max_inflight_messages 8\nmax_queued_messages 32\n")
    r = connect(broker, "offmany", clean=False)
    subscribe(r, "om/t", 1)
    go_offline(r)
    pub = Publisher(broker)
    n = 20
    for i in range(n):
        pub.send("om/t", b"m%02d" % i, 1)
    r = connect(broker, "offmany", clean=False, expect_present=1)
    got = []
    while len(got) < n:
        p = r.expect(PUBLISH)
        got.append(p.payload)
        ack(r, p)
    assert got == [b"m%02d" % i for i in range(n)]
    assert until_pingresp(r) == []


# ---------------------------------------------------------------------- resending


def test_unacknowledged_messages_resent_with_dup_in_order_with_same_ids(broker):
    """MQTT-4.4.0-1: on reconnect with clean session 0 the server resends unacknowledged
    PUBLISH packets with their original packet ids; MQTT-3.3.1-1: with DUP 1; MQTT-4.6.0-2/3:
    in the original order. The subscriber received them the first time and never
    acknowledged."""
    r = connect(broker, "redo", clean=False)
    subscribe(r, "redo/#", 2)
    pub = Publisher(broker)
    msgs = [("redo/a", b"A", 1), ("redo/b", b"B", 2), ("redo/a", b"C", 1), ("redo/c", b"D", 2)]
    for t, pl, q in msgs:
        pub.send(t, pl, q)
    first = receive(r, len(msgs))
    assert [(p.topic.decode(), p.payload, p.qos) for p in first] == msgs
    assert not any(p.dup for p in first)
    assert len({p.pid for p in first}) == len(first)
    r.close()  # lost without acknowledging anything
    time.sleep(0.2)
    r = connect(broker, "redo", clean=False, expect_present=1)
    again = receive(r, len(msgs))
    assert [(p.topic, p.payload, p.qos, p.pid) for p in again] == \
        [(p.topic, p.payload, p.qos, p.pid) for p in first]
    assert all(p.dup for p in again), "resent PUBLISH without DUP: %r" % again
    for p in again:
        ack(r, p)
    assert until_pingresp(r) == []


def test_resend_after_disconnect_then_queued_messages_follow(broker_factory):
    """MQTT-4.4.0-1 and MQTT-4.6.0-2/3: a full in-flight window left unacknowledged, plus
    messages queued behind it while offline: on return the in-flight ones are resent first
    (DUP 1, same ids, same order), then the queued ones (DUP 0), all in publish order."""
    window = 8
    broker = broker_factory(config="max_inflight_messages %d\nmax_queued_messages 32\n" % window)
    r = connect(broker, "redo2", clean=False)
    subscribe(r, "redo2/t", 1)
    pub = Publisher(broker)
    for i in range(window):
        pub.send("redo2/t", b"w%d" % i, 1)
    first = receive(r, window)
    assert [p.payload for p in first] == [b"w%d" % i for i in range(window)]
    go_offline(r)
    for i in range(3):
        pub.send("redo2/t", b"q%d" % i, 1)
    r = connect(broker, "redo2", clean=False, expect_present=1)
    again = receive(r, window)
    assert [(p.payload, p.pid) for p in again] == [(p.payload, p.pid) for p in first]
    assert all(p.dup for p in again)
    for p in again:
        ack(r, p)
    rest = receive(r, 3)
    assert [p.payload for p in rest] == [b"q0", b"q1", b"q2"]
    assert not any(p.dup for p in rest)
    for p in rest:
        ack(r, p)
    assert until_pingresp(r) == []


def test_acknowledged_messages_not_resent(broker):
    """MQTT-4.4.0-1 only covers unacknowledged messages: what the client PUBACKed (QoS 1) or
    PUBCOMPed (QoS 2) before leaving is not sent again."""
    r = connect(broker, "done", clean=False)
    subscribe(r, "done/t", 2)
    pub = Publisher(broker)
    pub.send("done/t", b"a", 1)
    pub.send("done/t", b"b", 2)
    pub.send("done/t", b"c", 1)
    got = receive(r, 3)
    ack(r, got[0])
    ack(r, got[1])
    assert until_pingresp(r) == []
    r.close()
    time.sleep(0.2)
    r = connect(broker, "done", clean=False, expect_present=1)
    again = until_pingresp(r)
    assert [(p.payload, p.pid, p.dup) for p in again] == [(b"c", got[2].pid, True)]


def test_pubrel_awaiting_pubcomp_resent_after_reconnect(broker):
    """MQTT-4.4.0-1: a QoS 2 message the client PUBRECed but whose PUBREL it never
    completed is resumed with a PUBREL (same packet id), not by resending the PUBLISH
    (MQTT-4.3.3-1: after PUBREC the server must not resend it)."""
    r = connect(broker, "rel", clean=False)
    subscribe(r, "rel/t", 2)
    pub = Publisher(broker)
    pub.send("rel/t", b"exactly-once", 2)
    p = r.expect(PUBLISH)
    assert p.qos == 2
    r.send(m.pubrec(p.pid))
    rel = r.expect(PUBREL)
    assert rel.pid == p.pid
    r.close()  # no PUBCOMP
    time.sleep(0.2)
    r = connect(broker, "rel", clean=False, expect_present=1)
    again = r.recv_packet(5.0)
    assert again is not None and again.type == PUBREL, again
    assert again.b0 == 0x62 and again.pid == p.pid
    r.send(m.pubcomp(p.pid))
    assert until_pingresp(r) == []
    # Done now: a further reconnect resends nothing.
    go_offline(r)
    r = connect(broker, "rel", clean=False, expect_present=1)
    assert until_pingresp(r) == []


def test_inbound_qos2_state_kept_across_reconnect(broker):
    """3.1.2.4 / MQTT-4.3.3-2: QoS 2 messages received from the client but not completely
    acknowledged are session state. The client resends the PUBLISH (DUP 1, same id) after
    reconnecting; the server acknowledges it with PUBREC but must not deliver it twice."""
    sub = connect(broker, "q2-sub", clean=True)
    subscribe(sub, "q2/t", 2)
    c = connect(broker, "q2-pub", clean=False)
    c.send(m.publish("q2/t", b"once", qos=2, pid=7))
    assert c.expect(PUBREC).pid == 7
    c.close()  # lost before PUBREL
    time.sleep(0.2)
    c = connect(broker, "q2-pub", clean=False, expect_present=1)
    c.send(m.publish("q2/t", b"once", qos=2, pid=7, dup=True))
    assert c.expect(PUBREC).pid == 7
    c.send(m.pubrel(7))
    assert c.expect(PUBCOMP).pid == 7
    got = []
    p = sub.expect(PUBLISH)
    got.append(p.payload)
    ack(sub, p)
    got += [x.payload for x in until_pingresp(sub) if x.type == PUBLISH]
    assert got == [b"once"]


def test_persistent_session_then_clean_reconnect_discards_queue(broker):
    """MQTT-3.1.2-6 and MQTT-3.2.2-1: a client with a stored session (subscription and queued
    QoS 1/2 messages) that reconnects with clean session 1 gets session present 0 and none
    of the queued messages; and that session is gone afterwards too."""
    r = connect(broker, "disc", clean=False)
    subscribe(r, "disc/t", 2)
    go_offline(r)
    pub = Publisher(broker)
    pub.send("disc/t", b"queued-1", 1)
    pub.send("disc/t", b"queued-2", 2)
    r = connect(broker, "disc", clean=True, expect_present=0)
    assert until_pingresp(r) == []
    time.sleep(0.2)
    assert until_pingresp(r) == []
    go_offline(r)
    r = connect(broker, "disc", clean=False, expect_present=0)
    assert until_pingresp(r) == []
    pub.send("disc/t", b"after", 1)
    assert until_pingresp(r) == []


def test_unacknowledged_resent_then_clean_reconnect_drops_them(broker):
    """MQTT-3.1.2-6: in-flight messages belong to the session: after a clean session 1
    reconnect they are never resent."""
    r = connect(broker, "inf-clean", clean=False)
    subscribe(r, "ic/t", 1)
    pub = Publisher(broker)
    pub.send("ic/t", b"unacked", 1)
    assert r.expect(PUBLISH).payload == b"unacked"
    r.close()
    time.sleep(0.2)
    r = connect(broker, "inf-clean", clean=True, expect_present=0)
    assert until_pingresp(r) == []


def test_offline_sessions_do_not_disturb_each_other(broker):
    """MQTT-3.1.2-5: each stored session gets exactly the messages for its own
    subscriptions."""
    a = connect(broker, "sa", clean=False)
    subscribe(a, "multi/a", 1)
    b = connect(broker, "sb", clean=False)
    subscribe(b, "multi/b", 1)
    go_offline(a)
    go_offline(b)
    pub = Publisher(broker)
    pub.send("multi/a", b"for-a", 1)
    pub.send("multi/b", b"for-b", 1)
    for cid, want in (("sa", b"for-a"), ("sb", b"for-b")):
        r = connect(broker, cid, clean=False, expect_present=1)
        got = until_pingresp(r)
        assert [p.payload for p in got] == [want]
        ack(r, got[0])
