"""The brokers `ubroker bench` compares: ubroker (unix port), Mosquitto, aedes and amqtt. Each
knows whether it can run here, its version, and the command and config that start it with one
loopback listener (and a TLS or a WebSockets one when asked); bench_proc.Server runs and stops it."""

import json
import os
import shutil
import subprocess
import time

from . import paths
from .bench_proc import BENCH, Server, mosquitto_exe, ubroker_exe

BROKERS = ["mosquitto", "ubroker", "aedes", "amqtt"]


class Broker:
    name = "?"
    tls = None  # (port, folder with server.pem, server-key.pem): a TLS listener too
    ws = None  # port: a WebSockets listener too (bench_ws checks that it answers)

    def __init__(self, out):
        self.out = out
        self.server = None
        self.port = None
        self.logpath = None

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
        cmd, cwd = self.command(port, work)
        # "w": a port the kernel hands out again must not show the last scenario's traceback.
        self.server = Server(cmd, cwd, port, self.logpath, "w").start()
        if not self.server.wait_listening(step=0.05):
            self.stop()
            raise RuntimeError("%s did not start: %s" % (self.name, self.log_tail()))
        time.sleep(0.2)  # let the probe connection go away

    def pid(self):
        """The process doing the broker's work (for CPU and RSS)."""
        return self.server.proc.pid

    def alive(self):
        return self.server is not None and self.server.alive()

    def log_tail(self, n=600):
        return self.server.log_tail(n) if self.server else ""

    def problems(self):
        """Crash or traceback in the log, as text ('' when none)."""
        proc = self.server.proc if self.server else None
        if proc is not None and proc.poll() is not None:
            return "%s exited with code %s during the scenario: %s" % (self.name, proc.returncode, self.log_tail(300))
        return ""

    def stop(self):
        if self.server is not None:
            self.server.stop()


def _tls_files(folder):
    return os.path.join(folder, "server.pem"), os.path.join(folder, "server-key.pem")


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
        cmd = [ubroker_exe(), "run", "--board", "unix", "--port", str(port), "--data", os.path.join(work, "data"),
               "--heap", self.heap]
        if self.tls:
            conf = os.path.join(work, "tls.conf")
            with open(conf, "w") as f:  # the first listener is the one --port replaces
                f.write("listener %d 127.0.0.1\nlistener %d 127.0.0.1\ncertfile %s\nkeyfile %s\n" % (
                    (port, self.tls[0]) + _tls_files(self.tls[1])))
            cmd += ["--config", conf]
        elif self.ws:
            conf = os.path.join(work, "ws.conf")
            with open(conf, "w") as f:
                f.write("listener %d 127.0.0.1\nlistener %d 127.0.0.1\nprotocol websockets\n" % (port, self.ws))
            cmd += ["--config", conf]
        return cmd, work

    def pid(self):
        return self.server.worker_pid()

    def problems(self):
        p = super().problems()
        tail = self.log_tail(4000)
        if "Traceback" in tail:
            p = (p + "; " if p else "") + "traceback in the broker log: " + tail[tail.index("Traceback"):][:600]
        return p


class Mosquitto(Broker):
    name = "mosquitto"

    def exe(self):
        return mosquitto_exe()

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
                f.write("listener %d 127.0.0.1\ncertfile %s\nkeyfile %s\n" % ((self.tls[0],) + _tls_files(self.tls[1])))
            if self.ws:
                # Debian's 2.0.11 has libwebsockets linked in statically (ldd does not list it); it
                # binds this one to every interface whatever the address, and a config with only a
                # websockets listener stops with "Unable to start any listening sockets".
                f.write("listener %d 127.0.0.1\nprotocol websockets\n" % self.ws)
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
        ws = [str(self.ws)] if self.ws else []
        return ["node", os.path.join(BENCH, "aedes_server.mjs"), str(port)] + ws, BENCH


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
                    "    bind: 127.0.0.1:%d\n" % port)
            if self.ws:
                f.write("  ws:\n"
                        "    type: ws\n"
                        "    bind: 127.0.0.1:%d\n" % self.ws)
            f.write("plugins:\n"
                    "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
                    "    allow_anonymous: true\n")
        return [self.exe(), "-c", conf], work


def make_broker(name, out, heap):
    """One of BROKERS by name; `heap` is ubroker's MicroPython heap (the unix board's 8M by default)."""
    if name == "ubroker":
        return Ubroker(out, heap)
    return {"mosquitto": Mosquitto, "aedes": Aedes, "amqtt": Amqtt}[name](out)
