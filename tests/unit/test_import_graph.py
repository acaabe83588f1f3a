"""The firmware's modules import one another in one direction only: sec_files.py parses the
password and ACL files and hands plain data to sec_auth.py and sec_acl.py, sensors.py asks
sensor_setup.py for its list of sensors, and none of those imports its caller back. Read from
the source with ast, late imports inside functions included, so a circle that only closes at
run time is found too. A sensor driver named on a `sensor` line is imported by name
(sensor_setup.factory): such plugins are not edges here."""

import ast
import os

from conftest import ROOT

# UBROKER_FIRMWARE: another tree to check (a worktree, or an older copy to see this fail).
PACKAGE = os.path.join(os.environ.get("UBROKER_FIRMWARE") or os.path.join(ROOT, "firmware"), "ubroker")


def imports():
    """{module: set of the package's modules it imports}."""
    graph = {}
    for name in sorted(os.listdir(PACKAGE)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(PACKAGE, name)) as f:
            tree = ast.parse(f.read())
        deps = graph[name[:-3]] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:  # from .sec_acl import Acl
                    deps.add(node.module.split(".")[0])
                else:  # from . import sensor_setup
                    deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ubroker."):
                deps.add(node.module.split(".")[1])
    for deps in graph.values():
        deps &= set(graph)
    return graph


def circles(graph):
    """Every import circle, each as the list of modules around it."""
    found = []
    state = {}  # module -> 1 while on the path, 2 when done

    def visit(m, path):
        state[m] = 1
        path.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                found.append(path[path.index(d):] + [d])
            elif d not in state:
                visit(d, path)
        path.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])
    return found


def test_no_module_of_the_firmware_imports_itself_back():
    graph = imports()
    assert {"sec_acl", "sec_auth", "sec_files", "sensors", "sensor_setup"} <= set(graph)
    assert circles(graph) == []


def test_acl_auth_and_sensor_setup_import_nothing_back():
    graph = imports()
    assert "sec_files" not in graph["sec_acl"] and "sec_files" not in graph["sec_auth"]
    assert "sensors" not in graph["sensor_setup"]


def test_a_circle_is_found():
    """The check itself can fail: a made-up circle of three is reported."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
