"""Every record and entry layout has one owner, and its fields are const() names.

MicroPython inlines a const() only within its own module, so a module that reads session
entries on the hot path keeps private copies (`_PID = const(0)`) of the owner's fields rather
than importing them (an imported name is a global, looked up at every use). This test keeps
those copies equal to the owner's. It also holds the device modules to const() for their
module-level integers: a plain module int is a globals-dict slot of heap on a board, a
private const() is none."""

import ast
import os

import pytest

from conftest import ROOT

FIRMWARE = os.path.join(ROOT, "firmware", "ubroker")

# layout owner (module) -> the fields it owns
OWNERS = {
    "codec": ["CONNECT", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP", "SUBSCRIBE", "UNSUBSCRIBE", "PINGREQ",
              "DISCONNECT", "ACCEPTED", "BAD_PROTOCOL", "BAD_CLIENT_ID", "UNAVAILABLE", "SUB_FAILURE"],
    "session": ["PID", "QOS", "MSG", "STAGE", "AWAIT_ACK", "AWAIT_COMP"],
    "store_persist": ["HOLD", "STORED", "SESS", "NOT_STORED", "IS_STORED", "RECOVERED"],
}


def module_ints(path):
    """name -> (value, uses const()) for module-level NAME = int assignments."""
    tree = ast.parse(open(path).read(), path)
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple) and \
                isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "range":
            for t in node.targets[0].elts:  # A, B = range(2): plain ints too
                out[t.id] = (0, False)
            continue
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        v = node.value
        uses_const = isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "const"
        expr = v.args[0] if uses_const and v.args else v
        try:
            value = ast.literal_eval(expr)
        except ValueError:
            try:  # shifts and ors of literals, as in `0b001 << 5 | 0b11`
                value = eval(compile(ast.Expression(expr), path, "eval"), {"__builtins__": {}})
            except Exception:
                continue
        if type(value) is int:
            out[node.targets[0].id] = (value, uses_const)
    return out


def modules():
    return {f[:-3]: module_ints(os.path.join(FIRMWARE, f)) for f in sorted(os.listdir(FIRMWARE)) if f.endswith(".py")}


def test_private_copies_of_a_layout_equal_its_owner():
    mods = modules()
    checked = 0
    for owner, fields in OWNERS.items():
        for field in fields:
            own = mods[owner].get(field) or mods[owner].get("_" + field)
            assert own is not None and own[1], "%s.py does not define %s with const()" % (owner, field)
            for name, ints in mods.items():
                if name == owner:
                    continue
                copy = ints.get("_" + field) or ints.get(field)
                if copy is not None:
                    assert copy == own, "%s.py's %s is %r, %s.py (the owner) says %r" % (name, field, copy, owner, own)
                    checked += 1
    assert checked >= 25  # broker.py, protocol.py and store_persist.py keep copies


@pytest.mark.parametrize("module", sorted(modules()))
def test_module_level_integers_are_consts(module):
    plain = sorted(n for n, (v, c) in modules()[module].items() if not c)
    assert plain == [], "%s.py: plain module ints (each a globals slot of heap on a board): %s" % (module, plain)


def test_server_poll_bits_are_selects():
    """server.py keeps select's POLLIN/POLLOUT/POLLERR|POLLHUP as consts: they must be the
    interpreter's own values (the unix port's here; the boards' stream flags are the same bits)."""
    import subprocess
    import sys

    mp = os.path.join(os.path.dirname(sys.executable), "micropython")
    out = subprocess.run([mp, "-c", "import select; print(select.POLLIN, select.POLLOUT, select.POLLERR | select.POLLHUP)"],
                         capture_output=True, text=True, timeout=30).stdout.split()
    ints = module_ints(os.path.join(FIRMWARE, "server.py"))
    assert [str(ints[n][0]) for n in ("_IN", "_OUT", "_ERR")] == out
    for name in ("listen.py",):  # modules the server uses keep copies of the bits they need
        for n, (v, _) in module_ints(os.path.join(FIRMWARE, name)).items():
            if n in ("_IN", "_OUT", "_ERR"):
                assert v == ints[n][0], "%s: %s is %s, server.py's %s" % (name, n, v, ints[n][0])


# The feature groups (docs/internals.md, "Layout"): the core by name, the others by prefix.
CORE = {"__init__", "codec", "topics", "config", "session", "broker", "protocol", "server", "sysinfo",
        "buffers", "platform", "listen", "long_packet"}
GROUPS = ("store_", "sec_", "bridge", "sensor", "v5_", "ws_", "web")


def test_every_firmware_module_is_in_a_feature_group():
    names = sorted(f[:-3] for f in os.listdir(FIRMWARE) if f.endswith(".py"))
    stray = [n for n in names if n not in CORE and not n.startswith(GROUPS)]
    assert stray == [], "modules in no feature group (core, store_*, sec_*, bridge*, sensor*, v5_*): %s" % stray
