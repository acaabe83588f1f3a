"""`ubroker bench`: ubroker side by side with Mosquitto, aedes and amqtt on this machine.

This module is the command: its options, the order of the runs, and where the results go (a
markdown table on stdout with ratios to Mosquitto, bench/out/results.md and results.json, and
bench/RESULTS.md on request). The parts, one job each, none importing this module back:
  bench_proc       ports, /proc figures, the server processes
  bench_peers      the brokers compared and how each is started
  bench_scenarios  the scenarios and bench/loadgen (C), which also verifies what arrives
  bench_tls        the TLS connects scenario's certificates and client
  bench_ws         the WebSockets scenario's check that a broker's listener answers the Upgrade
  bench_report     the tables, the targets, the verdicts
  bench_rounds     --rounds N: which round of a broker's scenario the tables report
  bench_steal      a run during which the hypervisor stole CPU time is run again
  bench_bridge     the `bridge` scenario (and its own bench_bridge_* parts)"""

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time

from . import bench_bridge, bench_bridge_report
from .bench_peers import BROKERS, make_broker
from .bench_proc import BENCH
from .bench_report import NOTE, is_failure, render, summary
from .bench_rounds import select
from .bench_steal import undisturbed
from .bench_scenarios import SCENARIOS, build_loadgen, run_scenario

HELP = """Benchmark ubroker (unix port) against Mosquitto, aedes and amqtt, side by side.

Scenarios: fan-in QoS 0/1/2 (8 publishers -> 1 subscriber), fan-out QoS 0 (1 -> 16), round-trip
latency p50/p99, connects per second, RSS per idle client, and fan-in QoS 1 over WebSockets
(fanin1ws: each broker with a websockets listener too, reported against its own TCP fan-in as well
as against Mosquitto's WebSockets; a broker whose listener does not answer the Upgrade is shown
as not measured, with the reason), and fan-in QoS 1 at MQTT 5 (fanin1v5, a user property on every
message; fanin1v5alias, each publisher's topic sent once and then by Topic Alias; fanin1shared, to a
shared subscription of 2 members), loadgen --v5, ubroker and Mosquitto only (aedes and amqtt do
not speak MQTT 5 and are shown as not measured). Each broker is started fresh for each
scenario on a free 127.0.0.1 port. The load generator (bench/loadgen.c, built with cc into
bench/bin/) verifies every delivery; any lost acknowledged message, QoS 2 duplicate or reordering
is reported. Peers that are not installed are shown as unavailable (`make bench` installs them).

Scenario `bridge` (bench_bridge.py): ubroker's bridge next to Mosquitto's own bridge, each forwarding
`topic bench/# out 1` to an upstream Mosquitto: the forwarding rate at QoS 1 and QoS 0, and the time
to drain --drain-messages QoS 1 messages queued while the upstream was down once it starts again.

example:
  make bench                                 # set up the peers, then the full run (~3-5 min)
  ubroker bench --quick                      # short run while developing
  ubroker bench --brokers ubroker,mosquitto --scenarios fanin1,latency
  ubroker bench --brokers ubroker,mosquitto --scenarios fanin1,fanin1v5 --rounds 5  # medians of 5 rounds
  ubroker bench --quick --scenarios fanin1,fanin1ws  # WebSockets against TCP
  ubroker bench --brokers ubroker,mosquitto --scenarios fanin1v5,fanin1v5alias,fanin1shared
  ubroker bench --update-results             # also rewrite bench/RESULTS.md (committed table)
  ubroker bench --scenarios bridge           # only the bridge figures (~30 s)
"""

# Not a per-broker scenario: run by bench_bridge.py, reported in its own "Bridge" table.
BRIDGE = "bridge"


