# ruff: noqa: F821  (include(), require() and options: the manifest API of MicroPython's makemanifest.py)
"""What ubroker's Pico W image freezes: MicroPython's RPI_PICO_W set less aioble (the image has
no Bluetooth), then the broker's feature groups: all of them, unless `ubroker firmware --groups`
includes this manifest with fewer."""

# opt: mpy-cross -O3, the rp2-pico-w-image profile's opt_level (no line numbers in tracebacks)
options.defaults(groups="core,store,security,bridge,sensors,v5,web,ws", opt=3)

include("$(PORT_DIR)/boards/manifest.py")
require("bundle-networking")
for group in options.groups.split(","):
    include("../manifest_%s.py" % group, opt=options.opt)
