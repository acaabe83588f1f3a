"""The report of `ubroker bench`'s per-broker scenarios, from the results alone: the figures
table with ratios to Mosquitto, what each scenario's verification found, the CPU table, ubroker
against the targets of issue 2, the one-line summary printed as each scenario ends, and which
results count as ubroker failing (the exit status)."""

from .bench_steal import rerun_note


def fmt_num(v, unit=""):
    if v is None:
        return "-"
    if abs(v) >= 100:
        s = "{:,.0f}".format(v)
    elif abs(v) >= 10:
        s = "{:.1f}".format(v)
    else:
        s = "{:.2f}".format(v)
    return s + unit


# row key -> (label, unit, scenario, how to get the value, lower is better)
ROWS = [
    ("fanin0", "fan-in QoS 0 (8 -> 1)", "msg/s", "fanin0", lambda r: r.get("rate"), False),
    ("fanin1", "fan-in QoS 1 (8 -> 1)", "msg/s", "fanin1", lambda r: r.get("rate"), False),
    ("fanin2", "fan-in QoS 2 (8 -> 1)", "msg/s", "fanin2", lambda r: r.get("rate"), False),
    ("fanin1ws", "fan-in QoS 1 over WebSockets (8 -> 1)", "msg/s", "fanin1ws", lambda r: r.get("rate"), False),
    ("fanin1p", "fan-in QoS 1, persistent sub", "msg/s", "fanin1p", lambda r: r.get("rate"), False),
    ("fanin1v5", "fan-in QoS 1 at MQTT 5 (8 -> 1)", "msg/s", "fanin1v5", lambda r: r.get("rate"), False),
    ("fanin1v5alias", "fan-in QoS 1 at MQTT 5, topic alias (8 -> 1)", "msg/s", "fanin1v5alias",
     lambda r: r.get("rate"), False),
    ("fanin1shared", "fan-in QoS 1 at MQTT 5, shared subscription (8 -> group of 2)", "msg/s", "fanin1shared",
     lambda r: r.get("rate"), False),
    ("fanout0", "fan-out QoS 0 (1 -> 16)", "deliveries/s", "fanout0", lambda r: r.get("rate"), False),
    ("lat50", "round trip p50", "us", "latency", lambda r: r.get("p50_us"), True),
    ("lat99", "round trip p99", "us", "latency", lambda r: r.get("p99_us"), True),
    ("connect", "connects", "/s", "connect", lambda r: r.get("rate"), False),
    ("connect_tls", "connects over TLS", "/s", "connect_tls", lambda r: r.get("rate"), False),
    ("idle", "RSS per idle client", "bytes", "idle", lambda r: r.get("rss_per_client"), True),
    ("storm", "reconnect storm: clients in, of 1,000", "clients", "storm", lambda r: r.get("connected"), False),
]

# scenario -> (how to get the figure its ratio is made of, lower is better): its first row (latency: p50).
FIGURE = {}
for _key, _label, _unit, _scen, _get, _lower in ROWS:
    FIGURE.setdefault(_scen, (_get, _lower))


def figure(r):
    """The number a result's ratio to Mosquitto is made of (None when it has none)."""
    if not r or cell_error(r) or r.get("untested") or r.get("scenario") not in FIGURE:
        return None
    return FIGURE[r["scenario"]][0](r)


def lower_is_better(scen):
    return FIGURE.get(scen, (None, False))[1]


# A scenario over WebSockets -> the same over TCP: its cells also give the ratio to that broker's TCP figure.
OVER_TCP = {"fanin1ws": "fanin1"}


def cell_error(r):
    if r is None:
        return None
    if r.get("error"):
        return "failed to start"
    if r.get("fatal"):
        return "failed"
    return None


