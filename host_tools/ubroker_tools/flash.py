"""`ubroker flash`: build the firmware for a board, then with mpremote copy to the board only
the files whose sha256 differs from the board's copy, write the config and the files it names
(users, access rules, TLS), and reset the board.

Each step talks to the board through mpremote (as a subprocess, with `resume`: no soft reset
on connect, which the unix port and ubroker vboard need, and which real boards do not mind).

A board running ubroker's firmware image (a profile with a `frozen` line, docs/
firmware-image.md) gets only what the image does not freeze: the config, the profile, and the
modules of the groups it leaves out (in lib/ubroker/). What a stock flash left there, which
would stand before the frozen package on sys.path, is removed: ubroker/, ubmain.mpy and the
two-line main.py (the image runs its frozen main.py).
"""

import argparse
import ast
import hashlib
import os
import posixpath
import subprocess
import sys

from . import build as buildmod
from . import config as configmod
from . import firmware, paths, profiles

HELP = """Build the firmware for a board and copy it with mpremote (only what changed), then
write the config and reset the board so that the broker starts.

With --config, the files the config names are copied too (only what changed): password_file,
acl_file, certfile, keyfile, cafile and a bridge's bridge_cafile. The config names each file's
path on the board (a relative path is in the board's root folder, where the broker runs);
flash takes the file from the same path relative to the config file's folder (an absolute
path as it is). So keep them beside the config: `password_file users.txt` copies the
users.txt next to ubroker.conf to /users.txt on the board. A named file missing on this
computer stops the flash before anything is copied, with the config line that names it.

example:
  ubroker passwd users.txt alice                  # beside ubroker.conf, which says `password_file users.txt`
  ubroker flash --board esp32 --port auto --config ubroker.conf
  ubroker flash --board rp2-pico-w --port /dev/ttyACM0
  ubroker flash --board rp2-pico-w-image --port auto   # a Pico W running ubroker's firmware image
  ubroker flash --board unix --port /tmp/board.tty      # a virtual board (ubroker vboard)
"""

MIN_VERSION = (1, 23)  # first MicroPython that loads .mpy v6.3 (mpy-cross 1.29 writes that)
TIMEOUT = 60
PROBE_TIMEOUT = 10  # a board's REPL answers in well under a second
# Make the folders the files go to, and hash the board's copies: prints the repr of
# {path: hex sha256 or None}, and of {folder: its files, or None} for the folders whose files
# the build may no longer have (ubroker/, and lib/ubroker/ on an image board).
HASH_SCRIPT = """
import os, hashlib, binascii
def _h(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    h = hashlib.sha256()
    b = bytearray(512)
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(b[:n])
    f.close()
    return binascii.hexlify(h.digest()).decode()
for d in %r:
    try:
        os.mkdir(d)
    except OSError:
        pass
def _ls(d):
    try:
        return os.listdir(d)
    except OSError:
        return None
print('UBHASH', repr({p: _h(p) for p in %r}))
print('UBLIST', repr({d: _ls(d) for d in %r}))
"""
PROBE = ("import sys; print('UBPROBE', repr((sys.platform, tuple(sys.implementation.version[:3]), "
         "getattr(sys.implementation, '_mpy', 0))))")
# On an image board: the groups its firmware freezes, from the frozen module ubroker_image,
# imported with the filesystem's folders off sys.path (so no file there can stand in for it).
IMAGE_PROBE = """
_p = sys.path[:]
sys.path[:] = [d for d in _p if d not in ('', '.', '/')]
try:
    import %s as _m
    print('UBIMAGE', repr(_m.GROUPS))
except ImportError:
    print('UBIMAGE None')
finally:
    sys.path[:] = _p
    sys.modules.pop('%s', None)
""" % (firmware.MARKER, firmware.MARKER)
# What a stock flash leaves that an image board must not keep (the package folder is removed
# with everything in it).
STOCK_LEFTOVERS = ("ubmain.mpy", "main.py")


