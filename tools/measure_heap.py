"""Measure the broker's heap cost per client, per subscription, per queued message, per
in-flight message and per retained message on the unix port (64-bit objects), to ground the cost model in
host_tools/ubroker_tools/budget.py. The broker runs with the esp32 profile; after every tick
it collects garbage and prints gc.mem_alloc(). Usage: .venv/bin/python tools/measure_heap.py"""

import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
import mqttraw  # noqa: E402

# The limits raised over the esp32 profile so that the workload below fits in its tables, and
# the workload: what each figure is measured over. tools/heap32/heap32.py imports both, so
# that the 32-bit figures are by the same definitions.
LIMITS = {
    "max_connections": 200,
    "max_sessions": 400,
    "max_subscriptions": 2000,
    "max_subscriptions_per_client": 64,
    "max_queued_messages": 1000,
    "max_inflight_messages": 100,
    "max_queued_bytes": 1000000,
    "max_retained_messages": 1000,
    "max_retained_bytes": 100000,
}
CLIENTS = 50  # connected and idle: per client
SUBSCRIPTIONS = 4  # of each client, in one SUBSCRIBE: per subscription
QUEUED = 200  # QoS 1 messages for an offline persistent session (topic q/abc): per queued message
RETAINED = 100  # retained messages (topics ret/000...): per retained message
INFLIGHT = 100  # QoS 1 messages a connected subscriber never acknowledges (f/abc): per in-flight
PAYLOAD = 20  # bytes of every message's payload; each figure leaves its topic and payload out

SCRIPT = """
import gc, sys
from ubroker.config import load, resolve
from ubroker.server import Server
def log(m):
    pass
class S(Server):
    def tick(self):
        Server.tick(self)
        gc.collect()
        print("HEAP", gc.mem_alloc())
cfg = resolve(load(sys.argv[1]))
cfg["listener"] = [(int(sys.argv[2]), "127.0.0.1")]
cfg["sys_interval"] = 0
""" + "".join('cfg["%s"] = %d\n' % kv for kv in LIMITS.items()) + """S(cfg, log).serve()
"""


def main():
    port = 18000 + os.getpid() % 1000
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "m.py")
    with open(path, "w") as f:
        f.write(SCRIPT)
    env = dict(os.environ, MICROPYPATH=os.path.join(ROOT, "firmware"))
    mp = os.path.join(os.path.dirname(sys.executable), "micropython")
    p = subprocess.Popen([mp, "-X", "heapsize=4M", path, os.path.join(ROOT, "boards", "esp32.conf"), str(port)],
                         env=env, stdout=subprocess.PIPE, text=True, bufsize=1)
    def heap():
        # the figure after the next full tick
        p.stdout.readline()
        return int(p.stdout.readline().split()[1])
    try:
        time.sleep(0.5)
        h0 = heap()
        n = CLIENTS
        clients = []
        for i in range(n):
            c = mqttraw.RawClient(port)
            c.send(mqttraw.connect("client-%04d" % i))
            c.recv_packet()  # CONNACK
            clients.append(c)
        time.sleep(0.3)
        h1 = heap()
        for i, c in enumerate(clients):
            c.send(mqttraw.subscribe(1, *[("sensors/room%d/t%d" % (i, k), 1) for k in range(SUBSCRIPTIONS)]))
        time.sleep(0.3)
        h2 = heap()
        # one offline persistent session collecting QoS 1 messages
        q = mqttraw.RawClient(port)
        q.send(mqttraw.connect("queue-1", clean=False))
        q.send(mqttraw.subscribe(1, ("q/#", 1)))
        time.sleep(0.3)
        q.close()
        time.sleep(0.3)
        h3 = heap()
        m = QUEUED
        pub = clients[0]
        for i in range(m):
            pub.send(mqttraw.publish("q/abc", b"x" * PAYLOAD, qos=1, pid=i + 1))
        time.sleep(0.5)
        h4 = heap()
        r = RETAINED
        for i in range(r):
            pub.send(mqttraw.publish("ret/%03d" % i, b"y" * PAYLOAD, qos=0, retain=True))
        time.sleep(0.5)
        h5 = heap()
        # a connected subscriber that reads its messages and never acknowledges them: each
        # stays in its in-flight window
        f = mqttraw.RawClient(port)
        f.send(mqttraw.connect("inflight-1"))
        f.recv_packet()  # CONNACK
        f.send(mqttraw.subscribe(1, ("f/#", 1)))
        f.recv_packet()  # SUBACK
        time.sleep(0.3)
        h6 = heap()
        k = INFLIGHT
        for i in range(k):
            pub.send(mqttraw.publish("f/abc", b"x" * PAYLOAD, qos=1, pid=1000 + i))
        for i in range(k):
            assert f.recv_packet().type == 3
        time.sleep(0.5)
        h7 = heap()
        print("baseline after start          %6d B" % h0)
        print("per connected client+session  %6.0f B" % ((h1 - h0) / n))
        print("per subscription              %6.0f B" % ((h2 - h1) / (SUBSCRIPTIONS * n)))
        print("per queued message (overhead) %6.0f B (topic 5 + payload %d bytes excluded)"
              % ((h4 - h3) / m - 5 - PAYLOAD, PAYLOAD))
        print("per retained message (overh.) %6.0f B (topic 7 + payload %d bytes excluded)"
              % ((h5 - h4) / r - 7 - PAYLOAD, PAYLOAD))
        print("per in-flight message (ovh.)  %6.0f B (topic 5 + payload %d bytes excluded)"
              % ((h7 - h6) / k - 5 - PAYLOAD, PAYLOAD))
    finally:
        p.terminate()
        p.wait()


if __name__ == "__main__":
    main()
