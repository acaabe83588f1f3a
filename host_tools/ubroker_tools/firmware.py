"""`ubroker firmware`: a MicroPython firmware image with the broker frozen into flash, built
by the port's own build from a MicroPython source tree (docs/firmware-image.md).

Also what the other host tools need to know about an image, read from one place, the
manifests in firmware/image/: which files a feature group freezes (manifest_GROUP.py, run
with a stand-in for MicroPython's manifest API), which groups a board profile's image holds
(its `frozen` line), and what an image freezes for the modules it leaves on the filesystem.

A package has one __path__ in MicroPython (py/builtinimport.c), so ubroker cannot be half
frozen and half on the filesystem as it is. An image that leaves a group out freezes, for
each of the group's modules, a stand-in that imports the module from lib/ubroker/ on the
board (where `ubroker flash` copies it) with the package's __path__ pointed there for that one
import. The stand-ins and a module naming the image's groups (ubroker_image) are written by
`ubroker firmware` into the output folder and frozen with the rest."""

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys

from . import paths, profiles

HELP = """Build a MicroPython firmware image with the broker frozen into flash, from a MicroPython
source tree (v1.28.0) with the port's toolchain: for rp2, arm-none-eabi-gcc with newlib, cmake
and picotool; for esp32, ESP-IDF (idf.py). What is missing is named, and nothing is built.

The image freezes the feature groups the board profile's `frozen` line names (or --groups);
flash it once (rp2: copy the .uf2 to the board in BOOTSEL mode; esp32: esptool.py), then
`ubroker flash --board BOARD` copies only the config and the modules the image leaves out.

example:
  ubroker firmware --board rp2-pico-w-image --micropython ~/src/micropython
  ubroker firmware --board rp2-pico-w-image --micropython ~/src/micropython --groups core,store
"""

IMAGE_DIR = os.path.join(paths.FIRMWARE, "image")
# Where `ubroker flash` puts the modules an image does not freeze, relative to the board's
# root (its working folder): not ubroker/, which would stand before the frozen package on
# sys.path ('' comes before '.frozen') and hide it.
FS_FOLDER = "lib/ubroker"
MARKER = "ubroker_image"  # the frozen module naming the image's groups: ubroker_image.GROUPS
MICROPYTHON = "1.28"  # the release the board definitions are written against

# board profile -> (MicroPython port, board definition folder in firmware/image/)
IMAGES = {
    "rp2-pico-w-image": ("rp2", "UBROKER_RPI_PICO_W"),
    "esp32-image": ("esp32", "UBROKER_ESP32"),
}
# image board profile -> the stock board profile of the same hardware, whose measured heap
# (tools/heap32/figures.json) the image's is priced from
STOCK = {"rp2-pico-w-image": "rp2-pico-w", "esp32-image": "esp32"}

# Per port: the submodules its build reads (a file each must have), and what it outputs.
SUBMODULES = {
    "rp2": ["lib/pico-sdk/README.md", "lib/tinyusb/src/tusb.h", "lib/lwip/src/include/lwip/opt.h",
            "lib/cyw43-driver/src/cyw43.h", "lib/mbedtls/include/mbedtls/ssl.h", "lib/micropython-lib/README.md"],
    "esp32": ["lib/berkeley-db-1.xx/README", "lib/micropython-lib/README.md"],
}
OUTPUTS = {"rp2": ("firmware.uf2", "firmware.bin"), "esp32": ("firmware.bin", "micropython.bin")}
# Debian's packages for what the builds run.
APT = {
    "arm-none-eabi-gcc": "gcc-arm-none-eabi libnewlib-arm-none-eabi",
    "newlib": "libnewlib-arm-none-eabi",
    "cmake": "cmake",
    "make": "make",
    "cc": "gcc libc6-dev",
}
PICOTOOL_HOW = ("build picotool 2.2.0 (https://github.com/raspberrypi/picotool, tag 2.2.0) once: cmake -S picotool "
                "-B picotool/build -DPICO_SDK_PATH=%s/lib/pico-sdk -DPICOTOOL_NO_LIBUSB=1 -DPICOTOOL_FLAT_INSTALL=1 "
                "-DCMAKE_INSTALL_PREFIX=P && cmake --build picotool/build --target install, then export "
                "PICOTOOL_FETCH_FROM_GIT_PATH=P; or, with network access, export PICOTOOL_FETCH_FROM_GIT_PATH=P "
                "alone and the pico-sdk downloads and builds it there")


