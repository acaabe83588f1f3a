"""The log on flash: records with a sequence number and a CRC, committed in groups; files
laid out so that LittleFS wears its blocks as little as it can; compaction that is crash-safe;
recovery that stops at a torn or corrupt record. It knows the framing, not the meaning of
records (store_persist.py gives them that).

Why these files. On LittleFS, appending to a file and flushing costs about one block erase per
flush, however little was written (the partly written last block is copied). A new file no
larger than LittleFS's inline limit (128 B at a 32 B program size) lives inside its directory's
metadata instead and costs about a tenth of an erase (measured: docs/durability.md, docs/platform.md §3). So each
commit is a file of its own, written whole and closed before anything in it is acknowledged:

    ubroker.<g>.log        generation g: the snapshot of the live state, ending in END
    ubroker.<g>.<n>        the n-th commit since that snapshot

LittleFS keeps the old or the new content of a file across a power cut, never a mix, and a
file created but not closed reads empty. Compaction writes generation g+1 and only when its
END is on flash deletes generation g: at every instant one complete copy exists.

Record: magic 0xA5, type, body length (u16), seq (u32), crc32 of type..body (u32), body. A
body of 64 KiB or more (a long message on the unix port) has magic 0xA6, 0 in the u16, and its
length as a u32 after the header, which the crc covers too: a store written before there was
such a record reads the same."""

import binascii
import os
import struct
import sys

from micropython import const

def makedirs(path):
    """Create the store's folder and its parents (MicroPython's os has no makedirs)."""
    cur = ""
    for part in path.split("/"):
        cur = cur + part + "/" if part else cur + "/"
        if part:
            try:
                os.mkdir(cur)
            except OSError:
                pass


_MAGIC = const(0xA5)
_LONG = const(0xA6)  # the body's length is a u32 after the header
_HDR = "<BBHII"
_HDR_SIZE = const(12)
_END = const(0)  # record type: the snapshot that starts a generation is complete

# The erase estimate's model, in tenths of an erase (LittleFS, 4 KiB blocks), by the program
# size the port mounts its filesystem with: (the largest commit kept inline in its directory's
# metadata, what such a commit costs, what the directory costs beside a larger commit's one
# per block). Fitted on the emulated chip (tests/durability/test_store_flash.py): MicroPython's
# default of 32 (the esp32 port), and 256, the rp2 port's.
WEAR_PROG32 = (128, 1, 0)
WEAR_PROG256 = (512, 3, 2)


