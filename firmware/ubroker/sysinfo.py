"""The $SYS report: every sys_interval seconds the broker's figures are published as retained
messages under Mosquitto's names ($SYS/broker/clients/connected, ...), and ubroker's own
(heap, limit counters) under $SYS/broker/ubroker/. Only values that changed are sent."""

import gc
import time

from . import VERSION


class SysInfo:
    def __init__(self, server):
        self.server = server
        self.interval = server.cfg["sys_interval"] * 1000
        self.due = server.now
        self.last = {}  # name -> payload last published

    def figures(self):
        sv = self.server
        b = sv.broker
        st = b.stats
        uptime = time.ticks_diff(sv.now, sv.started) // 1000
        offline = len(b.sessions) - st.connected
        f = [
            ("version", "ubroker " + VERSION),
            ("uptime", "%d seconds" % uptime),
            ("clients/connected", st.connected),
            ("clients/active", st.connected),
            ("clients/disconnected", offline if offline > 0 else 0),
            ("clients/total", len(b.sessions)),
            ("clients/maximum", st.max_connected),
            ("messages/received", st.msgs_in),
            ("messages/sent", st.pub_out),
            ("publish/messages/received", st.pub_in),
            ("publish/messages/sent", st.pub_out),
            ("publish/messages/dropped", st.dropped),
            ("bytes/received", st.bytes_in),
            ("bytes/sent", st.bytes_out),
            ("subscriptions/count", b.index.count),
            ("retained messages/count", len(b.retained)),
            ("store/messages/count", sum(s.held() for s in b.sessions.values())),
            ("store/messages/bytes", b.held_bytes),
            ("ubroker/heap/free", gc.mem_free()),
            ("ubroker/heap/used", gc.mem_alloc()),
            ("ubroker/retained/bytes", b.retained_bytes),
        ]
        for name in st.limits:
            f.append(("ubroker/limits/" + name, st.limits[name]))
        return f

    def tick(self, now):
        if self.interval <= 0 or time.ticks_diff(now, self.due) < 0:
            return
        self.due = time.ticks_add(now, self.interval)
        b = self.server.broker
        for name, value in self.figures():
            payload = str(value).encode()
            if self.last.get(name) == payload:
                continue
            self.last[name] = payload
            topic = ("$SYS/broker/" + name).encode()
            b.sys_retained[topic] = (payload, 0)
            b.publish(topic, payload, 0, False, True)
