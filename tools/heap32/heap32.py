"""The broker's heap on 32 bits, side by side with the 64-bit unix port: runs the steps of
tools/heap32/heapsteps.py in the webassembly port of MicroPython (32-bit, from npm; `make
heap32-deps` installs it) and in .venv's unix port, on the same .mpy files, and keeps the
figures in tools/heap32/figures.json.

    .venv/bin/python tools/heap32/heap32.py            # measure and print, both ports
    .venv/bin/python tools/heap32/heap32.py --write    # and write figures.json

Figures per board profile (esp32 first): the heap at start with the store off and on, and
how many subscribed clients fit in the profile's heap_budget (the 32-bit heap fixed at that
size). With the esp32 profile: the cost per client, subscription, queued, retained and
in-flight message by tools/measure_heap.py's definitions, what the hot path allocates, and
what MQTT 5 costs beside 3.1.1 (heapsteps.v5costs: an idle v5 client, the v5 modules, a
shared subscription, a topic alias), under boards.esp32.v5."""

import argparse
import atexit
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "host_tools"))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from ubroker_tools import build, firmware, paths, profiles  # noqa: E402

FIGURES = os.path.join(HERE, "figures.json")
PORT = os.path.join(HERE, "node_modules", "@micropython", "micropython-webassembly-pyscript", "micropython.mjs")
FIRST = "esp32"  # the smallest board: the one the test suite runs the broker as


def boards():
    """The stock board profiles, FIRST first: the ones figures.json holds. A board running
    ubroker's firmware image is left out: this port loads the broker from .mpy files and
    cannot freeze it (image_boards)."""
    names = [b for b in paths.known_boards() if not firmware.frozen_groups(profiles.load_board(b))]
    return [FIRST] + [b for b in names if b != FIRST]


def image_boards():
    """The profiles of boards running ubroker's firmware image (a `frozen` line)."""
    return [b for b in paths.known_boards() if firmware.frozen_groups(profiles.load_board(b))]


def image_heap(board, store_on):
    """The heap in which an image board's clients are fitted here, from .mpy files: its
    heap_budget and what freezing frees at start (firmware.frozen_saving, measured on 32
    bits in the qemu port), which the .mpy files take instead."""
    prof = profiles.load_board(board)
    cfg = profiles.fwconfig().resolve(prof)
    return prof["heap_budget"] + firmware.frozen_saving(cfg, store_on)


def measure_heap_args():
    """The costs step's arguments: tools/measure_heap.py's workload (its CLIENTS, ...) and the
    limits it sets over the esp32 profile (LIMITS), so that both measure by one definition."""
    import measure_heap as mh

    sizes = "clients=%d,subscriptions=%d,queued=%d,retained=%d,inflight=%d,payload=%d" % (
        mh.CLIENTS, mh.SUBSCRIPTIONS, mh.QUEUED, mh.RETAINED, mh.INFLIGHT, mh.PAYLOAD)
    return [sizes] + ["%s=%d" % kv for kv in mh.LIMITS.items()]


def _compile(pairs, out, opt):
    """(source, name) pairs compiled into out/name.mpy (bytecode, mpy-cross -O<opt>, the
    source name embedded as on `ubroker run`), redone only for a source newer than its .mpy."""
    for src, name in pairs:
        dst = os.path.join(out, name[:-3] + ".mpy")
        if os.path.exists(dst) and os.path.getmtime(dst) >= os.path.getmtime(src):
            continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        tmp = "%s.%d-%d.tmp" % (dst, os.getpid(), threading.get_ident())
        build.compile_one(src, tmp, "none", name, opt=opt)
        os.replace(tmp, dst)  # never half a file for a run that reads it meanwhile


