"""Unit tests of firmware/ubroker/topics.py (valid_topic, valid_filter, match_levels), run on
CPython and, with the same case table, inside the MicroPython unix port, where matching a
topic against a filter already split into levels must not allocate (checked with
micropython.heap_lock())."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIRMWARE = os.path.join(ROOT, "firmware")
MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")
if FIRMWARE not in sys.path:
    sys.path.insert(0, FIRMWARE)

from ubroker import topics  # noqa: E402

# (filter, topic, matches?) -- MQTT 4.7.1, 4.7.2 and their examples.
MATCH = [
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/tennis/player1/#", "sport/tennis/player2", False),
    ("sport/tennis/player1/#", "sport/tennis", False),
    ("sport/#", "sport", True),
    ("sport/#", "sport/", True),
    ("sport/#", "sports", False),
    ("sport/#", "spor", False),
    ("#", "sport", True),
    ("#", "/", True),
    ("#", "/finance", True),
    ("#", "a/b/c/d/e/f", True),
    ("/#", "/finance", True),
    ("/#", "finance", False),
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/tennis/+", "sport/tennis", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+", "sport", True),
    ("+", "/finance", False),
    ("+", "/", False),
    ("+/+", "/finance", True),
    ("+/+", "/", True),
    ("+/+", "a", False),
    ("+/+", "a/b/c", False),
    ("/+", "/finance", True),
    ("/+", "finance", False),
    ("+/tennis/#", "sport/tennis", True),
    ("+/tennis/#", "sport/tennis/player1/ranking", True),
    ("+/tennis/#", "sport/golf", False),
    ("+/+/#", "a", False),
    ("+/+/#", "a/b", True),
    ("a/+/c", "a//c", True),
    ("a/+/c", "a/b/c/d", False),
    ("+/+/+", "a//b", True),
    ("a//b", "a//b", True),
    ("a//b", "a/b", False),
    ("a/b", "a/b", True),
    ("a/b", "A/b", False),
    ("a/b", "a/b/", False),
    ("a/b", "a/bc", False),
    ("a/bc", "a/b", False),
    ("a/b", "a", False),
    ("a/b/", "a/b", False),
    ("a/b/", "a/b/", True),
    ("a b/+", "a b/c d", True),
    ("caf\u00e9/+", "caf\u00e9/x", True),
    ("caf\u00e9/+", "cafe/x", False),
    # $ topics: a leading wildcard never matches them (MQTT-4.7.2-1).
    ("#", "$SYS/x", False),
    ("#", "$SYS", False),
    ("+/monitor", "$SYS/monitor", False),
    ("+/#", "$SYS/monitor", False),
    ("+", "$SYS", False),
    ("$SYS/#", "$SYS/broker/clients/connected", True),
    ("$SYS/#", "$SYS", True),
    ("$SYS/+/uptime", "$SYS/broker/uptime", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ("$SYS/monitor/+", "$SYS/monitor", False),
    ("$SYS/broker/uptime", "$SYS/broker/uptime", True),
    ("a/$SYS", "a/$SYS", True),
    ("a/+", "a/$x", True),  # only a topic's first character makes it a $ topic
    ("a/#", "a/$x", True),
]

VALID_FILTERS = ["#", "+", "a", "/", "//", "a/#", "/#", "+/+", "+/#", "a//b", "a/+/b",
                 "sport/tennis/#", "$SYS/#", "+/tennis/#", "a b", "caf\u00e9/+"]
INVALID_FILTERS = ["", "a#", "#a", "a/#/b", "#/a", "a/b#", "##", "#/", "a/#/", "+#", "#+",
                   "a+", "+a", "a/+b", "a/b+/c", "a/b+", "++", "+/a+"]
VALID_TOPICS = ["a", "/", "//", "a/b", "/finance", "$SYS/x", " ", "a b/c", "caf\u00e9"]
INVALID_TOPICS = ["", "+", "#", "a/+", "a/#", "a+b", "a#b", "+/a", "#/a"]


def b(x):
    return x.encode()


def matches(flt, topic):
    """A filter against a topic, as the broker matches a wildcard subscription (the board
    keeps only match_levels, given the filter already split)."""
    return topics.match_levels(flt.split(b"/"), topic)


@pytest.mark.parametrize("flt,topic,expected", MATCH)
def test_matches_cpython(flt, topic, expected):
    """match_levels on CPython (MQTT 4.7.1, MQTT-4.7.2-1)."""
    assert matches(b(flt), b(topic)) is expected


@pytest.mark.parametrize("flt", VALID_FILTERS)
def test_valid_filter_accepts_cpython(flt):
    """Well-formed filters (MQTT 4.7.1)."""
    assert topics.valid_filter(b(flt))


@pytest.mark.parametrize("flt", INVALID_FILTERS)
def test_valid_filter_rejects_cpython(flt):
    """'#' only as the whole last level (MQTT-4.7.1-2), '+' only as a whole level
    (MQTT-4.7.1-3), never empty (MQTT-4.7.3-1)."""
    assert not topics.valid_filter(b(flt))


@pytest.mark.parametrize("topic", VALID_TOPICS)
def test_valid_topic_accepts_cpython(topic):
    assert topics.valid_topic(b(topic))


@pytest.mark.parametrize("topic", INVALID_TOPICS)
def test_valid_topic_rejects_cpython(topic):
    """No wildcard in a topic name (MQTT-3.3.2-2), never empty (MQTT-4.7.3-1)."""
    assert not topics.valid_topic(b(topic))


def test_every_valid_filter_matches_through_index_like_matches():
    """Index.collect finds the same subscribers as matches() for each table case: exact
    filters by lookup, wildcard filters by walking."""

    class Sub:
        def __init__(self, name):
            self.name = name
            self.mark = 0
            self.mq = 0

    idx = topics.Index()
    subs = {}
    for flt, _, _ in MATCH:
        if flt not in subs:
            subs[flt] = Sub(flt)
            assert idx.add(b(flt), subs[flt], 1) is True
    assert idx.count == len(subs)
    seq = 0
    for flt, topic, expected in MATCH:
        seq += 1
        hits = []
        idx.collect(b(topic), hits, seq)
        assert (subs[flt] in hits) is expected, (flt, topic)
        want = sorted(f for f in subs if matches(b(f), b(topic)))
        assert sorted(h.name for h in hits) == want, topic


# ------------------------------------------------------------------ MicroPython unix port

MP_SCRIPT = r"""
import json, micropython
from ubroker.topics import valid_topic, valid_filter, match_levels


