"""test_fuzz.py's fuzzing through a WebSockets listener, with its own strategies (imported,
not copied): random bytes and mutated valid packets, carried in binary frames and cut into
several frames at random points (MQTT-6.0.0-2), and random bytes on the wire right after the
opening handshake, which the frame reader itself must survive (RFC 6455 section 5). Whatever
arrives, the broker closes that connection once the client ended its side, a witness pair of
TCP clients still does a round trip, and after the run paho over a WebSocket and over TCP
works and the log has no traceback. One broker serves the module."""

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import free_port, wait_for
from robust_util import Witness, broker_problems, module_broker
from test_fuzz import CUTS, FUZZ, finish, mutated, send_chunks
from test_ws_handshake import WsRaw, frame

@pytest.fixture(scope="module")
def fbroker(tmp_path_factory):
    port = free_port()
    for b in module_broker(tmp_path_factory, "fuzz-ws", config="listener 1883 127.0.0.1\nlistener %d 127.0.0.1\n"
                           "protocol websockets\n" % port):
        b.ws_port = port
        yield b


@pytest.fixture(scope="module")
def witness(fbroker):
    return Witness(fbroker, "fws")


def session(broker, witness, data, cuts, connect_first):
    raw = WsRaw(broker.ws_port)
    try:
        if connect_first:
            assert raw.connect("fuzzer-ws", keepalive=60) == (0, 0)
        send_chunks(raw, data, cuts)  # each chunk its own binary frame
    finally:
        closed = finish(raw)
    assert closed, "the broker kept the connection open after the client's end of stream"
    assert broker.alive(), broker.log()
    witness.check()


@FUZZ
@given(data=st.binary(min_size=1, max_size=600), cuts=CUTS, connect_first=st.booleans())
def test_random_bytes_in_frames(fbroker, witness, data, cuts, connect_first):
    session(fbroker, witness, data, cuts, connect_first)


@FUZZ
@given(data=mutated(), cuts=CUTS, connect_first=st.booleans())
def test_mutated_packets_in_frames(fbroker, witness, data, cuts, connect_first):
    session(fbroker, witness, data, cuts, connect_first)


@st.composite
def wire(draw):
    """Frames as a client would send them (a CONNECT, then mutated packets, some fragmented),
    then bytes flipped, dropped or inserted anywhere in the byte stream, headers included."""
    data = bytearray(frame(draw(mutated())))
    if draw(st.booleans()):
        pkt = draw(mutated())
        k = draw(st.integers(0, len(pkt)))
        data += frame(pkt[:k], fin=False) + frame(b"", op=9) + frame(pkt[k:], op=0)
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip" and i < len(data):
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=12))
        else:
            del data[i:i + draw(st.integers(1, 6))]
    return bytes(data)


@FUZZ
@given(data=wire(), cuts=CUTS)
def test_mutated_frames_on_the_wire(fbroker, witness, data, cuts):
    """The frame reader with damaged headers, masks, lengths and opcodes, split at random
    points over the TCP stream."""
    raw = WsRaw(fbroker.ws_port)
    try:
        last = 0
        for c in sorted(set(x % (len(data) + 1) for x in cuts)) + [len(data)]:
            if c > last:
                try:
                    raw.send_raw(data[last:c])
                except OSError:  # the broker closed it already
                    break
                last = c
    finally:
        closed = finish(raw)
    assert closed, "the broker kept the connection open after the client's end of stream"
    assert fbroker.alive(), fbroker.log()
    witness.check()


def test_broker_serves_normally_after_fuzzing(fbroker, witness):
    """After the fuzzing (same broker): paho over a WebSocket gets what paho over TCP
    publishes at each QoS, and the log has no traceback."""
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="after-ws-fuzz", transport="websockets")
    sub.ws_set_options(path="/mqtt")
    got = []
    granted = []
    sub.on_message = lambda c, u, m: got.append((m.payload, m.qos))
    sub.on_subscribe = lambda c, u, mid, codes, props: granted.extend(x.value for x in codes)
    sub.connect("127.0.0.1", fbroker.ws_port, 30)
    sub.loop_start()
    try:
        assert wait_for(sub.is_connected, 10)
        sub.subscribe("after/wsfuzz", 2)
        assert wait_for(lambda: granted == [2], 10), granted
        pub = fbroker.client()
        for q in (0, 1, 2):
            pub.publish("after/wsfuzz", b"q%d" % q, qos=q).wait_for_publish(10)
        assert wait_for(lambda: len(got) == 3, 10), got
        assert sorted(got) == [(b"q0", 0), (b"q1", 1), (b"q2", 2)]
    finally:
        sub.disconnect()
        sub.loop_stop()
    witness.check()
    assert not broker_problems(fbroker), fbroker.log()
