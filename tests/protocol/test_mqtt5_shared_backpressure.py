"""A QoS 1 message the broker has acknowledged (PUBACK) reaches the subscriber, also when the
subscriber's queue is full (MQTT 5.0 section 4.3.2, QoS 1: at least once): Broker.publish
then withholds the PUBACK and stops reading the publisher until there is room. Found by the
benchmark's scenario fanin1shared (issue 15; then driven by bench_v5.py, now by loadgen --v5): to a
shared subscription ($share/NAME/FILTER, section 4.8.2) the room check passed whatever the
members' queues held (Broker.slot() was asked about the group, which has no queue of its
own), every message was acknowledged, and what found the chosen member's queue full was
dropped in Broker.deliver. Now the group answers for its members (v5_shared.Group.room) and
gives the message to one with a place."""

import socket

import pytest

import mqttraw5 as m
from mqttraw5 import connected as v5

N = 30
# The unix board (its byte budget, 1 MB, far away) with a window of 2 and a queue of 10: the
# 13th message finds no room. (A board's small max_queued_bytes holds the publisher back
# before, for the group too: the esp32 profile let 3 of 35 messages be dropped here.)
CONFIG = "max_inflight_messages 2\nmax_queued_messages 10\n"


def _collect(c, quiet=0.5, ack=False):
    """Every packet c receives until it has been quiet for `quiet` s; with ack, each PUBLISH
    acknowledged as it comes (so that the broker sends the next)."""
    out = []
    while True:
        try:
            p = c.recv_packet(quiet)
        except socket.timeout:
            return out
        if p is None:
            return out
        out.append(p)
        if ack and p.type == m.PUBLISH:
            c.send(m.ack(m.PUBACK, m.Publish(p).pid))


@pytest.mark.parametrize("flt", ["bp/t", "$share/g/bp/t"])
def test_acknowledged_qos1_messages_all_arrive_when_the_queue_fills(broker_factory, flt):
    """Section 4.3.2: N QoS 1 messages to a subscriber (v5, QoS 1) that reads nothing at first
    while its window (2) and queue (10) fill; then it reads and acknowledges. Every message the
    publisher got a PUBACK for arrives, and in the end all N are acknowledged and arrive."""
    broker = broker_factory(board="unix", config=CONFIG)
    sub = v5(broker, "bp-sub")
    sub.send(m.subscribe(1, (flt, 1)))
    assert sub.next(m.SUBACK).codes == [1]
    pub = v5(broker, "bp-pub")
    for i in range(1, N + 1):
        pub.send(m.publish("bp/t", b"%d" % i, qos=1, pid=i))
    acked = set()
    got = set()
    while True:  # until neither side moves: the publisher's PUBACKs, the subscriber's copies
        before = (len(acked), len(got))
        for p in _collect(pub):
            if p.type == m.PUBACK:
                acked.add(m.Ack(p).pid)
        for p in _collect(sub, ack=True):
            if p.type == m.PUBLISH:
                got.add(int(m.Publish(p).payload))
        if (len(acked), len(got)) == before:
            break
    assert acked <= got, "PUBACKed but never delivered: %s" % sorted(acked - got)
    assert acked == got == set(range(1, N + 1))
