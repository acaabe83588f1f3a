"""`ubroker bench`: ubroker side by side with Mosquitto, aedes and amqtt on this machine.

Each scenario starts each broker fresh on its own loopback port and drives it with bench/loadgen
(C, one poll loop, pre-encoded packets), which also verifies what arrives: every acknowledged
message delivered, nothing twice at QoS 2, order per publisher. Results go to stdout as a markdown
table (ratios to Mosquitto), to bench/out/results.md and bench/out/results.json."""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

from . import paths

BENCH = os.path.join(paths.ROOT, "bench")
LOADGEN_SRC = os.path.join(BENCH, "loadgen.c")

HELP = """Benchmark ubroker (unix port) against Mosquitto, aedes and amqtt, side by side.

Scenarios: fan-in QoS 0/1/2 (8 publishers -> 1 subscriber), fan-out QoS 0 (1 -> 16), round-trip
latency p50/p99, connects per second, RSS per idle client. Each broker is started fresh for each
scenario on a free 127.0.0.1 port. The load generator (bench/loadgen.c, built with cc into
bench/bin/) verifies every delivery; any lost acknowledged message, QoS 2 duplicate or reordering
is reported. Peers that are not installed are shown as unavailable (`make bench` installs them).

Scenario `bridge` (bench_bridge.py): ubroker's bridge next to Mosquitto's own bridge, each forwarding
`topic bench/# out 1` to an upstream Mosquitto: the forwarding rate at QoS 1 and QoS 0, and the time
to drain --drain-messages QoS 1 messages queued while the upstream was down once it starts again.

example:
  make bench                                 # set up the peers, then the full run (~3-5 min)
  ubroker bench --quick                      # short run while developing
  ubroker bench --brokers ubroker,mosquitto --scenarios fanin1,latency
  ubroker bench --update-results             # also rewrite bench/RESULTS.md (committed table)
  ubroker bench --scenarios bridge           # only the bridge figures (~30 s)
"""

BROKERS = ["mosquitto", "ubroker", "aedes", "amqtt"]

# key: (title, loadgen arguments)
SCENARIOS = {
    "fanin0": ("fan-in QoS 0, 8 pub -> 1 sub", ["fanin", "--qos", "0", "--pubs", "8", "--subs", "1"]),
    "fanin1": ("fan-in QoS 1, 8 pub -> 1 sub", ["fanin", "--qos", "1", "--pubs", "8", "--subs", "1"]),
    "fanin2": ("fan-in QoS 2, 8 pub -> 1 sub", ["fanin", "--qos", "2", "--pubs", "8", "--subs", "1"]),
    # The durable store's cost: the same as fanin1, the subscriber with a persistent session.
    "fanin1p": ("fan-in QoS 1, 8 pub -> 1 persistent sub",
                ["fanin", "--qos", "1", "--pubs", "8", "--subs", "1", "--persistent"]),
    "fanout0": ("fan-out QoS 0, 1 pub -> 16 sub", ["fanout", "--qos", "0", "--pubs", "1", "--subs", "16"]),
    "latency": ("round trip QoS 0, 1 client", ["latency"]),
    "connect": ("connects", ["connect", "--conc", "16"]),
    # Not the load generator (it has no TLS): a CPython client, TLS_CONC threads (tls_connects).
    "connect_tls": ("connects over TLS", None),
    "idle": ("idle clients (1 subscription each)", ["idle"]),
}
# Not a per-broker scenario: run by bench_bridge.py, reported in its own "Bridge" table.
BRIDGE = "bridge"


