"""Start-up of the local sensors: the registry of built-in sensors by name, reading the
`sensor` lines (NAME or module.factory, then key=value options), making the drivers and
checking them. Used once by sensors.Sensors, then dropped from the heap. Imports nothing from
sensors.py: a driver that is not available raises an OSError (sensors.Unavailable is one),
and the scheduler passes in how it words an exception (why)."""

import sys

# name -> (module of this package, factory). A `sensor` line may also name any importable
# module's factory as module.factory.
BUILTIN = {
    "heap_free": ("sensor_board", "HeapFree"),
    "chip_temp": ("sensor_board", "ChipTemp"),
    "wifi_rssi": ("sensor_board", "WifiRssi"),
    "cpu_load": ("sensor_linux", "CpuLoad"),
    "cpu_temp": ("sensor_linux", "CpuTemp"),
    "mem_used": ("sensor_linux", "MemUsed"),
    "disk_used": ("sensor_linux", "DiskUsed"),
    "bme280": ("sensor_bme280", "sensors"),
}


def options(words):
    """`key=value` words as a dict; values that read as numbers (0x76 too) become numbers."""
    opts = {}
    for w in words:
        k, eq, v = w.partition("=")
        if not eq or not k or not v:
            raise ValueError("option '%s' is not key=value" % w)
        opts[k] = _number(v)
    return opts


def _number(v):
    try:
        return int(v, 0)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def factory(name):
    """(module name, the callable) a `sensor` line names: a built-in, or module.factory."""
    spec = BUILTIN.get(name)
    path = "ubroker.%s.%s" % spec if spec else name
    mod, dot, attr = path.rpartition(".")
    if not dot or not mod or not attr:
        raise ValueError("unknown sensor '%s' (built-in: %s; or module.factory)"
                         % (name, ", ".join(sorted(BUILTIN))))
    m = __import__(mod)
    for part in mod.split(".")[1:]:
        m = getattr(m, part)
    return mod, getattr(m, attr)


def _valid_topic(t):
    return t and "+" not in t and "#" not in t and "//" not in t and t[0] != "/" and t[-1] != "/"


def entries(cfg, log, now, why):
    """The scheduler's list of sensors from the settings; a line that cannot run is logged
    (why(exception) gives the reason's words) and skipped."""
    out = []
    used = set()
    before = set(sys.modules)
    prefix = cfg.get("sensor_prefix") or "ubroker/%s/sensor" % (cfg.get("hostname") or cfg.get("board") or "unix")
    if not _valid_topic(prefix) or prefix[0] == "$":
        log("sensor_prefix '%s' is not a topic to publish to: sensors off" % prefix)
        return out
    for line in cfg.get("sensor", ()):
        try:
            add(out, used, line, prefix, cfg.get("sensor_interval", 0), now, log, why)
        except Exception as e:  # one bad line costs that sensor, never the broker
            log("sensor %s: cannot start: %s" % (line, why(e)))
    # A built-in module none of whose sensors runs here (bme280 on the unix port, say) would
    # only hold heap: let it go.
    import ubroker

    for mod in set(sys.modules) - before - used:
        if mod.startswith("ubroker."):
            ubroker.forget(mod[8:])
    log("sensors under %s/: %s" % (prefix, ", ".join(e[0].name for e in out) or "none"))
    return out


def add(out, used, line, prefix, every, now, log, why):
    """Make the sensor(s) of one `sensor` line and append them to out."""
    words = line.split()
    opts = options(words[1:])
    every = opts.pop("interval", every)
    if not isinstance(every, int) or every < 1:
        raise ValueError("interval must be a whole number of seconds, at least 1")
    mod, make = factory(words[0])
    try:
        made = make(**opts)
    except OSError as e:  # sensors.Unavailable, or the missing device's own error
        log("sensor %s: not available here (%s)" % (words[0], why(e)))
        return
    for drv in made if isinstance(made, (list, tuple)) else (made,):
        name = getattr(drv, "name", None)
        if not isinstance(name, str) or not _valid_topic(name) or not callable(getattr(drv, "read", None)):
            raise ValueError("%r is not a sensor driver (needs a name that is a topic and read())" % (drv,))
        if name == "unit" or name.endswith("/unit"):
            raise ValueError("a sensor cannot be named '%s': NAME/unit carries a sensor's unit" % name)
        for other in out:
            if other[0].name == name:
                raise ValueError("a sensor named '%s' already runs; give this one name=..." % name)
        least = getattr(drv, "interval", 0) or 0
        period = max(every, least)
        # The scheduler's entry: see sensors.py.
        out.append([drv, (prefix + "/" + name).encode(), int(period * 1000), now, 0, 0, False])
        used.add(mod)
