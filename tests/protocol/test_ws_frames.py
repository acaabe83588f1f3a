"""WebSocket frames on the broker's WebSockets listener, over raw sockets (RFC 6455 section 5):
MQTT packets merged into one frame and split over several (MQTT-6.0.0-2), fragmented messages
with control frames between their fragments, headers split over reads, ping and pong, the
close handshake, and the frames that close the connection: unmasked (1002), text (1003,
MQTT-6.0.0-1), too large (1009) and malformed ones (1002). What the server sends: binary
frames, unmasked, FIN set, the 4-byte header form above 125 bytes."""

import os
import socket
import struct
import subprocess
import sys
import time

import pytest

import mqttraw as m
from conftest import ROOT, wait_for
from test_ws_handshake import WsRaw, frame, ws_broker

CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP = 2, 3, 4, 9, 13


@pytest.fixture
def wsb(broker_factory):
    return ws_broker(broker_factory)


def connected(b, cid):
    c = WsRaw(b.ws_port)
    assert c.connect(cid) == (0, 0)
    return c


def test_several_packets_in_one_frame(wsb):
    """CONNECT, SUBSCRIBE, PUBLISH and PINGREQ in a single frame: all are handled
    (MQTT-6.0.0-2)."""
    c = WsRaw(wsb.ws_port)
    c.send(m.connect("merged") + m.subscribe(1, ("ws/merged", 1)) + m.publish("ws/merged", b"one", qos=1, pid=5)
           + m.PINGREQ)
    got = [c.recv_packet(5).type for _ in range(5)]
    assert sorted(got) == sorted([CONNACK, SUBACK, PUBACK, PUBLISH, PINGRESP])


def test_one_packet_over_several_frames(wsb):
    """A PUBLISH cut into five binary messages, and one sent as a fragmented message (a
    binary frame without FIN and continuation frames): both arrive whole (MQTT-6.0.0-2,
    RFC 6455 section 5.4)."""
    sub = connected(wsb, "split-sub")
    sub.send(m.subscribe(1, ("ws/split", 0)))
    sub.expect(SUBACK)
    pub = connected(wsb, "split-pub")
    pkt = m.publish("ws/split", b"x" * 300)
    for i in range(0, len(pkt), 70):
        pub.send(pkt[i:i + 70])
        time.sleep(0.01)
    assert sub.expect(PUBLISH).payload == b"x" * 300
    pkt = m.publish("ws/split", b"y" * 200)
    parts = [pkt[:3], pkt[3:90], pkt[90:91], pkt[91:]]
    data = frame(parts[0], op=2, fin=False)
    for p in parts[1:-1]:
        data += frame(p, op=0, fin=False)
    data += frame(parts[-1], op=0, fin=True)
    for i in range(0, len(data), 33):  # and the frames' headers split over reads
        pub.send_raw(data[i:i + 33])
        time.sleep(0.005)
    assert sub.expect(PUBLISH).payload == b"y" * 200


def test_header_a_byte_at_a_time(wsb):
    c = WsRaw(wsb.ws_port)
    data = frame(m.connect("slow-header"), length=126) + frame(m.PINGREQ, length=127)
    for i in range(len(data)):
        c.send_raw(data[i:i + 1])
        time.sleep(0.002)
    assert c.expect(CONNACK).body == b"\x00\x00"
    c.expect(PINGRESP)


def test_ping_gets_pong_even_inside_a_fragmented_message(wsb):
    """A ping is answered with its payload (RFC 6455 section 5.5.2), also between the
    fragments of a message (section 5.4); a pong from the client is ignored."""
    c = connected(wsb, "pinger")
    c.send_raw(frame(b"hello", op=9))
    assert c.read_frame() == (True, 10, b"hello")
    pkt = m.PINGREQ
    c.send_raw(frame(pkt[:1], op=2, fin=False) + frame(b"", op=9) + frame(b"unasked", op=10)
               + frame(pkt[1:], op=0))
    assert c.read_frame() == (True, 10, b"")
    c.expect(PINGRESP)


def test_close_handshake(wsb):
    """The client's close frame is answered with a close frame carrying its code (RFC 6455
    section 5.5.1), then the server closes the TCP connection."""
    c = connected(wsb, "closer")
    c.send_raw(frame(struct.pack(">H", 1000) + b"bye", op=8))
    assert c.close_code() == 1000
    assert wait_for(lambda: "client closer connection closed by the client" in wsb.log())


