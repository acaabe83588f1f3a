"""The bridge benchmark's load generator, on raw non-blocking sockets in one poll loop:
publishers writing slices of a pre-encoded stream (pipelined QoS 1 with a window of PUBACKs, or
QoS 0 paced by what the subscriber got), and a subscriber parsing a whole recv per pass and
checking every delivery: count, order per publisher, duplicates and whether they carried DUP."""

import select
import struct
import time

from .bench_rawmqtt import decode_length

WINDOW = 64  # unacknowledged QoS 1 messages per publisher: enough that the publisher never waits on a round trip
QOS0_AHEAD = 1000  # QoS 0: messages a publisher may be ahead of what the subscriber got (as loadgen's pacing)


def _recv(conn, n):
    """What one recv on `conn.sock` got: nothing (None or b"") when no bytes were there yet or
    the connection is gone, and then `conn.closed` says why."""
    try:
        data = conn.sock.recv(n)
    except BlockingIOError:
        return None
    except OSError as e:
        conn.closed = str(e)
        return None
    if not data:
        conn.closed = "closed by the broker"
    return data


class Tally:
    """What one run's messages did at the subscriber: per publisher a byte per sequence number
    (seen or not), the highest seen (order), duplicates and whether those were flagged DUP."""

    def __init__(self, pubs, per_pub):
        self.expected = pubs * per_pub
        self.per_pub = per_pub
        self.seen = [bytearray(per_pub) for _ in range(pubs)]
        self.high = [-1] * pubs
        self.unique = 0
        self.duplicates = 0
        self.duplicates_flagged = 0
        self.out_of_order = 0
        self.malformed = 0
        self.qos0 = 0  # messages that arrived at QoS 0
        self.t_first = None
        self.t_last = None

    def add(self, pub, seq, dup, qos, now):
        if pub >= len(self.seen) or seq >= self.per_pub:
            self.malformed += 1
            return
        seen = self.seen[pub]
        if seen[seq]:
            self.duplicates += 1
            if dup:
                self.duplicates_flagged += 1
        else:
            seen[seq] = 1
            self.unique += 1
        if seq < self.high[pub]:
            self.out_of_order += 1
        else:
            self.high[pub] = seq
        if not qos:
            self.qos0 += 1
        if self.t_first is None:
            self.t_first = now
        self.t_last = now

    def missing(self):
        return self.expected - self.unique

    def summary(self):
        return {"expected": self.expected, "unique": self.unique, "lost": self.missing(),
                "duplicates": self.duplicates, "duplicates_flagged_dup": self.duplicates_flagged,
                "out_of_order": self.out_of_order, "malformed": self.malformed, "delivered_qos0": self.qos0}


