"""Fuzzing over real sockets with hypothesis: random bytes after (or instead of) a valid
CONNECT, and valid packets mutated (bytes flipped, truncated, remaining length changed, bytes
inserted or dropped, split at random points). Whatever arrives, the broker must survive it:
after every example it has closed that connection once the client ended its side, and a
witness pair of clients, connected before the run, still does a publish/subscribe round
trip; after the run a fresh paho client works and the broker's log has no traceback. One broker serves each test function (module-scoped fixture, checked at
teardown)."""

import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mqttraw
from conftest import wait_for
from robust_util import Witness, broker_problems, module_broker, try_send, until_closed

FUZZ = settings(max_examples=500, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def fbroker(tmp_path_factory):
    yield from module_broker(tmp_path_factory, "fuzz")


@pytest.fixture(scope="module")
def witness(fbroker):
    return Witness(fbroker, "fw")


def valid_packets():
    """A sample of every packet a client sends, valid as they stand."""
    return [
        mqttraw.connect("fz", keepalive=30),
        mqttraw.connect("fz-will", will=("fz/will", b"bye", 1, False), username="u", password="p"),
        mqttraw.publish("fz/a", b"hello", qos=0),
        mqttraw.publish("fz/b", b"x" * 40, qos=1, pid=7),
        mqttraw.publish("fz/c", b"y" * 5, qos=2, pid=8, retain=True),
        mqttraw.publish("fz/d/e", b"", qos=1, pid=300, dup=True),
        mqttraw.subscribe(3, ("fz/#", 1), ("fz/+/e", 2)),
        mqttraw.unsubscribe(4, "fz/#", "nothing"),
        mqttraw.puback(1),
        mqttraw.pubrec(2),
        mqttraw.pubrel(8),
        mqttraw.pubcomp(2),
        mqttraw.PINGREQ,
        mqttraw.DISCONNECT,
    ]


VALID = valid_packets()


def send_chunks(raw, data, cuts):
    """Send data split at the given offsets, with a pause between chunks so that the broker
    sees partial packets."""
    last = 0
    for c in sorted(set(x % (len(data) + 1) for x in cuts)) + [len(data)]:
        if c > last:
            if not try_send(raw, data[last:c]):
                return
            last = c
            time.sleep(0.001)


def finish(raw):
    """Half-close our side and read whatever the broker says until it closes its side.
    Returns whether it did within 3 s."""
    try:
        raw.sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    closed, _ = until_closed(raw, 3)
    raw.close()
    return closed


def session(broker, witness, data, cuts, connect_first):
    raw = mqttraw.RawClient(broker.port, timeout=5)
    try:
        if connect_first:
            assert raw.connect("fuzzer", keepalive=60) == (0, 0)
        send_chunks(raw, data, cuts)
    finally:
        closed = finish(raw)
    assert closed, "the broker kept the connection open after the client's end of stream"
    assert broker.alive(), broker.log()
    witness.check()


@st.composite
def mutated(draw):
    """One or more valid packets, concatenated, then mutated."""
    pkts = draw(st.lists(st.sampled_from(VALID), min_size=1, max_size=4))
    data = bytearray(b"".join(pkts))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "length", "insert", "delete", "dup"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[i:]
        elif op == "length":
            # the remaining-length byte of the first packet: the usual place to lie
            if len(data) > 1:
                data[1] = draw(st.sampled_from([0, 1, 2, 0x7F, 0x80, 0xFF, (data[1] + 1) & 0xFF, (data[1] - 1) & 0xFF]))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 4))]
        else:
            data[i:i] = data[i:i + draw(st.integers(1, 20))]
    return bytes(data)


CUTS = st.lists(st.integers(0, 1 << 16), max_size=3)


@FUZZ
@given(data=st.binary(min_size=1, max_size=600), cuts=CUTS, connect_first=st.booleans())
def test_random_bytes_after_connect(fbroker, witness, data, cuts, connect_first):
    """Random bytes, mostly after a valid CONNECT (so the packet parsers see them), sometimes
    as the very first bytes of a connection."""
    session(fbroker, witness, data, cuts, connect_first)


@FUZZ
@given(data=mutated(), cuts=CUTS, connect_first=st.booleans())
def test_mutated_valid_packets(fbroker, witness, data, cuts, connect_first):
    """Valid packets with bytes flipped, fields truncated and lengths changed."""
    session(fbroker, witness, data, cuts, connect_first)


def test_broker_serves_normally_after_fuzzing(fbroker, witness):
    """Runs after the fuzz tests in this module (same broker): a new paho subscriber gets
    what a new paho publisher sends at each QoS, and the broker logged no traceback."""
    sub = fbroker.client()
    got = []
    granted = []
    sub.on_message = lambda c, u, m: got.append((m.topic, m.payload, m.qos))
    sub.on_subscribe = lambda c, u, mid, codes, props: granted.extend(x.value for x in codes)
    sub.subscribe("after/fuzz", 2)
    # The SUBACK, granting QoS 2, is back before anything is published (MQTT-3.8.4-1).
    assert wait_for(lambda: granted, 10), "no SUBACK after the fuzzing"
    assert granted == [2]
    pub = fbroker.client()
    for q in (0, 1, 2):
        pub.publish("after/fuzz", b"q%d" % q, qos=q).wait_for_publish(10)
    assert wait_for(lambda: len(got) == 3, 10), got
    assert sorted(got) == [("after/fuzz", b"q0", 0), ("after/fuzz", b"q1", 1), ("after/fuzz", b"q2", 2)]
    witness.check()
    assert not broker_problems(fbroker), fbroker.log()
