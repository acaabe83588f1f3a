"""Local sensors through the network: a real ubroker (unix port, esp32 profile unless said)
with `sensor_interval` set publishes its sensors' readings under sensor_prefix at the
configured QoS and retain flag, about every interval; a sensor this host lacks, a bad
`sensor` line, a read that raises and a read that takes too long are each logged and skipped
without harming the broker. Timing checks are loose on purpose: this machine is noisy."""

import re
import statistics
import time
import uuid

from conftest import wait_for

PINGRESP = 13
# A user's driver modules, written into the broker's working folder (importable there, as
# the filesystem root is on a board).
DRIVERS = '''
import time

class Broken:
    name = "broken"
    unit = ""
    interval = 0
    def read(self):
        raise ValueError("bus error")

class Flaky:
    """Fails on every other read."""
    name = "flaky"
    unit = "V"
    interval = 0
    def __init__(self):
        self.n = 0
    def read(self):
        self.n += 1
        if self.n % 2:
            raise OSError(5)
        return self.n

class Slow:
    name = "slow"
    unit = ""
    interval = 0
    def __init__(self, ms=300, name="slow"):
        self.ms = ms
        self.name = name
    def read(self):
        time.sleep_ms(self.ms)
        return 1

class Wrong:
    name = "wrong"
    unit = ""
    interval = 0
    def read(self):
        return "twelve"

class NotHere:
    name = "nothere"
    def __init__(self):
        raise OSError(19)
'''


def prefix():
    return "t%s/sensor" % uuid.uuid4().hex[:6]


def collect(broker, flt, seconds, qos=1, also=None):
    """(arrival time, message) of everything matching flt (and filter `also`) for that long."""
    got = []
    c = broker.client()
    c.on_message = lambda cl, u, msg: got.append((time.time(), msg))
    c.subscribe([(flt, qos)] + ([(also, qos)] if also else []))
    time.sleep(seconds)
    c.disconnect()
    c.loop_stop()
    return got


def values(got, topic):
    return [(t, msg) for t, msg in got if msg.topic == topic]


def ping_ms(raw):
    t0 = time.time()
    raw.send(b"\xc0\x00")
    assert raw.expect(PINGRESP, 5.0) is not None
    return (time.time() - t0) * 1000


def test_readings_on_schedule_with_prefix_qos_retain(broker_factory):
    pre = prefix()
    b = broker_factory(config="sensor_interval 1\nsensor_prefix %s\nsensor_qos 1\nsensor_retain true\n"
                              "sensor heap_free\nsensor cpu_load\nsensor mem_used\nsensor disk_used interval=3\n" % pre)
    got = collect(b, pre + "/#", 6.5)
    heap = values(got, pre + "/heap_free")
    assert 3 <= len(heap) <= 9, [msg.payload for _, msg in heap]
    for _, msg in heap:
        assert msg.qos == 1
        assert 0 < int(msg.payload) < 100 * 1024  # the 100k heap of the esp32 profile
    gaps = [b_[0] - a[0] for a, b_ in zip(heap, heap[1:])]
    assert 0.5 < statistics.median(gaps) < 2.0, gaps
    # A sensor with its own interval=3 is read less often.
    disk = values(got, pre + "/disk_used")
    assert 1 <= len(disk) < len(heap)
    for name in ("cpu_load", "mem_used", "disk_used"):
        for _, msg in values(got, pre + "/" + name):
            assert 0 <= float(msg.payload) <= 100, (name, msg.payload)
    assert values(got, pre + "/cpu_load") and values(got, pre + "/mem_used")
    units = {msg.topic: msg.payload for _, msg in got if msg.topic.endswith("/unit")}
    assert units[pre + "/heap_free/unit"] == b"B"
    assert units[pre + "/cpu_load/unit"] == b"%"
    # Retained: a client that subscribes later gets the last reading and the unit at once.
    late = b.client()
    late.subscribe(pre + "/heap_free/#", 0)
    assert wait_for(lambda: len(late.messages) >= 2, 3.0)
    first = {msg.topic: msg for msg in late.messages[:2]}
    assert first[pre + "/heap_free"].retain and int(first[pre + "/heap_free"].payload) > 0
    assert first[pre + "/heap_free/unit"].retain and first[pre + "/heap_free/unit"].payload == b"B"


def test_not_retained_and_qos0_by_default_under_the_board_name(broker_factory):
    b = broker_factory(config="sensor_interval 1\nsensor heap_free\n")
    got = collect(b, "ubroker/#", 2.5, qos=2)
    heap = values(got, "ubroker/esp32/sensor/heap_free")
    assert heap, [msg.topic for _, msg in got]
    assert all(msg.qos == 0 for _, msg in heap)
    late = b.client()
    late.subscribe("ubroker/esp32/sensor/heap_free", 0)
    # A later subscriber gets the next reading live (RETAIN 0), not a kept one at once
    # (MQTT-3.3.1-6 would send a retained reading first, with RETAIN 1).
    assert wait_for(lambda: late.messages, 3.0), "no reading reached a later subscriber"
    assert [msg.retain for msg in late.messages] == [False] * len(late.messages)


