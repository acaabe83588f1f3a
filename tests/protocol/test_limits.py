"""Every limit of the board profile has a defined behaviour when reached, and a counter under
$SYS/broker/ubroker/limits/: too many clients -> CONNACK 3; too many subscriptions -> SUBACK
0x80 for those filters; an oversize packet closes the connection; a congested subscriber loses
QoS 0 messages only (counted); retained messages, topic and client id length are capped.

And the rule the broker is built around: a QoS 1/2 message that was acknowledged (PUBACK /
PUBREC) is never dropped. When a subscriber cannot take more, the broker withholds the
acknowledgement and stops reading from the publisher (backpressure); when the subscriber
catches up, every acknowledged message arrives, in per-publisher order, exactly once at QoS 2.

Brokers run with the esp32 profile (boards/esp32.conf) unless a test overrides a key."""

import socket
import threading
import time

import pytest

import mqttraw
from conftest import wait_for
from marker import until_pingresp
from robust_util import until_closed

ESP32_INFLIGHT = 8  # boards/esp32.conf max_inflight_messages
ESP32_QUEUED = 32  # max_queued_messages
ESP32_SUBS_PER_CLIENT = 8  # max_subscriptions_per_client
ESP32_TOPIC = 128  # max_topic_length
ESP32_CLIENT_ID = 64  # max_client_id_length
ESP32_PACKET = 2048  # max_packet_size

SYS1 = "sys_interval 1\n"


# ------------------------------------------------------------------------------ helpers

def sys_values(broker, prefix="$SYS/broker/#", settle=0.3):
    """The current $SYS figures (retained, sent on subscribe) as {topic: str}."""
    r = broker.raw()
    r.connect("", keepalive=0)
    r.send(mqttraw.subscribe(1, (prefix, 0)))
    r.expect(9)
    out = {}
    while True:
        try:
            p = r.recv_packet(settle)
        except socket.timeout:
            break
        if p is None:
            break
        if p.type == 3:
            out[p.topic.decode()] = p.payload.decode()
    r.send(mqttraw.DISCONNECT)
    r.close()
    return out


def limit_count(broker, name):
    return int(sys_values(broker, "$SYS/broker/ubroker/limits/" + name).get(
        "$SYS/broker/ubroker/limits/" + name, 0))


def wait_limit(broker, name, at_least=1, timeout=6):
    """Wait until the $SYS counter of a limit reaches at_least (sys_interval is 1 s)."""
    return wait_for(lambda: limit_count(broker, name) >= at_least, timeout, 0.3)


def raw_connect(broker, cid, clean=True):
    r = broker.raw(timeout=10)
    assert r.connect(cid, clean=clean, keepalive=0)[1] == 0
    return r


def round_trip(pub, sub, topic, payload):
    """QoS 1 publish from one raw client, and the subscriber gets it."""
    pub.send(mqttraw.publish(topic, payload, qos=1, pid=1))
    pub.expect(4)
    p = sub.expect(3)
    assert (p.topic, p.payload) == (topic.encode(), payload)
    if p.qos:
        sub.send(mqttraw.puback(p.pid))


# ------------------------------------------------------------------------------ clients

def test_too_many_clients_get_connack_3(broker_factory):
    """max_connections 3: the fourth client gets CONNACK 3 (server unavailable) and is
    closed (MQTT-3.2.2-5); the three connected keep working; a takeover of a connected
    client id is not a new client; when one leaves, a new client is accepted."""
    b = broker_factory(config="max_connections 3\n" + SYS1)
    a, c1, c2 = (raw_connect(b, "mc-%d" % i) for i in range(3))
    a.send(mqttraw.subscribe(1, ("mc/t", 1)))
    a.expect(9)
    extra = b.raw()
    extra.send(mqttraw.connect("mc-3", keepalive=0))
    p = extra.expect(2)
    assert p.body == b"\x00\x03"
    assert extra.closed()
    round_trip(c1, a, "mc/t", b"still here")
    # a new connection with a connected client id takes the session over (MQTT-3.1.4-2)
    again = b.raw()
    assert again.connect("mc-2", keepalive=0) == (0, 0)
    assert c2.closed()
    round_trip(again, a, "mc/t", b"taken over")
    # room again after a client leaves
    c1.send(mqttraw.DISCONNECT)
    assert c1.closed()
    assert wait_for(lambda: connack_code(b, "mc-late") == 0, 5, 0.1)
    # leave room for the $SYS reader, then read the counter
    again.send(mqttraw.DISCONNECT)
    assert again.closed()
    assert wait_limit(b, "connections")


