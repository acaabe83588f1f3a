"""The "Bridge" part of `ubroker bench`'s report, from bench_bridge.run()'s results alone: the
figures table with ratios to Mosquitto's own bridge, what each run's checks found, the CPU
lines, the one-line summaries printed as each run ends, and which of ubroker's runs failed."""

from .bench_bridge_procs import TOPIC_FILTER
from .bench_bridge_scenarios import KINDS, PUBLISHERS
from .bench_report import fmt_num


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
                q, fmt_num(r.get("rate")), fmt_num(r.get("local_cpu_pct")), fmt_num(r.get("upstream_cpu_pct")),
                fmt_num(r.get("loadgen_cpu_pct")), verification(r)))
    return "; ".join(parts)


def summary_drain(d):
    if d.get("error"):
        return "FAILED: " + d["error"]
    return "%s s to the last of %d (first after %s s, %s msg/s) %s" % (
        fmt_num(d.get("seconds")), d["messages"], fmt_num(d.get("first_seconds")), fmt_num(d.get("drain_rate")),
        verification(d))


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
            s = fmt_num(v) if not f.get("error") else "failed"
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
            "; ".join("%s %s / %s / %s" % (k, fmt_num(q.get("local_cpu_pct")), fmt_num(q.get("upstream_cpu_pct")),
                                           fmt_num(q.get("loadgen_cpu_pct")))
                      for k in kinds for q in [(res[k].get("forward") or {}).get("qos1") or {}]), "",
            "CPU of the local broker during the drain (from the subscriber's reconnection to the last arrival): " +
            "; ".join("%s %s s" % (k, fmt_num((res[k].get("drain") or {}).get("local_cpu_seconds"))) for k in kinds)]
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
