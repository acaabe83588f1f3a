"""The heap cost model: what a board's limits cost when every table is full, which must fit
the board's heap_budget. It prices with measured figures, read from one place,
tools/heap32/figures.json: 32-bit ones for the boards (arch not none), 64-bit ones for the
unix profile. At the end: what the unix port needs to start a profile, and a profile's
limits cut to fit a smaller heap (`ubroker run --heap` without --board).

Where the numbers come from
---------------------------
`.venv/bin/python tools/heap32/heap32.py --write` measures the broker in two MicroPythons,
on the same .mpy files at each board's opt_level, and writes figures.json: the webassembly
port (32-bit, as the ESP32 and RP2 boards are) and the unix port (64-bit).
tests/memory/test_heap32.py fails when the 32-bit figures there are stale.
- The broker's code and Server: per board profile, the broker's part of the heap at start
  (boards.B.32 / .64, start_broker, store off or on as the profile runs) less the tables
  and buffers that profile's limits size at start (start_tables below). What is left is the
  same for every board of one opt_level to within 1 kB, on both ports, so the start tables
  are priced apart: a config that raises a limit pays for its table.
- Per client, subscription, queued, in-flight and retained message (costs.32 / .64):
  tools/measure_heap.py's workload and limits over the esp32 profile (its CLIENTS, LIMITS,
  ...), the clients on tests/support/broker_sim.py's fake sockets. per_client counts the
  harness's fake socket and client object where a board has its socket object and poll
  entry: on the unix port, with real sockets, measure_heap.py gives 320 B a client against
  552 B here, so the client figure errs on the safe side.
- Queued and in-flight messages: max_queued_bytes bounds them, counting each as its topic,
  payload and ENTRY_COST (firmware/ubroker/session.py); the heap they take is that bound
  scaled by the measured cost per message where it is above ENTRY_COST (64-bit: 243 B).
- The interpreter and entry module after boot, BOOT: on the unix port, the heap line of
  `ubroker run --board esp32` less what heap32 measures for the broker there (store off):
  68,512 - 62,176 = 6,336 B at 66d5af8, 6,624 B in an earlier run as the code changed; 6.5 kB.
  Assumed the same on a board, whose main.py and network objects have not been measured.
Still estimates: an offline session is SESSION_SHARE of a client; BUSY_WRITERS output
buffers full at once; the sensors' code on 32 bits, SENSORS_64 scaled by what the broker's
own code takes on 32 bits against 64 (0.71 for esp32).
"""

import functools
import json
import os

from . import firmware, paths, profiles

FIGURES = os.path.join(paths.ROOT, "tools", "heap32", "figures.json")
BOOT = 6656
# What max_queued_bytes counts for a message beyond its topic and payload, as
# firmware/ubroker/session.py's ENTRY_COST on each word width.
ENTRY_COST = {32: 128, 64: 224}
SESSION_SHARE = 0.4  # an offline session is the client's cost without its connection (estimate)
TYPICAL_MESSAGE = 64  # a sensor reading: ~24 B topic, ~40 B payload
BUSY_WRITERS = 4
# Local sensors (sensor_interval > 0) load their code only then: measured with `ubroker run
# --board esp32` (64-bit), heap in use at start 66.3 KB off, 73.2 KB with heap_free (the
# scheduler and the board sensors' module), 77.6 KB with heap_free, cpu_load, mem_used and
# disk_used (plus the Linux sensors' module). A driver module such as bme280 adds ~5.4 KB.
SENSORS_64 = 12 * 1024
# A listener with `protocol websockets` (docs/websockets.md; 64-bit unix port, esp32 profile as
# .mpy): ws_frame.py and its Ws stay from the start, 4,736 B; ws_handshake.py is loaded while a
# request head is answered, 5,184 B that must then be free; a WebSocket client keeps 170 B
# more than a TCP one (tests/memory/test_ws_memory.py). On 32 bits the code is scaled as the
# sensors' is and the client as per_client is (estimates: not measured on a board).
# The viper unmask (ws_unmask.py) and the faster framing added 928 B to the 4,736 (x64 .mpy
# -O3, esp32 profile: 81,600 -> 82,528 B after listen(); docs/benchmark.md, WebSockets).
WS_CODE_64 = 4736 + 928
WS_HANDSHAKE_64 = 5184
WS_CLIENT_64 = 170
HEADROOM = 0.0  # fraction of the budget kept free for fragmentation (raise when measured)


