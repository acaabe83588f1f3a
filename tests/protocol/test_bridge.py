"""The bridge to an upstream broker, end to end: ubroker in the unix port bridging to a real
Mosquitto that the test starts, with real clients on both sides. Forwarding each way with
prefixes, the uplink going away and coming back, ubroker killed with SIGKILL while messages
wait for upstream, loops, the queue limit, and the $SYS figures. The counting of resends is
checked inside one MicroPython process instead (tests/support/broker_sim.py), where the test decides
when the upstream acknowledges and when the link breaks."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pytest

import mqttraw as m
from conftest import ROOT, SUPPORT, free_port, start_broker, wait_for
from durable_util import kill9, publish_acked
from upstream import Mosquitto, make_ca_and_server_cert


def bridge_conf(up_port, topics, extra=""):
    return ("connection up\naddress 127.0.0.1:%d\nremote_clientid gw-test\nrestart_timeout 1 1\n"
            "keepalive_interval 5\n%s%s" % (up_port, "".join("topic %s\n" % t for t in topics), extra))


class Collector:
    """A paho subscriber that counts each payload it gets (duplicates show as counts > 1)."""

    def __init__(self, port, flt, cid, clean=True, qos=2):
        self.got = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=clean)
        self.c.on_message = self._on
        self.flt, self.qos = flt, qos
        self.c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe(flt, qos)
        self.c.connect("127.0.0.1", port, 30)
        self.c.loop_start()
        assert wait_for(self.c.is_connected, 5)

    def _on(self, cl, u, msg):
        with self.lock:
            self.got.append((msg.topic, msg.payload))

    def payloads(self):
        with self.lock:
            return [p for _t, p in self.got]

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def upstream(tmp_path):
    u = Mosquitto(tmp_path, free_port()).start()
    yield u
    u.stop()


@pytest.fixture
def gateway(tmp_path):
    """start(config, data=None, port=None) -> a ubroker (unix board) bridging as configured;
    all are checked alive and traceback-free at the end."""
    started = []

    def start(config, data=None, port=None):
        b = start_broker(tmp_path, board="unix", config=config, data=data, port=port)
        started.append(b)
        return b

    yield start
    problems = []
    for b in started:
        if not b.alive() and not getattr(b, "killed", False):  # killed: a test's kill -9
            problems.append("broker on port %d died (exit %s):\n%s" % (b.port, b.proc.returncode, b.log()))
        if "Traceback" in b.log():
            problems.append(b.log())
        b.stop()
    assert not problems, "\n".join(problems)


def sys_value(b, name, timeout=5.0):
    """The current value of $SYS/broker/<name> (sent at once to a new $SYS subscriber)."""
    r = b.raw()
    r.connect("sys-%d" % time.monotonic_ns())
    r.send(m.subscribe(1, ("$SYS/broker/" + name, 0)))
    r.expect(9)
    p = r.expect(3, timeout)
    r.close()
    return p.payload.decode()


def bridge_up(b, timeout=10.0):
    return wait_for(lambda: sys_value(b, "bridge/up/connected") == "1", timeout, 0.1)


def test_forwards_out_and_in_with_prefixes(upstream, gateway):
    gw = gateway(bridge_conf(upstream.port, ["sensors/# out 1", "cmd/# in 1",
                                             "x/# both 2 site/ cloud/gw1/"]))
    assert bridge_up(gw)
    up = Collector(upstream.port, "#", "up-sub")
    local = Collector(gw.port, "#", "local-sub")
    time.sleep(0.3)  # both subscriptions in place
    pub = gw.client()
    pub.publish("sensors/t1", b"s1", qos=1).wait_for_publish(5)
    pub.publish("site/x/a", b"p1", qos=2).wait_for_publish(5)
    pub.publish("cmd/local", b"not-up", qos=1).wait_for_publish(5)  # `in` only: stays here
    upc = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="up-pub")
    upc.connect("127.0.0.1", upstream.port)
    upc.loop_start()
    upc.publish("cmd/valve", b"c1", qos=1).wait_for_publish(5)
    upc.publish("cloud/gw1/x/b", b"p2", qos=2).wait_for_publish(5)
    upc.publish("sensors/remote", b"not-down", qos=1).wait_for_publish(5)  # `out` only
    assert wait_for(lambda: len(up.got) >= 5 and len(local.got) >= 5, 5)
    time.sleep(0.5)
    assert sorted(up.got) == sorted([("sensors/t1", b"s1"), ("cloud/gw1/x/a", b"p1"), ("cmd/valve", b"c1"),
                                     ("cloud/gw1/x/b", b"p2"), ("sensors/remote", b"not-down")])
    assert sorted(local.got) == sorted([("sensors/t1", b"s1"), ("site/x/a", b"p1"), ("cmd/local", b"not-up"),
                                        ("cmd/valve", b"c1"), ("site/x/b", b"p2")])
    upc.disconnect()
    upc.loop_stop()
    assert int(sys_value(gw, "bridge/up/sent")) >= 2
    assert int(sys_value(gw, "bridge/up/received")) >= 2


def test_no_loop_with_overlapping_both_patterns(upstream, gateway):
    """A message from upstream is not sent back up, and the upstream does not echo ours back,
    with `both` on overlapping patterns (each side sees each message once)."""
    gw = gateway(bridge_conf(upstream.port, ["a/# both 1", "a/b/# both 2", "# both 0"]))
    assert bridge_up(gw)
    up = Collector(upstream.port, "#", "up-sub")
    local = Collector(gw.port, "#", "local-sub")
    time.sleep(0.3)
    pub = gw.client()
    upc = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="up-pub")
    upc.connect("127.0.0.1", upstream.port)
    upc.loop_start()
    for i in range(10):
        pub.publish("a/b/l%d" % i, b"L%d" % i, qos=2).wait_for_publish(5)
        upc.publish("a/b/u%d" % i, b"U%d" % i, qos=2).wait_for_publish(5)
    pub.publish("a/b/end", b"END-L", qos=1).wait_for_publish(5)
    upc.publish("a/b/end", b"END-U", qos=1).wait_for_publish(5)
    assert wait_for(lambda: {b"END-L", b"END-U"} <= set(up.payloads()) and
                    {b"END-L", b"END-U"} <= set(local.payloads()), 5)
    time.sleep(1.0)  # a loop would keep bringing copies: give them time to show
    want = sorted([b"L%d" % i for i in range(10)] + [b"U%d" % i for i in range(10)] + [b"END-L", b"END-U"])
    assert sorted(up.payloads()) == want
    assert sorted(local.payloads()) == want
    upc.disconnect()
    upc.loop_stop()


def uplink_lost(gw, upstream):
    """The upstream subscriber (a persistent session, so the upstream keeps what arrives
    while it is away), then the upstream stopped and the bridge seen down."""
    assert bridge_up(gw)
    up = Collector(upstream.port, "data/#", "up-sub", clean=False)
    time.sleep(0.2)
    upstream.stop()
    assert wait_for(lambda: sys_value(gw, "bridge/up/connected") == "0", 10, 0.1)
    return up


def test_uplink_down_then_back_nothing_lost_in_order(upstream, gateway, tmp_path):
    gw = gateway(bridge_conf(upstream.port, ["data/# out 2"]), data=tmp_path / "gw-data")
    up = uplink_lost(gw, upstream)
    r = gw.raw()
    r.connect("pub-down")
    for i in range(1, 61):
        assert publish_acked(r, "data/q%d" % (i % 2 + 1), b"%d" % i, 1 + i % 2, i)
    assert int(sys_value(gw, "bridge/up/queued")) == 60
    assert sys_value(gw, "bridge/up/last_error") != "none"  # why the link went down
    time.sleep(2)  # down "for a while": several reconnection attempts fail
    upstream.start()
    assert bridge_up(gw, 15)
    assert wait_for(lambda: len(up.got) >= 60, 15), (len(up.got), gw.log()[-2000:])
    time.sleep(0.5)
    got = up.got
    assert sorted(p for _t, p in got) == sorted(b"%d" % i for i in range(1, 61))  # none lost, none twice
    for topic in ("data/q1", "data/q2"):
        seq = [int(p) for t, p in got if t == topic]
        assert seq == sorted(seq), "order per topic"
    assert wait_for(lambda: sys_value(gw, "bridge/up/queued") == "0", 5)
    up.close()


def test_sigkill_while_waiting_for_upstream_then_restart(upstream, gateway, tmp_path):
    """ubroker killed with SIGKILL while acknowledged messages wait for an unreachable
    upstream: after the restart all reach upstream, QoS 2 exactly once."""
    data = tmp_path / "gw-data"
    port = free_port()
    conf = bridge_conf(upstream.port, ["data/# out 2"])
    gw = gateway(conf, data=data, port=port)
    up = uplink_lost(gw, upstream)
    r = gw.raw()
    r.connect("pub-kill")
    for i in range(1, 41):
        assert publish_acked(r, "data/k", b"%d" % i, 1 + i % 2, i)
    kill9(gw)
    gw2 = gateway(conf, data=data, port=port)
    assert int(sys_value(gw2, "bridge/up/queued")) == 40
    upstream.start()
    assert wait_for(lambda: len(up.got) >= 40, 15)
    time.sleep(0.5)
    assert sorted(int(p) for p in up.payloads()) == list(range(1, 41))
    up.close()


def test_sigkill_while_forwarding_qos2_exactly_once_upstream(upstream, gateway, tmp_path):
    """Killed in the middle of forwarding QoS 2 (some messages at PUBLISH, some at PUBREL):
    after the restart every acknowledged message reaches upstream exactly once."""
    data = tmp_path / "gw-data"
    port = free_port()
    conf = bridge_conf(upstream.port, ["data/# out 2"])
    gw = gateway(conf, data=data, port=port)
    assert bridge_up(gw)
    up = Collector(upstream.port, "data/#", "up-sub", clean=False)
    time.sleep(0.2)
    acked = []
    r = gw.raw()
    r.connect("pub-fwd")
    for i in range(1, 401):
        try:
            if not publish_acked(r, "data/f", b"%d" % i, 2, i):
                break
        except (OSError, AssertionError):
            break
        acked.append(i)
        if i == 150:
            threading.Thread(target=kill9, args=(gw,)).start()
    assert 100 <= len(acked) < 400, len(acked)
    gw.proc.wait(10)
    gateway(conf, data=data, port=port)
    assert wait_for(lambda: set(acked) <= {int(p) for p in up.payloads()}, 20)
    time.sleep(1.0)
    counts = {}
    for p in up.payloads():
        counts[int(p)] = counts.get(int(p), 0) + 1
    assert [i for i in acked if counts.get(i) != 1] == [], "lost or duplicated upstream"
    up.close()


def test_queue_limit_backpressure_and_qos0_counted(upstream, gateway):
    """At bridge_max_queued_messages the bridge's queue holds the publisher back (its PUBACK
    waits) instead of dropping; QoS 0 for an unreachable upstream is dropped and counted."""
    gw = gateway(bridge_conf(upstream.port, ["data/# out 1"], "bridge_max_queued_messages 5\n"))
    up = uplink_lost(gw, upstream)
    r = gw.raw()
    r.connect("pub-limit")
    for i in range(1, 6):
        assert publish_acked(r, "data/l", b"%d" % i, 1, i)
    r.send(m.publish("data/l", b"6", qos=1, pid=6))
    with pytest.raises(OSError):  # held back: no PUBACK while the queue is full (time-out)
        r.recv_packet(1.0)
    other = gw.raw()
    other.connect("pub-qos0")
    for i in range(3):
        other.send(m.publish("data/zero", b"z", qos=0))
    assert wait_for(lambda: sys_value(gw, "bridge/up/dropped") == "3", 5)
    assert int(sys_value(gw, "ubroker/limits/queued_messages")) >= 1
    upstream.start()
    p = r.recv_packet(15)  # the uplink drained the queue: message 6 is taken and acknowledged
    assert p is not None and p.type == 4 and p.pid == 6
    assert wait_for(lambda: len(up.got) >= 6, 15)
    assert sorted(int(x) for x in up.payloads()) == [1, 2, 3, 4, 5, 6]
    up.close()


def test_refused_by_upstream_reported_and_local_service_goes_on(upstream, gateway):
    """An upstream that refuses the bridge (anonymous clients not allowed: CONNACK 5) shows in
    last_error; local clients are served meanwhile."""
    upstream.stop()
    upstream.conf.write_text(upstream.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    upstream.start()
    gw = gateway(bridge_conf(upstream.port, ["data/# out 1"]))
    assert wait_for(lambda: "CONNACK 5" in sys_value(gw, "bridge/up/last_error"), 10, 0.2)
    assert sys_value(gw, "bridge/up/connected") == "0"
    c = gw.client()
    assert c.is_connected()


def test_bridge_config_errors_named_with_line(tmp_path):
    from conftest import UBROKER
    import subprocess

    cfg = tmp_path / "bad.conf"
    cfg.write_text("address 127.0.0.1:1883\nconnection up\naddress h:70000\ntopic a/# sideways 1\n")
    ok = tmp_path / "ok.conf"
    ok.write_text("connection up\naddress h:1884\ntopic a/# out 1\nbridge_cafile /nonexistent/ca.pem\n")
    r = subprocess.run([UBROKER, "config", "--check", str(ok)], capture_output=True, text=True)
    assert r.returncode == 1 and "ok.conf:1: connection up: bridge_cafile /nonexistent/ca.pem does not exist" in r.stderr
    r = subprocess.run([UBROKER, "config", "--check", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 1
    assert "bad.conf:1: address belongs to a bridge" in r.stderr
    assert "bad.conf:3: address port must be 1..65535" in r.stderr
    assert "bad.conf:4: topic direction must be in, out or both" in r.stderr


class PlainUpstream:
    """A minimal MQTT server that refuses bridge mode (CONNACK 1 to protocol level 0x84, as a
    broker without Mosquitto's extension answers) and takes plain 3.1.1: it records the
    protocol levels offered and acknowledges QoS 1 PUBLISHes."""

    def __init__(self):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(4)
        self.srv.settimeout(0.2)
        self.port = self.srv.getsockname()[1]
        self.levels = []
        self.payloads = []
        self.stop = False
        self.t = threading.Thread(target=self.serve, daemon=True)
        self.t.start()

    def serve(self):
        while not self.stop:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                continue
            with conn:
                try:
                    self.session(conn)
                except OSError:
                    pass

    def session(self, conn):
        conn.settimeout(10)
        buf = b""
        while not self.stop:
            while True:  # one packet: fixed header, remaining length (< 128 here), body
                if len(buf) >= 2 and len(buf) >= 2 + buf[1]:
                    break
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buf += chunk
            b0, body, buf = buf[0], buf[2:2 + buf[1]], buf[2 + buf[1]:]
            t = b0 >> 4
            if t == 1:
                level = body[6]
                self.levels.append(level)
                if level != 4:
                    conn.sendall(b"\x20\x02\x00\x01")
                    return
                conn.sendall(b"\x20\x02\x00\x00")
            elif t == 8:
                conn.sendall(b"\x90\x03" + body[:2] + b"\x01")
            elif t == 3:
                tl = (body[0] << 8) | body[1]
                pid = body[2 + tl:4 + tl]
                self.payloads.append(bytes(body[4 + tl:]))
                conn.sendall(b"\x40\x02" + pid)
            elif t == 12:
                conn.sendall(b"\xd0\x00")

    def close(self):
        self.stop = True
        self.t.join(5)
        self.srv.close()


def test_upstream_without_bridge_mode_used_as_plain_mqtt(gateway):
    """An upstream that refuses bridge mode (CONNACK 1 to level 0x84) is used as a plain MQTT
    3.1.1 server, and messages go up."""
    plain = PlainUpstream()
    try:
        gw = gateway(bridge_conf(plain.port, ["data/# out 1"]))
        assert bridge_up(gw)
        assert plain.levels[:2] == [0x84, 4]
        assert "upstream refuses bridge mode" in gw.log()
        gw.client().publish("data/x", b"hello", qos=1).wait_for_publish(5)
        assert wait_for(lambda: plain.payloads == [b"hello"], 5)
    finally:
        plain.close()


def test_ubroker_as_upstream_of_a_bridge_no_echo(gateway, broker_factory):
    """ubroker accepts a bridge's CONNECT (level 0x84, as Mosquitto's bridges send by default)
    and does not send a bridge back what it published: with `# both` between two ubrokers,
    each side sees each message once."""
    upstream = broker_factory(board="unix")
    gw = gateway(bridge_conf(upstream.port, ["# both 1"]))
    assert bridge_up(gw)
    assert "upstream refuses bridge mode" not in gw.log()
    up = Collector(upstream.port, "t/#", "up-sub")
    local = Collector(gw.port, "t/#", "local-sub")
    time.sleep(0.3)
    gw.client().publish("t/from-gw", b"G", qos=1).wait_for_publish(5)
    upstream.client().publish("t/from-up", b"U", qos=1).wait_for_publish(5)
    assert wait_for(lambda: len(up.got) >= 2 and len(local.got) >= 2, 5)
    time.sleep(1.0)
    assert sorted(up.payloads()) == [b"G", b"U"]
    assert sorted(local.payloads()) == [b"G", b"U"]


def test_bridge_over_tls_with_a_ca_file(gateway, tmp_path):
    """TLS to the upstream (bridge_cafile): the upstream's certificate is checked against the
    CA; messages flow both ways. A CA that did not sign it: no connection, the reason in
    last_error, the broker unharmed."""
    ca, crt, key = make_ca_and_server_cert(tmp_path / "pki")
    other_ca, _c, _k = make_ca_and_server_cert(tmp_path / "pki", "other")
    up = Mosquitto(tmp_path, free_port(), tls=(ca, crt, key)).start()
    try:
        gw = gateway(bridge_conf(up.port, ["data/# out 1", "cmd/# in 1"], "bridge_cafile %s\n" % ca))
        assert bridge_up(gw)
        local = Collector(gw.port, "cmd/#", "local-sub")
        upc = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="up-tls-sub")
        upc.tls_set(ca_certs=ca)
        got = []
        upc.on_message = lambda cl, u, msg: got.append(msg.payload)
        upc.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe("data/#", 1)
        upc.connect("localhost", up.port)
        upc.loop_start()
        time.sleep(0.5)
        gw.client().publish("data/t", b"over-tls", qos=1).wait_for_publish(5)
        assert wait_for(lambda: got == [b"over-tls"], 5)
        upc.publish("cmd/c", b"down-tls", qos=1).wait_for_publish(5)
        assert wait_for(lambda: local.payloads() == [b"down-tls"], 5)
        upc.disconnect()
        upc.loop_stop()

        bad = gateway(bridge_conf(up.port, ["data/# out 1"], "bridge_cafile %s\n" % other_ca))
        assert wait_for(lambda: "not correctly signed by the trusted CA" in sys_value(bad, "bridge/up/last_error"),
                        10, 0.2)
        assert sys_value(bad, "bridge/up/connected") == "0"
        assert bad.client().is_connected()
    finally:
        up.stop()


# The bridge inside the broker driven in one MicroPython process (tests/support/broker_sim.py): the
# upstream is a fake socket, so the test decides when it acknowledges and when the link breaks.
RESEND_SCENARIO = r"""
import json
import sys