class FirmwareError(Exception):
    pass


# ------------------------------------------------------------------ groups and manifests

def groups():
    """The feature groups, core first: one per firmware/image/manifest_GROUP.py."""
    names = sorted(f[len("manifest_"):-3] for f in os.listdir(IMAGE_DIR)
                   if f.startswith("manifest_") and f.endswith(".py"))
    return tuple(["core"] + [g for g in names if g != "core"])


class _Options:
    """manifestfile.py's IncludeOptions: keyword arguments over defaults."""

    def __init__(self, **kwargs):
        self._kwargs = kwargs
        self._defaults = {}

    def defaults(self, **kwargs):
        self._defaults = kwargs

    def __getattr__(self, name):
        return self._kwargs.get(name, self._defaults.get(name))


def _run_manifest(group):
    """manifest_GROUP.py run with a stand-in for MicroPython's manifest API, in its own folder
    as makemanifest.py runs it: (the board paths it freezes, "ubroker/codec.py" or "main.py";
    its globals)."""
    path = os.path.join(IMAGE_DIR, "manifest_%s.py" % group)
    out = []

    def package(name, files=None, base_path=".", opt=None):
        if files is None:
            raise FirmwareError("%s: package(%r) without files=: list them" % (path, name))
        out.extend(name + "/" + f for f in files)

    def module(name, base_path=".", opt=None):
        out.append(name)

    api = {"package": package, "module": module, "options": _Options()}
    here = os.getcwd()
    os.chdir(IMAGE_DIR)
    try:
        with open(path) as f:
            exec(compile(f.read(), path, "exec"), api)
    finally:
        os.chdir(here)
    return out, api


def group_files(group):
    """What manifest_GROUP.py freezes, as the paths the board imports them by."""
    return _run_manifest(group)[0]


def group_prefix(group):
    """The prefix of the module names a feature group claims (its manifest's PREFIX); None
    for the core, which takes every module no other group claims."""
    return _run_manifest(group)[1].get("PREFIX")


def parse_groups(text, where):
    """('core', 'store', ...) from "core,store,..." (in its order, each once); FirmwareError
    naming an unknown group, or a list without core (the image is there to hold the core: its
    entry and the package itself)."""
    names = tuple(g.strip() for g in text.split(",") if g.strip())
    known = groups()
    bad = [g for g in names if g not in known]
    if bad:
        raise FirmwareError("%s: no feature group %s; the groups are %s"
                            % (where, ", ".join(repr(g) for g in bad), ",".join(known)))
    if "core" not in names:
        raise FirmwareError("%s: the groups must include core (the package and the board's entry)" % where)
    return tuple(g for i, g in enumerate(names) if g not in names[:i])


def frozen_groups(profile):
    """The groups a board profile's image freezes (its `frozen` line), () for a stock board."""
    text = profile.get("frozen")
    if not text:
        return ()
    return parse_groups(text, "%s: frozen" % profile.get("board", "profile"))


def frozen_files(group_names):
    """Every file the groups freeze, as board paths."""
    out = set()
    for g in group_names:
        out.update(group_files(g))
    return out


def package_modules():
    """The broker package's modules: {board path ("ubroker/codec.py"): source file}."""
    pkg = os.path.join(paths.FIRMWARE, "ubroker")
    return {"ubroker/" + f: os.path.join(pkg, f) for f in sorted(os.listdir(pkg)) if f.endswith(".py")}


