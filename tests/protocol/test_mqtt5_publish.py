"""MQTT 5.0 PUBLISH through the network: properties passed on unchanged (user properties in
order), Message Expiry with the time left, Topic Alias, Payload Format Indicator, reason
codes on PUBACK/PUBREC, the client's Receive Maximum and Maximum Packet Size, and v5 and
3.1.1 clients on the same topics. Statement numbers are the MQTT 5.0 standard's. Raw clients
(tests/support/mqttraw5.py) check the bytes; paho-mqtt 2.x's MQTTv5 client checks the whole
path with a real library."""

import socket
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import mqttraw
import mqttraw5 as m
from mqttraw5 import broker5  # noqa: F401 (the `broker` fixture)
from mqttraw5 import MARK, until_mark
from mqttraw5 import connected as v5
from conftest import wait_for
from mqttraw5 import prop

# The smallest board's profile, and with pooled output buffers: those 8 buffers leave the
# 64-bit unix port's 100k heap too little for the v5 modules (16.5 kB here) and two clients
# publishing, so that run gets a larger heap (docs/mqtt5.md).


def sub5(broker, cid, *filters, properties=(), **kw):
    """A v5 client subscribed to (filter, options) pairs and to MARK."""
    c = v5(broker, cid, **kw)
    c.send(m.subscribe(1, *filters, (MARK, 0), properties=properties))
    a = c.next(m.SUBACK)
    assert all(x < 3 for x in a.codes), a.codes
    return c


def mark(c):
    c.send(m.publish(MARK, b"."))


def published(c, *args, **kw):
    """c sends m.publish(*args, **kw) and goes through the acknowledgement flow of its QoS;
    the PUBACK/PUBREC's reason code (None at QoS 0)."""
    c.send(m.publish(*args, **kw))
    pid = kw.get("pid")
    if not kw.get("qos"):
        return None
    if kw["qos"] == 1:
        a = c.next(m.PUBACK)
        assert a.pid == pid
        return a.code
    a = c.next(m.PUBREC)
    assert a.pid == pid
    c.send(m.ack(m.PUBREL, pid))
    assert c.next(m.PUBCOMP).pid == pid
    return a.code


PROPS = [
    (m.PAYLOAD_FORMAT, 1),
    (m.USER_PROPERTY, ("b", "2")),
    (m.CONTENT_TYPE, "text/plain"),
    (m.USER_PROPERTY, ("a", "1")),
    (m.RESPONSE_TOPIC, "reply/here"),
    (m.CORRELATION_DATA, b"\x00\x01cid"),
    (m.USER_PROPERTY, ("b", "3")),
]


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_properties_pass_through_unchanged(broker, qos):
    """MQTT-3.3.2-4 (Payload Format Indicator), -15 (Response Topic), -16 (Correlation
    Data), -17/18 (User Properties, in their order), -20 (Content Type): what a v5 publisher
    sends reaches a v5 subscriber unchanged, at each QoS (MQTT-3.3.4-2 for the QoS)."""
    s = sub5(broker, "s", ("p/#", 2))
    p = v5(broker, "p")
    published(p, "p/x", "héllo".encode(), qos=qos, pid=5, properties=PROPS)
    mark(p)
    got = until_mark(s)
    assert len(got) == 1
    g = got[0]
    assert (g.topic, g.payload, g.qos) == (b"p/x", "héllo".encode(), qos)
    assert sorted(g.props, key=repr) == sorted(PROPS_BYTES, key=repr)
    assert [v for k, v in g.props if k == m.USER_PROPERTY] == [(b"b", b"2"), (b"a", b"1"), (b"b", b"3")]


PROPS_BYTES = [(k, (v[0].encode(), v[1].encode()) if isinstance(v, tuple) else v.encode() if isinstance(v, str) else v)
               for k, v in PROPS]


