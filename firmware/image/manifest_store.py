# ruff: noqa: F821  (package() and options: the manifest API of MicroPython's makemanifest.py)
"""Feature group `store`, the durable store: the log on flash and what is durable when.
Loaded when persistence is on.
Every module of firmware/ubroker/ whose name starts with `store_`."""

import os

options.defaults(opt=0)  # mpy-cross -O level: the board manifest passes its profile's opt_level

PREFIX = "store_"
FILES = sorted(f for f in os.listdir("../ubroker") if f.startswith(PREFIX) and f.endswith(".py"))

package("ubroker", files=FILES, base_path="..", opt=options.opt)
