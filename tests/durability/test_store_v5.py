"""The durable store keeps the MQTT 5 state a restart must keep, and still reads a store
written before it did. Through the network with the real `ubroker run --data DIR`, killed
with SIGKILL (as a power cut stops it): a v5 session's subscription options and Subscription
Identifier, and the properties of the messages queued for it, with their Message Expiry
counted across the restart. The store made by the release before this change (main@598a8f5,
run from a git archive of that commit) loads, with its sessions, queues and retained messages.
The expiry arithmetic for a board whose clock was never set runs in the unix port itself."""

import os
import socket
import subprocess
import sys
import tarfile
import time

import pytest

import mqttraw as m
import mqttraw5 as m5
from conftest import ROOT, RunningBroker, free_port, start_broker
from durable_util import kill9, publish_acked

OLD = "598a8f5"  # the release before the v5 records: its store must still load
MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")


@pytest.fixture
def brokers(tmp_path):
    started = []

    def start(data, **kw):
        b = start_broker(tmp_path, board="unix", data=data, **kw)
        started.append(b)
        return b

    yield start
    problems = []
    for b in started:
        if not b.alive() and not getattr(b, "killed", False):
            problems.append("broker on port %d died:\n%s" % (b.port, b.log()))
        elif "Traceback" in b.log():
            problems.append(b.log())
        b.stop()
    assert not problems, "\n".join(problems)


def v5(b, cid, **kw):
    c = m5.Client5(b.port)
    b._clients.append(c)
    ack = c.connect5(cid, **kw)
    assert ack.code == 0, "CONNACK 0x%02x" % ack.code
    return c, ack


def publish5(c, topic, payload, pid, properties, retain=False):
    c.send(m5.publish(topic, payload, qos=1, pid=pid, retain=retain, properties=properties))
    a = c.next(m5.PUBACK)
    assert a.pid == pid and a.code < 0x80, a.code


def received(c, n):
    got = [c.next(m5.PUBLISH) for _ in range(n)]
    for p in got:
        c.send(m5.ack(m5.PUBACK, p.pid))
    return got


def test_options_identifier_and_properties_survive_a_power_cut(brokers, tmp_path):
    """A persistent v5 session's subscription with Retain As Published and Subscription
    Identifier 7, and a message queued for it with user properties, content type and Message
    Expiry 3600, survive SIGKILL: after the restart the message arrives with them, its expiry
    the time left (MQTT-3.3.2-6), and a message published after the restart still finds the
    subscription's options (MQTT-3.3.1-12, MQTT-3.3.4-3)."""
    data = tmp_path / "data"
    b = brokers(data)
    sub, _ = v5(b, "sub5", clean_start=False, properties=[(m5.SESSION_EXPIRY, 3600)])
    sub.send(m5.subscribe(1, ("t/#", 1 | 8), properties=[(m5.SUBSCRIPTION_ID, 7)]))
    assert sub.next(m5.SUBACK).codes == [1]
    sub.send(m5.disconnect(0))
    sub.close()
    pub, _ = v5(b, "pub5")
    user = [(m5.USER_PROPERTY, ("k", "v1")), (m5.USER_PROPERTY, ("k", "v2"))]
    publish5(pub, "t/a", b"before", 1, [(m5.MESSAGE_EXPIRY, 3600), (m5.CONTENT_TYPE, "text/x")] + user,
             retain=True)
    kill9(b)
    b2 = brokers(data)
    pub, _ = v5(b2, "pub5")
    publish5(pub, "t/b", b"after", 2, user, retain=True)
    sub, ack = v5(b2, "sub5", clean_start=False, properties=[(m5.SESSION_EXPIRY, 3600)])
    assert ack.present == 1
    got = {p.payload: p for p in received(sub, 2)}
    assert set(got) == {b"before", b"after"}
    for p in got.values():
        assert m5.prop(p.props, m5.SUBSCRIPTION_ID) == 7, p.props
        assert [v for k, v in p.props if k == m5.USER_PROPERTY] == [(b"k", b"v1"), (b"k", b"v2")]
        assert p.retain  # Retain As Published
    left = m5.prop(got[b"before"].props, m5.MESSAGE_EXPIRY)
    assert left is not None and 3500 < left <= 3600, left
    assert m5.prop(got[b"before"].props, m5.CONTENT_TYPE) == b"text/x"
    assert m5.prop(got[b"after"].props, m5.MESSAGE_EXPIRY) is None


