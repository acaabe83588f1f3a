"""An emulated NOR flash chip for the MicroPython unix port, with power-cut injection and wear
counters, to mount vfs.VfsLfs2 (LittleFS) on and test what survives a power cut.

Runs inside the MicroPython unix port (.venv/bin/micropython); it also imports under CPython
(vfs is only imported by the mount helpers), so static checks can read it.

    dev = FlashSim(blocks=64)               # 64 x 4 KiB, all 0xFF (an erased chip)
    mkfs_and_mount(dev, "/flash")           # vfs.VfsLfs2 on it
    ... write files under /flash ...
    dev.erases, dev.programs, dev.stats()   # wear counters
    umount("/flash")

The block device protocol is the one vfs.VfsLfs2 uses (the "extended" interface):
    readblocks(block, buf, off=0)     fill buf from byte block*block_size+off
    writeblocks(block, buf, off)      program buf at block*block_size+off (no erase)
    writeblocks(block, buf)           (off None: simple interface, as VfsFat uses it) erase each
                                      block the buffer covers, then program it
    ioctl(op, arg)                    1 init, 2 deinit, 3 sync -> 0; 4 -> block count;
                                      5 -> block size; 6 -> erase block `arg`, returns 0

NOR rules: an erase sets every byte of a block to 0xFF; a program can only clear bits (the
stored byte becomes old & new). A program that would need to set a 0 bit back to 1 counts
one in `nor_violations` (per program; LittleFS never does that, so tests assert it stays 0).

Power cut: with cut_after=N the N-th program-or-erase (counting from 1, over the life of this
object) does not complete. With torn=True the first half of it is applied (the first half of
the data for a program, the first half of the block for an erase); otherwise nothing of it is.
Then PowerCut is raised, and every later call on the device (read, write, ioctl) raises
PowerCut too: the chip is dead. (One exception: calls made by garbage-collector finalisers of
files left open on the dead filesystem go quietly to a private "ghost" copy and never change
the surviving image; see "the dead chip" below.) PowerCut derives from BaseException, so `except Exception`
handlers in the code under test cannot swallow it. To "power up again", make a new device on
the surviving bytes: dev.reboot() (or FlashSim(image=...), or FlashSim(path=...) for a file).

File backing: with path=..., the image lives in that file as well; every program and erase is
written through (seek + write + flush), so the image survives the death of the process. An
existing file of the right size is loaded; otherwise it is created erased (all 0xFF).

Heap: the image is a bytearray of blocks*block_size bytes in the MicroPython heap (the unix port
default heap is 2 MiB, so a 1 MiB device needs `micropython -X heapsize=8M`, and at the cut
a ghost copy of the same size is made; if it does not fit, finalisers get PowerCut, which
MicroPython prints on stdout).
"""

try:
    import micropython
except ImportError:  # CPython
    micropython = None

BLOCK_SIZE = 4096
BLOCKS = 256  # 1 MiB, the filesystem size measured in docs/platform.md §3

# LittleFS geometry used by the mount helpers (what docs/platform.md §3 measured with; they are
# also MicroPython's defaults): reads and programs in units of 32 bytes, a lookahead buffer of
# 32 bytes (= 256 blocks tracked per allocation scan), mtime attributes on. Boards built with
# another progsize (rp2 images use 256) can be imitated by passing progsize=256, readsize=256.
READSIZE = 32
PROGSIZE = 32
LOOKAHEAD = 32


class PowerCut(BaseException):
    """The emulated flash lost power. A BaseException so `except Exception` does not catch it."""


_ERASED_CACHE = {}


def _erased(n):
    b = _ERASED_CACHE.get(n)
    if b is None:
        b = b"\xff" * n
        _ERASED_CACHE[n] = b
    return b