def test_heap_below_reserve_refuses_new_clients_and_subscriptions(broker_factory):
    """MQTT-3.2.2-5 (a CONNACK with a non-zero code, then the connection closed) when what runs
    out is the heap, not the client table: the esp32 profile in 88k of heap (its 64 clients
    need 100k) takes clients, each subscribing to its own topic, until the free heap is below
    heap_reserve; from then on a new client gets CONNACK 3, or a new subscription 0x80. Free
    heap is not one block: when even a small allocation fails, the new connection is closed
    instead (a MemoryError costs that connection only). Every request gets one of those
    answers within 5 s (none left hanging, as a MemoryError while answering once did), the
    clients already served keep working, a client that leaves makes room again, and the
    refusals are counted as limits/heap_reserve."""
    b = broker_factory(heap="88k", config=SYS1 + "max_connections 64\n")  # the heap's figure
    served, outcomes = [], {}
    for i in range(64):
        r = b.raw()
        r.send(mqttraw.connect("heap-%02d" % i, keepalive=0))
        p = r.recv_packet(5)  # None: closed; a hang raises socket.timeout
        if p is None or p.body != b"\x00\x00":
            outcome = "closed" if p is None else "connack %d" % p.body[1]
            assert outcome in ("closed", "connack 3"), outcome
            if p is not None:
                assert r.closed()  # MQTT-3.2.2-5
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            continue
        r.send(mqttraw.subscribe(1, ("heap/%d" % i, 1)))
        p = r.recv_packet(5)
        if p is None or p.body[-1] != 1:
            assert p is None or (p.type, p.body[-1]) == (9, 0x80), p
            outcome = "closed" if p is None else "suback 0x80"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            r.close()
            continue
        served.append((i, r))
    assert outcomes.get("connack 3", 0) + outcomes.get("suback 0x80", 0) >= 1, outcomes
    assert len(served) >= 16, outcomes
    for _, r in served:
        r.send(mqttraw.PINGREQ)
        assert r.expect(13).type == 13
    # Leaving makes room: then a QoS 1 round trip between two of those served, a new client
    # is accepted, and the counter is read.
    for _, r in served[8:]:
        r.send(mqttraw.DISCONNECT)
        assert r.closed()
    (i, sub), (_, pub) = served[0], served[1]
    round_trip(pub, sub, "heap/%d" % i, b"still served")
    assert wait_for(lambda: connack_code(b, "heap-late") == 0, 5, 0.1)
    assert limit_count(b, "heap_reserve") >= 1
    assert b.alive()


def connack_code(b, cid):
    r = b.raw()
    r.send(mqttraw.connect(cid, keepalive=0))
    return r.expect(2).body[1]


def test_client_id_longer_than_max_gets_connack_2(broker_factory):
    """max_client_id_length 64: a 65-byte client id is refused with CONNACK 2 (identifier
    rejected, as MQTT-3.1.3-9 allows) and the connection closed (MQTT-3.2.2-5); 64 bytes
    is accepted."""
    b = broker_factory(config=SYS1)
    ok = b.raw()
    assert ok.connect("i" * ESP32_CLIENT_ID, keepalive=0) == (0, 0)
    bad = b.raw()
    bad.send(mqttraw.connect("j" * (ESP32_CLIENT_ID + 1), keepalive=0))
    assert bad.expect(2).body == b"\x00\x02"
    assert bad.closed()
    ok.send(mqttraw.PINGREQ)
    ok.expect(13)
    assert wait_limit(b, "client_id_length")


# ------------------------------------------------------------------------------ subscriptions