def code(opt):
    """The folders to put on the interpreter's path: the firmware at the profile's opt_level,
    the harness (heapsteps, tests/support/broker_sim.py) at -O0, so its tracebacks keep lines."""
    fw = os.path.join(ROOT, "build", "heap32", "O%d" % opt)
    if os.path.abspath(paths.FIRMWARE) != os.path.join(ROOT, "firmware"):  # UBROKER_FIRMWARE: another tree
        fw = os.path.join(ROOT, "build", "heap32", "fw-%s" % hashlib.sha1(paths.FIRMWARE.encode()).hexdigest()[:8],
                          "O%d" % opt)
    pkg = os.path.join(paths.FIRMWARE, "ubroker")
    _compile([(os.path.join(pkg, f), "ubroker/" + f) for f in sorted(os.listdir(pkg)) if f.endswith(".py")], fw, opt)
    for name in os.listdir(os.path.join(fw, "ubroker")):
        if not os.path.exists(os.path.join(pkg, name[:-4] + ".py")):
            os.remove(os.path.join(fw, "ubroker", name))  # a module since deleted
    harness = os.path.join(ROOT, "build", "heap32", "harness")
    _compile([(os.path.join(HERE, "heapsteps.py"), "heapsteps.py"),
              (os.path.join(HERE, "heapsteps_v5.py"), "heapsteps_v5.py"),
              (os.path.join(ROOT, "tests", "support", "broker_sim.py"), "broker_sim.py")], harness, 0)
    return [fw, harness]


class StepFailed(Exception):
    pass


def _parse(r, what):
    if r.returncode != 0:
        raise StepFailed("%s failed (exit %d):\n%s%s" % (what, r.returncode, r.stdout, r.stderr))
    out = {}
    for line in r.stdout.splitlines():
        k, _, v = line.partition(" ")
        out[k] = int(v) if re.fullmatch(r"-?\d+", v) else v
    return out


def _workdir():
    """A folder holding boards/ (the profiles, named as `ubroker run` names them) for the
    unix port, which the step reads its profile and keeps its store in."""
    d = tempfile.mkdtemp(prefix="heap32-")
    shutil.copytree(paths.BOARDS, os.path.join(d, "boards"))
    return d


def run32(step, args, opt, heap="4M", fixed=False):
    """A step of heapsteps in the webassembly port; returns its figures as a dict."""
    if not os.path.exists(PORT):
        raise StepFailed("no webassembly MicroPython in %s: run `make heap32-deps`" % os.path.relpath(HERE, ROOT))
    node = shutil.which("node")
    if node is None:
        raise StepFailed("node is not installed (make heap32-deps installs it)")
    cmd = [node, os.path.join(HERE, "run.mjs"), "--heap", str(heap)] + (["--fixed"] if fixed else [])
    cmd += code(opt) + [_boards_only(), "--", step] + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return _parse(r, "32-bit %s %s" % (step, " ".join(args)))


_BOARDS_DIR = []


def _boards_only():
    """A folder whose only entry is boards/: copied to the webassembly port's root."""
    if not _BOARDS_DIR:
        _BOARDS_DIR.append(_workdir())
        atexit.register(shutil.rmtree, _BOARDS_DIR[0], True)
    return _BOARDS_DIR[0]


def run64(step, args, opt, heap="4M"):
    """The same step in the 64-bit unix port."""
    mp = paths.micropython()
    if mp is None:
        raise StepFailed("no micropython (unix port) found: make setup")
    wd = _workdir()
    try:
        env = dict(os.environ, MICROPYPATH=os.pathsep.join(code(opt)))
        mod, _, fn = step.rpartition(".")  # "heapsteps_v5.v5costs": a step of another module
        r = subprocess.run([mp, "-X", "heapsize=" + str(heap), "-m", mod or "heapsteps", fn] + list(args),
                           capture_output=True, text=True, timeout=300, cwd=wd, env=env)
    finally:
        shutil.rmtree(wd, ignore_errors=True)
    return _parse(r, "64-bit %s %s" % (step, " ".join(args)))


def board_info(board):
    prof = profiles.load_board(board)
    return {"heap_budget": prof["heap_budget"], "max_connections": prof["max_connections"],
            "opt_level": build.code_options(prof, board)[2], "heap_reserve": prof.get("heap_reserve", 0)}


