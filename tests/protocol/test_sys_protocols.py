"""Connected clients by protocol version in $SYS, through the network: ubroker's own names
$SYS/broker/ubroker/clients/protocol/v5, .../v311 and .../v31 (Mosquitto reports no such
figure, so they live under ubroker's branch of the tree), counted from the connections when
the report is made, and `ubroker monitor` showing them."""

import os
import re
import subprocess

import mqttraw as m
import mqttraw5 as m5
from test_sys import SYS, Watcher

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UBROKER = os.path.join(ROOT, ".venv", "bin", "ubroker")
NAME = "ubroker/clients/protocol/"


def counts(w, v5, v311, v31):
    """Wait until the three figures are (v5, v311, v31) in one report."""
    want = {"v5": v5, "v311": v311, "v31": v31}
    for k, n in want.items():
        w.number(NAME + k, lambda x, n=n: x == n)
    return {k: w.number(NAME + k) for k in want}


def test_clients_counted_by_protocol_version(broker_factory):
    """An MQTT 5 client (MQTT 5.0 section 3.1.2.2, level 5) counts under v5, a 3.1.1 client
    (MQTT-3.1.2-2, level 4) under v311, and each figure follows its clients out; the three add
    up to clients/connected. The esp32 profile at the heap its 100k amounts to on the 64-bit
    port, as the other v5 tests: at 100k there, the $SYS report and the v5 modules together
    found no room for the v5 CONNECT."""
    b = broker_factory(config=SYS, heap=m5.board_heap_on_64_bits())
    w = Watcher(b)  # a 3.1.1 client itself
    assert counts(w, 0, 1, 0) == {"v5": 0, "v311": 1, "v31": 0}
    c5 = m5.Client5(b.port)
    assert c5.connect5("five", properties=[(m5.SESSION_EXPIRY, 0)]).code == 0
    c4 = b.raw()
    assert c4.connect("four")[1] == 0
    counts(w, 1, 2, 0)
    total = w.number("clients/connected")
    assert total == 3
    c5.send(m5.disconnect(0))
    c5.close()
    counts(w, 0, 2, 0)
    c4.send(m.DISCONNECT)
    c4.close()
    counts(w, 0, 1, 0)


def test_mqtt31_client_counted_apart(broker_factory):
    """A 3.1 client (protocol name MQIsdp, level 3) counts under v31, not v311, and leaves
    the figure when it disconnects."""
    b = broker_factory(config=SYS)
    w = Watcher(b)
    c3 = b.raw()
    assert c3.connect("three", proto=b"MQIsdp", level=3)[1] == 0
    counts(w, 0, 1, 1)
    c3.send(m.DISCONNECT)
    c3.close()
    counts(w, 0, 1, 0)


def test_monitor_shows_protocols(broker_factory):
    """`ubroker monitor --once` has a protocols line with the three counts (the monitor is a
    3.1.1 client itself). The heap as in the test above: at 100k on the 64-bit port the v5
    modules and the monitor's $SYS subscription found no room (the monitor's every connection
    ran out of memory, 4,192 B free)."""
    b = broker_factory(config=SYS, heap=m5.board_heap_on_64_bits())
    c5 = m5.Client5(b.port)
    assert c5.connect5("five").code == 0
    r = subprocess.run([UBROKER, "monitor", "--host", b.host, "--port", str(b.port), "--once", "--wait", "2.5"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("protocols")]
    assert line, r.stdout
    assert re.search(r"MQTT 5 1 +3\.1\.1 1 +3\.1 0", line[0]), line[0]
    c5.close()