def test_message_expiry_is_forwarded_with_the_time_left(broker):
    """MQTT-3.3.2-6: the Message Expiry Interval sent on is the one received less the time the
    message waited: a QoS 1 message queued for an offline persistent subscriber for ~2 s
    arrives with at most 98 of its 100 s."""
    s = v5(broker, "exp", properties=[(m.SESSION_EXPIRY, 600)])
    s.send(m.subscribe(1, ("e/#", 1), (MARK, 0)))
    s.next(m.SUBACK)
    s.close()
    time.sleep(0.2)
    p = v5(broker, "pe")
    published(p, "e/1", b"x", qos=1, pid=1, properties=[(m.MESSAGE_EXPIRY, 100)])
    time.sleep(2.1)
    s = v5(broker, "exp", clean_start=False, properties=[(m.SESSION_EXPIRY, 600)])
    g = s.next(m.PUBLISH)
    assert g.topic == b"e/1"
    left = prop(g.props, m.MESSAGE_EXPIRY)
    assert left is not None and 90 <= left <= 98


def test_an_expired_message_is_not_sent(broker):
    """MQTT-3.3.2-5: a message whose Message Expiry Interval passed before it could start out
    to an offline subscriber is dropped; one still valid is sent."""
    s = v5(broker, "gone", properties=[(m.SESSION_EXPIRY, 600)])
    s.send(m.subscribe(1, ("g/#", 1), (MARK, 0)))
    s.next(m.SUBACK)
    s.close()
    time.sleep(0.2)
    p = v5(broker, "pg")
    published(p, "g/short", b"x", qos=1, pid=1, properties=[(m.MESSAGE_EXPIRY, 1)])
    published(p, "g/long", b"y", qos=1, pid=2, properties=[(m.MESSAGE_EXPIRY, 100)])
    time.sleep(1.6)
    s = v5(broker, "gone", clean_start=False, properties=[(m.SESSION_EXPIRY, 600)])
    mark(p)
    assert [g.topic for g in until_mark(s)] == [b"g/long"]


def test_topic_alias_from_the_client(broker):
    """Section 3.3.2.3.4, MQTT-3.3.2-12: a Topic Alias set with a topic stands for it in later
    PUBLISHes with an empty topic; the subscriber gets the topic, never the alias
    (MQTT-3.3.2-7: aliases belong to one connection)."""
    s = sub5(broker, "sa", ("al/#", 0))
    p = v5(broker, "pa")
    p.send(m.publish("al/one", b"1", properties=[(m.TOPIC_ALIAS, 3)]))
    p.send(m.publish("", b"2", properties=[(m.TOPIC_ALIAS, 3)]))
    mark(p)
    got = until_mark(s)
    assert [(g.topic, g.payload) for g in got] == [(b"al/one", b"1"), (b"al/one", b"2")]
    assert all(prop(g.props, m.TOPIC_ALIAS) is None for g in got)


def test_topic_aliases_mixed_with_topics_and_remapped(broker):
    """MQTT-3.3.2-12 and section 3.3.2.3.4: an alias keeps standing for the topic last set
    for it whatever the client publishes in between: a topic without alias, the same topic
    under a second alias, another alias; and a new topic for an alias replaces the old one.
    (The broker resolves a burst on its last topic's alias without its table: each step here
    changes which topic and alias were the last ones.)"""
    s = sub5(broker, "sm", ("am/#", 0))
    p = v5(broker, "pm")
    steps = [  # (topic sent, alias sent, topic the subscriber must see)
        ("am/a", 1, "am/a"),
        ("", 1, "am/a"),
        ("am/b", None, "am/b"),  # no alias: alias 1 still stands for am/a
        ("", 1, "am/a"),
        ("am/a", 2, "am/a"),  # the last topic again, under a second alias
        ("", 1, "am/a"),
        ("", 2, "am/a"),
        ("am/c", 1, "am/c"),  # alias 1 now stands for am/c; alias 2 still for am/a
        ("", 2, "am/a"),
        ("", 1, "am/c"),
        ("am/c", None, "am/c"),
        ("", 1, "am/c"),
        ("am/d", 2, "am/d"),
        ("", 1, "am/c"),
        ("", 2, "am/d"),
    ]
    for i, (topic, alias, _) in enumerate(steps):
        p.send(m.publish(topic, b"%d" % i, properties=[] if alias is None else [(m.TOPIC_ALIAS, alias)]))
    mark(p)
    got = until_mark(s)
    assert [(g.topic, g.payload) for g in got] == [(want.encode(), b"%d" % i) for i, (_, _, want) in enumerate(steps)]


