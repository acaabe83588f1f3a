"""The bridge at MQTT 5 (`bridge_protocol_version mqttv50`), end to end: ubroker in the unix
port bridging to a real Mosquitto at protocol level 5, with paho MQTTv5 clients on both sides.
Messages both ways at QoS 0, 1 and 2; a publisher's user properties and other message
properties reaching a v5 subscriber on the other side (MQTT-3.3.2-17/18); no loop with `both`
patterns (the link's subscriptions carry No Local, MQTT-3.8.3-3); the upstream session kept
while the gateway is away (Session Expiry Interval, MQTT 5.0 section 3.1.2.11.2)."""

import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import test_bridge as tb
from conftest import free_port, wait_for

V5 = "bridge_protocol_version mqttv50\n"
upstream = tb.upstream
gateway = tb.gateway


class Client5:
    """A paho MQTTv5 client; with a filter it subscribes and keeps what it gets as
    (topic, payload, qos, user properties, content type)."""

    def __init__(self, port, cid, flt=None, qos=2):
        self.got = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
        self.c.on_message = self._on
        if flt is not None:
            self.c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(flt, qos)
        self.c.connect("127.0.0.1", port, 30)
        self.c.loop_start()
        assert wait_for(self.c.is_connected, 5)

    def _on(self, cl, u, msg):
        p = msg.properties
        with self.lock:
            self.got.append((msg.topic, msg.payload, msg.qos, getattr(p, "UserProperty", None),
                             getattr(p, "ContentType", None)))

    def publish(self, topic, payload, qos, user=None, content_type=None):
        props = None
        if user or content_type:
            props = Properties(PacketTypes.PUBLISH)
            if user:
                props.UserProperty = user
            if content_type:
                props.ContentType = content_type
        self.c.publish(topic, payload, qos, properties=props).wait_for_publish(5)

    def payloads(self):
        with self.lock:
            return [g[1] for g in self.got]

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_link_speaks_mqtt5(upstream, gateway):
    """The upstream sees a level 5 client (Mosquitto logs it as p5) and the bridge is up."""
    gw = gateway(tb.bridge_conf(upstream.port, ["a/# both 1"], V5))
    assert tb.bridge_up(gw)
    assert wait_for(lambda: "as gw-test (p5" in upstream.log(), 5), upstream.log()
    assert "bridge up: connected" in gw.log()


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_both_ways_with_properties(upstream, gateway, qos):
    """At each QoS, a message goes up and one comes down with the publisher's user
    properties (in order) and content type, to a v5 subscriber on the other side, under the
    prefixes the topic line names."""
    gw = gateway(tb.bridge_conf(upstream.port, ["x/# both 2 site/ cloud/gw1/"], V5))
    assert tb.bridge_up(gw)
    up = Client5(upstream.port, "up-sub", "cloud/#", 2)
    local = Client5(gw.port, "local-sub", "site/#", 2)
    time.sleep(0.3)
    lp = Client5(gw.port, "local-pub")
    rp = Client5(upstream.port, "up-pub")
    user = [("k1", "v1"), ("k2", "v2"), ("k1", "again")]
    lp.publish("site/x/up", b"U", qos, user=user, content_type="text/plain")
    rp.publish("cloud/gw1/x/down", b"D", qos, user=[("from", "cloud")], content_type="application/x")
    assert wait_for(lambda: b"U" in up.payloads() and b"D" in local.payloads(), 5), gw.log()[-2000:]
    time.sleep(0.5)
    ups = [g for g in up.got if g[1] == b"U"]
    downs = [g for g in local.got if g[1] == b"D"]
    assert ups == [("cloud/gw1/x/up", b"U", qos, user, "text/plain")]
    assert downs == [("site/x/down", b"D", qos, [("from", "cloud")], "application/x")]
    # each side's own message is not echoed back to it: local-sub has "U" once, straight from
    # local-pub (before or after "D": at QoS 0 the two race)
    assert local.payloads().count(b"U") == 1 and local.payloads().count(b"D") == 1
    for c in (up, local, lp, rp):
        c.close()


