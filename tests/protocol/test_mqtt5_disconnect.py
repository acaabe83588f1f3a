"""MQTT 5.0 DISCONNECT both ways through the network: the client's reason code decides about
its will, Session Expiry Interval changed at DISCONNECT, and the server's DISCONNECT with a
reason code before it closes (protocol errors, session taken over, shutting down).
Statement numbers are the MQTT 5.0 standard's."""

import signal
import time

import pytest

import mqttraw
import mqttraw5 as m
from mqttraw5 import broker5  # noqa: F401 (the `broker` fixture)
from mqttraw5 import connected as v5
from conftest import start_broker

MARK = "zz/mark"




def watcher(broker):
    """A 3.1.1 client subscribed to the will topic and the marker."""
    w = broker.raw()
    assert w.connect("watch") == (0, 0)
    w.send(mqttraw.subscribe(1, ("will/#", 0), (MARK, 0)))
    w.expect(9)
    return w


def until_mark(w, sender):
    sender.send(m.publish(MARK, b"."))
    got = []
    while True:
        p = w.expect(3)
        if p.topic == MARK.encode():
            return got
        got.append(p.payload)


@pytest.mark.parametrize("code,published", [(None, False), (0x00, False), (0x04, True), (0x80, False)])
def test_will_after_disconnect_reason_code(broker, code, published):
    """MQTT-3.14.4-3: DISCONNECT 0x00 (also the short form, no reason code) discards the will;
    0x04 (Disconnect with Will Message, section 3.14.2.1) publishes it; any other code from
    the client is a normal disconnect as far as the will goes (MQTT-3.1.2-10)."""
    w = watcher(broker)
    c = v5(broker, "dw", will=("will/dw", b"gone", 0, False, []))
    c.send(m.disconnect(code))
    assert c.closed()
    other = v5(broker, "marker")
    assert until_mark(w, other) == ([b"gone"] if published else [])


def test_will_on_protocol_error(broker):
    """MQTT-3.1.2-8, section 4.13: a connection closed for a protocol error is not a normal
    disconnect: DISCONNECT 0x82 to the client, and its will is published."""
    w = watcher(broker)
    c = v5(broker, "pe", will=("will/pe", b"broken", 0, False, [(m.USER_PROPERTY, ("k", "v"))]))
    c.send(m.connect("again"))  # a second CONNECT (MQTT-3.1.0-2)
    assert c.disconnected() == 0x82
    assert until_mark(w, v5(broker, "marker")) == [b"broken"]


def test_session_expiry_set_at_disconnect_when_connect_had_none(broker):
    """MQTT-3.14.2-2: a Session Expiry Interval on DISCONNECT when CONNECT's was 0 (absent) is
    a protocol error: the server sends DISCONNECT 0x82 and closes."""
    c = v5(broker, "se0")
    c.send(m.disconnect(0, [(m.SESSION_EXPIRY, 30)]))
    assert c.disconnected() == 0x82


def test_session_expiry_zero_at_disconnect_ends_the_session(broker):
    """Section 3.14.2.2.2: a client whose CONNECT set a Session Expiry Interval may set 0 at
    DISCONNECT: the session ends with the connection (Session Present 0 after); without it,
    the session stays (MQTT-3.1.2-23)."""
    for end_it, present in ((False, 1), (True, 0)):
        c = v5(broker, "se", properties=[(m.SESSION_EXPIRY, 300)])
        c.send(m.disconnect(0, [(m.SESSION_EXPIRY, 0)] if end_it else []))
        assert c.closed()
        time.sleep(0.1)
        again = m.Client5(broker.port)
        broker._clients.append(again)
        ack = again.connect5("se", clean_start=False, properties=[(m.SESSION_EXPIRY, 300)])
        assert (ack.code, ack.present) == (0, present)
        again.send(m.disconnect(0, [(m.SESSION_EXPIRY, 0)]))
        assert again.closed()
        time.sleep(0.1)


