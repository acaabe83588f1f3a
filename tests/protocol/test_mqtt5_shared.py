"""Shared subscriptions (`$share/NAME/FILTER`, MQTT 5.0 section 4.8.2) through the network, for
v5 and 3.1.1 clients: each message goes to one member of the group in turn, a QoS 1 message
whose member's session ends goes to another member, no retained messages, invalid share
names refused. Statement numbers are the MQTT 5.0 standard's."""

import time

import pytest

import mqttraw
import mqttraw5 as m
from mqttraw5 import broker5  # noqa: F401 (the `broker` fixture)
from mqttraw5 import connected as v5

MARK = "zz/mark"


def sub(c, *filters, properties=()):
    c.send(m.subscribe(1, *filters, properties=properties))
    return c.next(m.SUBACK).codes


def drain(c, within=1.0):
    """The payloads c receives within `within` seconds (a 3.1.1 or v5 client)."""
    got = []
    end = time.time() + within
    while time.time() < end:
        try:
            p = c.recv_packet(max(0.05, end - time.time()))
        except TimeoutError:
            break
        if p is None:
            break
        if p.type == m.PUBLISH:
            got.append(m.Publish(p).payload if isinstance(c, m.Client5) else p.payload)
    return got


def test_each_message_goes_to_one_member_in_turn(broker):
    """Section 4.8.2: a message matching a shared subscription goes to one session of the
    group, the members in turn (two v5 clients and a 3.1.1 client here); a plain
    subscription of the same filter still gets every message."""
    a = v5(broker, "sa")
    b = v5(broker, "sb")
    c = broker.raw()
    assert c.connect("sc") == (0, 0)
    assert sub(a, ("$share/g/sh/t", 0)) == [0]
    assert sub(b, ("$share/g/sh/+", 0)) == [0]  # another group: FILTER differs
    c.send(mqttraw.subscribe(1, ("$share/g/sh/t", 0)))
    assert c.expect(9).body[2:] == b"\x00"
    plain = v5(broker, "plain")
    assert sub(plain, ("sh/t", 0)) == [0]
    p = v5(broker, "pub")
    for i in range(6):
        p.send(m.publish("sh/t", b"%d" % i))
    got_a, got_b, got_c = drain(a), drain(b), drain(c)
    assert sorted(got_a + got_c) == [b"%d" % i for i in range(6)]
    assert len(got_a) == len(got_c) == 3
    assert got_b == [b"%d" % i for i in range(6)]  # alone in its group
    assert drain(plain) == [b"%d" % i for i in range(6)]


def test_a_member_leaving_leaves_the_rest(broker):
    """Section 3.10.4: UNSUBSCRIBE of `$share/NAME/FILTER` takes the client out of the group:
    the other member gets every message."""
    a = v5(broker, "la")
    b = v5(broker, "lb")
    assert sub(a, ("$share/g/lv/t", 1)) == [1]
    assert sub(b, ("$share/g/lv/t", 1)) == [1]
    a.send(m.unsubscribe(2, "$share/g/lv/t"))
    assert a.next(m.UNSUBACK).codes == [0]
    p = v5(broker, "pub")
    for i in range(3):
        p.send(m.publish("lv/t", b"%d" % i))
    assert drain(b) == [b"0", b"1", b"2"]
    assert drain(a, 0.3) == []


def test_unacknowledged_message_goes_to_another_member_when_the_session_ends(broker):
    """Section 4.8.2: a QoS 1 message sent to a member whose session ends before it is
    acknowledged (Session Expiry 0: with the connection) is sent to another member."""
    a = v5(broker, "ha")
    assert sub(a, ("$share/g/ho/t", 1)) == [1]
    b = v5(broker, "hb")
    assert sub(b, ("$share/g/ho/t", 1)) == [1]
    p = v5(broker, "pub")
    p.send(m.publish("ho/t", b"first", qos=1, pid=3))
    p.next(m.PUBACK)
    got = a.next(m.PUBLISH)  # the first member in turn; never acknowledged
    assert got.payload == b"first"
    a.close()
    again = b.next(m.PUBLISH)
    assert (again.payload, again.qos) == (b"first", 1)
    b.send(m.ack(m.PUBACK, again.pid))