@pytest.mark.parametrize("alias,topic,code", [(0, "t", 0x94), (9, "t", 0x94), (4, "", 0x82)])
def test_bad_topic_alias_gets_disconnect(broker, alias, topic, code):
    """Section 3.3.2.3.4, MQTT-3.3.2-8/9: Topic Alias 0 or above the server's Topic Alias
    Maximum (8) is DISCONNECT 0x94; an empty topic with an alias never set is a protocol
    error, DISCONNECT 0x82 (section 4.13); then the server closes."""
    p = v5(broker, "pb")
    p.send(m.publish(topic, b"x", properties=[(m.TOPIC_ALIAS, alias)]))
    assert p.disconnected() == code
    assert broker.alive()


def test_payload_format_indicator_checks_the_payload(broker):
    """Section 3.3.2.3.2: with Payload Format Indicator 1 a payload that is not UTF-8 gets
    PUBACK/PUBREC 0x99 (Payload format invalid) and is not delivered; at QoS 0, DISCONNECT
    0x99."""
    s = sub5(broker, "sf", ("f/#", 2))
    p = v5(broker, "pf")
    for qos, ptype in ((1, m.PUBACK), (2, m.PUBREC)):
        p.send(m.publish("f/x", b"\xff\xfe", qos=qos, pid=qos, properties=[(m.PAYLOAD_FORMAT, 1)]))
        assert p.next(ptype).code == 0x99
    mark(p)
    assert until_mark(s) == []
    p.send(m.publish("f/x", b"\xc0\xaf", properties=[(m.PAYLOAD_FORMAT, 1)]))
    assert p.disconnected() == 0x99


def test_no_matching_subscribers_is_said(broker):
    """Section 3.4.2.1: PUBACK says 0x10 (No matching subscribers) when nobody subscribes to
    the topic, 0x00 when somebody does; PUBREC says 0x00 (section 3.5.2.1 allows 0x10 there
    too, a MAY: Mosquitto does not, and its tests expect 0)."""
    s = sub5(broker, "sn", ("n/yes", 1))
    p = v5(broker, "pn")
    assert published(p, "n/no", b"x", qos=1, pid=1) == 0x10
    assert published(p, "n/no", b"x", qos=2, pid=2) == 0
    assert published(p, "n/yes", b"x", qos=1, pid=3) == 0
    assert s


def test_acknowledgements_with_the_store_on(broker_factory, tmp_path):
    """With the durable store on (where the broker writes a success PUBACK/PUBREC in place):
    success is the 4-byte form without reason code (section 3.4.2.1), PUBACK 0x10 still says that
    nobody subscribes (PUBREC: success), and a subscriber with a persistent session (its copy goes to flash
    before the acknowledgement) changes none of that."""
    b = broker_factory(data=tmp_path / "data", heap="160k")
    s = sub5(b, "st-clean", ("st/yes", 2))
    p = v5(b, "st-pub")
    p.send(m.publish("st/no", b"x", qos=1, pid=1))
    assert p.expect(m.PUBACK).body == b"\x00\x01\x10"
    p.send(m.publish("st/no", b"x", qos=2, pid=2))
    assert p.expect(m.PUBREC).body == b"\x00\x02"
    p.send(m.publish("st/yes", b"a", qos=1, pid=3))
    assert p.expect(m.PUBACK).body == b"\x00\x03"
    p.send(m.publish("st/yes", b"b", qos=2, pid=4))
    assert p.expect(m.PUBREC).body == b"\x00\x04"
    p.send(m.ack(m.PUBREL, 4))
    assert p.next(m.PUBCOMP).pid == 4
    kept = v5(b, "st-kept", clean_start=False, properties=[(m.SESSION_EXPIRY, 60)])
    kept.send(m.subscribe(1, ("st/yes", 1), (MARK, 0)))
    assert all(x < 3 for x in kept.next(m.SUBACK).codes)
    p.send(m.publish("st/yes", b"c", qos=1, pid=5))
    assert p.expect(m.PUBACK).body == b"\x00\x05"
    mark(p)
    assert [x.payload for x in until_mark(s)] == [b"a", b"b", b"c"]
    assert [x.payload for x in until_mark(kept)] == [b"c"]


