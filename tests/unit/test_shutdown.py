"""Stopping works with MicroPython's heap locked. The unix port raises KeyboardInterrupt from
its SIGINT handler wherever the VM is, also inside a garbage collection, whose heap lock is
then never released: Server.shutdown runs after that and must not allocate (CI once saw
`MemoryError: memory allocation failed, heap is locked` from shutdown when `ubroker run`
was stopped with SIGINT; it iterated conns.values(), a view object on the heap).

The real Server in one MicroPython process (tests/support/broker_sim.py), three connected
clients with output waiting, on sockets whose write and close allocate nothing, as the
port's own do; the third over a WebSocket (ws_frame.WsSock), whose close frame needs the heap:
what cannot be framed goes unsent, and the socket still closes."""

import os
import subprocess
import sys

from conftest import ROOT

MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")

SCENARIO = r'''
import sys
import micropython
from broker_sim import Sim, Client, config
from ubroker.ws_frame import Ws, WsSock


class Sock:
    def __init__(self):
        self.n = 0
        self.closed = False

    def write(self, b):
        self.n += len(b)
        return len(b)

    def close(self):
        self.closed = True


sim = Sim(config(sys.argv[1], persistence=False))
Ws(sim.sv)
socks = []
for cid in (b"a", b"b", b"w"):
    c = Client(sim, cid)
    raw = Sock()
    if cid == b"w":  # a WebSocket: its write frames the bytes, its close sends a close frame
        c.conn.sock = WsSock(raw)
        c.conn.sock.h[16] |= 1  # upgraded (ws_frame._FL, _OPEN)
    else:
        c.conn.sock = raw
    c.conn.out = bytearray(b"\xd0\x00")  # a PINGRESP not written yet
    socks.append(raw)
r = None  # bound before the lock: a new global can grow the module's dict
micropython.heap_lock()
try:
    sim.sv.shutdown()
    r = "stopped"
except MemoryError:
    r = "MemoryError"
micropython.heap_unlock()
print(r, [(s.n, s.closed) for s in socks], len(sim.sv.conns))
'''


def test_shutdown_with_the_heap_locked_sends_what_waits_and_closes(tmp_path):
    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO)
    firmware = os.environ.get("UBROKER_FIRMWARE", os.path.join(ROOT, "firmware"))
    env = dict(os.environ, MICROPYPATH=firmware + ":" + os.path.join(ROOT, "tests", "support"))
    r = subprocess.run([MICROPYTHON, str(script), str(tmp_path / "store")], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    # a and b: the PINGRESP; w: its frame, header and payload in one write through the broker's
    # scratch buffer (the close frame after it needs the heap), and closed all the same
    assert r.stdout.splitlines()[-1] == "stopped [(2, True), (2, True), (4, True)] 0"
