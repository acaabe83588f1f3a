"""Runs the WebSocket unmasking's machine code (firmware/ubroker/ws_unmask.py, viper) on an ARM
Cortex-M in qemu, as a board would load it: compiled by mpy-cross for the Pico W's armv6m
(and for armv7m), loaded from an .mpy file by MicroPython's qemu port (MPS2_AN385, a
Cortex-M3, which runs armv6m code: Thumb-2 holds Thumb-1), and checked byte for byte against
the unmasking written out in Python over lengths 0..70 and 1,000, every alignment of source
and destination, every start in the key and key offsets in the header.

    .venv/bin/python tools/qemu_viper.py --micropython ~/src/micropython

Needs the qemu port built from that tree (firmware/image/heap_frozen.py builds it; this uses
its build in `--build`, default build/heap_frozen/mpy as heap_frozen.py makes it) and that tree's mpy-cross. The
ESP32's xtensawin code cannot be run this way (no MicroPython port for qemu's xtensa here)."""

import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "firmware", "image"))
from heap_frozen import SETUP, Qemu  # noqa: E402

CHECK = b"""
vfs.mount(FS(), '/m')
sys.path[:] = ['/m']
from ws_unmask import unmask
def ref(buf, o, i, k, h, hk, mp):
    for j in range(k):
        buf[o + j] = buf[i + j] ^ h[hk + ((mp + j) & 3)]
bad = 0
runs = 0
h = bytes((0xA5, 0x3C, 0x0F, 0xF0, 0x81, 0x42, 0x18, 0x7E))
for k in list(range(71)) + [1000]:
    for gap in (0, 1, 2, 3, 6, 14):
        for o in (0, 1, 2, 3):
            i = o + gap
            src = bytes((j * 7 + k) & 0xFF for j in range(i + k + 4))
            for hk in (0, 1, 4):
                for mp in (0, 1, 2, 3):
                    a = bytearray(src)
                    b = bytearray(src)
                    unmask(a, o, i, k, h, hk, mp)
                    ref(b, o, i, k, h, hk, mp)
                    runs += 1
                    if a != b:
                        bad += 1
print('UBVIPER', runs, bad)
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--micropython", required=True, help="a MicroPython source tree (mpy-cross, ports/qemu)")
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "heap_frozen", "mpy"),
                    help="the qemu port's build folder (without frozen modules)")
    args = ap.parse_args()
    cross = os.path.join(args.micropython, "mpy-cross", "build", "mpy-cross")
    elf = os.path.join(args.build, "firmware.elf")
    for path in (cross, elf):
        if not os.path.exists(path):
            sys.exit("%s is missing: build it first (firmware/image/heap_frozen.py builds both)" % path)
    src = os.path.join(ROOT, "firmware", "ubroker", "ws_unmask.py")
    failed = False
    for arch in ("armv6m", "armv7m"):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "ws_unmask.mpy")
            subprocess.run([cross, "-march=" + arch, "-O3", "-o", out, src], check=True)
            with open(out, "rb") as f:
                mpy = f.read()
        q = Qemu(elf)
        try:
            q.run(SETUP)
            q.run(b"F['ws_unmask.mpy'] = %r\n" % mpy)
            text = q.run(CHECK)
        finally:
            q.close()
        words = [line.split() for line in text.splitlines() if line.startswith("UBVIPER")]
        runs, bad = int(words[0][1]), int(words[0][2])
        print("%s: ws_unmask.mpy %d B, %d unmaskings checked, %d differ" % (arch, len(mpy), runs, bad))
        failed = failed or bad > 0 or runs == 0
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