def test_sent_qos2_copy_is_not_handed_over_mqtt_4_8_2_5(broker):
    """MQTT-4.8.2-5: a QoS 2 message sent to a member whose session ends before it completes
    goes to no other member (it may have been received: exactly once). A QoS 2 copy still in
    the member's queue, never sent, does go to another member (section 4.8.2)."""
    one = [(m.RECEIVE_MAXIMUM, 1)]
    a = v5(broker, "q2a", properties=one)
    assert sub(a, ("$share/g/q2/t", 2)) == [2]
    b = v5(broker, "q2b", properties=one)
    assert sub(b, ("$share/g/q2/t", 2)) == [2]
    p = v5(broker, "pub-q2")
    for i, word in enumerate((b"sent-to-a", b"sent-to-b", b"queued-for-a")):
        p.send(m.publish("q2/t", word, qos=2, pid=i + 1))
        assert p.next(m.PUBREC).pid == i + 1
        p.send(m.ack(m.PUBREL, i + 1))
        p.next(m.PUBCOMP)
    assert a.next(m.PUBLISH).payload == b"sent-to-a"  # its window of 1 is full: the third waits
    got = b.next(m.PUBLISH)
    assert got.payload == b"sent-to-b"
    assert drain(a, 0.3) == []
    a.close()  # Session Expiry 0: the session ends with the connection
    b.send(m.ack(m.PUBREC, got.pid))
    assert b.next(m.PUBREL).pid == got.pid
    b.send(m.ack(m.PUBCOMP, got.pid))
    again = b.next(m.PUBLISH)
    assert (again.payload, again.qos) == (b"queued-for-a", 2)
    b.send(m.ack(m.PUBREC, again.pid))
    assert b.next(m.PUBREL).pid == again.pid
    b.send(m.ack(m.PUBCOMP, again.pid))
    assert drain(b, 0.7) == []  # never "sent-to-a"


@pytest.mark.parametrize("sid", [0, 7])
def test_copy_handed_from_a_311_member_to_a_v5_member_keeps_its_message_expiry(broker, sid):
    """Section 4.8.2 with MQTT-3.3.2-5/6: a v5 client's QoS 1 message with a Message Expiry
    Interval, given to a 3.1.1 member that does not acknowledge it and whose session ends,
    goes to a v5 member with the time left, in a well-formed property block (section
    2.2.2.2) with the member's Subscription Identifier if it has one (MQTT-3.3.4-3). The
    3.1.1 member's copy kept the interval without its property bytes: handed over, it went
    without it (never to expire), or, beside a Subscription Identifier, malformed."""
    leaver = broker.raw()
    assert leaver.connect("leaver311") == (0, 0)
    leaver.send(mqttraw.subscribe(1, ("$share/e/he/#", 1)))
    leaver.expect(9)
    p = v5(broker, "pub-he")
    p.send(m.publish("he/t", b"handed", qos=1, pid=1, properties=[(m.MESSAGE_EXPIRY, 100)]))
    p.next(m.PUBACK)
    assert leaver.expect(3).payload == b"handed"  # the only member then; never acknowledged
    stay = v5(broker, "stay5")
    assert sub(stay, ("$share/e/he/#", 1), properties=[(m.SUBSCRIPTION_ID, sid)] if sid else ()) == [1]
    leaver.close()  # its clean session ends with the connection
    got = stay.next(m.PUBLISH)
    assert (got.payload, got.qos) == (b"handed", 1)
    left = m.prop(got.props, m.MESSAGE_EXPIRY)
    assert left is not None and 95 <= left <= 100, "Message Expiry Interval lost on handover: %r" % got.props
    assert m.prop(got.props, m.SUBSCRIPTION_ID) == (sid or None), got.props
    stay.send(m.ack(m.PUBACK, got.pid))


def test_no_retained_messages_on_a_shared_subscription(broker):
    """Section 4.8.2: retained messages are not sent when a shared subscription is made (a
    plain subscription of the same filter gets it)."""
    p = v5(broker, "pub")
    p.send(m.publish("rt/t", b"kept", qos=1, retain=True, pid=1))
    p.next(m.PUBACK)
    s = v5(broker, "rs")
    assert sub(s, ("$share/g/rt/t", 1)) == [1]
    assert drain(s, 0.5) == []
    assert sub(s, ("rt/t", 0)) == [0]
    assert drain(s, 0.5) == [b"kept"]


