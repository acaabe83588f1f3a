# ruff: noqa: F821  (package() and options: the manifest API of MicroPython's makemanifest.py)
"""Feature group `v5`: MQTT 5 (properties, reason codes, delivery to v5 subscribers), loaded
at the first CONNECT at protocol level 5 (docs/mqtt5.md).
Every module of firmware/ubroker/ whose name starts with `v5_`."""

import os

options.defaults(opt=0)  # mpy-cross -O level: the board manifest passes its profile's opt_level

PREFIX = "v5_"
FILES = sorted(f for f in os.listdir("../ubroker") if f.startswith(PREFIX) and f.endswith(".py"))

package("ubroker", files=FILES, base_path="..", opt=options.opt)
