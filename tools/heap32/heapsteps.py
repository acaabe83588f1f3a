"""The measuring side of tools/heap32, in plain MicroPython: the real broker (firmware/ubroker)
driven in process through tests/support/broker_sim.py's fake sockets, its heap read with
gc.mem_alloc(). The same steps run in the 32-bit webassembly port (run.mjs) and in the 64-bit
unix port (heap32.py runs both, for the figures side by side).

A step is a generator. At every `yield` control goes back to the driver, which collects the
garbage there and prints what was yielded: the webassembly port only collects once control
is back at its top level (its gc.collect() just asks for it), so a reading of gc.mem_alloc()
right after a yield counts live objects only, in both ports. Within one part (between two
yields) nothing is collected on that port, so the growth of gc.mem_alloc() there is what the
part allocated: the hot-path step uses that."""

import gc
import io
import sys

import micropython

# The webassembly port's gc.mem_free() adds the room it could still claim for new heap areas
# (gc_get_max_new_split: 128 MiB), even once run.mjs --fixed has taken that room away.
_SPLIT = 128 << 20 if sys.platform == "webassembly" else 0
_SMALL_MAX = sys.maxsize >> 1  # the largest small int: 2**30 - 1 on 32 bits

_gen = None


def begin(name, *args):
    global _gen
    _gen = globals()[name](*args)


def step():
    """The current step run to its next yield: what it yielded ("" for nothing), None once it
    has ended. The driver collects before calling again. A MemoryError ends the step with the
    line "memory_error", a constant: on a full heap the webassembly port hangs (its
    nlr_jump_fail) if the error reaches its JS glue, which allocates to pass it on."""
    global _gen
    if _gen is None:
        return None
    try:
        out = next(_gen)
    except StopIteration:
        _gen = None
        return None
    except MemoryError:
        _gen = None
        return "memory_error"
    gc.collect()
    return "" if out is None else out


def main(argv):
    """The unix port's driver: micropython -m heapsteps STEP ARG..."""
    begin(*argv)
    while True:
        out = step()
        if out is None:
            return
        gc.collect()
        if out:
            print(out)


def free():
    return gc.mem_free() - _SPLIT


def _quiet(msg):
    pass


def _settings(board, store):
    """The config as firmware/unix_main.py makes it: the board profile resolved, the parser
    dropped from the heap afterwards; the durable store on in folder store unless empty."""
    from ubroker.config import load, resolve

    cfg = resolve(load(board))
    import ubroker

    del sys.modules["ubroker.config"]
    del ubroker.config
    cfg["verbose"] = False
    if store:
        cfg["persistence"] = True
        cfg["persistence_location"] = store
        from ubroker.store_log import makedirs

        makedirs(store)
    return cfg


def _set(cfg, limits):
    """cfg with limits ("key=value", whole numbers) set over it."""
    for kv in limits:
        k, v = kv.split("=")
        cfg[k] = int(v)


# ---------------------------------------------------------------- the interpreter


def interpreter():
    """The int width (sys.maxsize) and the heap: its size (used + free) and whether it can
    grow past it (one block larger than what is free)."""
    yield
    yield "maxsize %d" % sys.maxsize
    yield "heap %d" % (gc.mem_alloc() + free())
    try:
        bytearray(free() + 4096)
        r = "grew"
    except MemoryError:
        r = "fixed"
    yield "beyond %s" % r


# ---------------------------------------------------------------- heap at start, clients

_GRANTED = [(9, 0, b"\x00\x01\x01")]  # SUBACK for packet id 1, QoS 1 granted