def test_puback_with_a_reason_code_sent_with_connect(broker):
    """A v5 client taking its session back may send, in the same write as its CONNECT, the
    PUBACK of a message it got before (here with its reason code, section 3.4.2.1): the
    acknowledgement is taken (the message is not sent again after) and the connection stays."""
    props = [(m.SESSION_EXPIRY, 60)]
    s = v5(broker, "pc-sub", properties=props)
    s.send(m.subscribe(1, ("pc/t", 1)))
    s.next(m.SUBACK)
    p = v5(broker, "pc-pub")
    assert published(p, "pc/t", b"m", qos=1, pid=1) == 0
    got = s.next(m.PUBLISH)
    s.close()
    time.sleep(0.3)
    for puback in (m.ack(m.PUBACK, got.pid, 0), None):
        c = m.Client5(broker.port)
        broker._clients.append(c)
        c.send(m.connect("pc-sub", clean_start=False, properties=props) + (puback or b""))
        assert m.Connack(c.expect(m.CONNACK)).present == 1
        c.send(mqttraw.PINGREQ)
        after = [c.recv_packet(5) for _ in range(2 if puback else 1)]
        assert after[-1] is not None and after[-1].type == m.PINGRESP, after  # not closed
        if puback:  # the DUP copy the session took back (sent before the PUBACK was read)
            assert after[0].type == m.PUBLISH and m.Publish(after[0]).pid == got.pid
        c.close()
        time.sleep(0.3)


@pytest.mark.parametrize("pkt,code", [
    (m.publish("t", b"x", properties=[(m.SUBSCRIPTION_ID, 1)]), 0x82),
    (m.publish("t", b"x", properties=[(m.RESPONSE_TOPIC, "r/#")]), 0x82),
    (m.publish("t", b"x", properties=[(m.MESSAGE_EXPIRY, 5), (m.MESSAGE_EXPIRY, 5)]), 0x82),
    (m.publish("t", b"x", properties=[(0x7F, b"\x00")]), 0x81),
    (m.publish("a/+", b"x"), 0x90),
    (m.publish("t", b"x", qos=1, pid=0), 0x81),
    (bytes((0x36,)) + m.publish("t", b"x")[1:], 0x81),
], ids=["subscription id", "response topic wildcard", "expiry twice", "unknown property", "wildcard topic",
        "packet id 0", "qos 3"])
def test_bad_publish_gets_disconnect_with_its_code(broker, pkt, code):
    """MQTT-3.3.4-6 (no Subscription Identifier from a client), MQTT-3.3.2-14 (Response Topic
    without wildcards), section 2.2.2.2 (a property twice: protocol error; unknown:
    malformed), MQTT-3.3.2-2 (Topic Name without wildcards: 0x90), MQTT-2.2.1-3 (packet id 0),
    MQTT-3.3.1-4 (QoS 3): DISCONNECT with the reason code, then close (section 4.13); the
    broker serves on."""
    p = v5(broker, "pm")
    p.send(pkt)
    assert p.disconnected() == code
    assert v5(broker, "after")


