"""The per-broker scenarios of `ubroker bench` and how each is run: the broker started fresh on a
free loopback port, driven by bench/loadgen (C, one poll loop, pre-encoded packets, MQTT 3.1.1 or
5.0, built here with cc) which also verifies what arrives, then stopped. run_scenario() returns
one result dict per broker and scenario, as results.json holds it."""

import json
import os
import shutil
import subprocess
import time

from .bench_proc import BENCH, cpu_seconds, free_port, rss_bytes
from .bench_storm import storm
from .bench_tls import tls_certs, tls_connects
from .bench_ws import WS_PATH, handshake_problem

LOADGEN_SRC = os.path.join(BENCH, "loadgen.c")

MEMBERS = 2  # subscribers in fanin1shared's group (bench_report.py's row label says 2)
# Issue 15's fan-ins at protocol level 5, QoS 1, each PUBLISH with a User Property (loadgen --v5)
V5_FANIN = ["fanin", "--qos", "1", "--pubs", "8", "--v5"]

# key: (title, loadgen arguments)
SCENARIOS = {
    "fanin0": ("fan-in QoS 0, 8 pub -> 1 sub", ["fanin", "--qos", "0", "--pubs", "8", "--subs", "1"]),
    "fanin1": ("fan-in QoS 1, 8 pub -> 1 sub", ["fanin", "--qos", "1", "--pubs", "8", "--subs", "1"]),
    "fanin2": ("fan-in QoS 2, 8 pub -> 1 sub", ["fanin", "--qos", "2", "--pubs", "8", "--subs", "1"]),
    # fanin1 with every client over WebSockets: the broker gets a websockets listener too (bench_ws).
    "fanin1ws": ("fan-in QoS 1 over WebSockets, 8 pub -> 1 sub",
                 ["fanin", "--qos", "1", "--pubs", "8", "--subs", "1", "--ws", WS_PATH]),
    # The durable store's cost: the same as fanin1, the subscriber with a persistent session.
    "fanin1p": ("fan-in QoS 1, 8 pub -> 1 persistent sub",
                ["fanin", "--qos", "1", "--pubs", "8", "--subs", "1", "--persistent"]),
    "fanin1v5": ("fan-in QoS 1 at MQTT 5, 8 pub -> 1 sub", V5_FANIN + ["--subs", "1"]),
    # The same, each publisher's topic by Topic Alias after its first PUBLISH (issue 15).
    "fanin1v5alias": ("fan-in QoS 1 at MQTT 5 with a topic alias, 8 pub -> 1 sub",
                      V5_FANIN + ["--subs", "1", "--alias"]),
    # The same to a shared subscription of MEMBERS subscribers (issue 15).
    "fanin1shared": ("fan-in QoS 1 at MQTT 5, 8 pub -> $share group of %d sub" % MEMBERS,
                     V5_FANIN + ["--subs", str(MEMBERS), "--shared", "bench"]),
    "fanout0": ("fan-out QoS 0, 1 pub -> 16 sub", ["fanout", "--qos", "0", "--pubs", "1", "--subs", "16"]),
    "latency": ("round trip QoS 0, 1 client", ["latency"]),
    "connect": ("connects", ["connect", "--conc", "16"]),
    # Not the load generator (it has no TLS): a CPython client, TLS_CONC threads (bench_tls).
    "connect_tls": ("connects over TLS", None),
    "idle": ("idle clients (1 subscription each)", ["idle"]),
    # Not the load generator: 1,000 clients reconnecting 100 at a time (bench_storm).
    "storm": ("reconnect storm, 1,000 clients 100 at a time", None),
}

# The scenarios at MQTT 5: peers that do not speak it are not started for them.
V5 = tuple(k for k, (_, lg) in SCENARIOS.items() if lg and "--v5" in lg)


def build_loadgen(dest_dir=None, cc=None):
    """Compile bench/loadgen.c (if missing or older than the source); return its path."""
    dest_dir = dest_dir or os.path.join(BENCH, "bin")
    exe = os.path.join(str(dest_dir), "loadgen")
    if os.path.exists(exe) and os.path.getmtime(exe) >= os.path.getmtime(LOADGEN_SRC):
        return exe
    cc = cc or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("no C compiler: install gcc (make bench does: apt-get install gcc)")
    os.makedirs(str(dest_dir), exist_ok=True)
    tmp = exe + ".tmp%d" % os.getpid()
    subprocess.run([cc, "-O2", "-o", tmp, LOADGEN_SRC], check=True)
    os.replace(tmp, exe)
    return exe


def run_loadgen(exe, port, args, timeout):
    """Run one loadgen scenario; return its JSON result (a dict with 'fatal' if it failed)."""
    cmd = [exe] + args[:1] + ["--port", str(port)] + args[1:]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"fatal": "loadgen did not finish within %d s" % timeout}
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"fatal": "loadgen printed no result (exit %d): %s" % (r.returncode, r.stderr.strip()[-300:])}
    return json.loads(lines[-1])


