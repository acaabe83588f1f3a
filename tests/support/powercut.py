"""Power-cut sweeps and wear measurements on the emulated flash (tests/support/flashsim.py), run inside
the MicroPython unix port, in one process (no process per cut point).

    def scenario(fs_path, acked):          # runs on a freshly mounted filesystem at fs_path
        with open(fs_path + "/log", "ab") as f:
            for i in range(20):
                f.write(b"%31d\\n" % i)
                f.flush()
                acked.append(i)             # "acknowledged": must survive any later cut

    def check(fs_path, n, acked):          # runs on the image that survived cut point n
        ...                                 # None/True: fine; False, a string or an exception:
                                            # a failure (the string is the detail)

    summary = sweep(scenario, check)        # every write point, or max_points of them
    assert summary["failures"] == [], summary

sweep() first runs the scenario once on a fresh device to count its write points T (programs
and erases, from the mount to the unmount). Then for each chosen N in 1..T it restores the
same fresh image on a new FlashSim with cut_after=N, mounts it, runs the scenario until the
PowerCut (which derives from BaseException, so `except Exception` in the code under test does
not stop it), unmounts the dead filesystem, powers up a new FlashSim on the surviving bytes
(FlashSim.reboot(): cut disabled), mounts that (a mount error is a failure) and calls
check(fs_path, N, acked), `acked` being the list the scenario filled before the cut. With
check_writable (default) it then writes a small file, remounts, and reads it back.

The scenario must be deterministic (same write points every run); a run that ends without
reaching its cut point is reported as a failure.

erases_for(workload) runs workload(fs_path) once on a fresh filesystem and returns the wear
counters of the flash (erases, programs, bytes programmed, ...) for that workload alone.
"""

import gc

import flashsim
from flashsim import FlashSim, PowerCut

FS_PATH = "/flash"
# Geometry of the emulated chip for sweeps and wear runs: 64 blocks of 4 KiB (256 KiB). Small
# enough that two images (the device and the copy kept for files closed by the garbage
# collector after a cut) fit the unix port's default 2 MiB heap alongside the code under test.
BLOCKS = 64
MAX_DETAILS = 50  # failure details kept in a summary (all are counted)

# The device of the run in progress, for scenarios/checks that need it (e.g. its counters).
current_device = None


def select_points(total, max_points=None):
    """The cut points a sweep tries: every N in 1..total, or max_points of them spread evenly
    and deterministically over the range (always including 1 and total)."""
    if total <= 0:
        return []
    if max_points is None or max_points >= total:
        return list(range(1, total + 1))
    if max_points <= 1:
        return [total]
    pts = []
    for i in range(max_points):
        n = 1 + (i * (total - 1)) // (max_points - 1)
        if not pts or pts[-1] != n:
            pts.append(n)
    return pts


def fresh_image(blocks=BLOCKS, setup=None, fs_path=FS_PATH, mount_opts=None):
    """A freshly formatted LittleFS image (bytes); setup(fs_path), if given, runs on it first
    (not counted in any sweep)."""
    opts = mount_opts or {}
    dev = FlashSim(blocks=blocks)
    flashsim.mkfs_and_mount(dev, fs_path, **opts)
    try:
        if setup is not None:
            setup(fs_path)
    finally:
        flashsim.umount(fs_path)
    return dev.image()


def _run_scenario(scenario, dev, fs_path, opts, acked):
    """Mount dev, run the scenario, unmount. Returns None, or the exception it ended with."""
    global current_device
    current_device = dev
    try:
        flashsim.mount(dev, fs_path, **opts)
        scenario(fs_path, acked)
        flashsim.umount(fs_path)
        return None
    except PowerCut as e:
        flashsim.umount(fs_path)
        return e
    except Exception as e:  # a scenario bug (or an error the cut provoked): reported
        flashsim.umount(fs_path)
        return e


def _writable(fs_path, opts, dev):
    probe = fs_path + "/.powercut-probe"
    with open(probe, "wb") as f:
        f.write(b"probe-after-cut")
    flashsim.umount(fs_path)
    flashsim.mount(dev, fs_path, **opts)
    with open(probe, "rb") as f:
        got = f.read()
    if got != b"probe-after-cut":
        return "probe file read back as %r" % got
    return None