class FlashError(Exception):
    pass


def add_parser(sub):
    p = sub.add_parser("flash", help="build and copy the firmware to a board (mpremote)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--board", required=True, help="board profile name (see boards/)")
    p.add_argument("--port", default="auto", help="serial port, socket://, rfc2217:// or auto (default)")
    p.add_argument("--config", help="config file to write to the board as ubroker.conf (checked first)")
    p.add_argument("--no-reset", action="store_true", help="do not reset the board afterwards")
    p.set_defaults(func=main)


# ------------------------------------------------------------------ finding the board

def find_port(board):
    """The one serial port whose USB id is in a board profile; FlashError otherwise."""
    from serial.tools import list_ports

    ids = {}
    for name in paths.known_boards():
        try:
            for vp in profiles.usb_ids(profiles.load_board(name)):
                ids.setdefault(vp, []).append(name)
        except Exception:
            continue
    mine = set(profiles.usb_ids(profiles.load_board(board)))
    ports = list(list_ports.comports())
    found = [p for p in ports if p.vid is not None and (p.vid, p.pid) in mine]
    if not found:
        seen = ", ".join("%s (%s)" % (p.device, "%04x:%04x" % (p.vid, p.pid) if p.vid is not None else "no USB id")
                         for p in ports) or "none"
        raise FlashError("no %s board found on USB (looked for %s; serial ports seen: %s). Plug the board in with a "
                         "data cable, or pass --port PORT (e.g. /dev/ttyUSB0, COM3)."
                         % (board, ", ".join("%04x:%04x" % vp for vp in sorted(mine)) or "no usb_id in the profile",
                            seen))
    if len(found) > 1:
        raise FlashError("several boards found: %s. Unplug the others, or pass --port with one of them."
                         % ", ".join("%s (%s)" % (p.device, p.description) for p in found))
    return found[0].device


# ------------------------------------------------------------------ mpremote

def mpremote(port, *args, timeout=TIMEOUT):
    cmd = [sys.executable, "-m", "mpremote", "connect", port, "resume"] + list(args)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FlashError("mpremote did not finish within %d s on %s. Is the board busy or not running MicroPython? "
                         "Press its reset button and try again." % (timeout, port))
    return r.returncode, r.stdout, r.stderr


def marked(out, mark):
    for line in out.splitlines():
        if line.startswith(mark + " "):
            return ast.literal_eval(line[len(mark) + 1:])
    return None


def probe(port, profile, image=False):
    """(platform, version) of the board's MicroPython, checked against the profile; with
    image, also the groups its firmware image freezes (None: it runs no ubroker image)."""
    try:
        rc, out, err = mpremote(port, "exec", PROBE + (IMAGE_PROBE if image else ""), timeout=PROBE_TIMEOUT)
    except FlashError:
        rc, out, err = 1, "", "no answer within %d s" % PROBE_TIMEOUT
    info = marked(out, "UBPROBE")
    if rc != 0 or info is None:
        text = (err or out).strip().splitlines()
        raise FlashError("no MicroPython REPL answered on %s (%s). Install MicroPython on the board first "
                         "(ESP32: esptool.py write_flash; Pico W: hold BOOTSEL, copy the .uf2), then run this again."
                         % (port, text[-1] if text else "no answer"))
    platform, version, mpy = info
    if tuple(version[:2]) < MIN_VERSION:
        raise FlashError("the board runs MicroPython %s; ubroker needs %d.%d or newer (its .mpy files are v6.3). "
                         "Update the board's MicroPython firmware, then flash again."
                         % (".".join(map(str, version)), MIN_VERSION[0], MIN_VERSION[1]))
    expect = {"none": "linux", "x64": "linux"}.get(profile["arch"])
    if expect and platform != expect:
        raise FlashError("board %s is the unix port, but %s runs MicroPython for %s; pick its profile with --board"
                         % (profile["board"], port, platform))
    if profile["arch"].startswith("xtensa") and platform != "esp32" or \
            profile["arch"].startswith("armv") and platform != "rp2":
        raise FlashError("the board on %s runs MicroPython for %s, not for a %s board; pick its profile with --board"
                         % (port, platform, profile["board"]))
    if image:
        return platform, version, marked(out, "UBIMAGE")
    return platform, version


