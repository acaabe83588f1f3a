"""Durable QoS 1/2 state through the network: the real `ubroker run --data DIR`, killed with
SIGKILL (the MicroPython process itself, as a power cut would stop it) and started again on
the same folder. Nothing acknowledged to a publisher may be lost, and no QoS 2 message may be
delivered twice."""

import os
import random
import time

import mqttraw as m
from conftest import start_broker, wait_for
from durable_util import kill9, publish_acked


class Subscriber:
    """A persistent subscriber that remembers, across connections, the QoS 2 messages it has
    received but not yet released (it delivers them on PUBREL, as paho does)."""

    def __init__(self):
        self.delivered = {}
        self.pending2 = {}

    def drain(self, b, cid=b"dur-sub", quiet=1.0):
        r = b.raw(timeout=10)
        present, rc = r.connect(cid.decode(), clean=False)
        assert rc == 0
        while True:
            try:
                p = r.recv_packet(quiet)
            except OSError:
                break
            if p is None:
                break
            if p.type == 3:
                if p.qos == 2:
                    self.pending2.setdefault(p.pid, p.payload)
                    r.send(m.pubrec(p.pid))
                else:
                    self.take(p.payload)
                    if p.qos == 1:
                        r.send(m.puback(p.pid))
            elif p.type == 6:
                payload = self.pending2.pop(p.pid, None)
                if payload is not None:
                    self.take(payload)
                r.send(m.pubcomp(p.pid))
        r.close()
        return present

    def take(self, payload):
        self.delivered[payload] = self.delivered.get(payload, 0) + 1


def subscribe_persistent(b, flt="dur/#", qos=2, cid="dur-sub"):
    r = b.raw()
    r.connect(cid, clean=False)
    r.send(m.subscribe(1, (flt, qos)))
    assert r.expect(9).body[2] == qos
    r.send(m.DISCONNECT)
    r.close()


def test_sigkill_with_offline_persistent_subscriber_loses_nothing(tmp_path):
    """Mosquitto, killed like this with QoS 1 messages queued for an offline subscriber, loses
    them all (its snapshot is periodic). Here every acknowledged message arrives after the
    restart, the session is still there (session present, MQTT-3.2.2-2), QoS 2 once."""
    data = tmp_path / "store"
    b = start_broker(tmp_path, board="unix", data=data)
    try:
        subscribe_persistent(b)
        pub = b.raw()
        pub.connect("dur-pub")
        acked = []
        for i in range(40):
            payload = b"k%d" % i
            if publish_acked(pub, "dur/a", payload, 1 + i % 2, i + 1):
                acked.append(payload)
        assert len(acked) == 40
        kill9(b)
    finally:
        b.stop()
    b = start_broker(tmp_path, board="unix", data=data, port=b.port)
    try:
        sub = Subscriber()
        assert sub.drain(b) == 1
        assert sorted(sub.delivered) == sorted(acked)
        assert all(n == 1 for p, n in sub.delivered.items() if int(p[1:]) % 2 == 1)
        assert b.alive()
    finally:
        b.stop()


def test_sigkill_loop_under_load(tmp_path):
    """Publishers keep sending QoS 1 and 2 to an offline persistent subscriber; the broker is
    SIGKILLed at random moments four times and restarted on the same folder. At the end every
    message that got its PUBACK/PUBREC is delivered, and no QoS 2 message twice."""
    rnd = random.Random(1883)
    data = tmp_path / "store"
    b = start_broker(tmp_path, board="unix", data=data)
    port = b.port
    subscribe_persistent(b)
    acked = []
    seq = 0
    try:
        for round_ in range(5):
            pub = b.raw()
            pub.connect("loop-pub-%d" % round_)
            kill_at = rnd.randint(10, 60) if round_ < 4 else None
            for i in range(70):
                seq += 1
                qos = 1 + seq % 2
                payload = b"L%d" % seq
                if kill_at is not None and i == kill_at:
                    pub.send(m.publish("dur/l", payload, qos=qos, pid=i + 1))
                    kill9(b)  # right after a PUBLISH: its acknowledgement may or may not be out
                    break
                if publish_acked(pub, "dur/l", payload, qos, i + 1):
                    acked.append(payload)
            b.stop()
            b = start_broker(tmp_path, board="unix", data=data, port=port)
        sub = Subscriber()
        sub.drain(b)
        missing = [p for p in acked if p not in sub.delivered]
        assert not missing, missing
        twice = [p for p, n in sub.delivered.items() if int(p[1:]) % 2 == 0 and n > 1]
        assert not twice, twice
    finally:
        b.stop()


