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

# mpy-cross -march per profile arch; "none" compiles plain bytecode (the unix port).
ARCHES = ("none", "x64", "x86", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
          "xtensa", "xtensawin", "rv32imc")


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
