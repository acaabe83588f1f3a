"""Per-client state. A Session is what MQTT keeps for a client id (subscriptions, outbound
QoS 1/2 messages in flight or queued, inbound QoS 2 ids awaiting PUBREL) and outlives the
connection when the session is persistent. A Conn is one TCP connection. Containers are
created on first use so that an idle client costs little heap."""

# Outbound entry: [packet id, qos, message, stage]; message is (topic, payload) and stage is
# AWAIT_ACK (PUBLISH sent, PUBACK/PUBREC expected) or AWAIT_COMP (PUBREL sent).
PID = 0
QOS = 1
MSG = 2
STAGE = 3
AWAIT_ACK = 0
AWAIT_COMP = 1



class Session:
    # Defaults live on the class: an instance stores only the fields it has set, which keeps
    # an idle client's attribute table small (MicroPython instances have no __slots__).
    conn = None
    subs = None  # [filter, ...]; the granted QoS is kept in the subscription index
    inflight = None  # [entry], oldest first
    queue = None  # [entry] waiting for an inflight slot, oldest first
    qos2in = None  # [packet id] of inbound QoS 2 awaiting PUBREL
    pid = 0
    mark = 0  # routing scratch, see topics.Index.collect
    mq = 0

    def __init__(self, cid, clean):
        self.cid = cid
        self.clean = clean

    def next_pid(self):
        """A packet id not in use by an outbound message (MQTT-2.3.1-2)."""
        inflight = self.inflight
        while True:
            p = self.pid + 1
            if p > 65535:
                p = 1
            self.pid = p
            if not inflight:
                return p
            for e in inflight:
                if e[PID] == p:
                    break
            else:
                return p

    def find(self, pid):
        inflight = self.inflight
        if inflight:
            for i in range(len(inflight)):
                if inflight[i][PID] == pid:
                    return i
        return -1

    def held(self):
        n = len(self.inflight) if self.inflight else 0
        return n + (len(self.queue) if self.queue else 0)


class Conn:
    """A connection is new until CONNACK 0 gives it a session (sess), closed once sock is
    None."""

    sess = None
    rx = None  # unparsed bytes carried to the next read
    out = None  # bytearray waiting for the socket
    mask = 0  # poll events registered
    ka = 0  # keepalive window in ms (1.5 x the client's keepalive), 0 = none
    will = None  # (topic, payload, qos, retain)
    paused = False  # reading stopped until subscribers make room

    def __init__(self, sock, now):
        self.sock = sock
        self.last = now  # ticks_ms of the last packet received
