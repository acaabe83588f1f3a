"""End to end, without hardware: a virtual board (`ubroker vboard`: the unix port on a pty),
`ubroker flash --board unix --port <pty>` to it through real mpremote, the board's main.py
starts the broker from the flashed config, paho publishes and subscribes through it, a soft
reset reboots the board and the broker comes back, and a second flash copies nothing."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

import mqttraw
from mqttraw import RawClient

from conftest import free_port, wait_for

UBROKER = os.path.join(os.path.dirname(sys.executable), "ubroker")


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


def round_trip(port, tag):
    got = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="vb-" + uuid.uuid4().hex[:6])
    c.on_message = lambda cl, u, m: got.append((m.topic, m.payload, m.qos))
    c.on_subscribe = lambda cl, u, mid, rc, p: cl.publish("vb/" + tag, tag.encode(), 1)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.subscribe("vb/#", 1)
        assert wait_for(lambda: got, 5), "no message back through the board's broker"
        assert got == [("vb/" + tag, tag.encode(), 1)]
    finally:
        c.disconnect()
        c.loop_stop()


@pytest.fixture
def vboard(tmp_path):
    folder = tmp_path / "board"
    link = tmp_path / "board.tty"
    logpath = tmp_path / "vboard.log"
    log = open(logpath, "w")
    proc = subprocess.Popen([UBROKER, "vboard", "--dir", str(folder), "--link", str(link)],
                            stdout=log, stderr=subprocess.STDOUT)
    assert wait_for(lambda: os.path.islink(link), 10), logpath.read_text()
    proc.folder, proc.link, proc.logpath = folder, str(link), logpath
    proc.boots = lambda: len(re.findall(r"boot \d+: pid", logpath.read_text()))
    yield proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def flash(vb, config):
    return subprocess.run([UBROKER, "flash", "--board", "unix", "--port", vb.link, "--config", str(config)],
                          capture_output=True, text=True, timeout=120)


def test_flash_run_reset_reflash(vboard, tmp_path):
    port = free_port()
    conf = tmp_path / "ubroker.conf"
    conf.write_text("listener %d 127.0.0.1\nsys_interval 1\npersistence true\npersistence_location data\n" % port)

    r = flash(vboard, conf)
    assert r.returncode == 0, r.stdout + r.stderr
    n = int(re.search(r"built unix: (\d+) files", r.stdout).group(1))
    assert re.search(r"copied %d files \(\d+ bytes\), 0 unchanged, 0 removed; config written" % n, r.stdout), r.stdout
    assert sorted(os.listdir(vboard.folder / "ubroker")) == sorted(
        f for f in os.listdir(os.path.join(os.path.dirname(__file__), "..", "..", "build", "unix", "ubroker")))
    assert (vboard.folder / "ubroker.conf").read_text() == conf.read_text()
    assert wait_for(lambda: port_open(port), 15), vboard.logpath.read_text()
    boots = vboard.boots()
    assert boots == 2  # the first boot had no main.py; the flash reset booted main.py
    round_trip(port, "first")

    # State for after the reset: a persistent subscriber goes offline with a QoS 1 message
    # queued for it, and a retained message is set.
    sub = RawClient(port)
    assert sub.connect("vb-keeper", clean=False) == (0, 0)
    sub.send(mqttraw.subscribe(1, ("keepvb/#", 1)))
    sub.expect(9)
    sub.send(mqttraw.DISCONNECT)
    sub.close()
    pub = RawClient(port)
    pub.connect("vb-pub")
    pub.send(mqttraw.publish("keepvb/q", b"queued", qos=1, pid=1))
    pub.expect(4)
    pub.send(mqttraw.publish("keepvb/r", b"retained", qos=1, retain=True, pid=2))
    pub.expect(4)
    pub.close()

    # Soft reset through real mpremote: the unix process ends, the vboard boots it again.
    r = subprocess.run([sys.executable, "-m", "mpremote", "connect", vboard.link, "resume", "exec",
                        "--no-follow", "import machine; machine.soft_reset()"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert wait_for(lambda: vboard.boots() == boots + 1, 10), vboard.logpath.read_text()
    assert wait_for(lambda: port_open(port), 15), vboard.logpath.read_text()
    round_trip(port, "after-reset")
    # ... and the board kept its persisted state: the session, its queued message, the
    # retained message.
    sub = RawClient(port)
    assert sub.connect("vb-keeper", clean=False) == (1, 0)
    got = sub.expect(3)
    assert (got.topic, got.payload) == (b"keepvb/q", b"queued")
    sub.send(mqttraw.puback(got.pid))
    late = RawClient(port)
    late.connect("vb-late")
    late.send(mqttraw.subscribe(1, ("keepvb/r", 1)))
    late.expect(9)
    got = late.expect(3)
    assert (got.payload, got.retain) == (b"retained", True)
    sub.close()
    late.close()

    r = flash(vboard, conf)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "copied 0 files (0 bytes), %d unchanged, 0 removed" % n in r.stdout, r.stdout
    assert wait_for(lambda: vboard.boots() == boots + 2, 10), vboard.logpath.read_text()
    assert wait_for(lambda: port_open(port), 15)
    round_trip(port, "after-reflash")

    # Only the changed config is copied, and the board's broker follows it.
    port2 = free_port()
    conf.write_text("listener %d 127.0.0.1\nsys_interval 1\n" % port2)
    r = flash(vboard, conf)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "copied 1 file (%d bytes), %d unchanged, 0 removed; config written" % (len(conf.read_bytes()), n - 1) \
        in r.stdout, r.stdout
    assert wait_for(lambda: port_open(port2), 15), vboard.logpath.read_text()
    round_trip(port2, "new-config")


def test_flash_no_micropython_says_what_to_do(tmp_path):
    """A port with no REPL behind it (a pty nobody answers) gets a clear message, not a hang."""
    import pty
    master, slave = pty.openpty()
    name = os.ttyname(slave)
    try:
        r = subprocess.run([UBROKER, "flash", "--board", "unix", "--port", name],
                           capture_output=True, text=True, timeout=120)
    finally:
        os.close(master)
        os.close(slave)
    assert r.returncode == 1
    assert "no MicroPython REPL answered on %s" % name in r.stderr, r.stderr
    assert "Install MicroPython on the board first" in r.stderr


def test_ctrl_c_then_ctrl_d_reboots_into_main(vboard):
    """Like a board's console: Ctrl-C stops main.py and gives the REPL; Ctrl-D there is a soft
    reset, after which main.py runs again."""
    import select
    import tty

    (vboard.folder / "main.py").write_text(
        "import time\nprint('MAIN UP', time.ticks_ms())\nwhile True:\n    time.sleep_ms(50)\n")
    fd = os.open(vboard.link, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    seen = bytearray()

    def read_until(marker, timeout=10.0):
        deadline = time.time() + timeout
        while marker not in seen and time.time() < deadline:
            r, _, _ = select.select([fd], [], [], 0.05)
            if r:
                seen.extend(os.read(fd, 4096))
        return marker in seen

    try:
        os.write(fd, b"\r\n")
        assert read_until(b">>> "), bytes(seen)  # first boot had no main.py: the REPL
        del seen[:]
        os.write(fd, b"\x04")
        assert read_until(b"MAIN UP"), bytes(seen)
        assert wait_for(lambda: vboard.boots() == 2, 5)
        del seen[:]
        os.write(fd, b"\x03")
        assert read_until(b"KeyboardInterrupt") and read_until(b">>> "), bytes(seen)
        del seen[:]
        os.write(fd, b"\x04")
        assert read_until(b"MAIN UP"), bytes(seen)
        assert wait_for(lambda: vboard.boots() == 3, 5)
    finally:
        os.close(fd)