def test_subscriptions_per_client_beyond_limit_get_0x80(broker_factory):
    """max_subscriptions_per_client 8: in one SUBSCRIBE of 10 filters the first 8 are
    granted and the last 2 get 0x80 (MQTT-3.9.3); messages flow for granted filters only;
    re-subscribing to a filter already held still succeeds (a replacement, MQTT-3.8.4-3);
    after an UNSUBSCRIBE there is room for a new filter."""
    b = broker_factory(config=SYS1)
    sub = raw_connect(b, "spc")
    filters = [("spc/%d" % i, 1) for i in range(ESP32_SUBS_PER_CLIENT + 2)]
    sub.send(mqttraw.subscribe(7, *filters))
    p = sub.expect(9)
    assert p.body == b"\x00\x07" + b"\x01" * ESP32_SUBS_PER_CLIENT + b"\x80\x80"
    pub = raw_connect(b, "spc-pub")
    pub.send(mqttraw.publish("spc/9", b"refused", qos=1, pid=2))  # not subscribed
    pub.expect(4)
    round_trip(pub, sub, "spc/7", b"granted")
    sub.send(mqttraw.subscribe(8, ("spc/0", 0)))  # replacement when full: granted
    assert sub.expect(9).body == b"\x00\x08\x00"
    sub.send(mqttraw.subscribe(9, ("spc/new", 1)))
    assert sub.expect(9).body == b"\x00\x09\x80"
    sub.send(mqttraw.unsubscribe(10, "spc/1"))
    assert sub.expect(11).pid == 10
    sub.send(mqttraw.subscribe(11, ("spc/new", 1)))
    assert sub.expect(9).body == b"\x00\x0b\x01"
    round_trip(pub, sub, "spc/new", b"room again")
    assert wait_limit(b, "subscriptions_per_client", 2)


def test_total_subscriptions_beyond_limit_get_0x80(broker_factory):
    """max_subscriptions 10 across all clients: the 11th and later get 0x80, whoever asks;
    when a client with subscriptions leaves (clean session), its slots are free again."""
    b = broker_factory(config="max_subscriptions 10\n" + SYS1)
    a = raw_connect(b, "ts-a")
    a.send(mqttraw.subscribe(1, *[("ts/a%d" % i, 0) for i in range(8)]))
    assert a.expect(9).body == b"\x00\x01" + b"\x00" * 8
    c = raw_connect(b, "ts-b")
    c.send(mqttraw.subscribe(2, *[("ts/b%d" % i, 1) for i in range(4)]))
    assert c.expect(9).body == b"\x00\x02\x01\x01\x80\x80"
    a.send(mqttraw.DISCONNECT)
    assert a.closed()

    def more():
        c.send(mqttraw.subscribe(3, ("ts/b2", 1), ("ts/b3", 1)))
        return c.expect(9).body == b"\x00\x03\x01\x01"

    assert wait_for(more, 5, 0.2)
    assert wait_limit(b, "subscriptions", 1)


def test_filter_longer_than_max_topic_length_gets_0x80(broker_factory):
    """max_topic_length 128: a 129-byte filter is refused with 0x80 (the other filters of
    the same SUBSCRIBE are granted); a 128-byte one is granted and works."""
    b = broker_factory(config=SYS1)
    sub = raw_connect(b, "tl-sub")
    longf = "f/" + "x" * (ESP32_TOPIC - 2)
    sub.send(mqttraw.subscribe(1, (longf + "y", 1), (longf, 1)))
    assert sub.expect(9).body == b"\x00\x01\x80\x01"
    pub = raw_connect(b, "tl-pub")
    round_trip(pub, sub, longf, b"exactly the limit")
    assert wait_limit(b, "topic_length")


def test_publish_topic_longer_than_max_topic_length_closes(broker_factory):
    """max_topic_length 128: a PUBLISH to a 129-byte topic closes that connection without
    acknowledgement and is not delivered; the limit is counted."""
    b = broker_factory(config=SYS1)
    sub = raw_connect(b, "tp-sub")
    sub.send(mqttraw.subscribe(1, ("#", 1)))
    sub.expect(9)
    pub = raw_connect(b, "tp-pub")
    pub.send(mqttraw.publish("t/" + "x" * (ESP32_TOPIC - 1), b"too long", qos=1, pid=5))
    closed, got = until_closed(pub)
    assert closed and got == []
    pub2 = raw_connect(b, "tp-pub2")
    round_trip(pub2, sub, "t/ok", b"next")  # and nothing else came first
    assert wait_limit(b, "topic_length")


# ------------------------------------------------------------------------------ packet size

