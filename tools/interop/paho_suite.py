"""The paho interoperability suites (eclipse/paho.mqtt.testing, interoperability/): each runs
whole, in order, against one broker started for it, as its README runs it; the verdicts come
from paho_driver.py, one record per test."""

import json
import os
import subprocess
import sys

import pktrace
from brokers import Running

HERE = os.path.dirname(os.path.abspath(__file__))
SUITES = (("paho MQTT 5", "client_test5.py", 5), ("paho MQTT 3.1.1", "client_test.py", 4))
TIMEOUT = 1200  # seconds for a whole suite; client_test5 takes about 140 s against a good broker
TEST_TIMEOUT = 90  # seconds for one test: the longest wait in a paho test is about 20 s


def run_suite(folder, script, broker, workdir, board=None, only=(), traced=False):
    """Records of one suite against a fresh `broker`; a record per test plus, when the broker
    died or logged a traceback, a last record saying so. traced: through pktrace.Tracer, each
    failing test's record holding the packets of its time ("trace")."""
    tag = "%s-%s" % (broker, script.replace(".py", ""))
    results = os.path.join(workdir, tag + ".json")
    b = Running(broker, os.path.join(workdir, tag + ".broker.log"), board=board)
    out = open(os.path.join(workdir, tag + ".out"), "w")
    port = b.port
    if traced:
        tracepath = os.path.join(workdir, tag + ".trace")
        tracer = pktrace.Tracer(b.port, open(tracepath, "w"))
        port = tracer.port
    records, todo = [], list(only)
    while True:
        if os.path.exists(results):
            os.remove(results)
        try:
            subprocess.run([sys.executable, os.path.join(HERE, "paho_driver.py"), script, str(port), results,
                            str(TEST_TIMEOUT)] + todo, cwd=folder, stdout=out, stderr=subprocess.STDOUT,
                           timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            break
        try:
            with open(results) as f:
                got = json.load(f)
        except (OSError, ValueError):
            break
        records += got["records"]
        if not got["records"] or got["records"][-1]["verdict"] != "timeout":
            break
        # Again for the tests after the one that hung (setUpClass cleans the broker's state).
        names = got["tests"]
        todo = names[names.index(got["records"][-1]["test"]) + 1:]
        if not todo:
            break
    out.close()
    alive = b.alive()
    b.close()
    if traced:
        tracer.close()
    if not records:
        records = [{"test": "(suite)", "verdict": "error", "doc": "",
                    "message": "the suite gave no results: see %s.out" % tag}]
    if traced:
        for r in records:
            if r["verdict"] in ("fail", "error", "timeout") and "start" in r:
                r["trace"] = pktrace.window(tracepath, r["start"], r["end"])
    with open(b.logpath, errors="replace") as f:
        log = f.read()
    if not alive or "Traceback" in log:
        records.append({"test": "(broker)", "verdict": "error", "doc": "",
                        "message": ("the broker died during the suite" if not alive else
                                    "the broker logged a traceback") + ": see " + b.logpath})
    return records
