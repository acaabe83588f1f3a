"""Mosquitto's broker tests (test/broker/, the list in its test.py), one script at a time
through mosq_shim.py, with a verdict per protocol group: "5" (MQTT 5), "3.1.1" (levels 4 and
3) or "?" (the script builds no CONNECT with mosq_test.gen_connect). A script that names its
levels in its top-level calls runs once per group; any other runs once, and its verdict
counts for each group it connected at."""

import ast
import json
import os
import re
import subprocess
import sys

from brokers import free_port
from mosq_shim import split_levels

HERE = os.path.dirname(os.path.abspath(__file__))
GROUPS = (("5", (5,)), ("3.1.1", (3, 4)))
TIMEOUT = 300  # seconds for one script: the will-delay and expiry tests wait tens of seconds
OUTPUT_TAIL = 3000


def broker_dir(root):
    """test/broker under a Mosquitto tree (or its test/ folder, or test/broker itself)."""
    for sub in ("test/broker", "broker", "."):
        d = os.path.join(root, sub)
        if os.path.exists(os.path.join(d, "test.py")) and os.path.exists(os.path.join(d, "mosq_test_helper.py")):
            return os.path.abspath(d)
    sys.exit("no test/broker/test.py under %s: pass the folder `git archive HEAD test` of eclipse/mosquitto "
             "was unpacked into" % root)


def listed_tests(folder):
    """[(ports, script)] as test.py lists them, commented-out lines left out."""
    out = []
    with open(os.path.join(folder, "test.py")) as f:
        for line in f:
            m = re.match(r"\s*\(\s*(\d+)\s*,\s*'\./([^']+\.py)'\s*\)", line)
            if m:
                out.append((int(m.group(1)), m.group(2)))
    return out


def group_of(level):
    for name, levels in GROUPS:
        if level in levels:
            return name
    return "?"


def named_levels(text):
    """Levels a script names in its text (proto_ver=5, `for proto_ver in [4, 5]`), for the
    groups of a script that stopped before building a CONNECT (not applicable, say)."""
    out = {int(m.group(2)) & 0x7F for m in re.finditer(r"proto_ver\s*=\s*(128\s*\+\s*)?(\d+)", text)}
    for m in re.finditer(r"for\s+proto_ver\s+in\s+[\[(]([\d,\s]+)[\])]", text):
        out |= {int(x) & 0x7F for x in m.group(1).replace(",", " ").split()}
    return {lv for lv in out if lv in (3, 4, 5)}


def run_once(folder, script, nports, broker, levels, workdir, lenient):
    tag = "%s-%s-%s" % (broker, script.replace(".py", ""), levels.replace(",", ""))
    result = os.path.join(workdir, tag + ".json")
    ports = [str(free_port()) for _ in range(nports)]
    cmd = [sys.executable, os.path.join(HERE, "mosq_shim.py"), broker, levels + ("~" if lenient else ""),
           result, workdir, script] + ports
    try:
        p = subprocess.run(cmd, cwd=folder, capture_output=True, timeout=TIMEOUT)
        output = (p.stdout + p.stderr).decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        output = ((e.stdout or b"") + (e.stderr or b"")).decode(errors="replace")
        return {"exit": 1, "error": "timed out after %d s" % TIMEOUT, "output": output[-OUTPUT_TAIL:],
                "not_applicable": None, "connect_levels": []}
    try:
        with open(result) as f:
            r = json.load(f)
    except (OSError, ValueError):
        r = {"exit": 1, "error": "the shim gave no result", "not_applicable": None, "connect_levels": []}
    r["output"] = output[-OUTPUT_TAIL:]
    return r


def verdict(r):
    if r.get("not_applicable"):
        return "n/a"
    return "pass" if r["exit"] == 0 and not r.get("error") else "fail"


def run_test(folder, nports, script, broker, workdir, lenient):
    """[record] for one script: one per protocol group it exercised."""
    with open(os.path.join(folder, script)) as f:
        text = f.read()
    split = split_levels(ast.parse(text).body)
    records = []
    if split:
        for name, levels in GROUPS:
            if split & set(levels):
                r = run_once(folder, script, nports, broker, ",".join(map(str, levels)), workdir, lenient)
                records.append(dict(r, test=script, group=name, verdict=verdict(r)))
        return records
    r = run_once(folder, script, nports, broker, "all", workdir, lenient)
    levels = set(r.get("connect_levels", ()))
    if r.get("not_applicable") or not levels:
        levels |= named_levels(text)
    groups = sorted({group_of(lv) for lv in levels}) or ["?"]
    v = verdict(r)
    for name in groups:
        note = ""
        if len(groups) > 1:
            note = "one run for both protocol groups"
            if v == "fail" and r.get("last_level"):
                note += "; it stopped after building a level %d CONNECT" % r["last_level"]
        records.append(dict(r, test=script, group=name, verdict=v, mixed=note))
    return records


def run_all(root, broker, workdir, lenient=False, only=None, log=print):
    folder = broker_dir(root)
    records = []
    for nports, script in listed_tests(folder):
        if only and not any(o in script for o in only):
            continue
        for rec in run_test(folder, nports, script, broker, workdir, lenient):
            log("  %-5s %-5s %s%s" % (rec["verdict"], rec["group"], script,
                                      ": " + rec["not_applicable"] if rec.get("not_applicable") else ""))
            records.append(rec)
    return records
