"""Tests of the emulated flash (tests/support/flashsim.py) and of the power-cut / wear harness
(tests/support/powercut.py) that the durable store is tested with. Both run inside the MicroPython
unix port: each test writes a small MicroPython script into tmp_path, runs it with
MICROPYPATH=tests/support:firmware, and reads back the lines it prints as `RESULT <json>`."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTS = os.path.join(ROOT, "tests", "support")
FIRMWARE = os.path.join(ROOT, "firmware")
MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")


def run_mp(path, code, timeout=60):
    """Run code in the MicroPython unix port; return (dict of RESULT name -> value, stdout)."""
    path.write_text(code)
    env = dict(os.environ, MICROPYPATH=".frozen:" + TESTS + ":" + FIRMWARE)
    r = subprocess.run([MICROPYTHON, str(path)], env=env, capture_output=True, text=True,
                       timeout=timeout, cwd=str(path.parent))
    assert r.returncode == 0, "micropython failed:\n" + r.stdout + r.stderr
    results = {}
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            name, value = json.loads(line[len("RESULT "):])
            results[name] = value
    return results, r.stdout


PRELUDE = """
import json, gc, os
from flashsim import FlashSim, PowerCut, mkfs_and_mount, mount, umount

def result(name, value):
    print("RESULT " + json.dumps([name, value]))

def exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False
"""


# --- the device itself ------------------------------------------------------------------

DEVICE_SCRIPT = PRELUDE + """
# mkfs + mount + a file written and read back, with the counters it cost
dev = FlashSim(blocks=32)
mkfs_and_mount(dev, "/flash")
after_mkfs = dev.stats()
with open("/flash/hello.txt", "w") as f:
    f.write("hello flash")
os.mkdir("/flash/d")
with open("/flash/d/big.bin", "wb") as f:
    f.write(bytes(range(256)) * 40)  # 10 KiB: spans blocks
umount("/flash")
mount(dev, "/flash")
with open("/flash/hello.txt") as f:
    text = f.read()
with open("/flash/d/big.bin", "rb") as f:
    big_ok = f.read() == bytes(range(256)) * 40
umount("/flash")
result("mkfs_stats", after_mkfs)
result("roundtrip", [text, big_ok])
result("stats", dev.stats())
result("block_erases_sum", sum(dev.block_erases))

# NOR rules on a raw device
d = FlashSim(blocks=4, block_size=256)
d.ioctl(6, 1)
erased = bytes(d.data[256:512]) == b"\\xff" * 256
d.writeblocks(1, b"\\x0f\\xf0", 0)                  # clears bits only
ok1 = bytes(d.data[256:258]) == b"\\x0f\\xf0" and d.nor_violations == 0
d.writeblocks(1, b"\\x00", 1)                        # clearing more bits is fine
ok2 = d.data[257] == 0x00 and d.nor_violations == 0
d.writeblocks(1, b"\\xff\\x0f", 0)                   # would set 0 bits to 1: a violation
viol = [d.nor_violations, d.data[256], d.data[257]]  # and the chip keeps old & new
buf = bytearray(2)
d.readblocks(1, buf, 0)
result("nor", [erased, ok1, ok2, viol, list(buf), d.erases, d.block_erases, d.programs,
               d.bytes_programmed])
d.writeblocks(2, bytes(512))                        # simple interface: erase + program each block
result("simple_write", [d.block_erases, bytes(d.data[512:1024]) == bytes(512)])

# power cut: the 3rd operation does not happen; everything afterwards raises PowerCut
d = FlashSim(blocks=4, block_size=256, cut_after=3)
d.ioctl(6, 0)
d.writeblocks(0, b"\\x11" * 8, 0)
trace = []
try:
    try:
        d.writeblocks(0, b"\\x22" * 8, 8)
    except Exception:
        trace.append("caught by except Exception")
except PowerCut:
    trace.append("PowerCut")
for call in (lambda: d.readblocks(0, bytearray(4), 0), lambda: d.ioctl(6, 1),
             lambda: d.writeblocks(1, b"\\x00", 0), lambda: d.ioctl(4, 0)):
    try:
        call()
        trace.append("worked")
    except PowerCut:
        trace.append("dead")
result("cut", [trace, bytes(d.data[0:16]).hex(), d.ops, d.programs, d.erases,
               d.cut_info, issubclass(PowerCut, Exception)])
d2 = d.reboot()
d2.writeblocks(0, b"\\x33" * 4, 16)
result("reboot", [bytes(d2.data[0:20]).hex(), d2.ops, d2.dead])

