"""CONNECT, CONNACK, PINGREQ and DISCONNECT as MQTT 3.1.1 section 3.1, 3.2, 3.12 and 3.14
require of a server, checked over raw sockets against the real broker (esp32 profile)."""

import socket
import time

import pytest

import mqttraw as m
from marker import until_pingresp

CONNACK, PUBLISH, SUBACK, PINGRESP = 2, 3, 9, 13


def assert_closed_not_accepted(raw, timeout=5.0):
    """The broker closes the connection, and never says CONNACK 0 (accepted) before it."""
    deadline = time.time() + timeout
    while True:
        left = deadline - time.time()
        assert left > 0, "broker kept the connection open"
        try:
            p = raw.recv_packet(left)
        except socket.timeout:
            raise AssertionError("broker kept the connection open")
        except OSError:
            return  # reset: closed
        if p is None:
            return
        assert not (p.type == CONNACK and p.body[1] == 0), "broker accepted: %r" % (p,)


def still_serves(broker):
    """A fresh client can still connect and ping: the broker survived what came before."""
    r = broker.raw()
    assert r.connect("alive-check") == (0, 0)
    assert until_pingresp(r) == []
    r.send(m.DISCONNECT)


# ---------------------------------------------------------------------- protocol name / level


@pytest.mark.parametrize("level", [3, 6, 0, 255])
def test_unknown_protocol_level_gets_connack_1_then_close(broker, level):
    """MQTT-3.1.2-2: an unsupported protocol level gets CONNACK 0x01 and the connection is
    closed; MQTT-3.2.2-4/5: session present is 0 with a non-zero code, then close."""
    r = broker.raw()
    r.send(m.connect("lvl", level=level))
    p = r.expect(CONNACK)
    assert bytes(p.body) == b"\x00\x01"
    assert r.closed()
    still_serves(broker)


@pytest.mark.parametrize("name", [b"MQTX", b"mqtt", b"MQIsdp\x00", b"", b"MQ"])
def test_bad_protocol_name_closes(broker, name):
    """MQTT-3.1.2-1: a protocol name that is not 'MQTT' may be refused by closing; it must not
    be accepted."""
    r = broker.raw()
    r.send(m.connect("name", proto=name, level=4))
    assert_closed_not_accepted(r)
    still_serves(broker)


def test_mqtt31_mqisdp_level3_accepted(broker):
    """MQTT 3.1 clients say 'MQIsdp' with level 3; the broker accepts them and serves them."""
    r = broker.raw()
    assert r.connect("old-31", proto=b"MQIsdp", level=3) == (0, 0)
    r.send(m.subscribe(1, ("v31/t", 0)))
    assert bytes(r.expect(SUBACK).body) == b"\x00\x01\x00"
    r.send(m.publish("v31/t", b"hello"))
    p = r.expect(PUBLISH)
    assert (p.topic, p.payload) == (b"v31/t", b"hello")


def test_mqisdp_with_level_4_is_not_accepted(broker):
    """MQTT-3.1.2-2: 'MQIsdp' is only level 3; any other level is not supported."""
    r = broker.raw()
    r.send(m.connect("mix", proto=b"MQIsdp", level=4))
    assert_closed_not_accepted(r)


# ---------------------------------------------------------------------- flags


def test_reserved_connect_flag_closes(broker):
    """MQTT-3.1.2-3: the reserved bit 0 of the connect flags must be 0, else disconnect."""
    r = broker.raw()
    r.send(m.connect("resv", flags=0x03))  # clean session + reserved
    assert_closed_not_accepted(r)
    still_serves(broker)


@pytest.mark.parametrize("flags,rule", [
    (0x02 | 0x08, "MQTT-3.1.2-13 will QoS 1 without will flag"),
    (0x02 | 0x10, "MQTT-3.1.2-13 will QoS 2 without will flag"),
    (0x02 | 0x20, "MQTT-3.1.2-15 will retain without will flag"),
])
def test_will_fields_without_will_flag_close(broker, flags, rule):
    """MQTT-3.1.2-11/13/15: with will flag 0, will QoS and will retain must be 0."""
    r = broker.raw()
    r.send(m.connect("wf", flags=flags))
    assert_closed_not_accepted(r)


