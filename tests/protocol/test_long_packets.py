"""Packets longer than the read buffer, through the network: with `max_packet_size 0` (the unix
profile's, Mosquitto's default) no Maximum Packet Size is announced (MQTT 5.0 section
3.2.2.3.6: absent means no limit but the protocol's), and a packet longer than
read_buffer_size arrives in a buffer of its own (firmware/ubroker/long_packet.py) up to
max_queued_bytes, the most the broker holds of messages. Beyond that the connection is
closed, after DISCONNECT 0x97 Quota exceeded for a v5 client (section 3.14.2.1); before
CONNECT the read buffer's share is the limit."""

import hashlib
import socket
import time

import pytest

import mqttraw
import mqttraw5 as m
from conftest import free_port, start_broker, wait_for
from durable_util import kill9
from mqttraw5 import prop

# The unix profile: read_buffer_size 64k, max_queued_bytes 1M
READ = 65536
QUEUED = 1048576


def payload(n, seed=0):
    """n bytes that differ from place to place, so a misplaced slice shows."""
    out = bytearray()
    i = seed
    while len(out) < n:
        out += hashlib.sha256(b"%d" % i).digest()
        i += 1
    return bytes(out[:n])


def away(broker, cid, flt):
    """A v5 session that never expires, subscribed to flt at QoS 1, left offline."""
    s, _ = v5(broker, cid, clean_start=False, properties=[(m.SESSION_EXPIRY, 0xFFFFFFFF)])
    s.send(m.subscribe(1, (flt, 1)))
    s.next(m.SUBACK)
    s.send(m.disconnect())
    s.close()


@pytest.fixture
def unix(broker_factory):
    return broker_factory(board="unix")


def v5(broker, cid, **kw):
    c = m.Client5(broker.port, timeout=10)
    broker._clients.append(c)
    ack = c.connect5(cid, **kw)
    assert ack.code == 0
    return c, ack


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("size", [READ + 1000, 5 * READ + 17, QUEUED - 4096])
def test_long_publish_reaches_v5_and_311_subscribers_intact(unix, qos, size):
    """A PUBLISH longer than the read buffer, from a v5 publisher, is acknowledged
    (MQTT-4.3.2-4 / MQTT-4.3.3-9) and delivered byte for byte to a v5 and a 3.1.1
    subscriber; a short message after it, in the same write, keeps its place."""
    s5, _ = v5(unix, "s5")
    s5.send(m.subscribe(1, ("long/#", 2)))
    s5.next(m.SUBACK)
    s3 = unix.raw(timeout=10)
    assert s3.connect("s3") == (0, 0)
    s3.send(mqttraw.subscribe(1, ("long/#", 2)))
    s3.expect(9)
    p, _ = v5(unix, "p")
    data = payload(size, size + qos)
    p.send(m.publish("long/a", data, qos=qos, pid=7) + m.publish("long/b", b"after", qos=qos, pid=8))
    if qos:
        first = p.next(m.PUBACK if qos == 1 else m.PUBREC)
        assert (first.pid, first.code) == (7, 0)
    for sub, publish in ((s5, lambda: s5.next(m.PUBLISH, 10)), (s3, lambda: s3.expect(3, 10))):
        got = publish()
        assert bytes(got.topic) == b"long/a" and got.payload == data, (len(got.payload), size)
        nxt = publish()
        assert (bytes(nxt.topic), nxt.payload) == (b"long/b", b"after")


def test_long_publish_arriving_slowly_in_pieces(unix):
    """The buffer of its own fills read by read: a 200 kB PUBLISH written in 1 kB pieces with
    pauses between them, its fixed header split across two writes."""
    s, _ = v5(unix, "slow-s")
    s.send(m.subscribe(1, ("slow", 1)))
    s.next(m.SUBACK)
    p, _ = v5(unix, "slow-p")
    data = payload(200000, 3)
    pkt = m.publish("slow", data, qos=1, pid=5)
    p.send(pkt[:2])
    time.sleep(0.05)
    for i in range(2, len(pkt), 1024):
        p.send(pkt[i:i + 1024])
        if i % 65536 < 1024:
            time.sleep(0.02)
    assert p.next(m.PUBACK).pid == 5
    assert s.next(m.PUBLISH, 10).payload == data