def test_packet_larger_than_max_packet_size_closes(broker_factory):
    """max_packet_size 2048 counts the whole packet, as Mosquitto's key and MQTT 5's Maximum
    Packet Size (section 3.1.2.11.4) do: a PUBLISH of exactly 2048 bytes (remaining length
    2045) is delivered; one of 2049 bytes closes the connection unacknowledged and
    undelivered, even before its body arrives."""
    b = broker_factory(config=SYS1)
    sub = raw_connect(b, "ps-sub")
    sub.send(mqttraw.subscribe(1, ("ps/#", 1)))
    sub.expect(9)
    pub = raw_connect(b, "ps-pub")
    topic = "ps/t"
    fits = b"f" * (ESP32_PACKET - 3 - 2 - len(topic) - 2)
    packet = mqttraw.publish(topic, fits, qos=1, pid=1)
    assert len(packet) == ESP32_PACKET
    pub.send(packet)
    pub.expect(4)
    p = sub.expect(3)
    assert p.payload == fits
    sub.send(mqttraw.puback(p.pid))
    big = mqttraw.publish(topic, fits + b"b", qos=1, pid=2)
    assert len(big) == ESP32_PACKET + 1
    pub.send(big[:100])
    closed, got = until_closed(pub)
    assert closed and got == []
    # only the header of an enormous packet: closed without waiting for 1 MB
    hdr = raw_connect(b, "ps-hdr")
    hdr.send(b"\x32" + mqttraw.varint(1 << 20) + mqttraw.s(topic))
    closed, got = until_closed(hdr)
    assert closed and got == []
    pub2 = raw_connect(b, "ps-pub2")
    round_trip(pub2, sub, topic, b"small again")
    assert wait_limit(b, "packet_size", 2)


# ------------------------------------------------------------------------------ retained

def test_max_retained_messages(broker_factory):
    """max_retained_messages 3: the fourth retained topic is delivered to current subscribers
    but not retained; replacing a retained topic still works when full; clearing one (empty
    payload, MQTT-3.3.1-10) makes room; the limit is counted."""
    b = broker_factory(config="max_retained_messages 3\n" + SYS1)
    live = raw_connect(b, "rm-live")
    live.send(mqttraw.subscribe(1, ("rm/#", 0)))
    live.expect(9)
    pub = raw_connect(b, "rm-pub")
    for i in range(1, 5):
        pub.send(mqttraw.publish("rm/%d" % i, b"v%d" % i, qos=1, retain=True, pid=i))
        pub.expect(4)
    got = [live.expect(3) for _ in range(4)]
    assert [(p.topic, p.payload) for p in got] == [(b"rm/%d" % i, b"v%d" % i) for i in range(1, 5)]

    def retained_now():
        r = raw_connect(b, "rm-probe")
        r.send(mqttraw.subscribe(1, ("rm/#", 1)))
        r.expect(9)
        out = {}
        while True:
            try:
                p = r.recv_packet(0.4)
            except socket.timeout:
                break
            assert p is not None and p.type == 3 and p.retain  # MQTT-3.3.1-8
            out[p.topic] = p.payload
            if p.qos:
                r.send(mqttraw.puback(p.pid))
        r.send(mqttraw.DISCONNECT)
        r.close()
        return out

    assert retained_now() == {b"rm/1": b"v1", b"rm/2": b"v2", b"rm/3": b"v3"}
    pub.send(mqttraw.publish("rm/2", b"v2-new", qos=1, retain=True, pid=9))
    pub.expect(4)
    pub.send(mqttraw.publish("rm/1", b"", qos=1, retain=True, pid=10))
    pub.expect(4)
    pub.send(mqttraw.publish("rm/4", b"v4-again", qos=1, retain=True, pid=11))
    pub.expect(4)
    assert retained_now() == {b"rm/2": b"v2-new", b"rm/3": b"v3", b"rm/4": b"v4-again"}
    assert wait_limit(b, "retained_messages")


def test_max_retained_bytes(broker_factory):
    """max_retained_bytes 64: a retained message that would take the store past 64 bytes
    (topic + payload) is not retained, but is still delivered and acknowledged."""
    b = broker_factory(config="max_retained_bytes 64\n" + SYS1)
    pub = raw_connect(b, "rb-pub")
    pub.send(mqttraw.publish("rb/a", b"a" * 30, qos=1, retain=True, pid=1))  # 34 bytes
    pub.expect(4)
    live = raw_connect(b, "rb-live")
    live.send(mqttraw.subscribe(1, ("rb/#", 0)))
    live.expect(9)
    assert live.expect(3).payload == b"a" * 30
    pub.send(mqttraw.publish("rb/b", b"b" * 30, qos=1, retain=True, pid=2))  # 34 more: no room
    pub.expect(4)
    assert live.expect(3).payload == b"b" * 30
    probe = raw_connect(b, "rb-probe")
    probe.send(mqttraw.subscribe(1, ("rb/#", 0)))
    probe.expect(9)
    assert probe.expect(3).topic == b"rb/a"
    with pytest.raises(socket.timeout):
        probe.recv_packet(0.5)
    assert wait_limit(b, "retained_bytes")