def check_image(board, port, on_board, group_names):
    """FlashError unless the board's firmware is the ubroker image freezing group_names."""
    if on_board is None:
        raise FlashError("the board on %s runs MicroPython without ubroker's firmware image (no frozen %s "
                         "module). Build it (ubroker firmware --board %s --micropython DIR) and install it (rp2: "
                         "hold BOOTSEL and copy firmware.uf2 to the drive; esp32: esptool.py write_flash 0x1000 "
                         "firmware.bin), then flash again; or flash the stock profile (--board %s)"
                         % (port, firmware.MARKER, board, board[:-len("-image")] if board.endswith("-image") else
                            "of its board"))
    have = set(g for g in on_board.split(",") if g)
    if have != set(group_names):
        raise FlashError("the board's firmware image freezes %s, but profile %s says `frozen %s`: flash it with "
                         "the profile of that image, or build and install the image the profile names "
                         "(ubroker firmware --board %s --micropython DIR)"
                         % (on_board, board, ",".join(group_names), board))


def stale_files(local, listing, have, group_names):
    """The board files to remove: ones in the folders the build fills that it no longer has,
    and on an image board what a stock flash left (STOCK_LEFTOVERS, the two-line main.py only
    as flash wrote it: a main.py of the user's own stays)."""
    if not group_names:
        return ["ubroker/" + f for f in (listing.get("ubroker") or []) if "ubroker/" + f not in local]
    folder = firmware.FS_FOLDER
    out = [folder + "/" + f for f in (listing.get(folder) or []) if folder + "/" + f not in local]
    out += ["ubroker/" + f for f in (listing.get("ubroker") or [])]
    stub = hashlib.sha256(buildmod.MAIN_STUB.encode()).hexdigest()
    if have.get("ubmain.mpy") is not None:
        out.append("ubmain.mpy")
    if have.get("main.py") == stub:
        out.append("main.py")
    return out


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# ------------------------------------------------------------------ flash

def named_files(config):
    """{board path: (host path, key, line)} for each file the config names."""
    cfgmod = profiles.fwconfig()
    with open(config) as f:
        text = f.read()
    out = {}
    for key, value, line, _ in configmod.named_files(text, cfgmod.parse(text, config)):
        out[posixpath.normpath(value)] = (configmod.host_path(value, config), key, line)
    return out


def parents(name):
    """The folders above a board path, outermost first."""
    out = []
    while True:
        name = posixpath.dirname(name)
        if name in ("", "/", "."):
            return out
        out.insert(0, name)


