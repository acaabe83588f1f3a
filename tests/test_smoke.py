"""The broker starts through `ubroker run`, and a paho subscriber gets what a paho publisher
sends at each QoS."""

from conftest import wait_for


def test_pub_sub_each_qos(broker):
    sub = broker.client()
    sub.subscribe("smoke/#", 2)
    assert wait_for(lambda: broker.raw is not None)
    pub = broker.client()
    import time
    time.sleep(0.2)
    for q in (0, 1, 2):
        pub.publish("smoke/t", b"m%d" % q, qos=q).wait_for_publish(5)
    assert wait_for(lambda: len(sub.messages) == 3)
    assert [(m.payload, m.qos) for m in sub.messages] == [(b"m0", 0), (b"m1", 1), (b"m2", 2)]