# torn program: the first half lands; torn erase: the first half of the block is erased
d = FlashSim(blocks=2, block_size=16, cut_after=2, torn=True)
d.ioctl(6, 0)
try:
    d.writeblocks(0, b"\\x00" * 8, 0)
except PowerCut:
    pass
torn_prog = bytes(d.data[0:16]).hex()
d = FlashSim(blocks=2, block_size=16, image=bytes(32), cut_after=1, torn=True)
try:
    d.ioctl(6, 1)
except PowerCut:
    pass
result("torn", [torn_prog, bytes(d.data[16:32]).hex()])
"""


@pytest.fixture(scope="module")
def device_results(tmp_path_factory):
    results, _ = run_mp(tmp_path_factory.mktemp("flashsim") / "device.py", DEVICE_SCRIPT)
    return results


def test_mkfs_mount_write_read(device_results):
    assert device_results["roundtrip"] == ["hello flash", True]


def test_counters(device_results):
    mkfs, st = device_results["mkfs_stats"], device_results["stats"]
    assert mkfs["erases"] >= 1 and mkfs["programs"] >= 1      # mkfs wrote the superblocks
    assert st["erases"] > mkfs["erases"]                      # 10 KiB of file: new blocks
    assert st["bytes_programmed"] >= 10240 + 11
    assert st["programs"] > mkfs["programs"] and st["reads"] > mkfs["reads"]
    assert st["ops"] == st["erases"] + st["programs"]
    assert device_results["block_erases_sum"] == st["erases"]
    assert st["nor_violations"] == 0


def test_nor_rules(device_results):
    erased, ok1, ok2, viol, readback, erases, block_erases, programs, nbytes = \
        device_results["nor"]
    assert erased and ok1 and ok2
    assert viol == [1, 0x0F, 0x00]          # one violating program; stored old & new
    assert readback == [0x0F, 0x00]
    assert (erases, block_erases, programs, nbytes) == (1, [0, 1, 0, 0], 3, 5)
    assert device_results["simple_write"] == [[0, 1, 1, 1], True]


def test_power_cut_kills_the_device(device_results):
    trace, head, ops, programs, erases, info, is_exception = device_results["cut"]
    assert trace == ["PowerCut", "dead", "dead", "dead", "dead"]
    assert not is_exception
    assert head == "11" * 8 + "ff" * 8        # the cut program left nothing (not torn)
    assert (ops, programs, erases) == (3, 1, 1)
    assert info == ["program", 0, 8, 8]
    head2, ops2, dead2 = device_results["reboot"]
    assert head2 == "11" * 8 + "ff" * 8 + "33" * 4 and ops2 == 1 and not dead2


def test_torn_operations(device_results):
    torn_prog, torn_erase = device_results["torn"]
    assert torn_prog == "00" * 4 + "ff" * 12
    assert torn_erase == "ff" * 8 + "00" * 8


# --- a file-backed image survives the process ----------------------------------------------

def test_file_backed_image_survives_process(tmp_path):
    img = str(tmp_path / "flash.img")
    write = PRELUDE + """
dev = FlashSim(blocks=16, path=%r)
mkfs_and_mount(dev, "/flash")
with open("/flash/keep.txt", "w") as f:
    f.write("survives")
dev.cut_after = dev.ops + 1
try:
    with open("/flash/lost.txt", "w") as f:
        f.write("x" * 300)
except PowerCut:
    result("cut", True)
result("same", open(%r, "rb").read() == dev.data)
""" % (img, img)
    results, _ = run_mp(tmp_path / "write.py", write)
    assert results == {"cut": True, "same": True}
    assert os.path.getsize(img) == 16 * 4096
    read = PRELUDE + """
dev = FlashSim(blocks=16, path=%r)
mount(dev, "/flash")
with open("/flash/keep.txt") as f:
    result("keep", f.read())
result("names", sorted(os.listdir("/flash")))
""" % img
    results, _ = run_mp(tmp_path / "read.py", read)
    assert results["keep"] == "survives"
    assert "keep.txt" in results["names"]


# --- every cut point of a small workload, with flashsim alone --------------------------------

SWEEP_SCRIPT = PRELUDE + """
N_REC = 20
REC = 32

def record(i):
    return b"%%031d\\n" %% i

def workload(acked):
    f = open("/flash/log", "ab")         # left open at the cut on purpose: the garbage
    for i in range(N_REC):                # collector closes it later on the dead chip
        f.write(record(i))
        f.flush()
        acked.append(i)
    f.close()

base = FlashSim(blocks=32)
import vfs
vfs.VfsLfs2.mkfs(base)
image = base.image()

