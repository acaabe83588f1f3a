"""Local sensors: the driver interface and the scheduler that the server's once-a-second
tick runs. The server imports this module only when
`sensor_interval` is above 0, so a broker without sensors pays no heap for it.

A driver is any object with
    name      its topic below sensor_prefix, e.g. "cpu_temp" or "bme280/humidity"
    unit      text such as "C", "%", "B" ("" for none)
    interval  the fewest seconds between two reads it supports (0: any)
    read()    the value now, as a number, or None when there is none yet
and optionally `digits` (decimals published for a float, default 2). A driver's constructor
that raises Unavailable (or OSError) means "no such sensor on this board or host": it is
logged once and skipped.

read() runs inside the broker's one loop: it must return at once (a few milliseconds), so it
must not wait for a conversion or the network; a sensor that needs time must measure on its
own (the BME280 runs in normal mode) and read() only collects the last result. A read over
SLOW_MS is counted; STRIKES of them in a row drop the sensor, so a slow driver cannot keep
the broker from its clients.

What is needed only at start (reading the `sensor` lines, finding and checking the drivers)
is in sensor_setup.py, which hands the scheduler its entries as plain data, imports nothing
from here, and is dropped from the heap once the sensors are running."""

import time

from .codec import const

_SLOW_MS = const(100)
_STRIKES = const(3)

# One scheduled sensor is a list (cheaper than an object): driver, topic, period in ms, next
# due time, slow reads in a row, failures since the last good read, unit published yet.
_DRV = const(0)
_TOPIC = const(1)
_EVERY = const(2)
_DUE = const(3)
_SLOW = const(4)
_FAILS = const(5)
_UNIT = const(6)


class Unavailable(OSError):
    """Raised by a driver's constructor: this board or host has no such sensor. An OSError,
    as a missing device's own error is, so start-up treats both alike without knowing this
    class."""


def text(value, digits=2):
    """A reading as payload bytes: ints as they are, floats to `digits` decimals without
    trailing zeros ("23.5", not "23.500000")."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return str(value).encode()
    if not isinstance(value, float):
        raise TypeError("read() returned %r, not a number" % (value,))
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("read() returned %r" % value)
    s = ("%." + str(digits) + "f") % value
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    if s == "-0":
        s = "0"
    return s.encode()


class Sensors:
    def __init__(self, server):
        cfg = server.cfg
        self.broker = server.broker
        self.log = server.log
        self.qos = cfg.get("sensor_qos", 0)
        self.retain = cfg.get("sensor_retain", False)
        import ubroker

        try:
            from . import sensor_setup

            self.entries = sensor_setup.entries(cfg, server.log, server.now, _why)
        finally:
            # Start-up code only: let the next collection take it back.
            ubroker.forget("sensor_setup")

    def tick(self, now):
        """Read every sensor that is due: O(number of sensors), once a second."""
        gone = False
        for e in self.entries:
            if time.ticks_diff(now, e[_DUE]) < 0:
                continue
            # Keep the cadence; after a stall, start again from now rather than catch up.
            e[_DUE] = time.ticks_add(e[_DUE], e[_EVERY])
            if time.ticks_diff(now, e[_DUE]) >= 0:
                e[_DUE] = time.ticks_add(now, e[_EVERY])
            if not self.sample(e):
                gone = True
        if gone:
            self.entries = [e for e in self.entries if e[_DRV] is not None]

    def sample(self, e):
        """Read one sensor and publish its value; False when it is dropped for being slow."""
        drv = e[_DRV]
        stats = self.broker.stats
        t0 = time.ticks_ms()
        try:
            v = drv.read()
            data = None if v is None else text(v, getattr(drv, "digits", 2))
        except Exception as ex:  # a driver's bug or a bus error costs one reading
            data = None
            stats.hit("sensor_errors")
            if not e[_FAILS]:
                self.log("sensor %s: read failed: %s (further failures are counted in "
                         "$SYS/broker/ubroker/limits/sensor_errors)" % (drv.name, _why(ex)))
            e[_FAILS] += 1
        ms = time.ticks_diff(time.ticks_ms(), t0)
        if ms > _SLOW_MS:
            stats.hit("sensor_slow")
            e[_SLOW] += 1
            if e[_SLOW] >= _STRIKES:
                self.log("sensor %s: read took %d ms, %d times in a row (limit %d ms): dropped; "
                         "read() must return at once" % (drv.name, ms, _STRIKES, _SLOW_MS))
                e[_DRV] = None
                return False
        else:
            e[_SLOW] = 0
        if data is None:
            return True
        if e[_FAILS]:
            self.log("sensor %s: reading again after %d failures" % (drv.name, e[_FAILS]))
            e[_FAILS] = 0
        b = self.broker
        if not e[_UNIT]:
            e[_UNIT] = True
            unit = getattr(drv, "unit", "")
            if unit:
                # Once, retained: a dashboard that subscribes later still learns the unit.
                b.publish(e[_TOPIC] + b"/unit", str(unit).encode(), self.qos, True, True)
        b.publish(e[_TOPIC], data, self.qos, self.retain, True)
        return True


def _why(e):
    return "%s: %s" % (type(e).__name__, e) if e.args else type(e).__name__
