"""The broker's heap on 32 bits. Every other heap figure of the suite comes from the 64-bit
unix port, while the boards (ESP32, RP2040) are 32-bit: here the real broker runs in the
webassembly port of MicroPython, a 32-bit interpreter (tools/heap32/: run.mjs loads it in
Node, heapsteps.py measures inside it through tests/support/broker_sim.py's fake sockets; `make
heap32-deps` installs it). Its heap is fixed at the board's heap_budget, as a board's is.

The figures are kept in tools/heap32/figures.json, beside their 64-bit counterparts:
`.venv/bin/python tools/heap32/heap32.py --write` measures both ports and rewrites it."""

import json
import os
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools", "heap32"))
import heap32  # noqa: E402

KINDS = ("qos0_read", "qos1_read", "qos0_consume", "qos1_consume")


@pytest.fixture(scope="module")
def fig():
    """The 32-bit figures, measured now (every board, the costs, the hot path)."""
    if not os.path.exists(heap32.PORT):
        pytest.fail("no webassembly MicroPython: run `make heap32-deps` (make test does)")
    return heap32.run_jobs(heap32.jobs32(heap32.boards()))


@pytest.fixture(scope="module")
def stored():
    with open(heap32.FIGURES) as f:
        return json.load(f)


def test_the_interpreter_is_32_bit_and_its_heap_cannot_grow(fig):
    """The figures are 32-bit ones only if the interpreter is: sys.maxsize 2**31 - 1. The heap
    is the first board's heap_budget (less the GC's own tables), and a block larger than what
    is free fails instead of making the port add a heap area."""
    r = fig["interpreter"]
    assert r["maxsize"] == 2**31 - 1
    budget = heap32.board_info(heap32.FIRST)["heap_budget"]
    assert 0.95 * budget < r["heap"] <= budget, r
    assert r["beyond"] == "fixed", r


@pytest.mark.parametrize("board", heap32.boards())
@pytest.mark.parametrize("store", [key for key, _ in heap32.STORES])
def test_the_profile_clients_fit_its_heap_on_32_bits(fig, board, store):
    """max_connections clients, each connected then subscribed to a topic of its own at QoS 1
    (granted), in a heap of the profile's heap_budget, with the free heap never below its
    heap_reserve before a CONNECT or SUBSCRIBE (where the broker would refuse), store off and
    on (a profile with flash_store runs with it on). The harness's fake sockets, client
    objects and broker_sim module (about 20 kB at 64 clients) count against the heap too, so
    a board has more room than this."""
    r = fig["boards"][board][store]
    assert r.get("fitted") == r.get("of") == heap32.board_info(board)["max_connections"], r


@pytest.mark.parametrize("board", heap32.image_boards())
@pytest.mark.parametrize("store", heap32.STORES, ids=[key for key, _ in heap32.STORES])
def test_an_image_profile_clients_fit_its_heap_on_32_bits(board, store):
    """As above for a board running ubroker's firmware image, whose broker is frozen: this
    port loads it from .mpy files, so its heap is the profile's heap_budget and what
    freezing frees at start (firmware/image/frozen_heap.json), which the .mpy files take
    here instead. Not kept in figures.json, which holds stock boards only."""
    key, folder = store
    info = heap32.board_info(board)
    heap = heap32.image_heap(board, bool(folder))
    assert heap > info["heap_budget"]
    r = heap32.run32("fit", ["boards/%s.conf" % board, folder], info["opt_level"], heap=heap, fixed=True)
    assert r.get("fitted") == r.get("of") == info["max_connections"], (key, heap, r)