def left_out(group_names):
    """The package's modules the groups do not freeze: board paths, sorted."""
    frozen = frozen_files(group_names)
    return sorted(p for p in package_modules() if p not in frozen)


# ------------------------------------------------------------------ board definitions

# A whole-number setting of a board definition: `#define NAME (N)` in mpconfigboard.h,
# `NAME=N` in sdkconfig.board
_SETTING = re.compile(r"^(?:#define\s+(\w+)\s+\(?(\d+)\)?|(CONFIG_\w+)=(\d+))\s*(?://.*)?$", re.M)


def board_settings(board):
    """{NAME: number} an image board's definition sets (firmware/image/FOLDER/mpconfigboard.h
    and, for esp32, sdkconfig.board): what the image changes from the port's board."""
    _, folder = IMAGES[board]
    out = {}
    for name in ("mpconfigboard.h", "sdkconfig.board"):
        path = os.path.join(IMAGE_DIR, folder, name)
        if os.path.exists(path):
            with open(path) as f:
                for m in _SETTING.finditer(f.read()):
                    out[m.group(1) or m.group(3)] = int(m.group(2) or m.group(4))
    return out


# ------------------------------------------------------------------ the heap freezing frees

HEAP_FIGURES = os.path.join(IMAGE_DIR, "frozen_heap.json")  # firmware/image/heap_frozen.py --write
# Modules the broker drops from the heap once it has started (ubroker.forget): what freezing
# them saves is not held at start. config.py once the settings are read (config.py), listen.py
# once the listeners are open (server.py).
FORGOTTEN_AT_START = ("ubroker/config.py", "ubroker/listen.py")
# Core modules a started broker has not loaded yet: sysinfo.py (the $SYS report) at its first
# use (Server.sysinfo: a `$` subscription, the status page), long_packet.py at the first packet
# longer than the read buffer (only with max_packet_size 0). Frozen, they save nothing at start.
LOADED_LATER = ("ubroker/sysinfo.py", "ubroker/long_packet.py")
# The store's module a broker with its store on loads at start (server.py); with what its top
# level imports, that is what of the store group is held then. The rest load later and only
# when needed: store_replay.py while the log is replayed (forgotten after), store_v5.py when
# there is MQTT 5 state to keep.
STORE_AT_START = "store_persist"


def heap_figures():
    with open(HEAP_FIGURES) as f:
        return json.load(f)


def frozen_saving(cfg, store_on=None):
    """Heap (bytes, 32-bit) a board's broker does not hold at start because its image freezes
    the modules it holds by then: the core's less those start-up forgets, and when the store
    is on (as cfg runs it, unless store_on says) store_persist.py with what it imports at once
    (measured per module in the qemu port, firmware/image/frozen_heap.json), less the core's
    modules loaded at first use (LOADED_LATER). The other groups,
    and the store's other modules, load only when configured or needed. 0 for a stock board."""
    group_names = frozen_groups(cfg)
    if not group_names:
        return 0
    if store_on is None:
        store_on = cfg.get("flash_store") or (cfg.get("persistence") and cfg.get("persistence_location"))
    frozen = frozen_files(group_names)
    held = set(group_files("core"))
    if store_on:
        held |= set(imported_at_once(STORE_AT_START))
    mods = heap_figures()["modules"]
    return sum(mods[p]["mpy"] - mods[p]["frozen"] for p in held & frozen
               if p in mods and p not in FORGOTTEN_AT_START and p not in LOADED_LATER)


def imported_at_once(name):
    """Board paths of module name and the siblings its top level imports, and theirs."""
    sources = package_modules()
    seen, todo = {name}, [name]
    while todo:
        with open(sources["ubroker/%s.py" % todo.pop()]) as f:
            for m in top_imports(f.read()):
                if m not in seen and "ubroker/%s.py" % m in sources:
                    seen.add(m)
                    todo.append(m)
    return sorted("ubroker/%s.py" % m for m in seen)


