"""Every board profile parses with the firmware's own parser, sets every required key, names an
architecture mpy-cross knows, and its limits fit its heap budget by the cost model in
host_tools/ubroker_tools/budget.py."""

import pytest

from ubroker_tools import budget, build, paths, profiles

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
    assert prof["max_topic_length"] < prof["max_packet_size"]
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
    """The check above has teeth: the esp32 profile with twice its clients and sessions
    needs more than its budget."""
    prof = dict(profiles.load_board("esp32"))
    prof["max_connections"] *= 2
    prof["max_sessions"] *= 2
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
    prof = dict(profiles.load_board("rp2-pico-w"))
    small = budget.total(prof)
    prof["arch"] = "none"
    assert budget.total(prof) > small


def test_sensors_cost_heap_only_when_on():
    prof = dict(profiles.load_board("esp32"))
    off = budget.total(prof)
    prof["sensor_interval"] = 10
    assert budget.total(prof) - off == int(budget.SENSORS_64 * 0.55)
