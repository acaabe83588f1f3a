"""How far MicroPython searches the attribute table of each of the broker's long-lived objects
for a name the table lacks: its methods and class defaults, found through an instance.

MicroPython keeps an instance's attributes in a hash table with linear probing that it fills
completely before it grows it (py/map.c). A name the instance lacks is searched for from its
hash slot along the run of occupied slots to the next empty one, each step a division, and
only then is the class asked. With a full table that is every slot. This prints, after the
in-process MQTT 5 fan-in of tools/fanin_v5_inprocess.py (so that the tables hold what a
running broker's hold), each object's slots used/allocated and the slots scanned for each
method or class default it lacks, longest first: what a method called through the instance
costs before the class is asked (docs/performance.md, "Methods looked up through a full
attribute table").

    N=2000 MICROPYPATH=build/run-x64:.frozen:tools .venv/bin/micropython -X heapsize=8M \\
        tools/attr_probes.py

(build/run-x64: what `ubroker run` compiles on this machine; MICROPYPATH=firmware:tools for
the source as bytecode.) It reads the tables with uctypes: an mp_obj_instance_t's members map
after its type pointer; 64-bit ports only.
"""

import uctypes

exec(open("tools/fanin_v5_inprocess.py").read())  # noqa: S102  # leaves `sv`, the Server, behind

_WORD = 8


def _words(addr, n):
    raw = uctypes.bytearray_at(addr, n * _WORD)
    return [int.from_bytes(raw[i * _WORD : (i + 1) * _WORD], "little") for i in range(n)]


def table(o):
    """(used, allocated, the keys of o's attribute table: 0 for an empty slot)."""
    used_flags, alloc, at = _words(id(o) + _WORD, 3)
    slots = _words(at, 2 * alloc)  # (key, value) pairs
    return used_flags >> 3, alloc, slots[0::2]


def scanned(o, name):
    """Slots a lookup of `name`, absent from o's table, passes before an empty one."""
    _, alloc, keys = table(o)
    pos = hash(name) % alloc  # a qstr's hash, as py/map.c takes it
    n = 0
    while n < alloc and keys[(pos + n) % alloc] != 0:
        n += 1
    return n


def classes(t):
    out = [t]
    for base in getattr(t, "__bases__", ()):
        out += classes(base)
    return out


def report(label, o):
    used, alloc, _ = table(o)
    names = set()
    for t in classes(type(o)):
        names.update(k for k in dir(t) if not k.startswith("__"))
    own = o.__dict__
    lacks = sorted(((scanned(o, k), k) for k in names if k not in own), reverse=True)
    print("%-8s %d/%d: %s" % (label, used, alloc, " ".join("%s %d" % (k, n) for n, k in lacks)))


b = sv.broker  # noqa: F821  # defined by the exec above
for label, o in (("Server", sv), ("Broker", b), ("Stats", b.stats), ("Protocol", sv.proto),  # noqa: F821
                 ("V5", b.v5), ("Index", b.index), ("Pool", b.pool)):
    report(label, o)
