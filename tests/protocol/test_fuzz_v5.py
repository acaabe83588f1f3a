"""Fuzzing MQTT 5 input over real sockets with hypothesis: v5 CONNECTs with random property
blocks (any identifier, any value, lengths that lie), and v5 PUBLISHes with random properties
after a valid v5 CONNECT, plus valid v5 packets mutated. Whatever arrives, the broker must
answer or close as the standard says (a CONNACK or DISCONNECT it sends is well formed and,
when it refuses, carries a reason code of 0x80 or more), close the connection once the client
ended its side, keep serving the witness clients (3.1.1), and log no traceback.
One broker serves each test function (module-scoped fixture, checked at teardown)."""

import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mqttraw
import mqttraw5 as m
from robust_util import Witness, broker_problems, module_broker, try_send, until_closed

FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def fbroker(tmp_path_factory):
    # the esp32 profile at its heap scaled to 64 bits, as the other v5 tests' (at the 64-bit
    # port's 100k a v5 client after the fuzzing found no room: "out of memory (4480 bytes free)")
    yield from module_broker(tmp_path_factory, "fuzz5", heap=m.board_heap_on_64_bits())


@pytest.fixture(scope="module")
def witness(fbroker):
    return Witness(fbroker, "fw5")


def block(raw_props):
    """A property block from (identifier, value bytes) pairs, its length as given."""
    body = b"".join(bytes((i,)) + v for i, v in raw_props)
    return mqttraw.varint(len(body)) + body


PROPS = st.lists(st.tuples(st.integers(0, 0x2B), st.binary(max_size=6)), max_size=5)


def session(broker, witness, first, then=b""):
    raw = m.Client5(broker.port, timeout=5)
    try:
        try_send(raw, first + then)
    finally:
        try:
            raw.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        closed, got = until_closed(raw, 3)
        raw.close()
    assert closed, "the broker kept the connection open after the client's end of stream"
    for p in got:  # each must parse as what it claims to be
        if p.type == m.CONNACK:
            ack = m.Connack(p)
            assert ack.code == 0 or ack.code >= 0x80, "a refusing CONNACK with code 0x%02x" % ack.code
        elif p.type in (m.PUBACK, m.PUBREC, m.PUBCOMP, m.DISCONNECT):
            a = m.Ack(p)
            assert p.type != m.DISCONNECT or a.code >= 0x80
        elif p.type == m.PUBLISH:
            m.Publish(p)
    assert broker.alive(), broker.log()
    witness.check()


@FUZZ
@given(props=PROPS, will=st.one_of(st.none(), PROPS), lie=st.integers(-2, 2))
def test_connect_with_random_properties(fbroker, witness, props, will, lie):
    """A v5 CONNECT whose property blocks hold random identifiers and values (and whose
    property length may be off by up to 2): CONNACK 0 or a refusal with a reason code of
    0x80 or more (MQTT-3.2.2-6), or a close."""
    pb = bytearray(block(props))
    if lie and len(pb) and 0 <= pb[0] + lie < 128:
        pb[0] += lie
    payload = mqttraw.s("fz5")
    flags = 0x02
    if will is not None:
        flags |= 0x04
        payload += block(will) + mqttraw.s("fz5/will") + mqttraw.s("bye")
    pkt = m.packet(0x10, mqttraw.s(b"MQTT") + bytes((5, flags, 0, 30)) + bytes(pb) + payload)
    session(fbroker, witness, pkt, mqttraw.PINGREQ)


@FUZZ
@given(props=PROPS, qos=st.integers(0, 2), topic=st.sampled_from(["fz5/t", "", "fz5/+", "fz5/é"]),
       payload=st.binary(max_size=20))
def test_publish_with_random_properties(fbroker, witness, props, qos, topic, payload):
    """After a valid v5 CONNECT, a PUBLISH with random properties: acknowledged, or refused
    with a reason code (PUBACK/PUBREC 0x99, DISCONNECT 0x8x/0x9x), never a crash."""
    body = mqttraw.s(topic) + (b"\x00\x07" if qos else b"") + block(props) + payload
    pkt = m.packet(0x30 | (qos << 1), body)
    session(fbroker, witness, m.connect("fz5p"), pkt + mqttraw.PINGREQ)


VALID = [
    m.publish("fz5/a", b"x", qos=1, pid=3, properties=[(m.USER_PROPERTY, ("k", "v")), (m.MESSAGE_EXPIRY, 9)]),
    m.publish("fz5/b", b"y", qos=2, pid=4, properties=[(m.TOPIC_ALIAS, 2)]),
    m.publish("", b"z", properties=[(m.TOPIC_ALIAS, 2)]),
    m.subscribe(5, ("fz5/#", 0x2E), properties=[(m.SUBSCRIPTION_ID, 9)]),
    m.unsubscribe(6, "fz5/#"),
    m.ack(m.PUBACK, 1, 0x10, [(m.REASON_STRING, "r")]),
    m.ack(m.PUBREL, 4, 0),
    m.disconnect(0x04, [(m.SESSION_EXPIRY, 0)]),
]


@FUZZ
@given(pkts=st.lists(st.sampled_from(VALID), min_size=1, max_size=3), at=st.integers(0, 1 << 16),
       value=st.integers(0, 255))
def test_mutated_v5_packets(fbroker, witness, pkts, at, value):
    """Valid v5 packets after a valid v5 CONNECT, with one byte set to a random value."""
    data = bytearray(b"".join(pkts))
    data[at % len(data)] = value
    session(fbroker, witness, m.connect("fz5m"), bytes(data))


def test_broker_serves_normally_after_fuzzing_v5(fbroker, witness):
    """Runs after the fuzz tests in this module (same broker): a v5 subscriber gets a v5
    publisher's message with its property, and the broker logged no traceback."""
    s = m.Client5(fbroker.port)
    assert s.connect5("after5").code == 0
    s.send(m.subscribe(1, ("after/v5", 1)))
    s.next(m.SUBACK)
    p = m.Client5(fbroker.port)
    assert p.connect5("after5p").code == 0
    p.send(m.publish("after/v5", b"ok", qos=1, pid=1, properties=[(m.USER_PROPERTY, ("a", "b"))]))
    got = s.next(m.PUBLISH)
    assert (got.payload, got.props) == (b"ok", [(m.USER_PROPERTY, (b"a", b"b"))])
    witness.check()
    assert not broker_problems(fbroker), fbroker.log()