from broker_sim import Client, FakeSock, Sim, config, encode_publish
from ubroker import codec
from ubroker.bridge import Bridge
from ubroker.config import parse
from ubroker.session import Conn

sim = Sim(config(sys.argv[1]))
sv = sim.sv
br = Bridge(sv, parse("connection up\naddress 127.0.0.1:9\ntopic # out 1\n")["connection"][0])
sv.bridges = [br]
br.start(sv.now)


def uplink():
    # A new link whose upstream has just answered CONNACK 0.
    sock = FakeSock()
    c = Conn(sock, sv.now)
    c.bridge = br
    br.conn = c
    sv.conns[sock] = c
    sim.feed(c, b"\x20\x02\x00\x00")
    return c, sock


def publishes(sock):
    # (payload, DUP, packet id) of each PUBLISH the broker wrote upstream.
    out = []
    data = sock.data
    pos = 0
    while pos < len(data):
        rl, p = codec.decode_length(data, pos + 1, len(data))
        if data[pos] >> 4 == 3:
            n = (data[p] << 8) | data[p + 1]
            out.append((bytes(data[p + 4 + n : p + rl]).decode(), bool(data[pos] & 8),
                        (data[p + 2 + n] << 8) | data[p + 3 + n]))
        pos = p + rl
    sock.data = bytearray()
    return out


