"""A connection closed with no heap left (the heap locked: every allocation fails, as when the
broker closes a client for "out of memory") still ends what must end: its clean session is
deleted (MQTT-3.1.2-6; MQTT 5.0: Session Expiry Interval 0, MQTT-3.1.2-23) and the broker's
figures are right. Its will needs the heap to be published: a 3.1.1 client's, published
last, raises MemoryError to the loop (which takes it) after all else is done; an MQTT 5
client's is lost in v5_session.left, which goes on. Before, that MemoryError left the v5
client's session in place. The real Server in one MicroPython process
(tests/support/broker_sim.py)."""

import pytest

from mpscript import figures, run_done

SCENARIO = r'''
import sys, micropython
from broker_sim import Sim, Client, config, subscribe_pkt, FakeSock
from ubroker.session import Conn

LEVEL = int(sys.argv[2])


def s(x):
    return bytes((len(x) >> 8, len(x) & 255)) + x


def connect_with_will(cid):
    props = b"\x00" if LEVEL == 5 else b""
    body = s(b"MQTT") + bytes((LEVEL, 0x02 | 0x04 | 0x08, 0, 0)) + props + s(cid) + props + s(b"w/t") + s(b"gone")
    return bytes((0x10, len(body))) + body


sim = Sim(config(sys.argv[1], persistence=False))
b = sim.sv.broker
sub = Client(sim, b"sub")
sub.send(subscribe_pkt(1, b"w/#", 1))
sub.packets()
sock = FakeSock()
c = Conn(sock, sim.sv.now)
sim.sv.conns[sock] = c
sim.feed(c, connect_with_will(b"gone"))
print("connack_code", sock.data[3])
raised = 0
micropython.heap_lock()
try:
    sim.sv.close(c, "out of memory")
except MemoryError:
    raised = 1
micropython.heap_unlock()
print("raised", raised)
print("session_left", int(b"gone" in b.sessions))
print("connected", b.stats.connected)
print("done")
'''


@pytest.mark.parametrize("level", [4, 5])
def test_a_connection_closed_without_heap_still_ends_its_clean_session(tmp_path, level):
    f = figures(run_done(tmp_path, SCENARIO, str(tmp_path / "store"), str(level), support=True))
    assert f["connack_code"] == 0, f
    assert f["session_left"] == 0, f
    assert f["connected"] == 1, f  # the subscriber
    if level == 5:
        assert f["raised"] == 0, f  # v5_session.left takes its own MemoryError