@functools.lru_cache(maxsize=1)
def figures():
    """tools/heap32/figures.json, as heap32.py --write left it."""
    with open(FIGURES) as f:
        return json.load(f)


def word_bits(profile):
    return 64 if profile.get("arch", "none") in ("none", "x64") else 32


def per_item(bits):
    """{item: bytes} on a 32- or 64-bit port, from the measured costs per object."""
    c = figures()["costs"][str(bits)]
    return {"client": c["per_client"], "subscription": c["per_subscription"],
            "message": max(c["per_queued"], c["per_inflight"]), "retained": c["per_retained"]}


def _store(cfg):
    on = cfg.get("flash_store") or (cfg.get("persistence") and cfg.get("persistence_location"))
    return "store_on" if on else "store_off"


def _resolved(profile):
    return profiles.fwconfig().resolve(profile)


def tables_bytes(cfg, bits):
    return sum(b for _, b in start_tables(cfg, bits // 8))


def code_and_server(cfg, bits, store=None):
    """The broker's part of the heap at start without its start tables, measured for cfg's
    board (store: as cfg runs); for a board figures.json does not have yet, the most any
    board took. A board running ubroker's firmware image (firmware.STOCK) holds its stock
    board's part less what freezing frees at start, measured on 32 bits
    (firmware.frozen_saving); on 64 bits, where no image runs, that saving scaled as the
    stock part is, so the 32/64 ratio sensors() scales by stays the stock board's."""
    fig = figures()["boards"]
    store = store or _store(cfg)

    def part(board, bits=bits):
        own = _resolved(profiles.load_board(board))
        return fig[board][str(bits)][store]["start_broker"] - tables_bytes(own, bits)

    board = cfg.get("board")
    stock = firmware.STOCK.get(board)
    if stock in fig:
        saving = firmware.frozen_saving(cfg, store == "store_on")
        if bits != 32:
            saving = saving * part(stock) // part(stock, 32)
        return part(stock) - saving
    if board in fig:
        return part(board)
    return max(part(b) for b in fig)


def _code(cfg, bits, n64):
    """n64 bytes of code measured on 64 bits, on bits: on 32 bits scaled as the broker's own
    code is (store off: code alone)."""
    if bits == 64:
        return n64
    return n64 * code_and_server(cfg, 32, "store_off") // code_and_server(cfg, 64, "store_off")


def sensors(cfg, bits):
    """The sensors' code, when cfg turns them on."""
    return _code(cfg, bits, SENSORS_64) if cfg.get("sensor_interval") else 0


def websockets(cfg):
    """True when a listener of cfg (a resolved config) speaks WebSockets."""
    return "websockets" in (cfg.get("protocols") or {}).values()


def ws_client(bits):
    """What a WebSocket client keeps beyond a TCP one."""
    c = figures()["costs"]
    return WS_CLIENT_64 if bits == 64 else WS_CLIENT_64 * c["32"]["per_client"] // c["64"]["per_client"]


def _start_costs(cfg, bits):
    return [
        ("at start: interpreter, entry module (BOOT)", BOOT),
        ("at start: broker code and server (measured)", code_and_server(cfg, bits)),
        ("at start: tables and buffers (%d-bit)" % bits, tables_bytes(cfg, bits)),
        ("sensors (sensor_interval > 0)", sensors(cfg, bits)),
        ("websockets: ws_frame.py, and ws_handshake.py loaded",
         _code(cfg, bits, WS_CODE_64 + WS_HANDSHAKE_64) if websockets(cfg) else 0),
    ]


def _use_costs(cfg, bits):
    """[(item, bytes)] every table full takes beyond the start."""
    per = per_item(bits)
    conns = cfg["max_connections"]
    offline = max(0, cfg["max_sessions"] - conns)
    session = int(per["client"] * SESSION_SHARE)
    entry = ENTRY_COST[bits]
    held = cfg["max_queued_bytes"] * max(entry, per["message"]) // entry
    ws = ws_client(bits) if websockets(cfg) else 0  # every client may come over a WebSocket
    return [
        ("clients: %d x %d B" % (conns, per["client"]), conns * per["client"]),
        ("websocket clients: %d x %d B more" % (conns, ws), conns * ws),
        ("offline sessions: %d x %d B" % (offline, session), offline * session),
        ("subscriptions: %d x %d B" % (cfg["max_subscriptions"], per["subscription"]),
         cfg["max_subscriptions"] * per["subscription"]),
        ("queued and in-flight: %d B x %d / %d" % (cfg["max_queued_bytes"], max(entry, per["message"]), entry),
         held),
        ("retained: %d B + %d x %d B" % (cfg["max_retained_bytes"], cfg["max_retained_messages"],
                                          per["retained"]),
         cfg["max_retained_bytes"] + cfg["max_retained_messages"] * per["retained"]),
        ("output buffers: %d x %d B" % (BUSY_WRITERS, cfg["out_buffer_size"]),
         BUSY_WRITERS * cfg["out_buffer_size"]),
    ]


def costs(profile):
    """[(item, bytes)] for a profile (or a resolved config with its keys), priced with the
    figures of its word width."""
    cfg = _resolved(profile)
    bits = word_bits(cfg)
    return _start_costs(cfg, bits) + _use_costs(cfg, bits)


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
# websockets: the smallest heap that starts the esp32 limits with two listeners and serves a
# CONNECT on the first and one on the second, TCP against WebSockets (handshake included):
# 79k/87k as -O3 bytecode, 67k/70k native, 118k/118k from source, whose start peak is above
# what the WebSocket code adds (2026-12-06); source is given bytecode's figure all the same.
# Beside TLS it adds nothing (feature_bytes): with a TLS listener the same smallest heap, 92k
# bytecode and 77k native, served a CONNECT over TLS and one over a TLS WebSocket (wss): the
# TLS start's peak comes first and leaves room for the WebSocket code and handshake after.
FEATURES_64 = {
    "persistence": {"native": 12 * 1024, "bytecode": 16 * 1024, "source": 24 * 1024},
    "bridge": {"native": 6 * 1024, "bytecode": 6 * 1024, "source": 6 * 1024},
    "sensors": {"native": 20 * 1024, "bytecode": 12 * 1024, "source": 12 * 1024},  # the unix profile's five
    "security": {"native": 10 * 1024, "bytecode": 10 * 1024, "source": 10 * 1024},  # password and acl files
    "tls": {"native": 16 * 1024, "bytecode": 16 * 1024, "source": 16 * 1024},  # the ssl module, sec_gate.py
    "websockets": {"native": 3 * 1024, "bytecode": 8 * 1024, "source": 8 * 1024},  # ws_frame.py, ws_handshake.py
}


def features(cfg):
    """The FEATURES_64 cfg (a resolved config) turns on."""
    on = {
        "persistence": cfg.get("persistence") and cfg.get("persistence_location"),
        "bridge": cfg.get("connection"),
        "sensors": cfg.get("sensor_interval"),
        "security": cfg.get("password_file") or cfg.get("acl_file"),
        "tls": cfg.get("tls") or cfg.get("max_connection_rate"),
        "websockets": websockets(cfg),
    }
    return [name for name in FEATURES_64 if on[name]]


def feature_bytes(cfg, code="bytecode"):
    """What the FEATURES_64 cfg turns on add to the smallest heap that starts, by code form
    (websockets: nothing beside tls, as measured above)."""
    on = features(cfg)
    return sum(FEATURES_64[f][code] for f in on if not (f == "websockets" and "tls" in on))


def _block(n):
    return (n + 15) // 16 * 16  # the GC allocates in 16-byte blocks, on the unix port and on 32 bits


def _table(n, word):
    return _block(2 * word * ((n + 2 + n // 16) | 1))  # buffers.table(n): a key and a value per slot


def start_tables(cfg, word=8):
    """[(item, bytes)] the broker allocates at start from its limits (server.py, broker.py,
    buffers.py), pointers of word bytes (8: the unix port; 4: a board). On the 64-bit port
    each matched the heap in use after start to 64 B when one limit at a time was raised
    from the esp32 profile's."""
    socks = cfg["max_connections"] + 8
    pool = cfg["buffer_pool_size"]
    pool_buf = min(4096, max(cfg["out_buffer_size"], 2 * cfg["read_buffer_size"]))
    return [
        # max_packet_size 0 (none): rbuf takes packets up to read_buffer_size (server.py)
        ("read buffer", _block((cfg["max_packet_size"] or cfg["read_buffer_size"]) + 5 + cfg["read_buffer_size"])),
        ("output scratch", _block(cfg["out_buffer_size"])),
        ("buffer pool: %d x %d B" % (pool, pool_buf), pool * _block(pool_buf) + _block(word * pool)),
        ("connection table and list: %d sockets" % socks, _table(socks, word) + _block(word * socks)),
        ("session table: %d" % cfg["max_sessions"], _table(cfg["max_sessions"], word)),
        ("subscription table: %d" % cfg["max_subscriptions"], _table(cfg["max_subscriptions"], word)),
        ("retained table: %d" % cfg["max_retained_messages"], _table(cfg["max_retained_messages"], word)),
    ]


def start_need(cfg, code="bytecode"):
    """Heap the unix port needs to start the broker with cfg, its code loaded as code (a
    START_64 key: native, bytecode or source)."""
    t = sum(b for _, b in start_tables(cfg))
    return START_64[code] + t + t // TABLE_SLACK + feature_bytes(cfg, code)


def run_need(cfg, code="bytecode"):
    """Heap the unix port needs to start with cfg and then hold every table full: the start,
    and what costs() prices beyond it (64-bit figures)."""
    return start_need(cfg, code) + sum(b for _, b in _use_costs(cfg, 64))


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
# Subscriptions per client in a cut profile's table (esp32 has 1.5, unix 4): each takes a
# fifth of a client (per_item(64)), and 16 clients with 4 each do not fit 96k as bytecode
# (run_need 103 kB; 92 kB native).
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
        # max_packet_size 0, no limit, is the largest of all: cut to the share like any other
        was = cfg[key] or value if key == "max_packet_size" else cfg[key]
        c[key] = max(SMALLEST.get(key, 1), min(was, value))

    # The read buffer holds a packet and a read of half a packet.
    cut("max_packet_size", _pow2(room // SHARES["packet"] * 2 // 3))
    cut("read_buffer_size", c["max_packet_size"] // 2)
    cut("max_topic_length", c["max_packet_size"] // 2)
    cut("max_client_id_length", c["max_topic_length"])
    cut("out_buffer_size", _pow2(room // SHARES["output"] // (BUSY_WRITERS + 1)))
    pool_buf = min(4096, max(c["out_buffer_size"], 2 * c["read_buffer_size"]))
    cut("buffer_pool_size", room // SHARES["pool"] // pool_buf)
    # Held messages take max_queued_bytes scaled as _use_costs prices them.
    per = per_item(64)
    cut("max_queued_bytes", room // SHARES["queued"] * ENTRY_COST[64] // max(ENTRY_COST[64], per["message"]))
    cut("max_retained_messages", room // SHARES["retained"] // (RETAINED_MESSAGE + per["retained"]))
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
    room = heap - START_64[code] - feature_bytes(cfg, code)
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