pub = Client(sim, b"pub")
up, sock = uplink()
for i in (1, 2):
    pub.send(encode_publish(b"data/t", b"m%d" % i, 1, pid=i))
first = publishes(sock)
sim.feed(up, codec.ack(codec.PUBACK, first[0][2]))  # upstream takes m1, not m2
sim.drop(up)
pub.send(encode_publish(b"data/t", b"m3", 1, pid=3))  # queued while the link is down
up, sock = uplink()
again = publishes(sock)
print(json.dumps({"first": first, "again": again, "figures": dict(br.figures())}))
"""


def test_a_message_resent_after_a_reconnect_is_counted_as_sent_once(tmp_path):
    """MQTT-4.4.0-1: after the uplink comes back, the bridge's session resends the PUBLISH
    the upstream never acknowledged, with DUP set (MQTT-3.3.1-1); the bridge's `sent` figure
    counts each message once, so three messages read 3, not 4."""
    env = dict(os.environ, MICROPYPATH=os.pathsep.join(
        (SUPPORT, os.path.join(ROOT, "firmware"))))
    r = subprocess.run([os.path.join(os.path.dirname(sys.executable), "micropython"), "-c", RESEND_SCENARIO,
                        str(tmp_path)], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert [(p, dup) for p, dup, _pid in got["first"]] == [("m1", False), ("m2", False)]
    assert [(p, dup) for p, dup, _pid in got["again"]] == [("m2", True), ("m3", False)]
    assert got["again"][0][2] == got["first"][1][2]  # the same packet id: the same message
    assert got["figures"]["bridge/up/sent"] == 3
    assert got["figures"]["bridge/up/queued"] == 2  # m2 and m3 await their PUBACK
