"""Shared subscriptions (`$share/NAME/FILTER`, MQTT 5.0 section 4.8.2), for v5 and 3.1.1
clients alike: each message matching FILTER goes to one member of the group, in turn, an
online one when there is one. Imported by topics.Index at the first such subscription, so a
board that never sees one carries none of it: install() puts its add, remove and qos_of on the
index instance.

A group is one entry in the subscription index under FILTER, with the QoS mark 8: the routing
(Broker.publish) hands such entries to Group.route. A QoS 1/2 copy given to a member carries
the group as the fifth field of its message ([topic, payload, mid, v5 extra, group]); when
the member's session ends, copies it had not acknowledged go to another member, but a QoS 2
copy already sent (MQTT-4.8.2-5)."""

import time

from micropython import const

from .codec import Malformed
from .session import cost

_PREFIX = const(7)  # len(b"$share/")
_MARK = const(8)  # on the group's entry in the index
_V5 = const(4)  # v5_protocol.py's mark on a v5 subscription's QoS
_QOS = const(1)
_MSG = const(2)
_STAGE = const(3)
_AWAIT_ACK = const(0)
# A copy for a 3.1.1 member has no v5 properties: v5_route's extra, empty
_PLAIN = (b"", 0, 0, b"", False)


def split(flt):
    """FILTER of a valid `$share/NAME/FILTER`."""
    return flt[flt.find(b"/", _PREFIX) + 1 :]


class Group:
    # What Broker.publish reads of a session on an index entry with a QoS above 0: a group
    # has no connection of its own and takes every message (its members' limits apply)
    conn = None
    queue = None
    inflight = None
    clean = True
    mark = 0  # topics.Index.collect's scratch
    mq = 0
    b = None  # the broker, once a message was routed

    def __init__(self, name):
        self.name = name
        self.members = []  # [session, qos, ...]
        self.turn = 0

    def route(self, b, topic, payload, qos, retain, props, size):
        """One message, to one member: section 4.8.2 gives each message to one session of
        the group."""
        self.b = b
        m = self.members
        n = len(m) >> 1
        if not n:
            return
        t = self.turn
        j = t % n
        k = 0
        while k < n:  # the next online member with room, else the next in turn with a place
            i = (t + k) % n
            s = m[2 * i]
            c = s.conn
            # Broker.deliver's test: a member with a queue has had its window filled by
            # now and only refill() may send; deliver() would drop the message at a full
            # queue after its PUBACK
            if c is not None and not s.queue and (c.out is None or len(c.out) < b.out_limit) and \
                    (not s.inflight or len(s.inflight) < (c.wmax or b.max_inflight)):
                j = i
                break
            k += 1
        else:
            # The next in turn with a place: room()'s test (x the store)
            x = b.persist
            k = 0
            while k < n:
                i = (t + k) % n
                s = m[2 * i]
                q = s.queue
                if (x is None or s.clean or x.room(size)) and (not q or len(q) < (s.qmax or b.max_queued)):
                    j = i
                    break
                k += 1
        self.turn = j + 1
        # give() inline: a call and a frame (a heap block on MicroPython) less per message
        s = m[2 * j]
        q = m[2 * j + 1]
        if q & _V5:
            b.v5.route(s, q, topic, payload, qos, False, props, size, self)
            return
        if q > qos:
            q = qos
        if q:
            # with the message's expiry kept for the queue (Router.plain; MQTT-3.3.2-5 holds
            # for every subscriber)
            x = _PLAIN if props is None or not props[1] else b.v5.plain(props)
            b.deliver(s, [topic, bytes(payload), 0, x, self], q, False, size)
            return
        c = s.conn
        if c is not None and (c.out is None or len(c.out) < b.out_limit):
            b._write_publish(c, topic, payload, 0, False, False, 0)
        else:
            b.stats.dropped += 1

    def room(self, b, size):
        """Broker.slot for the group (Broker.publish asks it): one member at least has a
        place, which route() finds (a QoS 1/2 message is acknowledged only then: section
        4.3.2, never dropped after)."""
        m = self.members
        x = b.persist
        i = 0
        while i < len(m):  # (a while: range() is a heap block per message)
            s = m[i]
            q = s.queue
            # Broker.slot's answer for member s, without counting a refusal (as in route();
            # not deliver()'s test of the window, which says yes only with an empty queue)
            if (x is None or s.clean or x.room(size)) and (not q or len(q) < (s.qmax or b.max_queued)):
                return True
            i += 2
        b.stats.hit("queued_messages")
        return False

    def handover(self, s):
        """Session s, a member, ends: the copies this group gave it that it has not received
        go to another member (section 4.8.2): QoS 1 ones, and QoS 2 ones not sent yet. A
        QoS 2 copy sent and not acknowledged goes to no one (MQTT-4.8.2-5): the member may
        have received it, and QoS 2 is exactly once."""
        b = self.b
        if b is None or not self.members:
            return
        # (the window's copies were sent, the queue's not: a sent QoS 2 copy ends with the session)
        for q, kept in ((s.inflight, 2), (s.queue, None)):
            if q:
                for e in q:
                    msg = e[_MSG]
                    if len(msg) > 4 and msg[4] is self and e[_STAGE] == _AWAIT_ACK and e[_QOS] != kept:
                        x = msg[3]
                        if x[1] and time.ticks_diff(time.ticks_ms(), x[2]) >= x[1] * 1000:
                            continue  # expired: for no other member either (MQTT-3.3.2-5)
                        props = (x[0], x[1], x[2]) if x[0] or x[1] else None
                        self.route(b, msg[0], msg[1], e[_QOS], False, props, cost(msg))


