"""`ubroker config` (create, validate with line numbers, budget), `ubroker flash --port auto`
(finding the board by USB id: none, one, several), and `ubroker monitor --once` against a
running broker."""

import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

from ubroker_tools import config as configmod
from ubroker_tools import flash as flashmod

UBROKER = os.path.join(os.path.dirname(sys.executable), "ubroker")


def ub(*args, timeout=60, cwd=None):
    return subprocess.run([UBROKER] + list(args), capture_output=True, text=True, timeout=timeout, cwd=cwd)


@pytest.mark.parametrize("board", ["esp32", "rp2-pico-w", "unix"])
def test_config_init_then_check(board, tmp_path):
    """The template, once its users file exists (tests/host/test_config_template.py: the check
    asks for it first), checks OK for every board."""
    path = tmp_path / "ubroker.conf"
    r = ub("config", "--board", board, "--init", str(path))
    assert r.returncode == 0, r.stderr
    text = path.read_text()
    assert "#wifi_ssid" in text and "listener 1883" in text
    assert ub("passwd", str(tmp_path / "users.txt"), "alice", "--password", "pw", "--iterations", "100").returncode == 0
    r = ub("config", "--board", board, "--check", str(path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "OK for board %s" % board in r.stdout
    r = ub("config", "--board", board, "--init", str(path))
    assert r.returncode == 1 and "--force" in r.stderr


def test_config_check_names_lines(tmp_path):
    path = tmp_path / "bad.conf"
    path.write_text("# comment\nlistener 1883\nmax_qos 3\nwifi_pasword x\nmax_connections lots\n")
    r = ub("config", "--board", "esp32", "--check", str(path))
    assert r.returncode == 1
    err = r.stderr
    assert "%s:3: max_qos must be 0, 1 or 2" % path in err
    assert "%s:4: unknown key 'wifi_pasword'" % path in err
    assert "%s:5: max_connections expects a whole number, not 'lots'" % path in err
    assert "3 problems" in err


def test_config_check_semantics(tmp_path):
    path = tmp_path / "c.conf"
    path.write_text("wifi_password secret\nwifi_ap_ssid ub\nwifi_ap_password short\narch armv6m\n")
    problems = configmod.check("rp2-pico-w", str(path))
    text = "\n".join(problems)
    assert "%s:1: wifi_password without wifi_ssid" % path in text
    assert "%s:3: wifi_ap_password must have at least 8 characters" % path in text
    assert "%s:4: arch belongs in the board profile" % path in text


def test_config_check_budget(tmp_path):
    path = tmp_path / "big.conf"
    path.write_text("# more clients than a Pico W holds\nmax_connections 2000\nmax_sessions 2000\n")
    problems = configmod.check("rp2-pico-w", str(path))
    assert len(problems) == 2, problems
    assert "heap_budget 163840" in problems[0]
    assert "max_connections (line 2, board value 5)" in problems[0]
    assert "rp2-pico-w stock MicroPython: 5 TCP connections" in problems[1]
    path.write_text("max_connections 4\n")  # lowering is always fine
    assert configmod.check("rp2-pico-w", str(path)) == []


def fake_port(device, vid=None, pid=None, description="USB serial"):
    return SimpleNamespace(device=device, vid=vid, pid=pid, description=description)


@pytest.fixture
def ports(monkeypatch):
    from serial.tools import list_ports
    found = []
    monkeypatch.setattr(list_ports, "comports", lambda: list(found))
    return found


def test_auto_port_none(ports):
    ports.append(fake_port("/dev/ttyS0"))
    with pytest.raises(flashmod.FlashError) as e:
        flashmod.find_port("esp32")
    msg = str(e.value)
    assert "no esp32 board found" in msg and "10c4:ea60" in msg and "/dev/ttyS0 (no USB id)" in msg
    assert "--port" in msg


def test_auto_port_one(ports):
    ports += [fake_port("/dev/ttyS0"), fake_port("/dev/ttyACM0", 0x2E8A, 0x0005),
              fake_port("/dev/ttyUSB0", 0x0403, 0x6001)]
    assert flashmod.find_port("rp2-pico-w") == "/dev/ttyACM0"


def test_auto_port_several(ports):
    ports += [fake_port("/dev/ttyUSB0", 0x10C4, 0xEA60, "CP2102"), fake_port("/dev/ttyUSB1", 0x1A86, 0x7523, "CH340")]
    with pytest.raises(flashmod.FlashError) as e:
        flashmod.find_port("esp32")
    assert "several boards found: /dev/ttyUSB0 (CP2102), /dev/ttyUSB1 (CH340)" in str(e.value)


def test_too_old_micropython(monkeypatch):
    monkeypatch.setattr(flashmod, "mpremote", lambda port, *a, **k: (0, "UBPROBE ('esp32', (1, 20, 0), 6)\n", ""))
    with pytest.raises(flashmod.FlashError) as e:
        flashmod.probe("/dev/ttyUSB0", {"arch": "xtensawin", "board": "esp32"})
    assert "MicroPython 1.20.0; ubroker needs 1.23 or newer" in str(e.value)


def test_wrong_board_family(monkeypatch):
    monkeypatch.setattr(flashmod, "mpremote", lambda port, *a, **k: (0, "UBPROBE ('rp2', (1, 25, 0), 6)\n", ""))
    with pytest.raises(flashmod.FlashError) as e:
        flashmod.probe("/dev/ttyACM0", {"arch": "xtensawin", "board": "esp32"})
    assert "runs MicroPython for rp2" in str(e.value)


def test_monitor_once(broker_factory):
    b = broker_factory(board="unix", config="sys_interval 1\n")
    c = b.client()
    c.subscribe("m/#", 0)
    for i in range(5):
        c.publish("m/x", b"%d" % i, 0)
    r = ub("monitor", "--host", b.host, "--port", str(b.port), "--once", "--wait", "2.5")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "ubroker" in out and "%s:%d" % (b.host, b.port) in out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    assert re.search(r"connected [12] ", lines["clients"]), out  # the paho client (and the monitor)
    assert "received 5 " in lines["messages"], out
    assert "heap" in lines and "free" in lines["heap"]
    assert lines["limits"].startswith("limits hit")


def test_monitor_no_broker():
    from conftest import free_port
    r = ub("monitor", "--port", str(free_port()), "--once")
    assert r.returncode == 1
    assert "cannot connect" in r.stderr
