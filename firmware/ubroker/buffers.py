"""Tables and buffers allocated once, at start, and kept usable. table() makes a dict whose
table is allocated in one piece while the heap is still whole, so a table never has to find a
large free block later, in a heap fragmented by traffic; rebuild() gives a table that lost
many keys a clean one (see there). Pool holds reusable bytearrays for output batches and
carried-over input. A bytearray emptied with b[:] = b"" keeps its allocation, so reusing a few
long-lived buffers instead of allocating one per flush keeps large blocks from being scattered
through a small heap."""


class Pool:
    def __init__(self, keep, size=0, most=1 << 30):
        """keep: how many free buffers to hold; all are allocated now with room for size
        bytes, while the heap is still in one piece. A buffer given back holding more than
        most bytes is not kept: one that held a packet longer than the read buffer
        (long_packet.py) would keep that much heap for good."""
        self.free = []
        self.keep = keep
        self.most = most
        for _ in range(keep):
            b = bytearray(size)
            b[:] = b""
            self.free.append(b)

    def take(self):
        return self.free.pop() if self.free else bytearray()

    def give(self, b):
        if len(self.free) < self.keep and len(b) <= self.most:
            b[:] = b""
            self.free.append(b)


def table(n):
    """An empty dict with room for n keys, its slot array allocated at once. dict.fromkeys
    sizes the array from its argument's length; bytes(k) is k zero bytes, so one key (0) goes
    in and is deleted with an empty slot after it, which frees it outright. An odd number of
    slots spreads identity hashes (socket keys: addresses, multiples of 16) over all of them;
    a sixteenth more slots than keys, and 2, keep a full table from being walked end to end by
    a miss (growing it key by key, as before, gave as few as n + 1)."""
    try:
        d = dict.fromkeys(bytes((n + 2 + n // 16) | 1))
    except AttributeError:  # a port built without dict.fromkeys: the table grows as it fills
        return {}
    del d[0]
    return d


def rebuild(d, n):
    """d's keys in a fresh table(n), or d itself if the heap has no room for one now. A
    MicroPython dict never reuses the mark a deleted key leaves in its slot except for an
    insert, and only rebuilds its table when it grows: a table whose keys come and go (client
    ids, sockets, topics) fills with marks that every lookup steps over, until a miss walks
    the whole table (measured on the unix port: 4.4 us instead of 0.09 us for a session
    table of 1,024 after 15,000 client ids came and went)."""
    try:
        t = table(n)
    except MemoryError:
        return d
    t.update(d)
    return t
