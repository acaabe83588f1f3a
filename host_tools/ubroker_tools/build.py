"""`ubroker build --board B`: the firmware compiled with mpy-cross for the board's
architecture into build/B/, laid out as it will sit on the board's filesystem:

    main.py          two lines: `import ubmain` (the board runs main.py at boot; .mpy it cannot)
    ubmain.mpy       firmware/main.py compiled: network, config, broker, restart on crash
    ubroker/*.mpy    the broker package
    board.conf       the board profile
    ubroker.conf     a commented default config (flash keeps the board's own if it has one)

For a board running ubroker's firmware image (a profile with a `frozen` line, docs/
firmware-image.md) the frozen groups are left out, the entry too (the image runs its frozen
main.py), and the package's other modules go to lib/ubroker/, where the image's stand-ins
import them from (firmware.py).
"""

import argparse
import os
import shutil
import subprocess
import sys

from . import firmware, paths, profiles

HELP = """Compile the firmware with mpy-cross for a board into build/BOARD/.

example:
  ubroker build --board esp32          # xtensawin .mpy files in build/esp32/
  ubroker build --board unix -v        # plain bytecode, listing every file
  ubroker build --board rp2-pico-w-image  # only what the board's firmware image does not freeze
"""

MAIN_STUB = "# Runs at boot: the compiled entry (ubmain.mpy) brings up the network and the broker.\nimport ubmain\n"


EMITS = ("bytecode", "native")  # a profile's `emit`
OPT_LEVELS = (0, 1, 2, 3)  # a profile's `opt_level`: mpy-cross -O (3: no line numbers kept)


def header_byte(arch):
    """The expected third header byte of an .mpy compiled for arch."""
    return 0 if arch == "none" else (profiles.ARCH_CODE[arch] << 2) | 3


def add_parser(sub):
    p = sub.add_parser("build", help="compile the firmware for a board (mpy-cross)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--board", required=True, help="board profile name (see boards/)")
    p.add_argument("--out", help="output folder (default build/BOARD)")
    p.add_argument("-v", "--verbose", action="store_true", help="list every file and its size")
    p.set_defaults(func=main)


def sources():
    """(source path, name on the board without extension) for everything compiled on a
    stock board."""
    pkg = os.path.join(paths.FIRMWARE, "ubroker")
    out = [(os.path.join(pkg, f), "ubroker/" + f[:-3]) for f in sorted(os.listdir(pkg)) if f.endswith(".py")]
    out.append((os.path.join(paths.FIRMWARE, "main.py"), "ubmain"))
    return out


def mpy_cross_cmd():
    return [sys.executable, "-m", "mpy_cross"]


# A module written in viper (firmware/ubroker/ws_unmask.py) is machine code or nothing.
_MACHINE_CODE_ONLY = "@micropython.viper"
_NO_MACHINE_CODE = "raise ImportError\n"  # no message: its words would be interned for good


def compile_one(src, dst, arch, source_name, native=False, opt=0):
    """native: every function as machine code for arch (mpy-cross -X emit=native). opt:
    mpy-cross -O level (the profile's opt_level). A module only machine code can be is, for
    arch none, compiled as one line raising ImportError: its importer falls back (ws_frame.py)."""
    with open(src) as f:
        stub = arch == "none" and _MACHINE_CODE_ONLY in f.read()
    if stub:
        src = dst + ".py"
        with open(src, "w") as f:
            f.write(_NO_MACHINE_CODE)
    try:
        _mpy_cross(src, dst, arch, source_name, native, opt)
    finally:
        if stub:
            os.remove(src)


def _mpy_cross(src, dst, arch, source_name, native, opt):
    cmd = mpy_cross_cmd() + ["-o", dst, "-s", source_name]
    if arch != "none":
        cmd.append("-march=" + arch)
    if native:
        cmd += ["-X", "emit=native"]
    if opt:
        cmd.append("-O%d" % opt)
    cmd.append(src)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise BuildError("mpy-cross failed on %s:\n%s"
                         % (os.path.relpath(src, paths.ROOT), (r.stderr or r.stdout).strip()))


