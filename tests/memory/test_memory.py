"""The memory goal of the broker issue: 64 clients, each subscribed, served by a broker with
the smallest board's profile (boards/esp32.conf: heap 100k, the 64 clients its heap is sized for), all working;
and the heap cost of one idle client with a subscription, one retained message and one queued
or in-flight QoS 1 message, measured.

The costs are measured inside the MicroPython unix port by a small script that imports
firmware/ubroker, starts a real Server on a loopback port, connects real sockets to it and runs
the server's own read/flush code, taking gc.mem_alloc() after gc.collect() before and after
(so only live objects count). The figures are for the 64-bit unix port; a 32-bit board needs
roughly half (pointers and object headers are half the size)."""

import socket

import mqttraw
from conftest import free_port
from mpscript import board_conf, figures, run_done

ESP32_MAX_CONNECTIONS = 64

MEASURE = r'''
import gc, socket, sys, time
from ubroker.config import load, resolve
from ubroker.server import Server


port = int(sys.argv[1])
board = sys.argv[2]
N = int(sys.argv[3])
cfg = resolve(load(board))
cfg["max_connections"] = 64  # the heap's figure: the profile's 9 are the stock stack's
cfg["listener"] = [(port, "127.0.0.1")]
cfg["verbose"] = False
cfg["sys_interval"] = 0
srv = Server(cfg, lambda m: None)
srv.listen()
b = srv.broker
addr = socket.getaddrinfo("127.0.0.1", port)[0][-1]


def varint(n):
    out = bytearray()
    while True:
        x = n & 127
        n >>= 7
        out.append(x | (128 if n else 0))
        if not n:
            return bytes(out)


def pkt(b0, body):
    return bytes([b0]) + varint(len(body)) + body


def s(x):
    return bytes([len(x) >> 8, len(x) & 255]) + x


def connect(cid, clean=True):
    return pkt(0x10, s(b"MQTT") + bytes([4, 2 if clean else 0, 0, 0]) + s(cid))


def subscribe(flt, q):
    return pkt(0x82, b"\x00\x01" + s(flt) + bytes([q]))


def publish(topic, payload, q, pid, retain=False):
    return pkt(0x30 | (q << 1) | (1 if retain else 0),
               s(topic) + (bytes([pid >> 8, pid & 255]) if q else b"") + payload)


def pump(until):
    """The body of Server.serve(), run until until() holds."""
    for _ in range(3000):
        for ev in srv.poll.ipoll(5):
            sk = ev[0]
            c = srv.conns.get(sk)
            if c is None:
                if sk in srv.listeners:
                    srv.accept(sk)
                continue
            if ev[1] & select_OUT and c.out:
                b.dirty.append(c)
            if ev[1] & select_INERR and not c.paused:
                srv.read(c)
        srv.now = time.ticks_ms()
        if b.freed:
            srv.resume()
        if b.dirty:
            srv.flush()
        if until():
            return
    raise Exception("pump: condition never held")


import select
select_OUT = select.POLLOUT
select_INERR = select.POLLIN | select.POLLERR | select.POLLHUP


def used():
    gc.collect()
    gc.collect()
    return gc.mem_alloc()


def subscribed(cid):
    def f():
        se = b.sessions.get(cid)
        return se is not None and se.nfilters() > 0
    return f


# Client-side sockets live on the same heap: make them all first, before any baseline.
clients = [socket.socket() for _ in range(N + 4)]
cids = [b"c%03d" % i for i in range(N + 4)]
flts = [b"t/%03d" % i for i in range(N + 4)]
hello = [connect(cids[i]) + subscribe(flts[i], 1) for i in range(N + 4)]

# Warm up: two clients through every code path measured below.
for i in (N, N + 1):
    clients[i].connect(addr)
    clients[i].send(hello[i])
    pump(subscribed(cids[i]))
print("baseline", used())
print("free", gc.mem_free())

a0 = used()
for i in range(N):
    clients[i].connect(addr)
    clients[i].send(hello[i])
    pump(subscribed(cids[i]))
a1 = used()
print("per_client", (a1 - a0) // N)

# Retained messages: K topics of 7 bytes, payloads of 16 bytes.
K = 16
pub = clients[0]
data = b"".join(publish(b"r/%05d" % i, b"R" * 16, 0, 0, True) for i in range(K))
a0 = used()
pub.send(data)
pump(lambda: len(b.retained) >= K)
data = None
a1 = used()
print("per_retained", (a1 - a0) // K)

# Queued QoS 1 messages for an offline persistent session.
q = clients[N + 2]
q.connect(addr)
q.send(connect(b"offline", False) + subscribe(b"q/t", 1) + b"\xe0\x00")
pump(lambda: b.sessions.get(b"offline") is not None and b.sessions[b"offline"].conn is None)
K = 16
data = b"".join(publish(b"q/t", b"Q" * 16, 1, i + 1) for i in range(K))
a0 = used()
pub.send(data)
pump(lambda: b.sessions[b"offline"].queue is not None and len(b.sessions[b"offline"].queue) >= K)
data = None
a1 = used()
print("per_queued", (a1 - a0) // K)

# In-flight QoS 1 messages to an online subscriber that does not acknowledge.
f = clients[N + 3]
f.connect(addr)
f.send(connect(b"inflight") + subscribe(b"f/t", 1))
pump(subscribed(b"inflight"))
K = cfg["max_inflight_messages"]
data = b"".join(publish(b"f/t", b"F" * 16, 1, 100 + i) for i in range(K))
a0 = used()
pub.send(data)
pump(lambda: b.sessions[b"inflight"].inflight is not None and len(b.sessions[b"inflight"].inflight) >= K)
data = None
a1 = used()
print("per_inflight", (a1 - a0) // K)
print("done")
'''


