"""What freezing the broker into a firmware image frees on the heap, measured on 32 bits: the
broker's modules imported from .mpy files, as a stock board loads them, against the same
modules frozen, in MicroPython's qemu port (MPS2_AN385, a Cortex-M3: 32-bit objects as on
the RP2040 and the ESP32; bytecode is the same on every architecture). The port is built
twice from a MicroPython source tree, once with the feature groups frozen by their manifests
(firmware/image/manifest_GROUP.py) and once without; the .mpy files are served to the
second from a filesystem in RAM. In both, each module is imported in turn and the heap in
use after a collection is read (gc.mem_alloc): the difference is the module's bytecode,
constants and names, which a frozen module keeps in flash. A module is imported after the
siblings its top level imports, so each figure is the module's own.

    .venv/bin/python firmware/image/heap_frozen.py --micropython ~/src/micropython
    .venv/bin/python firmware/image/heap_frozen.py --micropython ~/src/micropython --write

--write keeps the figures in firmware/image/frozen_heap.json. UBROKER_FIRMWARE=DIR measures
another firmware tree (a `git archive HEAD firmware` export: committed code only), with its
manifests; the figures are still written here. Needs arm-none-eabi-gcc and
qemu-system-arm (Debian: gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm). The
ports' own modules the broker imports but qemu lacks (socket, ssl, network) are stand-ins,
the same in both runs; firmware/main.py is not measured (importing it starts the broker)."""

import argparse
import json
import os
import select
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "host_tools"))
from ubroker_tools import firmware  # noqa: E402

FIGURES = os.path.join(HERE, "frozen_heap.json")
OPT = 3  # the image profiles' opt_level
HEAP = 1024 * 1024  # the qemu port's GC heap: room for every module and the .mpy files in RAM
# Imported in this order: a module's figure is what its import adds, so the modules it
# imports first are counted where they are imported on their own, earlier.
ORDER = ["__init__", "codec", "topics", "config", "session", "buffers", "platform", "broker", "protocol", "server",
         "sysinfo", "long_packet"]
STAND_INS = {"socket.py": b"AF_INET = 2\nSOCK_STREAM = 1\nSOL_SOCKET = 1\nSO_REUSEADDR = 4\n",
             "ssl.py": b"PROTOCOL_TLS_SERVER = 1\nPROTOCOL_TLS_CLIENT = 0\nCERT_REQUIRED = 2\n",
             "network.py": b"STA_IF = 0\nAP_IF = 1\n"}
# A filesystem in RAM for the port (it has no other): the files are bytes in F, read through
# the stream protocol as a board's LittleFS is.
SETUP = b"""
import io, sys, gc, vfs
F = {}
class File(io.IOBase):
    def __init__(self, data):
        self.data = data
        self.pos = 0
    def readinto(self, buf):
        b = self.data[self.pos:self.pos + len(buf)]
        buf[:len(b)] = b
        self.pos += len(b)
        return len(b)
    def ioctl(self, req, arg):
        return 0
class FS:
    def mount(self, readonly, mkfs):
        pass
    def umount(self):
        pass
    def stat(self, p):
        p = p.lstrip('/')
        if p in F:
            return (32768, 0, 0, 0, 0, 0, len(F[p]), 0, 0, 0)
        if any(k.startswith(p + '/') for k in F):
            return (16384, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        raise OSError(2)
    def open(self, p, mode):
        return File(F[p.lstrip('/')])
"""
MOUNT = b"""
vfs.mount(FS(), '/m')
sys.path[:] = ['/m', '.frozen']
import socket, ssl, network
gc.collect()
"""


def modules_in_order():
    """(group, module name) for every module of the package, core first in ORDER, each after
    the siblings its top level imports (firmware.top_imports): a module imported by one of
    another group (bridge_v5 imports v5_protocol) is counted in its own group, not in the
    importer's."""
    group_of, wanted = {}, []
    for g in firmware.groups():
        names = sorted(p.split("/")[1][:-3] for p in firmware.group_files(g) if p.startswith("ubroker/"))
        if g == "core":
            names = [n for n in ORDER if n in names] + [n for n in names if n not in ORDER]
        for n in names:
            group_of[n] = g
        wanted += names
    sources = firmware.package_modules()
    out, placed = [], set()

    def place(name, seen):
        if name in placed or name in seen or name not in group_of:
            return
        seen = seen | {name}
        with open(sources["ubroker/%s.py" % name]) as f:
            for dep in firmware.top_imports(f.read()):
                place(dep, seen)
        placed.add(name)
        out.append((group_of[name], name))

    for n in wanted:
        place(n, frozenset())
    return out


def measure_code(order):
    lines = ["gc.collect()", "a = gc.mem_alloc()"]
    for _, name in order:
        mod = "ubroker" if name == "__init__" else "ubroker." + name
        lines += ["__import__(%r)" % mod, "gc.collect()", "b = gc.mem_alloc()", "print('UBHEAP', %r, b - a)" % name,
                  "a = b"]
    return ("\n".join(lines) + "\n").encode()