def valid(flt):
    """Is `$share/NAME/FILTER`, which passed topics.valid_filter as a whole, a valid shared
    subscription? NAME is one character or more without '/', '+' or '#', FILTER not empty
    (MQTT 5.0 section 4.8.2); FILTER, a tail of a valid filter cut at a '/', is valid."""
    i = flt.find(b"/", _PREFIX)
    name = flt[_PREFIX:i]
    return _PREFIX < i < len(flt) - 1 and b"+" not in name and b"#" not in name


class Shared:
    """The subscription index's add, remove and qos_of once a shared subscription exists
    (install()): `$share/` filters are groups' members, the rest goes to Index as before."""

    def __init__(self, index):
        self.index = index
        self.base = type(index)  # topics.Index, whose methods these call (not imported: a circle)
        self.groups = {}  # `$share/NAME/FILTER` -> Group

    def add(self, flt, s, qos):
        """True for a new member. A name that is not valid closes a 3.1.1 client's connection
        as any invalid filter does (v5_protocol.py answers SUBACK 0x8F before it comes here;
        both checked topics.valid_filter before)."""
        index = self.index
        if not flt.startswith(b"$share/"):
            return self.base.add(index, flt, s, qos)
        if not valid(flt):
            raise Malformed("shared subscription name")
        g = self.groups.get(flt)
        if g is None:
            g = self.groups[flt] = Group(flt)
            self.base.add(index, split(flt), g, _MARK)
            index.count -= 1  # members are counted, not groups
        index.cache.clear()
        m = g.members
        for i in range(0, len(m), 2):
            if m[i] is s:
                m[i + 1] = qos
                return False
        m.append(s)
        m.append(qos)
        index.count += 1
        return True

    def remove(self, flt, s):
        """A member whose session ends (it has no connection then) hands its unreceived
        copies on."""
        index = self.index
        if not flt.startswith(b"$share/"):
            return self.base.remove(index, flt, s)
        g = self.groups.get(flt)
        if g is None:
            return False
        m = g.members
        for i in range(0, len(m), 2):
            if m[i] is s:
                del m[i : i + 2]
                index.count -= 1
                index.cache.clear()
                if not m:
                    del self.groups[flt]
                    self.base.remove(index, split(flt), g)
                    index.count += 1
                elif s.conn is None:
                    g.handover(s)
                return True
        return False

    def qos_of(self, flt, s):
        if not flt.startswith(b"$share/"):
            return self.base.qos_of(self.index, flt, s)
        g = self.groups.get(flt)
        if g is not None:
            m = g.members
            for i in range(0, len(m), 2):
                if m[i] is s:
                    return m[i + 1]
        return 0


def install(index):
    """Index's add, remove and qos_of become Shared's, as attributes of the instance."""
    sh = Shared(index)
    index.add = sh.add  # type: ignore[method-assign]
    index.remove = sh.remove  # type: ignore[method-assign]
    index.qos_of = sh.qos_of  # type: ignore[method-assign]
    return sh