@pytest.mark.parametrize("qos", [0, 1])
def test_311_client_taking_a_v5_session_back_gets_plain_messages(broker, qos):
    """A v5 session (Session Expiry 3600) subscribed to a filter is taken back by a 3.1.1 client
    with clean session 0 (the session is the client id's, MQTT-3.1.2-4 of 3.1.1): messages
    then come to it in the 3.1.1 format, at QoS 0 as at QoS 1, with properties or without, and
    the publisher's connection stays up."""
    s5 = v5(broker, "same", clean_start=False, properties=[(m.SESSION_EXPIRY, 3600)])
    s5.send(m.subscribe(1, ("back/#", qos)))
    s5.next(m.SUBACK)
    s5.send(m.disconnect(0))
    s5.close()
    s3 = broker.raw()
    assert s3.connect("same", clean=False) == (1, 0)
    p5 = v5(broker, "p5")
    for i, props in enumerate(([], PROPS), 1):
        p5.send(m.publish("back/t", b"m%d" % i, qos=qos, pid=i, properties=props))
        if qos:
            p5.next(m.PUBACK)
        got = s3.expect(3)
        assert (got.topic, got.payload, got.qos) == (b"back/t", b"m%d" % i, qos)
        if qos:
            s3.send(mqttraw.puback(got.pid))
    p5.send(mqttraw.PINGREQ)
    p5.expect(m.PINGRESP)


@pytest.mark.parametrize("retained", [False, True])
def test_v5_client_taking_a_311_session_back_gets_a_well_formed_message_expiry(broker, retained):
    """MQTT-3.3.2-6 with section 2.2.2.2: a v5 client's QoS 1 message with a Message Expiry
    Interval held for a 3.1.1 session (clean session 0), queued while it was away or retained
    and sent at its subscription but not acknowledged, goes to the v5 client that takes the
    session back with the time left as its one property, in a well-formed property block.
    The copy kept for the 3.1.1 session once went out with those 4 bytes and no identifier
    before them (0x00: a malformed packet). A retained copy keeps RETAIN 1 (MQTT-3.3.1-6)."""
    p5 = v5(broker, "p-exp3")
    msg = m.publish("exp3/t", b"kept", qos=1, pid=1, retain=retained, properties=[(m.MESSAGE_EXPIRY, 100)])
    if retained:
        p5.send(msg)
        p5.next(m.PUBACK)
        s3 = broker.raw()
        assert s3.connect("exp3", clean=False) == (0, 0)
        s3.send(mqttraw.subscribe(1, ("exp3/#", 1)))
        s3.expect(9)
        assert s3.expect(3).payload == b"kept"  # in flight: resent to whoever takes the session
        s3.close()
    else:
        m.away_311(broker, "exp3", "exp3/#")
        p5.send(msg)
        p5.next(m.PUBACK)
    back = v5(broker, "exp3", clean_start=False, properties=[(m.SESSION_EXPIRY, 60)])
    got = back.next(m.PUBLISH)
    assert (got.payload, got.qos, got.retain) == (b"kept", 1, retained)
    assert [k for k, _ in got.props] == [m.MESSAGE_EXPIRY] and 95 <= got.props[0][1] <= 100, got.props
    back.send(m.ack(m.PUBACK, got.pid))


def test_v5_and_311_clients_share_topics(broker):
    """A 3.1.1 subscriber gets a v5 publisher's message plain (no properties, the 3.1.1
    format); a v5 subscriber gets a 3.1.1 publisher's message with an empty property block."""
    s5 = sub5(broker, "s5", ("mix/#", 1))
    s3 = broker.raw()
    assert s3.connect("s3") == (0, 0)
    s3.send(mqttraw.subscribe(1, ("mix/#", 1)))
    s3.expect(9)
    p5 = v5(broker, "p5")
    published(p5, "mix/a", b"from5", qos=1, pid=1, properties=PROPS)
    got3 = s3.expect(3)
    assert (got3.topic, got3.payload, got3.qos) == (b"mix/a", b"from5", 1)
    s3.send(mqttraw.puback(got3.pid))
    p3 = broker.raw()
    assert p3.connect("p3") == (0, 0)
    p3.send(mqttraw.publish("mix/b", b"from3", qos=1, pid=1))
    p3.expect(4)
    mark(p5)
    got5 = until_mark(s5)
    assert [(g.topic, g.payload) for g in got5] == [(b"mix/a", b"from5"), (b"mix/b", b"from3")]
    assert got5[1].props == []