class Qemu:
    """The qemu port's raw REPL on its serial console (stdio)."""

    def __init__(self, elf):
        self.p = subprocess.Popen(["qemu-system-arm", "-machine", "mps2-an385", "-nographic", "-monitor", "null",
                                   "-semihosting", "-kernel", elf],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.buf = b""
        self.send(b"\r\x03\x03\x01")
        self.until(b"raw REPL; CTRL-B to exit\r\n>")

    def until(self, marker, timeout=300):
        end = time.time() + timeout
        while marker not in self.buf:
            ready, _, _ = select.select([self.p.stdout], [], [], max(0.0, end - time.time()))
            if not ready:
                raise RuntimeError("qemu: no %r within %d s; last output: %r" % (marker, timeout, self.buf[-300:]))
            data = os.read(self.p.stdout.fileno(), 65536)
            if not data:
                raise RuntimeError("qemu ended: %r" % self.buf[-300:])
            self.buf += data
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i - len(marker)], self.buf[i:]
        return out

    def send(self, data):
        for i in range(0, len(data), 256):  # the console's receive buffer is small
            self.p.stdin.write(data[i:i + 256])
            self.p.stdin.flush()

    def run(self, code):
        self.send(code + b"\x04")
        self.until(b"OK")
        out, err = self.until(b"\x04"), self.until(b"\x04")
        self.until(b">")
        if err:
            raise RuntimeError("qemu: %s" % err.decode(errors="replace"))
        return out.decode()

    def close(self):
        self.p.kill()
        self.p.wait()


def build(tree, out, manifest):
    env = firmware.make_env(tree)
    for cmd in (["make", "-C", os.path.join(tree, "mpy-cross")],
                ["make", "-C", os.path.join(tree, "ports", "qemu"), "BOARD=MPS2_AN385", "BUILD=" + out,
                 "FROZEN_MANIFEST=" + manifest, "MICROPY_HEAP_SIZE=%d" % HEAP, "-j%d" % (os.cpu_count() or 2)]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("%s failed:\n%s" % (" ".join(cmd), (r.stdout + r.stderr)[-3000:]))
    return os.path.join(out, "firmware.elf")


def run(elf, files, order):
    """{module: heap its import adds} with files ({path: bytes}) in the RAM filesystem."""
    q = Qemu(elf)
    try:
        q.run(SETUP)
        for path, data in files.items():
            q.run(b"F[%r] = %r\n" % (path, data))
        q.run(MOUNT)
        out = q.run(measure_code(order))
    finally:
        q.close()
    return {w[1]: int(w[2]) for w in (line.split() for line in out.splitlines()) if len(w) == 3 and w[0] == "UBHEAP"}


def measure(tree, work):
    order = modules_in_order()
    os.makedirs(work, exist_ok=True)
    frozen_manifest = os.path.join(work, "manifest_frozen.py")
    with open(frozen_manifest, "w") as f:
        for g in firmware.groups():
            f.write("include(%r, opt=%d)\n" % (os.path.join(firmware.IMAGE_DIR, "manifest_%s.py" % g), OPT))
    empty_manifest = os.path.join(work, "manifest_none.py")
    with open(empty_manifest, "w") as f:
        f.write("# nothing of the broker frozen: its modules come from .mpy files\n")
    frozen_elf = build(tree, os.path.join(work, "frozen"), frozen_manifest)
    plain_elf = build(tree, os.path.join(work, "mpy"), empty_manifest)
    mpy_cross = os.path.join(tree, "mpy-cross", "build", "mpy-cross")
    files = {name: data for name, data in STAND_INS.items()}
    for path, src in firmware.package_modules().items():
        dst = os.path.join(work, "mpy-files", path[:-3] + ".mpy")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(src) as f:  # viper (ws_unmask.py) needs the arch: the qemu board's Cortex-M3
            arch = ["-march=armv7m"] if "@micropython.viper" in f.read() else []
        subprocess.run([mpy_cross, "-O%d" % OPT, "-s", os.path.basename(path), "-o", dst, src] + arch, check=True)
        with open(dst, "rb") as f:
            files[path[:-3] + ".mpy"] = f.read()
    from_mpy = run(plain_elf, files, order)
    frozen = run(frozen_elf, dict(STAND_INS), order)
    return {"micropython": firmware.source_version(tree),
            "port": "qemu MPS2_AN385 (Cortex-M3, 32-bit), GC heap %d B" % HEAP, "opt_level": OPT,
            "modules": {"ubroker/%s.py" % n: {"group": g, "mpy": from_mpy[n], "frozen": frozen[n]}
                        for g, n in order}}


def report(fig):
    lines = ["%-28s %-9s %8s %8s %8s" % ("module", "group", ".mpy", "frozen", "freed")]
    by_group = {}
    for path, m in fig["modules"].items():
        lines.append("%-28s %-9s %8d %8d %8d" % (path, m["group"], m["mpy"], m["frozen"], m["mpy"] - m["frozen"]))
        t = by_group.setdefault(m["group"], [0, 0])
        t[0] += m["mpy"]
        t[1] += m["frozen"]
    for g, (a, b) in by_group.items():
        lines.append("%-28s %-9s %8d %8d %8d" % ("group " + g, "", a, b, a - b))
    a = sum(m["mpy"] for m in fig["modules"].values())
    b = sum(m["frozen"] for m in fig["modules"].values())
    lines.append("%-28s %-9s %8d %8d %8d" % ("all", "", a, b, a - b))
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--micropython", required=True, metavar="DIR", help="MicroPython source tree (v1.28.0)")
    p.add_argument("--work", default=os.path.join(ROOT, "build", "heap_frozen"), help="build folder")
    p.add_argument("--write", action="store_true", help="keep the figures in firmware/image/frozen_heap.json")
    args = p.parse_args()
    fig = measure(os.path.abspath(os.path.expanduser(args.micropython)), os.path.abspath(args.work))
    print(report(fig))
    if args.write:
        with open(FIGURES, "w") as f:
            json.dump(fig, f, indent=1, sort_keys=True)
            f.write("\n")
        print("wrote %s" % os.path.relpath(FIGURES))


if __name__ == "__main__":
    main()
