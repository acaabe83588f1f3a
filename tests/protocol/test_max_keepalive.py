"""max_keepalive, as Mosquitto applies it to MQTT 3.1.1 clients: 3.1.1 has no way to tell a
client to use a shorter keepalive, so a client asking for more than max_keepalive, or for none
at all (0), is refused with CONNACK 2 "identifier rejected" and disconnected. The default, 0,
sets no limit (Mosquitto's default too)."""

import pytest


@pytest.mark.parametrize("keepalive", [31, 600, 0])
def test_a_keepalive_above_max_keepalive_or_none_is_refused(broker_factory, keepalive):
    """MQTT-3.2.2-5: a refusing CONNACK has session present 0, then the server closes the
    connection (MQTT-3.2.2-5, 3.1.4-1)."""
    b = broker_factory(config="max_keepalive 30\n")
    c = b.raw()
    assert c.connect("ka-%d" % keepalive, keepalive=keepalive) == (0, 2)
    assert c.closed()


@pytest.mark.parametrize("keepalive", [1, 30])
def test_a_keepalive_within_max_keepalive_is_accepted(broker_factory, keepalive):
    b = broker_factory(config="max_keepalive 30\n")
    c = b.raw()
    assert c.connect("ka-ok-%d" % keepalive, keepalive=keepalive) == (0, 0)


@pytest.mark.parametrize("keepalive", [0, 65535])
def test_without_max_keepalive_any_keepalive_is_accepted(broker, keepalive):
    c = broker.raw()
    assert c.connect("ka-any-%d" % keepalive, keepalive=keepalive) == (0, 0)