@pytest.mark.parametrize("flt", ["$share//t", "$share/g+/t", "$share/g#/t", "$share/g", "$share/g/",
                                 "$share/g/a/#/b"])
def test_invalid_share_names(broker, flt):
    """Section 4.8.2: NAME is one character or more without '/', '+' or '#', followed by '/'
    and a valid filter: else SUBACK 0x8F (Topic Filter invalid) to a v5 client, and a 3.1.1
    client's connection is closed as for any invalid filter (MQTT-4.8.0-1 of 3.1.1)."""
    c = v5(broker, "inv")
    assert sub(c, (flt, 0)) == [0x8F]
    old = broker.raw()
    assert old.connect("inv3") == (0, 0)
    old.send(mqttraw.subscribe(1, (flt, 0)))
    assert old.closed()


def test_no_local_on_a_shared_subscription_is_a_protocol_error(broker):
    """MQTT-3.8.3-4: No Local set on a shared subscription is a Protocol Error: DISCONNECT
    0x82."""
    c = v5(broker, "nl")
    c.send(m.subscribe(1, ("$share/g/nl/t", 0x04)))
    assert c.disconnected() == 0x82


def test_subscription_identifier_on_a_shared_delivery(broker):
    """MQTT-3.3.4-3: the member's Subscription Identifier comes with the message it gets
    through the shared subscription."""
    c = v5(broker, "sid")
    assert sub(c, ("$share/g/si/t", 1), properties=[(m.SUBSCRIPTION_ID, 42)]) == [1]
    p = v5(broker, "pub")
    p.send(m.publish("si/t", b"x"))
    got = c.next(m.PUBLISH)
    assert m.prop(got.props, m.SUBSCRIPTION_ID) == 42


def test_311_clients_share_without_any_v5_client(broker):
    """Shared subscriptions for 3.1.1 clients on a broker that has seen no v5 client (as
    Mosquitto offers them): QoS 1 messages alternate between the two members, each
    acknowledged."""
    a, b = broker.raw(), broker.raw()
    for c, cid in ((a, "3a"), (b, "3b")):
        assert c.connect(cid) == (0, 0)
        c.send(mqttraw.subscribe(1, ("$share/q/o/t", 1)))
        assert c.expect(9).body[2:] == b"\x01"
    p = broker.raw()
    assert p.connect("3p") == (0, 0)
    for i in range(4):
        p.send(mqttraw.publish("o/t", b"%d" % i, qos=1, pid=i + 1))
        p.expect(4)
    got = {}
    for c in (a, b):
        got[c] = []
        for _ in range(2):
            pk = c.expect(3)
            got[c].append(pk.payload)
            c.send(mqttraw.puback(pk.pid))
    assert sorted(got[a] + got[b]) == [b"0", b"1", b"2", b"3"]
    assert drain(a, 0.3) == drain(b, 0.3) == []


def test_message_expiring_in_a_311_members_queue_is_not_sent(broker):
    """MQTT-3.3.2-5 on a shared subscription: a v5 client's QoS 1 messages given to the group's
    only member, a 3.1.1 session (clean session 0) that is offline, keep their Message Expiry
    Interval: the one whose interval passes before the member is back is not sent, the one
    with time left is."""
    m.expiry_while_away_311(broker, "member311", "$share/g/ex/#", "ex")


def test_expired_copy_is_not_handed_to_another_member(broker):
    """Section 4.8.2 with MQTT-3.3.2-5: a copy queued for a member whose session ends goes to
    another member, unless its Message Expiry Interval has passed meanwhile."""
    m.away_311(broker, "leaver", "$share/h/hx/#")
    p = v5(broker, "pub-hx")
    p.send(m.publish("hx/short", b"short", qos=1, pid=1, properties=[(m.MESSAGE_EXPIRY, 1)]))
    p.next(m.PUBACK)
    stay = broker.raw()
    assert stay.connect("stayer") == (0, 0)
    stay.send(mqttraw.subscribe(1, ("$share/h/hx/#", 1)))
    stay.expect(9)
    time.sleep(2.2)
    gone = broker.raw()
    assert gone.connect("leaver", clean=True) == (0, 0)  # the old session ends: handover
    p.send(m.publish("hx/after", b"after", qos=1, pid=2))
    p.next(m.PUBACK)
    got = stay.expect(3)
    assert got.payload == b"after"
