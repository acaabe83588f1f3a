"""`port` together with `listener` lines in one config: as in Mosquitto the broker opens every
one of them, the `port` listener first (firmware/ubroker/config.py parse), and a listener's
`protocol websockets` stays with that listener when the `port` one is put in front of it.
Each port is reached through the network, as a client reaches it."""

import mqttraw
from conftest import free_port
from test_ws_handshake import WsRaw


def test_port_and_listeners_all_open_and_keep_their_protocol(broker_factory):
    """A subscriber over the WebSocket listener gets what clients publish on the `port`
    listener and on a second TCP listener (MQTT-3.3.2-2 topic matching; MQTT-6.0.0-4 the
    subprotocol mqtt). Before the fix the `port` line was dropped: nothing listened on it."""
    port, ws_port, tcp_port = free_port(), free_port(), free_port()
    config = ("port %d\nbind_address 127.0.0.1\nlistener %d 127.0.0.1\nprotocol websockets\n"
              "listener %d 127.0.0.1\n" % (port, ws_port, tcp_port))
    b = broker_factory(config=config, port=port)
    assert "listener 2 is WebSockets" in b.log()
    sub = WsRaw(ws_port)
    assert sub.protocol == "mqtt"
    assert sub.connect("ws-sub") == (0, 0)
    sub.send(mqttraw.subscribe(1, ("both/#", 0)))
    assert sub.expect(9).body[2:] == b"\x00"
    for p, name in ((port, "port"), (tcp_port, "listener")):
        pub = mqttraw.RawClient(p)
        assert pub.connect("pub-" + name) == (0, 0)
        pub.send(mqttraw.publish("both/" + name, name.encode()))
        got = sub.expect(3)
        assert (got.topic, got.payload) == (b"both/" + name.encode(), name.encode())
        pub.close()
    sub.close()


def test_a_plain_client_on_the_port_listener_is_not_taken_for_websockets(broker_factory):
    """The `port` listener put first is plain MQTT: a CONNECT there is answered with a
    CONNACK, not an HTTP refusal (the websockets entry moved with its own listener)."""
    port, ws_port = free_port(), free_port()
    b = broker_factory(config="port %d\nbind_address 127.0.0.1\nlistener %d 127.0.0.1\nprotocol websockets\n"
                       % (port, ws_port), port=port)
    c = b.raw()
    assert c.connect("plain") == (0, 0)
    ws = WsRaw(ws_port)
    assert ws.connect("ws") == (0, 0)
    ws.close()