dev = FlashSim(blocks=32, image=image)
mount(dev, "/flash")
full = []
workload(full)
umount("/flash")
total = dev.ops
result("total", [total, len(full), dev.stats()])

for torn in (False, True):
    bad = []
    kept_extra = 0
    violations = 0
    ghost_used = 0
    for n in range(1, total + 1):
        acked = []
        dev = FlashSim(blocks=32, image=image, cut_after=n, torn=torn)
        mount(dev, "/flash")
        try:
            workload(acked)
            bad.append([n, "no cut"])
        except PowerCut:
            pass
        umount("/flash")
        at_cut = dev.image()
        gc.collect()                      # the open file's finaliser runs now
        if dev.image() != at_cut:
            bad.append([n, "the image changed after the cut"])
        if dev._ghost is not None and dev._ghost != dev.data:
            ghost_used += 1
        violations += dev.nor_violations
        dev2 = dev.reboot()
        try:
            mount(dev2, "/flash")
        except OSError as e:
            bad.append([n, "mount: %%r" %% (e,)])
            continue
        data = open("/flash/log", "rb").read() if exists("/flash/log") else b""
        k = len(data) // REC
        if data != b"".join(record(i) for i in range(k)):
            bad.append([n, "not a prefix of whole records: %%d bytes" %% len(data)])
        elif k < len(acked):
            bad.append([n, "lost acknowledged records: %%d kept, %%d acked" %% (k, len(acked))])
        elif k > len(acked):
            kept_extra += 1
        with open("/flash/after", "w") as f:
            f.write("writable")
        umount("/flash")
        mount(dev2, "/flash")
        if open("/flash/after").read() != "writable":
            bad.append([n, "not writable"])
        umount("/flash")
        violations += dev2.nor_violations
    result("torn" if torn else "clean", [total, bad, kept_extra, violations, ghost_used])
""" % ()


@pytest.fixture(scope="module")
def sweep_results(tmp_path_factory):
    return run_mp(tmp_path_factory.mktemp("flashsim") / "sweep.py", SWEEP_SCRIPT)


def test_workload_write_points(sweep_results):
    results, _ = sweep_results
    total, nacked, stats = results["total"]
    assert nacked == 20
    assert total == stats["programs"] + stats["erases"]
    assert total >= 40                     # at least one program and one erase per record
    assert stats["nor_violations"] == 0


@pytest.mark.parametrize("mode", ["clean", "torn"])
def test_every_cut_point_remounts_with_acknowledged_records(sweep_results, mode):
    results, _ = sweep_results
    total, bad, kept_extra, violations, ghost_used = results[mode]
    assert bad == []
    assert violations == 0
    assert kept_extra < total              # the in-flight record survives only sometimes


def test_files_closed_after_the_cut_leave_the_image_alone(sweep_results):
    results, stdout = sweep_results
    ghost_used = results["clean"][4] + results["torn"][4]
    assert ghost_used > 0                  # finalisers did write (to the ghost copy) ...
    assert "Traceback" not in stdout and "PowerCut" not in stdout   # ... quietly


# --- the reusable harness: powercut.sweep ---------------------------------------------------

HARNESS_SCRIPT = PRELUDE + """
import powercut

def rec(i):
    return b"rec %%027d\\n" %% i

def appender(fs_path, acked):
    with open(fs_path + "/log", "ab") as f:
        for i in range(15):
            f.write(rec(i))
            f.flush()
            acked.append(i)              # acknowledged only once the flush returned

def eager(fs_path, acked):
    with open(fs_path + "/log", "ab") as f:
        for i in range(15):
            acked.append(i)              # BUG on purpose: acknowledged before it is written
            f.write(rec(i))
            f.flush()

def check(fs_path, n, acked):
    data = open(fs_path + "/log", "rb").read() if exists(fs_path + "/log") else b""
    k = len(data) // 32
    if data != b"".join(rec(i) for i in range(k)):
        return "garbage in the log"
    if k < len(acked):
        return "lost %%d acknowledged records" %% (len(acked) - k)
    return None

def wiper(fs_path, acked):
    with open(fs_path + "/x", "w") as f:
        f.write("x")
    dev = powercut.current_device
    dev.ioctl(6, 0)                      # erase both superblock copies ...
    dev.ioctl(6, 1)
    for i in range(4):                   # ... then a few more write points
        dev.writeblocks(10, b"\\x00" * 32, 32 * i)

def summary(s):
    return {"total": s["total"], "tried": s["tried"], "cut": s["cut"], "failures": s["failures"],
            "details": s["details"], "points": s["points"], "acked_full": s["acked_full"]}