def sweep(scenario, check, max_points=None, torn=False, blocks=BLOCKS, setup=None,
          fs_path=FS_PATH, mount_opts=None, check_writable=True, points=None, log=None):
    """Cut the power at write point N of scenario(fs_path, acked) for every N (or a subset)
    and check what survived with check(fs_path, n, acked). See the module docstring.

    max_points: try at most this many points, spread evenly (select_points). points: an
    explicit list of N instead. torn: the interrupted operation is half applied. setup:
    runs once on the fresh image before the sweep (its writes are not cut points).
    mount_opts: readsize/progsize/lookahead/mtime for VfsLfs2. log: a function called with a
    line of text per failure (e.g. print), for progress while it runs.

    Returns a dict: total (write points of a full run), tried (points run), cut (runs that
    did lose power), failures (count), details (list of (n, text), at most MAX_DETAILS),
    points (the list of N tried), acked_full (what the uncut run acknowledged),
    full_stats (the uncut run's flash counters)."""
    global current_device
    opts = mount_opts or {}
    base = fresh_image(blocks, setup, fs_path, opts)

    # (a) the uncut run: how many write points?
    acked_full = []
    dev = FlashSim(blocks=blocks, image=bytearray(base))
    err = _run_scenario(scenario, dev, fs_path, opts, acked_full)
    if err is not None:
        raise err  # the scenario fails without any cut: nothing to sweep
    total = dev.ops
    full_stats = dev.stats()
    del dev
    gc.collect()

    if points is None:
        points = select_points(total, max_points)
    summary = {"total": total, "tried": 0, "cut": 0, "failures": 0, "details": [],
               "points": points, "acked_full": acked_full, "full_stats": full_stats}

    def fail(n, text):
        summary["failures"] += 1
        if len(summary["details"]) < MAX_DETAILS:
            summary["details"].append((n, text))
        if log is not None:
            log("cut %d: %s" % (n, text))

    for n in points:
        summary["tried"] += 1
        acked = []
        dev = FlashSim(blocks=blocks, image=bytearray(base), cut_after=n, torn=torn)
        err = _run_scenario(scenario, dev, fs_path, opts, acked)
        if isinstance(err, PowerCut):
            summary["cut"] += 1
        elif err is not None:
            fail(n, "scenario raised %s: %s" % (type(err).__name__, err))
        else:
            fail(n, "no power cut: the scenario made only %d write operations" % dev.ops)
        survivor = dev.reboot()
        dev = None
        current_device = survivor
        try:
            flashsim.mount(survivor, fs_path, **opts)
        except OSError as e:
            fail(n, "the surviving image does not mount: %r" % (e,))
            continue
        try:
            res = check(fs_path, n, acked)
            if res is not None and res is not True:
                fail(n, "check: %s" % (res if isinstance(res, str) else repr(res)))
            elif check_writable:
                bad = _writable(fs_path, opts, survivor)
                if bad:
                    fail(n, bad)
            if survivor.nor_violations:
                fail(n, "%d NOR violations after the cut" % survivor.nor_violations)
        except PowerCut as e:
            fail(n, "check hit a power cut: %s" % e)
        except Exception as e:
            fail(n, "check raised %s: %s" % (type(e).__name__, e))
        finally:
            flashsim.umount(fs_path)
            current_device = None
        survivor = None
        gc.collect()
    return summary


def erases_for(workload, blocks=BLOCKS, setup=None, fs_path=FS_PATH, mount_opts=None):
    """Run workload(fs_path) once on a fresh LittleFS (after setup(fs_path), if given, which
    is not counted) and return the flash counters it cost: a dict with erases,
    max_block_erases, programs, bytes_programmed, reads, bytes_read, nor_violations, ops.
    The unmount at the end is included (it writes nothing)."""
    global current_device
    opts = mount_opts or {}
    dev = FlashSim(blocks=blocks)
    current_device = dev
    flashsim.mkfs_and_mount(dev, fs_path, **opts)
    try:
        if setup is not None:
            setup(fs_path)
        dev.reset_counters()
        ops0 = dev.ops
        workload(fs_path)
    finally:
        flashsim.umount(fs_path)
        current_device = None
    stats = dev.stats()
    stats["ops"] -= ops0
    return stats
