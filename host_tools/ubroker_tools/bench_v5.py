"""The MQTT 5 fan-ins of `ubroker bench`: PUBS publishers at QoS 1, each with WINDOW messages
unacknowledged at most, all at protocol level 5; every PUBLISH carries a user property, so the
broker's property path is measured, not only the v5 framing. Three scenarios, one loop:
  fanin1v5       to one subscriber of bench/v5/#
  fanin1v5alias  the same, each publisher naming its topic once with a Topic Alias (0x23) and
                 then sending an empty topic and the alias only (the broker's CONNACK Topic
                 Alias Maximum must allow one: a 0 there is a failure, with that reason)
  fanin1shared   to a shared subscription $share/bench/bench/v5/# of MEMBERS subscribers
bench/loadgen speaks 3.1.1 only; this client is CPython in one selector loop, so a broker
faster than it is measured at the client's pace (it moved about 170,000 msg/s through
Mosquitto here, 30,000 through ubroker's unix profile). Verifies as loadgen does: every
acknowledged message arrives, none twice (across the members of a shared subscription too),
each publisher's in order (per member: the order across members is not defined), on its
publisher's topic (an alias resolved to the wrong topic counts as malformed)."""

import selectors
import socket
import struct
import time

from .bench_rawmqtt import _packet, _str, decode_length

PUBS = 8
WINDOW = 20
MEMBERS = 2  # subscribers in fanin1shared's group (bench_report.py's row label says 2)
TOPIC = b"bench/v5/%d"
FILTER = b"bench/v5/#"
SHARE = b"$share/bench/"
USER = b"\x26" + _str(b"bench") + _str(b"v5")  # a User Property on every message
ALIAS = 1  # each publisher's Topic Alias (aliases are per connection: the same number on each)

# CONNACK property id -> its value's length (0: a UTF-8 string or binary data, 2-byte length
# first; -1: a string pair), MQTT 5.0 section 3.2.2.3
_PROP_LEN = {0x11: 4, 0x12: 0, 0x13: 2, 0x15: 0, 0x16: 0, 0x1A: 0, 0x1C: 0, 0x1F: 0, 0x21: 2,
             0x22: 2, 0x24: 1, 0x25: 1, 0x26: -1, 0x27: 4, 0x28: 1, 0x29: 1, 0x2A: 1}


def _connect5(cid):
    return _packet(0x10, b"\x00\x04MQTT\x05\x02\x00\x3c\x00" + _str(cid))


def _props(alias):
    p = USER + (b"\x23" + struct.pack(">H", alias) if alias else b"")
    return bytes((len(p),)) + p


def _publish5(topic, pub, seq, props):
    pid = seq % 65535 + 1
    return _packet(0x32, _str(topic) + struct.pack(">H", pid) + props + struct.pack(">BI", pub, seq).ljust(16, b"."))


def connack_props(body):
    """{property id: value} of a v5 CONNACK's body (ints; bytes for strings; user properties
    left out). Raises ValueError on a property it does not know."""
    n, p = decode_length(body, 2, len(body))
    end = p + n
    out = {}
    while p < end:
        pid = body[p]
        p += 1
        ln = _PROP_LEN.get(pid)
        if ln is None:
            raise ValueError("CONNACK property 0x%02x unknown" % pid)
        if ln > 0:
            out[pid] = int.from_bytes(body[p:p + ln], "big")
            p += ln
            continue
        for _ in range(2 if ln < 0 else 1):
            sl = (body[p] << 8) | body[p + 1]
            if ln == 0:
                out[pid] = bytes(body[p + 2:p + 2 + sl])
            p += 2 + sl
    return out


def _recv_packet(s, who):
    head = s.recv(2)
    if len(head) < 2:
        raise OSError("%s: the broker closed the connection" % who)
    body = b""
    while len(body) < head[1]:  # CONNACK and SUBACK here are below 128 bytes
        got = s.recv(head[1] - len(body))
        if not got:
            raise OSError("%s: the broker closed the connection" % who)
        body += got
    return head[0], body


