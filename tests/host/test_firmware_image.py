"""ubroker's firmware image (docs/firmware-image.md): the manifests in firmware/image/ freeze
every firmware module in exactly one feature group, the board definitions hold what the
image profiles promise, `ubroker firmware` names what a build lacks (and runs the port's
build with the right arguments when nothing is), the image's stand-ins load a group it
leaves out from the board's filesystem in the real MicroPython, and `ubroker flash` to an
image board copies only the config and what the image does not freeze.

None of this needs a cross toolchain or a MicroPython source tree: stand-in tools and a
stand-in tree take their place, and a virtual board (ubroker vboard) plays a board whose
firmware holds the frozen groups. The one test that builds the real rp2 image is marked slow
and needs MICROPYTHON_SRC=DIR (a v1.28.0 tree with its submodules) and the toolchain."""

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, UBROKER, free_port, wait_for
from test_flash_files import add_user, connack
from test_vboard import port_open, vboard  # noqa: F401  (vboard is a fixture)
from ubroker_tools import build, firmware, flash, paths, profiles, webpage

IMAGE_BOARDS = sorted(b for b in paths.known_boards() if b.endswith("-image"))


def layouts():
    """tests/unit/test_layouts.py, the layout's groups: CORE by name, GROUPS by prefix."""
    spec = importlib.util.spec_from_file_location("layouts", os.path.join(ROOT, "tests", "unit", "test_layouts.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------ manifests

def test_every_module_is_frozen_by_exactly_one_group():
    """The manifests freeze each module of firmware/ubroker/ once, in the group the layout
    puts it in (tests/unit/test_layouts.py: the core by name, the other groups by prefix),
    and the core freezes the board's entry as main.py. Each prefix of the layout is one
    manifest's PREFIX, and the core leaves exactly those to the others, so a group with no
    module yet (ws_ before WebSockets) freezes its first one without an edit."""
    lay = layouts()
    owner = {}
    for g in firmware.groups():
        for path in firmware.group_files(g):
            assert path not in owner, "%s is frozen by manifest_%s.py and manifest_%s.py" % (path, owner[path], g)
            owner[path] = g
    modules = set(firmware.package_modules())
    assert modules <= set(owner), "frozen by no manifest: %s" % sorted(modules - set(owner))
    assert set(owner) == modules | {"main.py"}
    assert owner["main.py"] == "core"
    prefixes = {firmware.group_prefix(g): g for g in firmware.groups() if g != "core"}
    assert firmware.group_prefix("core") is None
    assert sorted(prefixes) == sorted(lay.GROUPS), "manifests' prefixes %s, the layout's %s" % (
        sorted(prefixes), sorted(lay.GROUPS))
    for path, g in owner.items():
        name = path.split("/")[-1][:-3]
        if path == "main.py":
            continue
        if name in lay.CORE:
            assert g == "core", "%s is core in the layout, frozen by manifest_%s.py" % (path, g)
        else:
            prefix = [p for p in lay.GROUPS if name.startswith(p)]
            assert prefix, "%s is in no group of the layout" % path
            assert g == prefixes[prefix[0]], "%s is frozen by manifest_%s.py, not %s's" % (path, g, prefix[0])


def test_frozen_lines_name_known_groups_with_core():
    """parse_groups refuses an unknown group and a list without the core, naming them."""
    assert firmware.parse_groups("core, store,core", "t") == ("core", "store")
    with pytest.raises(firmware.FirmwareError, match=r"t: no feature group 'tls'; the groups are core,"):
        firmware.parse_groups("core,tls", "t")
    with pytest.raises(firmware.FirmwareError, match="must include core"):
        firmware.parse_groups("store,bridge", "t")


# ------------------------------------------------------------------ board definitions

def defines(path):
    """{NAME: text} of a header's #define lines; every other line is a comment, an include
    or blank."""
    out = {}
    for line in open(path).read().splitlines():
        s = line.strip()
        m = re.fullmatch(r"#define\s+(\w+)\s+(.+?)\s*(//.*)?", s)
        if m:
            out[m.group(1)] = m.group(2)
        else:
            assert s == "" or s.startswith("//") or re.fullmatch(r'#include\s+"[\w/.]+"', s), (path, line)
    return out


def sdkconfig(path):
    out = {}
    for line in open(path).read().splitlines():
        if line.strip() and not line.startswith("#"):
            key, eq, value = line.partition("=")
            assert eq and re.fullmatch(r"CONFIG_\w+", key), (path, line)
            out[key] = value
    return out


def cmake_calls(path):
    """The cmake file's commands as (name, argument text), parentheses balanced."""
    text = re.sub(r"#[^\n]*", "", open(path).read())
    calls = re.findall(r"(\w+)\(([^()]*(?:\([^()]*\)[^()]*)*)\)", text)
    assert text.count("(") == text.count(")"), path
    return [(name, " ".join(args.split())) for name, args in calls]


def board_manifest(board):
    """What a board's manifest.py asks for: {"include": [(path, kwargs)], "require": [...]}, and
    its options' defaults."""
    port, folder = firmware.IMAGES[board]
    path = os.path.join(firmware.IMAGE_DIR, folder, "manifest.py")
    seen = {"include": [], "require": []}
    opts = firmware._Options()
    api = {"include": lambda p, **kw: seen["include"].append((p, kw)), "require": lambda n, **kw:
           seen["require"].append(n), "options": opts}
    exec(compile(open(path).read(), path, "exec"), api)
    return seen, opts


@pytest.mark.parametrize("board", IMAGE_BOARDS)
def test_board_definition_holds_what_the_profile_promises(board):
    """Every image profile has a board definition; its manifest freezes the port's own set
    and the groups of the profile's `frozen` line at the profile's opt_level, and the
    network stack's limits it raises leave the profile's clients a connection each beside
    a bridge link and a status page, and (rp2) two connections accepted only to be refused,
    (esp32) a socket for each of two listeners, MQTT and the status page's WebSockets."""
    assert set(IMAGE_BOARDS) == set(firmware.IMAGES)
    prof = profiles.load_board(board)
    port, folder = firmware.IMAGES[board]
    d = os.path.join(firmware.IMAGE_DIR, folder)
    calls = cmake_calls(os.path.join(d, "mpconfigboard.cmake"))
    assert ("set", "MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py") in calls
    seen, opts = board_manifest(board)
    groups = firmware.parse_groups(opts.groups, board)
    assert groups == firmware.frozen_groups(prof)
    assert opts.opt == prof["opt_level"]
    assert seen["include"][0] == ("$(PORT_DIR)/boards/manifest.py", {})
    assert seen["include"][1:] == [("../manifest_%s.py" % g, {"opt": opts.opt}) for g in opts.groups.split(",")]
    h = defines(os.path.join(d, "mpconfigboard.h"))
    if port == "rp2":
        assert ("include", "${MICROPY_PORT_DIR}/boards/RPI_PICO_W/mpconfigboard.cmake") in calls
        assert ("set", "MICROPY_PY_BLUETOOTH OFF") in calls
        assert int(h["MEMP_NUM_TCP_PCB"].strip("()")) == prof["max_connections"] + 4
        # lwIP's own sanity rule (core/init.c): the segment pool holds a full send queue
        mss = int(h["TCP_MSS"].strip("()"))
        assert int(h["MEMP_NUM_TCP_SEG"].strip("()")) >= (4 * 8 * mss + mss - 1) // mss
        assert {"MEM_SIZE", "TCP_WND", "TCP_SND_BUF"} <= set(h)  # MEM_SIZE drops the port's TCP block
    else:
        assert h["MICROPY_PY_BLUETOOTH"] == "(0)"
        conf = sdkconfig(os.path.join(d, "sdkconfig.board"))
        sockets = int(conf["CONFIG_LWIP_MAX_SOCKETS"])
        assert sockets == prof["max_connections"] + 4 and sockets <= 64
        assert int(conf["CONFIG_LWIP_MAX_ACTIVE_TCP"]) >= sockets
        assert not any("sdkconfig.ble" in args for _, args in calls)


# ------------------------------------------------------------------ ubroker firmware: what is missing

def fake_tree(path, skip=()):
    """A MicroPython tree as far as the prerequisites check looks: version, ports, and one
    file in each submodule (but those in skip)."""
    os.makedirs(os.path.join(path, "py"))
    with open(os.path.join(path, "py", "mpconfig.h"), "w") as f:
        f.write("#define MICROPY_VERSION_MAJOR 1\n#define MICROPY_VERSION_MINOR 28\n"
                "#define MICROPY_VERSION_MICRO 0\n")
    for port in ("rp2", "esp32"):
        os.makedirs(os.path.join(path, "ports", port))
        open(os.path.join(path, "ports", port, "Makefile"), "w").close()
    for need in firmware.SUBMODULES["rp2"] + firmware.SUBMODULES["esp32"]:
        if "/".join(need.split("/")[:2]) not in skip:
            os.makedirs(os.path.dirname(os.path.join(path, need)), exist_ok=True)
            open(os.path.join(path, need), "w").close()
    return str(path)


def tool(bindir, name, script):
    p = os.path.join(bindir, name)
    with open(p, "w") as f:
        f.write("#!/bin/sh\n" + script)
    os.chmod(p, 0o755)


def toolbox(tmp_path, without=()):
    """A PATH of stand-in tools: make records its arguments and, for a port, leaves the
    outputs a build does; arm-none-eabi-gcc finds newlib; arm-none-eabi-nm gives the heap's
    symbols. Tools in without are left out."""
    b = tmp_path / "bin"
    b.mkdir()
    libc = tmp_path / "libc.a"
    libc.write_text("")
    tools = {
        "make": 'echo "$@" >> "%s"\nfor a in "$@"; do case "$a" in BUILD=*) d="${a#BUILD=}"; /bin/mkdir -p "$d"; '
                'printf uf2 > "$d/firmware.uf2"; printf bin1 > "$d/firmware.bin"; printf elf > "$d/firmware.elf";; '
                'esac; done\n' % (tmp_path / "make.log"),
        "cc": "exit 0\n",
        "cmake": 'echo "cmake version 3.25.1"\n',
        "arm-none-eabi-gcc": 'echo "%s"\n' % libc,
        "arm-none-eabi-nm": 'echo "20040000 B __GcHeapEnd"; echo "2000ec74 A __GcHeapStart"\n',
    }
    for name, script in tools.items():
        if name not in without:
            tool(b, name, script)
    return str(b)


def run_firmware(args, path, env_extra=None, drop=("PICOTOOL_FETCH_FROM_GIT_PATH", "picotool_DIR", "IDF_PATH")):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = path
    env.update(env_extra or {})
    return subprocess.run([UBROKER, "firmware"] + args, capture_output=True, text=True, env=env, timeout=120)


SYSTEM_PICOTOOL = any(os.path.exists(os.path.join(d, "picotoolConfig.cmake"))
                      for d in ("/usr/local/lib/cmake/picotool", "/usr/lib/cmake/picotool"))


def test_firmware_names_a_missing_tree(tmp_path):
    r = run_firmware(["--board", "rp2-pico-w-image", "--micropython", str(tmp_path / "mp")], toolbox(tmp_path))
    assert r.returncode == 1
    assert "missing:\n  no MicroPython source tree in %s (no py/mpconfig.h)" % (tmp_path / "mp") in r.stderr


def test_firmware_names_each_missing_tool_and_submodule_and_builds_nothing(tmp_path):
    tree = fake_tree(tmp_path / "mp", skip=("lib/cyw43-driver",))
    r = run_firmware(["--board", "rp2-pico-w-image", "--micropython", tree, "--out", str(tmp_path / "out")],
                     toolbox(tmp_path, without=("arm-none-eabi-gcc",)))
    assert r.returncode == 1, r.stdout
    lines = r.stderr.splitlines()
    assert lines[0] == "ubroker firmware: cannot build the rp2-pico-w-image image; missing:"
    assert ("  submodule lib/cyw43-driver is empty (no lib/cyw43-driver/src/cyw43.h): git -C %s submodule update "
            "--init lib/cyw43-driver" % tree) in lines
    assert ("  arm-none-eabi-gcc is not on PATH: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi"
            in lines)
    if not SYSTEM_PICOTOOL:
        assert [x for x in lines if x.startswith("  picotool 2.x (the pico-sdk makes the .uf2 with it) is not "
                                                 "installed: build picotool 2.2.0")]
    assert len(lines) == 3 + (not SYSTEM_PICOTOOL)
    assert not (tmp_path / "make.log").exists() and not (tmp_path / "out").exists()


def test_firmware_names_missing_newlib_and_old_cmake(tmp_path):
    tree = fake_tree(tmp_path / "mp")
    bindir = toolbox(tmp_path)
    tool(bindir, "arm-none-eabi-gcc", 'echo "libc.a"\n')  # the bare name: newlib is not installed
    tool(bindir, "cmake", 'echo "cmake version 3.16.3"\n')
    (tmp_path / "picotoolConfig.cmake").write_text("")
    r = run_firmware(["--board", "rp2-pico-w-image", "--micropython", tree], bindir,
                     {"picotool_DIR": str(tmp_path)})
    assert r.returncode == 1
    assert r.stderr.splitlines()[1:] == [
        "  newlib for arm-none-eabi (libc.a) is not installed: apt-get install libnewlib-arm-none-eabi",
        "  cmake 3.16 is too old: 3.19 or newer is needed (apt-get install cmake)"]


def test_firmware_esp32_names_esp_idf(tmp_path):
    """ESP-IDF is on no registry: without IDF_PATH, or with one that is no ESP-IDF, the esp32
    image cannot be built, and the message says what to install and source."""
    tree = fake_tree(tmp_path / "mp")
    bindir = toolbox(tmp_path)
    r = run_firmware(["--board", "esp32-image", "--micropython", tree], bindir)
    assert r.returncode == 1
    assert r.stderr.splitlines()[1:] == [
        "  IDF_PATH is not set: install ESP-IDF v5.5.1 (MicroPython v1.28.0 supports v5.3 to v5.5.1; git clone "
        "-b v5.5.1 --recursive https://github.com/espressif/esp-idf.git, then ./install.sh esp32) and run "
        "`. $IDF_PATH/export.sh` in this shell"]
    r = run_firmware(["--board", "esp32-image", "--micropython", tree], bindir, {"IDF_PATH": str(tmp_path)})
    assert r.stderr.splitlines()[1:] == [
        "  IDF_PATH=%s has no tools/idf.py: point it at an ESP-IDF v5.5.1 checkout" % tmp_path,
        "  idf.py is not on PATH: run `. $IDF_PATH/export.sh` in this shell"]


def test_firmware_refuses_an_unknown_board_and_bad_groups(tmp_path):
    r = run_firmware(["--board", "rp2-pico-w", "--micropython", str(tmp_path)], toolbox(tmp_path))
    assert r.returncode == 2
    assert "no image for board 'rp2-pico-w'; boards with one: esp32-image, rp2-pico-w-image" in r.stderr
    r = run_firmware(["--board", "rp2-pico-w-image", "--micropython", str(tmp_path), "--groups", "store"],
                     os.environ["PATH"])
    assert r.returncode == 1
    assert "--groups: the groups must include core" in r.stderr


def test_firmware_runs_the_port_build(tmp_path):
    """With everything there, `ubroker firmware` builds mpy-cross, then the port with our
    board folder, a build folder in --out and its own top manifest, and reports the image."""
    tree = fake_tree(tmp_path / "mp")
    out = tmp_path / "out"
    (tmp_path / "pt").mkdir()
    (tmp_path / "pt" / "picotoolConfig.cmake").write_text("")
    r = run_firmware(["--board", "rp2-pico-w-image", "--micropython", tree, "--out", str(out), "-j", "3",
                      "--groups", "core,store"], toolbox(tmp_path), {"picotool_DIR": str(tmp_path / "pt")})
    assert r.returncode == 0, r.stderr
    board_dir = os.path.join(firmware.IMAGE_DIR, "UBROKER_RPI_PICO_W")
    assert (tmp_path / "make.log").read_text().splitlines() == [
        "-C %s/mpy-cross -j3" % tree,
        "-C %s/ports/rp2 BOARD_DIR=%s BUILD=%s/build FROZEN_MANIFEST=%s/manifest.py -j3" % (tree, board_dir, out, out)]
    assert "note: rp2-pico-w-image says `frozen core,store,security,bridge,sensors,v5,web,ws`" in r.stdout
    assert "built rp2-pico-w-image: %s, 3 bytes (4 bytes of flash); frozen: core, store" % os.path.relpath(
        out / "firmware.uf2") in r.stdout
    assert "GC heap %d bytes" % (0x20040000 - 0x2000ec74) in r.stdout
    assert (out / "firmware.uf2").read_text() == "uf2"


def test_generated_manifest_freezes_the_groups_stand_ins_and_marker(tmp_path):
    """The top manifest `ubroker firmware` writes includes the board's manifest with the
    groups, the marker module naming them, and a stand-in for every module left out; the
    stand-ins are the files image_extras gives."""
    path = firmware.write_manifest("rp2-pico-w-image", ("core", "store"), str(tmp_path))
    seen = []
    api = {"include": lambda p, **kw: seen.append(("include", p, kw)),
           "module": lambda p, base_path=".": seen.append(("module", os.path.join(base_path, p))),
           "package": lambda n, files, base_path=".": seen.extend(("package", os.path.join(base_path, n, f))
                                                                   for f in files)}
    exec(open(path).read(), api)
    assert seen[0] == ("include", os.path.join(firmware.IMAGE_DIR, "UBROKER_RPI_PICO_W", "manifest.py"),
                       {"groups": "core,store"})
    frozen_dir = str(tmp_path / "frozen")
    extras = firmware.image_extras(("core", "store"))
    assert sorted(os.path.relpath(p, frozen_dir) for _, p in seen[1:]) == sorted(extras)
    for rel, text in extras.items():
        assert (tmp_path / "frozen" / rel).read_text() == text
    assert set(p for p in extras if p.startswith("ubroker/")) == set(firmware.left_out(("core", "store")))
    assert extras["ubroker_image.py"].endswith('GROUPS = "core,store"\n')


# ------------------------------------------------------------------ stand-ins in the real MicroPython

def frozen_stand_in(folder, group_names):
    """folder laid out as the image's frozen modules: the groups' sources, the stand-ins and
    the marker (the unix port finds it on MICROPYPATH as a board finds .frozen)."""
    frozen = firmware.frozen_files(group_names)
    for path, src in firmware.package_modules().items():
        if path in frozen:
            os.makedirs(os.path.join(folder, "ubroker"), exist_ok=True)
            shutil.copyfile(src, os.path.join(folder, path))
    for rel, text in firmware.image_extras(group_names).items():
        os.makedirs(os.path.dirname(os.path.join(folder, rel)) or folder, exist_ok=True)
        with open(os.path.join(folder, rel), "w") as f:
            f.write(text)


def fs_modules(board_dir, group_names):
    """The modules the groups leave out, compiled into board_dir/lib/ubroker as flash puts them."""
    for path in firmware.left_out(group_names):
        dst = os.path.join(board_dir, firmware.FS_FOLDER, path.split("/")[1][:-3] + ".mpy")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        build.compile_one(firmware.package_modules()[path], dst, "none", os.path.basename(path))


STAND_IN_SCRIPT = """
import sys
import ubroker
print('PATH', ubroker.__path__)
from ubroker.sec_files import load            # a left-out module, through its stand-in
import ubroker.sec_files as fs
print('REAL', sys.modules['ubroker.sec_files'].__file__, 'STANDIN', fs.__file__, load is fs.load)
from ubroker import sensor_bme280             # imports its left-out sibling sensors at its top
print('SIBLING', sys.modules['ubroker.sensors'].__file__)
from ubroker import bridge                    # imports frozen codec, session, topics at its top
print('BRIDGE', bridge.Bridge.__name__, ubroker.__path__)
ubroker.forget('sec_files')
print('FORGOTTEN', 'ubroker.sec_files' in sys.modules, hasattr(ubroker, 'sec_files'))
try:
    import ubroker.sec_tls
except ImportError as e:
    print('MISSING', e)
"""


def test_stand_ins_load_left_out_groups_in_micropython(tmp_path):
    """In the unix port, with the core and the store frozen (a folder on MICROPYPATH plays the
    image's .frozen) and the rest in lib/ubroker/ of the board's folder: a left-out module
    imports through its stand-in, its names reach the importer, a left-out sibling and a
    frozen one load at its top, the package's __path__ is the frozen one again afterwards,
    forget() drops it, and a module missing from lib/ubroker/ is named in the error."""
    groups = ("core", "store")
    frozen_stand_in(str(tmp_path / "frozen"), groups)
    board = tmp_path / "board"
    fs_modules(str(board), groups)
    os.remove(board / firmware.FS_FOLDER / "sec_tls.mpy")
    env = dict(os.environ, MICROPYPATH=os.pathsep + str(tmp_path / "frozen"))
    r = subprocess.run([paths.micropython(), "-c", STAND_IN_SCRIPT], cwd=board, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    out = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    frozen_pkg = str(tmp_path / "frozen" / "ubroker")
    assert out["PATH"] == frozen_pkg
    assert out["REAL"] == "lib/ubroker/sec_files.mpy STANDIN %s/sec_files.py True" % frozen_pkg
    assert out["SIBLING"] == "lib/ubroker/sensors.mpy"
    assert out["BRIDGE"] == "Bridge %s" % frozen_pkg
    assert out["FORGOTTEN"] == "False False"
    assert out["MISSING"] == ("ubroker.sec_tls is not frozen in this image and lib/ubroker/sec_tls.mpy is missing: "
                              "ubroker flash copies it")


def test_stand_in_preloads_the_frozen_siblings_a_module_needs_at_its_top():
    src = "import time\nfrom .codec import A\nfrom . import topics, x\ntry:\n    from .session import B\n" \
          "except ImportError:\n    pass\ndef f():\n    from .broker import C\n"
    assert firmware.top_imports(src) == ["codec", "topics", "x", "session"]
    frozen = firmware.frozen_files(("core",))
    text = firmware.stand_in("ubroker/bridge.py", frozen)
    ast.parse(text)
    assert "\nfrom . import codec, session, topics  # frozen, needed at once by bridge\n" in text
    # sensor_bme280 imports sensors (left out here too), which imports codec at its top
    assert firmware.frozen_needs("sensor_bme280", frozen) == ["codec"]


# ------------------------------------------------------------------ build and flash for an image board

def test_build_for_the_image_board_leaves_out_what_it_freezes(tmp_path):
    r = subprocess.run([UBROKER, "build", "--board", "rp2-pico-w-image", "--out", str(tmp_path / "b"), "-v"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    # the status page is data, not a module: an image cannot freeze it, so it stays a file
    assert sorted(os.listdir(tmp_path / "b")) == ["board.conf", "ubroker.conf", "ubroker_web"]
    assert os.listdir(tmp_path / "b" / "ubroker_web") == ["status.html.gz"]
    assert "frozen in the board's firmware image: core, store, security, bridge, sensors, v5, web, ws" in r.stdout


def image_profile(boards_dir, group_names):
    """boards_dir: the profiles, and unix-image.conf, the unix profile with a `frozen` line:
    the image board a virtual board can play."""
    shutil.copytree(paths.BOARDS, boards_dir)
    text = open(paths.board_file("unix")).read().replace("board unix\n", "board unix-image\n")
    with open(os.path.join(boards_dir, "unix-image.conf"), "w") as f:
        f.write(text + "frozen %s\n" % ",".join(group_names))


def test_build_puts_left_out_modules_in_lib_ubroker(tmp_path, monkeypatch):
    image_profile(str(tmp_path / "boards"), ("core", "store"))
    monkeypatch.setattr(paths, "BOARDS", str(tmp_path / "boards"))
    out, files = build.build("unix-image", str(tmp_path / "b"))
    left = sorted("lib/ubroker/%s.mpy" % p.split("/")[1][:-3] for p in firmware.left_out(("core", "store")))
    assert sorted(n for n, _ in files) == sorted(left + ["board.conf", "ubroker.conf", webpage.ON_BOARD])


def test_stale_files_on_an_image_board():
    """What a stock flash left is removed from an image board: the package folder's files,
    ubmain.mpy, and main.py only when it is flash's own two lines."""
    import hashlib

    stub = hashlib.sha256(build.MAIN_STUB.encode()).hexdigest()
    local = {"lib/ubroker/bridge.mpy": "x", "board.conf": "y"}
    listing = {"ubroker": ["codec.mpy"], "lib/ubroker": ["bridge.mpy", "old.mpy"]}
    got = flash.stale_files(local, listing, {"ubmain.mpy": "h", "main.py": stub}, ("core",))
    assert sorted(got) == ["lib/ubroker/old.mpy", "main.py", "ubmain.mpy", "ubroker/codec.mpy"]
    got = flash.stale_files(local, listing, {"ubmain.mpy": None, "main.py": "mine"}, ("core",))
    assert sorted(got) == ["lib/ubroker/old.mpy", "ubroker/codec.mpy"]
    assert flash.stale_files({"ubroker/a.mpy": 1}, {"ubroker": ["a.mpy", "b.mpy"]}, {}, ()) == ["ubroker/b.mpy"]


def board_main(sim):
    """The board's main.py here: the image's frozen main.py (firmware/main.py), after putting
    the folder that plays .frozen on sys.path (vboard gives the unix port '' and .frozen)."""
    with open(os.path.join(paths.FIRMWARE, "main.py")) as f:
        return "import sys\nsys.path.append(%r)\n" % sim + f.read()


def mpremote(vb, *args, timeout=30):
    return subprocess.run([sys.executable, "-m", "mpremote", "connect", vb.link, "resume"] + list(args),
                          capture_output=True, text=True, timeout=timeout)


def wait_repl(vb):
    """Wait until the virtual board's REPL answers (a busy machine starts it slowly)."""
    assert wait_for(lambda: "REPL-UP" in mpremote(vb, "exec", "print('REPL-' + 'UP')").stdout, 60), \
        vb.logpath.read_text()


def reboot(vb):
    """Soft-reset the virtual board (it boots its main.py again) and wait for its REPL."""
    wait_repl(vb)
    boots = vb.boots()
    mpremote(vb, "exec", "--no-follow", "import machine; machine.soft_reset()")
    assert wait_for(lambda: vb.boots() == boots + 1, 30), vb.logpath.read_text()
    wait_repl(vb)


def test_flash_to_an_image_board_copies_only_what_the_image_leaves_out(vboard, tmp_path, monkeypatch):  # noqa: F811
    """A virtual board whose "firmware" freezes the core and the store (a folder on its
    sys.path plays .frozen), with what a stock flash left on it. Flash first refuses while
    the board runs no image, then removes the stock leftovers, copies the config, the users
    file it names and only the left-out groups' modules (lib/ubroker/), and the broker
    starts from the frozen package, loading the security group through the stand-ins: an
    anonymous CONNECT is refused with return code 5 and alice's accepted with 0
    (MQTT-3.2.2-5). A second flash copies and removes nothing."""
    groups = ("core", "store")
    image_profile(str(tmp_path / "boards"), groups)
    monkeypatch.setattr(paths, "BOARDS", str(tmp_path / "boards"))
    sim = str(tmp_path / "frozen")
    frozen_stand_in(sim, groups)
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    port = free_port()
    (conf_dir / "ubroker.conf").write_text("listener %d 127.0.0.1\npassword_file users.txt\n" % port)
    add_user(conf_dir, "alice", "wonderland")
    said = []

    # The board runs no image yet (nothing has put the frozen folder on its path).
    wait_repl(vboard)
    with pytest.raises(flash.FlashError, match="runs MicroPython without ubroker's firmware image"):
        flash.flash("unix-image", vboard.link, str(conf_dir / "ubroker.conf"), say=said.append)
    assert not (vboard.folder / "board.conf").exists()

    # The image's main.py, and what a stock flash left: the package folder, the entry.
    (vboard.folder / "ubroker").mkdir()
    (vboard.folder / "ubroker" / "codec.mpy").write_bytes(b"M\x06stale")
    (vboard.folder / "ubmain.mpy").write_bytes(b"M\x06stale")
    (vboard.folder / "main.py").write_text(board_main(sim))
    reboot(vboard)  # main.py stops at the stale package folder, which hides the frozen one

    copied, stale = flash.flash("unix-image", vboard.link, str(conf_dir / "ubroker.conf"), say=said.append)
    text = "\n".join(said)
    assert "its image freezes core, store" in text
    left = sorted("lib/ubroker/%s.mpy" % p.split("/")[1][:-3] for p in firmware.left_out(groups))
    assert sorted(copied) == sorted(left + ["board.conf", "ubroker.conf", "users.txt", webpage.ON_BOARD])
    assert sorted(stale) == ["ubmain.mpy", "ubroker/codec.mpy"]
    assert not (vboard.folder / "ubroker").exists() and not (vboard.folder / "ubmain.mpy").exists()
    assert sorted(os.listdir(vboard.folder / "lib" / "ubroker")) == sorted(p.split("/")[-1] for p in left)
    assert (vboard.folder / "main.py").exists()  # the user's main.py stays (here: the image's stand-in)
    assert wait_for(lambda: port_open(port), 20), vboard.logpath.read_text()
    assert connack(port) == 5
    assert connack(port, "alice", "wonderland") == 0

    said.clear()
    copied, stale = flash.flash("unix-image", vboard.link, str(conf_dir / "ubroker.conf"), say=said.append)
    assert copied == [] and stale == []
    assert "copied 0 files (0 bytes), %d unchanged, 0 removed" % (len(left) + 4) in said


def test_flash_refuses_an_image_whose_groups_differ(vboard, tmp_path, monkeypatch):  # noqa: F811
    image_profile(str(tmp_path / "boards"), ("core", "store", "security"))
    monkeypatch.setattr(paths, "BOARDS", str(tmp_path / "boards"))
    sim = str(tmp_path / "frozen")
    frozen_stand_in(sim, ("core", "store"))
    (vboard.folder / "main.py").write_text("import sys\nsys.path.append(%r)\n" % sim)
    reboot(vboard)
    with pytest.raises(flash.FlashError, match=r"the board's firmware image freezes core,store, but profile "
                                               r"unix-image says `frozen core,store,security`"):
        flash.flash("unix-image", vboard.link, None, reset=False, say=lambda m: None)


# ------------------------------------------------------------------ the real image (slow)

@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("MICROPYTHON_SRC"), reason="needs MICROPYTHON_SRC=DIR, a MicroPython v1.28.0 "
                    "tree with its submodules, and the rp2 toolchain (docs/firmware-image.md)")
def test_real_rp2_image(tmp_path):
    """`ubroker firmware` builds the Pico W image from a real tree: a .uf2 whose frozen
    content is the groups' files, the marker and nothing of the broker's left out, with the
    raised lwIP pool in its RAM."""
    out = tmp_path / "fw"
    r = subprocess.run([UBROKER, "firmware", "--board", "rp2-pico-w-image", "--micropython",
                        os.environ["MICROPYTHON_SRC"], "--out", str(out)], capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (out / "firmware.uf2").stat().st_size > 0
    groups = firmware.frozen_groups(profiles.load_board("rp2-pico-w-image"))
    frozen_c = (out / "build" / "frozen_content.c").read_text()
    names = set(re.findall(r'"((?:ubroker/)?[\w]+\.py)"', frozen_c))
    want = firmware.frozen_files(groups) | {firmware.MARKER + ".py"}
    assert want <= names
    assert not [n for n in names if n.startswith("ubroker/") and n not in want]
    heap = int(re.search(r"GC heap (\d+) bytes", r.stdout).group(1))
    assert 150 * 1024 < heap < 210016  # less than the stock RPI_PICO_W's 210,016 B: the raised pools