def test_will_qos_3_closes(broker):
    """MQTT-3.1.2-14: will QoS must not be 3."""
    r = broker.raw()
    pkt = m.connect("wq3", will=("w/t", b"x", 3, False))
    r.send(pkt)
    assert_closed_not_accepted(r)
    still_serves(broker)


def test_will_flag_without_will_fields_closes(broker):
    """MQTT-3.1.2-9: with will flag 1 the will topic and message must be in the payload; a
    CONNECT whose payload ends after the client id is malformed."""
    r = broker.raw()
    r.send(m.connect("wnone", flags=0x02 | 0x04))
    assert_closed_not_accepted(r)


def test_password_flag_without_username_flag_closes(broker):
    """MQTT-3.1.2-22: if the user name flag is 0 the password flag must be 0."""
    r = broker.raw()
    r.send(m.connect("pw", password=b"secret"))  # sets 0x40 only
    assert_closed_not_accepted(r)
    still_serves(broker)


def test_username_flag_without_username_field_closes(broker):
    """MQTT-3.1.2-19: with the user name flag set, a user name must be present."""
    r = broker.raw()
    r.send(m.connect("un", flags=0x02 | 0x80))
    assert_closed_not_accepted(r)


def test_username_and_binary_password_accepted(broker):
    """MQTT-3.1.3-11 / 3.1.3.5: user name is UTF-8, the password is binary data; with
    allow_anonymous (default) a client sending both is accepted, whatever bytes the password
    holds."""
    r = broker.raw()
    assert r.connect("up", username="user-é", password=b"\x00\xff\xfe") == (0, 0)
    assert until_pingresp(r) == []


# ---------------------------------------------------------------------- client id


def test_empty_client_id_clean_session_gets_generated_ids(broker):
    """MQTT-3.1.3-6: a zero-length client id with clean session is accepted and the server
    assigns a unique id: two such clients live side by side (had they been given the same id,
    the second would have taken over the first, MQTT-3.1.4-2)."""
    a = broker.raw()
    assert a.connect("", clean=True) == (0, 0)
    b = broker.raw()
    assert b.connect("", clean=True) == (0, 0)
    for r, t in ((a, "gen/a"), (b, "gen/b")):
        r.send(m.subscribe(1, (t, 0)))
        r.expect(SUBACK)
    for r, t in ((a, "gen/a"), (b, "gen/b")):
        r.send(m.publish(t, t.encode()))
        p = r.expect(PUBLISH)
        assert p.payload == t.encode()
    assert until_pingresp(a) == []
    assert until_pingresp(b) == []


def test_empty_client_id_persistent_session_gets_connack_2_and_close(broker):
    """MQTT-3.1.3-8: zero-length client id with clean session 0 gets CONNACK 0x02
    (identifier rejected), then the connection is closed (MQTT-3.2.2-4/5)."""
    r = broker.raw()
    r.send(m.connect("", clean=False))
    p = r.expect(CONNACK)
    assert bytes(p.body) == b"\x00\x02"
    assert r.closed()
    still_serves(broker)


def test_23_char_alphanumeric_client_id_accepted(broker):
    """MQTT-3.1.3-5: the server must allow client ids of 1 to 23 bytes of [0-9a-zA-Z]."""
    cid = "abcdefghijklmnopqrstuvW"[:23]
    assert len(cid) == 23
    r = broker.raw()
    assert r.connect(cid) == (0, 0)
    r2 = broker.raw()
    assert r2.connect("0") == (0, 0)