def test_receive_maximum_of_the_client_bounds_what_is_in_flight(broker):
    """MQTT-3.3.4-9: no more unacknowledged QoS 1/2 PUBLISHes to a client than its Receive
    Maximum (1 here; the profile's window is 8): the second goes out after the first's
    PUBACK."""
    s = v5(broker, "rm", properties=[(m.RECEIVE_MAXIMUM, 1)])
    s.send(m.subscribe(1, ("rm/#", 1)))
    s.next(m.SUBACK)
    p = v5(broker, "prm")
    for i in (1, 2, 3):
        published(p, "rm/t", b"%d" % i, qos=1, pid=i)
    first = s.next(m.PUBLISH)
    assert first.payload == b"1"
    with pytest.raises(socket.timeout):
        s.recv_packet(0.5)
    s.send(m.ack(m.PUBACK, first.pid))
    second = s.next(m.PUBLISH)
    assert second.payload == b"2"
    with pytest.raises(socket.timeout):
        s.recv_packet(0.3)
    s.send(m.ack(m.PUBACK, second.pid, 0))
    assert s.next(m.PUBLISH).payload == b"3"


def test_maximum_packet_size_of_the_client(broker):
    """MQTT-3.1.2-24/25: a message that would make a PUBLISH above the client's Maximum
    Packet Size is not sent to it (as if it had been), one below is."""
    s = v5(broker, "mps", properties=[(m.MAXIMUM_PACKET_SIZE, 100)])
    s.send(m.subscribe(1, ("mp/#", 1), (MARK, 0)))
    s.next(m.SUBACK)
    p = v5(broker, "pmps")
    published(p, "mp/big", b"x" * 200, qos=1, pid=1)
    p.send(m.publish("mp/big0", b"x" * 200))
    published(p, "mp/small", b"y" * 10, qos=1, pid=2)
    mark(p)
    assert [g.topic for g in until_mark(s)] == [b"mp/small"]


def test_acknowledgements_with_reason_codes(broker):
    """Sections 3.4-3.7: a subscriber's PUBACK/PUBREC/PUBCOMP may carry a reason code and
    properties; a PUBREC of 0x80 or more ends the QoS 2 exchange (no PUBREL, the window slot
    is free); a PUBREL for an id no longer held (one sent again in recovery, "not an error",
    section 3.7.2.1) gets PUBCOMP 0x00, as Mosquitto answers it."""
    s = v5(broker, "ack", properties=[(m.RECEIVE_MAXIMUM, 1)])
    s.send(m.subscribe(1, ("ak/#", 2)))
    s.next(m.SUBACK)
    p = v5(broker, "pak")
    published(p, "ak/1", b"1", qos=2, pid=1)
    published(p, "ak/2", b"2", qos=2, pid=2)
    g = s.next(m.PUBLISH)
    s.send(m.ack(m.PUBREC, g.pid, 0x80, [(m.REASON_STRING, "no thanks")]))
    g2 = s.next(m.PUBLISH)  # the window (Receive Maximum 1) was freed by the 0x80
    assert g2.payload == b"2"
    s.send(m.ack(m.PUBREC, g2.pid, 0, [(m.USER_PROPERTY, ("k", "v"))]))
    assert s.next(m.PUBREL).pid == g2.pid
    s.send(m.ack(m.PUBCOMP, g2.pid, 0))
    s.send(m.ack(m.PUBREL, 777))
    a = s.next(m.PUBCOMP)
    assert (a.pid, a.code) == (777, 0)


