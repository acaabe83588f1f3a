"""The broker's keyed tables (buffers.table / buffers.rebuild): sessions, subscriptions,
retained messages and connections live in dicts sized once, and a dict that lost half its
size in keys gets a fresh table at its next insert (a MicroPython dict otherwise keeps a mark
in every freed slot that each lookup steps over). These tests check that nothing is lost when
that happens: in the MicroPython unix port directly, and through the network with the esp32
profile, whose small tables (72 sessions, 96 subscriptions, 32 retained messages, 64
connections) are rebuilt many times by a few hundred short-lived clients."""

import os
import subprocess
import sys

import mqttraw as m
from conftest import ROOT
from marker import MARK, connected
from marker import until_marker as collect

MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")
PUBLISH, PUBACK, SUBACK = 3, 4, 9


def _micropython(script):
    env = dict(os.environ, MICROPYPATH=os.path.join(ROOT, "firmware"))
    r = subprocess.run([MICROPYTHON, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.split()


def test_table_holds_its_keys_without_growing():
    """table(n) allocates its slots once: putting n keys in allocates nothing more (the keys
    are small ints, which take no heap)."""
    out = _micropython(
        "import gc\n"
        "from ubroker.buffers import table\n"
        "def grown(d, n):\n"  # locals and no range object: only the table could allocate
        "    gc.collect()\n"
        "    a = gc.mem_alloc()\n"
        "    i = 0\n"
        "    while i < n:\n"
        "        d[i] = i\n"
        "        i += 1\n"
        "    gc.collect()\n"
        "    return gc.mem_alloc() - a\n"
        "for n in (1, 8, 72, 1032):\n"
        "    d = table(n)\n"
        "    g = grown(d, n)\n"
        "    print(n, len(d), g)\n")
    rows = [out[i : i + 3] for i in range(0, len(out), 3)]
    assert [r[0] for r in rows] == ["1", "8", "72", "1032"]
    for n, length, grown in rows:
        assert length == n
        assert grown == "0", "table(%s) grew by %s bytes while filled" % (n, grown)


def test_rebuild_keeps_every_key_and_value_after_churn():
    """Keys that came and went many times over, then a rebuild: the same keys and values,
    and the table still takes new keys."""
    out = _micropython(
        "from ubroker.buffers import rebuild, table\n"
        "d = table(64)\n"
        "live = []\n"
        "for i in range(5000):\n"
        "    k = b'client-%d' % i\n"
        "    d[k] = i\n"
        "    live.append(k)\n"
        "    if len(live) > 40:\n"
        "        del d[live.pop(0)]\n"
        "before = sorted(d.items())\n"
        "d = rebuild(d, 64)\n"
        "print(sorted(d.items()) == before, len(d))\n"
        "for i in range(24): d[i] = i\n"
        "print(len(d))\n")
    assert out == ["True", "40", "64"]


def _subscribe(c, pid, *filters):
    c.send(m.subscribe(pid, *filters))
    p = c.expect(SUBACK)
    assert p.pid == pid
    return list(p.body[2:])


def test_sessions_subscriptions_and_retained_survive_table_rebuilds(broker):
    """MQTT-3.1.2-4/5 (a persistent session, its subscription and the QoS 1 messages queued
    for it outlive the connection) and MQTT-3.3.1-5/-6 (a retained message stays until
    replaced or cleared) while 300 clean-session clients come and go, each subscribing to its
    own topic and setting and clearing a retained message there: every table of the esp32
    profile loses several times its size in keys and is rebuilt over and over."""
    keeper = broker.raw()
    assert keeper.connect("keeper", clean=False) == (0, 0)
    assert _subscribe(keeper, 1, ("keep/exact", 1), ("keep/+/x", 1)) == [1, 1]
    keeper.send(m.DISCONNECT)
    assert keeper.closed()

    pub = connected(broker, "publisher")
    for i in range(5):
        pub.send(m.publish("keep/r%d" % i, b"retained-%d" % i, qos=1, retain=True, pid=100 + i))
        assert pub.expect(PUBACK).pid == 100 + i

    sent = []
    for i in range(300):
        c = connected(broker, "churn-%d" % i)
        assert _subscribe(c, 1, ("churn/%d" % i, 0)) == [0]
        c.send(m.publish("churn/%d" % i, b"r", retain=True))
        c.send(m.publish("churn/%d" % i, b"", retain=True))  # cleared (MQTT-3.3.1-10)
        c.send(m.DISCONNECT)
        assert c.closed()
        if i % 30 == 0:  # queued for the offline keeper, between rebuilds
            pid = 1 + len(sent)
            topic = "keep/exact" if i % 60 else "keep/%d/x" % i
            pub.send(m.publish(topic, b"queued-%d" % pid, qos=1, pid=pid))
            assert pub.expect(PUBACK).pid == pid
            sent.append(b"queued-%d" % pid)

    keeper = broker.raw()
    assert keeper.connect("keeper", clean=False) == (1, 0)  # MQTT-3.2.2-2: session present
    got = []
    while len(got) < len(sent):
        p = keeper.recv_packet(5.0)
        assert p is not None and p.type == PUBLISH, p
        got.append(p.payload)
        keeper.send(m.puback(p.pid))
    assert got == sent  # each once, in order (MQTT-4.6.0-2)

    # Its subscriptions still route (the exact filter's table was rebuilt many times).
    assert _subscribe(keeper, 2, (MARK.decode(), 0)) == [0]
    pub.send(m.publish("keep/exact", b"live", qos=1, pid=900))
    assert pub.expect(PUBACK).pid == 900
    pub.send(m.publish(MARK.decode(), b""))
    assert [p.payload for p in collect(keeper)] == [b"live"]

    # The retained messages set before the churn are all there, and none of the cleared ones.
    watcher = connected(broker, "watcher")
    assert _subscribe(watcher, 1, ("keep/#", 0), ("churn/#", 0), (MARK.decode(), 0)) == [0, 0, 0]
    pub.send(m.publish(MARK.decode(), b""))
    got = sorted((p.topic, p.payload) for p in collect(watcher))
    assert got == [(b"keep/r%d" % i, b"retained-%d" % i) for i in range(5)]
    assert broker.alive()
