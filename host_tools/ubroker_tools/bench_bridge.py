"""The bridge part of `ubroker bench` (scenario `bridge`): ubroker's bridge to an upstream
Mosquitto side by side with Mosquitto's own bridge to the same kind of upstream.

This module owns:
  - the two bridge figures and how they are measured:
      forward  local publishers' QoS 1 (and QoS 0) messages reaching a subscriber on the upstream
               Mosquitto through the bridge (`topic bench/# out 1`), in messages/s;
      drain    N QoS 1 messages queued while the upstream is down (nothing listening on its port),
               then the upstream started: seconds from its start to the last of them arriving;
  - the processes of those runs (an upstream mosquitto, the local ubroker or mosquitto with its
    bridge), each started here on a free loopback port and stopped by its pid, even on failure;
  - a raw-socket load generator with pre-encoded packets (pipelined QoS 1 publishers, a
    subscriber parsing a whole recv per pass) that verifies every delivery: count, order per
    publisher, duplicates (and whether they carried DUP);
  - the "Bridge" table of the report (render()) and the failure check of ubroker's rows.

bench.py only calls run() when the `bridge` scenario is chosen and puts the result under
report["bridge"]."""

import getpass
import os
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

from .bench import children, cpu_seconds, free_port

TOPIC_FILTER = "bench/#"
WINDOW = 64  # unacknowledged QoS 1 messages per publisher: enough that the publisher never waits on a round trip
QOS0_AHEAD = 1000  # QoS 0: messages a publisher may be ahead of what the subscriber got (as loadgen's pacing)
PUBLISHERS = 4
PAYLOAD = 16  # bytes, as the rest of the benchmark
STALL = 10.0  # seconds without a delivery that end a QoS 1 run (what is missing is then reported lost)
STALL_QOS0 = 1.5
KINDS = ("mosquitto", "ubroker")  # whose bridge; Mosquitto first: it is the reference of the ratios


# ------------------------------------------------------------------ MQTT packets, pre-encoded

def _remaining(n):
    out = bytearray()
    while True:
        d = n & 0x7F
        n >>= 7
        out.append(d | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def connect_packet(client_id, clean=True, keepalive=60):
    body = b"\x00\x04MQTT\x04" + bytes((0x02 if clean else 0,)) + struct.pack(">H", keepalive) + _str(client_id)
    return b"\x10" + _remaining(len(body)) + body


def subscribe_packet(flt, qos, pid=1):
    body = struct.pack(">H", pid) + _str(flt) + bytes((qos,))
    return b"\x82" + _remaining(len(body)) + body


def publish_packet(topic, payload, qos, pid=0):
    body = _str(topic) + (struct.pack(">H", pid) if qos else b"") + payload
    return bytes((0x30 | (qos << 1),)) + _remaining(len(body)) + body


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


# ------------------------------------------------------------------ what arrives

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
        try:
            data = self.sock.recv(262144)
        except BlockingIOError:
            return
        except OSError as e:
            self.closed = str(e)
            return
        if not data:
            self.closed = "closed by the broker"
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
                rl &= 0x7F
                shift = 7
                while True:
                    if pos + hl >= n:
                        rl = -1
                        break
                    b = buf[pos + hl]
                    hl += 1
                    rl |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                if rl < 0:
                    break
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
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as e:
            self.closed = str(e)
            return
        if not data:
            self.closed = "closed by the broker"
            return
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


# ------------------------------------------------------------------ processes

def own_cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def mosquitto_exe():
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)


def ubroker_exe():
    exe = os.path.join(os.path.dirname(sys.executable), "ubroker")
    return exe if os.path.exists(exe) else (shutil.which("ubroker") or exe)


class Proc:
    """A broker process this module started: its own session (process group), its log in its
    folder, stopped with SIGTERM (SIGKILL to its group after 10 s) by its pid."""

    def __init__(self, name, cmd, work, port):
        self.name, self.cmd, self.work, self.port = name, cmd, work, port
        self.logpath = os.path.join(work, name + ".log")
        self.proc = None

    def start(self, wait_listening=True):
        self.log = open(self.logpath, "a")
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=self.work, start_new_session=True)
        if wait_listening:
            self.wait_listening()
        return self

    def wait_listening(self, timeout=30.0, step=0.02):
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("%s did not start listening on %d: %s" % (self.name, self.port, self.log_tail()))
                time.sleep(step)

    def worker_pid(self):
        """The process doing the broker's work: `ubroker run` execs or spawns micropython."""
        kids = children(self.proc.pid)
        return kids[0] if kids else self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=600):
        try:
            with open(self.logpath, errors="replace") as f:
                return f.read()[-n:].strip()
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None:
            self.log.close()


