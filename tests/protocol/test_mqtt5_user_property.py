"""MQTT 5.0 User Properties on PUBLISH, as strings: both the name and the value are UTF-8
Encoded Strings (section 1.5.4), checked by the server, which passes them on unchanged
(MQTT-3.3.2-17/18). v5_codec.props checks an ASCII string without U+0000 in two C loops and
hands any other to codec.check_utf8: these tests hold both ways to one answer. Raw clients
(tests/support/mqttraw5.py) write the bytes, ill-formed ones included."""

import pytest

import mqttraw5 as m
from mqttraw5 import broker5  # noqa: F401 (the `broker` fixture)
from mqttraw5 import connected as v5


def _s(b):
    return bytes((len(b) >> 8, len(b) & 0xFF)) + b


@pytest.mark.parametrize("name,value", [
    (b"k", b"\xc0\x80"),  # U+0000 as an overlong form
    (b"\xed\xa0\x80", b"v"),  # a UTF-16 surrogate, U+D800
    (b"k", b"a\x00b"),  # U+0000
    (b"\xff", b"v"),  # not UTF-8 at all
    (b"k", b"\xe2\x82"),  # a truncated sequence
    (b"k", b"\xf4\x90\x80\x80"),  # above U+10FFFF
], ids=["overlong", "surrogate", "nul", "ff", "truncated", "above-10ffff"])
def test_ill_formed_user_property_gets_disconnect_0x81(broker, name, value):
    """MQTT-1.5.4-1 (well-formed UTF-8, no surrogates), MQTT-1.5.4-2 (no U+0000) in a User
    Property's name or value: malformed, DISCONNECT 0x81 and close (section 4.13); the
    broker serves on."""
    p = v5(broker, "pu")
    p.send(m.publish("u/t", b"x", qos=1, pid=1, properties=[(m.USER_PROPERTY, _s(name) + _s(value))]))
    assert p.disconnected() == 0x81
    assert v5(broker, "after")


def test_user_properties_pass_on_unchanged_whatever_their_characters(broker):
    """MQTT-3.3.2-17/18: User Properties with empty, ASCII and non-ASCII (well-formed) names
    and values reach the subscriber unchanged and in their order; the publisher's PUBACK
    says 0 (MQTT-3.3.4-1)."""
    pairs = [("", ""), ("a", "1"), ("é", "ü€"), ("k", "𝄞"), ("a", "")]
    s = v5(broker, "su")
    s.send(m.subscribe(1, ("u/#", 1)))
    assert all(x < 3 for x in s.next(m.SUBACK).codes)
    p = v5(broker, "pu")
    p.send(m.publish("u/t", b"x", qos=1, pid=7, properties=[(m.USER_PROPERTY, kv) for kv in pairs]))
    a = p.next(m.PUBACK)
    assert (a.pid, a.code) == (7, 0)
    g = s.next(m.PUBLISH)
    assert (g.topic, g.payload) == (b"u/t", b"x")
    assert [v for k, v in g.props if k == m.USER_PROPERTY] == [(k.encode(), v.encode()) for k, v in pairs]
