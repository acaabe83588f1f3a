"""Runs one of Mosquitto's broker tests (test/broker/NN-*.py) in this process with its broker
start swapped for standin.py's, and at the protocol levels asked only:

    python mosq_shim.py BROKER LEVELS RESULT.json WORKDIR TEST.py PORT...

LEVELS is `5`, `3,4` or `all`, with a `~` after it for lenient CONNACKs (lenient_connack). Most tests run one call per level at the end of the script
(`do_test(proto_ver=4)`, `do_test(5)`); so that each level gets a verdict of its own, a
top-level call whose level argument (keyword proto_ver, or a first argument of 3, 4, 5, 131 or
132) is not asked is left out, and a loop `for proto_ver in [4, 5]` runs the levels asked. The levels of the CONNECTs mosq_test.gen_connect builds are
recorded, so the runner knows which levels a script without such calls exercised.
Working directory: the test's folder."""

import ast
import inspect
import json
import os
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
LEVEL_VALUES = (3, 4, 5, 128 + 3, 128 + 4)


def _constant(node):
    """The int a constant expression such as 4 or 128+4 stands for, else None."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        a, b = _constant(node.left), _constant(node.right)
        return None if a is None or b is None else a + b
    return None


def call_level(node):
    """The protocol level a top-level statement `f(...)` is run for, or None."""
    if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)):
        return None
    call = node.value
    for kw in call.keywords:
        if kw.arg == "proto_ver":
            v = _constant(kw.value)
            return None if v is None else (v & 0x7F)
    if call.args:
        v = _constant(call.args[0])
        if v in LEVEL_VALUES:
            return v & 0x7F
    return None


def _level_loops(tree):
    """The loops `for proto_ver in [4, 5]:` anywhere in the script (three tests loop so)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name) and node.target.id == "proto_ver" \
                and isinstance(node.iter, (ast.List, ast.Tuple)) \
                and all(_constant(e) is not None for e in node.iter.elts):
            yield node


def split_levels(body):
    """The levels named by the script's top-level calls (into `if __name__` blocks too) and by
    its `for proto_ver in [...]` loops."""
    out = set()
    for loop in _level_loops(ast.Module(body=body, type_ignores=[])):
        out |= {_constant(e) & 0x7F for e in loop.iter.elts}
    for node in body:
        lv = call_level(node)
        if lv is not None:
            out.add(lv)
        elif isinstance(node, ast.If) and "__name__" in ast.dump(node.test):
            out |= split_levels(node.body)
    return out


def keep_levels(body, wanted):
    """body without the top-level calls made for a level not in wanted, its level loops
    running only the levels wanted."""
    for loop in _level_loops(ast.Module(body=body, type_ignores=[])):
        loop.iter.elts = [e for e in loop.iter.elts if _constant(e) & 0x7F in wanted]
    out = []
    for node in body:
        lv = call_level(node)
        if lv is not None and lv not in wanted:
            continue
        if isinstance(node, ast.If) and "__name__" in ast.dump(node.test):
            node.body = keep_levels(node.body, wanted) or [ast.Pass()]
        out.append(node)
    return out


def read_packet(sock):
    """One whole MQTT packet from sock (b'' at end of stream)."""
    head = sock.recv(1)
    if not head:
        return b""
    length, shift, raw = 0, 0, b""
    while True:
        b = sock.recv(1)
        if not b:
            return head + raw
        raw += b
        length |= (b[0] & 0x7F) << shift
        shift += 7
        if not b[0] & 0x80:
            break
    body = b""
    while len(body) < length:
        more = sock.recv(length - len(body))
        if not more:
            break
        body += more
    return head + raw + body


def lenient_connack(mosq_test):
    """Diagnostic mode: a CONNACK matches when its flags and reason code do, whatever its
    properties, so that a test goes on past Mosquitto's own CONNACK property choices."""
    strict = mosq_test.expect_packet

    def expect_packet(sock, name, expected):
        if not expected or expected[0] != 0x20:
            return strict(sock, name, expected)
        got = read_packet(sock)
        if got[:1] == b"\x20" and len(got) >= 4 and got[2:4] == expected[2:4]:
            return True
        mosq_test.packet_matches(name, got, expected)
        raise mosq_test.TestError

    mosq_test.expect_packet = expect_packet


def main(argv):
    broker, levels, result_path, workdir, script = argv[1:6]
    ports = argv[6:]
    lenient = levels.endswith("~")
    levels = levels.rstrip("~")
    wanted = None if levels == "all" else {int(x) for x in levels.split(",")}
    folder = os.path.dirname(os.path.abspath(script))
    sys.path[:0] = [HERE, os.path.dirname(folder), folder]
    import mosq_test
    import standin

    mosq_test.start_broker = standin.make_start_broker(broker, workdir)
    if lenient:
        lenient_connack(mosq_test)
    connects = set()
    last = [None]
    gen_connect = mosq_test.gen_connect
    signature = inspect.signature(gen_connect)

    def level_gen_connect(*args, **kw):
        ver = signature.bind(*args, **kw).arguments.get("proto_ver", 4) & 0x7F
        connects.add(3 if ver == 0 else ver)
        last[0] = 3 if ver == 0 else ver
        return gen_connect(*args, **kw)

    mosq_test.gen_connect = level_gen_connect
    with open(script) as f:
        tree = ast.parse(f.read(), script)
    split = split_levels(tree.body)
    if wanted is not None:
        tree.body = keep_levels(tree.body, wanted)
    code = compile(ast.fix_missing_locations(tree), script, "exec")
    sys.argv = [script] + ports
    scope = {"__name__": "__main__", "__file__": script, "__builtins__": __builtins__}
    result = {"exit": 0, "error": ""}
    try:
        exec(code, scope)
    except SystemExit as e:
        result["exit"] = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except standin.NotApplicable:
        pass
    except ModuleNotFoundError as e:
        standin.state["not_applicable"] = "the test needs the Python module %s, not installed here" % e.name
    except BaseException:
        result["exit"] = 1
        result["error"] = traceback.format_exc()[-3000:]
        print(result["error"])
    result["not_applicable"] = standin.state["not_applicable"]
    result["split_levels"] = sorted(split)
    result["connect_levels"] = sorted(connects)
    result["last_level"] = last[0]
    result["broker_starts"] = standin.state["starts"]
    with open(result_path, "w") as f:
        json.dump(result, f)
    sys.stdout.flush()
    standin._stop_all()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
