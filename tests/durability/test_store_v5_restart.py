"""MQTT 5 state across a restart of a broker with persistence on, through the network: the
real `ubroker run --data DIR`, killed with SIGKILL (as a power cut stops it) and started
again on the same folder, with v5 clients (mqttraw5). What the interoperability runs found
lost (docs/interop.md, C) and issue 15 item 8: a retained message's properties, a v5
subscription's No Local, DUP 0 on the first sending of a message queued before the restart,
Session Expiry deadlines and a will waiting for its Will Delay Interval."""

import time

import pytest

import mqttraw as m
import mqttraw5 as m5
from conftest import wait_for
from durable_util import kill9
import test_store_v5
from test_store_v5 import v5

brokers = test_store_v5.brokers  # the fixture: brokers on data folders, checked at the end

USER = [(m5.USER_PROPERTY, ("k", "v1")), (m5.USER_PROPERTY, ("k", "v2"))]


def persistent(b, cid, expiry=3600, **kw):
    return v5(b, cid, clean_start=False, properties=[(m5.SESSION_EXPIRY, expiry)], **kw)


def offline_subscriber(b, cid, flt, expiry=3600, options=0):
    """A persistent v5 session subscribed to flt at QoS 1 (with subscription options, e.g. No
    Local 4, Retain As Published 8), left offline."""
    c, _ = persistent(b, cid, expiry)
    c.send(m5.subscribe(1, (flt, 1 | options)))
    assert c.next(m5.SUBACK).codes == [1]
    c.send(m5.disconnect(0))
    c.close()


def publish5(c, topic, payload, pid, properties=(), retain=False):
    c.send(m5.publish(topic, payload, qos=1, pid=pid, retain=retain, properties=properties))
    a = c.next(m5.PUBACK)
    assert a.pid == pid and a.code < 0x80, a.code


def nothing_more(c):
    """Nothing came before the answer to a PINGREQ sent now."""
    c.send(m.PINGREQ)
    c.expect(m5.PINGRESP)


def test_retained_message_keeps_its_properties(brokers, tmp_path):
    """A retained message published by a v5 client with user properties, a content type and
    a Message Expiry Interval keeps them across SIGKILL: a subscriber after the restart gets
    them, in their order (MQTT-3.3.2-17/18), with the time left as its expiry (MQTT-3.3.2-6);
    one whose expiry passed while the broker was off is not sent (MQTT-3.3.2-5)."""
    data = tmp_path / "data"
    b = brokers(data)
    pub, _ = v5(b, "pub")
    publish5(pub, "r/props", b"with", 1, [(m5.MESSAGE_EXPIRY, 3600), (m5.CONTENT_TYPE, "text/x")] + USER,
             retain=True)
    publish5(pub, "r/short", b"short", 2, [(m5.MESSAGE_EXPIRY, 1)], retain=True)
    kill9(b)
    time.sleep(2.5)  # r/short's expiry passes while the broker is off
    b2 = brokers(data)
    sub, _ = v5(b2, "sub")
    sub.send(m5.subscribe(1, ("r/#", 1)))
    assert sub.next(m5.SUBACK).codes == [1]
    p = sub.next(m5.PUBLISH)
    assert p.payload == b"with" and p.retain
    assert m5.prop(p.props, m5.CONTENT_TYPE) == b"text/x", p.props
    assert [v for k, v in p.props if k == m5.USER_PROPERTY] == [(b"k", b"v1"), (b"k", b"v2")], p.props
    left = m5.prop(p.props, m5.MESSAGE_EXPIRY)
    assert left is not None and 3500 < left <= 3600, p.props
    sub.send(m5.ack(m5.PUBACK, p.pid))
    nothing_more(sub)


def test_retained_properties_survive_a_compaction_and_a_second_restart(brokers, tmp_path):
    """The properties are written again when the store is compacted (at every start): a
    second restart still has them."""
    data = tmp_path / "data"
    b = brokers(data)
    pub, _ = v5(b, "pub")
    publish5(pub, "r/x", b"x", 1, USER, retain=True)
    kill9(b)
    b2 = brokers(data)
    kill9(b2)
    b3 = brokers(data)
    sub, _ = v5(b3, "sub")
    sub.send(m5.subscribe(1, ("r/#", 0)))
    sub.next(m5.SUBACK)
    p = sub.next(m5.PUBLISH)
    assert [v for k, v in p.props if k == m5.USER_PROPERTY] == [(b"k", b"v1"), (b"k", b"v2")], p.props