def add_parser(sub):
    p = sub.add_parser("bench", help="side-by-side benchmark against Mosquitto, aedes, amqtt", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short scenarios (about 1 s each) while developing")
    p.add_argument("--brokers", default=",".join(BROKERS), help="comma-separated, from: " + ", ".join(BROKERS))
    p.add_argument("--scenarios", default=",".join(list(SCENARIOS) + [BRIDGE]),
                   help="comma-separated, from: " + ", ".join(list(SCENARIOS) + [BRIDGE]))
    p.add_argument("--duration", type=float, help="seconds of load per scenario (default 3, --quick 1)")
    p.add_argument("--idle-clients", type=int, help="clients held in the idle scenario (default 200, --quick 50)")
    p.add_argument("--out", default=os.path.join(BENCH, "out"), help="where results.md/.json go (default bench/out)")
    p.add_argument("--update-results", action="store_true", help="also write the table to bench/RESULTS.md")
    p.add_argument("--bridge-messages", type=int,
                   help="bridge: messages per forwarding run (default 100000, --quick 20000)")
    p.add_argument("--drain-messages", type=int, default=10000,
                   help="bridge: messages queued while the upstream is down (default 10000)")
    # 8M is not enough today: the store's compaction writes a session's whole queue into one
    # buffer, which fails (MemoryError, publisher held back) after 8,064 queued messages.
    p.add_argument("--bridge-heap", default="16M",
                   help="bridge: ubroker's heap in the drain run (default 16M; 8M holds 8,064 queued)")
    p.add_argument("--heap", default="8M", help="ubroker's MicroPython heap (default 8M, the unix board's)")
    p.set_defaults(func=main)


# ------------------------------------------------------------------ the load generator

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


# ------------------------------------------------------------------ processes

def cpu_seconds(pid):
    """User + system CPU time of a process so far (from /proc), or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def rss_bytes(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    name = "?"
    tls = None  # (port, folder with server.pem, server-key.pem): a TLS listener too

    def __init__(self, out):
        self.out = out
        self.proc = None
        self.port = None
        self.log = None

    def unavailable(self):
        """None if it can run here, else why not (and what to do)."""
        return None

    def version(self):
        return ""

    def command(self, port, work):
        raise NotImplementedError

    def start(self, port):
        self.port = port
        work = os.path.join(self.out, "%s-%d" % (self.name, port))
        os.makedirs(work, exist_ok=True)
        self.logpath = os.path.join(work, "broker.log")
        self.log = open(self.logpath, "w")
        cmd, cwd = self.command(port, work)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=cwd, start_new_session=True)
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.stop()
                    raise RuntimeError("%s did not start: %s" % (self.name, self.log_tail()))
                time.sleep(0.05)
        time.sleep(0.2)  # let the probe connection go away

    def pid(self):
        """The process doing the broker's work (for CPU and RSS)."""
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=600):
        try:
            with open(self.logpath, errors="replace") as f:
                return f.read()[-n:].strip()
        except OSError:
            return ""

    def problems(self):
        """Crash or traceback in the log, as text ('' when none)."""
        out = []
        if self.proc is not None and self.proc.poll() is not None:
            out.append("%s exited with code %s during the scenario: %s" % (self.name, self.proc.returncode,
                                                                             self.log_tail(300)))
        return "; ".join(out)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.log:
            self.log.close()
            self.log = None


class Ubroker(Broker):
    name = "ubroker"

    def __init__(self, out, heap):
        super().__init__(out)
        self.heap = heap

    def unavailable(self):
        if not paths.micropython():
            return "no micropython (make setup installs it into .venv)"
        return None

    def version(self):
        try:
            with open(os.path.join(paths.FIRMWARE, "ubroker", "__init__.py")) as f:
                for line in f:
                    if line.startswith("VERSION"):
                        return "ubroker " + line.split("=", 1)[1].strip().strip("\"'") + " (unix port, --heap " + \
                            self.heap + ")"
        except OSError:
            pass
        return "ubroker"

    def command(self, port, work):
        exe = os.path.join(os.path.dirname(sys.executable), "ubroker")
        if not os.path.exists(exe):
            exe = shutil.which("ubroker") or exe
        cmd = [exe, "run", "--board", "unix", "--port", str(port), "--data", os.path.join(work, "data"),
               "--heap", self.heap]
        if self.tls:
            conf = os.path.join(work, "tls.conf")
            with open(conf, "w") as f:  # the first listener is the one --port replaces
                f.write("listener %d 127.0.0.1\nlistener %d 127.0.0.1\ncertfile %s\nkeyfile %s\n" % (
                    port, self.tls[0], os.path.join(self.tls[1], "server.pem"), os.path.join(self.tls[1], "server-key.pem")))
            cmd += ["--config", conf]
        return cmd, work

    def pid(self):
        kids = children(self.proc.pid)
        return kids[0] if kids else self.proc.pid

    def problems(self):
        p = super().problems()
        tail = self.log_tail(4000)
        if "Traceback" in tail:
            p = (p + "; " if p else "") + "traceback in the broker log: " + tail[tail.index("Traceback"):][:600]
        return p


