"""`ubroker serial-bridge`: its line format (host_tools/ubroker_tools/serial_bridge.py), and
the command itself reading a pseudo-terminal (os.openpty) as the sensor's serial port and
publishing to a real ubroker, the readings received by a paho subscriber."""

import os
import signal
import subprocess
import sys
import time
import tty
import uuid

import pytest

from conftest import UBROKER, free_port, wait_for
from ubroker_tools import serial_bridge as sb


@pytest.mark.parametrize("line,parsed", [
    (b"21.5", (None, "21.5", None)),
    (b"  -3 C\r", (None, "-3", "C")),
    (b"temp=22.25 C", ("temp", "22.25", "C")),
    (b"room2/co2=415 ppm", ("room2/co2", "415", "ppm")),
    (b"p=1.0132e5", ("p", "1.0132e5", None)),
    (b"hum=.5 %", ("hum", ".5", "%")),
])
def test_good_lines(line, parsed):
    assert sb.parse_line(line) == parsed


@pytest.mark.parametrize("line", [b"", b"   ", b"# a comment", b"#temp=1"])
def test_ignored_lines(line):
    assert sb.parse_line(line) is None


@pytest.mark.parametrize("line,why", [
    (b"hello", "not a number"),
    (b"temp=", "not a number"),
    (b"temp=nan", "not a number"),
    (b"temp=inf C", "not a number"),
    (b"1e999", "not a number"),
    (b"=5", "name ''"),
    (b"a+b=5", "name 'a+b'"),
    (b"a//b=5", "name 'a//b'"),
    (b"/a=5", "name '/a'"),
    (b"unit=5", "clash with the unit topics"),
    (b"temp/unit=5", "clash with the unit topics"),
    (b"t=5 C extra", "expected VALUE"),
    (b"t=5 deg/s", "unit 'deg/s'"),
    (b"t=5 averyveryverylongunit", "unit"),
    (b"\xff\xfe=1", "not UTF-8"),
    (b"1" * 300, "longer than 256"),
])
def test_bad_lines(line, why):
    with pytest.raises(sb.BadLine, match=why.replace("+", r"\+").replace("/", "/")):
        sb.parse_line(line)


def test_feed_splits_chunks_and_counts_bad_lines():
    sent = []
    logged = []
    b = sb.Bridge("home/t/", 1, False, lambda *m: sent.append(m) or True, logged.append)
    for chunk in (b"21", b".5\r\ntemp=2", b"2 C\nbad line here\n", b"x" * 200, b"y" * 100, b"z\n",
                  b"temp=23 C\n", b"temp=24 F\n#c\n\n"):
        b.feed(chunk)
    assert sent == [("home/t", "21.5", 1, False),
                    ("home/t/temp/unit", "C", 1, True), ("home/t/temp", "22", 1, False),
                    ("home/t/temp", "23", 1, False),  # same unit: not published again
                    ("home/t/temp/unit", "F", 1, True), ("home/t/temp", "24", 1, False)]
    assert (b.published, b.bad) == (4, 2)  # "bad line here" and the 301-byte line
    assert len(logged) == 2 and "longer than 256" in logged[1]
    assert b.summary().startswith("4 readings published, 2 bad lines skipped")


def test_bad_lines_beyond_the_first_ones_are_only_counted():
    logged = []
    b = sb.Bridge("t", 0, False, lambda *m: True, logged.append)
    b.feed(b"bad\n" * 50)
    assert b.bad == 50 and len(logged) == sb.SHOWN_BAD + 1


class Bridge:
    """`ubroker serial-bridge` as a user starts it, its stderr in a file."""

    def __init__(self, tmp_path, *args):
        self.errpath = tmp_path / ("bridge-%s.log" % uuid.uuid4().hex[:6])
        self.err = open(self.errpath, "w")
        self.proc = subprocess.Popen([UBROKER, "serial-bridge"] + list(args), stdout=self.err,
                                     stderr=subprocess.STDOUT)

    def log(self):
        return self.errpath.read_text()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        self.err.close()
        return rc