def test_v311_clients_across_a_v5_link(upstream, gateway):
    """3.1.1 clients on both sides still get plain messages through a v5 link."""
    gw = gateway(tb.bridge_conf(upstream.port, ["t/# both 1"], V5))
    assert tb.bridge_up(gw)
    up = tb.Collector(upstream.port, "t/#", "up-sub")
    local = tb.Collector(gw.port, "t/#", "local-sub")
    time.sleep(0.3)
    pub = gw.client()
    pub.publish("t/l", b"L", qos=1).wait_for_publish(5)
    upc = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="up-pub")
    upc.connect("127.0.0.1", upstream.port)
    upc.loop_start()
    upc.publish("t/u", b"U", qos=2).wait_for_publish(5)
    assert wait_for(lambda: {b"L", b"U"} <= set(up.payloads()) and {b"L", b"U"} <= set(local.payloads()), 5)
    time.sleep(0.5)
    assert sorted(up.payloads()) == [b"L", b"U"] and sorted(local.payloads()) == [b"L", b"U"]
    upc.disconnect()
    upc.loop_stop()


def test_no_loop_with_both_patterns(upstream, gateway):
    """With `both` on overlapping patterns each side sees each message once: the upstream
    does not send the link's own messages back (No Local, MQTT-3.8.3-3) and what came down is
    not sent back up."""
    gw = gateway(tb.bridge_conf(upstream.port, ["a/# both 1", "a/b/# both 2", "# both 0"], V5))
    assert tb.bridge_up(gw)
    up = Client5(upstream.port, "up-sub", "#")
    local = Client5(gw.port, "local-sub", "#")
    time.sleep(0.3)
    lp = Client5(gw.port, "local-pub")
    rp = Client5(upstream.port, "up-pub")
    for i in range(5):
        lp.publish("a/b/l%d" % i, b"L%d" % i, 2)
        rp.publish("a/b/u%d" % i, b"U%d" % i, 2)
    want = sorted([b"L%d" % i for i in range(5)] + [b"U%d" % i for i in range(5)])
    assert wait_for(lambda: set(want) <= set(up.payloads()) and set(want) <= set(local.payloads()), 5)
    time.sleep(1.0)  # a loop would keep bringing copies
    assert sorted(up.payloads()) == want
    assert sorted(local.payloads()) == want
    for c in (up, local, lp, rp):
        c.close()


def test_upstream_keeps_the_session_while_the_gateway_is_away(upstream, gateway):
    """cleansession false asks for a Session Expiry Interval that never ends: what the
    upstream gets for the link's `in` subscription while the gateway is stopped arrives after
    it comes back, and its CONNACK says Session Present (with an interval of 0 the upstream
    would have ended the session with the link, MQTT-3.1.2-23)."""
    port = free_port()
    conf = tb.bridge_conf(upstream.port, ["cmd/# in 1"], V5)
    gw = gateway(conf, port=port)
    assert tb.bridge_up(gw)
    gw.stop()
    gw.killed = True  # stopped on purpose (the fixture checks the others are alive)
    rp = Client5(upstream.port, "up-pub")
    rp.publish("cmd/valve", b"open", 1, user=[("why", "away")])
    rp.close()
    gw2 = gateway(conf, port=port)
    assert tb.bridge_up(gw2)
    assert "(session present)" in gw2.log(), gw2.log()[-2000:]
    # the message kept for the link came down (routed to nobody here: no local subscriber yet)
    assert wait_for(lambda: int(tb.sys_value(gw2, "bridge/up/received")) == 1, 5)


def test_acknowledgements_with_reason_codes_release_the_queue(upstream, gateway):
    """QoS 1 and 2 messages going up where nobody subscribes upstream: Mosquitto answers at
    level 5 with PUBACK/PUBREC 0x10, No matching subscribers (MQTT 5.0 section 3.4.2.1), which
    ends each exchange as a success; the link stays up and its queue empties."""
    gw = gateway(tb.bridge_conf(upstream.port, ["lonely/# out 2"], V5))
    assert tb.bridge_up(gw)
    lp = Client5(gw.port, "local-pub")
    for i in range(5):
        lp.publish("lonely/%d" % i, b"x", 1 + i % 2)
    assert wait_for(lambda: tb.sys_value(gw, "bridge/up/queued") == "0", 5)
    assert int(tb.sys_value(gw, "bridge/up/sent")) == 5
    assert tb.sys_value(gw, "bridge/up/connected") == "1"
    assert "protocol error" not in gw.log()
    lp.close()
