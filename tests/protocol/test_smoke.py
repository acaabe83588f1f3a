"""The broker starts through `ubroker run`, and a paho subscriber gets what a paho publisher
sends at each QoS."""

from conftest import wait_for


def test_pub_sub_each_qos(broker):
    """The subscription is answered with a SUBACK (MQTT-3.8.4-1) granting the QoS 2 asked for
    before anything is published, so each message then arrives at the QoS it was sent with
    (MQTT-3.8.4-6: the lower of published and granted)."""
    sub = broker.client()
    granted = []
    sub.on_subscribe = lambda cl, u, mid, codes, props: granted.extend(c.value for c in codes)
    sub.subscribe("smoke/#", 2)
    assert wait_for(lambda: granted, 5), "no SUBACK for the subscription"
    assert granted == [2]
    pub = broker.client()
    for q in (0, 1, 2):
        pub.publish("smoke/t", b"m%d" % q, qos=q).wait_for_publish(5)
    assert wait_for(lambda: len(sub.messages) == 3)
    assert [(m.payload, m.qos) for m in sub.messages] == [(b"m0", 0), (b"m1", 1), (b"m2", 2)]