STORES = (("store_off", ""), ("store_on", "data"))


def jobs32(board_list):
    """The 32-bit runs, as (key, function, args): per board the heap at start and the clients
    that fit its heap_budget (heap fixed at that size), store off and on; with the first
    board the interpreter itself, the costs per object and the hot path."""
    out = []
    first = board_list[0]
    info = board_info(first)
    out.append((("interpreter",), run32, ("interpreter", [], info["opt_level"], info["heap_budget"], True)))
    for board in board_list:
        info = board_info(board)
        for key, store in STORES:
            out.append((("boards", board, key), run32,
                        ("fit", ["boards/%s.conf" % board, store], info["opt_level"], info["heap_budget"], True)))
    info = board_info(first)  # the first board's opt_level (the loop left the last board's)
    path = "boards/%s.conf" % first
    out.append((("costs",), run32, ("costs", [path] + measure_heap_args(), info["opt_level"])))
    out.append((("hot",), run32, ("hot", [path], info["opt_level"])))
    out.append((("v5",), run32, ("heapsteps_v5.v5costs", [path] + measure_heap_args(), info["opt_level"])))
    return out


def jobs64(board_list):
    """The same figures in the 64-bit unix port, for the side by side (the heap at start
    only: on this port tests/memory/test_memory.py connects the clients through real sockets)."""
    out = []
    first = board_list[0]
    for board in board_list:
        info = board_info(board)
        for key, store in STORES:
            out.append((("boards", board, key), run64, ("fit", ["boards/%s.conf" % board, store, "1"], info["opt_level"])))
    info = board_info(first)
    path = "boards/%s.conf" % first
    out.append((("costs",), run64, ("costs", [path] + measure_heap_args(), info["opt_level"])))
    out.append((("hot",), run64, ("hot", [path], info["opt_level"])))
    out.append((("v5",), run64, ("heapsteps_v5.v5costs", [path] + measure_heap_args(), info["opt_level"])))
    return out


# The one-time figures of the v5costs step and the qstrs_ lines around each (heapsteps_v5._qstrs)
V5_ONCE = (("v5_modules", "g0", "g1"), ("v5_subscribe_module", "g1", "g2"), ("shared_first", "s0", "s1"))


def _pools(line):
    """The bytes of the qstr pools' tables and their count, from a micropython.qstr_info() line."""
    f = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", line))
    return f["n_total_bytes"] - f["n_str_data_bytes"], f["n_pool"]


def v5_figures(raw):
    """The v5costs step's figures, a one-time figure without the new qstr pool the interpreter
    allocated within it if it did (NAME_qstr_pool: its table; 0 when none). Where the pools
    grow is chance (each new one doubles), so a figure with it would be some other module's
    share as much as this one's."""
    out = {k: v for k, v in raw.items() if not k.startswith("qstrs_")}
    for name, a, b in V5_ONCE:
        (ta, na), (tb, nb) = _pools(raw["qstrs_" + a]), _pools(raw["qstrs_" + b])
        lump = tb - ta if nb > na else 0
        out[name] -= lump
        out[name + "_qstr_pool"] = lump
    return out


def run_jobs(jobs, workers=2):
    """{key: figures} for the jobs, run workers at a time (each is its own process)."""
    from concurrent.futures import ThreadPoolExecutor

    for opt in set(args[2] for _, _, args in jobs):
        code(opt)  # compiled once, before the runs read it
    _boards_only()
    with ThreadPoolExecutor(workers) as ex:
        futures = [(key, ex.submit(fn, *args)) for key, fn, args in jobs]
        out = {}
        for key, f in futures:
            d = out
            for k in key[:-1]:
                d = d.setdefault(k, {})
            d[key[-1]] = f.result()
    return out