def test_off_by_default(broker_factory):
    b = broker_factory()  # the esp32 profile names sensors, but sensor_interval is 0
    got = collect(b, "ubroker/#", 2.5)
    assert got == []
    assert "sensor" not in b.log()


def test_board_sensors_this_host_lacks_are_logged_once(broker_factory):
    # The esp32 profile's sensor lines: chip_temp, wifi_rssi, heap_free. On the unix port
    # only heap_free exists.
    pre = prefix()
    b = broker_factory(config="sensor_interval 1\nsensor_prefix %s\n" % pre)
    got = collect(b, pre + "/#", 3.5)
    assert {msg.topic for _, msg in got} == {pre + "/heap_free", pre + "/heap_free/unit"}
    log = b.log()
    assert log.count("sensor chip_temp: not available here") == 1, log
    assert log.count("sensor wifi_rssi: not available here") == 1, log
    assert "sensors under %s/: heap_free\n" % pre in log


def test_bad_sensor_lines_are_logged_and_skipped(broker_factory):
    pre = prefix()
    b = broker_factory(config="sensor_interval 1\nsensor_prefix %s\n"
                              "sensor nosuch\nsensor heap_free interval=0\nsensor cpu_load fast\n"
                              "sensor nomodule.Driver\nsensor disk_used path=/no/such/dir\n"
                              "sensor cpu_load bogus=1\nsensor disk_used name=disk/unit\n"
                              "sensor heap_free\nsensor heap_free\n" % pre)
    log = b.log()
    assert re.search(r"sensor nosuch: cannot start: ValueError: unknown sensor 'nosuch' \(built-in: .*heap_free", log)
    assert "sensor heap_free interval=0: cannot start: ValueError: interval must be" in log
    assert "sensor cpu_load fast: cannot start: ValueError: option 'fast' is not key=value" in log
    assert "sensor nomodule.Driver: cannot start: ImportError" in log
    assert "sensor disk_used: not available here" in log
    assert "sensor cpu_load bogus=1: cannot start: TypeError" in log
    assert "sensor heap_free: cannot start: ValueError: a sensor named 'heap_free' already runs" in log
    assert "sensor disk_used name=disk/unit: cannot start: ValueError: a sensor cannot be named 'disk/unit'" in log
    got = collect(b, pre + "/#", 2.5)
    assert {msg.topic for _, msg in got} == {pre + "/heap_free", pre + "/heap_free/unit"}


def test_prefix_must_be_a_topic(broker_factory):
    b = broker_factory(config="sensor_interval 1\nsensor_prefix a/+/b\nsensor heap_free\n")
    assert wait_for(lambda: "sensor_prefix 'a/+/b' is not a topic to publish to: sensors off" in b.log())
    raw = b.raw()
    assert raw.connect("after-bad-prefix")[1] == 0


def test_failing_sensor_is_counted_and_skipped(broker_factory, tmp_path):
    (tmp_path / "drivers.py").write_text(DRIVERS)
    pre = prefix()
    b = broker_factory(cwd=str(tmp_path),
                       config="sensor_interval 1\nsys_interval 1\nsensor_prefix %s\nsensor drivers.Broken\n"
                              "sensor drivers.Flaky\nsensor drivers.Wrong\nsensor drivers.NotHere\n"
                              "sensor heap_free\n" % pre)
    got = collect(b, "#", 5.5, also="$SYS/broker/ubroker/limits/#")
    topics = [msg.topic for _, msg in got]
    assert topics.count(pre + "/heap_free") >= 3, "the healthy sensor keeps its schedule"
    assert pre + "/broken" not in topics and pre + "/wrong" not in topics
    flaky = [int(msg.payload) for _, msg in values(got, pre + "/flaky")]
    assert flaky and all(v % 2 == 0 for v in flaky), flaky
    errors = [int(msg.payload) for _, msg in values(got, "$SYS/broker/ubroker/limits/sensor_errors")]
    assert errors and errors[-1] >= 6, errors  # broken, flaky and wrong each fail every second
    log = b.log()
    # Logged once each (then only counted), not once a second.
    assert log.count("sensor broken: read failed: ValueError: bus error") == 1, log
    assert log.count("sensor wrong: read failed: TypeError: read() returned 'twelve', not a number") == 1, log
    assert "sensor flaky: reading again after 1 failures" in log
    assert "sensor drivers.NotHere: not available here (OSError: [Errno 19] ENODEV)" in log
    raw = b.raw()
    assert raw.connect("after-failures")[1] == 0
    assert ping_ms(raw) < 1000


