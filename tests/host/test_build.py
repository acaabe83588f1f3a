"""`ubroker build`: every board builds; the .mpy headers are v6.3 with the board's arch (or
none, for bytecode-only modules, which load on every arch); the -march wiring gives the arch
byte of docs/platform.md §5 on native code; and the unix build runs the broker in the unix port
from .mpy alone."""

import os
import socket
import subprocess
import sys

import paho.mqtt.client as mqtt
import pytest

from conftest import free_port, wait_for
from ubroker_tools import build, firmware, paths, profiles

UBROKER = os.path.join(os.path.dirname(sys.executable), "ubroker")
# docs/platform.md §5: the third header byte of a native .mpy per -march.
PLATFORM_ARCH_BYTE = {"xtensawin": 0x2B, "armv6m": 0x13, "armv7emsp": 0x1F}


def run_build(board, out):
    return subprocess.run([UBROKER, "build", "--board", board, "--out", str(out), "-v"],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("board", paths.known_boards())
def test_board_builds(board, tmp_path):
    out = tmp_path / board
    r = run_build(board, out)
    assert r.returncode == 0, r.stderr
    assert "built %s:" % board in r.stdout
    prof = profiles.load_board(board)
    mpys = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs if f.endswith(".mpy")]
    names = {os.path.relpath(p, out) for p in mpys}
    pkg = os.path.join(paths.FIRMWARE, "ubroker")
    srcs = {"ubroker/" + f[:-3] + ".mpy" for f in os.listdir(pkg) if f.endswith(".py")}
    frozen = firmware.frozen_groups(prof)
    if frozen:  # an image board: only what its image leaves out, in lib/ubroker/, and no entry
        assert names == {"%s/%s.mpy" % (firmware.FS_FOLDER, p.split("/")[1][:-3]) for p in firmware.left_out(frozen)}
        assert "the rest is frozen in the board's firmware image: %s" % ", ".join(frozen) in r.stdout
    else:
        assert names == srcs | {"ubmain.mpy"}
    for p in mpys:
        with open(p, "rb") as f:
            head = f.read(4)
        assert head[:2] == b"M\x06", p
        assert head[2] in (0, build.header_byte(prof["arch"])), "%s: arch byte %#x" % (p, head[2])
        assert head[3] == 31, p  # -msmall-int-bits=31
    total = sum(os.path.getsize(p) for p in mpys)
    assert "%d bytes of .mpy code" % total in r.stdout
    with open(out / "board.conf") as f, open(paths.board_file(board)) as g:
        assert f.read() == g.read()
    profiles.fwconfig().load(str(out / "ubroker.conf"))  # the default config parses


@pytest.mark.parametrize("arch", sorted(PLATFORM_ARCH_BYTE))
def test_march_gives_platform_arch_byte(arch, tmp_path):
    """Bytecode-only modules carry arch 0 (portable); once a module has native code, the byte
    must be the board's. Compiled through the build's own compile step."""
    src = tmp_path / "nat.py"
    src.write_text("import micropython\n@micropython.native\ndef f(x):\n    return x + 1\n")
    dst = tmp_path / "nat.mpy"
    build.compile_one(str(src), str(dst), arch, "nat.py")
    head = dst.read_bytes()[:4]
    assert head[2] == PLATFORM_ARCH_BYTE[arch] == build.header_byte(arch)


def test_unknown_board_names_known_ones(tmp_path):
    r = run_build("no-such-board", tmp_path / "x")
    assert r.returncode == 2
    for b in paths.known_boards():
        assert b in r.stderr


def test_unix_build_runs_broker_from_mpy(tmp_path):
    board = tmp_path / "board"
    r = run_build("unix", board)
    assert r.returncode == 0, r.stderr
    port = free_port()
    (board / "ubroker.conf").write_text("listener %d 127.0.0.1\n" % port)
    mp = paths.micropython()
    env = dict(os.environ, MICROPYPATH=os.pathsep + ".frozen")  # '' = the board folder only
    which = subprocess.run([mp, "-c", "import ubroker.server as s; print(s.__file__)"], cwd=board, env=env,
                           capture_output=True, text=True, timeout=20)
    assert which.stdout.strip().endswith("ubroker/server.mpy"), which.stdout + which.stderr
    log = open(tmp_path / "log", "w")
    proc = subprocess.Popen([mp, "main.py"], cwd=board, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def up():
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return True
            except OSError:
                return False
        assert wait_for(up, 15), (tmp_path / "log").read_text()
        got = []
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="build-test")
        c.on_message = lambda cl, u, m: got.append((m.topic, m.payload))
        c.on_subscribe = lambda cl, u, mid, rc, p: cl.publish("b/t", b"from-mpy", 1)
        c.connect("127.0.0.1", port)
        c.loop_start()
        c.subscribe("b/#", 1)
        assert wait_for(lambda: got, 5)
        assert got == [("b/t", b"from-mpy")]
        c.disconnect()
        c.loop_stop()
        assert "broker at mqtt://127.0.0.1:%d" % port in (tmp_path / "log").read_text()
    finally:
        proc.terminate()
        proc.wait(10)


