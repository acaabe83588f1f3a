"""Per-client state. A Session is what MQTT keeps for a client id (subscriptions, outbound
QoS 1/2 messages in flight or queued, inbound QoS 2 ids awaiting PUBREL) and outlives the
connection when the session is persistent. A Conn is one TCP connection. Containers are
created on first use so that an idle client costs little heap."""

import sys

try:
    from micropython import const
except ImportError:  # CPython, for the unit tests

    def const(x):  # type: ignore[misc]
        return x

# Heap bytes one queued or in-flight message costs beyond its topic and payload (entry list,
# message list, object headers), counted by max_queued_bytes so the limit bounds the heap:
# 224 B on the 64-bit unix port, 128 B on 32-bit boards. Measured: 64-bit 222 B before the
# store's fields, 242 B now (tools/measure_heap.py); 32-bit 123-125 B (tools/heap32, the
# webassembly port); the esp32 limits were set with 224.
ENTRY_COST = 224 if sys.maxsize > 1 << 32 else 128


# The extra field of a retained message's copy for a 3.1.1 subscription (v5_route's form: no
# properties, no expiry, no subscription ids, RETAIN 1): the flag is the message's, so one
# that waits in the queue still goes with RETAIN 1 (MQTT-3.3.1-8 of 3.1.1, MQTT-3.3.1-6).
RETAINED = (b"", 0, 0, b"", True)


def cost(msg):
    return len(msg[0]) + len(msg[1]) + ENTRY_COST


# Outbound entry: [packet id, qos, message, stage]; message is [topic, payload, mid] (mid: its
# id in the durable store, 0 until written) and stage is AWAIT_ACK (PUBLISH sent, PUBACK/PUBREC
# expected) or AWAIT_COMP (PUBREL sent). Entries of persistent sessions have three more
# fields when persistence is on (store_persist.py owns those). This module owns the layout; the
# modules that read entries on the hot path keep private const() copies (a const is inlined
# by the compiler only within its module), checked against these by tests/unit/test_layouts.py.
PID = const(0)
QOS = const(1)
MSG = const(2)
STAGE = const(3)
AWAIT_ACK = const(0)
AWAIT_COMP = const(1)
_SEARCH_EVERY = const(1024)



class Session:
    # Defaults live on the class: an instance stores only the fields it has set, which keeps
    # an idle client's attribute table small (MicroPython instances have no __slots__).
    conn = None
    # One filter (bytes) for the usual single subscription, a list for more; the granted QoS
    # is kept in the subscription index. Not a 1-tuple: that was a heap block (32 B on the
    # 64-bit port) per subscribed client. Read it through filters() / has_filter().
    subs = None
    inflight = None  # [entry], oldest first
    queue = None  # [entry] waiting for an inflight slot, oldest first
    qos2in = None  # [packet id] of inbound QoS 2 awaiting PUBREL
    pid = 0
    safe = 0  # ids after pid known to be free (next_pid); 0: search the window first
    mark = 0  # routing scratch, see topics.Index.collect
    mq = 0
    fwd = None  # the Bridge, for a bridge's own session (bridge.py)
    qmax = 0  # its own queue limit; 0: max_queued_messages
    timer = None  # MQTT 5: its expiry and waiting will, once its connection is gone (v5_session.py)

    def __init__(self, cid, clean):
        self.cid = cid
        self.clean = clean

    def filters(self):
        """The subscribed filters, as a sequence (allocates a 1-tuple for one filter)."""
        subs = self.subs
        return () if subs is None else subs if type(subs) is list else (subs,)

    def has_filter(self, flt):
        subs = self.subs
        return subs is not None and (flt in subs if type(subs) is list else subs == flt)

    def nfilters(self):
        subs = self.subs
        return 0 if subs is None else len(subs) if type(subs) is list else 1

    def add_filter(self, flt):
        """Note a subscription's filter, if new."""
        subs = self.subs
        if subs is None:
            self.subs = flt
        elif type(subs) is list:
            if flt not in subs:
                subs.append(flt)
        elif subs != flt:
            self.subs = [subs, flt]

    def drop_filter(self, flt):
        subs = self.subs
        if type(subs) is list:
            if flt in subs:
                subs.remove(flt)
                if len(subs) == 1:
                    self.subs = subs[0]
                return True
        elif subs is not None and subs == flt:
            self.subs = None
            return True
        return False

    def next_pid(self):
        """A packet id not in use by an outbound message (MQTT-2.3.1-2). Ids are given when a
        message is taken on, so one kept on flash keeps its id. Ids count up, so after one
        search of the in-flight window the next `safe` ids cannot meet any id found there
        (nor one given since: those lie behind); the window (20 entries on the unix port) was
        searched for every message before. The queue is not searched: it is
        first in, first out and much shorter than the 65535 ids, so an id there cannot come
        round again while it waits, and it is in the window (searched again within
        _SEARCH_EVERY ids) long before that."""
        p = self.pid + 1
        if p > 65535:
            p = 1
        self.pid = p
        safe = self.safe
        if safe:
            self.safe = safe - 1
            return p
        inflight = self.inflight
        while _uses(inflight, p):
            p += 1
            if p > 65535:
                p = 1
        self.pid = p
        # Ids p+1 .. p+safe are free of everything in flight now.
        safe = _SEARCH_EVERY
        if inflight:
            for e in inflight:
                d = (e[PID] - p) % 65535 - 1
                if d < safe:
                    safe = d
        self.safe = safe
        return p

    def find(self, pid):
        """The index in the in-flight window of the entry with packet id pid, or -1."""
        inflight = self.inflight
        if inflight:
            i = 0
            for e in inflight:
                if e[PID] == pid:
                    return i
                i += 1
        return -1

    def held(self):
        n = len(self.inflight) if self.inflight else 0
        return n + (len(self.queue) if self.queue else 0)


def _uses(entries, pid):
    if entries:
        for e in entries:
            if e[PID] == pid:
                return True
    return False


class Conn:
    """A connection is new until CONNACK 0 gives it a session (sess), closed once sock is
    None."""

    sess = None
    rx = None  # unparsed bytes carried to the next read
    big = None  # a packet longer than the read buffer, as it arrives (long_packet.py)
    out = None  # bytearray waiting for the socket
    mask = 1  # poll events registered (select.POLLIN)
    ka = 0  # keepalive window in ms (1.5 x the client's keepalive), 0 = none
    will = None  # (topic, payload, qos, retain)
    paused = False  # reading stopped until subscribers make room
    acks = None  # acknowledgements waiting for their turn (store_persist.py), in packet order
    listed = False  # in the broker's output list (Broker.dirty)
    bridge = None  # the Bridge whose upstream link this is (bridge.py)
    peer = None  # for a bridge connecting to us: its session, which its messages skip
    user = None  # user name given in CONNECT (sec_acl.py)
    raw = None  # a TLS connection's TCP socket, under the wrapper in sock (closed with it)
    v5 = None  # an MQTT 5 connection's own state (v5_protocol.V5Conn)
    wmax = 0  # its own in-flight window (a v5 client's Receive Maximum); 0: max_inflight_messages
    v31 = False  # an MQTT 3.1 client (MQIsdp, level 3): set on those only (protocol.connect)
    # With passwords (auth.Guard): the peer's address until CONNECT, then the password check
    # (a generator) while it runs, then its result, True or False.
    verify = None  # type: object

    def __init__(self, sock, now):
        self.sock = sock
        self.last = now  # ticks_ms of the last packet received