def measure_heap_sockets():
    """tools/measure_heap.py's own figures (64-bit, real sockets; about 15 s)."""
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "measure_heap.py")], capture_output=True,
                       text=True, timeout=300)
    names = {"per connected client+session": "per_client", "per subscription": "per_subscription",
             "per queued message": "per_queued", "per retained message": "per_retained",
             "per in-flight message": "per_inflight", "baseline after start": "start_used"}
    out = {}
    for line in r.stdout.splitlines():
        for text, key in names.items():
            if line.startswith(text):
                out[key] = int(re.search(r"(\d+) B", line).group(1))
    return out


def _port32():
    with open(os.path.join(os.path.dirname(PORT), "package.json")) as f:
        pkg = json.load(f)
    return "MicroPython %s, webassembly port (npm %s)" % (pkg["version"], pkg["name"])


def measure(with64=True, with_sockets=False):
    bl = boards()
    figures = {"port32": _port32(), "boards": {}}
    for board in bl:
        figures["boards"][board] = board_info(board)
    m32 = run_jobs(jobs32(bl))
    m64 = run_jobs(jobs64(bl)) if with64 else {}
    figures["interpreter32"] = m32["interpreter"]
    for board in bl:
        figures["boards"][board]["32"] = m32["boards"][board]
        if with64:  # the heap at start only: its client is there to start the harness
            figures["boards"][board]["64"] = {store: {k: v for k, v in r.items() if k.startswith("start_")}
                                              for store, r in m64["boards"][board].items()}
    figures["boards"][bl[0]]["v5"] = {"32": v5_figures(m32["v5"])}
    if with64:
        figures["boards"][bl[0]]["v5"]["64"] = v5_figures(m64["v5"])
    figures["costs"] = {"32": m32["costs"]}
    figures["hot"] = {"32": m32["hot"]}
    if with64:
        figures["costs"]["64"] = m64["costs"]
        figures["hot"]["64"] = m64["hot"]
    if with_sockets:
        figures["costs"]["64_measure_heap_py"] = measure_heap_sockets()
    return figures


def _broker_own(costs):
    return costs["per_client"] - costs["harness_per_client"]


def report(fig):
    """The figures as text, 32-bit beside 64-bit."""
    lines = ["32-bit: %s, sys.maxsize %d" % (fig["port32"], fig["interpreter32"]["maxsize"]), ""]
    lines.append("Heap at start, broker's part (B; `ubroker run` logs it with the interpreter's own):")
    lines.append("%-14s %6s  %-9s %8s %8s %6s" % ("board", "heap", "store", "32-bit", "64-bit", "32/64"))
    for board, b in fig["boards"].items():
        for key, _ in STORES:
            a = b["32"][key]["start_broker"]
            c = b.get("64", {}).get(key, {}).get("start_broker")
            lines.append("%-14s %6s  %-9s %8d %8s %6s" % (board, _k(b["heap_budget"]), key[6:], a,
                                                          c or "", "%.2f" % (a / c) if c else ""))
    lines.append("")
    lines.append("Subscribed clients in the board's heap on 32 bits (heap fixed at heap_budget; the fake")
    lines.append("sockets, client objects and broker_sim, about 20 kB at 64 clients, count against it):")
    lines.append("%-14s %6s %8s   %-22s %-22s" % ("board", "heap", "clients", "store off: fit, free", "store on: fit, free"))
    for board, b in fig["boards"].items():
        f = b["32"]
        lines.append("%-14s %6s %8d   %-22s %-22s" % (
            board, _k(b["heap_budget"]), b["max_connections"],
            "%d, %d B" % (f["store_off"]["fitted"], f["store_off"]["end_free"]),
            "%d, %d B" % (f["store_on"]["fitted"], f["store_on"]["end_free"])))
    lines.append("")
    c32 = fig["costs"]["32"]
    c64 = fig["costs"].get("64")
    sock = fig["costs"].get("64_measure_heap_py")
    lines.append("Heap per object, esp32 profile, tools/measure_heap.py's definitions (B):")
    lines.append("%-34s %7s %7s %s" % ("", "32-bit", "64-bit", " measure_heap.py (64-bit, real sockets)" if sock else ""))
    rows = [("per client (connected, idle)", "per_client"), ("per subscription", "per_subscription"),
            ("per queued QoS 1 message", "per_queued"), ("per in-flight QoS 1 message", "per_inflight"),
            ("per retained message", "per_retained")]
    for text, key in rows:
        a = _broker_own(c32) if key == "per_client" else c32[key]
        b = (_broker_own(c64) if key == "per_client" else c64[key]) if c64 else ""
        s = sock.get(key, "") if sock else ""
        if s != "" and key == "per_client":
            s = "%s (with the socket and its poll entry)" % s
        lines.append("%-34s %7s %7s  %s" % (text, a, b, s))
    lines.append("(per client: without the fake socket and client object of the harness, %s B on 32 bits)"
                 % c32["harness_per_client"])
    lines.append("")
    lines += report_v5(fig["boards"][FIRST].get("v5"))
    h32 = fig["hot"]["32"]
    h64 = fig["hot"].get("64", {})
    lines.append("Hot path, bytes allocated per message (garbage; the heap after a burst grew by):")
    for kind in ("qos0_read", "qos1_read", "qos0_consume", "qos1_consume"):
        lines.append("  %-13s 32-bit %4d (%d)   64-bit %4s (%s)" % (
            kind, h32["alloc_" + kind], h32["grow_" + kind], h64.get("alloc_" + kind, ""), h64.get("grow_" + kind, "")))
    lines.append("Counters at the largest small int (32-bit: 2**30 - 1), bytes more per message:")
    for k in sorted(h32):
        if k.startswith("counter_"):
            lines.append("  %-18s %d" % (k[8:], h32[k]))
    lines.append("Under micropython.heap_lock() (32-bit):")
    for k in sorted(h32):
        if k.startswith("locked_"):
            lines.append("  %-20s %s" % (k[7:], h32[k]))
    return "\n".join(lines)


