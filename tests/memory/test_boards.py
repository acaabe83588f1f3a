"""Every board profile parses with the firmware's own parser, sets every required key, names an
architecture mpy-cross knows, and its limits fit its heap budget by the cost model in
host_tools/ubroker_tools/budget.py (the figures tools/heap32 measured: 32-bit for the boards,
64-bit for the unix profile)."""

import os
import re

import pytest

from ubroker_tools import budget, build, firmware, paths, profiles

profiles.fwconfig()  # puts firmware/ on sys.path
from ubroker import sensor_setup  # noqa: E402

BOARDS = paths.known_boards()


def test_expected_boards_present():
    assert {"esp32", "esp32s3", "rp2-pico-w", "rp2-pico2-w", "unix"} <= set(BOARDS)


@pytest.mark.parametrize("board", BOARDS)
def test_profile_complete(board):
    prof = profiles.load_board(board)  # raises ConfigError with line numbers
    assert prof["board"] == board, "the profile's `board` line must match its file name"
    assert not profiles.missing_keys(prof), "missing keys: %s" % profiles.missing_keys(prof)
    assert prof["arch"] in profiles.ARCHES
    assert prof.get("emit", "bytecode") in build.EMITS
    assert prof.get("opt_level", 0) in build.OPT_LEVELS
    assert prof["max_subscriptions_per_client"] <= prof["max_subscriptions"]
    assert prof["max_sessions"] >= prof["max_connections"]
    # a topic fits a packet (max_packet_size 0: none announced, packets up to max_queued_bytes)
    assert prof["max_topic_length"] < (prof["max_packet_size"] or prof["max_queued_bytes"])
    if prof["arch"] != "none":
        assert profiles.usb_ids(prof), "a USB board needs usb_id lines for `ubroker flash --port auto`"
        assert prof["wifi"] in ("station", "station+ap")
    for s in prof["sensor"]:
        assert s.split()[0] in sensor_setup.BUILTIN


def test_arches_one_table():
    """Every arch mpy-cross can be asked for is one a profile may name, armv6 included (the
    list profiles checked against had lost it), and each has its own .mpy header byte."""
    assert "armv6" in profiles.ARCHES
    for arch in profiles.ARCHES:
        assert build.code_options({"arch": arch}, "t")[0] == arch
    assert len({build.header_byte(a) for a in profiles.ARCHES}) == len(profiles.ARCHES)


@pytest.mark.parametrize("board", BOARDS)
def test_limits_fit_heap_budget(board):
    """No profile overcommits its heap by the cost model: every board fits, none is excused
    (a list of excused boards stood here, empty, so its branch never ran). A limit raised
    past the budget, or a cost that grows, fails here for that board with the model's report."""
    prof = profiles.load_board(board)
    ok, need, have = budget.fits(prof)
    assert ok, "board %s needs %d of %d bytes:\n%s" % (board, need, have, budget.report(prof))


def test_an_overcommitted_profile_does_not_fit():
    """The check above has teeth: the esp32 profile with twice the 64 clients its heap is sized
    for (its max_connections is stock lwIP's 9), twice its sessions and subscriptions, needs
    more than its budget."""
    prof = dict(profiles.load_board("esp32"))
    prof["max_connections"] = 128
    prof["max_sessions"] *= 2
    prof["max_subscriptions"] *= 2
    ok, need, have = budget.fits(prof)
    assert not ok and need > have, (need, have)


def test_cost_model_counts_every_table():
    """Raising any one limit raises the modelled cost: no limit escapes the model."""
    prof = profiles.load_board("rp2-pico-w")
    base = budget.total(prof)
    for key in ("max_connections", "max_sessions", "max_subscriptions", "max_queued_bytes",
                "max_retained_messages", "max_retained_bytes", "out_buffer_size", "max_packet_size"):
        bigger = dict(prof)
        bigger[key] = prof[key] * 4
        assert budget.total(bigger) > base, key


def test_32bit_objects_cost_less_than_64bit():
    """A board is priced with the 32-bit figures (tools/heap32/figures.json), the same
    profile as the unix port (arch none) with the 64-bit ones: every measured item costs
    less on 32 bits, and so does the whole."""
    prof = dict(profiles.load_board("rp2-pico-w"))
    small = dict(budget.costs(prof))
    prof["arch"] = "none"
    big = dict(budget.costs(prof))
    assert sum(big.values()) > sum(small.values())
    start = "at start: broker code and server (measured)"
    assert big[start] > small[start] > 0
    for item in ("client", "subscription", "message", "retained"):
        assert budget.per_item(64)[item] > budget.per_item(32)[item] > 0, item


