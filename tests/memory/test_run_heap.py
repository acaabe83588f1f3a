"""`ubroker run --heap SIZE`: without --board the unix profile's limits are cut to fit the
heap (host_tools/ubroker_tools/budget.py for_heap), so the README's `--heap 96k` and `--heap
256k` start and serve instead of dying in a bare MemoryError; a heap too small for even the
smallest useful broker, or for a --board's own tables, is refused in one line that names the
heap needed. The start model behind both (budget.start_tables) is checked against the heap
the broker reports in use."""

import re
import socket
import subprocess
import time

import pytest

import mqttraw
from conftest import UBROKER, RunningBroker, free_port
from ubroker_tools import budget, profiles

UNIX = profiles.fwconfig().resolve(profiles.load_board("unix"))
LIMITS = ("max_connections", "max_sessions", "max_subscriptions", "max_subscriptions_per_client",
          "max_packet_size", "read_buffer_size", "out_buffer_size", "buffer_pool_size", "max_queued_bytes",
          "max_retained_messages", "max_retained_bytes", "max_topic_length")


@pytest.fixture
def run(tmp_path):
    """run(*args) -> RunningBroker for `ubroker run --port P *args` (no --board unless
    given), started and listening. Every broker must still be running, with no traceback and
    no MemoryError in its log, when the test ends."""
    started = []

    def start(*args):
        port = free_port()
        logpath = tmp_path / ("run-%d.log" % port)
        log = open(logpath, "w")
        proc = subprocess.Popen([UBROKER, "run", "--port", str(port)] + list(args), stdout=log,
                                stderr=subprocess.STDOUT)
        b = RunningBroker(proc, port, logpath, None)
        started.append(b)
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return b
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise AssertionError("broker did not start:\n" + b.log()) from None
                time.sleep(0.02)

    yield start
    problems = []
    for b in started:
        if not b.alive():
            problems.append("broker on port %d died (exit %s):\n%s" % (b.port, b.proc.returncode, b.log()))
        b.stop()
        if "Traceback" in b.log() or "MemoryError" in b.log():
            problems.append("broker on port %d:\n%s" % (b.port, b.log()))
    assert not problems, "\n".join(problems)


