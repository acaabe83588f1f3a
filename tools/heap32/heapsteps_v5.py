"""tools/heap32's MQTT 5 step (v5costs), apart from heapsteps.py so that the other steps'
figures stay as they were: every name of a loaded module is a qstr, and where the
interpreter's qstr pools grow (each new pool doubles) moves the heap at start by kilobytes.
Run as a step of heapsteps, through its driver: run.mjs and heap32.py name it
"heapsteps_v5.v5costs"."""

import gc
import sys

import micropython

import heapsteps
from heapsteps import _quiet, _set, _settings, _shells


# ---------------------------------------------------------------- MQTT 5 costs


def _pkt(b0, body):
    """A packet: its first byte, the Remaining Length (variable byte integer), body."""
    out = bytearray((b0,))
    n = len(body)
    while True:
        d = n & 127
        n >>= 7
        out.append(d | 128 if n else d)
        if not n:
            return bytes(out) + body


def _str(x):
    return bytes((len(x) >> 8, len(x) & 255)) + x


def _v5_connect(cid):
    """CONNECT at protocol level 5: Clean Start, keepalive 60 s, no properties."""
    return _pkt(0x10, _str(b"MQTT") + b"\x05\x02\x00\x3c\x00" + _str(cid))


def _v5_subscribe(pid, flt, options):
    """SUBSCRIBE (v5): no properties, one filter with its options byte (QoS | 4 No Local |
    8 Retain As Published | Retain Handling << 4)."""
    return _pkt(0x82, bytes((pid >> 8, pid & 255, 0)) + _str(flt) + bytes((options,)))


def _v5_publish(topic, payload, alias=0):
    """A QoS 0 PUBLISH (v5) on topic, with a Topic Alias property (0x23) if alias."""
    props = bytes((3, 0x23, alias >> 8, alias & 255)) if alias else b"\x00"
    return _pkt(0x30, _str(topic) + props + payload)


def _qstrs(tag, proto="v5"):
    """The interpreter's qstr pools, as a line "qstrs_TAG qstr pool: n_pool=..." (printed:
    micropython.qstr_info() has no other output), for heap32.py to take out of a one-time
    figure the new pool the interpreter may allocate there (its size doubles each time, so
    which module crosses the line is chance). After a reading: print allocates."""
    if proto == "v5":
        print("qstrs_" + tag, end=" ")
        micropython.qstr_info()