def test_inbound_qos2_id_survives_restart(tmp_path):
    """A persistent publisher's QoS 2 PUBLISH got its PUBREC; the broker dies before PUBREL.
    The publisher, reconnecting, sends the PUBLISH again (DUP): the broker must recognise the
    id and not deliver the message a second time (exactly once across a power cut)."""
    data = tmp_path / "store"
    b = start_broker(tmp_path, board="unix", data=data)
    subscribe_persistent(b, "once/#")
    pub = b.raw()
    pub.connect("once-pub", clean=False)
    pub.send(m.publish("once/t", b"exactly", qos=2, pid=7))
    assert pub.expect(5).pid == 7
    kill9(b)
    b.stop()
    b = start_broker(tmp_path, board="unix", data=data, port=b.port)
    try:
        pub = b.raw()
        assert pub.connect("once-pub", clean=False) == (1, 0)
        pub.send(m.publish("once/t", b"exactly", qos=2, pid=7, dup=True))
        assert pub.expect(5).pid == 7
        pub.send(m.pubrel(7))
        assert pub.expect(7).pid == 7
        sub = Subscriber()
        sub.drain(b)
        assert sub.delivered == {b"exactly": 1}
    finally:
        b.stop()


def test_retained_and_subscriptions_survive_restart(tmp_path):
    data = tmp_path / "store"
    b = start_broker(tmp_path, board="unix", data=data)
    subscribe_persistent(b, "keep/#", 1, "keeper")
    c = b.client()
    c.publish("keep/ret", b"still here", qos=1, retain=True).wait_for_publish(5)
    kill9(b)
    b.stop()
    b = start_broker(tmp_path, board="unix", data=data, port=b.port)
    try:
        late = b.client()
        late.subscribe("keep/#", 1)
        assert wait_for(lambda: late.messages, 5)
        assert (late.messages[0].payload, late.messages[0].retain) == (b"still here", True)
        # the persistent subscription of "keeper" still routes messages to its queue
        p = b.client()
        p.publish("keep/new", b"queued", qos=1).wait_for_publish(5)
        sub = Subscriber()
        sub.drain(b, b"keeper")
        assert b"queued" in sub.delivered and b"still here" in sub.delivered
    finally:
        b.stop()


def test_prompt_online_subscriber_causes_no_flash_write(tmp_path):
    """Messages whose only persistent subscriber is online and acknowledges at once are never
    written: the publisher's PUBACK waits for the subscriber's instead."""
    data = tmp_path / "store"
    b = start_broker(tmp_path, board="unix", data=data)
    try:
        sub = b.client(client_id="prompt", clean_session=False)
        done = []
        sub.on_subscribe = lambda *a: done.append(1)
        sub.subscribe("fast/#", 1)
        assert wait_for(lambda: done, 5)
        time.sleep(0.2)
        before = sorted(os.listdir(data))
        # the store is there and holds the session: the test cannot pass without one
        assert any(n.endswith(".log") for n in before), before
        pub = b.client()
        infos = [pub.publish("fast/t", b"%d" % i, qos=1) for i in range(300)]
        for info in infos:
            info.wait_for_publish(10)
        assert wait_for(lambda: len(sub.messages) == 300, 10)
        assert sorted(os.listdir(data)) == before
    finally:
        b.stop()


def test_store_figures_in_sys(tmp_path):
    """With the store on, $SYS reports it, and the report keeps working (all figures, limit
    counters included, every sys_interval)."""
    b = start_broker(tmp_path, board="unix", data=tmp_path / "store", config="sys_interval 1\n")
    try:
        subscribe_persistent(b, "fig/#", 1, "fig-sub")
        c = b.client()
        c.publish("fig/t", b"x", qos=1).wait_for_publish(5)
        w = b.client()
        w.subscribe("$SYS/broker/ubroker/#", 0)
        want = {"$SYS/broker/ubroker/store/commits", "$SYS/broker/ubroker/store/bytes",
                "$SYS/broker/ubroker/store/torn", "$SYS/broker/ubroker/store/erases",
                "$SYS/broker/ubroker/heap/free"}
        assert wait_for(lambda: want <= {m.topic for m in w.messages}, 5), [m.topic for m in w.messages]
        commits = [int(m.payload) for m in w.messages if m.topic.endswith("store/commits")]
        assert commits[-1] >= 1
        # the commits and the start's compaction cost blocks: at least one whole erase
        assert int([m.payload for m in w.messages if m.topic.endswith("store/erases")][-1]) >= 1

        def reports():
            n = {}
            for msg in list(w.messages):
                n[msg.topic] = n.get(msg.topic, 0) + 1
            return n

        # Two more reports, each with every figure: the report goes on after the first.
        before = reports()
        assert wait_for(lambda: all(reports().get(t, 0) >= before[t] + 2 for t in want), 5), \
            (before, reports())
        assert "Traceback" not in b.log(), b.log()
        assert b.alive()
    finally:
        b.stop()