def test_multibyte_utf8_client_id_accepted(broker):
    """MQTT-1.5.3 / 3.1.3-4: well-formed UTF-8 outside ASCII (2-, 3- and 4-byte sequences,
    including U+FEFF which must not be stripped, MQTT-1.5.3-3) is a valid client id."""
    r = broker.raw()
    assert r.connect("é€\U0001F600\ufeff") == (0, 0)
    assert until_pingresp(r) == []


BAD_UTF8 = {
    "invalid-byte-ff": b"ab\xffcd",
    "lone-continuation": b"a\x80b",
    "truncated-sequence": b"ab\xe2\x82",
    "overlong-slash": b"a\xc0\xafb",
    "overlong-3-byte": b"a\xe0\x80\xafb",
    "above-u10ffff": b"a\xf4\x90\x80\x80b",
    "nul-u0000": b"ab\x00cd",
    "surrogate-d800": b"a\xed\xa0\x80b",
    "surrogate-dfff": b"a\xed\xbf\xbfb",
}


def _connect_with(field, bad):
    if field == "client-id":
        return m.connect(bad)
    if field == "will-topic":
        return m.connect("wt-utf8", will=(bad, b"x", 0, False))
    return m.connect("un-utf8", username=bad)


@pytest.mark.parametrize("field", ["client-id", "will-topic", "username"])
@pytest.mark.parametrize("kind", sorted(BAD_UTF8))
def test_ill_formed_utf8_in_connect_closes(broker, field, kind):
    """MQTT-1.5.3-1 (ill-formed UTF-8, including overlong forms, code points above U+10FFFF
    and UTF-16 surrogates U+D800..U+DFFF encoded in UTF-8) and MQTT-1.5.3-2 (U+0000): a
    client id (MQTT-3.1.3-4), will topic (MQTT-3.1.3-10) or user name (MQTT-3.1.3-11) holding
    one makes the server close the connection without accepting it."""
    r = broker.raw()
    r.send(_connect_with(field, BAD_UTF8[kind]))
    assert_closed_not_accepted(r)


# ---------------------------------------------------------------------- packet order


@pytest.mark.parametrize("first", [
    m.PINGREQ,
    m.publish("early/t", b"x"),
    m.subscribe(1, ("early/#", 0)),
    m.DISCONNECT,
    m.puback(1),
])
def test_first_packet_must_be_connect(broker, first):
    """MQTT-3.1.0-1: the first packet from a client must be CONNECT; anything else closes the
    connection without a response (no PINGRESP, SUBACK, ...)."""
    r = broker.raw()
    r.send(first)
    p = r.recv_packet(5.0)
    assert p is None, "broker answered a packet sent before CONNECT: %r" % (p,)
    still_serves(broker)


def test_publish_before_connect_is_not_delivered(broker):
    """MQTT-3.1.0-1: a PUBLISH sent before CONNECT is not processed."""
    sub = broker.raw()
    sub.connect("early-sub")
    sub.send(m.subscribe(1, ("early/x", 0)))
    sub.expect(SUBACK)
    r = broker.raw()
    r.send(m.publish("early/x", b"sneaky") + m.connect("early-pub"))
    assert r.closed()
    assert until_pingresp(sub) == []


def test_second_connect_closes(broker):
    """MQTT-3.1.0-2: a second CONNECT on a connection is a protocol violation: close."""
    r = broker.raw()
    assert r.connect("twice") == (0, 0)
    r.send(m.connect("twice"))
    assert r.closed()
    still_serves(broker)


def test_data_after_rejected_connect_not_processed(broker):
    """MQTT-3.1.4-5: after refusing a CONNECT (here CONNACK 1) the server must not process
    anything else the client sent: a retained PUBLISH right behind it is not stored."""
    r = broker.raw()
    r.send(m.connect("rej", level=9) + m.publish("rej/t", b"should-not-exist", retain=True))
    p = r.expect(CONNACK)
    assert p.body[1] == 1
    assert r.closed()
    s = broker.raw()
    s.connect("rej-check")
    s.send(m.subscribe(1, ("rej/#", 0)))
    s.expect(SUBACK)
    assert until_pingresp(s) == []


