"""`ubroker vboard`: a virtual board for tests and for trying `ubroker flash` without
hardware. The MicroPython unix port runs with a folder as its filesystem (its cwd) and a
pseudo-terminal as its console, and behaves like a USB board to unmodified mpremote:

- The port users connect to (`--link`, default DIR/ttyVBOARD) is the slave side of an outer
  pty that stays the same across reboots; vboard relays bytes between it and the pty that
  is micropython's controlling terminal (raw, with ISIG on so that Ctrl-C interrupts a
  running program, docs/platform.md §4).
- mpremote's raw-paste request (Ctrl-E A Ctrl-A) is answered with "R\\x00" (not supported),
  so mpremote uses the plain raw REPL, where Ctrl-C works.
- At boot main.py runs if the folder has one, then the REPL (micropython -i), like a board.
  A soft reset (Ctrl-D in the REPL, machine.soft_reset()) ends the unix process; vboard then
  boots it again, which is the board's reboot. mpremote needs `resume` (no soft reset on
  connect) - `ubroker flash` always passes it.
"""

import argparse
import errno
import os
import pty
import select
import signal
import sys
import termios
import time
import tty

from . import paths

HELP = """Serve a virtual MicroPython board on a pseudo-terminal (the unix port, a folder as
its filesystem). Use it with mpremote (always with `resume`) or `ubroker flash --port`.

example:
  ubroker vboard --dir /tmp/board --link /tmp/board.tty &
  mpremote connect /tmp/board.tty resume exec "import os; print(os.listdir())"
  ubroker flash --board unix --port /tmp/board.tty
"""

RAW_PASTE_REQ = b"\x05A\x01"
RAW_PASTE_NO = b"R\x00"


def add_parser(sub):
    p = sub.add_parser("vboard", help="a virtual board on a pseudo-terminal (for tests)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default="vboard", help="the board's filesystem folder (created; default ./vboard)")
    p.add_argument("--link", help="symlink to the board's tty (default DIR/../BASENAME.tty)")
    p.add_argument("--heap", help="heap size, e.g. 256k (default: the unix port's 2M)")
    p.add_argument("--micropython", help="the micropython executable (default: the venv's, else PATH)")
    p.add_argument("--max-boots", type=int, default=0, help="stop after this many boots (0 = run until killed)")
    p.set_defaults(func=main)


class VBoard:
    def __init__(self, folder, link, mp, heap=None, log=None):
        self.dir = os.path.abspath(folder)
        self.link = os.path.abspath(link)
        self.mp = mp
        self.heap = heap
        self.log = log or (lambda m: print("vboard:", m, file=sys.stderr, flush=True))
        self.boots = 0
        self.child = None
        self.inner = None
        self.pending = b""  # bytes from the host held back while they may start a raw-paste request

    # -------------------------------------------------------------- the outer (user) pty
    def open_port(self):
        self.outer, self.outer_slave = pty.openpty()
        tty.setraw(self.outer_slave)
        os.set_blocking(self.outer, False)
        name = os.ttyname(self.outer_slave)
        if os.path.lexists(self.link):
            os.unlink(self.link)
        os.symlink(name, self.link)
        return name

    # -------------------------------------------------------------- the board's process
    def boot(self):
        self.boots += 1
        argv = [self.mp]
        if self.heap:
            argv += ["-X", "heapsize=" + self.heap]
        if os.path.exists(os.path.join(self.dir, "main.py")):
            argv += ["-i", "main.py"]
        env = dict(os.environ, MICROPYPATH=os.pathsep + ".frozen", TERM="dumb")
        pid, fd = pty.fork()
        if pid == 0:  # the board
            try:
                os.chdir(self.dir)
                attrs = termios.tcgetattr(0)
                tty.setraw(0)
                attrs = termios.tcgetattr(0)
                attrs[3] |= termios.ISIG  # Ctrl-C -> SIGINT -> KeyboardInterrupt
                termios.tcsetattr(0, termios.TCSANOW, attrs)
                os.execve(self.mp, argv, env)
            finally:
                os._exit(127)
        self.child, self.inner = pid, fd
        self.log("boot %d: pid %d%s" % (self.boots, pid, " running main.py" if "main.py" in argv else ""))

    def reap(self):
        try:
            pid, status = os.waitpid(self.child, 0)
        except ChildProcessError:
            status = 0
        os.close(self.inner)
        self.inner = None
        self.log("board process ended (status %d): reset" % (status >> 8))

    # -------------------------------------------------------------- relay
    def from_host(self, data):
        data = self.pending + data
        self.pending = b""
        while True:
            i = data.find(RAW_PASTE_REQ)
            if i < 0:
                break
            self.to_board(data[:i])
            self.to_host(RAW_PASTE_NO)
            data = data[i + len(RAW_PASTE_REQ):]
        # keep a possible beginning of a request for the next read
        for k in (2, 1):
            if data.endswith(RAW_PASTE_REQ[:k]):
                self.pending = data[-k:]
                data = data[:-k]
                break
        self.to_board(data)

    def to_host(self, data):
        # Like a USB board with no host reading its console: output that does not fit in the
        # pty's buffer is dropped rather than stalling the board.
        try:
            os.write(self.outer, data)
        except BlockingIOError:
            pass

    def to_board(self, data):
        while data and self.inner is not None:
            try:
                n = os.write(self.inner, data)
            except OSError:
                return  # board is rebooting: like a real board, bytes sent meanwhile are lost
            data = data[n:]

    def serve(self, max_boots=0):
        os.makedirs(self.dir, exist_ok=True)
        name = self.open_port()
        self.log("board folder %s, port %s -> %s" % (self.dir, self.link, name))
        self.boot()
        held_since = None
        while True:
            fds = [self.outer] + ([self.inner] if self.inner is not None else [])
            r, _, _ = select.select(fds, [], [], 0.05)
            if self.outer in r:
                try:
                    data = os.read(self.outer, 4096)
                except OSError as e:
                    if e.errno != errno.EIO:
                        raise
                    data = b""
                if data:
                    self.from_host(data)
                    held_since = time.time() if self.pending else None
            elif self.pending and held_since and time.time() - held_since > 0.05:
                data, self.pending = self.pending, b""
                self.to_board(data)
            if self.inner is not None and self.inner in r:
                try:
                    data = os.read(self.inner, 4096)
                except OSError:
                    data = b""
                if data:
                    self.to_host(data)
                else:
                    self.reap()
                    if max_boots and self.boots >= max_boots:
                        return 0
                    time.sleep(0.05)
                    self.boot()

    def close(self):
        if self.child and self.inner is not None:
            try:
                os.kill(self.child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if os.path.islink(self.link):
            os.unlink(self.link)


def main(args):
    mp = paths.micropython(args.micropython)
    if not mp:
        print("ubroker vboard: no micropython found; install the venv (make setup) or pass --micropython",
              file=sys.stderr)
        return 2
    folder = os.path.abspath(args.dir)
    link = args.link or folder.rstrip("/") + ".tty"
    vb = VBoard(folder, link, mp, args.heap)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        return vb.serve(args.max_boots)
    except KeyboardInterrupt:
        return 0
    finally:
        vb.close()
