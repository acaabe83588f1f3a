"""Helpers shared by the robustness tests (test_malformed, test_fuzz, test_limits,
test_memory): a broker that lives for a whole test module, a pair of "witness" clients that
prove the broker still serves others, and raw-socket helpers that tolerate the broker
closing the connection under our feet."""

import socket
import struct
import time

import mqttraw
from conftest import start_broker

QOS1_PUBACK = 4


def broker_problems(b):
    """What is wrong with a broker at the end of a test: dead, or a traceback in its log."""
    problems = []
    if not b.alive():
        problems.append("broker on port %d died (exit %s)" % (b.port, b.proc.returncode))
    if "Traceback" in b.log():
        problems.append("broker on port %d logged a traceback" % b.port)
    return problems


def module_broker(tmp_path_factory, name, **kw):
    """Generator body for a module-scoped fixture: one broker for the module, checked at the
    end the same way conftest checks its function-scoped brokers."""
    b = start_broker(tmp_path_factory.mktemp(name), **kw)
    try:
        yield b
    finally:
        problems = broker_problems(b)
        log = b.log()
        b.stop()
        assert not problems, "\n".join(problems) + "\n" + log


def try_send(raw, data):
    """Send, ignoring the error a peer that already closed the connection causes."""
    try:
        raw.send(data)
        return True
    except OSError:
        return False


def until_closed(raw, timeout=5.0):
    """Read until the broker closes the connection. Returns (closed, packets received)."""
    got = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            p = raw.recv_packet(max(0.05, deadline - time.time()))
        except socket.timeout:
            return False, got
        except OSError:
            return True, got
        if p is None:
            return True, got
        got.append(p)
    return False, got


class Witness:
    """Two raw clients already connected before the test does anything nasty: `sub` has a
    QoS 1 subscription to '#', `pub` publishes. check() does one round trip and returns the
    other PUBLISH packets `sub` saw meanwhile (which must be none when nothing legitimate
    was published)."""

    def __init__(self, broker, prefix="witness"):
        self.broker = broker
        self.prefix = prefix
        self.n = 0
        self.sub = broker.raw()
        rc = self.sub.connect(prefix + "-sub", keepalive=0)
        assert rc == (0, 0)
        self.sub.send(mqttraw.subscribe(1, ("#", 1)))
        p = self.sub.expect(9)
        assert p.body == b"\x00\x01\x01"
        self.pub = broker.raw()
        assert self.pub.connect(prefix + "-pub", keepalive=0) == (0, 0)

    def check(self, timeout=10.0):
        self.n += 1
        topic = "%s/%d" % (self.prefix, self.n)
        payload = b"alive %d" % self.n
        pid = (self.n % 60000) + 1
        self.pub.send(mqttraw.publish(topic, payload, qos=1, pid=pid))
        ack = self.pub.expect(QOS1_PUBACK, timeout)
        assert ack.pid == pid
        others = []
        deadline = time.time() + timeout
        while True:
            p = self.sub.recv_packet(max(0.05, deadline - time.time()))
            assert p is not None, "witness subscriber was disconnected"
            assert p.type == 3, "unexpected packet %r" % p
            if p.qos:
                self.sub.send(mqttraw.puback(p.pid))
            if p.topic == topic.encode() and p.payload == payload:
                return others
            others.append(p)
            assert time.time() < deadline, "witness message never arrived"


def u16(n):
    return struct.pack("!H", n)
