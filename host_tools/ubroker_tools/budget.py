"""The heap cost model: what a board's limits cost when every table is full, which must fit
the board's heap_budget. All the constants are here, in one place, so that measured figures
replace estimates without touching the code that uses them. At the end: what the unix port
needs to start a profile, and a profile's limits cut to fit a smaller heap (`ubroker run
--heap` without --board).

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


# ----------------------------------------------------------------------------------------
# `ubroker run`: the heap the unix port (64-bit objects) needs to start with given limits,
# and a profile's limits cut down to fit a heap smaller than its heap_budget.
#
# Heap taken at start besides the start tables, by the form the code is loaded in: the
# smallest -X heapsize at which the broker started with the esp32 limits (8,976 B of start
# tables) was 66k native (x64), 79k bytecode, 114k from the .py files (2026-11-27), i.e.
# 57.2, 70.2 and 105.2 kB; each is rounded up by about 2.8 kB for what varies with the
# listeners, the paths and the code as it changes.
START_64 = {"native": 60 * 1024, "bytecode": 73 * 1024, "source": 108 * 1024}
# The start takes more than its tables: the transient bytes each table() is made from and
# the holes they leave; 2.6 % more for the unix profile's 786 kB of tables (845k to start,
# 837 kB in use after it), up to 7.5 % for 25 kB (within START_64's margin).
TABLE_SLACK = 32  # a 32nd of the tables
# What a feature a config turns on adds to the smallest heap that starts, by code form
# (measured as above, one feature at a time, then all five together with the esp32 limits:
# 141k as -O3 bytecode and 126k native, which the sums below cover).
FEATURES_64 = {
    "persistence": {"native": 12 * 1024, "bytecode": 16 * 1024, "source": 24 * 1024},
    "bridge": {"native": 6 * 1024, "bytecode": 6 * 1024, "source": 6 * 1024},
    "sensors": {"native": 20 * 1024, "bytecode": 12 * 1024, "source": 12 * 1024},  # the unix profile's five
    "security": {"native": 10 * 1024, "bytecode": 10 * 1024, "source": 10 * 1024},  # password and acl files
    "tls": {"native": 16 * 1024, "bytecode": 16 * 1024, "source": 16 * 1024},  # the ssl module, sec_gate.py
}


def features(cfg):
    """The FEATURES_64 cfg (a resolved config) turns on."""
    on = {
        "persistence": cfg.get("persistence") and cfg.get("persistence_location"),
        "bridge": cfg.get("connection"),
        "sensors": cfg.get("sensor_interval"),
        "security": cfg.get("password_file") or cfg.get("acl_file"),
        "tls": cfg.get("tls") or cfg.get("max_connection_rate"),
    }
    return [name for name in FEATURES_64 if on[name]]


def _block(n):
    return (n + 15) // 16 * 16  # the GC allocates in 16-byte blocks on a 64-bit port


def _table(n):
    return _block(16 * ((n + 2 + n // 16) | 1))  # buffers.table(n): a key and a value per slot


def start_tables(cfg):
    """[(item, bytes)] the broker allocates at start from its limits on a 64-bit port
    (server.py, broker.py, buffers.py); each matched the heap in use after start to 64 B
    when one limit at a time was raised from the esp32 profile's."""
    socks = cfg["max_connections"] + 8
    pool = cfg["buffer_pool_size"]
    pool_buf = min(4096, max(cfg["out_buffer_size"], 2 * cfg["read_buffer_size"]))
    return [
        ("read buffer", _block(cfg["max_packet_size"] + 5 + cfg["read_buffer_size"])),
        ("output scratch", _block(cfg["out_buffer_size"])),
        ("buffer pool: %d x %d B" % (pool, pool_buf), pool * _block(pool_buf) + _block(8 * pool)),
        ("connection table and list: %d sockets" % socks, _table(socks) + _block(8 * socks)),
        ("session table: %d" % cfg["max_sessions"], _table(cfg["max_sessions"])),
        ("subscription table: %d" % cfg["max_subscriptions"], _table(cfg["max_subscriptions"])),
        ("retained table: %d" % cfg["max_retained_messages"], _table(cfg["max_retained_messages"])),
    ]


def start_need(cfg, code="bytecode"):
    """Heap the unix port needs to start the broker with cfg, its code loaded as code (a
    START_64 key: native, bytecode or source)."""
    t = sum(b for _, b in start_tables(cfg))
    return START_64[code] + t + t // TABLE_SLACK + sum(FEATURES_64[f][code] for f in features(cfg))


def run_need(cfg, code="bytecode"):
    """Heap the unix port needs to start with cfg and then hold every table full: the start,
    and what costs() prices beyond what the start already counts."""
    counted = ("baseline", "read buffer", "sensors")
    full = costs(dict(cfg, arch="none"))
    return start_need(cfg, code) + sum(b for name, b in full if not name.startswith(counted))