def mosquitto_conf(work, port, persistent, bridge_to=None):
    """A mosquitto config: lossless (max_queued_messages 0, or it drops past 1000 queued), with
    `user` set to who we are (as root it would otherwise switch to user mosquitto and could
    not write its persistence file here), and a bridge section when `bridge_to` is a port."""
    lines = ["# written by ubroker bench (bridge)",
             "listener %d 127.0.0.1" % port,
             "allow_anonymous true",
             "user %s" % getpass.getuser(),
             "max_queued_messages 0",
             "persistence %s" % ("true" if persistent else "false"),
             "persistence_location %s/" % work,
             "log_dest stderr",
             "log_type error", "log_type warning", "log_type notice"]
    if bridge_to:
        # Mosquitto's bridge in the same shape as ubroker's: QoS 1 out, a kept upstream session,
        # reconnect after at most 1 s. Its window to upstream is max_inflight_messages (20), as ubroker's.
        lines += ["connection up",
                  "address 127.0.0.1:%d" % bridge_to,
                  "remote_clientid mosquitto.bench",
                  "cleansession false",
                  "restart_timeout 1 1",
                  "notifications false",
                  "topic %s out 1" % TOPIC_FILTER]
    path = os.path.join(work, "mosquitto.conf")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def ubroker_conf(work, up_port, queued):
    """ubroker with room for `queued` messages waiting for the uplink: the bridge's queue, the
    bytes all queues may hold (224 B + topic + payload each on 64-bit), the store's budget."""
    per_msg = 224 + 64 + PAYLOAD
    lines = ["# written by ubroker bench (bridge)",
             "max_queued_bytes %d" % max(16 << 20, 2 * queued * per_msg),
             "store_size %d" % max(16 << 20, 4 * queued * per_msg),
             "bridge_max_queued_messages %d" % max(1000, queued),
             "connection up",
             "address 127.0.0.1:%d" % up_port,
             "remote_clientid ubroker.bench",
             "restart_timeout 1 1",
             "topic %s out 1" % TOPIC_FILTER]
    path = os.path.join(work, "ubroker.conf")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def start_upstream(work, port, persistent, wait=True):
    os.makedirs(work, exist_ok=True)
    return Proc("upstream-mosquitto", [mosquitto_exe(), "-c", mosquitto_conf(work, port, persistent)],
                work, port).start(wait)


def start_local(kind, work, port, up_port, queued, heap):
    """The broker whose bridge is measured, on `port`, bridging to 127.0.0.1:`up_port`."""
    os.makedirs(work, exist_ok=True)
    if kind == "ubroker":
        cmd = [ubroker_exe(), "run", "--board", "unix", "--port", str(port), "--config",
               ubroker_conf(work, up_port, queued), "--data", os.path.join(work, "data"), "--heap", heap]
    else:
        cmd = [mosquitto_exe(), "-c", mosquitto_conf(work, port, False, bridge_to=up_port)]
    return Proc(kind, cmd, work, port).start()


# ------------------------------------------------------------------ the scenarios

def wait_bridge_up(local_port, sub, timeout=30.0):
    """Publish a probe (QoS 1) locally every 0.2 s until the upstream subscriber has one: the
    bridge is then connected and subscribed. The probe's payload belongs to no run."""
    s, _ = open_client(local_port, "bench-probe")
    deadline = time.monotonic() + timeout
    pid = 0
    try:
        while time.monotonic() < deadline:
            pid += 1
            s.setblocking(True)
            s.sendall(publish_packet("bench/probe", b"\xff" * PAYLOAD, 1, pid))
            s.setblocking(False)
            end = time.monotonic() + 0.2
            while time.monotonic() < end:
                r, _, _ = select.select([sub.sock], [], [], 0.05)
                if r:
                    sub.readable(time.monotonic())
                    if sub.stray:
                        return True
                    if sub.closed:
                        return False
        return False
    finally:
        close_quietly(s)


