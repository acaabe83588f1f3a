"""The bridge benchmark's two figures, each measured on a fresh pair of brokers (an upstream
Mosquitto and the local broker whose bridge forwards `topic bench/# out 1` to it):
  forward  local publishers' QoS 1 (then QoS 0) messages reaching a subscriber on the upstream,
           in messages/s;
  drain    N QoS 1 messages queued while the upstream is down (nothing listening on its port),
           then the upstream started: seconds from its start to the last of them arriving.
Both processes are stopped by their pid, even on failure; a failure becomes the result's
"error" and the other runs go on."""

import os
import select
import time

from .bench_bridge_load import Publisher, Subscriber, Tally, drive
from .bench_bridge_procs import TOPIC_FILTER, start_local, start_upstream
from .bench_proc import cpu_seconds, free_port, own_cpu_seconds
from .bench_rawmqtt import PAYLOAD, close_quietly, message_stream, open_client, publish_packet, subscribe_packet

PUBLISHERS = 4
STALL = 10.0  # seconds without a delivery that end a QoS 1 run (what is missing is then reported lost)
STALL_QOS0 = 1.5
KINDS = ("mosquitto", "ubroker")  # whose bridge; Mosquitto first: it is the reference of the ratios


def note_problem(res, kind, local):
    """A local broker that died or logged a traceback during a run: said in the run's result."""
    if not local.alive():
        res["broker_problem"] = "%s exited: %s" % (kind, local.log_tail(300))
    elif "Traceback" in local.log_tail(4000):
        res["broker_problem"] = "traceback in the log: " + local.log_tail(4000).split("Traceback", 1)[1][:400]


def stop_all(sub, *servers):
    """The subscriber's connection closed and every server that was started stopped, whatever
    state the run ended in."""
    if sub is not None:
        close_quietly(sub.sock)
    for p in servers:
        if p is not None:
            p.stop()


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
        note_problem(res, kind, local)
    except Exception as e:  # reported in the table; the other runs go on
        res["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        stop_all(sub, local, upstream)
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
        note_problem(res, kind, local)
    except Exception as e:
        res["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        stop_all(sub, local, upstream)
    return res
