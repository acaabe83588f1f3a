# ruff: noqa: F821  (package() and options: the manifest API of MicroPython's makemanifest.py)
"""Feature group `security`: the password and ACL files, password checks, access rules,
the connection gate and TLS contexts. Loaded only when the config asks for them.
Every module of firmware/ubroker/ whose name starts with `sec_`."""

import os

options.defaults(opt=0)  # mpy-cross -O level: the board manifest passes its profile's opt_level

PREFIX = "sec_"
FILES = sorted(f for f in os.listdir("../ubroker") if f.startswith(PREFIX) and f.endswith(".py"))

package("ubroker", files=FILES, base_path="..", opt=options.opt)