def run_scenario(broker, key, exe, opts):
    """Start the broker fresh, run one scenario, stop it. Returns a result dict."""
    title, lg = SCENARIOS[key]
    port = free_port()
    res = {"scenario": key, "broker": broker.name, "port": port}
    if key == "connect_tls":
        if broker.name not in ("ubroker", "mosquitto"):
            res["untested"] = "no TLS set-up for %s in this bench" % broker.name
            return res
        try:
            broker.tls = (free_port(), tls_certs(opts["out"]))
        except (OSError, subprocess.CalledProcessError) as e:
            res["error"] = "cannot make test certificates with openssl: %s" % e
            return res
    if key in V5 and broker.name not in ("ubroker", "mosquitto"):
        res["untested"] = "%s does not speak MQTT 5" % broker.name
        return res
    ws = lg is not None and "--ws" in lg
    broker.ws = free_port() if ws else None
    try:
        broker.start(port)
    except Exception as e:
        res["error"] = str(e)
        broker.tls = broker.ws = None
        return ws_untested(broker, res, "it does not start with a websockets listener: %s" % e) if ws else res
    try:
        pid = broker.pid()
        why = handshake_problem(broker.ws) if ws else None
        if why:
            res = ws_untested(broker, res, why)
        elif key == "connect_tls":
            cpu0, t0 = cpu_seconds(pid), time.time()
            res.update(tls_connects(broker.tls[0], os.path.join(broker.tls[1], "ca.pem"), opts["duration"]))
            cpu1 = cpu_seconds(pid)
            if cpu0 is not None and cpu1 is not None:
                res["broker_cpu_pct"] = round(100.0 * (cpu1 - cpu0) / (time.time() - t0), 1)
            res["broker_rss_after"] = rss_bytes(pid)
        elif key == "idle":
            res.update(run_idle(exe, port, pid, opts))
        elif key == "storm":
            cpu0 = cpu_seconds(pid)
            res.update(storm(port))
            cpu1 = cpu_seconds(pid)
            if cpu0 is not None and cpu1 is not None and res["seconds"]:
                res["broker_cpu_pct"] = round(100.0 * (cpu1 - cpu0) / res["seconds"], 1)
        else:
            args = list(lg) + ["--duration", str(opts["duration"])]
            if key.startswith("fan"):
                # After publishing: QoS 1/2 wait up to `drain` s (a stall of `idle` s ends it: missing
                # acknowledged messages are then reported lost); QoS 0 only until the last ones arrive.
                stall = "1" if key.endswith("0") else "5"
                args += ["--drain", str(opts["drain"]), "--idle", stall]
            # The load generator reads the broker's CPU time itself, over the span it measures.
            r = run_loadgen(exe, broker.ws or port, args + ["--watch", str(pid)],
                            timeout=opts["duration"] + opts["drain"] + 60)
            res.update(r)
            res["broker_rss_after"] = rss_bytes(pid)
        trouble = broker.problems()
        if trouble:
            res["broker_problem"] = trouble
    finally:
        broker.stop()
        broker.tls = broker.ws = None
    return res


def ws_untested(broker, res, why):
    """A peer whose websockets listener does not work here is not measured, with the reason;
    for ubroker it is a failure."""
    if broker.name == "ubroker":
        res["error"] = res.get("error") or why
    else:
        res.pop("error", None)
        res["untested"] = "%s over WebSockets: %s" % (broker.name, why)
    return res


def run_idle(exe, port, pid, opts):
    """loadgen holds opts["idle_clients"] clients (one subscription each) until told to go; the
    broker's RSS before and after them, per client."""
    n = opts["idle_clients"]
    time.sleep(0.3)
    rss0 = rss_bytes(pid)
    p = subprocess.Popen([exe, "idle", "--port", str(port), "--clients", str(n)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = {"clients": n, "rss_before": rss0}
    try:
        line = p.stdout.readline()
        if not line.startswith("READY"):
            rest = line + p.stdout.read()
            js = [x for x in rest.splitlines() if x.startswith("{")]
            out.update(json.loads(js[-1]) if js else {"fatal": "idle: " + rest.strip()[-300:]})
            return out
        out["connect_seconds"] = float(line.split()[2])
        time.sleep(1.0)
        rss1 = rss_bytes(pid)
        out["rss_after"] = rss1
        if rss0 is not None and rss1 is not None:
            out["rss_per_client"] = round((rss1 - rss0) / n)
        p.stdin.close()
        rest = p.stdout.read()
        js = [x for x in rest.splitlines() if x.startswith("{")]
        if js:
            r = json.loads(js[-1])
            out["still_connected"] = r.get("still_connected")
            out["violations"] = r.get("violations", 0)
    finally:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
    return out