# ------------------------------------------------------------------ what an image adds

def top_imports(source):
    """The sibling modules a module's top level imports relatively (`from .x import` and
    `from . import x`), outside functions and classes."""
    found = []

    def walk(body):
        for node in body:
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found.extend([node.module] if node.module else [a.name for a in node.names])
            elif isinstance(node, (ast.If, ast.Try)):
                for part in ("body", "orelse", "finalbody"):
                    walk(getattr(node, part, []))
                for h in getattr(node, "handlers", []):
                    walk(h.body)

    walk(ast.parse(source).body)
    return found


STAND_IN = '''"""Stand-in for ubroker.{name}, which this image does not freeze: the module is
{folder}/{name}.mpy on the board (ubroker flash copies it there). The package's __path__ is
the frozen one, so it points at that folder for this one import; the module's names are then
looked up in the imported module."""
import os
import sys

import ubroker
{preload}
try:
    os.stat("{folder}/{name}.mpy")
except OSError:
    raise ImportError("ubroker.{name} is not frozen in this image and {folder}/{name}.mpy is missing: "
                      "ubroker flash copies it")
_frozen = ubroker.__path__
ubroker.__path__ = "{folder}"
del sys.modules[__name__]
try:
    _module = __import__(__name__, None, None, ("{name}",))
finally:
    ubroker.__path__ = _frozen


def __getattr__(attr):
    return getattr(_module, attr)
'''


def frozen_needs(name, frozen):
    """The frozen siblings importing module name loads at once: those its top level imports,
    and those of the left-out siblings it imports there, and so on."""
    sources = package_modules()
    needs, seen, todo = set(), {name}, [name]
    while todo:
        with open(sources["ubroker/%s.py" % todo.pop()]) as f:
            for m in top_imports(f.read()):
                if "ubroker/%s.py" % m in frozen:
                    needs.add(m)
                elif m not in seen and "ubroker/%s.py" % m in sources:
                    seen.add(m)
                    todo.append(m)
    return sorted(needs)


def stand_in(path, frozen):
    """The source of the stand-in for module path ("ubroker/sec_acl.py"), given the board
    paths the image freezes. The frozen siblings the import needs are imported first: while
    __path__ points at the folder, only the folder's modules can be loaded."""
    name = path.split("/")[1][:-3]
    needs = frozen_needs(name, frozen)
    preload = "from . import %s  # frozen, needed at once by %s\n" % (", ".join(needs), name) if needs else ""
    return STAND_IN.format(name=name, folder=FS_FOLDER, preload=preload)


def marker(group_names):
    return '"""The feature groups this ubroker firmware image freezes (ubroker firmware wrote it)."""\n' \
           'GROUPS = "%s"\n' % ",".join(group_names)


def image_extras(group_names):
    """{board path: source} the image freezes besides the groups' own files: a stand-in per
    module left out, and the marker module naming the groups."""
    frozen = frozen_files(group_names)
    out = {p: stand_in(p, frozen) for p in left_out(group_names)}
    out[MARKER + ".py"] = marker(group_names)
    return out


def write_manifest(board, group_names, out):
    """The top manifest `ubroker firmware` builds with, in out/: the board's own manifest with
    the groups, and the extras (written to out/frozen/). Returns its path."""
    port, folder = IMAGES[board]
    frozen_dir = os.path.join(out, "frozen")
    if os.path.isdir(frozen_dir):
        shutil.rmtree(frozen_dir)  # no stand-in left from an image with fewer groups
    extras = image_extras(group_names)
    for rel, text in extras.items():
        dst = os.path.join(frozen_dir, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "w") as f:
            f.write(text)
    stand_ins = sorted(p.split("/", 1)[1] for p in extras if p.startswith("ubroker/"))
    lines = ["# Written by `ubroker firmware --board %s`: the board's manifest with its groups, and" % board,
             "# what the image freezes besides (host_tools/ubroker_tools/firmware.py, image_extras).",
             "include(%r, groups=%r)" % (os.path.join(IMAGE_DIR, folder, "manifest.py"), ",".join(group_names)),
             "module(%r, base_path=%r)" % (MARKER + ".py", frozen_dir)]
    if stand_ins:
        lines.append("package('ubroker', files=%r, base_path=%r)" % (stand_ins, frozen_dir))
    path = os.path.join(out, "manifest.py")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------ prerequisites

