"""Helpers shared by the raw-socket protocol tests: a connected client, and reading what a
subscriber receives up to a marker message. To show that something was NOT delivered, a test
publishes to the marker topic afterwards and checks what came before it: no sleeping."""

import mqttraw as m

MARK = b"zz/marker"
PUBLISH, PUBREL, PINGRESP = 3, 6, 13


def connected(broker, cid):
    c = broker.raw()
    present, rc = c.connect(cid)
    assert rc == 0
    return c


def until_marker(c, timeout=5.0):
    """PUBLISH packets received before the marker, each acknowledged as a client must."""
    got = []
    while True:
        p = c.recv_packet(timeout)
        assert p is not None, "broker closed the subscriber's connection"
        if p.type == PUBREL:
            c.send(m.pubcomp(p.pid))
            continue
        assert p.type == PUBLISH, p
        if p.topic == MARK:
            return got
        got.append(p)
        if p.qos == 1:
            c.send(m.puback(p.pid))
        elif p.qos == 2:
            c.send(m.pubrec(p.pid))


def until_pingresp(raw, timeout=5.0):
    """Send PINGREQ and return every packet the broker sent before the PINGRESP. The broker
    answers in order, so anything it had already decided to send comes first."""
    raw.send(m.PINGREQ)
    got = []
    while True:
        p = raw.recv_packet(timeout)
        assert p is not None, "connection closed while waiting for PINGRESP"
        if p.type == PINGRESP:
            return got
        got.append(p)
