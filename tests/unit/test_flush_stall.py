"""Output written by the flush itself must not be forgotten. Server.flush writes every listed
connection; writing one can fill another's output in the middle of the loop: a write error
closes a connection whose will goes to a subscriber, or a drained connection is refilled from
its queue. Such a connection is listed behind the entries the loop was walking, and used to be
wiped from the list without being written and without POLLOUT: its will, and every message
after it, waited until the subscriber happened to send something itself (found in review; the
suite missed it because the esp32 profile has no pooled output buffers).

Driven in one MicroPython process with the real Server and fake sockets, so that the failing
write happens exactly inside the flush; the broker keeps its default output buffer pool."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT

MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")

SCENARIO = r'''
import sys
from ubroker import codec
from ubroker.config import resolve
from ubroker.server import Server
from ubroker.session import Conn

pool = int(sys.argv[1])


class Sock:
    def __init__(self):
        self.data = bytearray()
        self.broken = False

    def write(self, b):
        if self.broken:
            raise OSError(32)  # EPIPE: the peer is gone
        self.data.extend(b)
        return len(b)

    def close(self):
        pass


def s(b):
    return bytes((len(b) >> 8, len(b) & 255)) + b


def pkt(b0, body):
    out = bytearray((b0,))
    codec.put_length(out, len(body))
    return bytes(out) + body


cfg = resolve()
cfg["sys_interval"] = 0
cfg["buffer_pool_size"] = pool
srv = Server(cfg, lambda m: None)
srv._mask = lambda c: None  # fake sockets: no poll registrations; POLLOUT never comes


def connect(cid, will=None):
    sock = Sock()
    c = Conn(sock, srv.now)
    srv.conns[sock] = c
    flags = 2
    body = b""
    if will:
        flags |= 4
        body = s(will[0]) + s(will[1])
    feed(c, pkt(0x10, s(b"MQTT") + bytes((4, flags, 0, 0)) + s(cid) + body))
    return c


def feed(c, data):
    srv.rbuf[: len(data)] = data
    srv.consume(c, len(data))
    srv.flush()  # the end of a loop pass, as one_pass does it


sub = connect(b"sub")
feed(sub, pkt(0x82, b"\x00\x01" + s(b"w/#") + b"\x00"))
pub = connect(b"pub")
gone = connect(b"gone", (b"w/gone", b"bye"))
sub.sock.data = bytearray()
# In one pass: `gone` gets output (PINGRESP) and is listed; its peer has vanished, so the
# flush's write fails and closes it, which publishes its will to `sub`, listed after it.
gone.sock.broken = True
srv.rbuf[:2] = b"\xc0\x00"
srv.consume(gone, 2)
srv.flush()
first = bytes(sub.sock.data)
# and a later message to the same subscriber, in a later pass
feed(pub, pkt(0x30, s(b"w/next") + b"later"))
print(repr(first))
print(repr(bytes(sub.sock.data)))
'''


@pytest.mark.parametrize("pool", [8, 0])
def test_a_will_published_while_flushing_is_written_in_that_flush(tmp_path, pool):
    """MQTT-3.1.2-8 (the will is published when the connection is closed without DISCONNECT)
    and MQTT-4.6.0-1 in spirit: the subscriber gets the will in the pass that closed the
    writer, and the next message after it, with pooled output buffers (the default, 8) and
    without (the esp32 profile)."""
    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO)
    env = dict(os.environ, MICROPYPATH=os.environ.get("UBROKER_FIRMWARE", os.path.join(ROOT, "firmware")))
    r = subprocess.run([MICROPYTHON, str(script), str(pool)], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    first, later = r.stdout.splitlines()[-2:]
    will = b"\x30\x0b\x00\x06w/gonebye"
    assert first == repr(will), "the will was not written in the flush that closed its client"
    assert later == repr(will + b"\x30\x0d\x00\x06w/nextlater")