def verification(r):
    """One short text of what the verification found ('ok' when nothing)."""
    if r is None:
        return None
    if r.get("error") or r.get("fatal"):
        return "FAILED: " + (r.get("error") or r.get("fatal"))
    notes = []
    qos = r.get("qos")
    if r.get("lost_acked"):
        notes.append("**%d acknowledged messages lost** (end: %s)" % (r["lost_acked"], r.get("end")))
    if r.get("duplicates"):
        # A shared subscription's message goes to one member only (MQTT 5.0 section 4.8.2)
        notes.append(("**%d duplicates at QoS 2**" if qos == 2 else "**%d duplicates across the members**"
                      if r.get("shared") else "%d duplicates") % r["duplicates"])
    if r.get("out_of_order"):
        notes.append("**%d out of order**" % r["out_of_order"])
    if r.get("malformed"):
        notes.append("**%d malformed/unexpected deliveries**" % r["malformed"])
    if r.get("puback_errors"):
        notes.append("**%d acknowledgements with an error reason code**" % r["puback_errors"])
    if r.get("user_property_missing"):
        notes.append("**%d delivered without the publisher's User Property (MQTT-3.3.2-17)**" %
                     r["user_property_missing"])
    if r.get("qos_mismatch"):
        notes.append("%d delivered at another QoS" % r["qos_mismatch"])
    if qos == 0 and r.get("lost"):
        exp = r.get("expected") or 1
        notes.append("%.1f%% dropped (QoS 0)" % (100.0 * r["lost"] / exp))
    if qos and r.get("end") not in (None, "complete") and not r.get("lost_acked"):
        notes.append("ended: %s" % r.get("end"))
    if r.get("closed"):
        notes.append("**connections closed: %s**" % ", ".join(r["closed"][:3]))
    if r.get("scenario") == "latency" and r.get("lost"):
        notes.append("**%d round trips never came back**" % r["lost"])
    if r.get("untested"):
        return "not measured: " + r["untested"]
    if r.get("scenario") == "connect_tls" and r.get("failed"):
        notes.append("**%d failed: %s**" % (r["failed"], r.get("first_error")))
    if r.get("scenario") == "connect" and (r.get("failed") or r.get("refused")):
        notes.append("**%d failed, %d refused: %s**" % (r.get("failed", 0), r.get("refused", 0), r.get("error")))
    if r.get("scenario") == "idle" and r.get("still_connected") is not None and \
            r["still_connected"] != r.get("clients"):
        notes.append("**only %s of %s idle clients still connected**" % (r["still_connected"], r["clients"]))
    if r.get("scenario") == "storm" and r.get("connected") != r.get("clients"):
        notes.append("**%s of %s clients did not get in** (per burst: %s)" % (
            r.get("clients", 0) - r.get("connected", 0), r.get("clients"), r.get("per_burst")))
    if r.get("broker_problem"):
        notes.append("**" + r["broker_problem"] + "**")
    return "; ".join(notes) if notes else "ok"


