"""Packets longer than the shared read buffer, taken when max_packet_size is 0 (no limit
announced, Mosquitto's default; the unix profile's): each gets a buffer of its own, c.big,
filled read by read and handled once whole. Loaded at the first such packet, so a board with a
limit never holds this code."""

from .codec import Malformed, decode_length


def most(cfg):
    """The longest remaining length taken: max_queued_bytes, within the protocol's."""
    return min(cfg["max_queued_bytes"], 268435455)


def take(sv, c, pos, have, proto, rl, n):
    """rbuf[pos:have] into c.big, started first for a packet of n bytes (rl after its fixed
    header) when n is given. The position in rbuf after the packet, or -1: more to come, or
    its publisher paused (Server._packets carries on from there)."""
    if n:
        _start(sv, c, rl, n)
    big = c.big
    rl, p = decode_length(big, 1, len(big)) if len(big) > 1 else (-1, 0)
    if rl < 0:  # just started: its header is whole in rbuf[pos:] (Server._packets read it)
        rl, p = decode_length(sv.rbuf, pos + 1, have)
        p -= pos
    k = min(have - pos, p + rl - len(big))
    big.extend(sv.rmv[pos : pos + k])
    pos += k
    if len(big) < p + rl:
        return -1
    # The handlers slice the read buffer's memoryview (Server.rmv, and Protocol.rmv with its
    # views kept by offset): big's stands in for it while big is handled
    pr = sv.proto
    mv = sv.rmv
    sv.rmv = pr.rmv = memoryview(big)
    pr.views.clear()
    try:
        ok = proto.handle(c, big[0], big, p, p + rl)
    finally:
        sv.rmv = pr.rmv = mv
        pr.views.clear()
    if not ok:  # waits, whole, in c.big; what came after it is carried as usual
        sv._carry(c, pos, have)
        sv.pause(c)
        return -1
    c.big = None
    sv.broker.stats.msgs_in += 1
    return pos if c.sock is not None else -1


def _start(sv, c, rl, n):
    """c.big for a packet of n bytes: only after CONNECT (a connection that has not said who
    it is gets no large block of heap), and up to max_queued_bytes, the most the broker holds
    of messages (most()). Else the close, after DISCONNECT 0x97 Quota exceeded for a
    v5 client (an implementation's limit, MQTT 5.0 section 3.14.2.1): no limit was announced."""
    if c.sess is None or rl > most(sv.cfg):
        sv.broker.stats.hit("packet_size")
        if c.sess is None:
            raise Malformed("packet of %d bytes before CONNECT" % rl, 0x95)
        raise Malformed("packet of %d bytes exceeds max_queued_bytes" % rl, 0x97)
    big = bytearray(n)
    big[:] = b""  # its room kept: what arrives is appended
    c.big = big
