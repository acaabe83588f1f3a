# ruff: noqa: F821  (package() and options: the manifest API of MicroPython's makemanifest.py)
"""Feature group `web`: the status page's server side (a plain GET on a WebSockets
listener: the page, /status.json, /metrics). Loaded at the first such request. The page
itself (ubroker_web/status.html.gz) is data, not a module: it stays on the filesystem.
Every module of firmware/ubroker/ whose name starts with `web`."""

import os

options.defaults(opt=0)  # mpy-cross -O level: the board manifest passes its profile's opt_level

PREFIX = "web"
FILES = sorted(f for f in os.listdir("../ubroker") if f.startswith(PREFIX) and f.endswith(".py"))

package("ubroker", files=FILES, base_path="..", opt=options.opt)
