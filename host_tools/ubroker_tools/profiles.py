"""Board profiles and user configs, read with the firmware's own parser (firmware/ubroker/
config.py) so that the host tools report a mistake with the same line number as the board."""

import os
import sys

from . import paths

# Keys every board profile must set (the limits are the ones budget.py prices).
REQUIRED = (
    "board", "description", "arch", "heap_budget",
    "max_connections", "max_sessions", "max_subscriptions", "max_subscriptions_per_client",
    "max_inflight_messages", "max_queued_messages", "max_queued_bytes", "max_packet_size",
    "max_topic_length", "max_retained_messages", "max_retained_bytes",
    "out_buffer_size", "read_buffer_size", "store_size", "flash_store", "sensor",
)

# A profile's arch: the mpy-cross -march it is compiled for ("none": plain bytecode, the unix
# port), each with the architecture code an .mpy header carries (its third byte: arch << 2 |
# sub-version; docs: reference/mpyfiles, v6.3). The one table of them: build.py and run.py
# read it here (profiles cannot import build, which imports profiles).
ARCH_CODE = {"none": 0, "x86": 1, "x64": 2, "armv6": 3, "armv6m": 4, "armv7m": 5, "armv7em": 6,
             "armv7emsp": 7, "armv7emdp": 8, "xtensa": 9, "xtensawin": 10, "rv32imc": 11}
ARCHES = tuple(ARCH_CODE)


def fwconfig():
    """The firmware's config module, imported from firmware/ under CPython."""
    if paths.FIRMWARE not in sys.path:
        sys.path.insert(0, paths.FIRMWARE)
    from ubroker import config
    return config


class UnknownBoard(Exception):
    def __init__(self, name):
        super().__init__("unknown board %r; known boards: %s" % (name, ", ".join(paths.known_boards())))


def board_path(name):
    path = paths.board_file(name)
    if not os.path.exists(path):
        raise UnknownBoard(name)
    return path


def load_board(name):
    """The board's profile as parsed settings (raises UnknownBoard or ConfigError)."""
    path = board_path(name)
    with open(path) as f:
        return fwconfig().parse(f.read(), os.path.relpath(path, paths.ROOT))


def missing_keys(profile):
    return [k for k in REQUIRED if k not in profile]


def usb_ids(profile):
    """[(vid, pid)] as ints from the profile's `usb_id VVVV:PPPP` lines."""
    out = []
    for v in profile.get("usb_id", []):
        vid, _, pid = v.partition(":")
        out.append((int(vid, 16), int(pid, 16)))
    return out