def test_no_local_holds_after_a_restart(brokers, tmp_path):
    """A persistent v5 session's subscription with No Local: after SIGKILL and a restart, its
    client's own messages are still not sent back to it (MQTT-3.8.3-3), others' are; also
    when a 3.1.1 client publishes first after the restart, before any v5 client connected."""
    data = tmp_path / "data"
    b = brokers(data)
    offline_subscriber(b, "me", "n/#", options=4)
    kill9(b)
    b2 = brokers(data)
    old = b2.raw()
    old.connect("old311")
    old.send(m.publish("n/311", b"from 3.1.1", qos=1, pid=1))
    old.expect(4)
    me, ack = persistent(b2, "me")
    assert ack.present == 1
    p = me.next(m5.PUBLISH)
    assert p.payload == b"from 3.1.1"
    me.send(m5.ack(m5.PUBACK, p.pid))
    publish5(me, "n/mine", b"mine", 1)
    old.send(m.publish("n/other", b"other", qos=1, pid=2))
    old.expect(4)
    p = me.next(m5.PUBLISH)
    assert p.payload == b"other", p.payload  # not "mine" (No Local)
    me.send(m5.ack(m5.PUBACK, p.pid))
    nothing_more(me)


def test_first_sending_after_a_restart_has_dup_0(brokers, tmp_path):
    """A QoS 1 message queued on flash for an offline persistent v5 client, never sent, goes
    out after SIGKILL and a restart with DUP 0: it is not a resend (MQTT-3.3.1-1). Sent then
    and not acknowledged, it goes again after a second restart with DUP 1 (MQTT-3.3.1-1,
    MQTT-4.4.0-1)."""
    data = tmp_path / "data"
    b = brokers(data)
    offline_subscriber(b, "sub", "d/#")
    pub, _ = v5(b, "pub")
    publish5(pub, "d/1", b"one", 1)  # acknowledged once on flash: the subscriber is offline
    kill9(b)
    b2 = brokers(data)
    sub, ack = persistent(b2, "sub")
    assert ack.present == 1
    p = sub.next(m5.PUBLISH)
    assert p.payload == b"one" and p.qos == 1
    assert not p.dup, "first sending of a message queued before the restart has DUP 1"
    # Not acknowledged. A second message for another offline session makes the broker commit
    # what it appended since (the note that d/1 went out, lazily written, among it).
    offline_subscriber(b2, "other", "d/#")
    pub, _ = v5(b2, "pub")
    publish5(pub, "d/2", b"two", 2)
    assert sub.next(m5.PUBLISH).payload == b"two"  # not acknowledged either
    kill9(b2)
    b3 = brokers(data)
    sub, ack = persistent(b3, "sub")
    got = {}
    for _ in range(2):
        p = sub.next(m5.PUBLISH)
        got[p.payload] = p.dup
        sub.send(m5.ack(m5.PUBACK, p.pid))
    assert got == {b"one": True, b"two": True}, got
    other, _ = persistent(b3, "other")
    p = other.next(m5.PUBLISH)
    assert p.payload == b"two" and not p.dup  # queued for it, never sent


def test_session_expires_after_its_interval_across_a_restart(brokers, tmp_path):
    """A session whose connection ended, with a Session Expiry Interval of 1 s, is deleted
    after it also when the broker was killed and restarted meanwhile (MQTT-3.1.2-23): its
    client then finds no session (Session Present 0, MQTT-3.2.2-2... 3.1.2-4); one with 3600 s is
    still there."""
    data = tmp_path / "data"
    b = brokers(data)
    for cid, expiry in (("short", 1), ("long", 3600)):
        offline_subscriber(b, cid, "x/#", expiry)
    kill9(b)
    b2 = brokers(data)
    time.sleep(3)
    _, ack = persistent(b2, "short")
    assert ack.present == 0, "the session outlived its Session Expiry Interval across the restart"
    _, ack = persistent(b2, "long")
    assert ack.present == 1