def measure(tmp_path, n=32, board="esp32", heap="512k"):
    return figures(run_done(tmp_path, MEASURE, str(free_port()), board_conf(board), str(n), heap=heap,
                            name="measure.py"))


def test_heap_cost_per_client_retained_and_queued_message(tmp_path):
    """Measured heap cost, in bytes, on the 64-bit unix port with the esp32 profile's tables:
    printed by the test (run with -s to see them) and bounded generously: an idle client with
    one subscription under 2 kB (the issue's goal is 1 kB on a 32-bit board, about half the
    64-bit size), a retained / queued / in-flight message with a 7-byte topic and a 16-byte
    payload under 512 B each."""
    m = measure(tmp_path)
    print("\nheap (64-bit unix port, esp32 profile): baseline %(baseline)d B used, %(free)d free;"
          " per idle client with 1 subscription %(per_client)d B; per retained message"
          " %(per_retained)d B; per queued QoS 1 message %(per_queued)d B; per in-flight QoS 1"
          " message %(per_inflight)d B" % m)
    assert 0 < m["per_client"] < 2048, m
    assert 0 < m["per_retained"] < 512, m
    assert 0 < m["per_queued"] < 512, m
    assert 0 < m["per_inflight"] < 512, m


def test_64_subscribed_clients_in_the_esp32_heap(broker_factory):
    """boards/esp32.conf (heap_budget 100k; its heap is sized for 64 clients, max_connections
    raised from stock lwIP's 9 to 64 here): 64 clients connect, each
    subscribes to its own topic at QoS 1, each receives the message published to its topic
    (and nothing else), and all 64 still answer PINGREQ. Client 0 is also the publisher."""
    n = ESP32_MAX_CONNECTIONS
    # The heap's figure: the profile's max_connections (9) is what stock MicroPython's
    # network stack holds, not the heap.
    broker = broker_factory(config="max_connections %d\n" % n)
    clients = []
    for i in range(n):
        r = broker.raw(timeout=10)
        r.send(mqttraw.connect("m%02d" % i, keepalive=0))
        p = r.recv_packet(10)
        assert p is not None and p.type == 2 and p.body == b"\x00\x00", \
            "only %d of %d clients fit: client %d got %r\n%s\n...\n%s" % (
                i, n, i, p, "\n".join(broker.log().splitlines()[:4]), broker.log()[-600:])
        r.send(mqttraw.subscribe(1, ("mem/%d" % i, 1)))
        assert r.expect(9).body == b"\x00\x01\x01", "client %d: subscription refused" % i
        clients.append(r)
    # Every client works: each gets the message published to its topic. QoS 0: with 64
    # clients connected, the 100k heap of the 64-bit port has about 3 kB left, in pieces too
    # small for the in-flight state of QoS 1 (measured); QoS 1/2 flows at this heap size are
    # covered with fewer clients in test_limits and test_publish.
    pub = clients[0]
    pub.send(b"".join(mqttraw.publish("mem/%d" % i, b"to %d" % i) for i in range(n)))
    for i in range(n):
        p = clients[i].expect(3, 10)
        assert (p.topic, p.payload, p.qos) == (b"mem/%d" % i, b"to %d" % i, 0), i
    for i in range(1, n):  # nothing more for anyone
        try:
            p = clients[i].recv_packet(0.02)
        except socket.timeout:
            p = None
        assert p is None, (i, p)
    # all 64 still connected: each answers a PINGREQ
    for r in clients:
        r.send(mqttraw.PINGREQ)
    for r in clients:
        r.expect(13, 10)
    assert broker.alive()
