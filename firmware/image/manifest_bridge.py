# ruff: noqa: F821  (package() and options: the manifest API of MicroPython's makemanifest.py)
"""Feature group `bridge`: the bridge to an upstream broker. Loaded when the config has a
`connection`.
Every module of firmware/ubroker/ whose name starts with `bridge`."""

import os

options.defaults(opt=0)  # mpy-cross -O level: the board manifest passes its profile's opt_level

PREFIX = "bridge"
FILES = sorted(f for f in os.listdir("../ubroker") if f.startswith(PREFIX) and f.endswith(".py"))

package("ubroker", files=FILES, base_path="..", opt=options.opt)