def fit(board, store="", clients="0", *limits):
    """The heap at start with a board profile, as `ubroker run` logs it (start_broker: the
    broker's part of it), then clients (0: the profile's max_connections) connecting one
    after the other, each then subscribing to a topic of its own at QoS 1 (tests/
    test_memory.py's scenario), up to the first one that does not fit. limits ("key=value")
    are set over the profile's, as more clients than its max_connections need."""
    yield
    base = gc.mem_alloc()
    cfg = _settings(board, store)
    _set(cfg, limits)
    yield
    from ubroker.server import Server

    sv = Server(cfg, _quiet)
    yield
    used = gc.mem_alloc()
    yield "start_used %d" % used
    yield "start_broker %d" % (used - base)
    yield "start_free %d" % free()
    import broker_sim

    sim = broker_sim.Sim(cfg, sv)
    yield
    yield "harness %d" % (gc.mem_alloc() - used)
    yield
    n = int(clients or 0) or cfg["max_connections"]
    reserve = cfg["heap_reserve"]
    # A collection after each client on a small board; on a large one (the unix profile's
    # 1024 clients) after every n/64, as each collection walks the whole heap.
    every = max(1, n // 64)
    held = [None] * n
    fitted = 0
    # Why the clients stopped, told once collected: formatting it may not fit before.
    why = None
    what = None
    for i in range(n):
        try:
            why = "CONNECT"
            # Broker.low_heap reads gc.mem_free(), which on the webassembly port counts
            # room run.mjs --fixed took away: the same check, made here.
            if reserve and free() < reserve:
                why = "heap_reserve_before_CONNECT"
                break
            c = broker_sim.Client(sim, b"fit%03d" % i)
            if i % every == 0:
                yield
            why = "SUBSCRIBE"
            if reserve and free() < reserve:
                why = "heap_reserve_before_SUBSCRIBE"
                break
            c.send(broker_sim.subscribe_pkt(1, b"fit/%d" % i, 1))
            p = c.packets()
            if p != _GRANTED:
                what = p
                break
            held[i] = c
            fitted += 1
        except MemoryError as e:  # not `except (A, B)`: a full heap has no room for the tuple
            what = e
            break
        except AssertionError as e:  # broker_sim's: no CONNACK 0
            what = e
            break
        if i % every == 0:
            yield
    else:
        why = None
    yield
    end = free()
    # Counted: the clients' room is now the report's, which may not fit beside them.
    held = c = p = sim = sv = None
    if what is not None:
        what = type(what).__name__
    yield
    yield "fitted %d" % fitted
    yield "of %d" % n
    yield "end_free %d" % end
    if why:
        yield "stopped %s %s" % (why, what)


# ---------------------------------------------------------------- costs per object


def costs(board, sizes, *limits):
    """tools/measure_heap.py's figures, by its definitions: its limits (limits: "key=value")
    over the board profile and its workload (sizes: "clients=50,subscriptions=4,..." by its
    constants; heap32.py passes both): clients connected (per client), subscriptions each
    (per subscription), an offline persistent session holding queued QoS 1 messages of topic
    5 + payload bytes (per queued message, those bytes left out), retained messages (topic 7
    + payload), and QoS 1 messages in flight to a subscriber that never acknowledges. Every
    CONNECT has a keepalive of 60 s, as measure_heap.py's (mqttraw's default).
    harness_per_client is the fake socket and client object each connection costs here (a
    board has its socket object instead)."""
    import broker_sim

    w = {}
    for kv in sizes.split(","):
        k, v = kv.split("=")
        w[k] = int(v)
    payload = w["payload"]
    Client = broker_sim.Client
    cfg = _settings(board, "")
    _set(cfg, limits)
    from ubroker.server import Server

    sim = broker_sim.Sim(cfg, Server(cfg, _quiet))
    n = w["clients"]
    nsub = w["subscriptions"]
    yield
    h0 = gc.mem_alloc()
    clients = [None] * n
    for i in range(n):
        clients[i] = Client(sim, b"client-%04d" % i, keepalive=60)
    yield
    h1 = gc.mem_alloc()
    for i in range(n):
        c = clients[i]
        sub = bytearray(broker_sim.subscribe_pkt(1, b"sensors/room%d/t0" % i, 1))
        for k in range(1, nsub):  # one SUBSCRIBE with all the client's filters
            sub += broker_sim.subscribe_pkt(1, b"sensors/room%d/t%d" % (i, k), 1)[4:]
        sub[1] = len(sub) - 2
        c.send(bytes(sub))
        assert c.packets() == [(9, 0, b"\x00\x01" + b"\x01" * nsub)]
    sub = None
    yield
    h2 = gc.mem_alloc()
    q = Client(sim, b"queue-1", clean=False, keepalive=60)
    q.send(broker_sim.subscribe_pkt(1, b"q/#", 1))
    q.drop()
    q = None
    sessions = sim.sv.broker.sessions
    yield
    h3 = gc.mem_alloc()
    pub = clients[0]
    m = w["queued"]
    for i in range(m):
        pub.send(broker_sim.encode_publish(b"q/abc", b"x" * payload, 1, pid=i + 1))
        pub.packets()
    s = sessions[b"queue-1"]
    assert len(s.queue or ()) + len(s.inflight or ()) == m
    s = None
    yield
    h4 = gc.mem_alloc()
    r = w["retained"]
    for i in range(r):
        pub.send(broker_sim.encode_publish(b"ret/%03d" % i, b"y" * payload, 0, retain=True))
        pub.packets()
    assert len(sim.sv.broker.retained) == r
    yield
    h5 = gc.mem_alloc()
    f = Client(sim, b"inflight-1", keepalive=60)
    f.send(broker_sim.subscribe_pkt(1, b"f/#", 1))
    f.packets()
    yield
    h6 = gc.mem_alloc()
    k = w["inflight"]
    for i in range(k):
        pub.send(broker_sim.encode_publish(b"f/abc", b"x" * payload, 1, pid=1000 + i))
        pub.packets()
        f.packets()
    assert len(sessions[b"inflight-1"].inflight) == k
    yield
    h7 = gc.mem_alloc()
    yield "per_client %d" % ((h1 - h0) // n)
    yield "per_subscription %d" % ((h2 - h1) // (nsub * n))
    yield "per_queued %d" % ((h4 - h3) // m - 5 - payload)
    yield "per_retained %d" % ((h5 - h4) // r - 7 - payload)
    yield "per_inflight %d" % ((h7 - h6) // k - 5 - payload)
    # The harness's own share of per_client: a fake socket (its output emptied) and a
    # client object with Client's fields.
    yield
    a0 = gc.mem_alloc()
    shells = _shells(sim, n)  # noqa: F841 (held until the reading below)
    yield
    yield "harness_per_client %d" % ((gc.mem_alloc() - a0) // n)


class _Shell:
    pass


def _shells(sim, n):
    """n of what a client costs the harness itself: a fake socket (its output emptied) and a
    client object with broker_sim.Client's fields."""
    import broker_sim

    shells = [None] * n
    for i in range(n):
        s = _Shell()
        s.sim = sim
        s.sock = broker_sim.FakeSock()
        s.conn = None
        s.early = []
        s.present = 0
        s.sock.data = bytearray()
        shells[i] = s
    return shells


# ---------------------------------------------------------------- the hot path


class _Wire(io.IOBase):
    """A client's socket that allocates nothing once made: the broker reads what put() left
    in a fixed buffer, and what it writes is taken apart in place, keeping the packet ids of
    QoS 1 PUBLISHes for the PUBACKs and counting the rest. Bytes are copied one at a time:
    a slice would allocate. A stream (io.IOBase), so that it can be registered with the
    server's poll object as a socket is, though it is never polled. expect: the PUBLISH a
    subscriber should get next, as its publisher sent it (intact counts those whose topic and
    payload are its own, byte for byte); sent: the publisher's last PUBLISH (acked counts the
    PUBACKs that carry its packet id)."""

    def __init__(self):
        self.inb = bytearray(4096)
        self.n = 0
        self.pos = 0
        self.pids = [0] * 256
        self.npids = 0
        self.publishes = 0
        self.expect = None
        self.intact = 0
        self.sent = None
        self.acked = 0

    def put(self, pkt):
        inb = self.inb
        n = self.n
        for i in range(len(pkt)):
            inb[n + i] = pkt[i]
        self.n = n + len(pkt)

    def readinto(self, mv):
        k = self.n - self.pos
        if k <= 0:
            return None
        if k > len(mv):
            k = len(mv)
        inb = self.inb
        p = self.pos
        for i in range(k):
            mv[i] = inb[p + i]
        p += k
        if p == self.n:
            p = self.n = 0
        self.pos = p
        return k

    def take(self, buf, have):
        """Move what there is to read into buf (the server's read buffer) past have bytes,
        as a read would; returns the new length."""
        inb = self.inb
        n = self.n
        for i in range(n):
            buf[have + i] = inb[i]
        self.n = self.pos = 0
        return have + n

    def write(self, b):
        n = len(b)
        i = 0
        while i < n:
            t = b[i]
            j = i + 1
            rl = 0
            shift = 0
            while True:
                x = b[j]
                j += 1
                rl |= (x & 127) << shift
                shift += 7
                if x < 128:
                    break
            if t >> 4 == 3:
                self.publishes += 1
                tl = (b[j] << 8) | b[j + 1]
                if t & 6:
                    self.pids[self.npids] = (b[j + 2 + tl] << 8) | b[j + 3 + tl]
                    self.npids += 1
                e = self.expect
                if e is not None and _same_message(b, t, j, j + rl, e):
                    self.intact += 1
            elif t >> 4 == 4 and self.sent is not None and (b[j] << 8 | b[j + 1]) == _pid_of(self.sent):
                self.acked += 1
            i = j + rl
        return n

    def ioctl(self, req, arg):
        return 0

    def close(self):
        pass


def _body(p):
    """Where the topic field of PUBLISH p starts (past its fixed header)."""
    j = 1
    while p[j] & 128:
        j += 1
    return j + 1


def _pid_of(p):
    """The packet id of PUBLISH p (QoS 1/2)."""
    j = _body(p)
    tl = (p[j] << 8) | p[j + 1]
    return (p[j + 2 + tl] << 8) | p[j + 3 + tl]


def _same_message(b, t, j, end, e):
    """Does the PUBLISH in b (first byte t, topic field at j, ending at end) carry the topic
    and payload of PUBLISH e, byte for byte? Compared in place: nothing allocated."""
    ej = _body(e)
    tl = (b[j] << 8) | b[j + 1]
    if tl != (e[ej] << 8) | e[ej + 1]:
        return False
    for k in range(2, 2 + tl):
        if b[j + k] != e[ej + k]:
            return False
    p = j + 2 + tl + (2 if t & 6 else 0)
    ep = ej + 2 + tl + (2 if e[0] & 6 else 0)
    if end - p != len(e) - ep:
        return False
    for k in range(end - p):
        if b[p + k] != e[ep + k]:
            return False
    return True


def _hot_pass(sv, pub, sub, via_read):
    """One pass of the server's loop (Server.one_pass without the poll) over the publisher
    and the subscriber: their input read and handled, then the subscriber's PUBACKs."""
    _handle(sv, pub, via_read)
    _handle(sv, sub, via_read)
    w = sub.sock
    if w is not None and w.npids:
        pids = w.pids
        inb = w.inb
        for i in range(w.npids):
            p = pids[i]
            w.put(_PUBACK)
            inb[w.n - 2] = p >> 8
            inb[w.n - 1] = p & 255
        w.npids = 0
        _handle(sv, sub, via_read)


def _handle(sv, c, via_read):
    w = c.sock
    if w is not None and w.n:
        if via_read:
            sv.read(c)
        else:  # as broker_sim feeds it: the bytes put in the read buffer directly
            sv.consume(c, w.take(sv.rbuf, 0))
    b = sv.broker
    if b.freed:
        sv.resume()
    if b.ndirty:
        sv.flush()


_PUBACK = b"\x40\x02\x00\x00"


def _burst(sv, pub, sub, pkts, via_read):
    """The publisher sends pkts (prebuilt PUBLISHes), one pass per packet."""
    w = pub.sock
    for i in range(len(pkts)):
        if sub.sock is not None:
            sub.sock.expect = pkts[i]
        w.sent = pkts[i]
        w.put(pkts[i])
        _hot_pass(sv, pub, sub, via_read)


def _connect(sv, cid, flt):
    import broker_sim
    from ubroker.session import Conn

    w = _Wire()
    c = Conn(w, sv.now)
    sv.conns[w] = c
    sv.poll.register(w, 1)  # as Server.accept does; never polled here
    w.put(broker_sim.connect_pkt(cid, True))
    if flt:
        w.put(broker_sim.subscribe_pkt(1, flt, 1))
    return c


def hot(board, count="32"):
    """The hot path at its steady state: a publisher sends QoS 0 and QoS 1 PUBLISHes to a
    subscriber (QoS 1 subscription, acknowledging at once), through Server.read and, as
    broker_sim feeds it, straight into Server.consume; count messages a burst. After a
    warm-up, per kind of burst: alloc_KIND, the bytes each message allocated (exact on the
    webassembly port, which collects nothing within a part) and grow_KIND, what the burst
    left on the heap after a collection. counter_NAME: for each counter of Broker.stats the
    bursts move, the bytes a message allocates beyond that once the counter is at the
    largest small int (2**30 - 1 on 32 bits) and Stats.carry() has run, as the server's tick
    does once a second (counted_NAME: the total is still right).
    locked_close: an idle client's connection closed between micropython.heap_lock() and
    heap_unlock(), as the MemoryError handler of Server.consume closes one on a full heap;
    locked_KIND: one message so, up to the first kind that costs a connection; then
    locked_burst_KIND: a whole burst of count messages with the heap locked throughout, what
    the subscriber got (delivered, and intact: the publisher's topic and payload) and the
    PUBACKs the publisher got for its own packet ids (acked)."""
    import broker_sim

    k = int(count)
    cfg = _settings(board, "")
    from ubroker.server import Server

    sv = Server(cfg, _quiet)
    st = sv.broker.stats
    sub = _connect(sv, b"hot-sub", b"hot/t")
    pub = _connect(sv, b"hot-pub", None)
    idle = _connect(sv, b"hot-idle", None)
    _hot_pass(sv, pub, sub, True)
    _handle(sv, idle, True)
    q0 = [broker_sim.encode_publish(b"hot/t", b"%016d" % i, 0) for i in range(k)]
    q1 = [broker_sim.encode_publish(b"hot/t", b"%016d" % i, 1, pid=1 + i) for i in range(k)]
    kinds = (("qos0_read", q0, True), ("qos1_read", q1, True), ("qos0_consume", q0, False),
             ("qos1_consume", q1, False))
    for name, pkts, via_read in kinds:  # warm-up: every path taken once
        _burst(sv, pub, sub, pkts, via_read)
    before = _counters(st)
    for name, pkts, via_read in kinds:
        got = sub.sock.publishes
        yield
        h0 = gc.mem_alloc()
        _burst(sv, pub, sub, pkts, via_read)
        a = gc.mem_alloc() - h0
        yield
        h1 = gc.mem_alloc()
        yield "alloc_%s %d" % (name, a // k)
        yield "grow_%s %d" % (name, h1 - h0)
        yield "delivered_%s %d" % (name, sub.sock.publishes - got)
    moved = [name for name, v in _counters(st) if (name, v) not in before]
    for name in moved:
        old = getattr(st, name)
        yield
        a0 = gc.mem_alloc()
        _burst(sv, pub, sub, q0, True)
        _burst(sv, pub, sub, q1, True)
        base = gc.mem_alloc() - a0
        setattr(st, name, _SMALL_MAX)
        st.carry()  # as the once-a-second tick does
        yield
        a0 = gc.mem_alloc()
        _burst(sv, pub, sub, q0, True)
        _burst(sv, pub, sub, q1, True)
        extra = gc.mem_alloc() - a0 - base
        kept = st.total(name) == _SMALL_MAX + getattr(st, name) - (_SMALL_MAX & ((1 << 29) - 1))
        st.high = None
        setattr(st, name, old)
        yield "counter_%s %d" % (name, extra // (2 * k))
        yield "counted_%s %d" % (name, 1 if kept else 0)
    yield
    raised = "no"
    micropython.heap_lock()
    try:
        sv.close(idle, "closed")
    except MemoryError:
        raised = "yes"
    micropython.heap_unlock()
    yield "locked_close raised=%s" % raised
    for name, pkts, via_read in kinds:
        one = pkts[:1]
        got = sub.sock.publishes
        hits = st.limits.get("memory", 0)
        yield
        raised = "no"
        micropython.heap_lock()
        try:
            _burst(sv, pub, sub, one, via_read)
        except MemoryError:
            raised = "yes"
        micropython.heap_unlock()
        yield "locked_%s delivered=%d broker_memory_errors=%d raised=%s" % (
            name, sub.sock.publishes - got, st.limits.get("memory", 0) - hits, raised)
        if pub.sock is None or sub.sock is None:
            return
        _hot_pass(sv, pub, sub, via_read)  # what a raise left unread
    for name, pkts, via_read in kinds:
        ws = sub.sock
        wp = pub.sock
        got = ws.publishes
        intact = ws.intact
        acked = wp.acked
        hits = st.limits.get("memory", 0)
        yield
        raised = "no"
        micropython.heap_lock()
        try:
            _burst(sv, pub, sub, pkts, via_read)
        except MemoryError:
            raised = "yes"
        micropython.heap_unlock()
        yield "locked_burst_%s sent=%d delivered=%d intact=%d acked=%d broker_memory_errors=%d raised=%s" % (
            name, len(pkts), ws.publishes - got, ws.intact - intact, wp.acked - acked,
            st.limits.get("memory", 0) - hits, raised)
        if pub.sock is None or sub.sock is None:
            return
        _hot_pass(sv, pub, sub, via_read)


def _counters(st):
    return [(k, v) for k, v in st.__dict__.items() if type(v) is int]


if __name__ == "__main__":
    main(sys.argv[1:])
