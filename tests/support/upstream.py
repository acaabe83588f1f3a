"""A real upstream broker for the bridge tests: Debian's mosquitto, started by the test on a
free loopback port, with its own persistence file so a stop and start keeps its sessions
(as a cloud broker would)."""

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def make_ca_and_server_cert(d, name="test"):
    """A CA and a server certificate it signed for localhost / 127.0.0.1, made with the
    openssl command; returns (ca.crt, server.crt, server.key) paths as strings."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = d / (name + "-ca.key"), d / (name + "-ca.crt")
    key, csr, crt = d / (name + "-srv.key"), d / (name + "-srv.csr"), d / (name + "-srv.crt")
    ext = d / (name + "-ext.txt")
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-days", "2", "-nodes", "-keyout", str(ca_key), "-out", str(ca_crt),
        "-subj", "/CN=%s test CA" % name)
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(crt),
        "-days", "2", "-extfile", str(ext))
    return str(ca_crt), str(crt), str(key)


class Mosquitto:
    def __init__(self, tmp_path, port, tls=None):
        """tls: (ca, cert, key) to listen with TLS instead of plain TCP."""
        self.port = port
        self.dir = tmp_path / ("mosquitto-%d" % port)
        self.dir.mkdir(exist_ok=True)
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(
            "listener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\n"
            "user %s\nautosave_interval 1\nmax_queued_messages 0\nmax_inflight_messages 0\n"
            "log_dest file %s/mosquitto.log\n" % (port, self.dir, getpass.getuser(), self.dir)
            + ("cafile %s\ncertfile %s\nkeyfile %s\n" % tls if tls else ""))
        self.proc = None
        if not os.path.exists(MOSQUITTO):
            raise RuntimeError("mosquitto is not installed: `make test` installs it (apt-get install mosquitto)")

    def start(self):
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("mosquitto did not start: " + self.log())
                time.sleep(0.02)

    def stop(self):
        """SIGTERM: mosquitto saves its sessions and queued messages, then exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self):
        p = self.dir / "mosquitto.log"
        return p.read_text(errors="replace") if p.exists() else ""