def add_parser(sub):
    p = sub.add_parser("bench", help="side-by-side benchmark against Mosquitto, aedes, amqtt", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short scenarios (about 1 s each) while developing")
    p.add_argument("--brokers", default=",".join(BROKERS), help="comma-separated, from: " + ", ".join(BROKERS))
    p.add_argument("--scenarios", default=",".join(list(SCENARIOS) + [BRIDGE]),
                   help="comma-separated, from: " + ", ".join(list(SCENARIOS) + [BRIDGE]))
    p.add_argument("--duration", type=float, help="seconds of load per scenario (default 3, --quick 1)")
    p.add_argument("--idle-clients", type=int, help="clients held in the idle scenario (default 200, --quick 50)")
    p.add_argument("--out", default=os.path.join(BENCH, "out"), help="where results.md/.json go (default bench/out)")
    p.add_argument("--update-results", action="store_true", help="also write the table to bench/RESULTS.md")
    p.add_argument("--bridge-messages", type=int,
                   help="bridge: messages per forwarding run (default 100000, --quick 20000)")
    p.add_argument("--drain-messages", type=int, default=10000,
                   help="bridge: messages queued while the upstream is down (default 10000)")
    # 8M is not enough today: the store's compaction writes a session's whole queue into one
    # buffer, which fails (MemoryError, publisher held back) after 8,064 queued messages.
    p.add_argument("--bridge-heap", default="16M",
                   help="bridge: ubroker's heap in the drain run (default 16M; 8M holds 8,064 queued)")
    p.add_argument("--rounds", type=positive, default=1,
                   help="run every scenario N times, the brokers interleaved, and report each one's median round "
                        "with the rounds' range (default 1; the bridge scenario runs once)")
    p.add_argument("--heap", default="8M", help="ubroker's MicroPython heap (default 8M, the unix board's)")
    p.set_defaults(func=main)


def positive(v):
    n = int(v)
    if n < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return n


def main(args):
    quick = args.quick
    opts = {
        "duration": args.duration or (1.0 if quick else 3.0),
        "drain": 5.0 if quick else 10.0,
        "idle_clients": args.idle_clients or (50 if quick else 200),
        "out": args.out,
    }
    names = [b.strip() for b in args.brokers.split(",") if b.strip()]
    scen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    bridge = BRIDGE in scen
    scen = [s for s in scen if s != BRIDGE]
    bad = [b for b in names if b not in BROKERS] + [s for s in scen if s not in SCENARIOS]
    if bad:
        print("ubroker bench: unknown broker or scenario: %s (see ubroker bench --help)" % ", ".join(bad),
              file=sys.stderr)
        return 2
    if "fanin1ws" in scen and "fanin1" not in scen:
        # Its ratio basis: the same fan-in over TCP, measured in the same run.
        scen.insert(scen.index("fanin1ws"), "fanin1")
        print("bench: fanin1 added, fanin1ws is reported against it", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    for d in os.listdir(args.out):  # the previous run's broker folders (configs, logs, data)
        if d.split("-")[0] in BROKERS and d.split("-")[-1].isdigit():
            shutil.rmtree(os.path.join(args.out, d), ignore_errors=True)
    try:
        exe = build_loadgen()
    except (RuntimeError, subprocess.CalledProcessError) as e:
        print("ubroker bench: cannot build the load generator: %s" % e, file=sys.stderr)
        return 1
    started = datetime.datetime.now(datetime.timezone.utc)
    report = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": "ubroker bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "ubroker bench",
        "machine": "%s, %d cores, %s" % (platform.platform(), os.cpu_count() or 0, platform.python_version()),
        "settings": opts,
        "scenarios": scen,
        "brokers": {},
        "results": {},
    }
    # Mosquitto first: it is the reference of the ratios.
    order = sorted(names, key=lambda b: (b != "mosquitto", BROKERS.index(b)))
    brokers = {}
    for b in order if scen else []:
        broker = make_broker(b, args.out, args.heap)
        why = broker.unavailable()
        report["brokers"][b] = {"unavailable": why} if why else {"version": broker.version()}
        if why:
            print("bench: %s unavailable: %s" % (b, why), file=sys.stderr)
        else:
            brokers[b] = broker
    # Interleaved: one scenario on every broker in turn, seconds apart, the order reversed every
    # other round (ABBA), so that the machine's drift weighs on every broker alike.
    rounds = {b: {s: [] for s in scen} for b in brokers}
    for n in range(args.rounds):
        for s in scen:
            for b in (list(brokers) if n % 2 == 0 else list(brokers)[::-1]):
                t = time.time()
                r = undisturbed(lambda: run_scenario(brokers[b], s, exe, opts),
                                log=lambda m: print("bench: %-9s %-8s %s" % (b, s, m), file=sys.stderr))
                if args.rounds > 1:
                    r["round"] = n + 1
                rounds[b][s].append(r)
                print("bench: %s%-9s %-8s %5.1fs  %s" % ("round %d  " % (n + 1) if args.rounds > 1 else "", b, s,
                                                         time.time() - t, summary(r)), file=sys.stderr)
    report["results"] = select(rounds)
    if args.rounds > 1:
        report["rounds"] = rounds  # every round's result; "results" has the one reported
    if bridge:
        report["bridge"] = bench_bridge.run(args.out, names, {
            "forward_messages": args.bridge_messages or (20000 if quick else 100000),
            "drain_messages": args.drain_messages, "qos0": True, "limit": 120.0, "heap": args.heap,
            "drain_heap": args.bridge_heap})
    report["seconds"] = round((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(), 1)
    text = render(report) if scen else ""
    if bridge:
        text = (text + "\n\n" if text else "") + bench_bridge_report.render(report["bridge"])
    md = "# ubroker bench, %s\n\n`%s` on %s, %.0f s.\n\n%s\n" % (report["date"], report["command"],
                                                                report["machine"], report["seconds"], text)
    print(md)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    if args.update_results:
        with open(os.path.join(BENCH, "RESULTS.md"), "w") as f:
            f.write(md + NOTE)
    # Exit 1 when ubroker itself failed a check (a peer's trouble is reported, not fatal).
    bad = [s for s, r in report["results"].get("ubroker", {}).items() if is_failure(r)]
    if bridge:
        bad += bench_bridge_report.failures(report["bridge"])
    if bad:
        print("bench: ubroker failed verification in: %s (see the table above)" % ", ".join(bad), file=sys.stderr)
        return 1
    return 0