class Mosquitto(Broker):
    name = "mosquitto"

    def exe(self):
        return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)

    def unavailable(self):
        return None if self.exe() else "mosquitto not installed (make bench installs the Debian package)"

    def version(self):
        try:
            r = subprocess.run([self.exe(), "-h"], capture_output=True, text=True, timeout=5)
            return (r.stdout + r.stderr).splitlines()[0].strip()
        except Exception:
            return "mosquitto"

    def command(self, port, work):
        conf = os.path.join(work, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write("# written by ubroker bench\n"
                    "listener %d 127.0.0.1\n"
                    "allow_anonymous true\n"
                    "# lossless: never drop a message it acknowledged (its default drops past 1000 queued)\n"
                    "max_queued_messages 0\n"
                    "persistence false\n"
                    "log_dest stderr\n"
                    "log_type error\n"
                    "log_type warning\n"
                    "connection_messages false\n" % port)
            if self.tls:
                # TCP_NODELAY as ubroker sets it: without it Mosquitto's CONNACK waits behind its
                # TLS 1.3 session tickets for the client's delayed ACK (measured: ~90 connects/s,
                # 7% CPU).
                f.write("set_tcp_nodelay true\n")
                f.write("listener %d 127.0.0.1\ncertfile %s\nkeyfile %s\n" % (
                    self.tls[0], os.path.join(self.tls[1], "server.pem"), os.path.join(self.tls[1], "server-key.pem")))
        return [self.exe(), "-c", conf], work


class Aedes(Broker):
    name = "aedes"

    def unavailable(self):
        if not shutil.which("node"):
            return "node not installed (make bench installs nodejs)"
        if not os.path.exists(os.path.join(BENCH, "node_modules", "aedes", "package.json")):
            return "aedes not installed in bench/node_modules (make bench runs npm ci there)"
        return None

    def version(self):
        try:
            with open(os.path.join(BENCH, "node_modules", "aedes", "package.json")) as f:
                v = json.load(f)["version"]
            node = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=5).stdout.strip()
            return "aedes %s (node %s)" % (v, node)
        except Exception:
            return "aedes"

    def command(self, port, work):
        return ["node", os.path.join(BENCH, "aedes_server.mjs"), str(port)], BENCH


class Amqtt(Broker):
    name = "amqtt"
    VENV = os.path.join(paths.ROOT, ".venv-bench")

    def exe(self):
        return os.path.join(self.VENV, "bin", "amqtt")

    def unavailable(self):
        if not os.path.exists(self.exe()):
            return "amqtt not installed in .venv-bench (make bench installs bench/requirements-amqtt.txt there)"
        return None

    def version(self):
        try:
            r = subprocess.run([self.exe(), "--version"], capture_output=True, text=True, timeout=20)
            v = (r.stdout + r.stderr).strip().splitlines()[-1]
            py = subprocess.run([os.path.join(self.VENV, "bin", "python"), "-c",
                                 "import platform; print(platform.python_version())"],
                                capture_output=True, text=True, timeout=20).stdout.strip()
            return "amqtt %s (CPython %s)" % (v.split()[-1], py)
        except Exception:
            return "amqtt"

    def command(self, port, work):
        conf = os.path.join(work, "amqtt.yaml")
        with open(conf, "w") as f:
            f.write("# written by ubroker bench: one TCP listener, anonymous, no logging or $SYS plugins\n"
                    "listeners:\n"
                    "  default:\n"
                    "    type: tcp\n"
                    "    bind: 127.0.0.1:%d\n"
                    "plugins:\n"
                    "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
                    "    allow_anonymous: true\n" % port)
        return [self.exe(), "-c", conf], work


