"""What every part of `ubroker bench` needs from this machine: where the bench folder and the
brokers' programs are, free loopback ports, a process's CPU time and RSS (from /proc), and the
server processes the benchmark starts, each in its own session, stopped by its pid."""

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

from . import paths

BENCH = os.path.join(paths.ROOT, "bench")


def mosquitto_exe():
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)


def ubroker_exe():
    """The venv's `ubroker` next to this Python first: the one whose firmware is being measured."""
    exe = os.path.join(os.path.dirname(sys.executable), "ubroker")
    return exe if os.path.exists(exe) else (shutil.which("ubroker") or exe)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """User + system CPU time of a process so far (from /proc), or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def own_cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


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


class Server:
    """A server process started here, listening on 127.0.0.1:`port`: its own session (process
    group), stdout and stderr in `logpath`, stopped with SIGTERM (SIGKILL to its group after
    10 s) by its pid."""

    def __init__(self, cmd, cwd, port, logpath, log_mode="a"):
        self.cmd, self.cwd, self.port, self.logpath, self.log_mode = cmd, cwd, port, logpath, log_mode
        self.proc = None
        self.log = None

    def start(self):
        self.log = open(self.logpath, self.log_mode)
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=self.cwd, start_new_session=True)
        return self

    def wait_listening(self, timeout=30.0, step=0.02):
        """True once its port accepts a connection; False when the process exited or `timeout`
        s passed first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    return False
                time.sleep(step)

    def worker_pid(self):
        """The process doing the server's work: `ubroker run` spawns micropython; the others
        are their own worker."""
        kids = children(self.proc.pid)
        return kids[0] if kids else self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=600):
        try:
            with open(self.logpath, errors="replace") as f:
                return f.read()[-n:].strip()
        except OSError:
            return ""

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.log:
            self.log.close()
            self.log = None
