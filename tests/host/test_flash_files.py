"""`ubroker flash --config` copies the files the config names (password_file, acl_file, a TLS
listener's certfile/keyfile, a bridge's bridge_cafile) from beside the config to the path the
config gives on the board, only when they changed, and stops with the key and line when one
is missing on the host. Through real mpremote against a virtual board (tests/host/test_vboard.py)."""

import os
import re
import socket
import ssl
import subprocess
from types import SimpleNamespace

import pytest

import mqttraw
from mqttraw import RawClient

from conftest import UBROKER, free_port, wait_for
from test_vboard import port_open, vboard  # noqa: F401  (vboard is a fixture)

NAMED = ["acl.txt", "ca.der", "certs/server-key.pem", "certs/server.pem", "users.txt"]


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True, timeout=60)


def add_user(folder, name, password):
    r = subprocess.run([UBROKER, "passwd", str(folder / "users.txt"), name, "--password", password,
                        "--iterations", "100"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def conf_text(port, tls_port, upstream):
    return ("listener %d 127.0.0.1\npassword_file users.txt\nacl_file acl.txt\n"
            "listener %d 127.0.0.1\ncertfile certs/server.pem\nkeyfile certs/server-key.pem\n"
            "connection up\naddress 127.0.0.1:%d\ntopic a/# out 1\nbridge_cafile ca.der\n" % (port, tls_port, upstream))


@pytest.fixture
def conf(tmp_path):
    """A config folder as a user keeps it: ubroker.conf and, beside it, the files it names
    (the TLS ones in a sub-folder). The certificate names 127.0.0.1 and is its own CA."""
    d = tmp_path / "conf"
    (d / "certs").mkdir(parents=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "certs/server-key.pem", "-out", "certs/server.pem", "-days", "2", "-subj", "/CN=ubroker test",
            "-addext", "subjectAltName=IP:127.0.0.1", cwd=d)
    openssl("x509", "-in", "certs/server.pem", "-outform", "DER", "-out", "ca.der", cwd=d)
    add_user(d, "alice", "wonderland")
    (d / "acl.txt").write_text("user alice\ntopic readwrite a/#\n")
    ports = (free_port(), free_port(), free_port())
    (d / "ubroker.conf").write_text(conf_text(*ports))
    return SimpleNamespace(dir=d, ports=ports)


def flash(link, config, cwd):
    return subprocess.run([UBROKER, "flash", "--board", "unix", "--port", str(link), "--config", config],
                          capture_output=True, text=True, timeout=180, cwd=cwd)


def named_line(out):
    m = re.search(r"^files the config names: (.*)$", out, re.M)
    assert m, out
    return dict(re.fullmatch(r"(\S+) \((copied|unchanged)\)", x).groups() for x in m.group(1).split(", "))


def connack(port, user=None, password=None):
    c = RawClient(port)
    try:
        return c.connect("ff-%s" % user, username=user, password=password)[1]
    finally:
        c.close()


def test_flash_copies_named_files_then_only_what_changed(vboard, conf, tmp_path):  # noqa: F811
    """First flash: every named file lands at its path on the board (certs/ made there), and
    the board's broker uses them: an anonymous CONNECT gets return code 5 and alice 0
    (MQTT-3.2.2-5), the acl_file refuses her a filter outside a/# (SUBACK 0x80,
    MQTT-3.9.3-2), the TLS listener serves the copied certificate. Second flash: nothing is
    copied. A changed users.txt is the one file the third flash copies."""
    port, tls_port, _ = conf.ports
    # flash runs from another folder: the files are found beside the config, not in the cwd
    r = flash(vboard.link, "conf/ubroker.conf", tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert named_line(r.stdout) == {name: "copied" for name in NAMED}
    for name in NAMED:
        assert (vboard.folder / name).read_bytes() == (conf.dir / name).read_bytes(), name
    assert wait_for(lambda: port_open(port), 15), vboard.logpath.read_text()

    assert connack(port) == 5
    assert connack(port, "alice", "wonderland") == 0
    c = RawClient(port)
    c.connect("ff-acl", username="alice", password="wonderland")
    c.send(mqttraw.subscribe(1, ("a/#", 1), ("b/#", 1)))
    assert c.expect(9).body == b"\x00\x01\x01\x80"
    c.close()
    ctx = ssl.create_default_context(cafile=str(conf.dir / "certs/server.pem"))
    with socket.create_connection(("127.0.0.1", tls_port), 5) as s, \
            ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
        t.sendall(mqttraw.connect("ff-tls", username="alice", password="wonderland"))
        assert t.recv(4) == b"\x20\x02\x00\x00"

    boots = vboard.boots()
    r = flash(vboard.link, "conf/ubroker.conf", tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^copied 0 files \(0 bytes\), \d+ unchanged, 0 removed$", r.stdout, re.M), r.stdout
    assert named_line(r.stdout) == {name: "unchanged" for name in NAMED}
    assert wait_for(lambda: vboard.boots() == boots + 1, 10), vboard.logpath.read_text()

    add_user(conf.dir, "bob", "builder")
    r = flash(vboard.link, "conf/ubroker.conf", tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    size = os.path.getsize(conf.dir / "users.txt")
    assert re.search(r"^copied 1 file \(%d bytes\), \d+ unchanged, 0 removed$" % size, r.stdout, re.M), r.stdout
    assert named_line(r.stdout) == {name: "copied" if name == "users.txt" else "unchanged" for name in NAMED}
    assert (vboard.folder / "users.txt").read_bytes() == (conf.dir / "users.txt").read_bytes()
    assert wait_for(lambda: vboard.boots() == boots + 2, 10), vboard.logpath.read_text()
    assert wait_for(lambda: port_open(port), 15), vboard.logpath.read_text()
    assert connack(port, "bob", "builder") == 0


@pytest.mark.parametrize("missing, line, message", [
    ("users.txt", 2, "password_file users.txt does not exist (looked for conf/users.txt); "
                     "create it: ubroker passwd conf/users.txt NAME"),
    ("acl.txt", 3, "acl_file acl.txt does not exist (looked for conf/acl.txt)"),
    ("certs/server-key.pem", 6, "listener 2 (port {tls}): keyfile certs/server-key.pem does not exist "
                                "(looked for conf/certs/server-key.pem)"),
    ("ca.der", 7, "connection up: bridge_cafile ca.der does not exist (looked for conf/ca.der)"),
])
def test_flash_names_the_missing_file_and_copies_nothing(conf, tmp_path, missing, line, message):
    """A file the config names but the host lacks stops the flash before the board is
    touched (the port here answers nothing), with the config's line and key; a bridge's file
    is named with its connection's line."""
    (conf.dir / missing).unlink()
    r = flash(tmp_path / "no-board.tty", "conf/ubroker.conf", tmp_path)
    assert r.returncode == 1
    assert "nothing was copied" in r.stderr, r.stderr
    expect = "conf/ubroker.conf:%d: %s" % (line, message.format(tls=conf.ports[1]))
    assert expect in r.stderr, r.stderr
    assert r.stderr.count("does not exist") == 1, r.stderr
    assert "MicroPython" not in r.stdout + r.stderr  # the port was never opened


def test_flash_refuses_a_named_file_over_the_firmware(conf, tmp_path):
    """A config that names one of the firmware's own files would overwrite it on the board."""
    (conf.dir / "main.py").write_text("")
    text = (conf.dir / "ubroker.conf").read_text().replace("acl_file acl.txt", "acl_file main.py")
    (conf.dir / "ubroker.conf").write_text(text)
    r = flash(tmp_path / "no-board.tty", "conf/ubroker.conf", tmp_path)
    assert r.returncode == 1
    assert "conf/ubroker.conf:3: acl_file main.py is where flash writes the firmware" in r.stderr, r.stderr