def test_message_expiry_runs_on_while_the_broker_is_off(brokers, tmp_path):
    """With the wall clock set (the unix port's), a queued message whose Message Expiry
    passes while the broker is off is not delivered after the restart (MQTT-3.3.2-5); one
    with time left is."""
    data = tmp_path / "data"
    b = brokers(data)
    sub, _ = v5(b, "sub5", clean_start=False, properties=[(m5.SESSION_EXPIRY, 3600)])
    sub.send(m5.subscribe(1, ("e/#", 1)))
    sub.next(m5.SUBACK)
    sub.send(m5.disconnect(0))
    sub.close()
    pub, _ = v5(b, "pub5")
    publish5(pub, "e/short", b"short", 1, [(m5.MESSAGE_EXPIRY, 2)])
    publish5(pub, "e/long", b"long", 2, [(m5.MESSAGE_EXPIRY, 600)])
    kill9(b)
    time.sleep(3)
    b2 = brokers(data)
    sub, ack = v5(b2, "sub5", clean_start=False, properties=[(m5.SESSION_EXPIRY, 3600)])
    assert ack.present == 1
    got = received(sub, 1)
    assert [p.payload for p in got] == [b"long"]
    left = m5.prop(got[0].props, m5.MESSAGE_EXPIRY)
    assert 590 < left <= 597, left
    sub.send(m.PINGREQ)
    sub.expect(m5.PINGRESP)  # nothing else came before it


EXPIRY_SCRIPT = r"""
import time
from ubroker import store_replay as sr
from ubroker import store_v5 as sp

class Clock:
    # time as a board sees it: ticks, and a wall clock that is set (2026) or not (2000)
    def __init__(self, wall):
        self.wall = wall
        self.ms = 100000
    def time(self):
        return self.wall
    def gmtime(self, t):
        return (2026 if t > 1700000000 else 2000,)
    def ticks_ms(self):
        return self.ms
    def ticks_diff(self, a, b):
        return a - b
    def ticks_add(self, a, d):
        return a + d

for wall in (1800000000, 5000):
    clk = Clock(wall)
    sp.time = clk
    sr.time = clk
    msg = [b"t", b"p", 0, (b"\x02\x00\x00\x00\x00", 100, clk.ms - 30000, b"", False)]
    body = sp.msg5(msg, 9)
    clk.ms = 7  # a restart: ticks start again
    clk.wall += 50  # off for 50 s, which only a set clock knows
    m = sr.message(body, sp._wall())
    print(m[3][1], m[3][2])
"""


def test_expiry_with_and_without_a_set_clock():
    """In the unix port: a message with 70 s of expiry left is written; after a restart 50 s
    later it has 20 s left when the wall clock was set, and still 70 s on a board whose clock
    was never set (the time off is not counted: late, never early)."""
    r = subprocess.run([MICROPYTHON, "-c", EXPIRY_SCRIPT], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, MICROPYPATH=os.path.join(ROOT, "firmware")))
    assert r.returncode == 0, r.stderr + r.stdout
    assert r.stdout.split("\n")[:2] == ["20 7", "70 7"], r.stdout


@pytest.fixture(scope="module")
def old_tree(tmp_path_factory):
    """main@598a8f5's firmware, host tools and boards, from a git archive: its own `ubroker run`
    runs its own firmware, so today's host tools need not know yesterday's tree."""
    d = tmp_path_factory.mktemp("old")
    tar = d / "old.tar"
    subprocess.run(["git", "-C", ROOT, "archive", "-o", str(tar), OLD, "firmware", "host_tools", "boards"],
                   check=True)
    with tarfile.open(tar) as t:
        t.extractall(d, filter="data")
    return str(d)