class BuildError(Exception):
    pass


def code_options(profile, board):
    """(arch, emit, opt_level) of a board profile, checked: what mpy-cross is asked for, by
    `ubroker build` and `ubroker run` alike. Raises BuildError naming the key."""
    arch = profile.get("arch", "none")
    if arch not in profiles.ARCH_CODE:
        raise BuildError("%s: arch %r is not one mpy-cross knows (%s)"
                         % (board, arch, ", ".join(sorted(profiles.ARCHES))))
    emit = profile.get("emit", "bytecode")
    if emit not in EMITS:
        raise BuildError("%s: emit %r is not one of %s" % (board, emit, ", ".join(EMITS)))
    opt = profile.get("opt_level", 0)
    if opt not in OPT_LEVELS:
        raise BuildError("%s: opt_level %r is not one of %s" % (board, opt, ", ".join(map(str, OPT_LEVELS))))
    return arch, emit, opt


def on_board(name, group_names, frozen):
    """Where a compiled source goes on the board (without extension), or None when the
    board's firmware image freezes it. name is as sources() gives it."""
    if not group_names:
        return name
    if name == "ubmain":  # firmware/main.py, frozen as main.py
        return None if "main.py" in frozen else name
    if name + ".py" in frozen:
        return None
    return firmware.FS_FOLDER + "/" + name.split("/", 1)[1]


def build(board, out=None):
    """Build what goes on the board's filesystem; returns (out folder, [(relative path, size)])."""
    profile = profiles.load_board(board)
    arch, emit, opt = code_options(profile, board)
    try:
        group_names = firmware.frozen_groups(profile)
    except firmware.FirmwareError as e:
        raise BuildError(str(e))
    frozen = firmware.frozen_files(group_names)
    # With arch none (the unix profile) the machine is not known until run time: bytecode
    # here; `ubroker run` compiles native code for the micropython it runs.
    native = emit == "native" and arch != "none"
    out = out or os.path.join(paths.ROOT, "build", board)
    if os.path.isdir(out):
        shutil.rmtree(out)  # no stale modules from files since deleted
    os.makedirs(out)
    files = []
    for src, name in sources():
        where = on_board(name, group_names, frozen)
        if where is None:
            continue
        dst = os.path.join(out, where + ".mpy")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        compile_one(src, dst, arch, name.split("/")[-1] + ".py", native, opt)
        files.append(where + ".mpy")
    if "main.py" not in frozen:
        with open(os.path.join(out, "main.py"), "w") as f:
            f.write(MAIN_STUB)
        files.append("main.py")
    shutil.copyfile(profiles.board_path(board), os.path.join(out, "board.conf"))
    files.append("board.conf")
    from .config import default_config
    with open(os.path.join(out, "ubroker.conf"), "w") as f:
        f.write(default_config(board))
    files.append("ubroker.conf")
    from . import webpage  # the status page a websockets listener serves (docs/status-page.md)
    files.append(webpage.install(out))
    return out, [(name, os.path.getsize(os.path.join(out, name))) for name in files]


def main(args):
    try:
        out, files = build(args.board, args.out)
    except profiles.UnknownBoard as e:
        print("ubroker build: %s" % e, file=sys.stderr)
        return 2
    except (BuildError, profiles.fwconfig().ConfigError) as e:
        print("ubroker build: %s" % e, file=sys.stderr)
        return 1
    if args.verbose:
        for name, size in files:
            print("  %7d  %s" % (size, name))
    total = sum(s for _, s in files)
    code = sum(s for n, s in files if n.endswith(".mpy"))
    print("built %s: %d files, %d bytes (%d bytes of .mpy code) in %s"
          % (args.board, len(files), total, code, os.path.relpath(out)))
    group_names = firmware.frozen_groups(profiles.load_board(args.board))
    if group_names:
        print("the rest is frozen in the board's firmware image: %s" % ", ".join(group_names))
    return 0
