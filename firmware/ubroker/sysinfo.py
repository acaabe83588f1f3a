"""The $SYS report: every sys_interval seconds the broker's figures are published under
Mosquitto's names ($SYS/broker/clients/connected, ...), and ubroker's own (heap, limit
counters, clients by protocol version, which Mosquitto does not report) under
$SYS/broker/ubroker/. A new $SYS subscriber gets the current values at once, with RETAIN
set, as if they were retained; they are computed then rather than kept (a small board's
heap has better uses)."""

import gc
import time

from . import VERSION


class SysInfo:
    def __init__(self, server):
        self.server = server
        self.interval = server.cfg["sys_interval"] * 1000
        self.due = server.now

    def figures(self):
        """(name, value) pairs, one at a time: the report never needs a large block."""
        sv = self.server
        b = sv.broker
        st = b.stats
        offline = len(b.sessions) - st.connected
        yield "version", "ubroker " + VERSION
        yield "uptime", "%d seconds" % (time.ticks_diff(sv.now, sv.started) // 1000)
        yield "clients/connected", st.connected
        yield "clients/active", st.connected
        yield "clients/disconnected", offline if offline > 0 else 0
        yield "clients/total", len(b.sessions)
        yield "clients/maximum", st.max_connected
        yield "messages/received", st.total("msgs_in")
        yield "messages/sent", st.total("msgs_out") + st.total("pub_out")
        yield "publish/messages/received", st.total("pub_in")
        yield "publish/messages/sent", st.total("pub_out")
        yield "publish/messages/dropped", st.dropped
        yield "bytes/received", st.total("bytes_in")
        yield "bytes/sent", st.total("bytes_out")
        yield "subscriptions/count", b.index.count
        yield "retained messages/count", len(b.retained)
        # Connected clients by protocol version too, counted here from the sessions'
        # connections, not per CONNECT or packet: a bridge's own link counts at its level, and
        # 3.1 is told by Conn.v31 where protocol.py sets it (else it counts as 3.1.1).
        held = v5 = v31 = 0
        for s in b.sessions.values():
            held += s.held()
            c = s.conn
            if c is not None:
                if c.v5 is not None:
                    v5 += 1
                elif getattr(c, "v31", False):
                    v31 += 1
        yield "store/messages/count", held
        yield "store/messages/bytes", b.held_bytes
        pv = "ubroker/clients/protocol/v"  # one constant: each in the bytecode is heap
        yield pv + "311", st.connected - v5 - v31
        yield pv + "5", v5
        yield pv + "31", v31
        yield "ubroker/heap/free", gc.mem_free()
        yield "ubroker/heap/used", gc.mem_alloc()
        yield "ubroker/retained/bytes", b.retained_bytes
        p = sv.persist
        if p is not None:
            store = p.store
            yield "ubroker/store/bytes", store.size
            yield "ubroker/store/budget", store.budget
            yield "ubroker/store/commits", store.commits
            yield "ubroker/store/bytes_written", store.bytes_written
            yield "ubroker/store/compactions", store.compactions
            yield "ubroker/store/torn", store.torn
            yield "ubroker/store/erases", store.wear // 10  # an estimate (store_log.Store.wear)
        for br in sv.bridges:
            yield from br.figures()
        for name in st.limits:
            yield "ubroker/limits/" + name, st.limits[name]

    def tick(self, now):
        if self.interval <= 0 or time.ticks_diff(now, self.due) < 0:
            return
        self.due = time.ticks_add(now, self.interval)
        b = self.server.broker
        for topic, payload in self.report():
            b.publish(topic, payload, 0, False, True)

    def report(self):
        for name, value in self.figures():
            yield b"$SYS/broker/" + name.encode(), str(value).encode()
