"""Unit tests of Session.next_pid (firmware/ubroker/session.py), on CPython: an outbound
packet id is never one still in use (MQTT-2.3.1-2), also when the ids come round past
65535 while some messages stay unacknowledged, which the search-once-then-count-up shortcut
must handle. Through the network the same rule is covered by test_publish's QoS 1/2 tests;
wrapping 65535 ids there would take minutes."""

import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIRMWARE = os.path.join(ROOT, "firmware")
if FIRMWARE not in sys.path:
    sys.path.insert(0, FIRMWARE)

from ubroker.session import PID, Session  # noqa: E402


def _run(steps, window, stuck, seed):
    """Assign steps ids into a window of at most `window` entries; the entries whose first id
    is in `stuck` are never acknowledged, the others are acknowledged in random order."""
    rnd = random.Random(seed)
    s = Session(b"c", True)
    s.inflight = []
    for _ in range(steps):
        if len(s.inflight) >= window:
            movable = [i for i, e in enumerate(s.inflight) if e[PID] not in stuck]
            if not movable:
                break
            s.inflight.pop(rnd.choice(movable))
        pid = s.next_pid()
        assert 1 <= pid <= 65535
        in_use = [e[PID] for e in s.inflight]
        assert pid not in in_use, "MQTT-2.3.1-2: id %d given while still in flight" % pid
        s.inflight.append([pid, 1, None, 0])
    return s


def test_next_pid_skips_ids_in_flight_across_wraparound():
    """MQTT-2.3.1-2: three messages never acknowledged keep ids 1, 2 and 3 while 200,000 more
    are given (three times round the id space): none of those ids is given again."""
    s = _run(200_000, 20, {1, 2, 3}, 1)
    assert sorted(e[PID] for e in s.inflight if e[PID] <= 3) == [1, 2, 3]


def test_next_pid_random_windows():
    """MQTT-2.3.1-2 with random acknowledgement orders and window sizes, past the wrap."""
    for seed in range(4):
        rnd = random.Random(seed)
        _run(70_000, rnd.randint(1, 64), set(rnd.sample(range(1, 65536), 5)), seed)


def test_next_pid_ids_in_flight_before_the_first_search():
    """Entries recovered from the store carry ids the counter has not seen: the first id
    given afterwards searches them (MQTT-2.3.1-2)."""
    s = Session(b"c", False)
    s.inflight = [[p, 1, None, 0] for p in (1, 2, 3, 5)]
    got = [s.next_pid() for _ in range(3)]
    assert got == [4, 6, 7]


def test_filters_of_a_session_behave_as_a_set():
    """A session keeps one filter as the bytes themselves and several as a list (no 1-tuple:
    a heap block per subscribed client). Random adds and drops, with filters that are
    substrings of one another (the trap of `in` on bytes), agree with a set at every step."""
    pool = [b"a", b"a/b", b"a/b/c", b"b", b"a/+", b"#", b"a/b/c/d"]
    for seed in range(20):
        rnd = random.Random(seed)
        s = Session(b"c", True)
        model = set()
        for _ in range(300):
            flt = rnd.choice(pool)
            if rnd.random() < 0.55:
                s.add_filter(flt)
                model.add(flt)
            else:
                assert s.drop_filter(flt) == (flt in model)
                model.discard(flt)
            assert sorted(s.filters()) == sorted(model)
            assert s.nfilters() == len(model)
            for f in pool:
                assert s.has_filter(f) == (f in model), (f, s.subs, model)
            assert s.subs is None or type(s.subs) is (list if len(model) > 1 else bytes)
