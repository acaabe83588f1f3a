"""The config template of `ubroker config --init` is closed by default (Mosquitto 2's choice):
a password_file, the `ubroker passwd` command that creates it, anonymous access commented out;
and `ubroker config --check` warns, without failing, when allow_anonymous true leaves a
listener beyond loopback open to the network."""

import os
import shlex
import subprocess

import pytest

import mqttraw
from conftest import UBROKER

from ubroker_tools import config as configmod
from ubroker_tools import profiles


def ub(*args, cwd=None):
    return subprocess.run([UBROKER] + list(args), capture_output=True, text=True, timeout=60, cwd=cwd)


def passwd_line(text):
    """The `ubroker passwd ...` command the template's comment gives."""
    lines = [ln[1:].strip() for ln in text.splitlines() if ln.startswith("#") and "ubroker passwd" in ln]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("board", ["esp32", "rp2-pico-w"])
def test_template_is_closed_by_default(board, tmp_path):
    """The template listens on the network but names a password_file and leaves anonymous
    access commented out, with what it opens said beside it; resolved, it does not allow
    anonymous clients."""
    path = tmp_path / "ubroker.conf"
    assert ub("config", "--board", board, "--init", str(path)).returncode == 0
    text = path.read_text()
    lines = text.splitlines()
    assert "listener 1883 0.0.0.0" in lines
    assert "password_file users.txt" in lines
    assert "allow_anonymous true" not in lines
    i = lines.index("#allow_anonymous true")
    assert "anyone" in " ".join(lines[i - 3:i]) and "no password" in " ".join(lines[i - 3:i])
    fw = profiles.fwconfig()
    cfg = fw.resolve(profiles.load_board(board), fw.parse(text))
    assert cfg["allow_anonymous"] is not True and cfg["password_file"] == "users.txt"


@pytest.mark.parametrize("board, beside", [("esp32", True), ("unix", False)])
def test_template_check_wants_the_users_then_passes(board, beside, tmp_path):
    """--check on a fresh template fails, naming the line and the exact `ubroker passwd`
    command; that command, run as the template's comment gives it, makes the check pass (a
    board's files beside the config, wherever the command runs; unix's in the folder
    `ubroker run` starts in)."""
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    cwd = conf_dir if not beside else tmp_path
    path = os.path.relpath(conf_dir / "ubroker.conf", cwd)
    assert ub("config", "--board", board, "--init", path, cwd=cwd).returncode == 0
    text = (cwd / path).read_text()
    command = passwd_line(text)
    users = os.path.join("conf", "users.txt") if beside else "users.txt"
    assert command == "ubroker passwd %s NAME" % users
    r = ub("config", "--board", board, "--check", path, cwd=cwd)
    assert r.returncode == 1
    line = text.splitlines().index("password_file users.txt") + 1
    assert "%s:%d: password_file users.txt does not exist" % (path, line) in r.stderr, r.stderr
    assert "create it: %s" % command in r.stderr

    argv = shlex.split(command.replace("NAME", "alice"))
    argv[0] = UBROKER
    p = subprocess.run(argv + ["--password", "s3cret", "--iterations", "100"], cwd=cwd, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert (conf_dir / "users.txt").exists()
    r = ub("config", "--board", board, "--check", path, cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "" and "OK for board %s\n" % board in r.stdout


def test_template_broker_refuses_anonymous_clients(broker_factory, tmp_path):
    """The template run as it is (on loopback here, its port moved): an anonymous CONNECT is
    refused with return code 5, not authorised, and the connection closed (MQTT-3.2.2-5);
    the template's user gets in."""
    text = configmod.default_config("esp32")
    subprocess.run([UBROKER, "passwd", str(tmp_path / "users.txt"), "alice", "--password", "s3cret",
                    "--iterations", "100"], check=True, capture_output=True, timeout=60)
    b = broker_factory(config=text, extra=("--host", "127.0.0.1"), cwd=str(tmp_path))
    r = b.raw()
    r.send(mqttraw.connect("anon"))
    assert r.expect(2).body == b"\x00\x05"
    assert r.closed(5)
    assert b.raw().connect("alice", username="alice", password="s3cret") == (0, 0)


OPEN = "listener 1883 0.0.0.0\nallow_anonymous true\n"


@pytest.mark.parametrize("text, warned", [
    (OPEN, ["0.0.0.0:1883"]),
    ("listener 1883 127.0.0.1\nlistener 1884 192.168.1.5\nallow_anonymous true\n", ["192.168.1.5:1884"]),
    ("listener 1883 127.0.0.1\nlistener 1884 ::1\nallow_anonymous true\n", []),
    ("listener 1883 0.0.0.0\nallow_anonymous false\n", []),
    ("port 1883\nallow_anonymous true\n", ["0.0.0.0:1883"]),  # Mosquitto's old form: every interface
    ("listener 1883 0.0.0.0\nlistener 8883\ncertfile c.pem\nkeyfile k.pem\ncafile ca.pem\n"
     "require_certificate true\nallow_anonymous true\n", ["0.0.0.0:1883"]),  # 8883 wants a certificate
])
def test_open_warnings_name_each_open_listener(text, warned):
    fw = profiles.fwconfig()
    cfg = fw.resolve(fw.parse(text))
    got = configmod.open_warnings("c.conf", cfg, 7)
    assert len(got) == len(warned)
    for w, where in zip(got, warned):
        assert w.startswith("c.conf:7: warning: allow_anonymous true with listener %s," % where), w


def test_check_warns_about_an_open_listener_and_passes(tmp_path):
    """allow_anonymous true on 0.0.0.0 is a choice the broker accepts (exit 0), but --check
    says, with the line, that anyone on the network can then connect, read and publish."""
    path = tmp_path / "open.conf"
    path.write_text("# a broker for the bench\n" + OPEN)
    r = ub("config", "--board", "esp32", "--check", str(path))
    assert r.returncode == 0, r.stderr
    assert "OK for board esp32 (1 warning)" in r.stdout
    assert r.stderr.startswith("%s:3: warning: allow_anonymous true with listener 0.0.0.0:1883" % path), r.stderr
    assert "anyone on the network can connect without a password and read every topic and publish to any" \
        in r.stderr
    assert "ubroker passwd" in r.stderr and "127.0.0.1" in r.stderr
    # with access rules, what anonymous clients may do is what the rules say
    (tmp_path / "acl.txt").write_text("topic read public/#\n")
    path.write_text(OPEN + "acl_file acl.txt\n")
    r = ub("config", "--board", "esp32", "--check", str(path))
    assert r.returncode == 0, r.stderr
    assert "do what the acl_file allows clients without a user name" in r.stderr
    # loopback only: nothing to warn about
    path.write_text("listener 1883 127.0.0.1\nallow_anonymous true\n")
    r = ub("config", "--board", "esp32", "--check", str(path))
    assert r.returncode == 0 and r.stderr == "", r.stderr
