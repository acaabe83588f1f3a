"""Malformed packets: each one closes the connection that sent it (MQTT-4.8.0-1) without any
answer, and never disturbs anyone else. One broker serves the whole module; a witness pair of
clients connected at the start does a publish/subscribe round trip after every case, and the
witness subscriber (subscribed to '#') must see nothing that a malformed PUBLISH carried.

Packets are built by hand here and in tests/support/mqttraw.py, independently of the firmware codec."""

import time

import pytest

import mqttraw
from mqttraw import connect, packet, publish, subscribe, unsubscribe
from robust_util import Witness, broker_problems, module_broker, try_send, u16, until_closed


@pytest.fixture(scope="module")
def mbroker(tmp_path_factory):
    yield from module_broker(tmp_path_factory, "malformed")


@pytest.fixture(scope="module")
def witness(mbroker):
    return Witness(mbroker)


def s(x):
    return mqttraw.s(x)


MAX_PACKET = 2048  # boards/esp32.conf max_packet_size, the profile the broker runs with

# (id, valid CONNECT first?, bytes). Each id names the rule it breaks.
CASES = [
    # --- Remaining Length (2.2.3: at most four bytes)
    ("remaining-length-5-bytes-publish", True, b"\x30\x80\x80\x80\x80\x01"),
    ("remaining-length-5-bytes-value-0", True, b"\xc0\x80\x80\x80\x80\x00"),
    ("remaining-length-5-bytes-before-connect", False, b"\x10\xff\xff\xff\xff\x7f"),
    # --- truncated fields: a string length that runs past the end of the packet
    ("truncated-publish-topic-length", True, packet(0x30, u16(10) + b"abc")),
    ("truncated-publish-qos1-no-packet-id", True, packet(0x32, s("a/b"))),
    ("truncated-publish-qos1-half-packet-id", True, packet(0x32, s("a/b") + b"\x01")),
    ("truncated-publish-empty-body", True, b"\x30\x00"),
    ("truncated-publish-one-byte-body", True, b"\x30\x01\x00"),
    ("truncated-subscribe-filter-length", True, packet(0x82, u16(1) + u16(20) + b"a/b")),
    ("truncated-subscribe-no-qos-byte", True, packet(0x82, u16(1) + s("a/b"))),
    ("truncated-subscribe-no-packet-id", True, packet(0x82, b"\x01")),
    ("truncated-unsubscribe-filter-length", True, packet(0xA2, u16(1) + u16(9) + b"a")),
    ("truncated-connect-client-id", False,
     packet(0x10, s("MQTT") + b"\x04\x02\x00\x3c" + u16(30) + b"abc")),
    ("truncated-connect-protocol-name", False, packet(0x10, u16(4) + b"MQ")),
    ("truncated-connect-variable-header", False, packet(0x10, s("MQTT") + b"\x04\x02")),
    ("truncated-connect-will-payload", False,
     packet(0x10, s("MQTT") + b"\x04\x06\x00\x3c" + s("cid") + s("w/t") + u16(50) + b"x")),
    ("truncated-connect-username", False,
     packet(0x10, s("MQTT") + b"\x04\x82\x00\x3c" + s("cid") + u16(40))),
    ("trailing-bytes-after-connect-payload", False,
     packet(0x10, s("MQTT") + b"\x04\x02\x00\x3c" + s("cid") + b"xyz")),
    # --- reserved fixed-header flags (MQTT-2.2.2-1, MQTT-2.2.2-2)
    ("MQTT-2.2.2-2-connect-flags-1", False, bytes((0x11,)) + connect("f1")[1:]),
    ("MQTT-2.2.2-2-connect-flags-8", False, bytes((0x18,)) + connect("f8")[1:]),
    ("MQTT-2.2.2-2-puback-flags-2", True, packet(0x42, u16(1))),
    ("MQTT-2.2.2-2-pubrec-flags-1", True, packet(0x51, u16(1))),
    ("MQTT-3.6.1-1-pubrel-flags-0", True, packet(0x60, u16(1))),
    ("MQTT-3.6.1-1-pubrel-flags-3", True, packet(0x63, u16(1))),
    ("MQTT-2.2.2-2-pubcomp-flags-4", True, packet(0x74, u16(1))),
    ("MQTT-3.8.1-1-subscribe-flags-0", True, packet(0x80, u16(1) + s("a/b") + b"\x00")),
    ("MQTT-3.8.1-1-subscribe-flags-3", True, packet(0x83, u16(1) + s("a/b") + b"\x00")),
    ("MQTT-3.10.1-1-unsubscribe-flags-0", True, packet(0xA0, u16(1) + s("a/b"))),
    ("MQTT-3.10.1-1-unsubscribe-flags-8", True, packet(0xA8, u16(1) + s("a/b"))),
    ("MQTT-2.2.2-2-pingreq-flags-1", True, b"\xc1\x00"),
    ("MQTT-2.2.2-2-disconnect-flags-2", True, b"\xe2\x00"),
    ("MQTT-3.3.1-4-publish-qos-3", True, packet(0x36, s("mal/q3") + u16(7) + b"x")),
    ("MQTT-3.3.1-4-publish-qos-3-retain-dup", True, packet(0x3F, s("mal/q3r") + u16(7) + b"x")),
    # --- packet identifier 0 (MQTT-2.3.1-1)
    ("MQTT-2.3.1-1-publish-qos1-pid-0", True, publish("mal/pid0", b"x", qos=1, pid=0)),
    ("MQTT-2.3.1-1-publish-qos2-pid-0", True, publish("mal/pid0", b"x", qos=2, pid=0)),
    ("MQTT-2.3.1-1-subscribe-pid-0", True, subscribe(0, ("a/b", 0))),
    ("MQTT-2.3.1-1-unsubscribe-pid-0", True, unsubscribe(0, "a/b")),
    # --- reserved and server-to-client packet types sent by a client
    ("type-0-reserved", True, b"\x00\x00"),
    ("type-15-reserved", True, b"\xf0\x00"),
    ("type-0-reserved-before-connect", False, b"\x00\x00"),
    ("type-15-reserved-before-connect", False, b"\xf0\x00"),
    ("server-only-connack", True, b"\x20\x02\x00\x00"),
    ("server-only-suback", True, b"\x90\x03\x00\x01\x00"),
    ("server-only-unsuback", True, b"\xb0\x02\x00\x01"),
    ("server-only-pingresp", True, b"\xd0\x00"),
    # --- wrong remaining length of fixed-size packets
    ("puback-remaining-length-0", True, b"\x40\x00"),
    ("puback-remaining-length-1", True, b"\x40\x01\x00"),
    ("puback-remaining-length-3", True, b"\x40\x03\x00\x01\x00"),
    ("pubrec-remaining-length-3", True, b"\x50\x03\x00\x01\x00"),
    ("pubrel-remaining-length-1", True, b"\x62\x01\x01"),
    ("pubcomp-remaining-length-4", True, b"\x70\x04\x00\x01\x00\x00"),
    ("pingreq-remaining-length-1", True, b"\xc0\x01\x00"),
    ("disconnect-remaining-length-1", True, b"\xe0\x01\x00"),
    # --- strings that are not MQTT UTF-8 (MQTT-1.5.3-1, MQTT-1.5.3-2)
    ("MQTT-1.5.3-1-publish-topic-invalid-byte", True, packet(0x30, s(b"mal/\xff") + b"x")),
    ("MQTT-1.5.3-1-publish-topic-overlong", True, packet(0x30, s(b"mal/\xc0\xaf") + b"x")),
    ("MQTT-1.5.3-1-publish-topic-overlong-3-bytes", True, packet(0x30, s(b"mal/\xe0\x80\xaf") + b"x")),
    ("MQTT-1.5.3-1-publish-topic-above-U+10FFFF", True, packet(0x30, s(b"mal/\xf4\x90\x80\x80") + b"x")),
    ("MQTT-1.5.3-1-publish-topic-surrogate", True, packet(0x30, s(b"mal/\xed\xa0\x80") + b"x")),
    ("MQTT-1.5.3-1-publish-topic-cut-sequence", True, packet(0x30, s(b"mal/\xe2\x82") + b"x")),
    ("MQTT-1.5.3-2-publish-topic-nul", True, packet(0x30, s(b"mal/\x00") + b"x")),
    ("MQTT-1.5.3-1-subscribe-filter-invalid", True, packet(0x82, u16(1) + s(b"\xfe/x") + b"\x00")),
    ("MQTT-1.5.3-1-subscribe-filter-surrogate", True,
     packet(0x82, u16(1) + s(b"a/\xed\xbf\xbf") + b"\x00")),
    ("MQTT-1.5.3-1-unsubscribe-filter-invalid", True, packet(0xA2, u16(1) + s(b"a/\x80"))),
    ("MQTT-1.5.3-1-connect-client-id-invalid", False,
     packet(0x10, s("MQTT") + b"\x04\x02\x00\x3c" + s(b"id\xff"))),
    ("MQTT-1.5.3-1-connect-will-topic-invalid", False,
     packet(0x10, s("MQTT") + b"\x04\x06\x00\x3c" + s("cid-w") + s(b"w/\xc3") + s("m"))),
    ("MQTT-1.5.3-2-connect-username-nul", False,
     packet(0x10, s("MQTT") + b"\x04\x82\x00\x3c" + s("cid-u") + s(b"u\x00"))),
    # --- topic and filter rules
    ("MQTT-3.3.2-2-publish-topic-with-plus", True, packet(0x30, s("mal/+") + b"x")),
    ("MQTT-3.3.2-2-publish-topic-with-hash", True, packet(0x30, s("mal/#") + b"x")),
    ("MQTT-4.7.3-1-publish-empty-topic", True, packet(0x30, s("") + b"x")),
    ("MQTT-4.7.1-2-subscribe-hash-not-last", True, subscribe(3, ("a/#/b", 0))),
    ("MQTT-4.7.1-2-subscribe-hash-inside-level", True, subscribe(3, ("a/b#", 0))),
    ("MQTT-4.7.1-3-subscribe-plus-inside-level", True, subscribe(3, ("a/b+/c", 0))),
    ("MQTT-4.7.3-1-subscribe-empty-filter", True, subscribe(3, ("", 0))),
    ("MQTT-3.8.3-3-subscribe-no-filter", True, packet(0x82, u16(4))),
    ("MQTT-3.8.3-4-subscribe-qos-3", True, subscribe(5, ("a/b", 3))),
    ("MQTT-3.8.3-4-subscribe-reserved-bits", True, packet(0x82, u16(5) + s("a/b") + b"\x41")),
    ("MQTT-3.10.3-2-unsubscribe-no-filter", True, packet(0xA2, u16(6))),
    # --- order of packets
    ("MQTT-3.1.0-1-first-packet-publish", False, publish("mal/first", b"x")),
    ("MQTT-3.1.0-1-first-packet-subscribe", False, subscribe(1, ("#", 0))),
    ("MQTT-3.1.0-1-first-packet-pingreq", False, mqttraw.PINGREQ),
    ("MQTT-3.1.0-2-second-connect", True, connect("again")),
    # --- CONNECT flag rules that make the packet malformed
    ("MQTT-3.1.2-3-connect-reserved-flag", False, connect("r", flags=0x03)),
    ("MQTT-3.1.2-14-connect-will-qos-3", False,
     packet(0x10, s("MQTT") + b"\x04\x1e\x00\x3c" + s("wq3") + s("w/t") + s("m"))),
    ("MQTT-3.1.2-13-will-qos-without-will-flag", False, connect("wq", flags=0x0A)),
    ("MQTT-3.1.2-15-will-retain-without-will-flag", False, connect("wr", flags=0x22)),
    ("MQTT-3.1.2-22-password-without-username", False,
     packet(0x10, s("MQTT") + b"\x04\x42\x00\x3c" + s("pw") + s("secret"))),
    # --- bigger than max_packet_size (closes)
    ("oversize-publish-whole", True, publish("mal/big", b"x" * (MAX_PACKET + 100))),
    ("oversize-publish-header-only", True, b"\x30" + mqttraw.varint(1000000) + s("mal/big")),
    ("oversize-connect", False, connect("big" * 1000)),
]


