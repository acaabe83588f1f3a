"""Where the checkout's parts are, seen from the installed (editable) host tools."""

import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# UBROKER_FIRMWARE points the host tools at another firmware tree (a git worktree under test).
FIRMWARE = os.environ.get("UBROKER_FIRMWARE") or os.path.join(ROOT, "firmware")
BOARDS = os.path.join(ROOT, "boards")


def board_file(name):
    return os.path.join(BOARDS, name + ".conf")


def known_boards():
    return sorted(f[:-5] for f in os.listdir(BOARDS) if f.endswith(".conf"))


def micropython(explicit=None):
    """The unix-port interpreter: the one asked for, else the venv's, else any on PATH."""
    if explicit:
        return explicit
    here = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(here):
        return here
    return shutil.which("micropython")