def make_broker(name, out, args):
    if name == "ubroker":
        return Ubroker(out, args.heap)
    return {"mosquitto": Mosquitto, "aedes": Aedes, "amqtt": Amqtt}[name](out)


# ------------------------------------------------------------------ scenarios

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
    try:
        broker.start(port)
    except Exception as e:
        res["error"] = str(e)
        broker.tls = None
        return res
    try:
        pid = broker.pid()
        if key == "connect_tls":
            cpu0, t0 = cpu_seconds(pid), time.time()
            res.update(tls_connects(broker.tls[0], os.path.join(broker.tls[1], "ca.pem"), opts["duration"]))
            cpu1 = cpu_seconds(pid)
            if cpu0 is not None and cpu1 is not None:
                res["broker_cpu_pct"] = round(100.0 * (cpu1 - cpu0) / (time.time() - t0), 1)
            res["broker_rss_after"] = rss_bytes(pid)
        elif key == "idle":
            res.update(run_idle(broker, exe, port, pid, opts))
        else:
            args = list(lg) + ["--duration", str(opts["duration"])]
            if key.startswith("fan"):
                # After publishing: QoS 1/2 wait up to `drain` s (a stall of `idle` s ends it: missing
                # acknowledged messages are then reported lost); QoS 0 only until the last ones arrive.
                stall = "1" if key.endswith("0") else "5"
                args += ["--drain", str(opts["drain"]), "--idle", stall]
            # The load generator reads the broker's CPU time itself, over the span it measures.
            r = run_loadgen(exe, port, args + ["--watch", str(pid)],
                            timeout=opts["duration"] + opts["drain"] + 60)
            res.update(r)
            res["broker_rss_after"] = rss_bytes(pid)
        trouble = broker.problems()
        if trouble:
            res["broker_problem"] = trouble
    finally:
        broker.stop()
        broker.tls = None
    return res


TLS_CONC = 4


