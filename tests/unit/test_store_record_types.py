"""The durable store's record types and entry values have one owner, store_persist.py; the
modules that read or write some of them keep private const() copies (store_replay.py, which
replays the log at start, store_v5.py, MQTT 5's records, broker.py, which notes a delivery's
first sending). A copy that drifted would read one record as another: this keeps them equal
to the owner's (test_layouts.py does the same for the entry fields it lists)."""

import os

from conftest import ROOT
from test_layouts import module_ints

FIRMWARE = os.path.join(ROOT, "firmware", "ubroker")
NAMES = ("_S_ADD", "_S_DEL", "_SUB", "_UNSUB", "_MSG_REC", "_ENQ", "_REL", "_DONE", "_Q2_ADD", "_Q2_DEL", "_RET",
         "_RET_DEL", "_SUB5", "_MSG5", "_RETP", "_SENT", "_TIMER", "_QUEUED", "_LAST", "_UNSENT", "_RECOVERED", "_STORED")
COPIES = ("store_replay", "store_v5", "broker")


def test_copies_of_the_store_record_types_equal_store_persist():
    owner = module_ints(os.path.join(FIRMWARE, "store_persist.py"))
    checked = 0
    for name in NAMES:
        assert name in owner and owner[name][1], "store_persist.py does not define %s with const()" % name
        for mod in COPIES:
            copy = module_ints(os.path.join(FIRMWARE, mod + ".py")).get(name)
            if copy is not None:
                assert copy == owner[name], "%s.py's %s is %r, store_persist.py says %r" % (mod, name, copy,
                                                                                           owner[name])
                checked += 1
    assert checked >= 25
