"""The heap a WebSocket connection costs beyond a TCP one (the issue's aim: under 200 B on the
64-bit unix port), and that a broker without a websockets listener loads no ws_ module.

Measured as tests/memory/test_memory.py measures: a script in the MicroPython unix port
starts a real Server with a TCP and a WebSockets listener, connects real sockets (the
WebSocket ones send the opening handshake and masked frames), runs the server's own
accept/read/flush code, and takes gc.mem_alloc() after gc.collect() before and after N
clients of each kind connect and subscribe. The handshake's own buffers are gone by then:
what stays is the wrapper (ws_frame.WsSock) and its 17-byte header and state buffer."""


from conftest import free_port
from mpscript import board_conf, figures, run_done, run_mp

MEASURE = r'''
import gc, socket, sys, time, select
from ubroker.config import load, resolve
from ubroker.server import Server

tcp_port, ws_port = int(sys.argv[1]), int(sys.argv[2])
N = int(sys.argv[4])
cfg = resolve(load(sys.argv[3]))
cfg["max_connections"] = 64
cfg["listener"] = [(tcp_port, "127.0.0.1"), (ws_port, "127.0.0.1")]
cfg["protocols"] = {1: "websockets"}
cfg["verbose"] = False
cfg["sys_interval"] = 0
srv = Server(cfg, lambda m: None)
srv.listen()
b = srv.broker
print("ws_loaded", int("ubroker.ws_frame" in sys.modules))
from ubroker.ws_frame import WsSock
IN_ERR = select.POLLIN | select.POLLERR | select.POLLHUP


def pump(until):
    for _ in range(3000):
        for ev in srv.poll.ipoll(5):
            c = srv.conns.get(ev[0])
            if c is None:
                if ev[0] in srv.listeners:
                    srv.accept(ev[0])
                continue
            if ev[1] & select.POLLOUT and c.out:
                b.mark_dirty(c)
            if ev[1] & IN_ERR and not c.paused:
                srv.read(c)
        srv.now = time.ticks_ms()
        if b.ndirty:
            srv.flush()
        if until():
            return
    raise Exception("pump: condition never held")


def s(x):
    return bytes([len(x) >> 8, len(x) & 255]) + x


def hello(cid, flt):
    c = s(b"MQTT") + bytes([4, 2, 0, 0]) + s(cid)
    sub = b"\x00\x01" + s(flt) + b"\x01"
    return bytes([0x10, len(c)]) + c + bytes([0x82, len(sub)]) + sub


def masked(payload):
    key = b"\x12\x34\x56\x78"
    return bytes([0x82, 0x80 | len(payload)]) + key + bytes(x ^ key[i & 3] for i, x in enumerate(payload))


HEAD = (b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: mqtt\r\n\r\n")


def used():
    gc.collect()
    gc.collect()
    return gc.mem_alloc()


def subscribed(cid):
    def f():
        se = b.sessions.get(cid)
        return se is not None and se.nfilters() > 0
    return f


tcp = [socket.socket() for _ in range(N + 1)]
ws = [socket.socket() for _ in range(N + 1)]
cids = [b"c%03d" % i for i in range(2 * N + 2)]
data_tcp = [hello(cids[i], b"t/%03d" % i) for i in range(N + 1)]
data_ws = [masked(hello(cids[N + 1 + i], b"w/%03d" % i)) for i in range(N + 1)]
addr_tcp = socket.getaddrinfo("127.0.0.1", tcp_port)[0][-1]
addr_ws = socket.getaddrinfo("127.0.0.1", ws_port)[0][-1]


def join_tcp(i):
    tcp[i].connect(addr_tcp)
    tcp[i].send(data_tcp[i])
    pump(subscribed(cids[i]))


def n_open():
    return sum(1 for c in srv.conns.values() if type(c.sock) is WsSock and c.sock.h[16] & 1)  # open (ws_frame._FL)


def join_ws(i):
    k = n_open()
    ws[i].connect(addr_ws)
    ws[i].send(HEAD)
    pump(lambda: n_open() > k)  # its 101 went out: the wrapper is open
    ws[i].send(data_ws[i])
    pump(subscribed(cids[N + 1 + i]))


join_tcp(N)  # warm-up: every path once
join_ws(N)
a0 = used()
for i in range(N):
    join_tcp(i)
a1 = used()
for i in range(N):
    join_ws(i)
a2 = used()
print("per_tcp", (a1 - a0) // N)
print("per_ws", (a2 - a1) // N)
print("done")
'''