result("good", summary(powercut.sweep(appender, check, torn=True)))
result("eager", summary(powercut.sweep(eager, check)))
result("subset", summary(powercut.sweep(appender, check, max_points=7)))
result("subset_again", powercut.sweep(appender, check, max_points=7)["points"])
result("wiper", summary(powercut.sweep(wiper, lambda p, n, a: None)))
result("select", [powercut.select_points(10), powercut.select_points(100, 5),
                  powercut.select_points(3, 10), powercut.select_points(50, 1)])
""" % ()


@pytest.fixture(scope="module")
def harness_results(tmp_path_factory):
    results, _ = run_mp(tmp_path_factory.mktemp("flashsim") / "harness.py", HARNESS_SCRIPT)
    return results


def test_sweep_every_point_passes_for_a_correct_scenario(harness_results):
    good = harness_results["good"]
    assert good["acked_full"] == list(range(15))
    assert good["total"] >= 30
    assert good["tried"] == good["cut"] == good["total"]
    assert good["points"] == list(range(1, good["total"] + 1))
    assert good["failures"] == 0, good["details"]


def test_sweep_finds_acknowledgements_before_flush(harness_results):
    eager = harness_results["eager"]
    assert eager["tried"] == eager["cut"] == eager["total"]
    assert eager["failures"] > 0
    assert all("lost 1 acknowledged records" in text for _, text in eager["details"])


def test_sweep_subset_is_deterministic_and_spread(harness_results):
    sub = harness_results["subset"]
    pts = sub["points"]
    assert sub["tried"] == len(pts) == 7
    assert pts[0] == 1 and pts[-1] == sub["total"] and pts == sorted(set(pts))
    assert harness_results["subset_again"] == pts
    assert sub["failures"] == 0


def test_sweep_reports_an_image_that_does_not_mount(harness_results):
    wiper = harness_results["wiper"]
    texts = [text for _, text in wiper["details"]]
    assert any("does not mount" in t for t in texts)
    # the uncut run itself ends with a wiped filesystem: the last points cannot mount
    assert [n for n, t in wiper["details"] if "does not mount" in t][-1] == wiper["total"]


def test_select_points(harness_results):
    assert harness_results["select"] == [list(range(1, 11)), [1, 25, 50, 75, 100], [1, 2, 3],
                                         [50]]


# --- wear ------------------------------------------------------------------------------------

WEAR_SCRIPT = PRELUDE + """
import powercut

N = 100
REC = b"r" * 31 + b"\\n"

def append_flush_each(fs_path):
    with open(fs_path + "/log", "ab") as f:
        for i in range(N):
            f.write(REC)
            f.flush()

def append_flush_once(fs_path):
    with open(fs_path + "/log", "ab") as f:
        for i in range(N):
            f.write(REC)

def rewrite_small(fs_path):
    for i in range(N):
        with open(fs_path + "/state", "wb") as f:
            f.write(b"%%063d" %% i)

for name, w in (("flush_each", append_flush_each), ("flush_once", append_flush_once),
                ("rewrite_64", rewrite_small)):
    result(name, powercut.erases_for(w))
""" % ()


@pytest.fixture(scope="module")
def wear_results(tmp_path_factory):
    results, _ = run_mp(tmp_path_factory.mktemp("flashsim") / "wear.py", WEAR_SCRIPT)
    for name, st in sorted(results.items()):
        print("wear %-11s per record: %.2f erases, %.1f programs, %.0f bytes programmed"
              % (name, st["erases"] / 100, st["programs"] / 100, st["bytes_programmed"] / 100))
    return results


def test_wear_append_flush_costs_about_an_erase_per_record(wear_results):
    each, once = wear_results["flush_each"], wear_results["flush_once"]
    assert 0.5 <= each["erases"] / 100 <= 1.5          # docs/platform.md §3: 0.97
    assert once["erases"] * 10 <= each["erases"]       # one flush at the end: far fewer
    assert each["bytes_programmed"] >= 100 * 32
    assert once["bytes_programmed"] >= 100 * 32
    assert each["programs"] > 5 * once["programs"]
    assert each["nor_violations"] == once["nor_violations"] == 0


def test_wear_small_inline_rewrite_is_cheap(wear_results):
    small, each = wear_results["rewrite_64"], wear_results["flush_each"]
    assert small["erases"] * 5 <= each["erases"]       # docs/platform.md §3: 0.03 vs 0.97
    assert small["bytes_programmed"] >= 100 * 64       # the rewrites did write (129 B a record)
    assert small["nor_violations"] == 0
