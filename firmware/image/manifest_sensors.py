# ruff: noqa: F821  (package() and options: the manifest API of MicroPython's makemanifest.py)
"""Feature group `sensors`: local sensors published as topics (the scheduler, its set-up,
the drivers). Loaded when sensor_interval is set.
Every module of firmware/ubroker/ whose name starts with `sensor`."""

import os

options.defaults(opt=0)  # mpy-cross -O level: the board manifest passes its profile's opt_level

PREFIX = "sensor"
FILES = sorted(f for f in os.listdir("../ubroker") if f.startswith(PREFIX) and f.endswith(".py"))

package("ubroker", files=FILES, base_path="..", opt=options.opt)
