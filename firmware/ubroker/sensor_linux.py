"""Built-in sensors of a Linux host (Raspberry Pi and other gateways on the unix port), read
from /proc and /sys: CPU load, memory in use, disk in use, CPU temperature. Each constructor
reads its file once, so a host without it (no thermal zone in a VM, say) is found at start
and the sensor is skipped. Every read is one small file or one statvfs call: it returns at
once, as the scheduler requires."""

import os

from .sensors import Unavailable


def _lines(path, n):
    """The first n lines of a file, read line by line: /proc/stat runs to kilobytes after its
    first line, and a small heap should not hold all of it."""
    out = []
    try:
        with open(path) as f:
            while len(out) < n:
                line = f.readline()
                if not line:
                    break
                out.append(line)
    except OSError as e:
        raise Unavailable("cannot read %s: %s" % (path, e))
    if not out:
        raise Unavailable("%s is empty" % path)
    return out


class CpuLoad:
    """Share of CPU time not idle since the previous read, all cores together, from the
    first line of /proc/stat. The first read has nothing to compare with: None."""

    name = "cpu_load"
    unit = "%"
    interval = 0
    digits = 1

    def __init__(self, path="/proc/stat"):
        self.path = path
        self.last = self._times()

    def _times(self):
        words = _lines(self.path, 1)[0].split()
        if len(words) < 5 or words[0] != "cpu":
            raise ValueError("%s has no 'cpu' line first" % self.path)
        # user nice system idle iowait irq softirq steal; guest time is already in user.
        t = [int(w) for w in words[1:9]]
        idle = t[3] + (t[4] if len(t) > 4 else 0)
        return sum(t), idle

    def read(self):
        total, idle = self._times()
        last_total, last_idle = self.last
        self.last = (total, idle)
        dt = total - last_total
        if dt <= 0:
            return None
        return 100.0 * (dt - (idle - last_idle)) / dt


class MemUsed:
    """Memory in use as a share of MemTotal: what MemAvailable says cannot be had without
    swapping (/proc/meminfo, as `free` counts it)."""

    name = "mem_used"
    unit = "%"
    interval = 0
    digits = 1

    def __init__(self, path="/proc/meminfo"):
        self.path = path
        self.read()

    def read(self):
        total = avail = None
        for line in _lines(self.path, 5):  # MemAvailable is the third line
            if line.startswith("MemTotal:"):
                total = int(line.split()[1])
            elif line.startswith("MemAvailable:"):
                avail = int(line.split()[1])
        if not total or avail is None:
            raise Unavailable("%s has no MemTotal / MemAvailable" % self.path)
        return 100.0 * (total - avail) / total


class DiskUsed:
    """Share of a filesystem in use, as df counts it: used / (used + available to users)."""

    unit = "%"
    interval = 0
    digits = 1

    def __init__(self, path="/", name="disk_used"):
        self.path = path
        self.name = name
        self.read()

    def read(self):
        try:
            st = os.statvfs(self.path)
        except OSError as e:
            raise Unavailable("statvfs %s: %s" % (self.path, e))
        used = st[2] - st[3]  # f_blocks - f_bfree
        room = used + st[4]  # + f_bavail
        return 100.0 * used / room if room else None


class CpuTemp:
    """The SoC temperature from a thermal zone (millidegrees Celsius in /sys): on a Raspberry
    Pi zone 0 is the CPU."""

    unit = "C"
    interval = 0
    digits = 1

    def __init__(self, zone=0, name="cpu_temp"):
        self.path = "/sys/class/thermal/thermal_zone%d/temp" % zone
        self.name = name
        self.read()

    def read(self):
        return int(_lines(self.path, 1)[0]) / 1000