def _open(port, cid, sub=None):
    """Connect (and subscribe to `sub` at QoS 1); returns (socket, CONNACK properties)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(_connect5(cid))
    b0, body = _recv_packet(s, cid)
    if b0 != 0x20:
        raise OSError("%s: no CONNACK" % cid)
    if body[1] != 0:
        raise OSError("%s: CONNACK reason 0x%02x" % (cid, body[1]))
    props = connack_props(body)
    if sub is not None:
        s.sendall(_packet(0x82, b"\x00\x01\x00" + _str(sub) + b"\x01"))
        b0, body = _recv_packet(s, cid)
        if b0 != 0x90 or body[-1] >= 0x80:
            raise OSError("%s: subscribing to %s refused: %s" % (cid, sub.decode(), body.hex()))
    # Blocking writes (a window is about 1 kB, far below the socket's buffer); reads only
    # when the selector says there is something
    s.settimeout(10)
    return s, props


def _packets(buf):
    """(first byte, body) of each whole packet at the start of buf, and what is left."""
    out = []
    pos = 0
    n = len(buf)
    while n - pos >= 2:
        rl, p = decode_length(buf, pos + 1, n)
        if rl < 0 or p + rl > n:
            break
        out.append((buf[pos], buf[p:p + rl]))
        pos = p + rl
    return out, buf[pos:]


def fanin_v5(port, duration, drain=10.0, alias=False, members=0):
    """Run the fan-in: to one subscriber of FILTER (members 0) or to `members` subscribers of
    SHARE + FILTER; with `alias`, the publishers' topics by Topic Alias. Returns loadgen-like
    figures (rate in msg/s delivered, sent, acked, unique, lost_acked, duplicates,
    out_of_order, malformed, end; per_member for a shared subscription)."""
    flt = SHARE + FILTER if members else FILTER
    nsub = members or 1
    subs = [_open(port, b"v5-sub-%d" % m, flt)[0] for m in range(nsub)]
    pubs = []
    for i in range(PUBS):
        s, props = _open(port, b"v5-pub-%d" % i)
        pubs.append(s)
        if alias and props.get(0x22, 0) < ALIAS:
            for x in pubs + subs:
                x.close()
            raise OSError("the broker's CONNACK Topic Alias Maximum is %d: no topic alias allowed"
                          % props.get(0x22, 0))
    topics = [TOPIC % i for i in range(PUBS)]
    # What each publisher sends: with an alias, its first PUBLISH names the topic and sets the
    # alias, the others carry an empty topic and the alias only.
    props_ = _props(ALIAS if alias else 0)
    wire = [b"" if alias else t for t in topics]
    sel = selectors.DefaultSelector()
    for m, s in enumerate(subs):
        sel.register(s, selectors.EVENT_READ, -1 - m)
    for i, s in enumerate(pubs):
        sel.register(s, selectors.EVENT_READ, i)
    rx = {k: b"" for k in range(-nsub, PUBS)}
    seq = [0] * PUBS
    inflight = [0] * PUBS
    acked = 0
    last = [[-1] * PUBS for _ in range(nsub)]  # per member: each publisher's last sequence number
    seen = [bytearray() for _ in range(PUBS)]  # shared: which sequence numbers arrived, anywhere
    per_member = [0] * nsub
    got = dup = disorder = bad = 0
    t0 = time.time()
    stop = t0 + duration
    t_last = t0
    idle_since = None
    end = "complete"
    while True:
        now = time.time()
        sending = now < stop
        if sending:
            for i, s in enumerate(pubs):
                k = WINDOW - inflight[i]
                if k > 0:
                    first = seq[i]
                    pk = [_publish5(wire[i], i, first + j, props_) for j in range(k)]
                    if alias and first == 0:
                        pk[0] = _publish5(topics[i], i, 0, props_)
                    s.sendall(b"".join(pk))
                    seq[i] += k
                    inflight[i] += k
                    if members:
                        seen[i].extend(bytes(k))
        elif got >= acked and not any(inflight):
            break
        events = sel.select(0.05)
        if not events and not sending:
            idle_since = idle_since or now
            if now - idle_since > 5 or now - stop > drain:
                end = "stalled"
                break
            continue
        idle_since = None
        for key, _ in events:
            who = key.data
            data = key.fileobj.recv(65536)
            if not data:
                raise OSError("the broker closed a v5 bench client")
            pkts, rx[who] = _packets(rx[who] + data)
            if who >= 0:
                for b0, _body in pkts:
                    if b0 >> 4 == 4:  # PUBACK, with or without a reason code
                        inflight[who] -= 1
                        acked += 1
                continue
            m = -1 - who
            lm = last[m]
            acks = []
            for b0, body in pkts:
                if b0 >> 4 != 3:
                    continue
                tl = (body[0] << 8) | body[1]
                p = 2 + tl
                pid = body[p:p + 2]
                n, q = decode_length(body, p + 2, len(body))
                pub, s_ = struct.unpack_from(">BI", body, q + n)
                acks.append(b"\x40\x02" + pid)
                if pub >= PUBS or body[2:p] != topics[pub]:
                    bad += 1
                    continue
                got += 1
                per_member[m] += 1
                if members:
                    if seen[pub][s_]:
                        dup += 1
                        continue
                    seen[pub][s_] = 1
                    if s_ < lm[pub]:
                        disorder += 1
                    else:
                        lm[pub] = s_
                    continue
                if s_ <= lm[pub]:
                    dup += 1
                elif s_ != lm[pub] + 1:
                    disorder += 1
                if s_ > lm[pub]:
                    lm[pub] = s_
            if acks:
                key.fileobj.sendall(b"".join(acks))
                t_last = time.time()
    for s in pubs + subs:
        s.close()
    sent = sum(seq)
    span = max(t_last - t0, 1e-6)
    out = {"rate": round((got - dup) / span), "sent": sent, "acked": acked, "unique": got - dup,
           "lost_acked": max(0, acked - (got - dup)), "duplicates": dup, "out_of_order": disorder,
           "malformed": bad, "qos": 1, "end": end}
    if members:
        out["per_member"] = per_member
    return out
