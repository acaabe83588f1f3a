"""Start-up: the listening sockets, opened, bound and registered with the server's poll, and
the poll table presized on small heaps. Used once; server.py forgets the module afterwards."""

import socket

from micropython import const

_IN = const(1)  # select.POLLIN, as server.py keeps it


def listen(sv):
    """Open, bind and register every configured listener of Server sv."""
    protocols = sv.cfg.get("protocols", {})
    if "websockets" in protocols.values():  # here, not in server.py: no heap without one
        from .ws_frame import Ws

        sv.ws = Ws(sv)
    for i, (port, host) in enumerate(sv.cfg["listener"]):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(socket.getaddrinfo(host, port)[0][-1])
        s.listen(min(sv.cfg["max_connections"], 128))  # a fleet reconnecting at once
        s.setblocking(False)
        sv.poll.register(s, _IN)
        sv.listeners.append(s)
        sv.log("listening on %s:%d" % (host, port))
        if sv.gate is not None:
            sv.gate.listening(i, s)
        if protocols.get(i) == "websockets":
            sv.ws.listeners.append(s)
            sv.log("listener %d is WebSockets" % (i + 1))
    if sv.cfg["poll_presize"]:
        _presize_poll(sv.poll, sv.broker.max_sockets)


def _presize_poll(poll, n):
    """Grow the poll table to n entries now (registering and dropping placeholder
    sockets), so registering a client later never needs a large free block. A board
    with few sockets simply stops at its limit. Only for small heaps (poll_presize): on
    the unix port the dropped entries stay in the array poll(2) scans, about 0.1 us each
    per loop pass (measured: 1032 of them doubled the round-trip latency)."""
    spare = []
    try:
        for _ in range(n):
            s = socket.socket()
            spare.append(s)
            poll.register(s, _IN)
    except Exception:  # OSError or MemoryError: the table is as large as it gets (no
        pass  # tuple of types here: matching it would allocate, on a heap that may be full)
    for s in spare:
        try:
            poll.unregister(s)
        except (OSError, ValueError, KeyError):
            pass
        s.close()