def tls_certs(out):
    """A CA and a server certificate for 127.0.0.1 signed by it (EC P-256), made once with the
    openssl command in OUT/tls; both brokers get the same files."""
    d = os.path.join(os.path.abspath(out), "tls")
    if os.path.exists(os.path.join(d, "server.pem")):
        return d
    os.makedirs(d, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*a):
        subprocess.run(["openssl"] + list(a), cwd=d, check=True, capture_output=True)

    run("req", "-x509", *ec, "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "30", "-subj", "/CN=bench CA")
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    run("req", "-new", *ec, "-keyout", "server-key.pem", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
        "-out", "server.pem", "-days", "30", "-extfile", "san.ext")
    # Throwaway test keys: readable, since Mosquitto started as root reads them as its own user
    for name in os.listdir(d):
        os.chmod(os.path.join(d, name), 0o644)
    os.chmod(d, 0o755)
    return d


def tls_connects(port, cafile, seconds, conc=TLS_CONC):
    """Complete MQTT sessions over TLS per second: TCP connect, handshake (the server's
    certificate verified), CONNECT, CONNACK 0, DISCONNECT; conc client threads for `seconds`.
    The client is CPython's ssl, the same for every broker."""
    ctx = ssl.create_default_context(cafile=cafile)
    done = [0] * conc
    failed = [0] * conc
    errors = []
    stop = time.time() + seconds

    def worker(i):
        n = 0
        while time.time() < stop:
            n += 1
            cid = b"tls-%d-%d" % (i, n)
            connect = bytes([0x10, 12 + len(cid)]) + b"\x00\x04MQTT\x04\x02\x00\x3c" + bytes([0, len(cid)]) + cid
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                    # each small packet at once, as the load generator does
                    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                        s.sendall(connect)
                        got = b""
                        while len(got) < 4:
                            chunk = s.recv(4 - len(got))
                            if not chunk:
                                raise OSError("closed before CONNACK")
                            got += chunk
                        if got != b"\x20\x02\x00\x00":
                            raise OSError("CONNACK %r" % got)
                        s.sendall(b"\xe0\x00")
                done[i] += 1
            except (OSError, ssl.SSLError) as e:
                failed[i] += 1
                if len(errors) < 3:
                    errors.append(str(e))

    t0 = time.time()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    span = time.time() - t0
    out = {"rate": round(sum(done) / span, 1), "connects": sum(done), "failed": sum(failed),
           "client": "CPython ssl, %d threads" % conc}
    if errors:
        out["first_error"] = errors[0]
    return out


def run_idle(broker, exe, port, pid, opts):
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


# ------------------------------------------------------------------ the table

def fmt_num(v, unit=""):
    if v is None:
        return "-"
    if abs(v) >= 100:
        s = "{:,.0f}".format(v)
    elif abs(v) >= 10:
        s = "{:.1f}".format(v)
    else:
        s = "{:.2f}".format(v)
    return s + unit


# row key -> (label, unit, scenario, how to get the value, lower is better)
ROWS = [
    ("fanin0", "fan-in QoS 0 (8 -> 1)", "msg/s", "fanin0", lambda r: r.get("rate"), False),
    ("fanin1", "fan-in QoS 1 (8 -> 1)", "msg/s", "fanin1", lambda r: r.get("rate"), False),
    ("fanin2", "fan-in QoS 2 (8 -> 1)", "msg/s", "fanin2", lambda r: r.get("rate"), False),
    ("fanin1p", "fan-in QoS 1, persistent sub", "msg/s", "fanin1p", lambda r: r.get("rate"), False),
    ("fanout0", "fan-out QoS 0 (1 -> 16)", "deliveries/s", "fanout0", lambda r: r.get("rate"), False),
    ("lat50", "round trip p50", "us", "latency", lambda r: r.get("p50_us"), True),
    ("lat99", "round trip p99", "us", "latency", lambda r: r.get("p99_us"), True),
    ("connect", "connects", "/s", "connect", lambda r: r.get("rate"), False),
    ("connect_tls", "connects over TLS", "/s", "connect_tls", lambda r: r.get("rate"), False),
    ("idle", "RSS per idle client", "bytes", "idle", lambda r: r.get("rss_per_client"), True),
]


def cell_error(r):
    if r is None:
        return None
    if r.get("error"):
        return "failed to start"
    if r.get("fatal"):
        return "failed"
    return None


def verification(r):
    """One short text of what the verification found ('ok' when nothing)."""
    if r is None:
        return None
    if r.get("error") or r.get("fatal"):
        return "FAILED: " + (r.get("error") or r.get("fatal"))
    notes = []
    qos = r.get("qos")
    if r.get("lost_acked"):
        notes.append("**%d acknowledged messages lost** (end: %s)" % (r["lost_acked"], r.get("end")))
    if r.get("duplicates"):
        notes.append(("**%d duplicates at QoS 2**" if qos == 2 else "%d duplicates") % r["duplicates"])
    if r.get("out_of_order"):
        notes.append("**%d out of order**" % r["out_of_order"])
    if r.get("malformed"):
        notes.append("**%d malformed/unexpected deliveries**" % r["malformed"])
    if r.get("qos_mismatch"):
        notes.append("%d delivered at another QoS" % r["qos_mismatch"])
    if qos == 0 and r.get("lost"):
        exp = r.get("expected") or 1
        notes.append("%.1f%% dropped (QoS 0)" % (100.0 * r["lost"] / exp))
    if qos and r.get("end") not in (None, "complete") and not r.get("lost_acked"):
        notes.append("ended: %s" % r.get("end"))
    if r.get("closed"):
        notes.append("**connections closed: %s**" % ", ".join(r["closed"][:3]))
    if r.get("scenario") == "latency" and r.get("lost"):
        notes.append("**%d round trips never came back**" % r["lost"])
    if r.get("untested"):
        return "not measured: " + r["untested"]
    if r.get("scenario") == "connect_tls" and r.get("failed"):
        notes.append("**%d failed: %s**" % (r["failed"], r.get("first_error")))
    if r.get("scenario") == "connect" and (r.get("failed") or r.get("refused")):
        notes.append("**%d failed, %d refused: %s**" % (r.get("failed", 0), r.get("refused", 0), r.get("error")))
    if r.get("scenario") == "idle" and r.get("still_connected") is not None and \
            r["still_connected"] != r.get("clients"):
        notes.append("**only %s of %s idle clients still connected**" % (r["still_connected"], r["clients"]))
    if r.get("broker_problem"):
        notes.append("**" + r["broker_problem"] + "**")
    return "; ".join(notes) if notes else "ok"


def render(report):
    brokers = report["brokers"]
    res = report["results"]
    names = [b for b in brokers]
    lines = []
    lines.append("| scenario | unit | " + " | ".join(names) + " |")
    lines.append("|---|---|" + "---|" * len(names))
    base = "mosquitto"
    for key, label, unit, scen, get, lower in ROWS:
        if scen not in report["scenarios"]:
            continue
        cells = []
        ref_r = res.get(base, {}).get(scen)
        ref = get(ref_r) if ref_r and not cell_error(ref_r) else None
        for b in names:
            info = brokers[b]
            if info.get("unavailable"):
                cells.append("unavailable")
                continue
            r = res.get(b, {}).get(scen)
            err = cell_error(r)
            if r is None:
                cells.append("-")
                continue
            if err:
                cells.append(err)
                continue
            v = get(r)
            s = fmt_num(v)
            if b != base and v is not None and ref:
                s += " (%.2f×)" % (v / ref)
            cells.append(s)
        lines.append("| %s | %s | %s |" % (label, unit, " | ".join(cells)))
    table = "\n".join(lines)

    ver = ["| scenario | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for scen in report["scenarios"]:
        cells = []
        for b in names:
            if brokers[b].get("unavailable"):
                cells.append("unavailable")
                continue
            v = verification(res.get(b, {}).get(scen))
            cells.append(v if v is not None else "-")
        ver.append("| %s | %s |" % (scen, " | ".join(cells)))

    cpu = ["| scenario | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for scen in report["scenarios"]:
        if scen == "idle":
            continue
        cells = []
        for b in names:
            r = res.get(b, {}).get(scen)
            if not r or r.get("error") or r.get("fatal"):
                cells.append("-")
                continue
            cells.append("%s / %s" % (fmt_num(r.get("broker_cpu_pct"), "%"), fmt_num(r.get("loadgen_cpu_pct"), "%")))
        cpu.append("| %s | %s |" % (scen, " | ".join(cells)))

    out = []
    out.append("Ratios are to Mosquitto (for latency and memory, lower is better). Rates are messages delivered to "
               "subscribers per second, over the time from the first publish to the last delivery.")
    out.append("")
    out.append(table)
    out.append("")
    unavailable = ["%s: %s" % (b, brokers[b]["unavailable"]) for b in names if brokers[b].get("unavailable")]
    if unavailable:
        out.append("Unavailable: " + "; ".join(unavailable))
        out.append("")
    out.append("Verification (loadgen: every PUBACKed/PUBRECed message delivered, no QoS 2 duplicate, order per "
               "publisher; QoS 0 drops are allowed and only counted):")
    out.append("")
    out.extend(ver)
    out.append("")
    out.append("CPU, broker / load generator (% of one core over the measured span). Where the broker is near 100% "
               "and the load generator is not, the broker is what is measured. For connects on loopback the kernel's "
               "TCP set-up is charged to the client side, so there both are near a core each: the 2 cores are the "
               "limit, for every broker alike.")
    out.append("")
    out.extend(cpu)
    tg = targets(report)
    if tg:
        out.append("")
        out.append("ubroker against the targets of issue 2:")
        out.append("")
        out.extend("- " + t for t in tg)
    out.append("")
    out.append("Versions: " + "; ".join(brokers[b].get("version") or b for b in names if not brokers[b].get("unavailable")))
    out.append("Settings: %s s of load per scenario, QoS 1/2 window %d per publisher, QoS 0 publishers at most %d "
               "messages ahead of the subscriber, 16-byte payloads, %d idle clients." %
               (fmt_num(report["settings"]["duration"]), 20, 2000, report["settings"]["idle_clients"]))
    return "\n".join(out)


def targets(report):
    res = report["results"]
    u, m, a = res.get("ubroker", {}), res.get("mosquitto", {}), res.get("amqtt", {})
    if not u or not m:
        return []
    out = []

    def val(d, scen, get):
        r = d.get(scen)
        if not r or cell_error(r):
            return None
        return get(r)

    def mark(ok):
        return "met" if ok else "**not met**"

    for scen, name, thr in (("fanin0", "fan-in QoS 0", 0.5), ("fanin1", "fan-in QoS 1", 0.5)):
        uv, mv = val(u, scen, lambda r: r.get("rate")), val(m, scen, lambda r: r.get("rate"))
        if uv is not None and mv:
            lossless = "" if scen == "fanin0" else (", lossless" if verification(u[scen]) == "ok" else
                                                    ", verification: " + verification(u[scen]))
            out.append("%s >= %.1f x Mosquitto: %.2f x%s -> %s" % (name, thr, uv / mv, lossless,
                                                                  mark(uv / mv >= thr and not (scen == "fanin1" and
                                                                       verification(u[scen]) != "ok"))))
    if u.get("fanin2"):
        v = verification(u["fanin2"])
        out.append("fan-in QoS 2 lossless: %s -> %s" % (v, mark(v == "ok")))
    up, un = val(u, "fanin1p", lambda r: r.get("rate")), val(u, "fanin1", lambda r: r.get("rate"))
    if up is not None and un:
        out.append("ubroker fan-in QoS 1, persistent subscriber (durable store on) within 20%% of "
                   "non-persistent: %.2f x -> %s" % (up / un, mark(up / un >= 0.8)))
    uv, mv = val(u, "latency", lambda r: r.get("p50_us")), val(m, "latency", lambda r: r.get("p50_us"))
    if uv is not None and mv:
        out.append("latency p50 <= 2 x Mosquitto: %.2f x -> %s" % (uv / mv, mark(uv / mv <= 2)))
    if a:
        ratios = []
        for key, label, unit, scen, get, lower in ROWS:
            uv, av = val(u, scen, get), val(a, scen, get)
            if uv is None or av is None or uv == 0 or av == 0:
                continue
            ratios.append(((av / uv) if lower else (uv / av), key))
        if ratios:
            worst = min(ratios)
            line = "every scenario >= 20 x amqtt: %s; lowest %s at %.1f x -> %s" % (
                ", ".join("%s %.1f x" % (k, r) for r, k in ratios), worst[1], worst[0], mark(worst[0] >= 20))
            # The same bar for Mosquitto, measured in the same run: where Mosquitto itself is
            # below it, the loopback round trip and the kernel bound every broker here.
            mosq = []
            for key, label, unit, scen, get, lower in ROWS:
                mv, av = val(m, scen, get), val(a, scen, get)
                if mv and av:
                    mosq.append((key, (av / mv) if lower else (mv / av)))
            below = [k for k, r in mosq if r < 20]
            if mosq:
                line += " (Mosquitto itself: %s; below 20 x in %s)" % (
                    ", ".join("%s %.1f x" % (k, r) for k, r in mosq), ", ".join(below) if below else "none")
            out.append(line)
    return out


# ------------------------------------------------------------------ main

def main(args):
    quick = args.quick
    opts = {
        "duration": args.duration or (1.0 if quick else 3.0),
        "drain": 5.0 if quick else 10.0,
        "idle_clients": args.idle_clients or (50 if quick else 200),
        "out": args.out,
    }
    names = [b.strip() for b in args.brokers.split(",") if b.strip()]
    scen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    bridge = BRIDGE in scen
    scen = [s for s in scen if s != BRIDGE]
    bad = [b for b in names if b not in BROKERS] + [s for s in scen if s not in SCENARIOS]
    if bad:
        print("ubroker bench: unknown broker or scenario: %s (see ubroker bench --help)" % ", ".join(bad),
              file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    for d in os.listdir(args.out):  # the previous run's broker folders (configs, logs, data)
        if d.split("-")[0] in BROKERS and d.split("-")[-1].isdigit():
            shutil.rmtree(os.path.join(args.out, d), ignore_errors=True)
    try:
        exe = build_loadgen()
    except (RuntimeError, subprocess.CalledProcessError) as e:
        print("ubroker bench: cannot build the load generator: %s" % e, file=sys.stderr)
        return 1
    started = datetime.datetime.now(datetime.timezone.utc)
    report = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": "ubroker bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "ubroker bench",
        "machine": "%s, %d cores, %s" % (platform.platform(), os.cpu_count() or 0, platform.python_version()),
        "settings": opts,
        "scenarios": scen,
        "brokers": {},
        "results": {},
    }
    # Mosquitto first: it is the reference of the ratios.
    order = sorted(names, key=lambda b: (b != "mosquitto", BROKERS.index(b)))
    for b in order if scen else []:
        broker = make_broker(b, args.out, args)
        why = broker.unavailable()
        report["brokers"][b] = {"unavailable": why} if why else {"version": broker.version()}
        if why:
            print("bench: %s unavailable: %s" % (b, why), file=sys.stderr)
            continue
        report["results"][b] = {}
        for s in scen:
            t = time.time()
            r = run_scenario(broker, s, exe, opts)
            report["results"][b][s] = r
            print("bench: %-9s %-8s %5.1fs  %s" % (b, s, time.time() - t, summary(r)), file=sys.stderr)
    if bridge:
        from . import bench_bridge
        report["bridge"] = bench_bridge.run(args.out, names, {
            "forward_messages": args.bridge_messages or (20000 if quick else 100000),
            "drain_messages": args.drain_messages, "qos0": True, "limit": 120.0, "heap": args.heap,
            "drain_heap": args.bridge_heap})
    report["seconds"] = round((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(), 1)
    text = render(report) if scen else ""
    if bridge:
        text = (text + "\n\n" if text else "") + bench_bridge.render(report["bridge"])
    md = "# ubroker bench, %s\n\n`%s` on %s, %.0f s.\n\n%s\n" % (report["date"], report["command"],
                                                                report["machine"], report["seconds"], text)
    print(md)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    if args.update_results:
        with open(os.path.join(BENCH, "RESULTS.md"), "w") as f:
            f.write(md + NOTE)
    # Exit 1 when ubroker itself failed a check (a peer's trouble is reported, not fatal).
    bad = [s for s, r in report["results"].get("ubroker", {}).items() if is_failure(r)]
    if bridge:
        bad += bench_bridge.failures(report["bridge"])
    if bad:
        print("bench: ubroker failed verification in: %s (see the table above)" % ", ".join(bad), file=sys.stderr)
        return 1
    return 0


def is_failure(r):
    v = verification(r)
    return v is not None and v != "ok" and ("**" in v or v.startswith("FAILED"))


NOTE = """
Run to run, on a shared 2-core VM, throughput varies by about 15-25 % and the round-trip latency by
up to 3x (it depends on whether the scheduler puts the client and the broker on the same core).
Regenerate with `make bench` (or `ubroker bench --update-results` to rewrite this file);
bench/out/results.json has every figure, including the verification counts.
"""


def summary(r):
    if r.get("error") or r.get("fatal"):
        return "FAILED: " + (r.get("error") or r.get("fatal"))
    s = r.get("scenario")
    if s == "latency":
        main_ = "p50 %s us, p99 %s us" % (fmt_num(r.get("p50_us")), fmt_num(r.get("p99_us")))
    elif s == "idle":
        main_ = "%s bytes RSS per client" % fmt_num(r.get("rss_per_client"))
    else:
        main_ = "%s /s" % fmt_num(r.get("rate"))
    return "%s  [cpu broker %s%%, loadgen %s%%]  %s" % (main_, fmt_num(r.get("broker_cpu_pct")),
                                                      fmt_num(r.get("loadgen_cpu_pct")), verification(r))