def test_boards_priced_with_the_32bit_measurement():
    """The per-object figures a board is priced with are the 32-bit ones heap32 measured
    (figures.json costs.32), and its start is that board's own measured start."""
    fig = budget.figures()
    c32 = fig["costs"]["32"]
    assert budget.per_item(32) == {"client": c32["per_client"], "subscription": c32["per_subscription"],
                                   "message": max(c32["per_queued"], c32["per_inflight"]),
                                   "retained": c32["per_retained"]}
    prof = profiles.fwconfig().resolve(profiles.load_board("esp32"))
    start = budget.code_and_server(prof, 32) + budget.tables_bytes(prof, 32)
    assert start == fig["boards"]["esp32"]["32"]["store_on"]["start_broker"]


@pytest.mark.parametrize("image", sorted(firmware.STOCK))
def test_an_image_board_is_priced_as_its_stock_board_less_what_freezing_frees(image):
    """A board running ubroker's firmware image is not in figures.json (heap32 cannot freeze
    the broker): its broker's code and server at start are its stock board's, measured, less
    what freezing the modules loaded by then frees (firmware/image/frozen_heap.json, 32
    bits). The same profile without its `frozen` line is priced as the stock board."""
    fw = profiles.fwconfig()
    cfg = fw.resolve(profiles.load_board(image))
    stock = fw.resolve(profiles.load_board(firmware.STOCK[image]))
    saving = firmware.frozen_saving(cfg)
    assert saving > 0 and budget._store(cfg) == budget._store(stock)
    assert budget.code_and_server(cfg, 32) == budget.code_and_server(stock, 32) - saving > 0
    unfrozen = dict(cfg)
    del unfrozen["frozen"]
    assert budget.code_and_server(unfrozen, 32) == budget.code_and_server(stock, 32)


def test_frozen_saving_counts_what_the_broker_holds_at_start():
    """firmware/image/frozen_heap.json has a figure for every module of the package (one added
    without a measurement would be priced as saving nothing), and frozen_saving counts the
    modules a started broker holds: the core less those start-up forgets (each of them does
    call ubroker.forget), sysinfo.py (loaded at its first use, Server.sysinfo) and long_packet.py
    (at the first packet longer than the read buffer), and with the store on store_persist.py and what it imports at once,
    not store_replay.py (forgotten after the replay) nor store_v5.py (MQTT 5 state only)."""
    mods = firmware.heap_figures()["modules"]
    assert sorted(set(firmware.package_modules()) - set(mods)) == []
    sources = firmware.package_modules()
    text = "".join(open(src).read() for src in sources.values())
    for path in firmware.FORGOTTEN_AT_START:
        assert 'forget("%s")' % path.split("/")[1][:-3] in text
    freed = {p: m["mpy"] - m["frozen"] for p, m in mods.items()}
    core = sum(freed[p] for p in firmware.group_files("core") if p in freed)
    cfg = profiles.fwconfig().resolve(profiles.load_board("rp2-pico-w-image"))
    off = core - freed["ubroker/config.py"] - freed["ubroker/listen.py"] - freed["ubroker/sysinfo.py"] \
        - freed["ubroker/long_packet.py"]
    assert "def sysinfo(self)" in text and "from .sysinfo import" in text  # loaded at first use
    assert "from .long_packet import" in text  # loaded at the first long packet (Server._long)
    assert firmware.frozen_saving(cfg, False) == off
    assert firmware.frozen_saving(cfg, True) == off + freed["ubroker/store_log.py"] + freed["ubroker/store_persist.py"]


def test_entry_cost_is_the_firmwares():
    """budget.ENTRY_COST is what the broker's max_queued_bytes counts per message on each
    word width (firmware/ubroker/session.py): the model bounds the held messages' heap by it."""
    with open(os.path.join(paths.FIRMWARE, "ubroker", "session.py")) as f:
        m = re.search(r"^ENTRY_COST = (\d+) if sys.maxsize > 1 << 32 else (\d+)$", f.read(), re.M)
    assert m, "session.py no longer sets ENTRY_COST in one line"
    assert budget.ENTRY_COST == {64: int(m.group(1)), 32: int(m.group(2))}


def test_sensors_cost_heap_only_when_on():
    """The sensors' code is priced only when sensor_interval turns them on: as measured on
    the 64-bit port, and less on a 32-bit board."""
    for board, lo, hi in (("esp32", 1, budget.SENSORS_64 - 1), ("unix", budget.SENSORS_64, budget.SENSORS_64)):
        prof = dict(profiles.load_board(board))
        prof.pop("sensor_interval", None)
        off = budget.total(prof)
        prof["sensor_interval"] = 10
        assert lo <= budget.total(prof) - off <= hi, board
