"""MQTT.js (npm `mqtt`, the client browser apps use), run in Node against the broker's
WebSockets listener, plain (ws) and over TLS (wss, the certificates of test_tls.py): QoS 0, 1
and 2 end to end at protocol levels 4 (subprotocol mqtt), 3 (MQTT.js offers mqttv3.1 there,
MQTT-6.0.0-4) and 5. tools/mqttjs/roundtrip.mjs is the client; `make test` installs MQTT.js
from tools/mqttjs/package-lock.json (Makefile: web-deps). The broker runs with the esp32
profile, a plain listener and a WebSockets one; at MQTT 5 with a heap of 128k instead of the
profile's 100k: the budget (host_tools budget.py) prices the websockets listener but not v5's
code, loaded at the first v5 CONNECT, which then found no room at 100k or 104k
(docs/websockets.md)."""

V5_HEAP = "128k"

import json
import os
import shutil
import subprocess

import pytest

from conftest import ROOT, free_port
from test_tls import certs  # noqa: F401  (the module-scoped fixture)

MQTTJS = os.path.join(ROOT, "tools", "mqttjs")
pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not os.path.isdir(os.path.join(MQTTJS, "node_modules", "mqtt")),
    reason="needs node and MQTT.js in tools/mqttjs/node_modules (make web-deps)")


def roundtrip(url, level, ca=None):
    cmd = ["node", os.path.join(MQTTJS, "roundtrip.mjs"), url, str(level)] + ([str(ca)] if ca else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=MQTTJS)
    lines = r.stdout.strip().splitlines()
    assert lines, r.stderr
    return r.returncode, json.loads(lines[-1])


@pytest.mark.parametrize("level", [4, 3, 5])
def test_mqttjs_over_ws(broker_factory, level):
    port = free_port()
    b = broker_factory(config="listener 1883 127.0.0.1\nlistener %d 127.0.0.1\nprotocol websockets\n" % port,
                       heap=V5_HEAP if level == 5 else None)
    rc, out = roundtrip("ws://127.0.0.1:%d/mqtt" % port, level)
    assert rc == 0 and out["connack"] == 0, out
    assert out["granted"] == [2]
    assert sorted(out["got"]) == [[0, "q0"], [1, "q1"], [2, "q2"]]
    assert ("(MQTT 5)" in b.log()) == (level == 5)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
@pytest.mark.parametrize("level", [4, 5])
def test_mqttjs_over_wss(broker_factory, certs, level):  # noqa: F811
    port = free_port()
    broker_factory(config="listener 1883 127.0.0.1\nlistener %d 127.0.0.1\nprotocol websockets\n"
                   "certfile %s\nkeyfile %s\n" % (port, certs / "server.pem", certs / "server-key.pem"),
                   heap=V5_HEAP if level == 5 else None)
    rc, out = roundtrip("wss://127.0.0.1:%d/mqtt" % port, level, certs / "ca.pem")
    assert rc == 0 and out["connack"] == 0, out
    assert sorted(out["got"]) == [[0, "q0"], [1, "q1"], [2, "q2"]]