def test_retained_replacement_that_does_not_fit_still_discards_the_old_one(broker_factory):
    """MQTT-3.3.1-7: a QoS 0 PUBLISH with RETAIN set MUST discard any message previously
    retained for that topic. When the new one is too big for max_retained_bytes to keep, the
    old one must still go: a new subscriber must not get the superseded value."""
    b = broker_factory(config="max_retained_bytes 64\n")
    pub = raw_connect(b, "rr-pub")
    pub.send(mqttraw.publish("rr/t", b"old", qos=1, retain=True, pid=1))
    pub.expect(4)
    pub.send(mqttraw.publish("rr/t", b"n" * 100, qos=0, retain=True))
    pub.send(mqttraw.PINGREQ)
    pub.expect(13)
    probe = raw_connect(b, "rr-probe")
    probe.send(mqttraw.subscribe(1, ("rr/t", 0)))
    probe.expect(9)
    # Retained messages follow the SUBACK, before the answer to a PINGREQ sent after it: none
    # (the old one discarded, the new one too big to keep). A closed connection fails here.
    got = until_pingresp(probe)
    assert [p.payload for p in got] == [], "retained after the replacement: %r" % got


# ------------------------------------------------------------------------------ QoS 0 drops

def test_qos1_waits_for_a_congested_output_and_goes_when_it_drains(broker_factory):
    """A subscriber whose output is full (it stopped reading while a QoS 0 flood filled the
    kernel buffers and out_buffer_size) has nothing in flight when QoS 1 messages come for it:
    they are acknowledged to the publisher and wait in the session's queue rather than growing
    the output buffer, and they are sent once the output drains, with no PUBACK from the
    subscriber to set them going. All arrive, in order (MQTT-4.6.0-2, 4.3.2-2)."""
    b = broker_factory(config=SYS1)
    sub = raw_connect(b, "dr-sub")
    sub.send(mqttraw.subscribe(1, ("dr/#", 1)))
    sub.expect(9)
    before = int(sys_values(b).get("$SYS/broker/publish/messages/dropped", 0))
    pub = raw_connect(b, "dr-pub")
    flood = b"".join(mqttraw.publish("dr/q0", b"%05d" % i + b"z" * 1000) for i in range(10000))
    k = ESP32_QUEUED // 2
    q1 = b"".join(mqttraw.publish("dr/q1", b"%d" % (i + 1), qos=1, pid=i + 1) for i in range(k))
    acks = []
    done = threading.Event()

    def read_acks():
        while len(acks) < k:
            p = pub.recv_packet(30)
            if p is None:
                break
            acks.append(p.pid)
        done.set()

    threading.Thread(target=read_acks, daemon=True).start()
    pub.send(flood + q1)
    assert done.wait(60) and acks == list(range(1, k + 1)), acks
    dropped = int(sys_values(b).get("$SYS/broker/publish/messages/dropped", 0)) - before
    assert dropped > 0, "the flood never filled the subscriber's output"
    got1 = []
    deadline = time.time() + 60
    while len(got1) < k and time.time() < deadline:
        try:
            p = sub.recv_packet(2.0)
        except socket.timeout:
            continue
        assert p is not None and p.type == 3
        if p.qos:
            got1.append(int(p.payload))
            sub.send(mqttraw.puback(p.pid))
    assert got1 == list(range(1, k + 1)), got1