def test_session_of_a_client_connected_longer_than_its_interval_survives_a_restart(brokers, tmp_path):
    """MQTT-3.1.2-23: the Session Expiry Interval runs from when the connection ends. A client
    connected for longer than its interval (3 s) when the broker is killed finds its session
    right after the restart (before: the interval was written to flash as a deadline counted
    from CONNECT on the wall clock, already past at the restart, and the session was
    deleted at once: Session Present 0)."""
    data = tmp_path / "data"
    b = brokers(data)
    c, _ = persistent(b, "long-here", 3)
    c.send(m5.subscribe(1, ("x/#", 1)))
    c.next(m5.SUBACK)
    time.sleep(4)
    kill9(b)
    b2 = brokers(data)
    time.sleep(1.5)  # past a once-a-second expiry check, within 3 s of the restart
    _, ack = persistent(b2, "long-here", 3)
    assert ack.present == 1, "the session expired at the restart: " + b2.log()[-400:]


def test_session_of_a_client_connected_at_the_crash_expires_after_the_restart(brokers, tmp_path):
    """The broker is killed while the client is connected: its connection ended then, so its
    session (Session Expiry Interval 1 s) is deleted that long after the restart at the
    latest (MQTT-3.1.2-23)."""
    data = tmp_path / "data"
    b = brokers(data)
    c, _ = persistent(b, "here", 1)
    c.send(m5.subscribe(1, ("x/#", 1)))
    c.next(m5.SUBACK)
    kill9(b)
    b2 = brokers(data)
    time.sleep(3)
    _, ack = persistent(b2, "here")
    assert ack.present == 0


def will_client(b, cid, delay):
    """A persistent v5 client with a will (QoS 1, a user property, Will Delay Interval delay s)
    that goes away without DISCONNECT; returns once the broker has seen it go."""
    c, _ = persistent(b, cid, will=("w/" + cid, b"gone", 1, False, [(m5.WILL_DELAY, delay)] + USER[:1]))
    c.close()
    assert wait_for(lambda: ("client %s connection closed" % cid) in b.log(), 10), b.log()
    # The close is logged before the pass that handled it commits to flash (its _TIMER
    # record among it); a CONNACK to a new connection comes in a later pass, after that
    # commit, so a kill -9 from here on finds the will on flash.
    probe, _ = v5(b, "probe-" + cid)
    probe.close()


def watcher(b):
    c, _ = persistent(b, "watch")
    c.send(m5.subscribe(1, ("w/#", 1)))
    c.next(m5.SUBACK)
    return c


def test_delayed_will_is_published_after_a_restart(brokers, tmp_path):
    """A will waiting for its Will Delay Interval (3 s) when the broker is killed is published
    after the restart once the delay is over (MQTT-3.1.3-9), with its properties
    (MQTT-3.1.3-10... section 3.1.3.2)."""
    data = tmp_path / "data"
    b = brokers(data)
    w = watcher(b)
    w.close()
    will_client(b, "w1", 3)
    kill9(b)
    b2 = brokers(data)
    w, _ = persistent(b2, "watch")
    p = w.next(m5.PUBLISH, timeout=15)
    assert p.topic == b"w/w1" and p.payload == b"gone"
    assert [v for k, v in p.props if k == m5.USER_PROPERTY] == [(b"k", b"v1")], p.props


def test_delayed_will_discarded_when_its_client_returns_after_a_restart(brokers, tmp_path):
    """The client whose will waits comes back after the restart before the delay is over: the
    will is not published (MQTT 5.0 section 3.1.3.2.2)."""
    data = tmp_path / "data"
    b = brokers(data)
    w = watcher(b)
    will_client(b, "w2", 2)
    kill9(b)
    b2 = brokers(data)
    _, ack = persistent(b2, "w2")
    assert ack.present == 1
    w, _ = persistent(b2, "watch")
    time.sleep(3)  # past the delay
    nothing_more(w)