def render(report):
    brokers = report["brokers"]
    res = report["results"]
    names = [b for b in brokers]
    lines = []
    lines.append("| scenario | unit | " + " | ".join(names) + " |")
    lines.append("|---|---|" + "---|" * len(names))
    base = "mosquitto"
    for key, label, unit, scen, get, lower in ROWS:
        if scen not in report["scenarios"]:
            continue
        cells = []
        ref_r = res.get(base, {}).get(scen)
        ref = get(ref_r) if ref_r and not cell_error(ref_r) else None
        for b in names:
            info = brokers[b]
            if info.get("unavailable"):
                cells.append("unavailable")
                continue
            r = res.get(b, {}).get(scen)
            err = cell_error(r)
            if r is None:
                cells.append("-")
                continue
            if err:
                cells.append(err)
                continue
            if r.get("untested"):
                cells.append("not measured")
                continue
            v = get(r)
            s = fmt_num(v)
            if b != base and v is not None and ref:
                s += " (%.2f×)" % (v / ref)
            tcp = res.get(b, {}).get(OVER_TCP.get(scen))
            if v is not None and tcp and not cell_error(tcp) and get(tcp):
                s += " [%.2f× own TCP]" % (v / get(tcp))
            cells.append(s)
        lines.append("| %s | %s | %s |" % (label, unit, " | ".join(cells)))
    table = "\n".join(lines)

    ver = ["| scenario | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for scen in report["scenarios"]:
        cells = []
        for b in names:
            if brokers[b].get("unavailable"):
                cells.append("unavailable")
                continue
            v = verification(res.get(b, {}).get(scen))
            cells.append(v if v is not None else "-")
        ver.append("| %s | %s |" % (scen, " | ".join(cells)))

    cpu = ["| scenario | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for scen in report["scenarios"]:
        if scen == "idle":
            continue
        cells = []
        for b in names:
            r = res.get(b, {}).get(scen)
            if not r or r.get("error") or r.get("fatal"):
                cells.append("-")
                continue
            cells.append("%s / %s" % (fmt_num(r.get("broker_cpu_pct"), "%"), fmt_num(r.get("loadgen_cpu_pct"), "%")))
        cpu.append("| %s | %s |" % (scen, " | ".join(cells)))

    out = []
    out.append("Ratios are to Mosquitto (for latency and memory, lower is better). Rates are messages delivered to "
               "subscribers per second, over the time from the first publish to the last delivery.")
    out.append("")
    out.append(table)
    out.append("")
    if report.get("rounds"):
        out.extend(rounds_table(report, names))
        out.append("")
    out.append(rerun_note(report.get("rounds") or report["results"]))
    out.append("")
    if any(s in report["scenarios"] for s in OVER_TCP):
        out.append("Over WebSockets: (×) is to Mosquitto over WebSockets, as elsewhere; [× own TCP] to the same "
                   "broker's figure over TCP in this run. A broker whose WebSockets listener does not answer the "
                   "Upgrade here is not measured (the reason is under Verification).")
        out.append("")
    unavailable = ["%s: %s" % (b, brokers[b]["unavailable"]) for b in names if brokers[b].get("unavailable")]
    if unavailable:
        out.append("Unavailable: " + "; ".join(unavailable))
        out.append("")
    out.append("Verification (loadgen: every PUBACKed/PUBRECed message delivered, no QoS 2 duplicate, order per "
               "publisher; QoS 0 drops are allowed and only counted%s):" % (
                   "; at MQTT 5 also each delivery on its publisher's topic with its User Property, no "
                   "acknowledgement with an error reason code, a shared subscription's message at one member "
                   "only, order per member" if any(s in report["scenarios"] for s, _ in V5_TARGETS) else ""))
    out.append("")
    out.extend(ver)
    out.append("")
    out.append("CPU, broker / load generator (% of one core over the measured span). Where the broker is near 100% "
               "and the load generator is not, the broker is what is measured. For connects on loopback the kernel's "
               "TCP set-up is charged to the client side, so there both are near a core each: the 2 cores are the "
               "limit, for every broker alike.")
    out.append("")
    out.extend(cpu)
    tg = targets(report)
    if tg:
        out.append("")
        out.append("ubroker against the targets of issue 2 (and of the issues named):")
        out.append("")
        out.extend("- " + t for t in tg)
    out.append("")
    out.append("Versions: " + "; ".join(brokers[b].get("version") or b for b in names if not brokers[b].get("unavailable")))
    out.append("Settings: %s s of load per scenario, QoS 1/2 window %d per publisher, QoS 0 publishers at most %d "
               "messages ahead of the subscriber, 16-byte payloads, %d idle clients." %
               (fmt_num(report["settings"]["duration"]), 20, 2000, report["settings"]["idle_clients"]))
    return "\n".join(out)


def rounds_table(report, names):
    """--rounds N > 1: what the figures are, and each (broker, scenario)'s range over the rounds."""
    rounds = report["rounds"]
    n = max((len(rs) for by_scen in rounds.values() for rs in by_scen.values()), default=0)
    out = ["Figures are medians of %d interleaved rounds (each scenario run on every broker in turn, the "
           "brokers' order reversed every other round); each is the one round with the median figure (with an "
           "even count the worse middle one), its verification and CPU with it. A round that failed "
           "verification is reported instead of the median. Rounds, the range (min-max) of the figure (latency: "
           "p50) and the round reported:" % n, ""]
    out.append("| scenario | unit | " + " | ".join(names) + " |")
    out.append("|---|---|" + "---|" * len(names))
    units = {}
    for key, label, unit, scen, get, lower in ROWS:
        units.setdefault(scen, unit)
    for scen in report["scenarios"]:
        cells = []
        for b in names:
            rs = rounds.get(b, {}).get(scen)
            if not rs:
                cells.append("-")
                continue
            failed = [i + 1 for i, r in enumerate(rs) if is_failure(r)]
            vals = [figure(r) for r in rs if figure(r) is not None]
            cell = "%s-%s" % (fmt_num(min(vals)), fmt_num(max(vals))) if vals else "-"
            chosen = report["results"].get(b, {}).get(scen) or {}
            if chosen.get("round"):
                cell += " (round %d)" % chosen["round"]
            if failed:
                cell += " **failed in round %s**" % ", ".join(map(str, failed))
            cells.append(cell)
        out.append("| %s | %s | %s |" % (scen, units.get(scen, ""), " | ".join(cells)))
    return out


def targets(report):
    res = report["results"]
    u, m, a = res.get("ubroker", {}), res.get("mosquitto", {}), res.get("amqtt", {})
    if not u or not m:
        return []
    out = []

    def val(d, scen, get):
        r = d.get(scen)
        if not r or cell_error(r):
            return None
        return get(r)

    def mark(ok):
        return "met" if ok else "**not met**"

    for scen, name, thr in (("fanin0", "fan-in QoS 0", 0.5), ("fanin1", "fan-in QoS 1", 0.5)):
        uv, mv = val(u, scen, lambda r: r.get("rate")), val(m, scen, lambda r: r.get("rate"))
        if uv is not None and mv:
            lossless = "" if scen == "fanin0" else (", lossless" if verification(u[scen]) == "ok" else
                                                    ", verification: " + verification(u[scen]))
            out.append("%s >= %.1f x Mosquitto: %.2f x%s -> %s" % (name, thr, uv / mv, lossless,
                                                                  mark(uv / mv >= thr and not (scen == "fanin1" and
                                                                       verification(u[scen]) != "ok"))))
    out += ws_targets(u, m, val, mark)
    out += v5_targets(u, m, val, mark)
    if u.get("fanin2"):
        v = verification(u["fanin2"])
        out.append("fan-in QoS 2 lossless: %s -> %s" % (v, mark(v == "ok")))
    up, un = val(u, "fanin1p", lambda r: r.get("rate")), val(u, "fanin1", lambda r: r.get("rate"))
    if up is not None and un:
        out.append("ubroker fan-in QoS 1, persistent subscriber (durable store on) within 20%% of "
                   "non-persistent: %.2f x -> %s" % (up / un, mark(up / un >= 0.8)))
    uv, mv = val(u, "latency", lambda r: r.get("p50_us")), val(m, "latency", lambda r: r.get("p50_us"))
    if uv is not None and mv:
        out.append("latency p50 <= 2 x Mosquitto: %.2f x -> %s" % (uv / mv, mark(uv / mv <= 2)))
    if a:
        ratios = []
        for key, label, unit, scen, get, lower in ROWS:
            uv, av = val(u, scen, get), val(a, scen, get)
            if uv is None or av is None or uv == 0 or av == 0:
                continue
            ratios.append(((av / uv) if lower else (uv / av), key))
        if ratios:
            worst = min(ratios)
            line = "every scenario >= 20 x amqtt: %s; lowest %s at %.1f x -> %s" % (
                ", ".join("%s %.1f x" % (k, r) for r, k in ratios), worst[1], worst[0], mark(worst[0] >= 20))
            # The same bar for Mosquitto, measured in the same run: where Mosquitto itself is
            # below it, the loopback round trip and the kernel bound every broker here.
            mosq = []
            for key, label, unit, scen, get, lower in ROWS:
                mv, av = val(m, scen, get), val(a, scen, get)
                if mv and av:
                    mosq.append((key, (av / mv) if lower else (mv / av)))
            below = [k for k, r in mosq if r < 20]
            if mosq:
                line += " (Mosquitto itself: %s; below 20 x in %s)" % (
                    ", ".join("%s %.1f x" % (k, r) for k, r in mosq), ", ".join(below) if below else "none")
            out.append(line)
    return out


def ws_targets(u, m, val, mark):
    """Issue 16: fan-in QoS 1 over WebSockets at least Mosquitto's rate over WebSockets, lossless;
    and what WebSockets cost, against ubroker's own TCP and Mosquitto's TCP."""
    if not u.get("fanin1ws"):
        return []

    def rate(r):
        return r.get("rate")

    uw, mw = val(u, "fanin1ws", rate), val(m, "fanin1ws", rate)
    ut, mt = val(u, "fanin1", rate), val(m, "fanin1", rate)
    v = verification(u["fanin1ws"])
    out = []
    if uw is not None and mw:
        out.append("issue 16: fan-in QoS 1 over WebSockets >= Mosquitto over WebSockets, lossless: %.2f x, "
                   "verification %s -> %s" % (uw / mw, v, mark(uw >= mw and v == "ok")))
    elif (m.get("fanin1ws") or {}).get("untested"):
        out.append("issue 16: fan-in QoS 1 over WebSockets >= Mosquitto over WebSockets: not checkable, %s" %
                   m["fanin1ws"]["untested"])
    cost = ["%.2f x ubroker over TCP" % (uw / ut)] if uw is not None and ut else []
    cost += ["%.2f x Mosquitto over TCP" % (uw / mt)] if uw is not None and mt else []
    if cost:
        peer = "; Mosquitto over WebSockets: %.2f x its TCP" % (mw / mt) if mw and mt else ""
        out.append("ubroker's fan-in QoS 1 over WebSockets: " + ", ".join(cost) + peer)
    return out


# Issue 15: the MQTT 5 fan-ins (loadgen --v5), each at least Mosquitto's rate, lossless
V5_TARGETS = (("fanin1v5", "fan-in QoS 1 at MQTT 5"), ("fanin1v5alias", "with a topic alias"),
              ("fanin1shared", "to a shared subscription"))


def v5_targets(u, m, val, mark):
    out = []
    for scen, name in V5_TARGETS:
        if not u.get(scen):
            continue
        uv, mv = val(u, scen, lambda r: r.get("rate")), val(m, scen, lambda r: r.get("rate"))
        v = verification(u[scen])
        if uv is not None and mv:
            out.append("issue 15: %s >= Mosquitto, lossless: %.2f x, verification %s -> %s" % (
                name, uv / mv, v, mark(uv >= mv and v == "ok")))
        else:
            out.append("issue 15: %s >= Mosquitto, lossless: not checkable (ubroker: %s; Mosquitto: %s)" % (
                name, v, verification(m.get(scen)) or "not run"))
    return out


def is_failure(r):
    v = verification(r)
    return v is not None and v != "ok" and ("**" in v or v.startswith("FAILED"))


# The footer of bench/RESULTS.md (--update-results): how far to trust a single run.
NOTE = """
Run to run, on a shared 2-core VM, throughput varies by about 15-25 % and the round-trip latency by
up to 3x (it depends on whether the scheduler puts the client and the broker on the same core).
Regenerate with `make bench` (or `ubroker bench --update-results` to rewrite this file);
bench/out/results.json has every figure, including the verification counts.
"""


def summary(r):
    if r.get("error") or r.get("fatal"):
        return "FAILED: " + (r.get("error") or r.get("fatal"))
    s = r.get("scenario")
    if s == "latency":
        main_ = "p50 %s us, p99 %s us" % (fmt_num(r.get("p50_us")), fmt_num(r.get("p99_us")))
    elif s == "idle":
        main_ = "%s bytes RSS per client" % fmt_num(r.get("rss_per_client"))
    elif s == "storm":
        main_ = "%s of %s clients in, %s s" % (r.get("connected"), r.get("clients"), fmt_num(r.get("seconds")))
    else:
        main_ = "%s /s" % fmt_num(r.get("rate"))
    stolen = ""
    if r.get("steal_pct") is not None:
        stolen = ", stolen %s%%" % fmt_num(r["steal_pct"])
        if r.get("attempts", 1) > 1:
            stolen += " (run %d times)" % r["attempts"]
    return "%s  [cpu broker %s%%, loadgen %s%%%s]  %s" % (main_, fmt_num(r.get("broker_cpu_pct")),
                                                        fmt_num(r.get("loadgen_cpu_pct")), stolen, verification(r))