def test_pubrec_for_an_unknown_id_gets_pubrel_0x92(broker):
    """Section 3.6.2.1: a PUBREC for a packet id the server has not in flight gets PUBREL
    0x92 Packet Identifier not found (with the fixed header flags 0010, MQTT-3.6.1-1), so the
    client's side of the exchange can end; its PUBCOMP then is ignored, as is a PUBACK or
    PUBCOMP of nothing sent, and a failed PUBREC (0x80 or more) gets nothing. The connection
    stays."""
    c = v5(broker, "unknown-rec")
    c.send(m.ack(m.PUBREC, 4321))
    p = c.expect(m.PUBREL)
    assert (p.b0, bytes(p.body)) == (0x62, b"\x10\xe1\x92")
    c.send(m.ack(m.PUBCOMP, 4321))
    c.send(m.ack(m.PUBACK, 99))
    c.send(m.ack(m.PUBREC, 98, 0x80))
    c.send(mqttraw.PINGREQ)
    assert c.recv_packet(5).type == m.PINGRESP  # nothing before it


def test_refused_qos2_publishes_do_not_count_against_receive_maximum(broker):
    """Section 4.3.3 with MQTT-3.3.4-7: a QoS 2 PUBLISH the server refuses with PUBREC 0x87 (a
    `$` topic) ends its exchange, its client sends no PUBREL: it does not count against the
    server's Receive Maximum. That many refusals and one more, then a new message, are all
    answered (the refused ids were kept as awaiting PUBREL: the one past the maximum got
    DISCONNECT 0x93)."""
    p = m.Client5(broker.port)
    broker._clients.append(p)
    rm = prop(p.connect5("pq2").props, m.RECEIVE_MAXIMUM)
    assert rm is not None and rm <= 64, rm  # the board's, max_inflight_messages
    s = sub5(broker, "sq2", ("q2/#", 2))
    for pid in range(1, rm + 2):
        p.send(m.publish("$q2/t", b"no", qos=2, pid=pid))
        assert p.next(m.PUBREC).code == 0x87
    assert published(p, "q2/t", b"yes", qos=2, pid=rm + 2) == 0
    mark(p)
    assert [g.payload for g in until_mark(s)] == [b"yes"]


def test_packet_id_of_a_refused_qos2_publish_may_be_reused(broker):
    """Section 4.3.3 with 2.2.1 (MQTT-2.2.1-3: an id is free again once its exchange ends): a
    QoS 2 PUBLISH refused with PUBREC 0x87 ends its exchange, so a new message under the same
    packet id is a new message, delivered (it was taken for a resent duplicate: PUBREC 0,
    PUBCOMP, and never delivered)."""
    s = sub5(broker, "sq2r", ("q2r/#", 2))
    p = v5(broker, "pq2r")
    p.send(m.publish("$q2r/t", b"no", qos=2, pid=1))
    assert p.next(m.PUBREC).code == 0x87
    assert published(p, "q2r/t", b"yes", qos=2, pid=1) == 0
    mark(p)
    assert [g.payload for g in until_mark(s)] == [b"yes"], "the message under the reused packet id was lost"


def _raw(client, ptype):
    """The next packet, of type ptype, as its bytes on the wire."""
    p = client.expect(ptype)
    return bytes((p.b0, len(p.body))) + bytes(p.body)


