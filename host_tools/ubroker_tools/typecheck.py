"""Type-check the firmware against each board's MicroPython stubs with mypy, so that code
calling a module or function a board lacks fails on the host. The stub packages of different
boards install the same module names, so each goes into its own folder (installed on first
use with pip --target, pinned here) instead of the venv's site-packages."""

import os
import re
import subprocess
import sys

from . import paths

STDLIB_STUBS = "micropython-stdlib-stubs==1.29.0.post2"
# board -> (stub package pinned, mypy --platform = the board's sys.platform)
BOARD_STUBS = {
    "unix": ("micropython-unix-stubs==1.29.0.post1", "linux"),
    "esp32": ("micropython-esp32-stubs==1.29.0.post1", "esp32"),
    "esp32s3": ("micropython-esp32-esp32-generic-s3-stubs==1.29.0.post1", "esp32"),
    "rp2-pico-w": ("micropython-rp2-rpi-pico-w-stubs==1.29.0.post1", "rp2"),
    "rp2-pico2-w": ("micropython-rp2-rpi-pico2-w-stubs==1.29.0.post1", "rp2"),
    # ubroker's firmware images: the stock boards' MicroPython less Bluetooth, which the
    # broker does not use, so their stubs are the stock boards'
    "esp32-image": ("micropython-esp32-stubs==1.29.0.post1", "esp32"),
    "rp2-pico-w-image": ("micropython-rp2-rpi-pico-w-stubs==1.29.0.post1", "rp2"),
}
CONFIG = os.path.join(paths.ROOT, "tests", "support", "mypy_firmware.ini")
STUB_HOME = os.path.join(os.path.dirname(os.path.dirname(sys.executable)), "mpy-stubs")


class StubsUnavailable(Exception):
    pass


def stub_dir(board):
    pkg, _ = BOARD_STUBS[board]
    d = os.path.join(STUB_HOME, pkg.replace("==", "-"))
    if os.path.exists(os.path.join(d, ".complete")):
        return d
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade", "--target", d,
                        pkg, STDLIB_STUBS], capture_output=True, text=True)
    if r.returncode != 0:
        raise StubsUnavailable("pip could not install %s: %s" % (pkg, r.stderr.strip()[-500:]))
    open(os.path.join(d, ".complete"), "w").close()
    return d


def run_mypy(board, files, cwd=None):
    """(exit code, output) of mypy over files with the board's stubs as the whole standard
    library (nothing of CPython's typeshed leaks in)."""
    d = stub_dir(board)
    _, platform = BOARD_STUBS[board]
    env = dict(os.environ, MYPYPATH=d)
    cmd = [sys.executable, "-m", "mypy", "--config-file", CONFIG, "--custom-typeshed-dir", d,
           "--platform", platform, "--cache-dir", os.path.join(STUB_HOME, ".mypy_cache", board)] + list(files)
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd or paths.FIRMWARE, env=env)
    return r.returncode, r.stdout + r.stderr


FIRMWARE_ERROR = re.compile(r"^(?!/)[^:\n]+\.py:\d+: error: .*$", re.M)


def firmware_errors(output):
    """The errors mypy found in the checked files (relative paths), not the ones it reports
    inside the stub packages themselves (absolute paths; the stubs have bugs of their own)."""
    return FIRMWARE_ERROR.findall(output)
