# ruff: noqa: F821  (package() and options: the manifest API of MicroPython's makemanifest.py)
"""Feature group `ws`: MQTT over WebSockets (the handshake, frames in and out). Loaded for a
listener with `protocol websockets`.
Every module of firmware/ubroker/ whose name starts with `ws_`; a group with none yet
freezes nothing, and the first one is frozen here without an edit."""

import os

options.defaults(opt=0)  # mpy-cross -O level: the board manifest passes its profile's opt_level

PREFIX = "ws_"
FILES = sorted(f for f in os.listdir("../ubroker") if f.startswith(PREFIX) and f.endswith(".py"))

package("ubroker", files=FILES, base_path="..", opt=options.opt)