def test_long_retained_message_is_kept_and_sent_to_a_later_subscriber(unix):
    """MQTT-3.3.1-6: a retained message longer than the read buffer (within
    max_retained_bytes) goes to a subscription made after it."""
    p, _ = v5(unix, "rp")
    data = payload(150000, 9)
    p.send(m.publish("keep/long", data, qos=1, pid=1, retain=True))
    assert p.next(m.PUBACK).code == 0x10  # taken; no subscriber yet (section 3.4.2.1)
    s, _ = v5(unix, "rs")
    s.send(m.subscribe(1, ("keep/long", 1)))
    s.next(m.SUBACK)
    got = s.next(m.PUBLISH, 10)
    assert got.retain and got.payload == data


def test_over_max_queued_bytes_is_disconnect_0x97_and_nothing_is_delivered(unix):
    """Section 3.14.2.1, 0x97 Quota exceeded: a packet longer than the most the broker holds
    (max_queued_bytes) closes a v5 connection after DISCONNECT 0x97; the message goes
    nowhere, and the broker serves the next client."""
    s, _ = v5(unix, "q-s")
    s.send(m.subscribe(1, ("q", 1)))
    s.next(m.SUBACK)
    p, _ = v5(unix, "q-p")
    p.send(m.publish("q", b"x" * QUEUED, qos=1, pid=1))
    assert p.disconnected(10) == 0x97
    assert wait_for(lambda: "exceeds max_queued_bytes" in unix.log())
    p2, _ = v5(unix, "q-p2")
    p2.send(m.publish("q", b"small", qos=1, pid=2))
    assert p2.next(m.PUBACK).pid == 2
    assert s.next(m.PUBLISH).payload == b"small"  # the first one never came


def test_311_over_max_queued_bytes_closes(unix):
    """A 3.1.1 client has no DISCONNECT to be sent: its connection is closed."""
    c = unix.raw(timeout=10)
    assert c.connect("q311") == (0, 0)
    try:
        c.send(mqttraw.publish("q", b"x" * QUEUED, qos=1))
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed while the rest was being sent: what is checked below
    assert c.closed(10)
    assert wait_for(lambda: "exceeds max_queued_bytes" in unix.log())


def test_long_packet_before_connect_closes(unix):
    """Before CONNECT a connection gets no buffer of its own: a CONNECT longer than the read
    buffer closes it, and the broker stays up."""
    c = unix.raw(timeout=10)
    try:
        c.send(m.connect("c" * 10, username="u" * 60000, password=b"p" * 20000))
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert c.closed(10)
    assert wait_for(lambda: "before CONNECT" in unix.log())
    assert unix.raw().connect("after") == (0, 0)


def test_long_publish_waits_for_room_then_goes(broker_factory):
    """Backpressure with a long message: max_queued_bytes 300k, an offline session holding a
    200 kB message; a second one of 200 kB waits, unacknowledged, until the subscriber takes
    the first (MQTT-4.3.2-4: the PUBACK only once it is taken), then goes to it."""
    b = broker_factory(board="unix", config="max_queued_bytes 300k\n")
    away(b, "bp-s", "bp")
    p, _ = v5(b, "bp-p")
    one, two = payload(200000, 1), payload(200000, 2)
    p.send(m.publish("bp", one, qos=1, pid=1))
    assert p.next(m.PUBACK).pid == 1
    p.send(m.publish("bp", two, qos=1, pid=2) + m.publish("bp/none", b"", qos=1, pid=3))
    with pytest.raises(socket.timeout):
        p.recv_packet(1.0)  # nothing: the second is held back
    s2, ack = v5(b, "bp-s", clean_start=False, properties=[(m.SESSION_EXPIRY, 0xFFFFFFFF)])
    assert ack.present == 1
    got = s2.next(m.PUBLISH, 10)
    assert got.payload == one
    s2.send(m.ack(m.PUBACK, got.pid))
    assert p.next(m.PUBACK, 10).pid == 2
    assert p.next(m.PUBACK, 10).pid == 3  # the packet after the long one kept its turn
    got = s2.next(m.PUBLISH, 10)
    assert got.payload == two