class Store:
    inline, small, meta = WEAR_PROG256 if sys.platform == "rp2" else WEAR_PROG32

    def __init__(self, path, budget, log):
        self.path = path
        self.budget = budget
        self.log = log
        self.gen = 0
        self.nseg = 0  # commits (files) of this generation so far
        self.seq = 0
        self.size = 0  # bytes in this generation's files
        self.live = 0  # bytes of the last snapshot: what compaction cannot reclaim
        self.buf = bytearray()  # records waiting for the next commit
        self.urgent = False  # buf holds a record that something waits on (not only lazy ones)
        self.retry_at = 0  # after a compaction that failed: not before this many commits
        self._old_size = 0
        self.commits = 0
        self.bytes_written = 0
        self.compactions = 0
        self.torn = 0  # torn or corrupt tails found at recovery
        # Block erases these writes cost, estimated in tenths (the WEAR_ model above; a
        # snapshot one per block). Within 7 % of an emulated chip's count at program size
        # 32 and 5 % at 256 (tests/durability/test_store_flash.py)
        self.wear = 0
        self.f = None  # the snapshot being written
        self._hdr = bytearray(_HDR_SIZE)

    def _file(self, gen, kind):
        return "%s/ubroker.%d.%s" % (self.path, gen, kind)

    # ------------------------------------------------------------------ writing

    def append(self, rtype, body, lazy=False):
        """Add a record to the next commit. lazy: nothing waits for it to be on flash (losing
        it to a power cut only means a message is sent again), so it may wait for company."""
        if not lazy:
            self.urgent = True
        self.seq += 1
        h = self._hdr
        n = len(body)
        # (pack_into's u16 would keep the low 16 bits of a longer length: a record torn
        # for good, and every record after it skipped at recovery)
        struct.pack_into("<BHI", h, 1, rtype, n if n < 65536 else 0, self.seq)
        crc = binascii.crc32(memoryview(h)[1:8])
        if n < 65536:
            h[0] = _MAGIC
            ext = b""
        else:
            h[0] = _LONG
            ext = struct.pack("<I", n)
            crc = binascii.crc32(ext, crc)
        struct.pack_into("<I", h, 8, binascii.crc32(body, crc))
        self.buf.extend(h)
        self.buf.extend(ext)
        self.buf.extend(body)

    def commit(self):
        """Put the waiting records on flash as one new file (group commit)."""
        buf = self.buf
        if not buf:
            return
        self.nseg += 1
        with open(self._file(self.gen, str(self.nseg)), "wb") as f:
            f.write(buf)
        n = len(buf)
        self.size += n
        self.bytes_written += n
        self.commits += 1
        self.wear += self.small if n <= self.inline else 10 * ((n + 4095) >> 12) + self.meta
        self.urgent = False
        buf[:] = b""  # keeps its allocation for the next group

    def full(self, extra):
        """The store would pass its budget with extra more bytes. Compaction starts at half
        the budget, so this is reached only when live state itself fills the store."""
        return self.size + len(self.buf) + extra > self.budget

    def wants_compaction(self):
        # Many files cost directory metadata; much dead data costs space.
        if self.commits < self.retry_at:
            return False
        return self.nseg >= 128 or (self.size + len(self.buf) > self.budget // 2 and self.size > 2 * self.live)

    # ------------------------------------------------------------------ generations

    def _gens(self):
        try:
            names = os.listdir(self.path)
        except OSError:
            return []
        gens = []
        for n in names:
            if n.startswith("ubroker.") and n.endswith(".log"):
                try:
                    gens.append(int(n[8:-4]))
                except ValueError:
                    pass
        gens.sort()
        return gens

    def begin_snapshot(self):
        """Start the next generation; the caller appends the live state, then end_snapshot()."""
        self.gen += 1
        self.f = open(self._file(self.gen, "log"), "wb")
        self._old_size = self.size
        self.size = 0
        # Records still waiting are lazy ones (an urgent one is committed first), and the
        # snapshot holds the state they describe: they are not needed any more.
        self.buf[:] = b""
        self.urgent = False

    def abandon_snapshot(self):
        """A snapshot that could not be finished (no heap): its file goes, the generation
        being written stays the current one; compaction is tried again later."""
        try:
            self.f.close()
        except OSError:
            pass
        self.f = None
        try:
            os.remove(self._file(self.gen, "log"))
        except OSError:
            pass
        self.gen -= 1
        self.size = self._old_size
        self.retry_at = self.commits + 32
        self.buf[:] = b""

    def snapshot_flush(self):
        """Write what the snapshot has so far (keeps the buffer small for a large state)."""
        self.f.write(self.buf)
        self.size += len(self.buf)
        self.buf[:] = b""

    def end_snapshot(self):
        self.append(_END, b"")
        self.snapshot_flush()
        self.f.close()
        self.f = None
        self.live = self.size
        self.bytes_written += self.size
        self.compactions += 1
        self.wear += 10 * ((self.size + 4095) >> 12)
        old_segs = self.nseg
        self.nseg = 0
        # The new generation is whole and the figures say so; now the previous one goes, by
        # name: listing the folder would need a list of every name, which a heap fragmented
        # by thousands of queued messages may not have room for (found by the bridge
        # benchmark). The commits first, its snapshot last; anything a power cut leaves
        # behind is swept at the next start.
        for k in range(1, old_segs + 1):
            self._remove(self._file(self.gen - 1, str(k)))
        self._remove(self._file(self.gen - 1, "log"))

    def _remove(self, name):
        try:
            os.remove(name)
        except OSError:
            pass

    def sweep(self):
        """At start: remove every file of a generation older than the current one."""
        try:
            names = os.listdir(self.path)
        except OSError:
            return
        for name in names:
            if name.startswith("ubroker."):
                try:
                    old = int(name.split(".")[1]) < self.gen
                except (ValueError, IndexError):
                    old = False
                if old:
                    self._remove(self.path + "/" + name)

    # ------------------------------------------------------------------ recovery

    def recover(self):
        """The (type, body) records of the newest complete generation: its snapshot, then its
        commits in order, stopping at the first torn or corrupt record. A
        newer generation without its END (a crash during compaction) is passed over."""
        for gen in reversed(self._gens()):
            records = []
            if self._read(self._file(gen, "log"), records, True):
                self.gen = gen
                break
        else:
            return []
        prefix = "ubroker.%d." % gen
        segs = []
        for n in os.listdir(self.path):
            if n.startswith(prefix) and n[len(prefix):].isdigit():
                segs.append(int(n[len(prefix):]))
        segs.sort()
        for k in segs:
            if not self._read(self._file(gen, str(k)), records, False):
                break  # a torn file is the last one written: nothing after it counts
        self.nseg = segs[-1] if segs else 0
        return records

    def _read(self, name, out, snapshot):
        """Append the records of one file to out. For the snapshot, True only if its END was
        read; for other files, True unless the file ended in a torn or corrupt record."""
        try:
            f = open(name, "rb")
        except OSError:
            return False
        hdr = bytearray(_HDR_SIZE)
        ok = True
        complete = False
        with f:
            while True:
                n = f.readinto(hdr)
                if not n:
                    break
                if n < _HDR_SIZE:
                    ok = False
                    break
                magic, rtype, blen, seq, crc = struct.unpack(_HDR, hdr)
                c0 = binascii.crc32(memoryview(hdr)[1:8])
                if magic == _LONG:
                    ext = f.read(4)
                    if len(ext) < 4:
                        ok = False
                        break
                    blen = struct.unpack("<I", ext)[0]
                    if blen > self.budget:  # corrupt: no such record fits the store
                        ok = False
                        break
                    c0 = binascii.crc32(ext, c0)
                elif magic != _MAGIC:
                    ok = False
                    break
                body = f.read(blen) if blen else b""
                if len(body) != blen or binascii.crc32(body, c0) != crc:
                    ok = False
                    break
                if seq > self.seq:
                    self.seq = seq
                if rtype == _END:
                    complete = True
                else:
                    out.append((rtype, body))
        if not ok:
            self.torn += 1
            self.log("store: %s ends in a torn or corrupt record; what follows it is skipped" % name)
        return complete if snapshot else ok