def test_session_taken_over(broker):
    """MQTT-3.1.4-3: a second connection with the same client id: the first gets DISCONNECT
    0x8E (Session taken over) and is closed; the second is served."""
    first = v5(broker, "dup")
    second = v5(broker, "dup")
    assert first.disconnected() == 0x8E
    second.send(mqttraw.PINGREQ)
    second.expect(m.PINGRESP)


def test_session_taken_over_by_a_311_client(broker):
    """MQTT-3.1.4-3: the DISCONNECT 0x8E goes to the existing v5 connection whatever the
    protocol of the new one; a 3.1.1 client taking the session over is served."""
    first = v5(broker, "dup311")
    second = broker.raw()
    assert second.connect("dup311") == (0, 0)
    assert first.disconnected() == 0x8E
    second.send(mqttraw.PINGREQ)
    second.expect(13)


@pytest.mark.parametrize("pkt", [
    b"\xe0\x02\x00",  # its property length runs into the PINGREQ sent after it
    b"\xf0\x00",  # AUTH without an authentication method
    b"\x40\x01\x00",  # PUBACK with half a packet id
], ids=["disconnect property length missing", "auth", "puback truncated"])
def test_server_disconnect_before_close(broker, pkt):
    """Section 4.13: after CONNACK a malformed packet or protocol error gets DISCONNECT with
    0x81 or 0x82 before the server closes."""
    c = v5(broker, "bad")
    c.send(pkt + mqttraw.PINGREQ)
    assert c.disconnected() in (0x81, 0x82)
    assert broker.alive()


def test_keep_alive_timeout_sends_disconnect_0x8d(broker):
    """MQTT-3.1.2-22: a client silent for one and a half keep alive periods is disconnected;
    a v5 client gets DISCONNECT 0x8D (Keep Alive timeout, section 3.14.2.1) first, and its
    will goes out (not a normal disconnect, MQTT-3.1.2-8)."""
    w = watcher(broker)
    c = v5(broker, "ka", keepalive=1, will=("will/ka", b"timed out", 0, False, []))
    assert c.disconnected(timeout=6.0) == 0x8D
    assert until_mark(w, v5(broker, "marker")) == [b"timed out"]


def test_packet_above_maximum_size_sends_disconnect_0x95(broker):
    """MQTT-3.1.2-24 is the client's side; for the server's, section 3.2.2.3.6 and 4.13: a
    packet above the Maximum Packet Size the server announced is a protocol error answered
    with DISCONNECT 0x95 (Packet too large), then the close."""
    c = v5(broker, "big")
    c.send(m.publish("big/t", b"x" * 4000))  # the esp32 profile's max_packet_size is 2048
    assert c.disconnected() == 0x95


def test_311_client_is_closed_without_disconnect_on_keep_alive(broker):
    """MQTT-3.1.2-24 (3.1.1): the server closes the connection; a 3.1.1 server never sends
    DISCONNECT, so the client sees only the close."""
    c = broker.raw()
    assert c.connect("ka311", keepalive=1) == (0, 0)
    assert c.recv_packet(6.0) is None
    assert c.closed()



@pytest.mark.parametrize("profile", sorted(m.PROFILES))
def test_server_shutting_down_sends_disconnect_0x8b(tmp_path, profile):
    """Section 3.14.2.1: the server stopping (SIGTERM to `ubroker run`) sends a v5 client
    DISCONNECT 0x8B Server shutting down, the connection's last packet (MQTT-3.14.4-1), and
    closes; a 3.1.1 client's connection just closes (3.1.1 has no server DISCONNECT)."""
    config, heap = m.PROFILES[profile]
    b = start_broker(tmp_path, config=config, heap=heap)
    try:
        c5 = m.Client5(b.port)
        assert c5.connect5("stopping5").code == 0
        c3 = mqttraw.RawClient(b.port)
        assert c3.connect("stopping311") == (0, 0)
        b.proc.send_signal(signal.SIGTERM)
        assert c5.disconnected(10) == 0x8B
        assert c3.recv_packet(10) is None, "a 3.1.1 client got a packet at shutdown"
        assert b.proc.wait(10) == 0
        assert "Traceback" not in b.log(), b.log()
    finally:
        b.stop()