def flash(board, port, config=None, reset=True, say=print):
    profile = profiles.load_board(board)
    extra = {}
    if config:
        # Relative paths beside the config, for every board: that is where flash takes them.
        problems, warnings = configmod.review(board, config, beside=True)
        if problems:
            raise FlashError("the config has mistakes; nothing was copied:\n" + "\n".join(problems))
        for w in warnings:
            say(w)
        extra = named_files(config)
    group_names = firmware.frozen_groups(profile)
    out, files = buildmod.build(board)
    say("built %s: %d files, %d bytes" % (board, len(files), sum(s for _, s in files)))
    local = {name: os.path.join(out, name) for name, _ in files}
    if config:
        local["ubroker.conf"] = os.path.abspath(config)
    for name, (host, key, line) in sorted(extra.items()):
        if name in local or name.split("/")[0] == "ubroker" or name.startswith(firmware.FS_FOLDER + "/") \
                or group_names and name in STOCK_LEFTOVERS:
            raise FlashError("%s:%d: %s %s is where flash writes the firmware; name another file; nothing was copied"
                             % (config, line, key, name))
        local[name] = host
    if port == "auto":
        port = find_port(board)
        say("found %s on %s" % (board, port))
    if group_names:
        platform, version, on_board = probe(port, profile, image=True)
        check_image(board, port, on_board, group_names)
    else:
        platform, version = probe(port, profile)
    say("MicroPython %s (%s) on %s%s" % (".".join(map(str, version)), platform, port,
                                         "; its image freezes " + ", ".join(group_names) if group_names else ""))

    remote_names = sorted(local)
    made = {d for name in local for d in parents(name)}
    folders = sorted(made | ({"ubroker"} if not group_names else set()), key=lambda d: (d.count("/"), d))
    listed = ["ubroker"] + ([firmware.FS_FOLDER] if group_names else [])
    hashed = remote_names + [n for n in STOCK_LEFTOVERS if group_names and n not in local]
    rc, stdout, err = mpremote(port, "exec", HASH_SCRIPT % (folders, hashed, listed))
    have = marked(stdout, "UBHASH")
    listing = marked(stdout, "UBLIST")
    if rc != 0 or have is None or listing is None:
        raise FlashError("could not read the board's files: %s" % (err or stdout).strip())
    copy = []
    for name in remote_names:
        if name == "ubroker.conf" and not config and have.get(name) is not None:
            continue  # keep the board's own config unless --config is given
        if have.get(name) != sha256(local[name]):
            copy.append(name)
    stale = stale_files(local, listing, have, group_names)
    args = []
    for name in copy:
        if args:
            args.append("+")
        args += ["fs", "cp", local[name], ":" + name]
    for name in stale:
        if args:
            args.append("+")
        args += ["fs", "rm", ":" + name]
    if group_names and listing.get("ubroker") is not None:
        if args:
            args.append("+")
        args += ["fs", "rmdir", ":ubroker"]  # an empty ubroker/ would still hide the frozen package
    if args:
        rc, stdout, err = mpremote(port, *args, timeout=TIMEOUT + 10 * len(copy))
        if rc != 0:
            raise FlashError("copying failed: %s" % (err or stdout).strip())
    nbytes = sum(os.path.getsize(local[n]) for n in copy)
    say("copied %d file%s (%d bytes), %d unchanged, %d removed%s"
        % (len(copy), "" if len(copy) == 1 else "s", nbytes, len(remote_names) - len(copy), len(stale),
           "; config written" if "ubroker.conf" in copy else ""))
    if extra:
        say("files the config names: " + ", ".join("%s (%s)" % (name, "copied" if name in copy else "unchanged")
                                                     for name in sorted(extra)))
    if "ubroker.conf" in copy and not config:
        say("the board had no ubroker.conf: wrote the default one, which wants users.txt beside it, so the broker "
            "will not start yet. Write yours (ubroker config --board %s --init ubroker.conf), add a user with "
            "`ubroker passwd users.txt NAME`, and flash again with --config ubroker.conf" % board)
    if reset:
        # Always: connecting with mpremote interrupted the running broker (Ctrl-C), so the
        # board is reset even when nothing changed. The unix port has no machine.reset(); its soft reset ends the process, and a
        # vboard boots it again. A board's hard reset drops the USB link: do not wait for it.
        code = "import machine; machine." + ("soft_reset()" if platform == "linux" else "reset()")
        mpremote(port, "exec", "--no-follow", code, timeout=20)
        say("board reset")
    return copy, stale


def main(args):
    try:
        flash(args.board, args.port, args.config, not args.no_reset)
    except profiles.UnknownBoard as e:
        print("ubroker flash: %s" % e, file=sys.stderr)
        return 2
    except (FlashError, buildmod.BuildError, firmware.FirmwareError) as e:
        print("ubroker flash: %s" % e, file=sys.stderr)
        return 1
    return 0
