"""The bridge part of `ubroker bench` (scenario `bridge`): ubroker's bridge to an upstream
Mosquitto side by side with Mosquitto's own bridge to the same kind of upstream. run() measures
both figures for each bridge (bench_bridge_scenarios) and returns what bench.py puts under
report["bridge"]; bench_bridge_report turns that into the "Bridge" table.

The parts, one job each, none importing this module back:
  bench_rawmqtt          pre-encoded MQTT packets, the payload layout, connect/close
  bench_bridge_load      the raw-socket load generator and the subscriber's checks
  bench_bridge_procs     the brokers' configs and processes
  bench_bridge_scenarios the forward and drain runs
  bench_bridge_report    the table, the summaries, ubroker's failures"""

import os
import shutil
import sys
import time

from .bench_bridge_load import WINDOW
from .bench_bridge_report import summary_drain, summary_forward
from .bench_bridge_scenarios import KINDS, PUBLISHERS, scenario_drain, scenario_forward
from .bench_proc import mosquitto_exe
from .bench_rawmqtt import PAYLOAD


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