def forward_run(local, upstream, sub, run_id, qos, count, limit_s):
    """PUBLISHERS publishers on the local broker, `count` messages in all, to bench/fwd<run>/<i>;
    the upstream subscriber (bench/#) verifies them."""
    per_pub = max(1, count // PUBLISHERS)
    tally = Tally(PUBLISHERS, per_pub)
    sub.tallies[run_id] = tally
    pubs = []
    try:
        for i in range(PUBLISHERS):
            stream, plen = message_stream(run_id, i, "bench/fwd%d/%d" % (run_id, i), per_pub, qos)
            s, _ = open_client(local.port, "bench-pub-%d-%d" % (run_id, i))
            pubs.append(Publisher(s, i, stream, plen, per_pub, qos))
        lpid, upid = local.worker_pid(), upstream.worker_pid()
        c0 = (cpu_seconds(lpid), cpu_seconds(upid), own_cpu_seconds())
        start, end = drive(pubs, sub, tally, STALL if qos else STALL_QOS0, limit_s)
        wall = (tally.t_last or time.monotonic()) - start
        c1 = (cpu_seconds(lpid), cpu_seconds(upid), own_cpu_seconds())
        span = time.monotonic() - start  # what the CPU figures are shares of
        if qos:
            time.sleep(0.3)  # late duplicates would show here
            if select.select([sub.sock], [], [], 0)[0]:
                sub.readable(time.monotonic())
    finally:
        for p in pubs:
            close_quietly(p.sock)
    res = {"qos": qos, "sent": sum(p.sent() for p in pubs), "end": end,
           "seconds": round(wall, 3), "rate": round(tally.unique / wall, 1) if wall > 0 and tally.unique else None}
    if qos:
        res["acked"] = sum(p.acked() for p in pubs)
    res.update(tally.summary())
    for key, a, b in (("local_cpu_pct", c0[0], c1[0]), ("upstream_cpu_pct", c0[1], c1[1]),
                      ("loadgen_cpu_pct", c0[2], c1[2])):
        res[key] = round(100.0 * (b - a) / span, 1) if a is not None and b is not None and span > 0 else None
    return res


def scenario_forward(kind, out, opts):
    """The forwarding rate through `kind`'s bridge: QoS 1, then QoS 0, on one pair of brokers."""
    base = os.path.join(out, "bridge-%s-forward-%d" % (kind, os.getpid()))
    up_port, local_port = free_port(), free_port()
    upstream = local = sub = None
    res = {}
    try:
        upstream = start_upstream(os.path.join(base, "upstream"), up_port, persistent=False)
        local = start_local(kind, os.path.join(base, kind), local_port, up_port, 1000, opts["heap"])
        s, _ = open_client(up_port, "bench-up-sub")
        sub = Subscriber(s)
        s.setblocking(True)
        s.sendall(subscribe_packet(TOPIC_FILTER, 1))
        s.setblocking(False)
        if not wait_bridge_up(local_port, sub):
            return {"error": "the bridge did not forward a probe within 30 s: " + local.log_tail(300)}
        res["qos1"] = forward_run(local, upstream, sub, 1, 1, opts["forward_messages"], opts["limit"])
        if opts["qos0"]:
            res["qos0"] = forward_run(local, upstream, sub, 2, 0, opts["forward_messages"], opts["limit"])
        if not local.alive():
            res["broker_problem"] = "%s exited: %s" % (kind, local.log_tail(300))
        elif "Traceback" in local.log_tail(4000):
            res["broker_problem"] = "traceback in the log: " + local.log_tail(4000).split("Traceback", 1)[1][:400]
    except Exception as e:  # reported in the table; the other runs go on
        res["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        if sub is not None:
            close_quietly(sub.sock)
        for p in (local, upstream):
            if p is not None:
                p.stop()
    return res


def publish_all_acked(port, count, run_id):
    """One pipelined QoS 1 publisher of `count` messages to bench/drain; returns (acked, seconds)."""
    stream, plen = message_stream(run_id, 0, "bench/drain", count, 1)
    s, _ = open_client(port, "bench-drain-pub")
    p = Publisher(s, 0, stream, plen, count, 1)
    t0 = last = time.monotonic()
    acked = 0
    try:
        # A broker that stops acknowledging (full, or out of memory) ends it after STALL s.
        while p.acked() < count and not p.closed and time.monotonic() - last < STALL:
            p.pump(None)
            r, _w, _x = select.select([s], [s] if p.blocked else [], [], 0.5)
            if r:
                p.readable()
            if p.acked() != acked:
                acked, last = p.acked(), time.monotonic()
    finally:
        close_quietly(s)
    return p.acked(), time.monotonic() - t0


def scenario_drain(kind, out, opts):
    """N QoS 1 messages acknowledged by the local broker while nothing listens on the upstream
    port, then the upstream started: from its start to the last of them at its subscriber."""
    n = opts["drain_messages"]
    base = os.path.join(out, "bridge-%s-drain-%d" % (kind, os.getpid()))
    up_port, local_port = free_port(), free_port()
    up_work = os.path.join(base, "upstream")
    upstream = local = sub = None
    res = {"messages": n, "heap": opts["drain_heap"] if kind == "ubroker" else None}
    try:
        # The subscriber's session must exist upstream before the bridge can get there first
        # (it reconnects within 1 s): make it persistent once, and let mosquitto save it on exit.
        upstream = start_upstream(up_work, up_port, persistent=True)
        s, _ = open_client(up_port, "bench-drain-sub", clean=False)
        s.setblocking(True)
        s.sendall(subscribe_packet(TOPIC_FILTER, 1))
        s.settimeout(5)
        s.recv(5)  # SUBACK
        close_quietly(s)
        upstream.stop()
        upstream = None

        local = start_local(kind, os.path.join(base, kind), local_port, up_port, n, opts["drain_heap"])
        acked, pub_s = publish_all_acked(local_port, n, 3)
        res["acked"] = acked
        res["publish_seconds"] = round(pub_s, 3)
        if acked < n:
            res["error"] = "only %d of %d messages acknowledged while the uplink was down" % (acked, n)
            return res
        time.sleep(1.5)  # a few failed reconnection attempts: the bridge is in its backoff, as after an outage

        tally = Tally(1, n)
        t_up = time.monotonic()
        upstream = start_upstream(up_work, up_port, persistent=True, wait=False)
        # Reconnect the subscriber as soon as the port answers (a few ms); messages the bridge
        # brings before that wait in its persistent session.
        deadline = t_up + 30
        while True:
            try:
                s, present = open_client(up_port, "bench-drain-sub", clean=False, timeout=1.0)
                break
            except OSError:
                if time.monotonic() > deadline or not upstream.alive():
                    raise RuntimeError("upstream mosquitto did not come back: " + upstream.log_tail(300))
                time.sleep(0.002)
        res["upstream_listening_seconds"] = round(time.monotonic() - t_up, 3)
        sub = Subscriber(s)
        sub.tallies[3] = tally
        if not present:
            res["note"] = "the subscriber's upstream session was not kept; subscribed again"
            s.setblocking(True)
            s.sendall(subscribe_packet(TOPIC_FILTER, 1))
            s.setblocking(False)
        lpid = local.worker_pid()
        c0 = cpu_seconds(lpid)
        start, end = drive([], sub, tally, STALL, opts["limit"])
        c1 = cpu_seconds(lpid)
        time.sleep(0.3)
        if select.select([sub.sock], [], [], 0)[0]:
            sub.readable(time.monotonic())
        res["end"] = end
        res.update(tally.summary())
        if tally.t_last is not None:
            res["seconds"] = round(tally.t_last - t_up, 3)  # upstream start -> last arrival
            res["first_seconds"] = round(tally.t_first - t_up, 3)  # upstream start -> first arrival
            span = tally.t_last - tally.t_first
            res["drain_rate"] = round((tally.unique - 1) / span, 1) if span > 0 else None
        if c0 is not None and c1 is not None:
            # Near the drain's own duration: the local broker's CPU, not the uplink, is the limit.
            res["local_cpu_seconds"] = round(c1 - c0, 2)
        if not local.alive():
            res["broker_problem"] = "%s exited: %s" % (kind, local.log_tail(300))
        elif "Traceback" in local.log_tail(4000):
            res["broker_problem"] = "traceback in the log: " + local.log_tail(4000).split("Traceback", 1)[1][:400]
    except Exception as e:
        res["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        if sub is not None:
            close_quietly(sub.sock)
        for p in (local, upstream):
            if p is not None:
                p.stop()
    return res


def run(out, kinds, opts, log=lambda s: print(s, file=sys.stderr)):
    """Both figures for each bridge in `kinds` (of KINDS). opts: forward_messages, drain_messages,
    qos0 (bool), limit (s per run), heap and drain_heap (ubroker's in each). Returns the report's
    "bridge" part."""
    report = {"settings": {"forward_messages": opts["forward_messages"], "drain_messages": opts["drain_messages"],
                           "heap": opts["heap"], "drain_heap": opts["drain_heap"],
                           "publishers": PUBLISHERS, "window": WINDOW, "payload": PAYLOAD},
              "results": {}}
    if not mosquitto_exe():
        report["unavailable"] = "mosquitto not installed (the upstream of both bridges; make bench installs it)"
        log("bench: bridge unavailable: " + report["unavailable"])
        return report
    for d in os.listdir(out):  # the previous run's folders (configs, logs, ubroker's data)
        if d.startswith("bridge-") and d.split("-")[-1].isdigit():
            shutil.rmtree(os.path.join(out, d), ignore_errors=True)
    for kind in [k for k in KINDS if k in kinds]:
        r = report["results"][kind] = {}
        t = time.time()
        r["forward"] = scenario_forward(kind, out, opts)
        log("bench: bridge %-9s forward %5.1fs  %s" % (kind, time.time() - t, summary_forward(r["forward"])))
        t = time.time()
        r["drain"] = scenario_drain(kind, out, opts)
        log("bench: bridge %-9s drain   %5.1fs  %s" % (kind, time.time() - t, summary_drain(r["drain"])))
    return report


# ------------------------------------------------------------------ the table

def verification(r):
    """'ok', or what the checks found (bold when a promise was broken)."""
    if r is None:
        return "-"
    if r.get("error"):
        return "FAILED: " + r["error"]
    notes = []
    qos = r.get("qos", 1)
    if r.get("lost"):
        if qos:
            notes.append("**%d of %d lost** (%s)" % (r["lost"], r["expected"], r.get("end")))
        else:
            notes.append("%.1f%% dropped (QoS 0)" % (100.0 * r["lost"] / (r["expected"] or 1)))
    if r.get("duplicates"):
        d = "%d duplicates (%d flagged DUP)" % (r["duplicates"], r.get("duplicates_flagged_dup", 0))
        notes.append(d if r.get("duplicates") == r.get("duplicates_flagged_dup") else "**" + d + "**")
    if r.get("out_of_order"):
        notes.append("**%d out of order**" % r["out_of_order"])
    if r.get("malformed"):
        notes.append("**%d malformed**" % r["malformed"])
    if qos and r.get("delivered_qos0"):
        notes.append("%d delivered at QoS 0" % r["delivered_qos0"])
    if r.get("end") not in (None, "complete") and not r.get("lost"):
        notes.append("ended: " + r["end"])
    if r.get("broker_problem"):
        notes.append("**" + r["broker_problem"] + "**")
    return "; ".join(notes) if notes else "ok"


def summary_forward(f):
    if f.get("error"):
        return "FAILED: " + f["error"]
    parts = []
    for q in ("qos1", "qos0"):
        r = f.get(q)
        if r:
            parts.append("%s %s msg/s [cpu local %s%%, upstream %s%%, loadgen %s%%] %s" % (
                q, _num(r.get("rate")), _num(r.get("local_cpu_pct")), _num(r.get("upstream_cpu_pct")),
                _num(r.get("loadgen_cpu_pct")), verification(r)))
    return "; ".join(parts)


def summary_drain(d):
    if d.get("error"):
        return "FAILED: " + d["error"]
    return "%s s to the last of %d (first after %s s, %s msg/s) %s" % (
        _num(d.get("seconds")), d["messages"], _num(d.get("first_seconds")), _num(d.get("drain_rate")),
        verification(d))


def _num(v):
    if v is None:
        return "-"
    if abs(v) >= 100:
        return "{:,.0f}".format(v)
    if abs(v) >= 10:
        return "{:.1f}".format(v)
    return "{:.2f}".format(v)


# (label, unit, figure, how to get it, lower is better)
ROWS = [
    ("forward QoS 1 (%d local pub -> bridge -> upstream sub)" % PUBLISHERS, "msg/s", "forward",
     lambda f: (f.get("qos1") or {}).get("rate"), False),
    ("forward QoS 0 (%d local pub -> bridge -> upstream sub)" % PUBLISHERS, "msg/s", "forward",
     lambda f: (f.get("qos0") or {}).get("rate"), False),
    ("drain N queued QoS 1: upstream start -> last arrival", "s", "drain", lambda d: d.get("seconds"), True),
    ("  of it: upstream start -> first arrival (reconnect)", "s", "drain", lambda d: d.get("first_seconds"), True),
    ("  drain rate, first -> last arrival", "msg/s", "drain", lambda d: d.get("drain_rate"), False),
]


def render(bridge):
    """The "Bridge" section of the report, in markdown."""
    if bridge.get("unavailable"):
        return "## Bridge\n\nUnavailable: " + bridge["unavailable"]
    res = bridge["results"]
    kinds = [k for k in KINDS if k in res]
    st = bridge["settings"]
    out = ["## Bridge", "",
           "Each bridge forwards `topic %s out 1` to an upstream Mosquitto on loopback; the subscriber is on the "
           "upstream (QoS 1). `mosquitto` is a local Mosquitto with its own bridge (`connection`), the "
           "reference of the ratios. Forward: %d pipelined publishers (window %d), %s messages in all, rate over "
           "the first publish to the last arrival. Drain: %s QoS 1 messages acknowledged locally while nothing "
           "listens on the upstream port (ubroker with `--data`, `bridge_max_queued_messages` and "
           "`--heap %s` for this run, `restart_timeout 1 1` in both), then the upstream started; the time "
           "includes the bridge's reconnection delay (up to 1 s, jittered)." % (
               TOPIC_FILTER, st["publishers"], st["window"], "{:,}".format(st["forward_messages"]),
               "{:,}".format(st["drain_messages"]), st.get("drain_heap")), "",
           "| bridge figure | unit | " + " | ".join(kinds) + " |",
           "|---|---|" + "---|" * len(kinds)]
    for label, unit, fig, get, lower in ROWS:
        label = label.replace("N queued", "{:,} queued".format(st["drain_messages"]))
        ref = None
        cells = []
        for k in kinds:
            f = res[k].get(fig) or {}
            v = None if f.get("error") else get(f)
            if k == "mosquitto":
                ref = v
            s = _num(v) if not f.get("error") else "failed"
            if k != "mosquitto" and v and ref:
                s += " (%.2f×)" % (v / ref)
            cells.append(s)
        if all(c == "-" for c in cells):
            continue
        out.append("| %s | %s | %s |" % (label, unit, " | ".join(cells)))
    out += ["", "Verification (every acknowledged message at the upstream subscriber, none twice, in order per "
                "publisher; QoS 0 drops are only counted):", "",
            "| run | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for name, get in (("forward QoS 1", lambda r: r.get("forward", {}).get("qos1") or r.get("forward")),
                      ("forward QoS 0", lambda r: r.get("forward", {}).get("qos0") or r.get("forward")),
                      ("drain", lambda r: r.get("drain"))):
        cells = [verification(get(res[k])) for k in kinds]
        out.append("| %s | %s |" % (name, " | ".join(cells)))
    out += ["", "CPU during forward QoS 1, local broker / upstream Mosquitto / load generator (% of one core): " +
            "; ".join("%s %s / %s / %s" % (k, _num(q.get("local_cpu_pct")), _num(q.get("upstream_cpu_pct")),
                                          _num(q.get("loadgen_cpu_pct")))
                      for k in kinds for q in [(res[k].get("forward") or {}).get("qos1") or {}]), "",
            "CPU of the local broker during the drain (from the subscriber's reconnection to the last arrival): " +
            "; ".join("%s %s s" % (k, _num((res[k].get("drain") or {}).get("local_cpu_seconds"))) for k in kinds)]
    return "\n".join(out)


def failures(bridge):
    """ubroker's bridge runs that broke a promise (lost, duplicated without DUP, reordered,
    failed), by name."""
    r = (bridge or {}).get("results", {}).get("ubroker")
    if not r:
        return []
    bad = []
    forward = r.get("forward") or {}
    for name, x in (("bridge forward", forward), ("bridge forward QoS 1", forward.get("qos1")),
                    ("bridge drain", r.get("drain"))):
        v = verification(x) if x is not None else "ok"
        if x is not None and ("**" in v or v.startswith("FAILED")):
            bad.append(name)
    return bad
