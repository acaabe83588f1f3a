"""The broker's own work per message in the MQTT 5 fan-in (ubroker bench's fanin1v5: 8
publishers at QoS 1 with a User Property on every PUBLISH -> 1 subscriber of bench/v5/#),
with the real Server and real sockets in ONE MicroPython process, so that a profiler sees
the broker and a client that costs the same before and after a change. V5=0 runs the same
fan-in at 3.1.1 (no property) for comparison.

    MICROPYPATH=firmware .venv/bin/micropython -X heapsize=8M tools/fanin_v5_inprocess.py

Wall-clock figures move with the machine's load; instruction counts do not. Two runs under
callgrind give the instructions per message (client included) as the difference over the
extra messages:

    for n in 800 2400; do V5=1 N=$n MICROPYPATH=firmware valgrind --tool=callgrind \\
        --callgrind-out-file=/dev/null .venv/bin/micropython -X heapsize=8M \\
        tools/fanin_v5_inprocess.py 2>&1 | grep Collected; done

(v5: 399k per message at 7cd94fb, 309k at e6a8291, 302k at 5d3a2b7, 250k at eae75cc;
3.1.1: 215k-217k; about 77k of each is the client's read(65536), a zeroed 64 KiB buffer
per call; `callgrind_annotate` on one output shows where: gc_alloc, and the frames
fun_bc_call takes from the heap for functions with more than 11 words of state).
"""
import os
import socket
import struct

from inprocess import fanin, packet, s_, start

V5 = int(os.getenv("V5", "1"))
PORT = int(os.getenv("PORT", "21997"))
N = int(os.getenv("N", "20000"))
PUBS = 8
WINDOW = 20  # as loadgen --v5: messages each publisher sends before it reads its PUBACKs

sv = start([(PORT, "127.0.0.1")])


def pump(n=3):
    for _ in range(n):
        sv.one_pass()


def client(cid):
    c = socket.socket()
    c.connect(socket.getaddrinfo("127.0.0.1", PORT)[0][-1])
    c.setsockopt(6, 1, 1)
    level = b"\x05\x02\x00\x3c\x00" if V5 else b"\x04\x02\x00\x3c"
    c.write(packet(0x10, s_(b"MQTT") + level + s_(cid)))
    pump()
    c.recv(200)
    return c


sub = client(b"sub")
sub.write(packet(0x82, b"\x00\x01" + (b"\x00" if V5 else b"") + s_(b"bench/v5/#") + b"\x01"))
pump()
sub.recv(100)
pubs = [client(b"pub%d" % i) for i in range(PUBS)]
USER = b"\x26" + s_(b"bench") + s_(b"v5")
PROPS = bytes((len(USER),)) + USER if V5 else b""


def batch(i, seq):
    out = bytearray()
    for j in range(WINDOW):
        pid = (seq + j) % 65535 + 1
        body = s_(b"bench/v5/%d" % i) + struct.pack(">H", pid) + PROPS + struct.pack(">BI", i, seq + j) + b"." * 11
        out += packet(0x32, body)
    return bytes(out)


for p in pubs:
    p.setblocking(False)
sub.setblocking(False)
got, dt, in_broker = fanin(sv, pubs, sub, batch, N, WINDOW, lambda c: c.read(65536), lambda c, b: c.write(b))
print("MQTT %s: %d messages, %.2f us per message, %.2f us of it in the broker"
      % ("5" if V5 else "3.1.1", got, dt / got, in_broker / got))