# ---------------------------------------------------------------------- takeover, session present


def test_same_client_id_takes_over_and_closes_old_connection(broker):
    """MQTT-3.1.4-2: a CONNECT with the client id of a connected client disconnects the
    existing client; the new one is served."""
    old = broker.raw()
    assert old.connect("dup-id") == (0, 0)
    new = broker.raw()
    assert new.connect("dup-id") == (0, 0)
    assert old.closed()
    assert until_pingresp(new) == []
    # The old session's connection really is gone: the new one gets what is published.
    new.send(m.subscribe(1, ("dup/t", 0)))
    new.expect(SUBACK)
    new.send(m.publish("dup/t", b"x"))
    assert new.expect(PUBLISH).payload == b"x"


def test_takeover_of_persistent_session_keeps_it(broker):
    """MQTT-3.1.4-2 with MQTT-3.1.2-4 and MQTT-3.2.2-2: a takeover with clean session 0
    resumes the existing session (session present 1, subscription still there)."""
    old = broker.raw()
    assert old.connect("dup-p", clean=False) == (0, 0)
    old.send(m.subscribe(1, ("dupp/t", 1)))
    old.expect(SUBACK)
    new = broker.raw()
    assert new.connect("dup-p", clean=False) == (1, 0)
    assert old.closed()
    pub = broker.raw()
    pub.connect("dup-p-pub")
    pub.send(m.publish("dupp/t", b"still-subscribed"))
    p = new.expect(PUBLISH)
    assert p.payload == b"still-subscribed"


def test_session_present_0_with_clean_session(broker):
    """MQTT-3.2.2-1: clean session 1 gets session present 0 and return code 0, even when a
    persistent session for that id was stored."""
    r = broker.raw()
    assert r.connect("sp-clean", clean=False) == (0, 0)
    r.send(m.DISCONNECT)
    assert r.closed()
    r2 = broker.raw()
    assert r2.connect("sp-clean", clean=True) == (0, 0)


def test_session_present_0_for_new_persistent_session(broker):
    """MQTT-3.2.2-3: clean session 0 with no stored session gets session present 0."""
    r = broker.raw()
    assert r.connect("sp-new", clean=False) == (0, 0)


def test_session_present_1_when_persistent_session_resumed(broker):
    """MQTT-3.2.2-2: clean session 0 with a stored session gets session present 1."""
    r = broker.raw()
    assert r.connect("sp-old", clean=False) == (0, 0)
    r.send(m.DISCONNECT)
    assert r.closed()
    r2 = broker.raw()
    assert r2.connect("sp-old", clean=False) == (1, 0)
    r2.close()
    r3 = broker.raw()
    assert r3.connect("sp-old", clean=False) == (1, 0)


# ---------------------------------------------------------------------- keepalive, ping


def test_keepalive_silent_client_closed_after_one_and_a_half_periods(broker):
    """MQTT-3.1.2-24: with keepalive 1 s, a client that sends nothing more is disconnected
    after 1.5 s: not before about 1 s, and well within a few seconds."""
    r = broker.raw()
    t0 = time.time()
    assert r.connect("ka-silent", keepalive=1) == (0, 0)
    assert r.closed(timeout=6.0), "silent client with keepalive 1 was never disconnected"
    elapsed = time.time() - t0
    assert elapsed >= 1.0, "disconnected after %.2f s, before the keepalive allows" % elapsed
    assert elapsed <= 4.0, "disconnected only after %.2f s" % elapsed


def test_keepalive_pinging_client_stays_connected(broker):
    """MQTT-3.1.2-24 / MQTT-3.12.4-1: a keepalive 1 client that sends PINGREQ every 0.5 s
    is answered each time and stays connected well past 1.5 s."""
    r = broker.raw()
    assert r.connect("ka-ping", keepalive=1) == (0, 0)
    t_end = time.time() + 3.5
    while time.time() < t_end:
        assert until_pingresp(r) == []
        time.sleep(0.5)
    assert until_pingresp(r) == []