@pytest.mark.parametrize("first_connect,data", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_packet_closes_only_that_connection(mbroker, witness, first_connect, data):
    """MQTT-4.8.0-1: a protocol violation closes the network connection on which it arrived.
    The broker sends nothing in answer to the bad packet (no CONNACK, SUBACK, PUBACK...),
    delivers nothing it carried, and the witness clients connected before still work."""
    raw = mbroker.raw()
    if first_connect:
        assert raw.connect("mal-client", keepalive=0) == (0, 0)
    try_send(raw, data)
    closed, got = until_closed(raw, 10)
    others = witness.check()  # first, so that a failure here leaves nothing for the next case
    assert closed, "broker kept the connection open after %r" % data[:40]
    assert got == [], "broker answered a malformed packet with %r" % got
    assert others == [], "a malformed packet was delivered: %r" % others
    assert not broker_problems(mbroker)


def test_valid_packets_pipelined_before_a_malformed_one_are_served(mbroker, witness):
    """Within one TCP segment, the valid packets before the violation are handled (the
    PUBLISH reaches subscribers), then the connection closes. Their answers may be cut off
    by the close (a QoS 1 sender resends), but nothing else may come back."""
    raw = mbroker.raw()
    assert raw.connect("mal-pipeline", keepalive=0) == (0, 0)
    try_send(raw, publish("pipe/ok", b"good", qos=1, pid=9) + mqttraw.PINGREQ + b"\x40\x01\x00")
    closed, got = until_closed(raw, 10)
    assert closed
    assert [p.type for p in got] in ([], [4], [4, 13])
    others = witness.check()
    assert [(p.topic, p.payload) for p in others] == [(b"pipe/ok", b"good")]


@pytest.mark.parametrize("cut", ["connect", "publish-header", "publish-body", "remaining-length"])
def test_half_packet_then_close(mbroker, witness, cut):
    """A client that sends part of a packet and then closes its socket: the partial packet
    is discarded (nothing is delivered), the broker notices the close and carries on."""
    raw = mbroker.raw()
    whole = publish("half/t", b"p" * 300, qos=1, pid=3)
    if cut == "connect":
        data = connect("half-c")[:9]
    else:
        assert raw.connect("half-" + cut, keepalive=0) == (0, 0)
        data = {"publish-header": whole[:1], "publish-body": whole[:200],
                "remaining-length": b"\x30\xff"}[cut]
    raw.send(data)
    assert witness.check() == []  # the broker is waiting for the rest, and serving others
    raw.close()
    assert witness.check() == []
    assert not broker_problems(mbroker)


def test_packet_split_across_many_writes_is_not_malformed(mbroker, witness):
    """The negative control of the cases above: a valid PUBLISH sent one byte at a time is
    reassembled and delivered, so 'closed' above means 'rejected', not 'confused by TCP'."""
    raw = mbroker.raw()
    assert raw.connect("split", keepalive=0) == (0, 0)
    data = publish("split/t", b"one byte at a time", qos=1, pid=77)
    for i in range(len(data)):
        raw.send(data[i:i + 1])
        time.sleep(0.002)
    ack = raw.expect(4, 5)
    assert ack.pid == 77
    others = witness.check()
    assert [(p.topic, p.payload) for p in others] == [(b"split/t", b"one byte at a time")]


def test_many_malformed_connections_at_once(mbroker, witness):
    """Twenty connections each send a different malformed packet in the same instant: all
    are closed and the broker keeps serving."""
    bad = [c[2] for c in CASES if c[1] is False][:20]
    raws = [mbroker.raw() for _ in bad]
    for r, d in zip(raws, bad):
        try_send(r, d)
    for r in raws:
        closed, got = until_closed(r, 10)
        assert closed and got == []
    assert witness.check() == []
    # and its connection table was freed: a fresh client connects
    fresh = mbroker.raw()
    assert fresh.connect("after-storm", keepalive=0) == (0, 0)
    fresh.send(mqttraw.DISCONNECT)

