# ruff: noqa: F821  (package(), module() and options: the manifest API of MicroPython's makemanifest.py)
"""Feature group `core`: the modules every broker loads, and the board entry. Frozen, their
bytecode stays in flash; only the objects a module makes when it is imported (its globals,
functions, classes) take heap.

The core is every module of firmware/ubroker/ that no feature group claims by the prefix of
its name (docs/internals.md, "Layout"), so a new core module is frozen without an edit here.
firmware/main.py is frozen as main.py: a board runs a frozen main.py at boot in preference
to one on its filesystem (MicroPython's pyexec_file_if_exists)."""

import os

options.defaults(opt=0)  # mpy-cross -O level: the board manifest passes its profile's opt_level

FEATURE_PREFIXES = ("store_", "sec_", "bridge", "sensor", "v5_", "ws_", "web")  # the PREFIX of each other manifest
CORE = sorted(f for f in os.listdir("../ubroker") if f.endswith(".py") and not f.startswith(FEATURE_PREFIXES))

package("ubroker", files=CORE, base_path="..", opt=options.opt)
module("main.py", base_path="..", opt=options.opt)
