"""$SYS through the network, with `sys_interval 1`: the Mosquitto names (version, uptime,
clients, messages, bytes) and ubroker's own (heap, limit counters) are published, retained,
and their values follow what happens on the broker."""

import os
import re
import socket
import time

import mqttraw as m

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PUBLISH, PUBACK, SUBACK = 3, 4, 9
SYS = "sys_interval 1\n"


def connected(broker, cid):
    c = broker.raw()
    present, rc = c.connect(cid)
    assert rc == 0
    return c


class Watcher:
    """A raw client subscribed to $SYS/#, keeping the latest payload of each topic."""

    def __init__(self, broker, cid="sys-watcher", flt="$SYS/#"):
        self.c = connected(broker, cid)
        self.c.send(m.subscribe(1, (flt, 0)))
        p = self.c.expect(SUBACK)
        assert list(p.body[2:]) == [0]
        self.values = {}
        self.retained = set()  # topics first seen with RETAIN=1

    def pump(self, seconds):
        deadline = time.time() + seconds
        while True:
            left = deadline - time.time()
            if left <= 0:
                return
            try:
                p = self.c.recv_packet(left)
            except socket.timeout:
                return
            assert p is not None, "broker closed the $SYS watcher"
            if p.type == PUBLISH:
                name = p.topic.decode()
                if p.retain:
                    self.retained.add(name)
                self.values[name] = p.payload.decode()

    def wait(self, name, pred=lambda v: True, timeout=6.0):
        """Pump until topic `name` has a value satisfying pred; return it."""
        topic = "$SYS/broker/" + name
        deadline = time.time() + timeout
        while True:
            v = self.values.get(topic)
            if v is not None and pred(v):
                return v
            if time.time() > deadline:
                raise AssertionError("%s never satisfied the condition; last value %r" % (topic, v))
            self.pump(0.2)

    def number(self, name, pred=lambda n: True, timeout=6.0):
        v = self.wait(name, lambda v: re.fullmatch(r"-?\d+", v) is not None and pred(int(v)),
                      timeout)
        return int(v)


def firmware_version():
    with open(os.path.join(ROOT, "firmware", "ubroker", "__init__.py")) as f:
        return re.search(r'VERSION = "([^"]+)"', f.read()).group(1)


def test_core_sys_topics_present_and_plausible(broker_factory):
    """$SYS/broker/version, uptime, clients/connected, messages and bytes counters and
    $SYS/broker/ubroker/heap/free appear with plausible values."""
    b = broker_factory(config=SYS)
    w = Watcher(b)
    version = w.wait("version")
    assert "ubroker" in version and firmware_version() in version, version
    uptime = w.wait("uptime", lambda v: re.fullmatch(r"\d+ seconds", v) is not None)
    assert int(uptime.split()[0]) < 60
    assert w.number("clients/connected") >= 1  # the watcher itself
    assert w.number("messages/received", lambda n: n >= 2) >= 2  # at least CONNECT, SUBSCRIBE
    w.number("messages/sent", lambda n: n >= 0)
    assert w.number("bytes/received", lambda n: n > 0) > 0
    assert w.number("bytes/sent", lambda n: n > 0) > 0
    free = w.number("ubroker/heap/free")
    # The esp32 profile gives the broker a 100 KiB heap: free heap is within it.
    assert 0 < free <= 100 * 1024, free


def test_uptime_increases(broker_factory):
    """$SYS/broker/uptime counts seconds."""
    b = broker_factory(config=SYS)
    w = Watcher(b)
    first = int(w.wait("uptime").split()[0])
    later = int(w.wait("uptime", lambda v: int(v.split()[0]) >= first + 1, 6).split()[0])
    assert later >= first + 1


def test_sys_topics_are_retained(broker_factory):
    """$SYS figures are kept as retained messages: a client subscribing later gets the
    current value at once, with RETAIN=1."""
    b = broker_factory(config=SYS)
    w = Watcher(b)
    w.wait("version")
    late = connected(b, "late")
    late.send(m.subscribe(1, ("$SYS/broker/version", 0)))
    late.expect(SUBACK)
    p = late.expect(PUBLISH, timeout=2)
    assert p.topic == b"$SYS/broker/version" and p.retain
    assert b"ubroker" in p.payload


