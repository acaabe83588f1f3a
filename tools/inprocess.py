"""The pieces the in-process fan-in drivers share (tools/fanin_v5_inprocess.py,
tools/fanin_ws_inprocess.py): the real Server started on the unix board's profile with the
given listeners in one MicroPython process, its loop turned by hand, and MQTT packet bytes."""

import os
import struct
import time

from ubroker import codec
from ubroker.config import load, resolve


def start(listeners, protocols=None):
    cfg = resolve(load(os.getcwd() + "/boards/unix.conf"), {"listener": listeners})
    if protocols:
        cfg["protocols"] = protocols
    cfg["verbose"] = False
    cfg["sys_interval"] = 0
    from ubroker.server import Server

    sv = Server(cfg, lambda m: None)
    sv.listen()
    sv.running = True
    sv.next_tick = time.ticks_add(time.ticks_ms(), 1000)
    return sv


def s_(x):
    return struct.pack(">H", len(x)) + x


def packet(b0, body):
    o = bytearray((b0,))
    codec.put_length(o, len(body))
    return bytes(o) + body


def pubacks(rx):
    """For the QoS 1 PUBLISHes complete in rx: (their PUBACKs, how many, the bytes left)."""
    acks = bytearray()
    n = pos = 0
    while len(rx) - pos >= 2:
        rl, q = codec.decode_length(rx, pos + 1, len(rx))
        if rl < 0 or q + rl > len(rx):
            break
        if rx[pos] >> 4 == 3:
            tl = (rx[q] << 8) | rx[q + 1]
            acks += b"\x40\x02" + rx[q + 2 + tl : q + 4 + tl]
            n += 1
        pos = q + rl
    return acks, n, rx[pos:]
