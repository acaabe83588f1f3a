"""host_tools budget.py prices a WebSockets listener (`protocol websockets`): docs/websockets.md
measured 4,736 B more heap at start (ws_frame.py and its Ws; esp32 profile, 64-bit unix port)
and 170 B more for a WebSocket client than for a TCP one; ws_handshake.py takes 5,184 B while
a client upgrades. `ubroker config --check` counts it against heap_budget, `ubroker run`
against the heap it starts the broker in, and `ubroker run --board esp32` with a WebSockets
listener still starts and serves a WebSocket client."""

import subprocess
import uuid

import paho.mqtt.client as mqtt
import pytest

from conftest import UBROKER, free_port, wait_for
from ubroker_tools import budget, paths, profiles

CFG = profiles.fwconfig()
MEASURED_CODE = 4736 + 928  # docs/websockets.md, 64-bit; + the viper unmask (budget.WS_CODE_64)
MEASURED_CLIENT = 170
WS = "listener 1883 127.0.0.1\nlistener 9001 127.0.0.1\nprotocol websockets\n"
PLAIN = "listener 1883 127.0.0.1\nlistener 9001 127.0.0.1\n"


def with_listeners(board, text):
    """board's profile with the listeners (and protocols) of text, as a user config sets them."""
    return CFG.resolve(profiles.load_board(board), CFG.parse(text))


def test_features_name_websockets_only_for_a_websockets_listener():
    assert "websockets" in budget.features(with_listeners("esp32", WS))
    assert "websockets" not in budget.features(with_listeners("esp32", PLAIN))
    assert "websockets" not in budget.features(with_listeners("esp32", PLAIN + "protocol mqtt\n"))


@pytest.mark.parametrize("board", paths.known_boards())
def test_a_websockets_listener_costs_at_least_what_was_measured(board):
    """Every table full: the model with a WebSockets listener is above the one without by
    at least the code measured on 64 bits; on 64 bits also by 170 B per client (every client
    may come over a WebSocket)."""
    ws, plain = with_listeners(board, WS), with_listeners(board, PLAIN)
    more = budget.total(ws) - budget.total(plain)
    assert more >= MEASURED_CODE, more
    if budget.word_bits(ws) == 64:
        assert more >= MEASURED_CODE + MEASURED_CLIENT * ws["max_connections"], more


@pytest.mark.parametrize("code", ["native", "bytecode", "source"])
def test_the_unix_ports_start_counts_websockets(code):
    """start_need, and so the cut of `ubroker run --heap` (for_heap), count the feature."""
    ws, plain = with_listeners("esp32", WS), with_listeners("esp32", PLAIN)
    assert budget.start_need(ws, code) - budget.start_need(plain, code) == budget.FEATURES_64["websockets"][code]
    unix_ws, unix_plain = with_listeners("unix", WS), with_listeners("unix", PLAIN)
    assert budget.smallest_heap(unix_ws, code) > budget.smallest_heap(unix_plain, code)


def test_beside_tls_websockets_adds_nothing_to_the_start():
    """Measured: with a TLS listener the smallest heap that serves a CONNECT over TLS also
    serves one over wss (92k bytecode, 77k native), so the esp32 with a wss listener still
    starts in its 100k (tests/protocol/test_ws_paho.py's wss test)."""
    tls = "certfile s.pem\nkeyfile k.pem\n"
    ws, plain = with_listeners("esp32", WS + tls), with_listeners("esp32", PLAIN + tls)
    assert {"tls", "websockets"} <= set(budget.features(ws))
    for code in ("native", "bytecode"):
        assert budget.start_need(ws, code) == budget.start_need(plain, code)
    assert budget.start_need(ws, "bytecode") <= profiles.load_board("esp32")["heap_budget"]


def check(tmp_path, board, text):
    path = tmp_path / "ws.conf"
    path.write_text(text)
    return subprocess.run([UBROKER, "config", "--board", board, "--check", str(path)], capture_output=True,
                          text=True, timeout=60)


def test_check_counts_a_websockets_listener_against_the_heap_budget(tmp_path):
    """esp32 (8 clients beside two listeners in its stock 10 sockets): the retained bytes
    raised to 9000 fit the budget over two TCP listeners, not with one of them WebSockets."""
    limits = "max_connections 8\nmax_retained_bytes 9000\n"
    r = check(tmp_path, "esp32", PLAIN + limits)
    assert r.returncode == 0, r.stderr
    r = check(tmp_path, "esp32", WS + limits)
    assert r.returncode == 1
    assert "heap_budget 102400; lower max_retained_bytes" in r.stderr, r.stderr
    assert check(tmp_path, "esp32", WS + "max_connections 8\n").returncode == 0


def test_run_board_esp32_with_a_websockets_listener_starts_and_serves(broker_factory):
    """`ubroker run --board esp32 --config` (the esp32's 100k heap, its model checked first):
    starts, and a WebSocket client connects (MQTT-6.0.0-4: the subprotocol mqtt)."""
    ws_port = free_port()
    b = broker_factory(config="listener 1883 127.0.0.1\nlistener %d 127.0.0.1\nprotocol websockets\n" % ws_port)
    assert "listener 2 is WebSockets" in b.log()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ws-" + uuid.uuid4().hex[:8], transport="websockets")
    c.ws_set_options(path="/mqtt")
    codes = []
    c.on_connect = lambda cl, u, flags, code, props: codes.append(code.value)
    c.connect("127.0.0.1", ws_port, 30)
    c.loop_start()
    try:
        assert wait_for(lambda: codes, 10), "no CONNACK over the WebSocket"
        assert codes == [0]
    finally:
        c.disconnect()
        c.loop_stop()