class FlashSim:
    def __init__(self, blocks=BLOCKS, block_size=BLOCK_SIZE, path=None, image=None,
                 cut_after=None, torn=False):
        """blocks, block_size: geometry. image: initial content (bytes-like of the full size;
        a bytearray is adopted without a copy, anything else is copied). path: back the image
        with this file (loaded if it exists with the right size, else created erased, or from
        `image`). cut_after: None, or N >= 1 to lose power at the N-th program-or-erase.
        torn: apply the first half of that operation before dying."""
        self.blocks = blocks
        self.block_size = block_size
        self.size = blocks * block_size
        self.path = path
        self.cut_after = cut_after
        self.torn = torn
        self.dead = False
        self.cut_info = None  # after the cut: (kind, block, off, length) of the lost operation
        self._file = None
        self.ops = 0  # program + erase operations started since creation (the cut countdown)
        self._dead_exc = PowerCut("flash is dead")
        self._ghost = None
        if image is not None:
            if len(image) != self.size:
                raise ValueError("image is %d bytes, device is %d" % (len(image), self.size))
            self.data = image if isinstance(image, bytearray) else bytearray(image)
        elif path is not None and _file_size(path) == self.size:
            with open(path, "rb") as f:
                self.data = bytearray(f.read())
        else:
            self.data = bytearray(self.size)
            bs = block_size
            for b in range(blocks):  # block by block: no second full-size buffer in the heap
                self.data[b * bs:(b + 1) * bs] = _erased(bs)
        if path is not None:
            if _file_size(path) != self.size or image is not None:
                with open(path, "wb") as f:
                    f.write(self.data)
            self._file = open(path, "r+b")
        self.reset_counters()

    # -- counters ------------------------------------------------------------------------

    def reset_counters(self):
        """Zero the wear counters (the power-cut countdown `ops` is not reset)."""
        self.erases = 0
        self.block_erases = [0] * self.blocks  # erases per block
        self.programs = 0
        self.bytes_programmed = 0
        self.reads = 0
        self.bytes_read = 0
        self.nor_violations = 0

    def stats(self):
        return {
            "erases": self.erases,
            "max_block_erases": max(self.block_erases),
            "programs": self.programs,
            "bytes_programmed": self.bytes_programmed,
            "reads": self.reads,
            "bytes_read": self.bytes_read,
            "nor_violations": self.nor_violations,
            "ops": self.ops,
        }

    # -- block device protocol -----------------------------------------------------------

    def readblocks(self, block, buf, off=0):
        n = len(buf)
        addr = self._addr(block, off, n)
        if self.dead:
            mem = self._ghost_mem()
            for i in range(n):  # (no slices: the heap is locked here)
                buf[i] = mem[addr + i]
            return 0
        buf[:] = self.data[addr:addr + n]
        self.reads += 1
        self.bytes_read += n
        return 0

    def writeblocks(self, block, buf, off=None):
        if off is None:
            # Simple interface (VfsFat): whole blocks, each erased then programmed.
            bs = self.block_size
            if len(buf) % bs:
                raise ValueError("writeblocks without off needs whole blocks")
            mv = memoryview(buf)
            for i in range(len(buf) // bs):
                self._erase(block + i)
                self._program(block + i, 0, mv[i * bs:(i + 1) * bs])
        else:
            self._program(block, off, buf)
        return 0

    def ioctl(self, op, arg):
        if self.dead:
            self._ghost_mem()
        if op == 4:
            return self.blocks
        if op == 5:
            return self.block_size
        if op == 6:
            self._erase(arg)
            return 0
        if op in (1, 2, 3):
            return 0
        return None

    # -- the dead chip -------------------------------------------------------------------
    #
    # After the cut, every call raises PowerCut, with one exception. Files left open on the
    # dead filesystem are closed later by the garbage collector; their finaliser writes to the
    # device with the heap locked, and an exception there can only be printed (on stdout).
    # So calls made in that context go, silently and uncounted, to a "ghost": a private copy
    # of the image taken at the cut, which nothing else ever reads. `data` (the image that
    # survived the cut) is never touched again.

    def _ghost_mem(self):
        if self._ghost is not None and _in_finaliser():
            return self._ghost
        try:
            exc = PowerCut("flash is dead (power was cut at operation %d)" % self.ops)
        except MemoryError:
            exc = self._dead_exc  # preallocated, for a heap locked by the caller
        raise exc

    # -- operations ----------------------------------------------------------------------

    def _addr(self, block, off, n):
        if block < 0 or off < 0 or block >= self.blocks or off + n > self.block_size * (self.blocks - block):
            raise ValueError("access out of range: block %d off %d len %d" % (block, off, n))
        return block * self.block_size + off

    def _countdown(self, kind, block, off, n):
        """Count one program/erase; True when this is the operation that loses power."""
        self.ops += 1
        if self.cut_after is not None and self.ops >= self.cut_after:
            self.dead = True
            self.cut_info = (kind, block, off, n)
            return True
        return False

    def _die(self):
        try:
            self._ghost = bytearray(self.data)
        except MemoryError:
            self._ghost = None  # no room for it: finalisers will get PowerCut (printed)
        raise PowerCut("power cut at operation %d (%s block %d off %d len %d)"
                       % ((self.ops,) + self.cut_info))

    def _erase(self, block):
        bs = self.block_size
        addr = self._addr(block, 0, bs)
        if self.dead:
            mem = self._ghost_mem()
            for i in range(addr, addr + bs):
                mem[i] = 0xFF
            return
        if self._countdown("erase", block, 0, bs):
            if self.torn:
                half = bs // 2
                self.data[addr:addr + half] = _erased(half)
                self._write_through(addr, addr + half)
            self._die()
        self.data[addr:addr + bs] = _erased(bs)
        self.erases += 1
        self.block_erases[block] += 1
        self._write_through(addr, addr + bs)

    def _program(self, block, off, buf):
        n = len(buf)
        addr = self._addr(block, off, n)
        if self.dead:
            mem = self._ghost_mem()
            for i in range(n):
                mem[addr + i] &= buf[i]
            return
        if self._countdown("program", block, off, n):
            if self.torn and n // 2:
                self._apply(addr, memoryview(buf)[:n // 2])
            self._die()
        self._apply(addr, buf)
        self.programs += 1
        self.bytes_programmed += n

    def _apply(self, addr, buf):
        """Program buf at addr with NOR rules: stored = old & new; count programs that would
        have to set a 0 bit to 1."""
        n = len(buf)
        end = addr + n
        data = self.data
        if data[addr:end] == _erased(n):
            data[addr:end] = buf  # the usual case: programming erased bytes
        else:
            bad = False
            for i in range(n):
                old = data[addr + i]
                new = buf[i]
                if new & ~old & 0xFF:
                    bad = True
                data[addr + i] = old & new
            if bad:
                self.nor_violations += 1
        self._write_through(addr, end)

    def _write_through(self, start, end):
        f = self._file
        if f is not None:
            f.seek(start)
            f.write(self.data[start:end])
            f.flush()

    # -- life cycle ----------------------------------------------------------------------

    def image(self):
        """A copy of the whole flash content."""
        return bytes(self.data)

    def close(self):
        """Close the backing file (if any)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def reboot(self, cut_after=None, torn=False):
        """Power up again: a new FlashSim holding this device's bytes (the bytearray is handed
        over, not copied; a file-backed device reopens the same file), counters at zero, with
        its own cut_after/torn. This object is dead afterwards and must not be used."""
        data = self.data
        self.close()
        self.dead = True
        self.data = None
        dev = FlashSim(self.blocks, self.block_size, image=data, cut_after=cut_after, torn=torn)
        if self.path is not None:
            # The file already holds `data` (every change was written through): reopen it
            # without rewriting it.
            dev.path = self.path
            dev._file = open(self.path, "r+b")
        return dev


def _in_finaliser():
    """True when called from a finaliser during garbage collection: the heap refuses to
    allocate although nobody called micropython.heap_lock()."""
    if micropython is None:
        return False
    micropython.heap_lock()
    if micropython.heap_unlock():
        return False  # the caller locked the heap itself
    try:
        bytearray(1)
    except MemoryError:
        return True
    return False


def _file_size(path):
    try:
        with open(path, "rb") as f:
            return f.seek(0, 2)
    except OSError:
        return -1


# -- mount helpers -------------------------------------------------------------------------

def mkfs_and_mount(dev, path, readsize=READSIZE, progsize=PROGSIZE, lookahead=LOOKAHEAD,
                   mtime=True):
    """Format dev with LittleFS v2 and mount it at path. Returns the VfsLfs2 object."""
    import vfs
    vfs.VfsLfs2.mkfs(dev, readsize=readsize, progsize=progsize, lookahead=lookahead)
    return mount(dev, path, readsize=readsize, progsize=progsize, lookahead=lookahead,
                 mtime=mtime)


def mount(dev, path, readsize=READSIZE, progsize=PROGSIZE, lookahead=LOOKAHEAD, mtime=True):
    """Mount an existing LittleFS v2 image on dev at path (OSError if it does not mount).
    Returns the VfsLfs2 object."""
    import vfs
    fs = vfs.VfsLfs2(dev, readsize=readsize, progsize=progsize, lookahead=lookahead,
                     mtime=mtime)
    vfs.mount(fs, path)
    return fs


def umount(path):
    """Unmount path if something is mounted there. Tolerates a dead filesystem (its device
    raising PowerCut) and an empty mount point. Returns True if it unmounted something."""
    import vfs
    try:
        vfs.umount(path)
        return True
    except PowerCut:
        # The filesystem tried to touch a dead chip while unmounting; it is out of the mount
        # table either way or will be replaced by the next mount. Retry once quietly.
        try:
            vfs.umount(path)
        except (OSError, PowerCut):
            pass
        return True
    except OSError:
        return False