def test_congested_subscriber_loses_qos0_only_and_counts_it(broker_factory):
    """A subscriber that stops reading while a publisher floods 10 MB (more than the kernel
    buffers on both sides of a loopback connection hold: up to 4 MB send + the receive window): the
    broker's output for it is bounded (out_buffer_size), QoS 0 messages that find no room are
    dropped and counted in $SYS/broker/publish/messages/dropped, so that received + dropped
    == sent exactly; every QoS 1 message interleaved in the flood (all acknowledged) arrives."""
    b = broker_factory(config=SYS1)
    sub = raw_connect(b, "cg-sub")  # reads nothing until the flood is over
    sub.send(mqttraw.subscribe(1, ("cg/#", 1)))
    sub.expect(9)
    before = int(sys_values(b).get("$SYS/broker/publish/messages/dropped", 0))
    pub = raw_connect(b, "cg-pub")
    n0, every = 10000, 500
    payload = b"z" * 1000
    burst = bytearray()
    q1 = []
    for i in range(n0):
        burst += mqttraw.publish("cg/q0", b"%05d" % i + payload)
        if i % every == every - 1:
            pid = len(q1) + 1
            q1.append(pid)
            burst += mqttraw.publish("cg/q1", b"%d" % pid, qos=1, pid=pid)
    assert len(q1) < ESP32_INFLIGHT + ESP32_QUEUED  # all fit: no backpressure in this test
    done = threading.Event()
    acks = []

    def read_acks():
        while len(acks) < len(q1):
            p = pub.recv_packet(30)
            if p is None:
                break
            acks.append(p.pid)
        done.set()

    t = threading.Thread(target=read_acks, daemon=True)
    t.start()
    pub.send(bytes(burst))
    assert done.wait(60) and sorted(acks) == q1
    time.sleep(0.5)
    # now read everything the broker kept for the subscriber
    got0, got1 = [], []
    deadline = time.time() + 60
    dropped = None
    while time.time() < deadline:
        try:
            p = sub.recv_packet(1.0)
        except socket.timeout:
            dropped = int(sys_values(b).get("$SYS/broker/publish/messages/dropped", 0)) - before
            if len(got0) + dropped == n0 and len(set(got1)) == len(q1):
                break
            continue
        assert p is not None and p.type == 3
        if p.qos:
            got1.append(int(p.payload))
            sub.send(mqttraw.puback(p.pid))
        else:
            got0.append(int(p.payload[:5]))
    assert dropped and dropped > 0, "the flood never congested the subscriber"
    assert len(got0) + dropped == n0, (len(got0), dropped)
    assert got0 == sorted(got0) and len(set(got0)) == len(got0)
    assert sorted(set(got1)) == q1, "an acknowledged QoS 1 message was dropped"


# ------------------------------------------------------------------------------ backpressure

class Subscriber(threading.Thread):
    """A raw subscriber that can stop and resume acknowledging. At QoS 2 it does what a
    receiver must: a PUBLISH whose packet id still awaits PUBREL is a duplicate, not a new
    message (MQTT-4.3.3-2 method B)."""

    def __init__(self, broker, cid, qos, acking=True, clean=False, subscribe=None):
        super().__init__(daemon=True)
        self.raw = broker.raw(timeout=10)
        self.connack = self.raw.connect(cid, clean=clean, keepalive=0)
        if subscribe:
            self.raw.send(mqttraw.subscribe(1, (subscribe, qos)))
            assert self.raw.expect(9).body[2] == qos
        self.acking = acking
        self.held = []
        self.awaiting_rel = set()
        self.delivered = []  # payloads, in arrival order
        self.wire = 0  # PUBLISH packets received, duplicates included
        self.closed = False
        self.stop = False
        self.lock = threading.Lock()

    def _ack(self, data):
        if self.acking:
            self.raw.send(data)
        else:
            self.held.append(data)

    def resume(self):
        self.acking = True

    def run(self):
        while not self.stop:
            try:
                if self.acking and self.held:
                    held, self.held = self.held, []
                    self.raw.send(b"".join(held))
                p = self.raw.recv_packet(0.1)
            except socket.timeout:
                continue
            except OSError:
                p = None
            if p is None:
                self.closed = True
                return
            try:
                self._handle(p)
            except OSError:
                self.closed = True
                return

    def _handle(self, p):
        if p.type == 3:
            self.wire += 1
            if p.qos == 2:
                if p.pid not in self.awaiting_rel:
                    self.awaiting_rel.add(p.pid)
                    self.delivered.append(p.payload)
                self._ack(mqttraw.pubrec(p.pid))
            else:
                self.delivered.append(p.payload)
                if p.qos == 1:
                    self._ack(mqttraw.puback(p.pid))
        elif p.type == 6:
            self.awaiting_rel.discard(p.pid)
            self.raw.send(mqttraw.pubcomp(p.pid))