@pytest.mark.parametrize("config,size", [(None, 300000), ("max_packet_size 256k\n", 100000)])
def test_long_queued_message_survives_a_power_cut(tmp_path, config, size):
    """MQTT-4.3.2-4 across a power cut: a QoS 1 message of 64 KiB or more, queued for an
    offline session and acknowledged, is in the durable store, and so is the one after it:
    after a SIGKILL (as a power cut stops the broker) and a restart the session gets both
    whole. Such a record's length once lost its high bits, and recovery skipped it and all
    that followed (store_log.py, magic 0xA6), also with the 256k limit of earlier releases."""
    data_dir = tmp_path / "data"
    b = start_broker(tmp_path, board="unix", data=data_dir, config=config)
    try:
        away(b, "d-s", "d")
        p, _ = v5(b, "d-p")
        data = payload(size, 4)
        p.send(m.publish("d", data, qos=1, pid=1))
        assert p.next(m.PUBACK, 10).pid == 1
        p.send(m.publish("d", b"after", qos=1, pid=2))
        assert p.next(m.PUBACK, 10).pid == 2
        kill9(b)
    finally:
        b.stop()
    assert "Traceback" not in b.log()
    b2 = start_broker(tmp_path, board="unix", data=data_dir, config=config)
    try:
        assert "torn" not in b2.log()
        s2, ack = v5(b2, "d-s", clean_start=False, properties=[(m.SESSION_EXPIRY, 0xFFFFFFFF)])
        assert ack.present == 1
        assert s2.next(m.PUBLISH, 10).payload == data
        assert s2.next(m.PUBLISH, 10).payload == b"after"
        assert b2.alive()
    finally:
        b2.stop()
    assert "Traceback" not in b2.log()


def test_a_board_with_no_limit_takes_a_long_packet_in_its_own_heap(broker_factory):
    """`max_packet_size 0` on the smallest board's profile (esp32, its heap scaled to 64 bits):
    its CONNACK has no Maximum Packet Size, a 4,000-byte PUBLISH (eight times its 512-byte
    read buffer) is delivered, and one over its max_queued_bytes (6 kB) is DISCONNECT 0x97."""
    b = broker_factory(config="max_packet_size 0\n", heap=m.board_heap_on_64_bits())
    s, ack = v5(b, "e-s")
    assert prop(ack.props, m.MAXIMUM_PACKET_SIZE) is None
    s.send(m.subscribe(1, ("e", 1)))
    s.next(m.SUBACK)
    p, _ = v5(b, "e-p")
    data = payload(4000, 5)
    p.send(m.publish("e", data, qos=1, pid=1))
    assert p.next(m.PUBACK).pid == 1
    assert s.next(m.PUBLISH).payload == data
    p.send(m.publish("e", b"y" * 7000, qos=1, pid=2))
    assert p.disconnected() == 0x97


def test_long_publish_over_websockets(broker_factory):
    """The same over a WebSockets listener (paho-mqtt, transport websockets): a 300 kB QoS 1
    message from a WebSocket client reaches a WebSocket and a TCP subscriber whole."""
    from test_ws_paho import ws_client

    ws_port = free_port()
    b = broker_factory(board="unix", config="listener 1883 127.0.0.1\nlistener %d 127.0.0.1\nprotocol websockets\n" % ws_port)
    tcp = b.client()
    got = []
    tcp.on_message = lambda cl, u, msg: got.append(msg.payload)
    tcp.subscribe("wsl", 1)
    sub, rc = ws_client(ws_port)
    assert rc == 0
    sub.subscribe("wsl", 1)
    assert wait_for(lambda: sub.granted == [1], 10)
    pub, rc = ws_client(ws_port)
    data = payload(300000, 6)
    try:
        pub.publish("wsl", data, qos=1).wait_for_publish(10)
        assert wait_for(lambda: sub.messages and got, 10)
        assert sub.messages[0][1] == data and got[0] == data
    finally:
        for c in (sub, pub):
            c.disconnect()
            c.loop_stop()