# The smallest useful broker: a cut profile goes no lower than these (16 clients is
# DESIGN.md's measure of the smallest heap; MQTT-3.1.3-5 lets a client id have 23 characters).
SMALLEST = {
    "max_connections": 16, "max_packet_size": 1024, "read_buffer_size": 512, "out_buffer_size": 512,
    "max_queued_bytes": 2048, "max_retained_bytes": 1024, "max_retained_messages": 8,
    "max_topic_length": 128, "max_client_id_length": 64,
}
# A cut profile gives each kind of buffer 1/n of the heap left after the start (START_64
# and the features), never more than the profile's own limit; the clients, their sessions
# and their subscriptions get the rest.
SHARES = {"packet": 16, "output": 32, "pool": 32, "queued": 8, "retained": 16}
# Subscriptions per client in a cut profile's table (esp32 has 1.5, unix 4): by costs()
# each takes 30 % of a client, and 16 clients with 4 each do not fit 96k.
SUBSCRIPTIONS = 2
RETAINED_MESSAGE = 128  # bytes of topic and payload a cut profile plans for each retained message


def _pow2(n):
    """The largest power of two not above n (at least 1)."""
    p = 1
    while p * 2 <= n:
        p *= 2
    return p


def _with_clients(cut, cfg, n, per_client):
    """cut with n connections, sessions in cfg's proportion to them, and per_client
    subscriptions each (at most cfg's own)."""
    c = dict(cut)
    c["max_connections"] = n
    c["max_sessions"] = min(cfg["max_sessions"], n * cfg["max_sessions"] // cfg["max_connections"])
    c["max_subscriptions"] = min(cfg["max_subscriptions"], n * per_client)
    c["max_subscriptions_per_client"] = min(cfg["max_subscriptions_per_client"], c["max_subscriptions"])
    return c


def _buffers(cfg, heap, room):
    """cfg with its buffers and message tables cut to their SHARES of room."""
    c = dict(cfg, heap_budget=heap)

    def cut(key, value):
        c[key] = max(SMALLEST.get(key, 1), min(cfg[key], value))

    # The read buffer holds a packet and a read of half a packet.
    cut("max_packet_size", _pow2(room // SHARES["packet"] * 2 // 3))
    cut("read_buffer_size", c["max_packet_size"] // 2)
    cut("max_topic_length", c["max_packet_size"] // 2)
    cut("max_client_id_length", c["max_topic_length"])
    cut("out_buffer_size", _pow2(room // SHARES["output"] // (BUSY_WRITERS + 1)))
    pool_buf = min(4096, max(c["out_buffer_size"], 2 * c["read_buffer_size"]))
    cut("buffer_pool_size", room // SHARES["pool"] // pool_buf)
    # A queued message costs its bytes and MEASURED_64["queued"] for each TYPICAL_MESSAGE.
    cut("max_queued_bytes", room // SHARES["queued"] * TYPICAL_MESSAGE // (TYPICAL_MESSAGE + MEASURED_64["queued"]))
    cut("max_retained_messages", room // SHARES["retained"] // (RETAINED_MESSAGE + MEASURED_64["retained"]))
    cut("max_retained_bytes", RETAINED_MESSAGE * c["max_retained_messages"])
    if "bridge_max_queued_messages" in cfg:
        cut("bridge_max_queued_messages", c["max_queued_bytes"] // TYPICAL_MESSAGE)
    if cfg.get("gc_threshold"):
        cut("gc_threshold", heap // 8)
    # As on the small boards (boards/esp32.conf): free heap kept for the clients already
    # served, and the poll table grown at start, before the heap fragments.
    c["heap_reserve"] = max(cfg["heap_reserve"], 1024)
    c["poll_presize"] = True
    return c


def for_heap(cfg, heap, code="bytecode"):
    """cfg (a resolved config) with its limits cut so that run_need fits heap, or cfg
    itself (with heap_budget heap) if it fits already; None if not even SMALLEST's limits
    with 16 clients fit. The buffers and message tables get their SHARES, then the clients
    as many as fit, with SUBSCRIPTIONS each or, if there is room, cfg's own proportion."""
    if run_need(cfg, code) <= heap:
        return dict(cfg, heap_budget=heap)
    room = heap - START_64[code] - sum(FEATURES_64[f][code] for f in features(cfg))
    if room <= 0:
        return None
    c = _buffers(cfg, heap, room)
    own = max(1, cfg["max_subscriptions"] // cfg["max_connections"])
    per_client = min(own, SUBSCRIPTIONS)
    lo, hi = SMALLEST["max_connections"], cfg["max_connections"]
    if run_need(_with_clients(c, cfg, lo, per_client), code) > heap:
        return None
    while lo < hi:  # the most clients that fit
        mid = (lo + hi + 1) // 2
        if run_need(_with_clients(c, cfg, mid, per_client), code) <= heap:
            lo = mid
        else:
            hi = mid - 1
    best = _with_clients(c, cfg, lo, per_client)
    roomier = _with_clients(c, cfg, lo, own)
    return roomier if run_need(roomier, code) <= heap else best


def smallest_heap(cfg, code="bytecode"):
    """The smallest heap, in whole kB, with which for_heap(cfg) gives a broker."""
    lo, hi = 1, max(2, run_need(cfg, code) // 1024 + 1)
    while lo < hi:
        mid = (lo + hi) // 2
        if for_heap(cfg, mid * 1024, code) is None:
            lo = mid + 1
        else:
            hi = mid
    return lo * 1024