def v5costs(board, sizes, *limits):
    """What MQTT 5 costs in heap, beside 3.1.1, over the workload and limits of heapsteps.costs()
    (heap32.py passes tools/measure_heap.py's). Two servers made alike, each first with a
    3.1.1 client subscribed (warm-up) and one client of its protocol (first), then n clients
    (sizes' clients) that each connect (CONNECT, keepalive 60 s, Clean Start, no v5
    properties) and then subscribe to one filter of their own at QoS 1 (a v5 one with the
    options byte 0x01): client_P and sub_P per client of protocol P (311, v5), with the
    harness's own share (harness_per_client, its fake socket and client object) in client_P;
    idle_P the two without it. Then:
    v5_modules: what the first v5 CONNECT took beyond a v5 client's (the v5 modules and the
    broker's V5 object), v5_subscribe_module: the same for its first SUBSCRIBE;
    shared_first: the first SUBSCRIBE to `$share/g/shared/t` (v5_shared.py imported, the
    index's hooks, the group, the member); shared_member: one more member of that group (n/2
    clients joining it), shared_group: a new group of one (n/2 clients, each
    `$share/gNN/shared/t`); alias: a Topic Alias set by a v5 client's PUBLISH (QoS 0, a
    topic of 16 bytes, no subscriber) and kept, per client: its alias table and the topic, the
    heap after a plain PUBLISH on a topic as long before it and after (the route cache
    emptied for both readings); aliases_8: all 8 aliases of a connection (a new topic each),
    per client, the same way. Around the one-time figures a line of the qstr pools
    (_qstrs): heap32.py takes a new pool out of them and reports it apart."""
    import broker_sim

    w = {}
    for kv in sizes.split(","):
        k, v = kv.split("=")
        w[k] = int(v)
    n = w["clients"]
    half = n // 2
    cfg0 = _settings(board, "")
    _set(cfg0, limits)
    from ubroker.server import Server
    from ubroker.session import Conn

    Client = broker_sim.Client

    class V5Client(Client):
        """broker_sim.Client, connecting with a v5 CONNECT: the same fields."""

        def __init__(self, sim, cid):
            self.sim = sim
            self.sock = broker_sim.FakeSock()
            self.conn = Conn(self.sock, sim.sv.now)
            sim.sv.conns[self.sock] = self.conn
            self.early = []
            self.send(_v5_connect(cid))
            p = self.packets()
            assert p and p[0][0] == 2 and p[0][2][1] == 0, p
            self.present = p[0][2][0]
            self.early = p[1:]

    def granted(c):
        p = c.packets()
        assert len(p) == 1 and p[0][0] == 9 and p[0][2][-1] == 1, p

    out = {}
    for proto in ("311", "v5"):
        sim = broker_sim.Sim(dict(cfg0), Server(dict(cfg0), _quiet))
        warm = Client(sim, b"warm-up", keepalive=60)
        warm.send(broker_sim.subscribe_pkt(1, b"warm/t", 1))
        granted(warm)
        if proto == "v5":
            def make(cid):
                return V5Client(sim, cid)

            def sub(pid, flt):
                return _v5_subscribe(pid, flt, 1)
        else:
            def make(cid):
                return Client(sim, cid, keepalive=60)

            def sub(pid, flt):
                return broker_sim.subscribe_pkt(pid, flt, 1)
        yield
        g0 = gc.mem_alloc()
        _qstrs("g0", proto)
        first = make(b"first-" + proto)
        yield
        g1 = gc.mem_alloc()
        _qstrs("g1", proto)
        first.send(sub(1, b"first/t"))
        granted(first)
        yield
        g2 = gc.mem_alloc()
        _qstrs("g2", proto)
        clients = [None] * n
        for i in range(n):
            clients[i] = make(b"client-%04d" % i)
        yield
        h1 = gc.mem_alloc()
        for i in range(n):
            c = clients[i]
            c.send(sub(1, b"sensors/room%d/t" % i))
            granted(c)
        yield
        h2 = gc.mem_alloc()
        out["client_" + proto] = (h1 - g2) // n
        out["sub_" + proto] = (h2 - h1) // n
        if proto == "v5":
            out["v5_modules"] = (g1 - g0) - out["client_v5"]
            out["v5_subscribe_module"] = (g2 - g1) - out["sub_v5"]
            break
        clients = first = warm = c = sim = None
        yield
    # Shared subscriptions (v5 clients)
    yield
    s0 = gc.mem_alloc()
    _qstrs("s0")
    first.send(_v5_subscribe(2, b"$share/g/shared/t", 1))
    granted(first)
    yield
    s1 = gc.mem_alloc()
    _qstrs("s1")
    for i in range(half):
        c = clients[i]
        c.send(_v5_subscribe(2, b"$share/g/shared/t", 1))
        granted(c)
    yield
    s2 = gc.mem_alloc()
    for i in range(half, 2 * half):
        c = clients[i]
        c.send(_v5_subscribe(2, b"$share/g%02d/shared/t" % i, 1))
        granted(c)
    yield
    s3 = gc.mem_alloc()
    out["shared_first"] = s1 - s0
    out["shared_member"] = (s2 - s1) // half
    out["shared_group"] = (s3 - s2) // half
    # Topic aliases set by v5 clients: a plain PUBLISH, then one setting alias 1 on a new
    # topic, then a plain one again on another (the last topic published is kept apart)
    cache = sim.sv.broker.index.cache

    def send_all(topic, alias):
        for i in range(n):
            c = clients[i]
            c.send(_v5_publish(topic % i, b"x", alias))
            assert not c.packets()
        cache.clear()

    send_all(b"plain/%04d/first", 0)
    yield
    a0 = gc.mem_alloc()
    send_all(b"alias/%04d/topic", 1)
    send_all(b"plain/%04d/again", 0)
    yield
    a1 = gc.mem_alloc()
    for k in range(2, 9):
        send_all(b"alias/%04d/top-" + b"%d" % k, k)
    send_all(b"plain/%04d/later", 0)
    yield
    a2 = gc.mem_alloc()
    out["alias"] = (a1 - a0) // n
    out["aliases_8"] = (a2 - a0) // n
    # The harness's share of a client, as heapsteps.costs() measures it
    yield
    a0 = gc.mem_alloc()
    shells = _shells(sim, n)  # noqa: F841 (held until the reading below)
    yield
    hc = (gc.mem_alloc() - a0) // n
    out["harness_per_client"] = hc
    out["idle_311"] = out["client_311"] - hc + out["sub_311"]
    out["idle_v5"] = out["client_v5"] - hc + out["sub_v5"]
    for k in ("idle_311", "idle_v5", "client_311", "client_v5", "sub_311", "sub_v5", "harness_per_client",
              "v5_modules", "v5_subscribe_module", "shared_first", "shared_member", "shared_group", "alias",
              "aliases_8"):
        yield "%s %d" % (k, out[k])


if __name__ == "__main__":  # the unix port's driver: micropython -m heapsteps_v5 STEP ARG...
    heapsteps._gen = globals()[sys.argv[1]](*sys.argv[2:])
    while True:
        line = heapsteps.step()
        if line is None:
            break
        gc.collect()
        if line:
            print(line)