def test_the_fit_check_fails_in_a_heap_too_small():
    """The fit check can fail: in three quarters of its heap_budget, the first board's
    profile with room in its tables for 8 times its max_connections (the network stack's
    bound, a few clients) does not hold them all, and the step says where they stopped."""
    info = heap32.board_info(heap32.FIRST)
    n = 8 * info["max_connections"]
    r = heap32.run32("fit", ["boards/%s.conf" % heap32.FIRST, "", str(n), "max_connections=%d" % n,
                             "max_sessions=%d" % n], info["opt_level"], heap=info["heap_budget"] * 3 // 4, fixed=True)
    assert 0 < r.get("fitted", 0) < r.get("of") == n, r
    assert "stopped" in r, r


def test_the_hot_path_leaves_nothing_on_the_heap(fig):
    """After a warm-up, a burst of QoS 0 or QoS 1 messages (the subscriber acknowledging)
    leaves the heap as it found it, once collected: no table or counter grows per message.
    Every message is delivered."""
    h = fig["hot"]
    for kind in KINDS:
        assert h["delivered_" + kind] > 0 and h["grow_" + kind] == 0, (kind, h)


def test_heap_lock_agrees_with_the_bytes_counted(fig):
    """The allocation count is right: a kind of message that allocates fails between
    micropython.heap_lock() and heap_unlock() (MemoryError raised, or taken by the broker),
    one that allocates nothing gets through."""
    h = fig["hot"]
    locked = [k for k in KINDS if "locked_" + k in h]
    assert locked, h
    for kind in locked:
        r = h["locked_" + kind]
        failed = "raised=yes" in r or "broker_memory_errors=0" not in r or "delivered=0" in r
        assert failed == (h["alloc_" + kind] > 0), (kind, r, h["alloc_" + kind])


def _fields(text):
    return dict(kv.split("=") for kv in text.split())


@pytest.mark.parametrize("kind", KINDS)
def test_the_3_1_1_hot_path_allocates_nothing_under_heap_lock(fig, kind):
    """The steady state of MQTT 3.1.1 on 32 bits: a subscriber (QoS 1 subscription, clean
    session) gets the QoS 0 or QoS 1 PUBLISHes of another client on a topic seen before,
    acknowledging the QoS 1 ones at once (its PUBACKs free their in-flight slots, MQTT-4.3.2-1).
    A message allocates 0 bytes, read from its socket or handed to the parser; and a whole
    burst (32 messages) runs between
    micropython.heap_lock() and heap_unlock(): no MemoryError, none taken by the broker, every
    message delivered in the pass that read it with the publisher's topic (MQTT-3.3.2-3) and
    payload byte for byte, and every QoS 1 one acknowledged to its publisher with its own
    packet id (MQTT-4.3.2-2)."""
    h = fig["hot"]
    assert h["alloc_" + kind] == 0, (kind, h["alloc_" + kind])
    r = _fields(h["locked_burst_" + kind])
    sent = int(r["sent"])
    assert sent == 32, r
    assert r["raised"] == "no" and r["broker_memory_errors"] == "0", r
    assert int(r["delivered"]) == int(r["intact"]) == sent, r
    assert int(r["acked"]) == (sent if kind.startswith("qos1") else 0), r


def test_no_hot_path_counter_allocates_past_the_32_bit_small_int(fig):
    """Each counter of Broker.stats that messages move, set to 2**30 - 1 (the largest small
    int on 32 bits) and carried as the server's once-a-second tick does (Stats.carry), costs
    no allocation per message beyond the usual, and its total (Stats.total) stays right."""
    h = fig["hot"]
    counters = {k: v for k, v in h.items() if k.startswith("counter_")}
    assert len(counters) >= 5, h  # msgs_in, msgs_out, pub_in, pub_out, bytes_in, bytes_out
    assert all(v == 0 for v in counters.values()), counters
    assert all(h["counted_" + k[8:]] == 1 for k in counters), h


def test_closing_a_connection_allocates_nothing(fig):
    """Closing a clean session's connection allocates nothing, as Server.consume's
    MemoryError handler needs on a full heap: between micropython.heap_lock() and
    heap_unlock() it raises no MemoryError (before f864d14, Broker.detach and drop_session
    set fields the objects held only as class defaults: new instance attributes)."""
    assert fig["hot"]["locked_close"] == "raised=no"


def _close(a, b):
    """Within a heap block (15 B) or 2 %, whichever is more."""
    return abs(a - b) <= max(15, 0.02 * abs(b))


def test_figures_json_holds_these_figures(fig, stored):
    """tools/heap32/figures.json holds what is measured now: the broker's heap at start, the
    clients that fit, the costs per object and the bytes per message (each within a heap block
    or 2 %). When the broker changes, rewrite it with `.venv/bin/python tools/heap32/heap32.py
    --write` (64-bit figures beside)."""
    stale = []
    for board, b in fig["boards"].items():
        for store, r in b.items():
            old = stored["boards"].get(board, {}).get("32", {}).get(store, {})
            for key in ("start_broker", "fitted"):
                if key not in old or not _close(r[key], old[key]):
                    stale.append("%s %s %s: %s, stored %s" % (board, store, key, r[key], old.get(key)))
    for part in ("costs", "hot"):
        old = stored[part]["32"]
        for key, v in fig[part].items():
            if isinstance(v, int) and (key not in old or not _close(v, old[key])):
                stale.append("%s %s: %s, stored %s" % (part, key, v, old.get(key)))
    assert not stale, "tools/heap32/figures.json is stale (rewrite it: .venv/bin/python " \
                      "tools/heap32/heap32.py --write):\n" + "\n".join(stale)


# The one-time figures of MQTT 5 (module loads) move by a qstr chunk or so with any name
# added to the harness or the broker: compared more loosely than the per-object ones.
V5_ONCE = ("v5_modules", "v5_subscribe_module", "shared_first")


@pytest.fixture(scope="module")
def v5():
    """heapsteps_v5.v5costs, measured now on 32 bits (esp32 profile)."""
    info = heap32.board_info(heap32.FIRST)
    raw = heap32.run32("heapsteps_v5.v5costs", ["boards/%s.conf" % heap32.FIRST] + heap32.measure_heap_args(),
                       info["opt_level"])
    return heap32.v5_figures(raw)


def test_what_mqtt_5_costs_on_32_bits_is_plausible(v5):
    """An idle v5 client with one subscription costs more than a 3.1.1 one (its V5Conn, its
    session's options dict) but well under twice as much; the v5 modules loaded at the first
    v5 CONNECT are kilobytes (about 17 kB), v5_subscribe.py and the first shared subscription
    (v5_shared.py) a few; a member of a shared group less than a new group of one; a topic
    alias less than a client, eight of them more than one."""
    assert 100 < v5["idle_311"] < v5["idle_v5"] < 2 * v5["idle_311"], v5
    assert 8000 < v5["v5_modules"] < 40000, v5
    assert 500 < v5["v5_subscribe_module"] < 8000, v5
    assert 1000 < v5["shared_first"] < 8000, v5
    assert 0 < v5["shared_member"] < v5["shared_group"] < 1000, v5
    assert 16 < v5["alias"] < v5["idle_v5"] and v5["alias"] < v5["aliases_8"] < 8 * v5["idle_v5"], v5


def test_figures_json_holds_the_mqtt_5_figures(v5, stored):
    """tools/heap32/figures.json's boards.esp32.v5 holds what is measured now: each per-object
    figure within a heap block or 2 %, each one-time figure within 5 % (a qstr chunk more or
    less); rewrite it with `.venv/bin/python tools/heap32/heap32.py --write`."""
    old = stored["boards"][heap32.FIRST].get("v5", {}).get("32", {})
    stale = []
    for key, v in v5.items():
        if key.endswith("_qstr_pool"):
            continue
        ok = key in old and (abs(v - old[key]) <= 0.05 * old[key] if key in V5_ONCE else _close(v, old[key]))
        if not ok:
            stale.append("v5 %s: %s, stored %s" % (key, v, old.get(key)))
    assert not stale, "tools/heap32/figures.json is stale (rewrite it: .venv/bin/python " \
                      "tools/heap32/heap32.py --write):\n" + "\n".join(stale)