def test_keepalive_reset_by_any_packet(broker):
    """MQTT-3.1.2-24: any control packet (here QoS 0 PUBLISH) counts, not only PINGREQ."""
    r = broker.raw()
    assert r.connect("ka-pub", keepalive=1) == (0, 0)
    t_end = time.time() + 3.5
    while time.time() < t_end:
        r.send(m.publish("ka/any", b"x"))
        time.sleep(0.5)
    assert until_pingresp(r) == []


def test_keepalive_zero_disables_timeout(broker):
    """3.1.2.10: keepalive 0 turns the mechanism off: a silent client is not disconnected."""
    r = broker.raw()
    assert r.connect("ka-zero", keepalive=0) == (0, 0)
    assert not r.closed(timeout=2.6)
    assert until_pingresp(r) == []


def test_pingreq_gets_pingresp(broker):
    """MQTT-3.12.4-1: the server answers PINGREQ with PINGRESP (0xD0 0x00)."""
    r = broker.raw()
    assert r.connect("ping") == (0, 0)
    for _ in range(3):
        r.send(m.PINGREQ)
        p = r.expect(PINGRESP)
        assert p.b0 == 0xD0 and bytes(p.body) == b""


# ---------------------------------------------------------------------- disconnect, timeouts


def test_disconnect_closes_connection_without_will(broker):
    """MQTT-3.14.4-3 and 3.14.4: on DISCONNECT the server drops the will and closes the
    connection. A message published afterwards on the will topic arrives alone."""
    sub = broker.raw()
    sub.connect("dc-sub")
    sub.send(m.subscribe(1, ("dc/will", 0)))
    sub.expect(SUBACK)
    r = broker.raw()
    assert r.connect("dc", will=("dc/will", b"WILL", 0, False)) == (0, 0)
    r.send(m.DISCONNECT)
    assert r.closed()
    pub = broker.raw()
    pub.connect("dc-pub")
    pub.send(m.publish("dc/will", b"marker"))
    p = sub.expect(PUBLISH)
    assert p.payload == b"marker"


def test_connect_timeout_closes_silent_socket(broker_factory):
    """A socket that never sends CONNECT is closed after connect_timeout (here 1 s), so
    half-open connections cannot hold client slots."""
    b = broker_factory(config="connect_timeout 1\n")
    r = b.raw()
    t0 = time.time()
    assert r.closed(timeout=6.0), "socket without CONNECT never closed"
    assert time.time() - t0 >= 0.8
    still_serves(b)


def test_connect_timeout_closes_partial_connect(broker_factory):
    """A client that sends only part of a CONNECT is closed after connect_timeout too."""
    b = broker_factory(config="connect_timeout 1\n")
    r = b.raw()
    r.send(m.connect("partial")[:7])
    assert r.closed(timeout=6.0)
    still_serves(b)


def test_many_refused_connects_leave_broker_serving(broker):
    """Refused (CONNACK 1, MQTT-3.1.2-2) and malformed (MQTT-3.1.2-3) CONNECTs cost the
    broker nothing it keeps: after a run of them it still accepts and serves clients, with the
    connected count intact ($SYS/broker/clients/connected counts the one client then
    connected, none of the twenty refused)."""
    for i in range(20):
        r = broker.raw()
        r.send(m.connect("bad%d" % i, level=7) if i % 2 else m.connect("bad%d" % i, flags=1))
        assert r.closed()
        r.close()
    r = broker.raw()
    assert r.connect("count-check") == (0, 0)
    r.send(m.subscribe(1, ("$SYS/broker/clients/connected", 0)))
    r.expect(SUBACK)
    p = r.expect(PUBLISH)
    assert (p.topic, p.payload) == (b"$SYS/broker/clients/connected", b"1")
    still_serves(broker)