class Subscriber:
    """A raw subscriber: each readable event takes one recv (up to 256 kB), parses every complete
    packet in it, and answers all its QoS 1 PUBLISHes with one send of PUBACKs."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.out = bytearray()  # PUBACKs not yet written
        self.tallies = {}  # run id (the payload's first byte) -> Tally
        self.stray = 0  # messages of no current run (e.g. the warm-up probe)
        self.malformed = 0
        self.closed = None

    def readable(self, now):
        data = _recv(self, 262144)
        if not data:
            return
        buf = self.buf
        buf += data
        n = len(buf)
        pos = 0
        out = self.out
        tallies = self.tallies
        unpack = struct.unpack_from
        while n - pos >= 2:
            h = buf[pos]
            rl = buf[pos + 1]
            hl = 2
            if rl & 0x80:  # a longer remaining length (never for the bench's own packets)
                rl, hl = decode_length(buf, pos + 1, n)
                if rl < 0:
                    break
                hl -= pos
            end = pos + hl + rl
            if end > n:
                break
            if h & 0xF0 == 0x30:
                qos = (h >> 1) & 3
                p = pos + hl
                p += 2 + ((buf[p] << 8) | buf[p + 1])
                if qos:
                    out += b"\x40\x02"
                    out += buf[p:p + 2]
                    p += 2
                if end - p >= 6:
                    run, pub, seq = unpack(">BBI", buf, p)
                    t = tallies.get(run)
                    if t is not None:
                        t.add(pub, seq, h & 0x08, qos, now)
                    else:
                        self.stray += 1
                else:
                    self.stray += 1
            elif h not in (0x90, 0xD0, 0x20):  # SUBACK, PINGRESP, CONNACK: nothing to check
                self.malformed += 1
            pos = end
        del buf[:pos]
        self.flush()

    def flush(self):
        if self.out:
            try:
                k = self.sock.send(self.out)
                del self.out[:k]
            except BlockingIOError:
                pass
            except OSError as e:
                self.closed = str(e)


class Publisher:
    """One publisher connection writing slices of its pre-encoded stream: at QoS 1 at most
    WINDOW messages beyond the PUBACKs it has read, at QoS 0 at most QOS0_AHEAD beyond the
    highest of its messages the subscriber has seen."""

    def __init__(self, sock, index, stream, pkt_len, count, qos):
        self.sock = sock
        self.index = index
        self.stream = memoryview(stream)
        self.pkt_len = pkt_len
        self.count = count
        self.qos = qos
        self.written = 0  # bytes of the stream handed to the kernel
        self.ack_bytes = 0  # bytes of PUBACKs read (4 each: QoS 1 publishers get nothing else)
        self.blocked = False
        self.closed = None

    def acked(self):
        return self.ack_bytes // 4

    def sent(self):
        return self.written // self.pkt_len

    def done_writing(self):
        return self.written >= len(self.stream)

    def pump(self, tally):
        if self.closed or self.done_writing():
            return
        if self.qos:
            allowed = min(self.count, self.acked() + WINDOW)
        else:
            allowed = min(self.count, tally.high[self.index] + 1 + QOS0_AHEAD)
        limit = allowed * self.pkt_len
        if limit <= self.written:
            return
        try:
            self.written += self.sock.send(self.stream[self.written:limit])
            self.blocked = False
        except BlockingIOError:
            self.blocked = True
        except OSError as e:
            self.closed = str(e)

    def readable(self):
        data = _recv(self, 65536)
        if data:
            self.ack_bytes += len(data)


def drive(pubs, sub, tally, stall, limit_s):
    """One poll loop over the publishers and the subscriber until every message arrived, or
    nothing arrived for `stall` s, or `limit_s` passed. Returns (start time, end reason)."""
    poller = select.poll()
    by_fd = {}
    masks = {}
    for p in pubs:
        by_fd[p.sock.fileno()] = p
        masks[p.sock.fileno()] = select.POLLIN
        poller.register(p.sock, select.POLLIN)
    sfd = sub.sock.fileno()
    by_fd[sfd] = sub
    masks[sfd] = select.POLLIN
    poller.register(sub.sock, select.POLLIN)
    start = time.monotonic()
    last_progress = start
    last_unique = 0
    end = "complete"
    while True:
        for p in pubs:
            p.pump(tally)
        for p in pubs + [sub]:
            fd = p.sock.fileno()
            want = select.POLLIN | (select.POLLOUT if (p.blocked if p is not sub else bool(sub.out)) else 0)
            if masks[fd] != want:
                masks[fd] = want
                poller.modify(fd, want)
        for fd, ev in poller.poll(50):
            o = by_fd[fd]
            now = time.monotonic()
            if o is sub:
                if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    sub.readable(now)
                if ev & select.POLLOUT:
                    sub.flush()
            else:
                if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    o.readable()
                if ev & select.POLLOUT:
                    o.blocked = False
        now = time.monotonic()
        # Done when everything arrived and, at QoS 1, every publisher also has all its PUBACKs
        # (the deliveries can overtake the last acknowledgements).
        if tally.unique >= tally.expected and all(p.done_writing() and (not p.qos or p.acked() >= p.count)
                                                  for p in pubs):
            break
        if tally.unique != last_unique:
            last_unique = tally.unique
            last_progress = now
        if sub.closed:
            end = "subscriber connection: " + sub.closed
            break
        broken = [p.closed for p in pubs if p.closed]
        if broken:
            end = "publisher connection: " + broken[0]
            break
        if now - last_progress > stall:
            end = "stalled %.0f s with %d of %d delivered" % (stall, tally.unique, tally.expected)
            break
        if now - start > limit_s:
            end = "time limit %.0f s reached with %d of %d delivered" % (limit_s, tally.unique, tally.expected)
            break
    for p in pubs + [sub]:
        try:
            poller.unregister(p.sock)
        except (KeyError, ValueError):
            pass
    return start, end

