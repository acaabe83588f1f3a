# ruff: noqa: F821  (include(), require() and options: the manifest API of MicroPython's makemanifest.py)
"""What ubroker's ESP32 image freezes: MicroPython's ESP32_GENERIC set (the port's default
manifest), then the broker's feature groups: all of them, unless `ubroker firmware --groups`
includes this manifest with fewer."""

# opt: mpy-cross -O3, the esp32-image profile's opt_level (no line numbers in tracebacks)
options.defaults(groups="core,store,security,bridge,sensors,v5,web,ws", opt=3)

include("$(PORT_DIR)/boards/manifest.py")
for group in options.groups.split(","):
    include("../manifest_%s.py" % group, opt=options.opt)
