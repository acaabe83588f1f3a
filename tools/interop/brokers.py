"""The brokers under measurement: how to start ubroker (this checkout, through `ubroker run`
as a user would) or Debian's mosquitto on a loopback port, wait until it listens, and stop it.
Used by the paho suites (one broker per suite) and by the stand-in for mosq_test's
start_broker (one broker per test step)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UBROKER = os.path.join(ROOT, ".venv", "bin", "ubroker")
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
NAMES = ("ubroker", "mosquitto")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(name, port=None, config=None, board=None):
    """The command line that starts broker `name`: on `port` with no config file (each
    broker's own defaults, as `mosquitto -p PORT` gives), or from `config` (its listeners)."""
    if name == "ubroker":
        cmd = [UBROKER, "run", "--verbose"]
        if board:
            cmd += ["--board", board]
        if config:
            cmd += ["--config", config]
        if port is not None:
            cmd += ["--port", str(port)]
        return cmd
    if name == "mosquitto":
        cmd = [MOSQUITTO, "-v"]
        if config:
            cmd += ["-c", config]
        if port is not None:
            cmd += ["-p", str(port)]
        return cmd
    raise ValueError("unknown broker %r (one of %s)" % (name, ", ".join(NAMES)))


def wait_listening(proc, port, timeout):
    """True once something accepts on 127.0.0.1:port; False if proc ended or time ran out.
    ubroker's first start compiles the firmware, hence the long default timeouts."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            if proc.poll() is not None:
                return False
            time.sleep(0.05)
    return False


def stop(proc, grace=10):
    """SIGTERM, then SIGKILL after `grace` seconds; the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class Running:
    """A broker started for a whole suite, its log in a file."""

    def __init__(self, name, logpath, board=None):
        self.name = name
        self.port = free_port()
        self.logpath = logpath
        self.log = open(logpath, "w")
        self.proc = subprocess.Popen(command(name, port=self.port, board=board), stdout=self.log,
                                     stderr=subprocess.STDOUT)
        if not wait_listening(self.proc, self.port, 60):
            stop(self.proc)
            self.log.close()
            with open(logpath, errors="replace") as f:
                sys.exit("%s did not start on port %d:\n%s" % (name, self.port, f.read()))

    def alive(self):
        return self.proc.poll() is None

    def close(self):
        rc = stop(self.proc)
        self.log.close()
        return rc


def version(name):
    """One line naming the broker's version, for the report."""
    if name == "mosquitto":
        out = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True)
        return (out.stdout or out.stderr).splitlines()[0].strip()
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "firmware", "host_tools"],
                           capture_output=True, text=True).stdout.strip()
    return "ubroker at %s%s" % (commit.stdout.strip(), " (firmware/host_tools modified)" if dirty else "")