def test_clients_connected_follows_connections(broker_factory):
    """$SYS/broker/clients/connected goes up and down as clients connect and disconnect;
    clients/maximum keeps the peak."""
    b = broker_factory(config=SYS)
    w = Watcher(b)
    base = w.number("clients/connected")
    assert base == 1  # only the watcher
    extra = [connected(b, "c%d" % i) for i in range(3)]
    assert w.number("clients/connected", lambda n: n == base + 3) == base + 3
    for c in extra[:2]:
        c.send(m.DISCONNECT)
        c.close()
    assert w.number("clients/connected", lambda n: n == base + 1) == base + 1
    assert w.number("clients/maximum", lambda n: n >= base + 3) >= base + 3


def test_message_and_byte_counters_grow_with_traffic(broker_factory):
    """messages/received, publish/messages/received, messages/sent and bytes/received grow by
    at least what the clients sent and received."""
    b = broker_factory(config=SYS)
    w = Watcher(b)
    # Wait for a first full report with the watcher's own traffic counted.
    r0 = w.number("messages/received", lambda n: n >= 2)
    s0 = w.number("messages/sent")
    b0 = w.number("bytes/received", lambda n: n > 0)
    sub = connected(b, "sub")
    sub.send(m.subscribe(1, ("traffic/#", 1)))
    sub.expect(SUBACK)
    pub = connected(b, "pub")
    n = 10
    sent = b""
    for i in range(n):
        pkt = m.publish("traffic/t", b"payload-%02d" % i, qos=1, pid=i + 1)
        sent += pkt
        pub.send(pkt)
        assert pub.expect(PUBACK).pid == i + 1
    for i in range(n):
        p = sub.expect(PUBLISH)
        sub.send(m.puback(p.pid))
    # CONNECT + SUBSCRIBE + 10 PUBACK from sub, CONNECT + 10 PUBLISH from pub: >= 23 packets.
    w.number("messages/received", lambda v: v >= r0 + 2 * n + 3)
    w.number("publish/messages/received", lambda v: v >= n)
    w.number("messages/sent", lambda v: v >= s0 + n)
    w.number("publish/messages/sent", lambda v: v >= n)
    w.number("bytes/received", lambda v: v >= b0 + len(sent))


def test_limit_counter_appears_when_subscription_limit_hit(broker_factory):
    """The esp32 profile allows 8 subscriptions per client: a 9th gets SUBACK 0x80 and
    $SYS/broker/ubroker/limits/subscriptions_per_client appears, counting each refusal."""
    b = broker_factory(config=SYS)
    w = Watcher(b)
    w.wait("uptime")
    w.pump(1.2)  # at least one full report has gone out
    name = "$SYS/broker/ubroker/limits/subscriptions_per_client"
    assert name not in w.values, "limit counter reported before the limit was hit"
    c = connected(b, "greedy")
    c.send(m.subscribe(2, *[("f/%d" % i, 1) for i in range(9)]))
    p = c.expect(SUBACK)
    assert list(p.body[2:]) == [1] * 8 + [0x80]
    assert w.number("ubroker/limits/subscriptions_per_client", lambda v: v >= 1) == 1
    c.send(m.subscribe(3, ("g/1", 0), ("g/2", 0)))
    assert list(c.expect(SUBACK).body[2:]) == [0x80, 0x80]
    assert w.number("ubroker/limits/subscriptions_per_client", lambda v: v >= 3) == 3
    # Replacing an existing subscription is not a new one: still granted.
    c.send(m.subscribe(4, ("f/0", 2)))
    assert list(c.expect(SUBACK).body[2:]) == [2]


def test_heap_free_reported_under_ubroker(broker_factory):
    """$SYS/broker/ubroker/heap/free and heap/used add up to no more than the heap given."""
    b = broker_factory(config=SYS)
    w = Watcher(b, flt="$SYS/broker/ubroker/heap/+")
    free = w.number("ubroker/heap/free", lambda n: n > 0)
    used = w.number("ubroker/heap/used", lambda n: n > 0)
    assert free + used <= 100 * 1024 + 4096, (free, used)