class Publisher(threading.Thread):
    """A raw publisher that sends n QoS 1/2 messages back to back, in one write, and records
    which were acknowledged (PUBACK at QoS 1, PUBREC at QoS 2, answered with PUBREL)."""

    def __init__(self, broker, k, n, qos):
        super().__init__(daemon=True)
        self.k, self.n, self.qos = k, n, qos
        self.raw = broker.raw(timeout=10)
        assert self.raw.connect("bp-pub-%d" % k, keepalive=0) == (0, 0)
        self.acked = []  # sequence numbers, in acknowledgement order
        self.completed = 0
        self.stop = False
        self.closed = False

    def payload(self, i):
        return b"%d:%d" % (self.k, i)

    def start(self):
        data = b"".join(mqttraw.publish("bp/%d" % self.k, self.payload(i), qos=self.qos, pid=i + 1)
                        for i in range(self.n))
        super().start()
        self.raw.send(data)

    def run(self):
        while not self.stop:
            try:
                p = self.raw.recv_packet(0.1)
                if p is not None and p.type == 5:
                    self.raw.send(mqttraw.pubrel(p.pid))
            except socket.timeout:
                continue
            except OSError:
                p = None
            if p is None:
                self.closed = True
                return
            if p.type in (4, 5):
                self.acked.append(p.pid - 1)
            elif p.type == 7:
                self.completed += 1


def stable(get, quiet=1.0, timeout=20):
    """Wait until get() stops changing for `quiet` seconds; return its value."""
    deadline = time.time() + timeout
    last = get()
    since = time.time()
    while time.time() < deadline:
        time.sleep(0.05)
        v = get()
        if v != last:
            last, since = v, time.time()
        elif time.time() - since >= quiet:
            return v
    return last


def check_delivery(pubs, sub, qos):
    for pub in pubs:
        seqs = [int(p.split(b":")[1]) for p in sub.delivered if p.startswith(b"%d:" % pub.k)]
        first = []
        seen = set()
        for s in seqs:
            if s not in seen:
                seen.add(s)
                first.append(s)
        assert first == list(range(pub.n)), "publisher %d: lost or out of order: %r" % (pub.k, first)
        if qos == 2:
            assert len(seqs) == len(seen), "publisher %d: delivered twice at QoS 2" % pub.k


@pytest.mark.parametrize("qos", [1, 2])
@pytest.mark.parametrize("how", ["stops-acking", "offline"])
def test_backpressure_never_drops_an_acknowledged_message(broker_factory, qos, how):
    """The broker's central promise (DESIGN 'Never acknowledge what you may lose'; MQTT-4.3.2
    / 4.3.3: a PUBACK/PUBREC means the receiver owns the message). A persistent subscriber at
    QoS `qos` stops acknowledging (or goes offline); 4 publishers send 60 messages each, back
    to back. The broker must withhold acknowledgements once the subscriber's in-flight window
    (8) and queue (32) are full; then, when the subscriber acknowledges again (or comes back),
    every acknowledged message -- and in the end every message -- arrives, in per-publisher
    order, and at QoS 2 exactly once."""
    b = broker_factory(config=SYS1)
    threads = []
    try:
        backpressure_scenario(b, qos, how, threads)
    finally:
        for t in threads:
            t.stop = True
        for t in threads:
            t.join(2)


