"""paho-mqtt with transport="websockets" against the broker's WebSockets listener, plain (ws)
and over TLS (wss, the certificates of test_tls.py): QoS 0, 1 and 2 end to end between
WebSocket clients and between WebSockets and TCP, retained messages, and users and access
rules applied exactly as on TCP (CONNACK 5, MQTT-3.2.2-*; a denied subscription gets 0x80,
MQTT-3.9.3). The broker runs with the esp32 profile, a plain listener and a WebSockets one."""

import shutil
import ssl
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

from conftest import free_port, wait_for
from test_security import paho, users_file
from test_tls import certs  # noqa: F401  (the module-scoped fixture)

QOS = (0, 1, 2)


def ws_client(port, tls_ca=None, user=None, password=None, client_id=None):
    """A paho client over a WebSocket, connected and looping: (client, CONNACK reason code)."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "ws-" + uuid.uuid4().hex[:8],
                    transport="websockets")
    c.ws_set_options(path="/mqtt")
    if tls_ca is not None:
        c.tls_set(ca_certs=str(tls_ca), cert_reqs=ssl.CERT_REQUIRED)
    if user is not None:
        c.username_pw_set(user, password)
    c.messages = []
    c.granted = []
    rc = []
    c.on_message = lambda cl, u, m: cl.messages.append((m.topic, m.payload, m.qos, m.retain))
    c.on_subscribe = lambda cl, u, mid, codes, props: cl.granted.extend(x.value for x in codes)
    c.on_connect = lambda cl, u, flags, code, props: rc.append(code.value)
    c.connect("127.0.0.1", port, 30)
    c.loop_start()
    assert wait_for(lambda: rc, 10), "no CONNACK over the WebSocket"
    return c, rc[0]


@pytest.fixture
def clients():
    made = []
    yield made
    for c in made:
        c.disconnect()
        c.loop_stop()


def each_qos(pub, sub, topic):
    sub.subscribe(topic, 2)
    assert wait_for(lambda: sub.granted == [2], 10), sub.granted
    for q in QOS:
        pub.publish(topic, b"q%d" % q, qos=q).wait_for_publish(10)
    assert wait_for(lambda: len(sub.messages) == 3, 10), sub.messages
    assert sorted(sub.messages) == [(topic, b"q%d" % q, q, False) for q in QOS]


def ws_port_broker(broker_factory, extra=""):
    port = free_port()
    b = broker_factory(config="listener 1883 127.0.0.1\nlistener %d 127.0.0.1\nprotocol websockets\n%s"
                       % (port, extra))
    b.ws_port = port
    return b


def test_qos_0_1_2_between_websocket_clients(broker_factory, clients):
    b = ws_port_broker(broker_factory)
    sub, rc = ws_client(b.ws_port)
    pub, _ = ws_client(b.ws_port)
    clients += [sub, pub]
    assert rc == 0
    each_qos(pub, sub, "ws/paho")


def test_qos_0_1_2_between_websockets_and_tcp(broker_factory, clients):
    """The transports share one broker: a TCP publisher reaches a WebSocket subscriber and
    the other way round, with 1,500-byte payloads (frames in the 16-bit length form)."""
    b = ws_port_broker(broker_factory)
    ws, _ = ws_client(b.ws_port)
    clients.append(ws)
    tcp = b.client()
    tcp.granted = []
    tcp.on_subscribe = lambda cl, u, mid, codes, props: cl.granted.extend(x.value for x in codes)
    each_qos(tcp, ws, "ws/from-tcp")
    got = []
    tcp.on_message = lambda cl, u, m: got.append((m.qos, m.payload))
    tcp.subscribe("ws/to-tcp", 2)
    assert wait_for(lambda: tcp.granted == [2], 10), tcp.granted
    for q in QOS:
        ws.publish("ws/to-tcp", bytes([65 + q]) * 1500, qos=q).wait_for_publish(10)
    assert wait_for(lambda: len(got) == 3, 10), got
    assert sorted(got) == [(q, bytes([65 + q]) * 1500) for q in QOS]


def test_retained_message_to_a_late_websocket_subscriber(broker_factory, clients):
    b = ws_port_broker(broker_factory)
    pub = b.client()
    pub.publish("ws/retained", b"kept", qos=1, retain=True).wait_for_publish(10)
    sub, _ = ws_client(b.ws_port)
    clients.append(sub)
    sub.subscribe("ws/#", 1)
    assert wait_for(lambda: sub.messages, 10)
    assert sub.messages[0] == ("ws/retained", b"kept", 1, True)


def test_users_and_rules_apply_as_on_tcp(broker_factory, clients, tmp_path):
    """A wrong password and no user get the CONNACK refusals they get on TCP (MQTT-3.2.2-5:
    a refusal has a non-zero return code); the access rules deny what they deny on TCP
    (SUBACK 0x80 for a filter the user may not read)."""
    users = users_file(tmp_path, alice="wonder")
    acl = tmp_path / "acl.txt"
    acl.write_text("user alice\ntopic readwrite ws/alice/#\n")
    b = ws_port_broker(broker_factory, "password_file %s\nacl_file %s\nallow_anonymous false\n" % (users, acl))
    for login in ({"user": "alice", "password": "nope"}, {}):
        refused, rc = ws_client(b.ws_port, **login)
        clients.append(refused)
        _, tcp_rc = paho(b, **login)
        assert rc != 0 and rc == tcp_rc.value
    alice, rc = ws_client(b.ws_port, user="alice", password="wonder")
    clients.append(alice)
    assert rc == 0
    alice.subscribe([("ws/alice/#", 1), ("ws/bob/#", 1)])
    assert wait_for(lambda: len(alice.granted) == 2, 10)
    assert alice.granted == [1, 0x80]
    alice.publish("ws/alice/x", b"mine", qos=1).wait_for_publish(10)
    assert wait_for(lambda: alice.messages, 10)
    assert alice.messages == [("ws/alice/x", b"mine", 1, False)]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_wss_qos_0_1_2(broker_factory, certs, clients):  # noqa: F811
    """The WebSockets listener with its certfile and keyfile: secure WebSockets (wss), QoS 0,
    1 and 2 end to end, and a wss client and a TCP client side by side."""
    port = free_port()
    b = broker_factory(config="listener 1883 127.0.0.1\nlistener %d 127.0.0.1\nprotocol websockets\n"
                       "certfile %s\nkeyfile %s\n" % (port, certs / "server.pem", certs / "server-key.pem"))
    sub, rc = ws_client(port, tls_ca=certs / "ca.pem")
    pub, _ = ws_client(port, tls_ca=certs / "ca.pem")
    clients += [sub, pub]
    assert rc == 0
    each_qos(pub, sub, "wss/paho")
    tcp = b.client()
    tcp.publish("wss/paho", b"from tcp", qos=1).wait_for_publish(10)
    assert wait_for(lambda: len(sub.messages) == 4, 10)
    assert "listener 2 is TLS" in b.log() and "listener 2 is WebSockets" in b.log()
    time.sleep(0.2)
