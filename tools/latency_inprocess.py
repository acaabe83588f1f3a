"""The broker's own work per round trip, without the scheduler in the way: the real Server
and one client socket in ONE MicroPython process; the client publishes a QoS 0 message to a
topic it subscribes to, the test runs one loop pass, the client reads the message back.
Compare with `loadgen latency` (two processes) to see how much of a round trip is the broker.

    MICROPYPATH=firmware .venv/bin/micropython -X heapsize=8M tools/latency_inprocess.py
"""
import os
import socket
import time

from ubroker import codec
from ubroker.config import load, resolve

BOARD = os.getcwd() + "/boards/unix.conf"
cfg = resolve(load(BOARD), {"listener": [(21999, "127.0.0.1")]})
cfg["verbose"] = False
from ubroker.server import Server  # noqa: E402

sv = Server(cfg, lambda m: None)
sv.listen()
sv.running = True
sv.next_tick = time.ticks_add(time.ticks_ms(), 1000)
c = socket.socket(); c.connect(socket.getaddrinfo("127.0.0.1", 21999)[0][-1])
c.setsockopt(6, 1, 1)
def pump(n=3):
    for i in range(n): sv.one_pass()
body = b'\x00\x04MQTT\x04\x02\x00\x3c\x00\x02lt'
c.write(bytes((0x10, len(body))) + body); pump(); c.recv(100)
sub = bytearray(b'\x82'); sb = b'\x00\x01\x00\x03t/x\x00'; codec.put_length(sub, len(sb)); c.write(bytes(sub) + sb); pump(); c.recv(100)
pkt = bytes((0x30, 2 + 3 + 16)) + b'\x00\x03t/x' + b'x' * 16  # PUBLISH t/x, QoS 0
c.setblocking(True)
N = 5000
t0 = time.ticks_us()
for i in range(N):
    c.write(pkt)
    sv.one_pass()
    c.recv(100)
dt = time.ticks_diff(time.ticks_us(), t0)
print("us per round trip (in-process, real sockets):", dt / N)