def backpressure_scenario(b, qos, how, threads):
    npub, n = 4, 60
    sub = Subscriber(b, "bp-sub", qos, acking=(how != "stops-acking"), subscribe="bp/#")
    threads.append(sub)
    sub.start()
    if how == "offline":
        sub.stop = True
        sub.join(5)
        sub.raw.send(mqttraw.DISCONNECT)
        assert sub.raw.closed()
        capacity = ESP32_QUEUED
    else:
        capacity = ESP32_INFLIGHT + ESP32_QUEUED
    pubs = [Publisher(b, k, n, qos) for k in range(npub)]
    threads.extend(pubs)
    for p in pubs:
        p.start()
    acked = stable(lambda: sum(len(p.acked) for p in pubs), quiet=1.5)
    snapshot = {p.k: list(p.acked) for p in pubs}
    assert not any(p.closed for p in pubs), "a publisher was disconnected:\n" + b.log()
    assert 0 < acked <= capacity, "acknowledged %d messages with room for %d" % (acked, capacity)
    assert acked < npub * n
    if how == "stops-acking":
        assert stable(lambda: sub.wire, quiet=0.5) <= ESP32_INFLIGHT
    for p in pubs:
        # acknowledged in order: the broker takes a publisher's messages one after another
        assert snapshot[p.k] == list(range(len(snapshot[p.k])))
    assert wait_limit(b, "backpressure")

    # the subscriber catches up
    if how == "offline":
        sub = Subscriber(b, "bp-sub", qos, acking=True)
        threads.append(sub)
        assert sub.connack == (1, 0)  # session present (MQTT-3.2.2-2)
        sub.start()
    else:
        sub.resume()
    assert wait_for(lambda: all(len(p.acked) == n or p.closed for p in pubs), 30), \
        [len(p.acked) for p in pubs]
    assert not any(p.closed for p in pubs) and not sub.closed, \
        "a client was disconnected:\n" + b.log()
    assert [len(p.acked) for p in pubs] == [n] * npub
    if qos == 2:
        assert wait_for(lambda: all(p.completed == n for p in pubs), 30)
    assert wait_for(lambda: len(set(sub.delivered)) >= npub * n, 30), len(set(sub.delivered))
    time.sleep(0.3)
    delivered = set(sub.delivered)
    lost = [(k, i) for k in snapshot for i in snapshot[k] if b"%d:%d" % (k, i) not in delivered]
    assert lost == [], "acknowledged but never delivered: %r" % lost
    check_delivery(pubs, sub, qos)


def test_inbound_qos2_ids_bounded_by_backpressure_not_disconnect(broker):
    """The inbound QoS 2 ids kept until PUBREL (MQTT-4.3.3-2) are bounded (4 x
    max_inflight_messages + 16 = 48 on esp32): a publisher that sends more QoS 2 messages
    without releasing any gets its PUBRECs up to the bound, then waits (no PUBREC, the
    connection stays open); each PUBREL lets one more through, and every message is
    delivered once."""
    bound = 4 * ESP32_INFLIGHT + 16
    n = bound + 10
    sub = broker.raw()
    sub.connect("q2b-sub")
    sub.send(mqttraw.subscribe(1, ("q2b/#", 0)))
    sub.expect(9)
    pub = broker.raw()
    pub.connect("q2b-pub")
    for i in range(1, n + 1):
        pub.send(mqttraw.publish("q2b/t", b"%d" % i, qos=2, pid=i))
    recs = [pub.expect(5).pid for _ in range(bound)]
    assert recs == list(range(1, bound + 1))
    with pytest.raises(OSError):  # held back: no PUBREC past the bound (a time-out)
        pub.recv_packet(1.0)
    for i in range(1, bound + 1):
        pub.send(mqttraw.pubrel(i))
    got = []
    while len(got) < n:  # a PUBCOMP for each released id, a PUBREC for each one let through
        p = pub.recv_packet(5)
        assert p is not None, "the publisher was disconnected"
        got.append((p.type, p.pid))
    assert sorted(pid for t, pid in got if t == 7) == list(range(1, bound + 1))
    assert sorted(pid for t, pid in got if t == 5) == list(range(bound + 1, n + 1))
    for i in range(bound + 1, n + 1):
        pub.send(mqttraw.pubrel(i))
    assert [pub.expect(7).pid for _ in range(n - bound)] == list(range(bound + 1, n + 1))
    payloads = [sub.expect(3).payload for _ in range(n)]
    assert payloads == [b"%d" % i for i in range(1, n + 1)]


def test_message_whose_copies_alone_exceed_max_queued_bytes_goes_when_nothing_is_held(broker_factory):
    """MQTT-4.3.2-4 with max_queued_bytes (the esp32 profile's 6 kB): a 2,000-byte QoS 1
    message to 4 subscribers counts 4 copies, more than the budget holds even empty. With
    nothing held nothing would ever make room: it is taken (PUBACK) and every subscriber gets
    it, where before its publisher waited for good."""
    b = broker_factory()
    subs = []
    for i in range(4):
        s = b.raw()
        assert s.connect("many-%d" % i) == (0, 0)
        s.send(mqttraw.subscribe(1, ("many", 1)))
        s.expect(9)
        subs.append(s)
    p = b.raw()
    assert p.connect("many-pub") == (0, 0)
    data = bytes(range(250)) * 8
    p.send(mqttraw.publish("many", data, qos=1, pid=3))
    assert p.expect(4).pid == 3
    for s in subs:
        got = s.expect(3)
        assert got.payload == data
        s.send(mqttraw.puback(got.pid))