@pytest.mark.parametrize("form", ["short", "code 0", "code 0 and no properties"])
def test_acknowledgements_of_success_in_their_short_form(broker, form):
    """MQTT 5.0 sections 3.4.2.1, 3.5.2.1, 3.6.2.1, 3.7.2.1: the reason code 0x00 and the
    property length may be left out when the code is 0 and there are no properties. The
    server's PUBACK, PUBREC, PUBREL and PUBCOMP of success are the short form (remaining
    length 2), as Mosquitto writes them; the three forms a client may send (no reason code;
    code 0; code 0 and a property length of 0, section 3.4.2.2.1) are all taken."""
    code, props = {"short": (None, None), "code 0": (0, None), "code 0 and no properties": (0, [])}[form]
    s = v5(broker, "sf")
    s.send(m.subscribe(1, ("sf/#", 2)))
    s.next(m.SUBACK)
    p = v5(broker, "pf")
    p.send(m.publish("sf/1", b"1", qos=1, pid=5))
    assert _raw(p, m.PUBACK) == b"\x40\x02\x00\x05"
    g = s.next(m.PUBLISH)
    s.send(m.ack(m.PUBACK, g.pid, code, props))
    p.send(m.publish("sf/2", b"2", qos=2, pid=6))
    assert _raw(p, m.PUBREC) == b"\x50\x02\x00\x06"
    p.send(m.ack(m.PUBREL, 6, code, props))
    assert _raw(p, m.PUBCOMP) == b"\x70\x02\x00\x06"
    g = s.next(m.PUBLISH)
    assert (g.payload, g.qos) == (b"2", 2)
    s.send(m.ack(m.PUBREC, g.pid, code, props))
    assert _raw(s, m.PUBREL) == bytes((0x62, 2, g.pid >> 8, g.pid & 0xFF))
    s.send(m.ack(m.PUBCOMP, g.pid, code, props))
    # Every exchange ended: the subscriber's window is empty and the connection open
    p.send(m.publish("sf/3", b"3", qos=1, pid=7))
    assert _raw(p, m.PUBACK) == b"\x40\x02\x00\x07"
    assert s.next(m.PUBLISH).payload == b"3"


def test_paho_mqttv5_round_trip_with_properties(broker):
    """paho-mqtt 2.x MQTTv5 publisher and subscriber at QoS 0, 1 and 2: every message
    arrives with its user properties in order, content type, response topic, correlation
    data, and the subscriber's Subscription Identifier (MQTT-3.3.4-3)."""
    got = []
    clients = []

    def make(cid):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
        c.on_message = lambda cl, u, msg: got.append(msg)
        c.connect(broker.host, broker.port, 30)
        c.loop_start()
        assert wait_for(c.is_connected)
        clients.append(c)
        return c

    try:
        s = make("paho-s")
        sp = Properties(PacketTypes.SUBSCRIBE)
        sp.SubscriptionIdentifier = 42
        done = []
        s.on_subscribe = lambda *a: done.append(a)
        s.subscribe("pp/#", qos=2, properties=sp)
        assert wait_for(lambda: done)
        p = make("paho-p")
        pp = Properties(PacketTypes.PUBLISH)
        pp.UserProperty = [("z", "1"), ("a", "2")]
        pp.ContentType = "application/json"
        pp.ResponseTopic = "pp/reply"
        pp.CorrelationData = b"corr"
        for q in (0, 1, 2):
            p.publish("pp/t", b"m%d" % q, qos=q, properties=pp).wait_for_publish(5)
        assert wait_for(lambda: len(got) == 3)
        assert sorted(msg.payload for msg in got) == [b"m0", b"m1", b"m2"]
        for msg in got:
            pr = msg.properties
            assert pr.UserProperty == [("z", "1"), ("a", "2")]
            assert (pr.ContentType, pr.ResponseTopic, pr.CorrelationData) == ("application/json", "pp/reply", b"corr")
            assert pr.SubscriptionIdentifier == [42]
    finally:
        for c in clients:
            c.disconnect()
            c.loop_stop()


def test_a_bridge_state_topic_may_be_published(broker):
    """Section 4.7.2 leaves `$` topics to the server: ubroker refuses a client's PUBLISH to
    them (0x87) but for `$SYS/broker/connection/NAME/state`, where a Mosquitto bridge says
    whether its link is up, as Mosquitto does (its test 03-publish-dollar-v5: nobody
    subscribes, so 0x10)."""
    p = v5(broker, "pub-state")
    assert published(p, "$SYS/broker/uptime", b"x", qos=1, pid=1) == 0x87
    assert published(p, "$SYS/broker/connection/me", b"x", qos=1, pid=2) == 0x87
    assert published(p, "$SYS/broker/connection/me/state", b"1", qos=1, pid=3) == 0x10