def measure(tmp_path, n=16, board="esp32", heap="512k"):
    return figures(run_done(tmp_path, MEASURE, str(free_port()), str(free_port()), board_conf(board), str(n),
                            heap=heap, name="ws_script.py"))


def test_websocket_connection_costs_under_200_bytes_more_than_tcp(tmp_path):
    """Per connected client with one subscription, on the 64-bit unix port with the esp32
    profile's tables: a WebSocket client costs its wrapper beyond a TCP client (printed; run
    with -s), under 200 B."""
    m = measure(tmp_path)
    extra = m["per_ws"] - m["per_tcp"]
    print("\nheap per client (64-bit unix port, esp32 profile): TCP %d B, WebSocket %d B, %d B more"
          % (m["per_tcp"], m["per_ws"], extra))
    assert m["ws_loaded"] == 1
    assert 0 < m["per_tcp"] < 2048, m
    assert 0 <= extra < 200, m


def test_no_ws_module_without_a_websockets_listener(tmp_path):
    """A broker whose listeners are all MQTT over TCP imports nothing of the WebSockets code:
    its heap at start is what it was before the feature (docs/websockets.md)."""
    r = run_mp(tmp_path, "import sys\nfrom ubroker.config import load, resolve\nfrom ubroker.server import Server\n"
               "cfg = resolve(load(sys.argv[1]))\ncfg['listener'] = [(%d, '127.0.0.1'), (%d, '127.0.0.1')]\n"
               "srv = Server(cfg, lambda m: None)\nsrv.listen()\n"
               "print(sorted(m for m in sys.modules if m.startswith('ubroker.ws')), srv.ws)\n"
               % (free_port(), free_port()), board_conf("esp32"))
    assert r.stdout.strip() == "[] None", r.stdout + r.stderr


NO_ALLOC = r'''
import micropython
from ubroker.ws_frame import WsSock

KEY = b"\x12\x34\x56\x78"


def masked(payload, fin=True, op=2):
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | op]) + (bytes([0x80 | n]) if n < 126 else bytes([0xFE, n >> 8, n & 255]))
    return head + KEY + bytes(x ^ KEY[i & 3] for i, x in enumerate(payload))


# Two PUBLISH packets in one frame, one spread over a fragmented message, read in pieces
# that cut headers and masks.
pub = bytes([0x30, 12, 0, 3]) + b"a/b" + b"payload"
wire = masked(pub + pub) + masked(pub[:5], False) + masked(pub[5:], True, 0) + masked(b"x" * 200)
want = pub + pub + pub + b"x" * 200
CUTS = [1, 3, 9, 20, 33, 34, 50, 51, 120, 200, len(wire)]


class Fake:
    """A socket: hands out the wire in the pieces CUTS makes, takes every write whole."""

    def __init__(self):
        self.at = 0
        self.cut = 0

    def readinto(self, buf):
        end = CUTS[self.cut]
        self.cut += 1
        n = 0
        while self.at < end:
            buf[n] = wire[self.at]
            self.at += 1
            n += 1
        return n

    def write(self, b):
        return len(b)


WsSock.limit = 4096
buf = bytearray(512)
got = bytearray(1024)
small = b"s" * 100
large = b"L" * 300


def run(w, locked):
    w.s.at = w.s.cut = 0
    have = 0
    if locked:
        micropython.heap_lock()
    try:
        for _ in range(len(CUTS)):
            n = w.readinto(buf) or 0
            for i in range(n):
                got[have + i] = buf[i]
            have += n
        wrote = w.write(small) + w.write(large)
    finally:
        if locked:
            micropython.heap_unlock()
    return have, wrote


w = WsSock(Fake())
w.h[16] = 1  # open (ws_frame._FL, _OPEN)
run(w, False)  # the first pass sets the fields an open connection keeps
try:
    have, wrote = run(w, True)
    print("ok", int(bytes(got[:have]) == want), wrote)
except MemoryError:
    print("allocates")
'''


def test_frames_in_and_out_allocate_nothing(tmp_path):
    """Reading frames (several packets in one, one fragmented, pieces that cut headers and
    masks) and writing frames of both header forms allocates nothing once a connection is
    open: run with MicroPython's heap locked (micropython.heap_lock), the bytes come out
    right and no MemoryError is raised. A TCP read allocates nothing here either, so
    WebSockets adds no per-message allocation."""
    r = run_mp(tmp_path, NO_ALLOC)
    assert r.stdout.strip() == "ok 1 400", r.stdout + r.stderr
