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


def fanin(sv, pubs, sub, batch, n, window, read, write):
    """The fan-in itself: each publisher writes batch(i, seq) (window messages), the loop turns
    until the subscriber has them all and has acknowledged them, until n arrived. read(c) and
    write(c, b) are the client side's socket calls. Returns (messages, us in all, us in the
    broker's passes)."""
    rx = bytearray()
    got = sent = seq = 0
    in_broker = 0
    t0 = time.ticks_us()
    while got < n:
        for i, p in enumerate(pubs):
            write(p, batch(i, seq))
        seq += window
        sent += len(pubs) * window
        while got < sent:
            a = time.ticks_us()
            sv.one_pass()
            in_broker += time.ticks_diff(time.ticks_us(), a)
            d = read(sub)
            if d:
                acks, k, rx = pubacks(rx + d)
                got += k
                write(sub, acks)
            for p in pubs:
                read(p)
        a = time.ticks_us()
        sv.one_pass()  # the last PUBACKs to the publishers
        in_broker += time.ticks_diff(time.ticks_us(), a)
        for p in pubs:
            read(p)
    return got, time.ticks_diff(time.ticks_us(), t0), in_broker
