"""ubroker: an MQTT 3.1.1 broker for MicroPython gateways (ESP32, Pico W, the unix port)."""

VERSION = "0.1.0"


def log(msg):
    """A log line to stderr, prefixed so that it stands out in a board's serial output. Here,
    not in a module of its own: a module costs about 1 kB of heap on a board for its object,
    globals and names, whatever it holds."""
    import sys

    print("ubroker:", msg, file=sys.stderr)


def forget(name):
    """Let ubroker.NAME leave the heap: start-up code (the config parser, the password and
    access files, TLS contexts, sensor set-up) is not needed once its work is done, and on a
    board its bytecode and tables are heap better spent on clients. Nothing keeps a reference
    to it afterwards; an import would load it again."""
    import sys

    sys.modules.pop("ubroker." + name, None)
    g = globals()
    if name in g:
        del g[name]
