"""How many tests of two public MQTT suites a broker passes: paho's interoperability suites
(client_test5.py at MQTT 5, client_test.py at 3.1.1) and Mosquitto's own broker tests
(test/broker/) with their broker start swapped for this checkout's ubroker, or for Debian's
mosquitto as the reference. The suites are not part of this repository: docs/interop.md says
how to get them.

usage:
  .venv/bin/python tools/interop/run.py --paho-testing DIR --mosquitto-tests DIR [--broker ubroker|mosquitto]

example:
  .venv/bin/python tools/interop/run.py --paho-testing /tmp/paho-testing --mosquitto-tests /tmp/mosq-tests
  .venv/bin/python tools/interop/run.py --mosquitto-tests /tmp/mosq-tests --only 02-subpub-qos1 --lenient-connack

It writes results.json and report.md (a verdict per test and what the failing ones printed)
into --out, and prints the pass counts. The suites run one after the other, never together."""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import brokers  # noqa: E402
import mosq_suite  # noqa: E402
import paho_suite  # noqa: E402
import report  # noqa: E402


def paho_folder(root):
    for sub in ("interoperability", "."):
        d = os.path.join(root, sub)
        if os.path.exists(os.path.join(d, "client_test5.py")):
            return os.path.abspath(d)
    sys.exit("no interoperability/client_test5.py under %s: pass the folder eclipse/paho.mqtt.testing "
             "was unpacked into" % root)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paho-testing", help="eclipse/paho.mqtt.testing, unpacked")
    ap.add_argument("--mosquitto-tests", help="eclipse/mosquitto's test/ folder, unpacked (or the tree above it)")
    ap.add_argument("--broker", choices=brokers.NAMES, action="append",
                    help="the broker to measure (repeatable; default: ubroker, then mosquitto)")
    ap.add_argument("--board", help="ubroker's board profile (default: unix, as `ubroker run` starts)")
    ap.add_argument("--only", action="append", help="run only the tests whose name holds this (repeatable)")
    ap.add_argument("--lenient-connack", action="store_true",
                    help="diagnostic: in Mosquitto's tests a CONNACK matches on its flags and reason code "
                         "alone (the counts are then not the suite's)")
    ap.add_argument("--trace", action="store_true",
                    help="paho suites through a proxy that records the packets: the report shows each failing "
                         "test's exchange")
    ap.add_argument("--out", help="folder for results.json and report.md (default /tmp/interop-results/TIME)")
    args = ap.parse_args(argv)
    if not args.paho_testing and not args.mosquitto_tests:
        ap.error("give --paho-testing DIR, --mosquitto-tests DIR or both")
    out = args.out or os.path.join("/tmp/interop-results", time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    results = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "brokers": {},
               "lenient_connack": args.lenient_connack}
    for broker in args.broker or brokers.NAMES:
        work = os.path.join(out, broker)
        os.makedirs(work, exist_ok=True)
        entry = {"version": brokers.version(broker), "suites": {}}
        results["brokers"][broker] = entry
        if args.paho_testing:
            folder = paho_folder(args.paho_testing)
            for title, script, _level in paho_suite.SUITES:
                if args.only and not any(o in script or o == title for o in args.only):
                    continue
                print("%s: %s against %s ..." % (title, script, broker), flush=True)
                recs = paho_suite.run_suite(folder, script, broker, work, args.board, traced=args.trace)
                entry["suites"][title] = recs
                print("  " + report.paho_count(recs), flush=True)
        if args.mosquitto_tests:
            print("Mosquitto's broker tests against %s ..." % broker, flush=True)
            folder = mosq_suite.broker_dir(args.mosquitto_tests)
            if broker == "mosquitto" and not os.stat(folder).st_mode & 0o002:
                print("  warning: %s is not writable by others: mosquitto, started as root, drops to its own "
                      "user and cannot save persistence files there (chmod a+w it)" % folder, flush=True)
            only = [o for o in args.only or () if not o.startswith("paho")] or None
            recs = mosq_suite.run_all(args.mosquitto_tests, broker, work, args.lenient_connack, only,
                                      log=lambda s: print(s, flush=True))
            entry["suites"]["mosquitto"] = recs
            for line in report.mosq_counts(recs):
                print("  " + line, flush=True)
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(report.markdown(results))
    print("\n".join(report.summary(results)))
    print("details: %s" % os.path.join(out, "report.md"))


if __name__ == "__main__":
    main()
