"""MQTT 5.0 Session Expiry Interval through the network: a session lives that many seconds
after its connection ends, then goes with its subscriptions and queued messages; 0xFFFFFFFF
never expires; DISCONNECT may change the interval; a 3.1.1 client's session is kept as
before. Statement numbers are the MQTT 5.0 standard's."""

import time

import mqttraw
import mqttraw5 as m
from mqttraw5 import broker5  # noqa: F401 (the `broker` fixture)
from mqttraw5 import connected as v5


def resume(broker, cid, **kw):
    """Session Present of a Clean Start 0 reconnect (closed at once, without DISCONNECT, so
    the session is left as it was)."""
    c = m.Client5(broker.port)
    broker._clients.append(c)
    ack = c.connect5(cid, clean_start=False, **kw)
    assert ack.code == 0
    return c, ack.present


def subscribed(broker, cid, expiry, flt="se/t"):
    c = v5(broker, cid, properties=[(m.SESSION_EXPIRY, expiry)])
    c.send(m.subscribe(1, (flt, 1)))
    assert c.next(m.SUBACK).codes == [1]
    return c


def publish_code(broker, topic):
    """The reason code of the PUBACK a v5 publisher gets for a QoS 1 message on topic: 0x10
    when no subscription matches (section 3.4.2.1)."""
    p = v5(broker, "pub-%d" % time.monotonic_ns())
    p.send(m.publish(topic, b"x", qos=1, pid=7))
    return p.next(m.PUBACK).code


def test_session_expires_after_its_interval(broker):
    """MQTT-3.1.2-23: the session is kept for the Session Expiry Interval after the connection
    closes; once it has passed, the session is gone (Session Present 0, MQTT-3.2.2-2/3) with
    its subscriptions (a QoS 1 message finds no subscriber: PUBACK 0x10)."""
    c = subscribed(broker, "exp2", 2)
    c.send(m.disconnect(0))
    assert c.closed()
    time.sleep(0.3)
    assert publish_code(broker, "se/t") == 0  # the session's subscription still takes it
    again, present = resume(broker, "exp2", properties=[(m.SESSION_EXPIRY, 2)])
    assert present == 1
    again.send(m.disconnect(0))
    assert again.closed()
    time.sleep(3.5)
    assert publish_code(broker, "se/t") == 0x10
    _, present = resume(broker, "exp2")
    assert present == 0


def test_queued_messages_go_with_the_expired_session(broker):
    """MQTT-3.1.2-23: messages queued for the session while it was offline go with it: a new
    session of that client id gets none of them."""
    c = subscribed(broker, "expq", 1)
    c.close()
    time.sleep(0.3)
    assert publish_code(broker, "se/t") == 0  # queued for the offline session
    time.sleep(2.5)
    again, present = resume(broker, "expq", properties=[(m.SESSION_EXPIRY, 60)])
    assert present == 0
    again.send(mqttraw.PINGREQ)
    assert again.recv_packet(2.0).type == m.PINGRESP  # and no PUBLISH before it


def test_reconnect_before_expiry_keeps_the_session(broker):
    """MQTT-3.1.2-23: a client back within the interval finds its session, and the interval
    counts again from its next disconnection, not from the first."""
    c = subscribed(broker, "expr", 2)
    c.close()
    time.sleep(1.2)
    again, present = resume(broker, "expr", properties=[(m.SESSION_EXPIRY, 2)])
    assert present == 1
    time.sleep(1.5)  # past the first deadline while connected
    again.close()
    time.sleep(0.5)
    assert publish_code(broker, "se/t") == 0
    _, present = resume(broker, "expr", properties=[(m.SESSION_EXPIRY, 2)])
    assert present == 1


def test_never_expires_and_connack_names_no_interval(broker):
    """Section 3.1.2.11.2: 0xFFFFFFFF means the session does not expire; section 3.2.2.3.2:
    the server uses the client's interval and its CONNACK names none, for a finite one too."""
    c = m.Client5(broker.port)
    broker._clients.append(c)
    ack = c.connect5("forever", properties=[(m.SESSION_EXPIRY, 0xFFFFFFFF)])
    assert m.prop(ack.props, m.SESSION_EXPIRY) is None
    c.send(m.subscribe(1, ("se/f", 1)))
    c.next(m.SUBACK)
    c.close()
    short = m.Client5(broker.port)
    broker._clients.append(short)
    assert m.prop(short.connect5("short", properties=[(m.SESSION_EXPIRY, 1)]).props, m.SESSION_EXPIRY) is None
    short.close()
    time.sleep(2.5)
    assert publish_code(broker, "se/f") == 0
    _, present = resume(broker, "forever")
    assert present == 1
    _, present = resume(broker, "short")
    assert present == 0


def test_disconnect_changes_the_interval(broker):
    """Section 3.14.2.2.2: the Session Expiry Interval on DISCONNECT replaces CONNECT's: 300
    shortened to 1 expires the session a second after."""
    c = subscribed(broker, "expd", 300)
    c.send(m.disconnect(0, [(m.SESSION_EXPIRY, 1)]))
    assert c.closed()
    time.sleep(2.5)
    assert publish_code(broker, "se/t") == 0x10
    _, present = resume(broker, "expd")
    assert present == 0


def test_a_311_client_keeps_a_v5_session_for_good(broker):
    """MQTT 3.1.1 (MQTT-3.1.2-4): a 3.1.1 client with Clean Session 0 that takes over a v5
    client's session keeps it after it disconnects, with no expiry: the v5 interval (1 s) no
    longer applies."""
    c = subscribed(broker, "mixed", 1)
    c.close()
    time.sleep(0.3)
    old = broker.raw()
    assert old.connect("mixed", clean=False) == (1, 0)
    old.send(mqttraw.DISCONNECT)
    assert old.closed()
    time.sleep(2.5)
    w = broker.raw()
    assert w.connect("mixed", clean=False) == (1, 0)
