"""The broker's own work per message in ubroker bench's fanin1ws (8 publishers at QoS 1 ->
1 subscriber of bench/ws/#, every client over WebSockets), with the real Server and real
sockets in ONE MicroPython process, on the model of tools/fanin_v5_inprocess.py, so that a
profiler sees the broker and a client that costs the same before and after a change. WS=0
runs the same fan-in over plain TCP, for the difference the transport makes.

    MICROPYPATH=firmware .venv/bin/micropython -X heapsize=8M tools/fanin_ws_inprocess.py

The clients mask with the key 0 (a key like any other to the broker, which unmasks every
byte all the same), so that their own side costs next to nothing. Instructions per message
(client included), as the difference over the extra messages of two runs:

    for ws in 0 1; do for n in 800 2400; do WS=$ws N=$n MICROPYPATH=firmware valgrind \\
        --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/micropython -X heapsize=8M \\
        tools/fanin_ws_inprocess.py 2>&1 | grep Collected; done; done

Add -X emit=native to run the broker's modules as native code, as `ubroker run` (and so
`ubroker bench`) compiles them. WS_FRAME=k: k messages per publisher frame (default 20).
Measured so (client included): TCP 182k; WebSockets 220k at cc53e7c (the bytecode unmask),
187k with ws_unmask.py, 201k at WS_FRAME=1 (208k before the whole-header read).
"""
import os
import socket
import struct

from inprocess import fanin, packet, s_, start

WS = int(os.getenv("WS", "1"))
PORT = int(os.getenv("PORT", "21995"))
N = int(os.getenv("N", "20000"))
PUBS = 8
WINDOW = 20  # as loadgen's default: messages each publisher sends before it reads its PUBACKs
# Messages per frame a publisher sends (loadgen: what it has queued when it writes, one to
# WINDOW); WS_FRAME=1 for the per-frame cost.
PER_FRAME = int(os.getenv("WS_FRAME", str(WINDOW)))

sv = start([(PORT, "127.0.0.1"), (PORT + 1, "127.0.0.1")], {1: "websockets"})

HEAD = (b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: mqtt\r\n\r\n")


def pump(n=3):
    for _ in range(n):
        sv.one_pass()


def frame(b):
    n = len(b)
    return (bytes((0x82, 0x80 | n)) if n < 126 else bytes((0x82, 0xFE, n >> 8, n & 255))) + b"\0\0\0\0" + b


class Client:
    """A socket that frames what it writes (masked, key 0) and de-frames what it reads when
    WS is on; plain otherwise."""

    def __init__(self, cid):
        c = self.c = socket.socket()
        c.connect(socket.getaddrinfo("127.0.0.1", PORT + WS)[0][-1])
        c.setsockopt(6, 1, 1)
        self.raw = b""
        if WS:
            c.write(HEAD)
            pump()
            head = b""
            while b"\r\n\r\n" not in head:
                head += c.recv(500)
            assert head.startswith(b"HTTP/1.1 101"), head
        self.write(packet(0x10, s_(b"MQTT") + b"\x04\x02\x00\x3c" + s_(cid)))
        pump()
        self.read_all(True)

    def write(self, b):
        """b: bytes, or a list of pieces, each its own frame (WS); all in one write."""
        if type(b) is not list:
            b = [b]
        self.c.write(b"".join([frame(x) for x in b] if WS else b))

    def read_all(self, block=False):
        d = self.c.recv(200) if block else self.c.read(65536)
        if not d:
            return b""
        if not WS:
            return d
        raw = self.raw + d
        out = b""
        while len(raw) >= 2:
            ln = raw[1] & 127
            hl = 2
            if ln == 126:
                if len(raw) < 4:
                    break
                ln = raw[2] << 8 | raw[3]
                hl = 4
            if len(raw) < hl + ln:
                break
            out += raw[hl : hl + ln]
            raw = raw[hl + ln :]
        self.raw = raw
        return out


sub = Client(b"sub")
sub.write(packet(0x82, b"\x00\x01" + s_(b"bench/ws/#") + b"\x01"))
pump()
sub.read_all(True)
pubs = [Client(b"pub%d" % i) for i in range(PUBS)]


def batch(i, seq):
    out = []
    for j in range(WINDOW):
        pid = (seq + j) % 65535 + 1
        body = s_(b"bench/ws/%d" % i) + struct.pack(">H", pid) + struct.pack(">BI", i, seq + j) + b"." * 11
        out.append(packet(0x32, body))
    return [b"".join(out[k : k + PER_FRAME]) for k in range(0, WINDOW, PER_FRAME)]


for p in pubs:
    p.c.setblocking(False)
sub.c.setblocking(False)
got, dt, in_broker = fanin(sv, pubs, sub, batch, N, WINDOW, lambda c: c.read_all(), lambda c, b: c.write(b))
print("%s: %d messages, %.2f us per message, %.2f us of it in the broker"
      % ("WebSockets" if WS else "TCP", got, dt / got, in_broker / got))
