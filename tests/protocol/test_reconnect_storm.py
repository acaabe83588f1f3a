"""A fleet coming back after a gateway reboot: 1,000 clients connecting 100 at a time, each
sending its CONNECT a little after its TCP handshake (as a busy client does), must all get in.
The half-open limit is there against floods of sockets that never speak (test_security.py):
it may only displace a connection that has been silent longer than a client needs, or one
that must make room in a full table, never a client whose CONNECT is a few ms behind."""

import selectors
import socket
import time

import mqttraw

ROUNDS = 10
BURST = 100


def burst(port, round_no):
    """BURST TCP connections at once, then their CONNECTs spread over 250 ms; returns how many
    got CONNACK 0 (the others were closed or never answered within 10 s)."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(BURST)]
    t0 = time.time()
    for i, s in enumerate(socks):
        delay = t0 + (i % 25) * 0.01 - time.time()
        if delay > 0:
            time.sleep(delay)
        try:
            s.sendall(mqttraw.connect("storm-%d-%d" % (round_no, i), keepalive=60))
        except OSError:
            pass  # already closed by the broker: counted as lost below
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, bytearray())
    ok = 0
    deadline = time.time() + 10
    pending = len(socks)
    while pending and time.time() < deadline:
        for key, _ in sel.select(0.5):
            s, buf = key.fileobj, key.data
            try:
                d = s.recv(64)
            except OSError:
                d = b""
            buf += d
            if not d or len(buf) >= 4:
                if buf[:4] == b"\x20\x02\x00\x00":
                    ok += 1
                sel.unregister(s)
                pending -= 1
    sel.close()
    for s in socks:
        try:
            s.setblocking(True)
            s.sendall(b"\xe0\x00")  # DISCONNECT
        except OSError:
            pass
        s.close()
    return ok


def test_a_thousand_clients_reconnecting_in_bursts_all_get_in(broker_factory):
    """MQTT-3.2.0-1/3.2.2-3: every client of the storm gets CONNACK 0 (the unix profile takes
    1,024 clients; a burst of 100 is well inside it)."""
    b = broker_factory(board="unix")
    got = [burst(b.port, r) for r in range(ROUNDS)]
    assert sum(got) == ROUNDS * BURST, got