def test_will_discarded_by_a_3_1_1_client_stays_discarded_after_a_restart(brokers, tmp_path):
    """A 3.1.1 client takes back the session whose v5 will waits: the will is discarded (MQTT 5.0
    section 3.1.3.2.2), and the broker killed after that does not publish it after its
    restart."""
    data = tmp_path / "data"
    b = brokers(data)
    w = watcher(b)
    will_client(b, "mix", 2)
    r = b.raw()
    assert r.connect("mix", clean=False) == (1, 0)
    r.send(m.PINGREQ)
    r.expect(13)  # its CONNECT's pass is over, and what it wrote is on flash
    kill9(b)
    b2 = brokers(data)
    w, _ = persistent(b2, "watch")
    time.sleep(3)  # past the delay
    nothing_more(w)


def test_timers_survive_the_compaction_at_start_and_a_second_restart(brokers, tmp_path):
    """Every start compacts the store, writing the timers it restored again (with the time
    left): after a second SIGKILL and restart the session with 1 s of Session Expiry is gone
    and the waiting will (Will Delay 4 s) is published with its properties (MQTT-3.1.2-23,
    MQTT-3.1.3-9)."""
    data = tmp_path / "data"
    b = brokers(data)
    w = watcher(b)
    w.close()
    c, _ = persistent(b, "short", 1)
    c.send(m5.disconnect(0))
    c.close()
    will_client(b, "w3", 4)
    kill9(b)
    b2 = brokers(data)
    kill9(b2)
    b3 = brokers(data)
    w, _ = persistent(b3, "watch")
    p = w.next(m5.PUBLISH, timeout=15)
    assert p.topic == b"w/w3" and p.payload == b"gone"
    assert [v for k, v in p.props if k == m5.USER_PROPERTY] == [(b"k", b"v1")], p.props
    w.send(m5.ack(m5.PUBACK, p.pid))
    _, ack = persistent(b3, "short")
    assert ack.present == 0


def test_message_queued_for_a_311_session_expires_across_a_restart(brokers, tmp_path):
    """MQTT-3.3.2-5 for a 3.1.1 subscriber across SIGKILL: a v5 client's QoS 1 messages
    queued for an offline 3.1.1 session (clean session 0); after the restart, with no v5
    client connected since, the one whose Message Expiry Interval passed is not sent, the
    one with time left is."""
    data = tmp_path / "data"
    b = brokers(data)
    m5.away_311(b, "away311", "e3/#")
    pub, _ = v5(b, "pub")
    publish5(pub, "e3/short", b"short", 1, [(m5.MESSAGE_EXPIRY, 1)])
    publish5(pub, "e3/long", b"long", 2, [(m5.MESSAGE_EXPIRY, 3600)])
    kill9(b)
    time.sleep(2.5)  # e3/short's expiry passes while the broker is off
    m5.back_311_gets_only(brokers(data), "away311", b"long")  # and no e3/short


@pytest.mark.parametrize("qos", [1, 2])
@pytest.mark.parametrize("version", [4, 5], ids=["3.1.1", "5"])
def test_a_started_delivery_goes_on_after_a_restart_past_its_expiry(brokers, tmp_path, version, qos):
    """MQTT-3.3.2-5 drops only a copy whose delivery has not started; one started goes on
    (MQTT-4.4.0-1): a v5 publisher's message with a Message Expiry Interval, sent to a
    persistent subscriber that goes away unacknowledged (QoS 1) or after its PUBREC (QoS 2),
    comes again after SIGKILL once its expiry has passed: the PUBLISH with DUP 1, or the
    PUBREL. (Its sending noted on flash first: the lazy _SENT record, docs/durability.md.)"""
    data = tmp_path / "data"
    b = brokers(data)
    sub = subscriber(b, version, "started")
    pub, _ = v5(b, "pub")
    publish5(pub, "t/x", b"hello", 1, [(m5.MESSAGE_EXPIRY, 2)])  # QoS 1 from the publisher,
    if qos == 2:  # or 2, PUBREL and all
        pub.send(m5.publish("t/x", b"hello", qos=2, pid=2, properties=[(m5.MESSAGE_EXPIRY, 2)]))
        pub.next(m5.PUBREC)
        pub.send(m5.ack(m5.PUBREL, 2))
        pub.next(m5.PUBCOMP)
    p = sub.expect(m5.PUBLISH)
    if qos == 2:
        sub.send(m.puback(p.pid))  # the QoS 1 copy done; the QoS 2 one to PUBREC
        p = sub.expect(m5.PUBLISH)
        sub.send(m.pubrec(p.pid))
        assert sub.expect(m5.PUBREL).pid == p.pid
    time.sleep(1.5)  # past the lazy _SENT record's commit
    sub.close()
    kill9(b)
    time.sleep(2.5)  # the expiry passes while the broker is off
    b2 = brokers(data)
    sub = subscriber(b2, version, "started", present=1)
    got = sub.expect(m5.PUBREL if qos == 2 else m5.PUBLISH)
    assert got.pid == p.pid
    if qos == 1:
        assert got.dup and (got.payload if version == 4 else m5.Publish(got).payload) == b"hello"
        if version == 5:  # with the least time left there is (docs/mqtt5.md)
            assert m5.prop(m5.Publish(got).props, m5.MESSAGE_EXPIRY) == 1
    nothing_more(sub)


