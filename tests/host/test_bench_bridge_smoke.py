"""The bridge benchmark (`ubroker bench --scenarios bridge`, host_tools/ubroker_tools/bench_bridge.py)
with small counts: both bridges (ubroker's and Mosquitto's own, to an upstream Mosquitto) produce
their figures and every check passes. No timing is asserted: the figures only have to exist.
And the subscriber's checks themselves: loss, duplicates and reordering are seen."""

import json
import os
import socket
import subprocess
import time

import pytest

from conftest import UBROKER
from ubroker_tools.bench_bridge_load import Subscriber, Tally
from ubroker_tools.bench_bridge_report import verification
from ubroker_tools.bench_proc import mosquitto_exe
from ubroker_tools.bench_rawmqtt import payload, publish_packet


@pytest.mark.skipif(not mosquitto_exe(), reason="mosquitto not installed (make test installs it)")
def test_bridge_bench_small_run(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([UBROKER, "bench", "--scenarios", "bridge", "--bridge-messages", "500", "--drain-messages",
                        "500", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "## Bridge" in (out / "results.md").read_text()
    bridge = json.loads((out / "results.json").read_text())["bridge"]
    for kind in ("mosquitto", "ubroker"):
        res = bridge["results"][kind]
        for qos in ("qos1", "qos0"):
            f = res["forward"][qos]
            assert f["rate"] and f["rate"] > 0, (kind, qos, f)
            assert f["duplicates"] == 0 and f["out_of_order"] == 0 and f["malformed"] == 0, (kind, qos, f)
        f = res["forward"]["qos1"]
        assert f["acked"] == 500 and f["unique"] == 500 and f["end"] == "complete", (kind, f)
        d = res["drain"]
        assert d["acked"] == 500 and d["unique"] == 500 and d["lost"] == 0, (kind, d)
        assert d["duplicates"] == 0 and d["out_of_order"] == 0, (kind, d)
        assert d["seconds"] > 0 and d["first_seconds"] <= d["seconds"], (kind, d)
        assert verification(d) == "ok" and verification(f) == "ok", (kind, d, f)
    assert not still_running(str(out)), "brokers of the run left running"


def still_running(marker):
    """Processes whose command line names `marker` (the run's folder is in every broker's)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(pid))
            except OSError:
                pass
    return found


def publish(pub, seq, dup, pid):
    pkt = bytearray(publish_packet("bench/x", payload(7, pub, seq), 1, pid))
    if dup:
        pkt[0] |= 0x08
    return bytes(pkt)


def test_subscriber_sees_loss_duplicates_and_reordering():
    a, b = socket.socketpair()
    try:
        b.setblocking(False)
        sub = Subscriber(b)
        tally = Tally(2, 4)
        sub.tallies[7] = tally
        msgs = [(0, 0, 0), (0, 1, 0), (0, 1, 1), (0, 3, 0), (0, 2, 0), (1, 0, 0), (1, 0, 0)]  # (pub, seq, dup)
        stream = b"".join(publish(p, s, d, 10 + i) for i, (p, s, d) in enumerate(msgs))
        # Split mid-packet: the parser must keep the remainder for the next recv.
        for part in (stream[:45], stream[45:]):
            a.sendall(part)
            time.sleep(0.05)
            sub.readable(time.monotonic())
        assert tally.unique == 5 and tally.missing() == 3  # (0,*) has 4, (1,0) one: 1,2,3 of pub 1 lost
        assert tally.duplicates == 2 and tally.duplicates_flagged == 1
        assert tally.out_of_order == 1  # seq 2 after seq 3
        a.settimeout(2)
        acks = b""
        while len(acks) < 4 * len(msgs):
            acks += a.recv(1024)
        assert acks == b"".join(b"\x40\x02" + bytes((0, 10 + i)) for i in range(len(msgs)))  # one PUBACK each
    finally:
        a.close()
        b.close()