def test_server_frames_are_binary_unmasked_with_long_header(wsb):
    """Every MQTT packet goes out in binary frames with FIN set (MQTT-6.0.0-1), unmasked
    (RFC 6455 section 5.1: WsRaw checks), a 1,000-byte PUBLISH with the 16-bit length form."""
    sub = connected(wsb, "long-sub")
    sub.send(m.subscribe(1, ("ws/long", 0)))
    sub.expect(SUBACK)
    pub = wsb.raw()
    pub.connect("long-pub")
    pub.send(m.publish("ws/long", b"z" * 1000))
    assert sub.expect(PUBLISH).payload == b"z" * 1000
    assert all(f[0] and f[1] == 2 for f in sub.frames)
    assert max(f[2] for f in sub.frames) > 1000


def test_will_of_a_websocket_client_that_vanishes(wsb):
    """A WebSocket client whose TCP connection ends without DISCONNECT has its will
    published, as on TCP (MQTT-3.1.2-8)."""
    watcher = wsb.raw()
    watcher.connect("will-watcher")
    watcher.send(m.subscribe(1, ("ws/will", 0)))
    watcher.expect(SUBACK)
    c = WsRaw(wsb.ws_port)
    c.send(m.connect("will-ws", will=("ws/will", b"gone", 0, False)))
    c.expect(CONNACK)
    c.sock.close()
    assert watcher.expect(PUBLISH).payload == b"gone"


@pytest.mark.parametrize("bad, code", [
    (frame(m.connect("unmasked"), mask=False), 1002),  # RFC 6455 section 5.1
    (frame(m.connect("text"), op=1), 1003),  # MQTT-6.0.0-1
    (frame(b"", op=2, length=3000), 1009),  # above max_packet_size 2048 (+ 5)
    (frame(b"x", op=0), 1002),  # a continuation frame with nothing to continue
    (frame(b"x", rsv=4), 1002),  # a reserved bit (section 5.2)
    (frame(b"x", op=3), 1002),  # a reserved data opcode
    (frame(b"x", op=11), 1002),  # a reserved control opcode
    (frame(b"p" * 126, op=9), 1002),  # a control frame over 125 bytes (section 5.5)
    (frame(b"p", op=9, fin=False), 1002),  # a fragmented control frame
    (frame(b"x", op=2, fin=False) + frame(b"y", op=2), 1002),  # a new message inside one
    (frame(b"\x03", op=8), 1002),  # a close frame of one byte (section 5.5.1)
    (frame(b"", op=2, length=1 << 63), 1002),  # a 64-bit length with its top bit set
], ids=["unmasked", "text", "too-large", "lone-continuation", "reserved-bit", "data-opcode-3", "control-opcode-11",
        "long-ping", "fragmented-ping", "message-inside-message", "one-byte-close", "length-top-bit"])
def test_bad_frames_close_with_their_code(wsb, bad, code):
    """After CONNECT, a frame the protocol forbids gets a close frame with its status code
    (RFC 6455 section 7.4.1) and the connection ends; the listener serves on."""
    c = connected(wsb, "bad-frames")
    c.send_raw(bad)
    assert c.close_code() == code
    assert connected(wsb, "after-bad").sock is not None


def test_server_side_close_sends_close_frame(wsb):
    """When the broker closes a connection for MQTT's reasons (a second CONNECT,
    MQTT-3.1.0-2), a close frame (1000) precedes the TCP close."""
    c = connected(wsb, "twice")
    c.send(m.connect("twice"))
    assert c.close_code() == 1000


def test_large_frame_within_limit_reaches_parser_limit(wsb):
    """A frame within the frame limit carrying a packet above max_packet_size is refused
    by the MQTT parser, as on TCP: the connection closes."""
    c = connected(wsb, "big")
    c.send(m.publish("ws/big", b"q" * 2046)[:2050])
    assert c.closed(5)


def test_many_small_frames_under_load(wsb):
    """200 QoS 1 publishes, each in its own frame and some frames holding two: every PUBACK
    comes back in order."""
    c = connected(wsb, "burst")
    pkts = [m.publish("ws/burst", b"%d" % i, qos=1, pid=i) for i in range(1, 201)]
    data = b"".join(frame(pkts[i]) if i % 3 else frame(pkts[i] + pkts[i + 1]) for i in range(0, 200, 1)
                    if i % 3 != 1)
    c.send_raw(data)
    c.sock.settimeout(5)
    pids = [c.expect(PUBACK).pid for _ in range(200)]
    assert pids == list(range(1, 201))


def test_socket_closed_mid_frame(wsb):
    c = connected(wsb, "midframe")
    c.send_raw(frame(m.publish("ws/x", b"abc" * 20))[:20])
    c.sock.shutdown(socket.SHUT_WR)
    assert c.closed(5)
    assert wait_for(lambda: "client midframe connection closed by the client" in wsb.log())