def refused(*args):
    """(exit status, output) of a `ubroker run` that must not start a broker."""
    r = subprocess.run([UBROKER, "run", "--port", str(free_port())] + list(args), capture_output=True,
                       text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


def one_line_refusal(status, out):
    """The refusal's single line (the `code:` line run prints first aside); asserts it is one."""
    lines = [x for x in out.splitlines() if not x.startswith("ubroker: code:")]
    assert status != 0, out
    assert len(lines) == 1 and lines[0].startswith("ubroker run: "), out
    assert "MemoryError" not in out and "Traceback" not in out, out
    return lines[0]


def needed_heap(line):
    m = re.search(r"needs --heap (\d+)k or more", line)
    assert m, line
    return int(m.group(1))


def next_packet(r):
    """r's next packet other than a PUBACK (client 0 publishes, and gets those too)."""
    while True:
        p = r.recv_packet(10)
        assert p is not None, "connection closed"
        if p.type != 4:
            return p


def serve(broker, n, qos=1):
    """n clients connect and each subscribes to its own topic at qos (MQTT-3.9.3-1: the
    SUBACK grants it); client 0 sends one message to each topic, and every client receives
    its own at that QoS (MQTT-3.3.5-1) and nothing else, then all still answer PINGREQ."""
    clients = []
    for i in range(n):
        r = broker.raw(timeout=10)
        r.send(mqttraw.connect("h%03d" % i, keepalive=0))
        p = r.recv_packet(10)
        assert p is not None and p.type == 2 and p.body == b"\x00\x00", \
            "only %d of %d clients served: client %d got %r\n%s" % (i, n, i, p, broker.log()[-800:])
        r.send(mqttraw.subscribe(1, ("heap/%d" % i, qos)))
        assert r.expect(9).body == bytes([0, 1, qos]), "client %d: subscription refused" % i
        clients.append(r)
    clients[0].send(b"".join(mqttraw.publish("heap/%d" % i, b"to %d" % i, qos=qos, pid=i + 1) for i in range(n)))
    for i, r in enumerate(clients):
        p = next_packet(r)
        assert (p.type, p.topic, p.payload, p.qos) == (3, b"heap/%d" % i, b"to %d" % i, qos), (i, p)
        if qos:
            r.send(mqttraw.puback(p.pid))
    for r in clients:
        r.send(mqttraw.PINGREQ)
    for i, r in enumerate(clients):
        assert next_packet(r).type == 13, i
    assert broker.alive()


def cut_clients(broker):
    """The clients the cut profile allows, from run's own line in the log."""
    m = re.search(r"limits cut to fit --heap \S+: (\d+) clients", broker.log())
    assert m, broker.log()
    return int(m.group(1))


# ------------------------------------------------------------------ through `ubroker run`

def test_heap_96k_without_board_starts_and_serves(run):
    """The README's `ubroker run --heap 96k` (it died at start with MemoryError allocating
    69,680 B, the unix profile's subscription table): the limits are cut, and every client
    the cut allows is served with its subscription."""
    b = run("--heap", "96k")
    n = cut_clients(b)
    assert n >= budget.SMALLEST["max_connections"]
    serve(b, n)


def test_heap_256k_without_board_serves_64_subscribed_clients(run):
    """`ubroker run --heap 256k` (it died at start with MemoryError: the unix profile's
    buffer pool alone is 256 kB): 64 clients, each with one QoS 1 subscription, all receive."""
    b = run("--heap", "256k")
    assert cut_clients(b) >= 64
    serve(b, 64)


def test_heap_too_small_is_refused_naming_the_smallest_heap(run):
    """A heap too small for the smallest useful broker: one line, exit status not 0, naming
    the smallest heap and a board profile. That heap is the smallest run accepts (1k less is
    refused too) and it serves the smallest useful broker's 16 clients."""
    line = one_line_refusal(*refused("--heap", "32k"))
    assert "--heap 32k is too small" in line and "--board esp32" in line, line
    least = needed_heap(line)
    assert needed_heap(one_line_refusal(*refused("--heap", "%dk" % (least - 1)))) == least
    b = run("--heap", "%dk" % least)
    assert cut_clients(b) == budget.SMALLEST["max_connections"]
    serve(b, budget.SMALLEST["max_connections"])


def test_board_keeps_its_limits_and_refuses_a_heap_they_do_not_fit(run):
    """--board esp32 --heap 64k: the board's tables do not fit, so one line names the heap
    they need; with that heap the broker starts with the board's own limits (not cut)."""
    line = one_line_refusal(*refused("--board", "esp32", "--heap", "64k"))
    assert "--heap 64k is too small for board esp32" in line, line
    b = run("--board", "esp32", "--heap", "%dk" % needed_heap(line))
    assert "limits cut" not in b.log()
    serve(b, 4)


def test_board_unix_with_a_small_heap_points_to_the_cut(run):
    """--board unix --heap 256k keeps unix's own tables (768 kB of them), so it is refused,
    and the line says that leaving out --board cuts the limits to fit."""
    line = one_line_refusal(*refused("--board", "unix", "--heap", "256k"))
    assert "too small for board unix" in line and "leave out --board" in line, line


def test_start_tables_match_the_heap_in_use(run, tmp_path):
    """budget.start_tables against the broker: raising the tables' limits through a config
    raises the heap in use after start by what the model says, within 256 B."""
    cfg = tmp_path / "big.conf"
    big = {"max_sessions": 1024, "max_subscriptions": 1024, "max_retained_messages": 512,
           "max_packet_size": 16384, "out_buffer_size": 4096, "buffer_pool_size": 4}
    cfg.write_text("".join("%s %d\n" % kv for kv in big.items()))
    # the baseline reads a config too, of a name as long: the same path strings in its heap
    base = tmp_path / "esp.conf"
    base.write_text("# the profile's limits\n")
    used = []
    for extra in (("--config", str(base)), ("--config", str(cfg))):
        b = run("--board", "esp32", "--heap", "512k", *extra)
        deadline = time.time() + 5
        while "bytes used" not in b.log() and time.time() < deadline:
            time.sleep(0.02)
        used.append(int(re.search(r"heap: (\d+) bytes used", b.log()).group(1)))
    esp32 = profiles.fwconfig().resolve(profiles.load_board("esp32"))
    model = [sum(n for _, n in budget.start_tables(c)) for c in (esp32, dict(esp32, **big))]
    # within 320 B: a presized table steps with the dict's table sizes (esp32 at 88 subscriptions: 288 B)
    assert abs((used[1] - used[0]) - (model[1] - model[0])) <= 320, (used, model)


# ------------------------------------------------------------------ the model alone

@pytest.mark.parametrize("code", sorted(budget.START_64))
def test_cut_profiles_fit_and_never_raise_a_limit(code):
    """For heaps from the smallest to the unix profile's own: the cut fits its heap by the
    model, no limit is above the profile's, and more heap never gives fewer clients."""
    least = budget.smallest_heap(UNIX, code)
    assert budget.for_heap(UNIX, least - 1024, code) is None
    last = 0
    for kb in (least // 1024, 128, 192, 256, 512, 1024, 2048, 4096, 8192):
        heap = kb * 1024
        if heap < least:
            continue
        cut = budget.for_heap(UNIX, heap, code)
        assert budget.run_need(cut, code) <= heap, kb
        for k in LIMITS:
            # max_packet_size 0 (the unix profile's): no limit, above any cut
            assert cut[k] <= (UNIX[k] or float("inf")) and (cut[k] or not UNIX[k]), (kb, k)
        assert cut["max_subscriptions_per_client"] <= cut["max_subscriptions"]
        assert cut["max_sessions"] >= cut["max_connections"] >= last >= 0, kb
        assert cut["max_topic_length"] < (cut["max_packet_size"] or cut["max_queued_bytes"])
        last = cut["max_connections"]


def test_profile_kept_whole_at_its_heap_budget():
    cut = budget.for_heap(UNIX, UNIX["heap_budget"], "native")
    assert {k: cut[k] for k in LIMITS} == {k: UNIX[k] for k in LIMITS}


def test_features_add_to_the_start():
    """What a config turns on (the store, a bridge, sensors, users, TLS) is counted."""
    base = budget.start_need(UNIX, "bytecode")
    for on in ({"persistence": True, "persistence_location": "d"}, {"connection": [{}]}, {"sensor_interval": 5},
               {"password_file": "p"}, {"tls": {0: {}}}):
        assert budget.start_need(dict(UNIX, **on), "bytecode") > base, on


def test_the_broker_itself_refuses_a_heap_its_tables_do_not_fit(tmp_path):
    """The backstop behind ubroker run's check: the unix entry started directly in a heap too
    small for the unix profile's tables says so in one line and exits 2, never a bare
    MemoryError traceback."""
    import os
    import sys

    from ubroker_tools import paths

    mp = os.path.join(os.path.dirname(sys.executable), "micropython")
    def start(heap):
        r = subprocess.run([mp, "-X", "heapsize=" + heap, os.path.join(paths.FIRMWARE, "unix_main.py"),
                            "--board-file", os.path.join(paths.ROOT, "boards", "unix.conf"), "--port", str(free_port())],
                           capture_output=True, text=True, timeout=60, env=dict(os.environ, MICROPYPATH=paths.FIRMWARE))
        out = r.stdout + r.stderr
        assert r.returncode == 2, out
        assert "Traceback" not in out and "MemoryError" not in out, out
        return out

    # room to read the settings (from source), not for the unix profile's tables (~800 kB)
    assert "cannot start: the tables of these limits do not fit this heap" in start("200k")
    # not even for the settings
    assert "cannot start: this heap" in start("32k")