@pytest.fixture
def pty_pair():
    master, slave = os.openpty()
    tty.setraw(slave)  # no echo, no line editing: a serial line
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_bridge_publishes_a_serial_sensor(broker, tmp_path, pty_pair):
    master, dev = pty_pair
    topic = "lab/%s" % uuid.uuid4().hex[:6]
    sub = broker.client()
    sub.subscribe(topic + "/#", 1)  # topic itself too
    time.sleep(0.3)
    bridge = Bridge(tmp_path, "--port", dev, "--topic", topic, "--broker", "127.0.0.1:%d" % broker.port,
                    "--baud", "115200", "--qos", "1", "--retain")
    try:
        assert wait_for(lambda: "reading %s at 115200 baud" % dev in bridge.log(), 10.0), bridge.log()
        os.write(master, b"21.5\r\ntemp=22.25 C\n# comment\n\ngarbage\nhum=4")
        time.sleep(0.2)
        os.write(master, b"0 %\nx=abc\nroom2/co2=415 ppm\n")
        want = {topic: b"21.5", topic + "/temp": b"22.25", topic + "/temp/unit": b"C",
                topic + "/hum": b"40", topic + "/hum/unit": b"%", topic + "/room2/co2": b"415",
                topic + "/room2/co2/unit": b"ppm"}
        assert wait_for(lambda: {m.topic for m in sub.messages} >= set(want), 5.0), \
            [(m.topic, m.payload) for m in sub.messages]
        got = {m.topic: m for m in sub.messages}
        assert {t: got[t].payload for t in want} == want
        assert all(m.qos == 1 for m in sub.messages)
        # Nothing from the comment, the empty line or the bad lines.
        assert len(sub.messages) == len(want), [(m.topic, m.payload) for m in sub.messages]
        # --retain: a client that comes later still gets the readings.
        late = broker.client()
        late.subscribe(topic + "/temp", 0)
        assert wait_for(lambda: late.messages, 3.0)
        assert late.messages[0].retain and late.messages[0].payload == b"22.25"
    finally:
        rc = bridge.stop()
    log = bridge.log()
    assert rc == 0, log
    assert "bad line 5 skipped (value 'garbage' is not a number)" in log
    assert "bad line 7 skipped (value 'abc' is not a number)" in log
    assert "4 readings published, 2 bad lines skipped, 0 not sent" in log


def test_bridge_waits_for_a_serial_device_that_is_not_there(broker, tmp_path):
    bridge = Bridge(tmp_path, "--port", str(tmp_path / "ttyNONE"), "--topic", "t",
                    "--broker", "127.0.0.1:%d" % broker.port)
    assert wait_for(lambda: "cannot open %s" % (tmp_path / "ttyNONE") in bridge.log(), 10.0), bridge.log()
    assert bridge.proc.poll() is None, "it keeps trying, as for a USB sensor not yet plugged in"
    assert bridge.stop() == 0
    assert "0 readings published" in bridge.log()


def test_bridge_says_when_the_broker_is_unreachable(tmp_path, pty_pair):
    _, dev = pty_pair
    port = free_port()
    bridge = Bridge(tmp_path, "--port", dev, "--topic", "t", "--broker", "127.0.0.1:%d" % port)
    assert bridge.proc.wait(15) == 1
    assert "cannot reach the broker at 127.0.0.1:%d" % port in bridge.log()


@pytest.mark.parametrize("args,why", [
    (["--topic", "t"], "--port"),
    (["--port", "/dev/null", "--topic", "t", "--broker", "host:port"], "expects HOST:PORT"),
    (["--port", "/dev/null", "--topic", "t", "--qos", "3"], "must be 0, 1 or 2"),
    (["--port", "/dev/null", "--topic", "home/+/t"], "not a topic to publish to"),
    (["--port", "/dev/null", "--topic", "$SYS/x"], "not a topic to publish to"),
    (["--port", "/dev/null", "--topic", "/"], "not a topic to publish to"),
])
def test_bad_arguments(args, why):
    r = subprocess.run([UBROKER, "serial-bridge"] + args, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and why in r.stderr, r.stderr


def test_help_names_the_line_format():
    r = subprocess.run([sys.executable, "-m", "ubroker_tools.cli", "serial-bridge", "--help"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "NAME=VALUE [UNIT] -> TOPIC/NAME" in r.stdout