def source_version(tree):
    """'1.28.0' from a MicroPython tree's py/mpconfig.h, or None."""
    try:
        with open(os.path.join(tree, "py", "mpconfig.h")) as f:
            text = f.read()
    except OSError:
        return None
    parts = [re.search(r"#define MICROPY_VERSION_%s\s+\(?(\d+)" % k, text) for k in ("MAJOR", "MINOR", "MICRO")]
    return ".".join(m.group(1) for m in parts) if all(parts) else None


def _tool(name, env, apt_key=None):
    if shutil.which(name, path=env.get("PATH")):
        return None
    return "%s is not on PATH: apt-get install %s" % (name, APT[apt_key or name])


def _cmake_version(env):
    try:
        out = subprocess.run(["cmake", "--version"], capture_output=True, text=True, env=env, timeout=30).stdout
    except OSError:
        return None
    m = re.search(r"(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _newlib(env):
    """Whether arm-none-eabi-gcc finds newlib's libc.a (it prints the bare name when not)."""
    try:
        out = subprocess.run(["arm-none-eabi-gcc", "-print-file-name=libc.a"], capture_output=True, text=True,
                             env=env, timeout=30).stdout.strip()
    except OSError:
        return False
    return os.path.isabs(out) and os.path.exists(out)


def _picotool(tree, env):
    """None if the pico-sdk's build will find picotool 2.x, else what to do."""
    places = []
    if env.get("picotool_DIR"):
        places.append(env["picotool_DIR"])
    fetch = env.get("PICOTOOL_FETCH_FROM_GIT_PATH")
    if fetch:
        places.append(os.path.join(fetch, "picotool"))
    places += ["/usr/local/lib/cmake/picotool", "/usr/lib/cmake/picotool"]
    if any(os.path.exists(os.path.join(p, "picotoolConfig.cmake")) for p in places):
        return None
    if fetch:
        return None  # the pico-sdk downloads picotool into it and builds it (build_image says so)
    return "picotool 2.x (the pico-sdk makes the .uf2 with it) is not installed: " + PICOTOOL_HOW % tree


def missing(board, tree, env=None):
    """What the build of board's image lacks, one line each naming the tool, environment
    variable or submodule path and how to get it; [] when nothing is."""
    env = dict(os.environ if env is None else env)
    port, folder = IMAGES[board]
    out = []
    if not os.path.isfile(os.path.join(tree, "py", "mpconfig.h")):
        return ["no MicroPython source tree in %s (no py/mpconfig.h): git clone -b v1.28.0 "
                "https://github.com/micropython/micropython %s" % (tree, tree)]
    if not os.path.isfile(os.path.join(tree, "ports", port, "Makefile")):
        out.append("%s has no ports/%s/Makefile" % (tree, port))
    for need in SUBMODULES[port]:
        if not os.path.exists(os.path.join(tree, need)):
            sub = "/".join(need.split("/")[:2])
            out.append("submodule %s is empty (no %s): git -C %s submodule update --init %s"
                       % (sub, need, tree, sub))
    for tool in ("make", "cc"):
        out.append(_tool(tool, env))
    if port == "rp2":
        out.append(_tool("arm-none-eabi-gcc", env))
        if shutil.which("arm-none-eabi-gcc", path=env.get("PATH")) and not _newlib(env):
            out.append("newlib for arm-none-eabi (libc.a) is not installed: apt-get install %s" % APT["newlib"])
        if shutil.which("cmake", path=env.get("PATH")) is None:
            out.append(_tool("cmake", env))
        else:
            v = _cmake_version(env)
            if v is not None and v < (3, 19):  # UBROKER_RPI_PICO_W/mpconfigboard.cmake: cmake_language(DEFER)
                out.append("cmake %d.%d is too old: 3.19 or newer is needed (apt-get install cmake)" % v)
        out.append(_picotool(tree, env))
    else:
        idf = env.get("IDF_PATH")
        if not idf:
            out.append("IDF_PATH is not set: install ESP-IDF v5.5.1 (MicroPython v1.28.0 supports v5.3 to v5.5.1; "
                       "git clone -b v5.5.1 --recursive https://github.com/espressif/esp-idf.git, then ./install.sh "
                       "esp32) and run `. $IDF_PATH/export.sh` in this shell")
        elif not os.path.isfile(os.path.join(idf, "tools", "idf.py")):
            out.append("IDF_PATH=%s has no tools/idf.py: point it at an ESP-IDF v5.5.1 checkout" % idf)
        if idf and shutil.which("idf.py", path=env.get("PATH")) is None:
            out.append("idf.py is not on PATH: run `. $IDF_PATH/export.sh` in this shell")
    return [m for m in out if m]


# ------------------------------------------------------------------ build

def default_out(board):
    return os.path.join(paths.ROOT, "build", "firmware", board)


def make_env(tree):
    """The environment make runs in: the tree's own mpy-cross for the frozen code (its .mpy
    version is the firmware's), and no BUILD, which mpy-cross's Makefile would take too."""
    env = dict(os.environ, MICROPY_MPYCROSS=os.path.join(tree, "mpy-cross", "build", "mpy-cross"))
    env.pop("BUILD", None)
    return env


def commands(board, tree, out, manifest, jobs):
    """The make commands that build the image, in order."""
    port, folder = IMAGES[board]
    board_dir = os.path.join(IMAGE_DIR, folder)
    return [
        ["make", "-C", os.path.join(tree, "mpy-cross"), "-j%d" % jobs],
        ["make", "-C", os.path.join(tree, "ports", port), "BOARD_DIR=" + board_dir,
         "BUILD=" + os.path.join(out, "build"), "FROZEN_MANIFEST=" + manifest, "-j%d" % jobs],
    ]


def gc_heap(elf):
    """The rp2 image's GC heap in bytes (its linker script gives the heap what RAM is left:
    __GcHeapEnd - __GcHeapStart), or None without arm-none-eabi-nm."""
    try:
        out = subprocess.run(["arm-none-eabi-nm", elf], capture_output=True, text=True, timeout=60).stdout
    except OSError:
        return None
    sym = {p[2]: int(p[0], 16) for p in (line.split() for line in out.splitlines()) if len(p) == 3}
    if "__GcHeapEnd" in sym and "__GcHeapStart" in sym:
        return sym["__GcHeapEnd"] - sym["__GcHeapStart"]
    return None


def build_image(board, tree, out=None, group_names=None, jobs=None, say=print, verbose=False):
    """Build the image into out (group_names: default, the profile's `frozen` line); returns {"image": path, "size": bytes, "flash": bytes,
    "heap": GC heap bytes or None, "groups": (...)}. FirmwareError when something is missing
    or the build fails (with the end of its log)."""
    tree = os.path.abspath(os.path.expanduser(tree))
    group_names = group_names or frozen_groups(profiles.load_board(board))
    lacking = missing(board, tree)
    if lacking:
        raise FirmwareError("cannot build the %s image; missing:\n  " % board + "\n  ".join(lacking))
    version = source_version(tree)
    if version and not version.startswith(MICROPYTHON + "."):
        say("note: %s is MicroPython %s; the board definitions are written for %s.x" % (tree, version, MICROPYTHON))
    fetch = os.environ.get("PICOTOOL_FETCH_FROM_GIT_PATH")
    if IMAGES[board][0] == "rp2" and fetch and not os.path.exists(os.path.join(fetch, "picotool")):
        say("note: no picotool in PICOTOOL_FETCH_FROM_GIT_PATH=%s: the pico-sdk will download it from GitHub and "
            "build it there (this needs network access)" % fetch)
    out = os.path.abspath(out or default_out(board))
    os.makedirs(out, exist_ok=True)
    manifest = write_manifest(board, group_names, out)
    log_path = os.path.join(out, "build.log")
    env = make_env(tree)
    with open(log_path, "w") as log:
        for cmd in commands(board, tree, out, manifest, jobs or os.cpu_count() or 2):
            say("$ " + " ".join(cmd))
            log.write("$ %s\n" % " ".join(cmd))
            log.flush()
            r = subprocess.run(cmd, env=env, stdout=None if verbose else log, stderr=subprocess.STDOUT)
            if r.returncode != 0:
                log.close()
                with open(log_path) as f:
                    tail = f.read()[-3000:]
                raise FirmwareError("the build failed (exit %d); the end of %s:\n%s" % (r.returncode, log_path, tail))
    port, _ = IMAGES[board]
    image_name, flash_name = OUTPUTS[port]
    built = os.path.join(out, "build")
    shutil.copyfile(os.path.join(built, image_name), os.path.join(out, image_name))
    heap = gc_heap(os.path.join(built, "firmware.elf")) if port == "rp2" else None
    return {"image": os.path.join(out, image_name), "size": os.path.getsize(os.path.join(out, image_name)),
            "flash": os.path.getsize(os.path.join(built, flash_name)), "heap": heap, "groups": group_names}


# ------------------------------------------------------------------ command line

def add_parser(sub):
    p = sub.add_parser("firmware", help="build a firmware image with the broker frozen in (MicroPython source)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--board", required=True, help="an image profile: %s" % ", ".join(sorted(IMAGES)))
    p.add_argument("--micropython", required=True, metavar="DIR", help="MicroPython source tree (v1.28.0)")
    p.add_argument("--out", help="output folder (default build/firmware/BOARD)")
    p.add_argument("--groups", help="feature groups to freeze, comma-separated (default: the profile's `frozen` "
                                    "line); core is always one")
    p.add_argument("-j", "--jobs", type=int, help="parallel make jobs (default: the CPU count)")
    p.add_argument("-v", "--verbose", action="store_true", help="show the build's output (default: in build.log)")
    p.set_defaults(func=main)


def main(args):
    if args.board not in IMAGES:
        print("ubroker firmware: no image for board %r; boards with one: %s"
              % (args.board, ", ".join(sorted(IMAGES))), file=sys.stderr)
        return 2
    try:
        profile = profiles.load_board(args.board)
        planned = frozen_groups(profile)
        chosen = parse_groups(args.groups, "--groups") if args.groups else planned
        if set(chosen) != set(planned):
            print("note: %s says `frozen %s`; `ubroker flash` refuses an image whose groups differ from its "
                  "profile's, so flash this one with a profile that says `frozen %s`"
                  % (args.board, ",".join(planned), ",".join(chosen)))
        r = build_image(args.board, args.micropython, args.out, chosen, args.jobs, verbose=args.verbose)
    except (FirmwareError, profiles.UnknownBoard, profiles.fwconfig().ConfigError) as e:
        print("ubroker firmware: %s" % e, file=sys.stderr)
        return 1
    print("built %s: %s, %d bytes (%d bytes of flash); frozen: %s"
          % (args.board, os.path.relpath(r["image"]), r["size"], r["flash"], ", ".join(r["groups"])))
    if r["heap"] is not None:
        print("GC heap %d bytes (what RAM the image leaves the interpreter)" % r["heap"])
    if os.path.exists(HEAP_FIGURES) and set(r["groups"]) == set(planned):
        print("heap the frozen code leaves free at start: %d bytes (32-bit, %s)"
              % (frozen_saving(profile), os.path.relpath(HEAP_FIGURES)))
    return 0
