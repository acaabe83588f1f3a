"""MQTT 5's timers on the server side: the Session Expiry Interval (a session outlives its
connection by that many seconds, then goes with its subscriptions and messages) and the Will
Delay Interval (a will waits that long after its connection ends, is discarded when a client
takes the session back first, and goes at once when the session ends first, MQTT 5.0 section
3.1.3.2.2).

A session with something waiting carries Session.timer, a list [expiry deadline, will
deadline, will, will props] (deadlines in ms on this module's clock, -1 for none; the will
is the 3.1.1 tuple, its props v5_route's). Broker.session has back() clear it when a client
takes the session back; Broker.drop_session hands a will still waiting to ended(). The first timer puts
tick() in the place of Broker.tick (an attribute of the broker instance, so a broker without
v5 clients pays nothing); it counts `due`, the whole seconds to the earliest deadline, down to
0 before it looks at the sessions: one test a second while nothing is due."""

import time

from micropython import const

from .v5_route import Router

_EXPIRY = const(0)
_WILL_AT = const(1)
_WILL = const(2)
_WILL_PROPS = const(3)
# Broker.tick calls at least this often while something waits: ticks_diff is exact up to
# 2**29 ms (6 days) between two calls
_LONGEST = const(86400)


class Timers(Router):
    """v5_protocol.V5's timers (V5 is a Timers, a Router)."""

    ms = 0  # this clock's time: the ms counted while something waited
    last = None  # ticks_ms the clock was read at; None while nothing waits
    pending = None  # [session] that may carry a timer (a cleared one leaves at the next tick)
    due = 0  # whole seconds to the earliest deadline; 0: nothing waits

    def clock(self, now):
        if self.last is not None:
            self.ms += time.ticks_diff(now, self.last)
        self.last = now
        return self.ms

    def left(self, c, s, will, abnormal):
        """v5 connection c, holding session s, is gone (Broker.detach): its will goes now,
        waits, or is discarded; a session that does not end now gets its expiry deadline.
        A connection closed for want of heap may leave none for its timer or will: the rest
        of Broker.detach (the session's end) must happen all the same."""
        try:
            self._left(c, s, will, abnormal)
        except MemoryError:
            self.b.stats.hit("memory")

    def _left(self, c, s, will, abnormal):
        if c.bridge is not None:
            return  # a bridge's link (bridge_v5.py): its session is the bridge's, for good
        v = c.v5
        if not abnormal:
            will = None  # MQTT-3.1.2-10
        if will is not None and (s.clean or not v.wdelay):
            self.publish_will(will, v.wprops)  # no delay, or the session ends now (3.1.3.2.2)
            will = None
        exp = v.expiry
        if s.clean:
            return
        per = self.b.persist
        if will is None and exp == 0xFFFFFFFF:
            if per is not None:
                from .store_v5 import timer

                timer(per, s, exp)  # never expires (DISCONNECT may have said so)
            return
        now = self.clock(self.server.now)
        t = [-1, -1, None, None]
        if exp != 0xFFFFFFFF:
            t[_EXPIRY] = now + exp * 1000  # MQTT-3.1.2-23
        if will is not None:
            d = v.wdelay
            if exp < d:
                d = exp  # the session's end comes first (section 3.1.3.2.2)
            t[_WILL_AT] = now + d * 1000
            t[_WILL] = will
            t[_WILL_PROPS] = v.wprops
        if per is not None:  # to flash: the deadlines hold across a restart (store_v5.py)
            from .store_v5 import timer

            timer(per, s, exp, d if will is not None else 0, will, v.wprops)
        self.arm(s, t)

    def arm(self, s, t):
        """Session s waits with timer t (from left(), or read from the store)."""
        s.timer = t
        p = self.pending
        if p is None:
            self.pending = p = []
        if s not in p:
            p.append(s)
        # Server.tick calls it once a second from now on, in Broker.tick's place
        self.b.tick = self.tick  # type: ignore[method-assign]
        self.plan()

    def back(self, s):
        """A client takes session s back (Broker.session): no expiry, and a waiting will is
        discarded; on flash too, or a restart would bring them back (a v5 client's CONNECT
        then writes its own interval)."""
        s.timer = None
        per = self.b.persist
        if per is not None and not s.clean:
            from .store_v5 import timer

            timer(per, s, 0xFFFFFFFF)

    def ended(self, s):
        """Session s ends (expired, or cleaned by a new connection) with a timer: a will that
        still waits goes now (section 3.1.3.2.2)."""
        t = s.timer
        s.timer = None
        if t[_WILL] is not None:
            self.publish_will(t[_WILL], t[_WILL_PROPS])

    def publish_will(self, will, wprops):
        self.b.publish(will[0], will[1], will[2], will[3], True, props=wprops)
        if will[3] and (wprops is not None or self.rprops):
            self.kept(will[0], wprops)  # a retained will keeps its properties

    def tick(self, now):
        """Once a second (as Broker.tick): wills and sessions whose time has come."""
        d = self.due
        if d != 1:
            if d:
                self.due = d - 1
            return
        ms = self.clock(now)
        b = self.b
        p = self.pending
        for s in list(p):
            t = s.timer
            if t is None or b.sessions.get(s.cid) is not s:
                p.remove(s)  # taken back, or ended otherwise
                continue
            if 0 <= t[_WILL_AT] <= ms:
                t[_WILL_AT] = -1
                w = t[_WILL]
                t[_WILL] = None
                self.publish_will(w, t[_WILL_PROPS])  # MQTT-3.1.3-9
                if b.persist is not None and not s.clean:  # not again after a restart
                    from .store_v5 import timer

                    timer(b.persist, s, 0xFFFFFFFF if t[_EXPIRY] < 0 else (t[_EXPIRY] - ms + 999) // 1000)
            if 0 <= t[_EXPIRY] <= ms:
                p.remove(s)
                if self.server.cfg.get("verbose"):
                    self.server.log("client %s session expired" % s.cid.decode())
                b.drop_session(s)  # its subscriptions and messages go
            elif t[_EXPIRY] < 0 and t[_WILL_AT] < 0:
                s.timer = None
                p.remove(s)
        self.plan()

    def plan(self):
        """`due`: whole seconds to the earliest deadline (0: nothing waits)."""
        soon = -1
        p = self.pending
        for s in p:
            t = s.timer
            if t is not None:
                for d in (t[_EXPIRY], t[_WILL_AT]):
                    if d >= 0 and (soon < 0 or d < soon):
                        soon = d
        if soon < 0:
            self.due = 0
            self.last = None
            del p[:]
            return
        n = (soon - self.ms + 999) // 1000
        self.due = 1 if n < 1 else _LONGEST if n > _LONGEST else n
