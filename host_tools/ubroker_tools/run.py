"""`ubroker run`: the broker in the MicroPython unix port, supervised from CPython so that
SIGTERM and SIGINT both stop it cleanly (the port turns SIGINT into KeyboardInterrupt)."""

import hashlib
import os
import signal
import subprocess
import sys

from . import budget, paths, profiles
from .build import BuildError, code_options, compile_one

HELP = """Run the broker in the MicroPython unix port (the same firmware/ code that boards run).

Without --board, --heap cuts the unix profile's limits (clients, subscriptions, packet size,
buffers) to fit the heap given; with --board, the board's limits apply unchanged. Either way
the broker is not started in a heap its tables do not fit: run says what heap it needs.

example:
  ubroker run                          # 127.0.0.1:1883, embedded defaults
  ubroker run --host 0.0.0.0 --port 1884 --data /var/lib/ubroker --heap 256k
  ubroker run --board esp32            # the esp32's limits in its 100k heap
"""


def add_parser(sub):
    p = sub.add_parser("run", help="run the broker on the unix port", description=HELP,
                       formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--host", help="address to listen on (default from config: 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (default 1883)")
    p.add_argument("--data", help="data folder for durable state (created if missing)")
    p.add_argument("--heap", help="MicroPython heap size, e.g. 96k or 8M (default: the board's heap_budget); "
                                  "without --board the unix profile's limits are cut to fit it")
    p.add_argument("--config", help="config file in mosquitto.conf form")
    p.add_argument("--board", help="board profile whose limits apply unchanged (default: unix, cut to fit --heap)")
    p.add_argument("--micropython", help="the micropython executable (default: the venv's, else PATH)")
    p.add_argument("--from-source", action="store_true",
                   help="run the .py files instead of compiling them to .mpy first (as boards run them)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every connect and disconnect")
    p.set_defaults(func=main)


def board_profile(name):
    """The board profile, parsed and checked as `ubroker build` does (the firmware's own
    parser), and (emit, opt_level); exits with the problem named."""
    try:
        prof = profiles.load_board(name)
        _, emit, opt = code_options(prof, name)
    except (profiles.UnknownBoard, BuildError, profiles.fwconfig().ConfigError) as e:
        sys.exit("ubroker run: %s" % e)
    return prof, emit, opt


# mpy-cross -march by the native architecture code a micropython reports in
# sys.implementation._mpy >> 10 (0: no native emitter, e.g. a port built for aarch64).
NATIVE_ARCH = {code: name for name, code in profiles.ARCH_CODE.items() if code}


def native_arch(mp):
    """The mpy-cross -march of the native code mp can load, or None if it has no native
    emitter (or cannot be asked)."""
    try:
        r = subprocess.run([mp, "-c", "import sys;print(sys.implementation._mpy>>10)"],
                           capture_output=True, text=True, timeout=30)
        return NATIVE_ARCH.get(int(r.stdout.strip()))
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def compiled(arch=None, opt=0):
    """firmware/ compiled with mpy-cross into build/run/, redone only for files that
    changed: bytecode, or with arch (an -march) native machine code for every function, in
    build/run-ARCH/; with opt (the profile's opt_level) at mpy-cross -O<opt>, in a folder
    ending in -O<opt>. Boards run .mpy too; loading bytecode instead of compiling the source on
    start leaves the heap unfragmented, which matters at a board's heap size. Native code
    runs the loop about 1.5x faster on the unix port (README: Performance) and lives outside
    the MicroPython heap there; the small boards' profiles keep bytecode, whose heap use is
    what the memory tests measure.
    Returns the folder to put on MICROPYPATH, or None if mpy-cross is not available."""
    out = os.path.join(os.path.dirname(paths.FIRMWARE), "build",
                       "run" + ("-" + arch if arch else "") + ("-O%d" % opt if opt else ""))
    # A folder compiled before the modules got their own source names (they embedded this
    # checkout's absolute paths) is compiled again in full.
    stamp = os.path.join(out, ".source-names")
    fresh = os.path.exists(stamp)
    jobs = []
    for sub in ("", "ubroker"):
        src_dir = os.path.join(paths.FIRMWARE, sub)
        for name in sorted(os.listdir(src_dir)):
            if not name.endswith(".py") or (sub == "" and name != "unix_main.py"):
                continue
            src = os.path.join(src_dir, name)
            dst = os.path.join(out, sub, name[:-3] + ".mpy")
            if not fresh or not os.path.exists(dst) or os.path.getmtime(dst) < os.path.getmtime(src):
                jobs.append((src, dst, (sub + "/" if sub else "") + name))
    for src, dst, name in jobs:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        # The source name a module embeds is interned in the heap when it loads: its name
        # under firmware/ (ubroker/broker.py), not this checkout's absolute path.
        try:
            compile_one(src, dst, arch or "none", name, native=bool(arch), opt=opt)
        except BuildError as e:
            if "No module named" in str(e):
                return None
            sys.exit("ubroker run: " + str(e))
    if not fresh:
        open(stamp, "w").close()
    from . import webpage  # found below the folder on MICROPYPATH, as on a board

    webpage.install(out)
    # A stale .mpy whose source is gone must not be imported.
    for sub in ("", "ubroker"):
        d = os.path.join(out, sub)
        for name in os.listdir(d) if os.path.isdir(d) else ():
            if name.endswith(".mpy") and not os.path.exists(os.path.join(paths.FIRMWARE, sub, name[:-4] + ".py")):
                os.remove(os.path.join(d, name))
    return out


def short(path):
    """path relative to the working folder when that is shorter. Every module the broker
    imports keeps the path it was found at (its __file__) and the source name mpy-cross
    embedded as interned strings in the heap, for good: from a checkout at a path 83
    characters longer, the two took 2,304 B more heap at start on the esp32 profile (measured
    2026-11-26), enough to turn the 64th client away. With relative paths and the modules'
    own names the heap at start is the same wherever the project was cloned, and close to a
    board's, whose modules load as ubroker/broker.mpy (source name broker.py, from `ubroker
    build`). The broker never changes its working folder."""
    try:
        rel = os.path.relpath(path)
    except (OSError, ValueError):  # the working folder is gone, or on another drive
        return path
    return rel if len(rel) < len(path) else path


def command(args, prof, code_dir=None, board_file=None, heap=None):
    """board_file: the profile the broker reads (default: the board's own); heap: in bytes
    (default --heap, else the profile's heap_budget)."""
    mp = paths.micropython(args.micropython)
    if not mp:
        sys.exit("ubroker run: no micropython found; install the venv (make run) or pass --micropython PATH")
    board = board_file or paths.board_file(args.board or "unix")
    heap = heap or args.heap or prof.get("heap_budget")
    cmd = [mp]
    if heap:
        cmd += ["-X", "heapsize=" + str(heap)]
    if code_dir:
        cmd += ["-m", "unix_main"]
    else:
        cmd += [os.path.join(paths.FIRMWARE, "unix_main.py")]
    cmd += ["--board-file", short(board)]
    for opt in ("host", "port", "data", "config"):
        v = getattr(args, opt)
        if v is not None:
            cmd += ["--" + opt, os.path.abspath(v) if opt in ("data", "config") else str(v)]
    if args.verbose:
        cmd.append("--verbose")
    return cmd


# ------------------------------------------------------------------ the heap
# A heap too small for the tables a profile allocates at start ended in a bare MemoryError
# (`--heap 96k` with the unix profile: its 4,096-subscription table alone is 68 kB). So run
# prices the start with budget.py's model first: without --board it cuts the unix profile's
# limits to the heap (budget.for_heap) and hands the broker that profile; with --board, or
# when nothing useful fits, it refuses in one line that names the heap needed.

def size(text):
    """A size such as 96k or 8M in bytes, read as the firmware reads heap_budget; None if
    text is not one."""
    cfgmod = profiles.fwconfig()
    try:
        return cfgmod.parse("heap_budget " + text)["heap_budget"]
    except cfgmod.ConfigError:
        return None


def kb(n):
    return "%dk" % -(-n // 1024)


def settings(args, prof):
    """(the settings the broker will start with as far as the host can tell, the user's
    config layer): the profile, the --config file if it reads (else the broker reports its
    errors, with their line numbers), and --data."""
    cfgmod = profiles.fwconfig()
    user = {}
    if args.config:
        try:
            user = cfgmod.load(args.config)
        except (OSError, cfgmod.ConfigError):
            pass
    cfg = cfgmod.resolve(prof, user)
    if args.data:
        cfg["persistence"], cfg["persistence_location"] = True, args.data
    return cfg, user


def code_form(prof, from_source, native_arch_name):
    """The budget.START_64 key for how a profile's code would load in this run."""
    if from_source:
        return "source"
    return "native" if native_arch_name and prof.get("emit") == "native" else "bytecode"


def board_that_fits(args, heap, native_arch_name):
    """(board, heap its tables need to start) for the board profile that fits heap, or if
    none does the one that needs least."""
    best = None
    for name in paths.known_boards():
        try:
            prof = profiles.load_board(name)
        except (profiles.UnknownBoard, profiles.fwconfig().ConfigError):
            continue
        cfg, _ = settings(args, prof)
        need = budget.start_need(cfg, code_form(prof, args.from_source, native_arch_name))
        if best is None or need < best[1]:
            best = (name, need)
    return best


def cut_profile(board, heap, cfg, cut, user):
    """The board's profile file with the limits for_heap changed from cfg appended (a later
    line wins), written to build/profiles/; the keys the user's config sets are left to it."""
    lines = []
    for key in sorted(cut):
        v = cut[key]
        if key not in user and v != cfg.get(key):
            lines.append("%s %s" % (key, ("true" if v else "false") if isinstance(v, bool) else v))
    with open(paths.board_file(board)) as f:
        text = f.read()
    text += "\n# `ubroker run --heap %s`: limits cut to fit this heap (budget.for_heap)\n%s\n" \
        % (kb(heap), "\n".join(lines))
    # Named by its content: runs with other configs or --data at the same heap cut other
    # limits, and one must not overwrite the file another's broker is about to read.
    out = os.path.join(paths.ROOT, "build", "profiles", "%s-%s-%s.conf"
                       % (board, kb(heap), hashlib.sha1(text.encode()).hexdigest()[:8]))
    if not os.path.exists(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        tmp = "%s.%d" % (out, os.getpid())
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, out)
    return out


def fit_heap(args, prof, heap, code, native_arch_name):
    """The profile file the broker is to read (None: the board's own), or exit naming the
    heap needed. A refusal is one line and exit status 1."""
    board = args.board or "unix"
    cfg, user = settings(args, prof)
    given = "--heap %s" % args.heap if args.heap else "its heap_budget %s" % kb(heap)
    path = None
    if args.board is None and args.heap:
        cut = budget.for_heap(cfg, heap, code)
        if cut is None:
            least = budget.smallest_heap(cfg, code)
            fits, need = board_that_fits(args, heap, native_arch_name)
            sys.exit("ubroker run: %s is too small for the broker: it needs --heap %s or more (%d clients, the "
                     "%s profile's limits cut to fit)%s" % (
                         given, kb(least), budget.SMALLEST["max_connections"], board,
                         ", or --board %s, whose tables fit %s" % (fits, args.heap) if need <= heap else
                         "; the smallest board profile, %s, needs --heap %s with --board %s" % (fits, kb(need), fits)))
        if cut != dict(cfg, heap_budget=heap):
            path = cut_profile(board, heap, cfg, cut, user)
            cfg = dict(cut, **{k: v for k, v in user.items() if k in cut})
            print("ubroker: limits cut to fit --heap %s: %d clients, %d sessions, %d subscriptions, packets up to "
                  "%d B (%s)" % (args.heap, cfg["max_connections"], cfg["max_sessions"], cfg["max_subscriptions"],
                                 cfg["max_packet_size"], os.path.relpath(path)), flush=True)
    need = budget.start_need(cfg, code)
    if need > heap:
        hint = ""
        if args.board is not None:
            unix = profiles.load_board("unix")
            if budget.for_heap(settings(args, unix)[0], heap, code_form(unix, args.from_source, native_arch_name)):
                hint = ", or leave out --board to have the unix profile's limits cut to fit it"
        extra = "".join(", " + f for f in budget.features(cfg))
        sys.exit("ubroker run: %s is too small for board %s%s: it needs --heap %s or more to start (%s of "
                 "tables%s)%s" % (given, board, " with " + args.config if user else "", kb(need),
                                  kb(sum(b for _, b in budget.start_tables(cfg))), extra, hint))
    return path


def _die_with_parent():
    """In the child, before exec: if this supervisor dies (even by SIGKILL), the kernel
    sends the broker SIGKILL too (Linux prctl PR_SET_PDEATHSIG), so no broker is orphaned."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def main(args):
    prof, emit, opt = board_profile(args.board or "unix")
    heap = size(args.heap) if args.heap else prof["heap_budget"]
    if heap is None:
        sys.exit("ubroker run: --heap expects a size such as 96k or 8M, not %r" % args.heap)
    code_dir = None
    arch = None
    if not args.from_source:
        wants = emit == "native"
        if wants:
            arch = native_arch(paths.micropython(args.micropython) or "micropython")
        code_dir = compiled(arch, opt)
        if code_dir:
            # Which code runs, in the broker's log: native where the board asks for it and
            # this micropython can run it, else bytecode.
            print("ubroker: code: %s%s in %s" % ("native %s" % arch if arch else
                                                 "bytecode (this micropython has no native emitter)" if wants
                                                 else "bytecode", " -O%d" % opt if opt else "",
                                                 os.path.relpath(code_dir)), flush=True)
    native = arch if code_dir else None
    board_file = fit_heap(args, prof, heap, code_form(prof, not code_dir, native), native)
    cmd = command(args, prof, code_dir, board_file, heap)
    env = dict(os.environ)
    env["MICROPYPATH"] = short(code_dir or paths.FIRMWARE) + os.pathsep + ".frozen"
    # Its own session: a terminal Ctrl-C reaches only us, and we pass it on once.
    child = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=_die_with_parent)

    def stop(signum, frame):
        if child.poll() is None:
            child.send_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        rc = child.wait(timeout=None)
    finally:
        if child.poll() is None:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
    return rc