PARTIAL = r'''
import sys

from ubroker.ws_frame import WsSock


class Tight:
    """A socket with room for a few bytes a call, now and then none (None, as a full
    non-blocking socket gives)."""

    def __init__(self):
        self.sent = bytearray()
        self.calls = 0

    def write(self, b):
        self.calls += 1
        if self.calls % 5 == 0:
            return None
        k = min(len(b), 1 + self.calls % 3)
        self.sent.extend(bytes(b)[:k])
        return k


WsSock.limit = 1 << 20
if len(sys.argv) > 1:  # as Ws sets it: header and payload copied into one write where they fit
    WsSock.sc = bytearray(int(sys.argv[1]))
    WsSock.sn = int(sys.argv[1]) - 4
w = WsSock(Tight())
w.h[16] = 1  # open (ws_frame._FL, _OPEN)
# What the server does: write what is waiting; keep what was not taken; add more behind it.
pending = bytearray(b"a" * 100)
more = [b"b" * 300, b"c" * 5, b"d" * 70000]
for _ in range(200000):
    if more and len(pending) < 50:
        pending.extend(more.pop(0))
    if not pending:
        break
    n = w.write(pending)
    pending[:n] = b""
print(bytes(w.s.sent).hex())
'''


@pytest.mark.parametrize("scratch", [None, 1024], ids=["two_writes", "one_write"])
def test_partial_writes_continue_the_same_frame(tmp_path, scratch):
    """A socket that takes a few bytes at a time (and sometimes none) cuts frame headers and
    payloads: the next write continues the same frame, and what arrives is whole binary frames,
    FIN set, carrying exactly the bytes given, the longest cut at 65,535 (RFC 6455 section
    5.2). Run in the MicroPython unix port on ws_frame.WsSock, with the header written on its
    own and (one_write) copied with the payload into a scratch buffer where that fits."""
    script = tmp_path / "partial.py"
    script.write_text(PARTIAL)
    env = dict(os.environ)
    env["MICROPYPATH"] = os.environ.get("UBROKER_FIRMWARE") or os.path.join(ROOT, "firmware")
    r = subprocess.run([os.path.join(os.path.dirname(sys.executable), "micropython"), str(script)]
                       + ([str(scratch)] if scratch else []),
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    wire = bytes.fromhex(r.stdout.strip())
    payload, lengths = b"", []
    while wire:
        assert wire[0] == 0x82 and not wire[1] & 0x80
        n, at = wire[1], 2
        if n == 126:
            n, at = struct.unpack(">H", wire[2:4])[0], 4
        assert n != 127
        lengths.append(n)
        payload += wire[at:at + n]
        wire = wire[at + n:]
    assert payload == b"a" * 100 + b"b" * 300 + b"c" * 5 + b"d" * 70000
    assert max(lengths) == 65535


UNMASK = r'''
import random

import ubroker.ws_frame as wf
from ubroker.ws_frame import WsSock

random.seed(16)


class Pieces:
    """A socket that hands out the wire in pieces of random length."""

    def __init__(self, wire):
        self.wire = wire
        self.at = 0

    def readinto(self, buf):
        k = min(len(self.wire) - self.at, random.randint(1, 300), len(buf))
        buf[:k] = self.wire[self.at : self.at + k]
        self.at += k
        return k


def masked(payload):
    key = bytes(random.getrandbits(8) for _ in range(4))
    n = len(payload)
    head = bytes([0x82]) + (bytes([0x80 | n]) if n < 126 else bytes([0xFE, n >> 8, n & 255]))
    return head + key + bytes(x ^ key[i & 3] for i, x in enumerate(payload))


payloads = [bytes(random.getrandbits(8) for _ in range(random.randint(1, 700))) for _ in range(60)]
wire = b"".join(masked(p) for p in payloads)
WsSock.limit = 4096
for name, fn in (("machine", wf._unmask), ("bytecode", None)):
    wf._unmask = fn
    w = WsSock(Pieces(wire))
    w.h[16] = 1  # open (ws_frame._FL, _OPEN)
    buf = bytearray(512)
    got = bytearray()
    while w.s.at < len(wire):
        n = w.readinto(buf) or 0
        got.extend(buf[:n])
    print(name, fn is not None, int(bytes(got) == b"".join(payloads)))
'''


def test_unmask_in_machine_code_and_in_bytecode_agree(tmp_path):
    """The payloads of 60 frames (1 to 700 bytes, random keys, read in random pieces that cut
    headers, keys and payloads) come out right both through ws_unmask.py's viper code (which
    this unix port compiles) and through ws_frame.py's bytecode loop, the fallback of a port
    without a native emitter. Run in the MicroPython unix port."""
    script = tmp_path / "unmask.py"
    script.write_text(UNMASK)
    env = dict(os.environ)
    env["MICROPYPATH"] = os.environ.get("UBROKER_FIRMWARE") or os.path.join(ROOT, "firmware")
    r = subprocess.run([os.path.join(os.path.dirname(sys.executable), "micropython"), str(script)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["machine", "True", "1", "bytecode", "False", "1"], r.stdout
