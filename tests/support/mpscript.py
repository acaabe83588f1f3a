"""Running a measuring script in the MicroPython unix port beside the tests' venv, with the
firmware (or UBROKER_FIRMWARE's tree) on its path, and reading back the `name value` lines
it prints. The memory tests measure the broker this way, in a process of its own."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def board_conf(board):
    return os.path.join(ROOT, "boards", board + ".conf")


def run_mp(tmp_path, text, *args, heap=None, name="script.py", support=False):
    """Run text in the unix port (heap bytes of heap, or the port's default): the CompletedProcess.
    With support, tests/support is on the path too (broker_sim's in-process broker)."""
    script = tmp_path / name
    script.write_text(text)
    env = dict(os.environ)
    env["MICROPYPATH"] = os.environ.get("UBROKER_FIRMWARE") or os.path.join(ROOT, "firmware")
    if support:
        env["MICROPYPATH"] += ":" + os.path.join(ROOT, "tests", "support")
    mp = os.path.join(os.path.dirname(sys.executable), "micropython")
    return subprocess.run([mp] + (["-X", "heapsize=" + heap] if heap else []) + [str(script)] + list(args),
                          capture_output=True, text=True, timeout=120, env=env)


def run_done(tmp_path, text, *args, heap=None, name="script.py", support=False):
    """run_mp for a script that ends by printing `done`: its stdout, or the test fails with
    everything the script printed."""
    r = run_mp(tmp_path, text, *args, heap=heap, name=name, support=support)
    assert r.returncode == 0 and "done" in r.stdout, r.stdout + r.stderr
    return r.stdout


def figures(stdout):
    """The `name integer` lines of a script's output, as a dict."""
    out = {}
    for line in stdout.splitlines():
        k, _, v = line.partition(" ")
        if v and k != "log":
            out[k] = int(v)
    return out
