"""The reconnect storm of `ubroker bench` (scenario `storm`): a fleet coming back after a gateway
reboot. ROUNDS bursts of BURST clients: each burst opens its TCP connections at once, then sends
the CONNECTs spread over SPREAD seconds (a busy client sends its CONNECT some ms after the
handshake), and waits for every CONNACK. Counts the clients that got CONNACK 0, and the time the
storm took. A broker that lets every client in scores ROUNDS x BURST. tests/protocol/
test_reconnect_storm.py runs the same bursts against ubroker alone."""

import selectors
import socket
import struct
import time

ROUNDS = 10
BURST = 100
SPREAD = 0.25  # seconds over which a burst's CONNECTs go out, in 25 steps
WAIT = 10.0  # seconds a burst waits for its CONNACKs


def _connect_packet(client_id, keepalive=60):
    cid = client_id.encode()
    body = struct.pack("!H", 4) + b"MQTT" + bytes((4, 2)) + struct.pack("!HH", keepalive, len(cid)) + cid
    return bytes((0x10, len(body))) + body


def burst(port, tag, n=BURST, spread=SPREAD, wait=WAIT):
    """n clients: TCP connections at once, CONNECTs over `spread` s; returns how many got CONNACK 0
    (the others were closed, refused or never answered within `wait` s). Each then disconnects."""
    socks = []
    for _ in range(n):
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:
            pass  # refused at the handshake: counted as not in
    t0 = time.time()
    steps = 25
    for i, s in enumerate(socks):
        delay = t0 + (i % steps) * spread / steps - time.time()
        if delay > 0:
            time.sleep(delay)
        try:
            s.sendall(_connect_packet("storm-%s-%d" % (tag, i)))
        except OSError:
            pass
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, bytearray())
    ok = 0
    pending = len(socks)
    deadline = time.time() + wait
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


def storm(port, rounds=ROUNDS, n=BURST):
    """The whole storm: {"clients", "connected", "seconds", "per_burst"}."""
    t0 = time.time()
    got = [burst(port, "%d" % r, n) for r in range(rounds)]
    return {"clients": rounds * n, "connected": sum(got), "seconds": round(time.time() - t0, 2), "per_burst": got}
