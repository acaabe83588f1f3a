"""Helpers of the tests that run the real broker through a crash (test_durable, test_bridge):
kill its MicroPython process as a power cut would stop it, and publish until acknowledged."""

import os
import signal

import mqttraw as m


def kill9(b):
    """SIGKILL the broker's MicroPython process (the child of `ubroker run`). Marks the broker
    `killed`, so that a fixture checking its brokers at the end can tell this death from a
    crash."""
    pid = b.proc.pid
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        children = [int(x) for x in f.read().split()]
    for c in children:
        os.kill(c, signal.SIGKILL)
    b.proc.wait(10)
    b.killed = True


def publish_acked(r, topic, payload, qos, pid):
    """Publish and return True once the broker acknowledged (PUBACK, or PUBREC at QoS 2)."""
    r.send(m.publish(topic, payload, qos=qos, pid=pid))
    p = r.recv_packet(5)
    if p is None:
        return False
    assert p.type == (4 if qos == 1 else 5) and p.pid == pid, p
    if qos == 2:
        r.send(m.pubrel(pid))
        r.expect(7)
    return True