V5_ROWS = (
    ("idle client, one subscription, 3.1.1", "idle_311"),
    ("idle client, one subscription, v5", "idle_v5"),
    ("v5 modules at the first v5 CONNECT", "v5_modules"),
    ("v5_subscribe.py, first v5 SUBSCRIBE", "v5_subscribe_module"),
    ("first shared subscription", "shared_first"),
    ("one more member of its group", "shared_member"),
    ("a new group of one", "shared_group"),
    ("a topic alias set by a client", "alias"),
    ("all 8 aliases of a connection", "aliases_8"),
)


def report_v5(v5):
    """The v5costs step's figures, 32-bit beside 64-bit."""
    if not v5:
        return []
    a, b = v5["32"], v5.get("64", {})
    lines = ["MQTT 5 beside 3.1.1, esp32 profile (B; heapsteps_v5.v5costs; per client without the harness's):"]
    lines.append("%-40s %7s %7s" % ("", "32-bit", "64-bit"))
    for text, key in V5_ROWS:
        lines.append("%-40s %7s %7s" % (text, a[key], b.get(key, "")))
    pools = ["%s %d B (%s-bit)" % (name, v[name + "_qstr_pool"], bits) for bits, v in sorted(v5.items())
             for name, _, _ in V5_ONCE if v.get(name + "_qstr_pool")]
    if pools:
        lines.append("(left out: the new qstr pool the interpreter allocated within %s)" % ", ".join(pools))
    lines.append("")
    return lines


def _k(n):
    return "%dk" % (n // 1024) if n < 1 << 20 else "%dM" % (n >> 20)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="write the figures to " + os.path.relpath(FIGURES, ROOT))
    ap.add_argument("--sockets", action="store_true", help="also run tools/measure_heap.py (64-bit, real sockets, ~15 s)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    fig = measure(with_sockets=args.sockets)
    print(json.dumps(fig, indent=1) if args.json else report(fig))
    if args.write:
        with open(FIGURES, "w") as f:
            json.dump(fig, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