def matches(flt, topic):
    return match_levels(flt.split(b"/"), topic)

MATCH = %(match)s
VALID_FILTERS = %(vf)s
INVALID_FILTERS = %(inf)s
VALID_TOPICS = %(vt)s
INVALID_TOPICS = %(it)s

wrong = []
for f, t, e in MATCH:
    if matches(f, t) is not e:
        wrong.append(["matches", repr(f), repr(t)])
for f in VALID_FILTERS:
    if not valid_filter(f):
        wrong.append(["valid_filter accepts", repr(f)])
for f in INVALID_FILTERS:
    if valid_filter(f):
        wrong.append(["valid_filter rejects", repr(f)])
for t in VALID_TOPICS:
    if not valid_topic(t):
        wrong.append(["valid_topic accepts", repr(t)])
for t in INVALID_TOPICS:
    if valid_topic(t):
        wrong.append(["valid_topic rejects", repr(t)])

# The heap lock really stops allocation in this build (else the check below proves nothing).
lock_works = False
micropython.heap_lock()
try:
    bytearray(64)
except MemoryError:
    lock_works = True
micropython.heap_unlock()

LEVELS = [f.split(b"/") for f, t, e in MATCH]
TOPICS = [t for f, t, e in MATCH]
EXPECT = [e for f, t, e in MATCH]
OUT = [None] * len(MATCH)


def run_locked(levels, topics, out):
    n = len(levels)
    micropython.heap_lock()
    try:
        for i in range(n):
            out[i] = match_levels(levels[i], topics[i])
    finally:
        micropython.heap_unlock()


allocates = None
try:
    run_locked(LEVELS, TOPICS, OUT)
except MemoryError:
    allocates = "MemoryError with the heap locked"
locked_wrong = [[repr(MATCH[i][0]), repr(MATCH[i][1])] for i in range(len(MATCH))
                if OUT[i] is not EXPECT[i]]
print(json.dumps({"wrong": wrong, "lock_works": lock_works, "allocates": allocates,
                  "locked_wrong": locked_wrong, "cases": len(MATCH)}))
"""


def _mp_literal(items):
    return "[" + ", ".join(items) + "]"


@pytest.fixture(scope="module")
def mp_result(tmp_path_factory):
    match = _mp_literal("(%r, %r, %r)" % (b(f), b(t), e) for f, t, e in MATCH)
    script = MP_SCRIPT % {
        "match": match,
        "vf": _mp_literal(repr(b(x)) for x in VALID_FILTERS),
        "inf": _mp_literal(repr(b(x)) for x in INVALID_FILTERS),
        "vt": _mp_literal(repr(b(x)) for x in VALID_TOPICS),
        "it": _mp_literal(repr(b(x)) for x in INVALID_TOPICS),
    }
    path = tmp_path_factory.mktemp("mp") / "topics_cases.py"
    path.write_text(script)
    env = dict(os.environ, MICROPYPATH=FIRMWARE)
    r = subprocess.run([MICROPYTHON, str(path)], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_same_cases_in_micropython_unix_port(mp_result):
    """The whole table gives the same answers inside the MicroPython unix port."""
    assert mp_result["cases"] == len(MATCH)
    assert mp_result["wrong"] == []


def test_match_levels_allocates_nothing_in_micropython(mp_result):
    """Matching a topic against a filter split into levels runs with the heap locked
    (no allocation on the hot path) and still gives the right answers."""
    assert mp_result["lock_works"], "heap_lock did not stop an allocation: check is void"
    assert mp_result["allocates"] is None, mp_result["allocates"]
    assert mp_result["locked_wrong"] == []