def start_old(tree, tmp_path, data):
    """`ubroker run --board unix --data DATA` of the old tree, with this venv's micropython."""
    port = free_port()
    logpath = tmp_path / ("old-broker-%d.log" % port)
    env = dict(os.environ, PYTHONPATH=os.path.join(tree, "host_tools"))
    env.pop("UBROKER_FIRMWARE", None)
    cmd = [sys.executable, "-c", "import sys; from ubroker_tools.cli import main; sys.exit(main())", "run",
           "--board", "unix", "--port", str(port), "--verbose", "--data", str(data)]
    log = open(logpath, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 60  # the first start compiles the old firmware
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return RunningBroker(proc, port, logpath, data)
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError("the old broker did not start:\n" + logpath.read_text())
            time.sleep(0.05)


def test_store_of_the_previous_release_loads(brokers, tmp_path, old_tree):
    """A store written by main@598a8f5 (a 3.1.1 and a v5 persistent session, each with a
    subscription and QoS 1 and 2 messages queued, a retained message, an inbound QoS 2 id
    awaiting PUBREL) loads in this code: the queued messages arrive, the subscriptions
    route new ones, the retained message is there, and the QoS 2 message whose PUBREL was
    pending is not delivered twice (MQTT-4.3.3-2)."""
    data = tmp_path / "data"
    old = start_old(old_tree, tmp_path, data)
    try:
        r = old.raw()
        assert r.connect("sub4", clean=False) == (0, 0)
        r.send(m.subscribe(1, ("q/#", 2)))
        r.expect(9)
        r.close()
        s5, _ = v5(old, "sub5", clean_start=False, properties=[(m5.SESSION_EXPIRY, 3600)])
        s5.send(m5.subscribe(1, ("q/#", 2)))
        s5.next(m5.SUBACK)
        s5.close()
        p = old.raw()
        assert p.connect("pub4", clean=False) == (0, 0)
        assert publish_acked(p, "q/1", b"one", 1, 1)
        assert publish_acked(p, "q/2", b"two", 2, 2)
        p.send(m.publish("keep/r", b"retained", qos=1, pid=3, retain=True))
        p.expect(4)
        p.send(m.publish("q/3", b"three", qos=2, pid=4))  # PUBREC, then no PUBREL before the cut
        p.expect(5)
        time.sleep(0.3)
        kill9(old)
    finally:
        if old.alive():
            old.stop()
    new = brokers(data)
    assert "store: 3 sessions, 6 messages" in new.log(), new.log()
    p = new.raw()
    assert p.connect("pub4", clean=False) == (1, 0)
    p.send(m.publish("q/3", b"three", qos=2, pid=4, dup=True))  # the publisher's resend
    p.expect(5)
    p.send(m.pubrel(4))
    p.expect(7)
    p.send(m.publish("q/4", b"four", qos=1, pid=5))
    p.expect(4)
    r = new.raw()
    assert r.connect("sub4", clean=False) == (1, 0)
    got4 = []
    while True:
        try:
            q = r.recv_packet(1.0)
        except OSError:
            break
        if q is None:
            break
        if q.type == 3:
            got4.append(q.payload)
            if q.qos == 1:
                r.send(m.puback(q.pid))
            elif q.qos == 2:
                r.send(m.pubrec(q.pid))
        elif q.type == 6:
            r.send(m.pubcomp(q.pid))
    assert sorted(got4) == [b"four", b"one", b"three", b"two"]
    s5, ack = v5(new, "sub5", clean_start=False, properties=[(m5.SESSION_EXPIRY, 3600)])
    assert ack.present == 1
    got5 = [s5.next(m5.PUBLISH).payload for _ in range(4)]
    assert sorted(got5) == [b"four", b"one", b"three", b"two"]
    late = new.raw()
    late.connect("late")
    late.send(m.subscribe(1, ("keep/#", 0)))
    late.expect(9)
    assert late.expect(3).payload == b"retained"
