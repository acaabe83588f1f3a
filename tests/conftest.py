"""Fixtures: a real ubroker in the MicroPython unix port, started through `ubroker run` like a
user would, on a free loopback port, and checked at the end of each test to still be alive.

By default the broker runs with the smallest board's profile (boards/esp32.conf: its heap
budget and its limits), so every protocol test also proves the broker fits that board."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tests' own helpers (raw MQTT packets, the in-process broker, the emulated flash ...),
# imported by name from every test folder (unit, protocol, durability, memory, host).
SUPPORT = os.path.join(ROOT, "tests", "support")
sys.path.insert(0, SUPPORT)

from mqttraw import RawClient  # noqa: E402
UBROKER = os.path.join(os.path.dirname(sys.executable), "ubroker")
if not os.path.exists(UBROKER):
    UBROKER = shutil.which("ubroker")
SMALLEST_BOARD = "esp32"


_GIVEN = set()  # the ports free_port() has handed out in this run


def free_port():
    """A loopback port free now and not handed out before in this run. The kernel may give
    two calls in a row the same port, the first not bound yet: a broker given both for two
    listeners then stops with EADDRINUSE (seen once in test_ws_frames)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


class RunningBroker:
    def __init__(self, proc, port, logpath, data):
        self.proc = proc
        self.host = "127.0.0.1"
        self.port = port
        self.logpath = logpath
        self.data = data
        self._clients = []

    def log(self):
        with open(self.logpath, errors="replace") as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def raw(self, timeout=5.0):
        c = RawClient(self.port, self.host, timeout)
        self._clients.append(c)
        return c

    def client(self, client_id=None, clean_session=True, keepalive=60, will=None, connect=True,
               userdata=None):
        """A paho client with a message list (c.messages) and its loop running.
        will: (topic, payload, qos, retain)."""
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                        client_id=client_id if client_id is not None else "t-" + uuid.uuid4().hex[:8],
                        clean_session=clean_session, userdata=userdata)
        c.messages = []
        c.on_message = lambda cl, u, m: cl.messages.append(m)
        if will is not None:
            c.will_set(will[0], will[1], will[2], will[3])
        if connect:
            c.connect(self.host, self.port, keepalive)
            c.loop_start()
            deadline = time.time() + 5
            while not c.is_connected() and time.time() < deadline:
                time.sleep(0.01)
            assert c.is_connected(), "paho client did not connect"
        self._clients.append(c)
        return c

    def stop(self):
        for c in self._clients:
            try:
                if isinstance(c, RawClient):
                    c.close()
                else:
                    c.disconnect()
                    c.loop_stop()
            except Exception:
                pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_broker(tmp_path, board=SMALLEST_BOARD, config=None, heap=None, port=None, extra=(), data=None,
                 cwd=None):
    """data: a folder for the durable store (persistence on), or None for a broker that
    keeps everything in memory, as the protocol tests use it. cwd: the broker's working
    folder, whose modules it can import (a user's sensor driver, say)."""
    port = port or free_port()
    logpath = tmp_path / ("broker-%d.log" % port)
    cmd = [UBROKER, "run", "--port", str(port), "--board", board, "--verbose"]
    if data is not None:
        cmd += ["--data", str(data)]
    if config is not None:
        cfg = tmp_path / ("broker-%d.conf" % port)
        cfg.write_text(config)
        cmd += ["--config", str(cfg)]
    if heap is not None:
        cmd += ["--heap", str(heap)]
    cmd += list(extra)
    log = open(logpath, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    deadline = time.time() + 30  # the first start compiles the firmware (mpy-cross)
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                if proc.poll() is None:  # too slow: stopped, not left running after the test
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                log.close()
                raise RuntimeError("broker did not start:\n" + logpath.read_text())
            time.sleep(0.02)
    _wait_other_listeners(config, port, logpath, proc, deadline)
    return RunningBroker(proc, port, logpath, data)


def _wait_other_listeners(config, port, logpath, proc, deadline):
    """The listeners are bound one after another: a test that reaches the first (--port) may
    still find the next one (its WebSockets listener, say) not yet listening. Wait for each
    `listener N` of the config to be logged as listening; 1883 is the one --port replaces."""
    others = [int(line.split()[1]) for line in (config or "").splitlines()
              if line.startswith("listener ") and len(line.split()) > 1 and line.split()[1].isdigit()]
    others = [p for p in others if p not in (1883, port)]
    while others and proc.poll() is None and time.time() < deadline:
        text = logpath.read_text()
        others = [p for p in others if not re.search(r"listening on \S+:%d\b" % p, text)]
        if others:
            time.sleep(0.02)


@pytest.fixture
def broker_factory(tmp_path):
    """start(board=..., config='key value\\n...', heap='96k', data=DIR) -> RunningBroker. Every broker
    started must still be running, with no traceback in its log, when the test ends."""
    started = []

    def start(**kw):
        b = start_broker(tmp_path, **kw)
        started.append(b)
        return b

    yield start
    problems = []
    for b in started:
        if not b.alive():
            problems.append("broker on port %d died (exit %s):\n%s" % (b.port, b.proc.returncode, b.log()))
        b.stop()
        if "Traceback" in b.log():
            problems.append("broker on port %d logged a traceback:\n%s" % (b.port, b.log()))
    assert not problems, "\n".join(problems)


# The protocol tests run twice: with the smallest board's profile as it is (no pooled output
# buffers: every write goes through the shared scratch buffer at once) and with a pool of
# output buffers, where a connection's output waits for the end of the pass (Server.flush).
# Each path has had a defect the other could not show.
PROTOCOL_MODULES = {"test_connect", "test_publish", "test_subscribe", "test_sessions", "test_will",
                    "test_retain", "test_self_subscribe", "test_malformed", "test_ack_order"}
PROFILES = {SMALLEST_BOARD: None, SMALLEST_BOARD + "+pool": "buffer_pool_size 8\n"}


def pytest_generate_tests(metafunc):
    if "broker" in metafunc.fixturenames and metafunc.module.__name__.rpartition(".")[2] in PROTOCOL_MODULES:
        metafunc.parametrize("broker", sorted(PROFILES), indirect=True)


@pytest.fixture
def broker(request, broker_factory):
    """A fresh broker with the smallest board's profile (and, for the protocol tests, also
    with pooled output buffers)."""
    return broker_factory(config=PROFILES[getattr(request, "param", SMALLEST_BOARD)])


def wait_for(cond, timeout=5.0, step=0.01):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()