def subscriber(b, version, cid, present=None):
    """A persistent subscriber to t/# at QoS 2, 3.1.1 (version 4) or v5, connected; with
    present, the session taken back (CONNACK session present)."""
    if version == 4:
        c = b.raw()
        assert c.connect(cid, clean=False) == (1 if present else 0, 0)
    else:
        c, ack = persistent(b, cid)
        assert ack.present == (1 if present else 0)
    if not present:
        c.send((m if version == 4 else m5).subscribe(1, ("t/#", 2)))
        c.expect(m5.SUBACK)
    return c


def test_refused_qos2_packet_id_is_not_kept_across_a_restart(brokers, tmp_path):
    """Section 4.3.3 with 2.2.1: a QoS 2 PUBLISH from a persistent v5 session refused with
    PUBREC 0x87 (a `$` topic) ends its exchange, so its packet id is not written to flash as
    awaiting PUBREL: after SIGKILL and a restart the client reuses it for a new message, which
    is delivered (read back as awaiting PUBREL, it was taken for a duplicate and lost)."""
    data = tmp_path / "data"
    b = brokers(data)
    p, _ = persistent(b, "q2pub")
    p.send(m5.publish("$q2/t", b"no", qos=2, pid=1))
    assert p.next(m5.PUBREC).code == 0x87
    kill9(b)
    b2 = brokers(data)
    s, _ = v5(b2, "q2sub")
    s.send(m5.subscribe(1, ("q2/#", 2)))
    s.next(m5.SUBACK)
    p, ack = persistent(b2, "q2pub")
    assert ack.present
    p.send(m5.publish("q2/t", b"after", qos=2, pid=1))
    assert p.next(m5.PUBREC).code == 0
    p.send(m5.ack(m5.PUBREL, 1))
    assert p.next(m5.PUBCOMP).code == 0
    s.send(m.PINGREQ)
    got = s.recv_packet(5)
    assert got is not None and got.type == m5.PUBLISH, "the message under the reused packet id was lost: %r" % got
    assert m5.Publish(got).payload == b"after"


@pytest.mark.parametrize("version", [4, 5], ids=["3.1.1", "5"])
def test_retain_as_published_is_for_a_v5_client_after_a_restart(brokers, tmp_path, version):
    """A retained message queued for an offline v5 session subscribed with Retain As
    Published keeps its flag across SIGKILL as that option's: after the restart a v5 client
    taking the session back gets it with RETAIN 1 (MQTT-3.3.1-12), a 3.1.1 client with RETAIN
    0 (MQTT-3.3.1-9 of 3.1.1: the option is not 3.1.1's). On flash it was RETAIN 1 for any
    client, as a retained message's copy for a new subscription is."""
    data = tmp_path / "data"
    b = brokers(data)
    offline_subscriber(b, "rapd", "rd/#", options=8)
    pub, _ = v5(b, "pub")
    publish5(pub, "rd/t", b"kept", 1, retain=True)
    kill9(b)
    b2 = brokers(data)
    if version == 4:
        c = b2.raw()
        assert c.connect("rapd", clean=False) == (1, 0)
        got = c.expect(m5.PUBLISH)
    else:
        c, ack = persistent(b2, "rapd")
        assert ack.present == 1
        got = c.next(m5.PUBLISH)
    assert (got.payload, got.retain) == (b"kept", version == 5)
