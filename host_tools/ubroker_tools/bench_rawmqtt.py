"""MQTT over a raw socket for the benchmark's Python clients: the few packets they send,
encoded once up front (remaining lengths with the firmware's own codec), what a bench message
carries, and a blocking connect / a quiet close."""

import socket
import struct
import sys

from . import paths

# The firmware's codec, imported from firmware/ under CPython as profiles.py imports its config parser.
if paths.FIRMWARE not in sys.path:
    sys.path.insert(0, paths.FIRMWARE)
from ubroker.codec import decode_length, put_length  # noqa: E402,F401 (decode_length: for bench_bridge_load)

PAYLOAD = 16  # bytes per message, as loadgen's


def _packet(first, body):
    out = bytearray((first,))
    put_length(out, len(body))
    out += body
    return bytes(out)


def _str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">H", len(b)) + b


def connect_packet(client_id, clean=True, keepalive=60):
    body = b"\x00\x04MQTT\x04" + bytes((0x02 if clean else 0,)) + struct.pack(">H", keepalive) + _str(client_id)
    return _packet(0x10, body)


def subscribe_packet(flt, qos, pid=1):
    return _packet(0x82, struct.pack(">H", pid) + _str(flt) + bytes((qos,)))


def publish_packet(topic, payload, qos, pid=0):
    return _packet(0x30 | (qos << 1), _str(topic) + (struct.pack(">H", pid) if qos else b"") + payload)


def payload(run_id, pub, seq):
    """What each message carries, for the subscriber's checks: the run it belongs to, its
    publisher and its sequence number (padded to PAYLOAD bytes)."""
    return struct.pack(">BBI", run_id, pub, seq).ljust(PAYLOAD, b".")


def message_stream(run_id, pub, topic, count, qos):
    """All of one publisher's PUBLISH packets back to back, every one the same length, so that
    "the first k packets" is a slice of one bytes object. QoS 1 packet ids cycle 1..65535."""
    pkts = [publish_packet(topic, payload(run_id, pub, seq), qos, (seq % 65535) + 1) for seq in range(count)]
    return b"".join(pkts), len(pkts[0]) if pkts else 0


def open_client(port, client_id, clean=True, timeout=5.0):
    """Connect and read CONNACK (blocking); returns (socket made non-blocking, session present)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(connect_packet(client_id, clean))
    ack = b""
    while len(ack) < 4:
        got = s.recv(4 - len(ack))
        if not got:
            s.close()
            raise OSError("port %d closed the connection before CONNACK" % port)
        ack += got
    if ack[0] != 0x20 or ack[3] != 0:
        s.close()
        raise OSError("port %d refused %s: CONNACK %r" % (port, client_id, ack))
    s.setblocking(False)
    return s, bool(ack[2] & 1)


def close_quietly(s):
    try:
        s.setblocking(True)
        s.settimeout(1.0)
        s.sendall(b"\xe0\x00")  # DISCONNECT: a persistent session is then kept without a will
    except OSError:
        pass
    s.close()