def start_board(tmp_path, conf):
    board = tmp_path / "board"
    r = run_build("unix", board)
    assert r.returncode == 0, r.stderr
    (board / "ubroker.conf").write_text(conf)
    env = dict(os.environ, MICROPYPATH=os.pathsep + ".frozen")
    logpath = tmp_path / "log"
    proc = subprocess.Popen([paths.micropython(), "main.py"], cwd=board, env=env, stdout=open(logpath, "w"),
                            stderr=subprocess.STDOUT)
    return proc, logpath


def test_main_restarts_broker_after_crash(tmp_path):
    """The listener's port is taken: serving fails, main.py logs it and tries again until the
    port is free, then the broker serves."""
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    proc, logpath = start_board(tmp_path, "listener %d 127.0.0.1\n" % port)
    try:
        assert wait_for(lambda: "broker crashed (2)" in logpath.read_text(), 15), logpath.read_text()
        assert proc.poll() is None
        blocker.close()

        def up():
            try:
                c = socket.create_connection(("127.0.0.1", port), 0.2)
                c.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")  # CONNECT, empty id
                ok = c.recv(4) == b"\x20\x02\x00\x00"
                c.close()
                return ok
            except OSError:
                return False
        assert wait_for(up, 20), logpath.read_text()
    finally:
        blocker.close()
        proc.terminate()
        proc.wait(10)


def test_main_reports_config_mistake_and_stops(tmp_path):
    proc, logpath = start_board(tmp_path, "listener 1883\nmax_qos 7\n")
    try:
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = logpath.read_text()
    assert "ubroker.conf:2: max_qos must be 0, 1 or 2" in log
    assert "fix ubroker.conf" in log
    assert "broker at" not in log


def qos1_round_trip(b, topic, payload):
    """A paho client subscribes to topic at QoS 1 and gets back what it publishes there."""
    c = b.client()
    subacks = []
    c.on_subscribe = lambda cl, u, mid, codes, p: subacks.append(codes)
    c.subscribe(topic, 1)
    assert wait_for(lambda: subacks, 5)
    c.publish(topic, payload, 1)
    assert wait_for(lambda: c.messages, 5)
    assert [(m.payload, m.qos) for m in c.messages] == [(payload, 1)]


def test_run_compiles_native_code_where_the_profile_says_emit_native(broker_factory):
    """`ubroker run --board unix` (emit native) loads every module as machine code for the
    micropython's own arch, which is x64 on the x86-64 machines this suite runs on, and the
    broker serves QoS 1 through it; `--board esp32` (no emit line: bytecode; opt_level 3)
    loads bytecode compiled with -O3, the code whose heap use the small-board memory tests
    measure."""
    import platform

    from ubroker_tools import run

    arch = run.native_arch(paths.micropython())
    if platform.machine() in ("x86_64", "AMD64"):
        assert arch == "x64"
    assert profiles.load_board("unix")["emit"] == "native"
    assert profiles.load_board("esp32").get("emit", "bytecode") == "bytecode"
    assert profiles.load_board("esp32")["opt_level"] == 3
    for board, folder, byte in (("unix", "run-%s" % arch if arch else "run", build.header_byte(arch or "none")),
                                ("esp32", "run-O3", 0)):
        b = broker_factory(board=board)
        assert "code: %s in build/%s" % ("native " + arch if board == "unix" else "bytecode -O3", folder) in b.log()
        qos1_round_trip(b, "n/t", b"x")
        code = os.path.join(paths.ROOT, "build", folder, "ubroker")
        for name in os.listdir(code):
            with open(os.path.join(code, name), "rb") as f:
                head = f.read(3)
            assert head[2] == byte, "%s/%s: arch byte %#x, expected %#x" % (folder, name, head[2], byte)


def test_run_falls_back_to_bytecode_without_a_native_emitter(broker_factory, tmp_path):
    """A micropython built without a native emitter (the unix port on aarch64, say) reports
    arch 0 in sys.implementation._mpy: `ubroker run --board unix` then runs bytecode, says so
    in its log, and serves. Simulated with a wrapper that answers the arch question with 0 and
    runs the real micropython for everything else."""
    from ubroker_tools import run

    fake = tmp_path / "micropython"
    fake.write_text('#!/bin/sh\nif [ "$1" = "-c" ]; then echo 0; exit 0; fi\nexec "%s" "$@"\n'
                    % paths.micropython())
    fake.chmod(0o755)
    assert run.native_arch(str(fake)) is None
    b = broker_factory(board="unix", extra=["--micropython", str(fake)])
    assert "code: bytecode (this micropython has no native emitter) in build/run" in b.log()
    qos1_round_trip(b, "f/t", b"y")