def test_slow_sensor_is_dropped(broker_factory, tmp_path):
    (tmp_path / "drivers.py").write_text(DRIVERS)
    pre = prefix()
    b = broker_factory(cwd=str(tmp_path),
                       config="sensor_interval 1\nsensor_prefix %s\nsensor drivers.Slow ms=300\n"
                              "sensor drivers.Slow ms=1 name=quick\nsensor heap_free\n" % pre)
    assert wait_for(lambda: "sensor slow: read took" in b.log(), 10.0), b.log()
    assert re.search(r"sensor slow: read took \d+ ms, 3 times in a row \(limit 100 ms\): dropped", b.log())
    # Once dropped, the loop answers at once again and the other sensors carry on.
    raw = b.raw()
    assert raw.connect("after-slow")[1] == 0
    assert max(ping_ms(raw) for _ in range(5)) < 250
    got = collect(b, pre + "/#", 2.5)
    topics = [msg.topic for _, msg in got]
    assert pre + "/slow" not in topics
    assert pre + "/heap_free" in topics and pre + "/quick" in topics


BME = '''
from ubroker import sensor_bme280 as bme280

# The BMP280 datasheet's example calibration and raw readings (see tests/unit/test_bme280.py).
REGS = bytearray(256)
REGS[0xD0] = 0x60
CAL = [27504, 26435, -1000, 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000]
for i, v in enumerate(CAL):
    REGS[0x88 + 2 * i] = v & 0xFF
    REGS[0x89 + 2 * i] = (v >> 8) & 0xFF
REGS[0xA1] = 75
REGS[0xE1] = 362 & 0xFF
REGS[0xE2] = 362 >> 8
REGS[0xE4] = 313 >> 4
REGS[0xE5] = (313 & 0xF) | (50 & 0xF) << 4
REGS[0xE6] = 50 >> 4
REGS[0xE7] = 30
RAW = (415148, 519888)
REGS[0xF7:0xFD] = bytes([RAW[0] >> 12, (RAW[0] >> 4) & 0xFF, (RAW[0] & 0xF) << 4,
                         RAW[1] >> 12, (RAW[1] >> 4) & 0xFF, (RAW[1] & 0xF) << 4])
REGS[0xFD] = 27000 >> 8
REGS[0xFE] = 27000 & 0xFF

class Bus:
    def readfrom_mem(self, addr, reg, n):
        return bytes(REGS[reg:reg + n])
    def writeto_mem(self, addr, reg, buf):
        REGS[reg:reg + len(buf)] = buf

def sensors(**opts):
    return bme280.sensors(bus=Bus(), **opts)
'''


def test_bme280_driver_in_the_broker(broker_factory, tmp_path):
    """The example driver run by MicroPython itself (its integers, its float formatting)."""
    (tmp_path / "fakebme.py").write_text(BME)
    pre = prefix()
    b = broker_factory(cwd=str(tmp_path),
                       config="sensor_interval 1\nsensor_prefix %s\nsensor fakebme.sensors name=garden\n" % pre)
    got = collect(b, pre + "/#", 2.5)
    last = {msg.topic: msg.payload for _, msg in got}
    assert last[pre + "/garden/temperature"] == b"25.08"
    assert last[pre + "/garden/pressure"] == b"1006.53"
    assert last[pre + "/garden/humidity"] == b"38.27"
    assert last[pre + "/garden/pressure/unit"] == b"hPa"


def test_linux_host_sensors_of_the_unix_profile(broker_factory):
    pre = prefix()
    b = broker_factory(board="unix", config="sensor_interval 1\nsensor_prefix %s\n" % pre)
    got = collect(b, pre + "/+", 3.5)
    last = {msg.topic[len(pre) + 1:]: float(msg.payload) for _, msg in got}
    assert {"heap_free", "cpu_load", "mem_used", "disk_used"} <= set(last), last
    assert 0 < last["mem_used"] < 100 and 0 < last["disk_used"] <= 100 and 0 <= last["cpu_load"] <= 100
    if "cpu_temp" in last:
        assert -40 < last["cpu_temp"] < 125
    else:  # no thermal zone on this host (a VM): said once at start
        assert b.log().count("sensor cpu_temp: not available here") == 1


def test_config_check_prices_the_sensors(tmp_path):
    """`ubroker config --check` counts the sensors' code against the heap budget: on the
    esp32 profile with its subscription table raised to 160, they do not fit (the profile
    itself leaves just enough room); fewer clients make room."""
    from ubroker_tools import config as configmod

    path = tmp_path / "s.conf"
    path.write_text("# sensors on the smallest board\nsensor_interval 10\nmax_subscriptions 160\n")
    problems = configmod.check("esp32", str(path))
    assert len(problems) == 1 and "turn the sensors off (sensor_interval, line 2" in problems[0], problems
    path.write_text("sensor_interval 10\nmax_subscriptions 160\nmax_sessions 32\n")  # fewer sessions make room
    assert configmod.check("esp32", str(path)) == []
    path.write_text("sensor_interval ten\nsensor_qos 3\nsensor_retain yes\n")
    assert [p.split(": ", 1)[1] for p in configmod.check("esp32", str(path))] == [
        "sensor_interval expects a whole number, not 'ten'", "sensor_qos must be 0, 1 or 2",
        "sensor_retain expects true or false, not 'yes'"]
