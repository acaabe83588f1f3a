"""The heap cost model: what a board's limits cost when every table is full, which must fit
the board's heap_budget. All the constants are here, in one place, so that measured figures
replace estimates without touching the code that uses them.

Where the numbers come from
---------------------------
Per-item costs were measured on the unix port (64-bit objects) by tools/measure_heap.py:
the broker runs with the esp32 profile, and after every tick it does gc.collect() and prints
gc.mem_alloc(); the script connects 50 clients, gives each 4 subscriptions, queues 200 QoS 1
messages for an offline persistent session and stores 100 retained messages. Measured here
(MicroPython 1.29-preview unix, broker as of issue 4):
    connected client with its session   577 B
    subscription                        170 B
    queued message, overhead            208 B  (beyond its topic and payload bytes)
    retained message, overhead          153 B  (beyond its topic and payload bytes)
    baseline, broker imported from .py  48.4 KB (code compiled in RAM + Server + buffers)
Later (firmware with buffers.py), esp32 config, after gc.collect(): interpreter 1.3 KB,
imports 46.7 KB from .py and 43.0 KB from the unix build's .mpy (bytecode lives in RAM either
way), Server() with its listener 6.2 KB: 50.5 KB from .mpy.
A 32-bit board's objects are about half a 64-bit build's (docs/platform.md §2: pointers and GC
blocks halve; byte contents do not): WORD_RATIO = 0.55 rounds that up. These board figures
are estimates until the lead's on-board measurements replace them.
The baseline on a board counts the interpreter after boot plus the broker's modules loaded
from .mpy (bytecode still lives in RAM unless frozen): BASELINE_32 below; unix's is the
measured one.
Queued messages are bounded by bytes (max_queued_bytes) as well as by count; the count used
here is max_queued_bytes / TYPICAL_MESSAGE (a sensor reading: ~24 B topic, ~40 B payload),
capped by what the per-session limits allow.
Output buffers grow only while a socket cannot take more; BUSY_WRITERS of them are assumed
full at once (an assumption, not a measurement).
"""

MEASURED_64 = {
    "client": 577,
    "subscription": 170,
    "queued": 208,
    "retained": 153,
}
BASELINE_64 = 52 * 1024  # measured 50.5 KB (see above), rounded up
WORD_RATIO = {32: 0.55, 64: 1.0}
# Half of the 64-bit .mpy import + Server (~25 KB) plus ~7 KB for the interpreter's and the
# network stack's Python objects after boot (estimate).
BASELINE_32 = 32 * 1024
SESSION_SHARE = 0.4  # an offline session is the client's cost without its connection (estimate)
TYPICAL_MESSAGE = 64
BUSY_WRITERS = 4
# Local sensors (sensor_interval > 0) load their code only then: measured with `ubroker run
# --board esp32` (64-bit), heap in use at start 66.3 KB off, 73.2 KB with heap_free (the
# scheduler and the board sensors' module), 77.6 KB with heap_free, cpu_load, mem_used and
# disk_used (plus the Linux sensors' module). A driver module such as bme280 adds ~5.4 KB.
SENSORS_64 = 12 * 1024
HEADROOM = 0.0  # fraction of the budget kept free for fragmentation (raise when measured)


def word_bits(profile):
    return 64 if profile.get("arch", "none") in ("none", "x64") else 32


def costs(profile):
    """[(item, bytes)] for a profile (or a resolved config with its keys)."""
    bits = word_bits(profile)
    r = WORD_RATIO[bits]
    per = {k: int(v * r + 0.5) for k, v in MEASURED_64.items()}
    conns = profile["max_connections"]
    sessions = profile["max_sessions"]
    offline = max(0, sessions - conns)
    queued_count = min(profile["max_queued_bytes"] // TYPICAL_MESSAGE,
                       sessions * (profile["max_queued_messages"] + profile["max_inflight_messages"]))
    read_buf = max(profile["read_buffer_size"], profile["max_packet_size"] + 5)
    return [
        ("baseline (interpreter, code, server)", BASELINE_64 if bits == 64 else BASELINE_32),
        ("read buffer", read_buf),
        ("clients: %d x %d B" % (conns, per["client"]), conns * per["client"]),
        ("offline sessions: %d x %d B" % (offline, int(per["client"] * SESSION_SHARE)),
         offline * int(per["client"] * SESSION_SHARE)),
        ("subscriptions: %d x %d B" % (profile["max_subscriptions"], per["subscription"]),
         profile["max_subscriptions"] * per["subscription"]),
        ("queued messages: %d B + %d x %d B" % (profile["max_queued_bytes"], queued_count, per["queued"]),
         profile["max_queued_bytes"] + queued_count * per["queued"]),
        ("retained: %d B + %d x %d B" % (profile["max_retained_bytes"], profile["max_retained_messages"],
                                          per["retained"]),
         profile["max_retained_bytes"] + profile["max_retained_messages"] * per["retained"]),
        ("output buffers: %d x %d B" % (BUSY_WRITERS, profile["out_buffer_size"]),
         BUSY_WRITERS * profile["out_buffer_size"]),
        ("sensors (sensor_interval > 0)", int(SENSORS_64 * r) if profile.get("sensor_interval") else 0),
    ]


def total(profile):
    return sum(b for _, b in costs(profile))


def fits(profile):
    """(ok, total, budget)."""
    need = total(profile)
    budget = int(profile["heap_budget"] * (1 - HEADROOM))
    return need <= budget, need, budget


def report(profile):
    lines = ["%-48s %9d" % (name, b) for name, b in costs(profile)]
    ok, need, budget = fits(profile)
    lines.append("%-48s %9d of heap_budget %d (%d%%)" % ("total", need, budget, 100 * need // budget))
    return "\n".join(lines)