def _traceback_line(tmp_path, opt):
    """The line a traceback gives for a raise on line 3 of a module compiled by the build's
    own step at mpy-cross -O<opt>, run from the .mpy alone in the unix port."""
    src = tmp_path / "src" / "boom.py"
    src.parent.mkdir(exist_ok=True)
    src.write_text("def f():\n    x = 1\n    raise ValueError(x)\n")
    lib = tmp_path / ("O%d" % opt)
    lib.mkdir()
    build.compile_one(str(src), str(lib / "boom.mpy"), "none", "boom.py", opt=opt)
    r = subprocess.run([paths.micropython(), "-c", "import boom; boom.f()"], capture_output=True, text=True,
                       env=dict(os.environ, MICROPYPATH=str(lib)), timeout=30)
    assert "ValueError: 1" in r.stdout + r.stderr
    return [ln.strip() for ln in (r.stdout + r.stderr).splitlines() if "boom.py" in ln]


def test_opt_level_3_drops_line_numbers_and_keeps_function_names(tmp_path):
    """A profile's opt_level is mpy-cross -O: at 3 (the esp32 and rp2-pico-w profiles) the
    bytecode keeps no line numbers, which is the heap it saves, and tracebacks still name the
    function; at 0 the line is there."""
    assert _traceback_line(tmp_path, 0) == ['File "boom.py", line 3, in f']
    assert _traceback_line(tmp_path, 3) == ['File "boom.py", line 1, in f']


def test_build_refuses_an_unknown_opt_level(tmp_path, monkeypatch):
    """A profile with opt_level 4 is refused with the key named, before anything is written."""
    prof = dict(profiles.load_board("esp32"), opt_level=4)
    monkeypatch.setattr(profiles, "load_board", lambda board: prof)
    with pytest.raises(build.BuildError, match="opt_level 4 is not one of 0, 1, 2, 3"):
        build.build("esp32", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def _start_heap(checkout):
    """The heap in use at start (the broker's `heap:` line) of `ubroker run --board esp32`
    run from the checkout folder with that checkout's own host tools."""
    env = dict(os.environ, PYTHONPATH=os.path.join(checkout, "host_tools"))
    env.pop("UBROKER_FIRMWARE", None)
    proc = subprocess.Popen([sys.executable, "-m", "ubroker_tools.cli", "run", "--board", "esp32",
                             "--port", str(free_port())], cwd=checkout, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = []
        for line in proc.stdout:
            out.append(line)
            if "heap:" in line:
                assert "code: bytecode -O3 in build/run-O3" in "".join(out), out
                return int(line.split("heap:")[1].split()[0])
        raise AssertionError("no heap line:\n" + "".join(out))
    finally:
        proc.terminate()
        proc.wait(10)


def test_run_heap_at_start_is_the_same_wherever_the_project_is_cloned(tmp_path):
    """Each module the broker loads keeps its path (MICROPYPATH entry + name) and the source
    name mpy-cross embedded as interned strings in the heap, for good. With absolute paths, a
    checkout at a long path had kilobytes less heap at start with the esp32 profile, enough to
    refuse the 64th client's subscription in CI and not here. `ubroker run` now compiles with
    the module's name under firmware/ (ubroker/broker.py) and gives micropython its paths
    relative to the working folder: a copy of the project (firmware, boards, host tools) in a
    folder with an 80-character name starts with the same heap use (one heap block of slack)."""
    import shutil

    deep = tmp_path / ("d" * 80) / "checkout"
    for part in ("firmware", "boards", "host_tools"):
        shutil.copytree(os.path.join(paths.ROOT, part), str(deep / part),
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    here = _start_heap(paths.ROOT)
    there = _start_heap(str(deep))
    assert abs(there - here) <= 32, (here, there)
    with open(str(deep / "build" / "run-O3" / "ubroker" / "broker.mpy"), "rb") as f:
        code = f.read()
    assert b"ubroker/broker.py" in code and str(deep).encode() not in code


def test_a_viper_module_without_an_arch_is_built_as_an_import_error(tmp_path):
    """mpy-cross refuses viper code without -march; the build's compile step turns such a
    module (ws_unmask.py) into one whose import raises ImportError, which ws_frame.py takes
    as "unmask in bytecode". With this micropython's own arch it is the machine code."""
    src = os.path.join(paths.FIRMWARE, "ubroker", "ws_unmask.py")
    probe = ("try:\n    from ws_unmask import unmask\nexcept ImportError:\n    print('fallback')\nelse:\n"
             "    b = bytearray(b'..abcde')\n    unmask(b, 0, 2, 5, b'\\x01\\x02\\x03\\x04', 0, 0)\n"
             "    print(bytes(b[:5]))\n")
    out = {}
    for arch in ("none", run_native_arch()):
        lib = tmp_path / arch
        lib.mkdir()
        build.compile_one(src, str(lib / "ws_unmask.mpy"), arch, "ubroker/ws_unmask.py")
        r = subprocess.run([paths.micropython(), "-c", probe], capture_output=True, text=True,
                           env=dict(os.environ, MICROPYPATH=str(lib)), timeout=30)
        out[arch] = r.stdout.strip() or r.stderr
    assert out == {"none": "fallback", run_native_arch(): "b'````d'"}, out  # abcde ^ 01020304


def run_native_arch():
    from ubroker_tools import run

    arch = run.native_arch(paths.micropython())
    if arch is None:
        pytest.fail("this micropython has no native emitter: the machine-code half cannot be checked")
    return arch
