"""The MQTT 5 fan-in of the benchmark (`ubroker bench --scenarios fanin1v5`,
host_tools/ubroker_tools/bench_v5.py), briefly, beside Mosquitto in the same run: both produce
a figure and every acknowledged message arrives once and in order. No timing is asserted."""

import json
import subprocess

import pytest

from conftest import UBROKER
from ubroker_tools.bench_proc import mosquitto_exe


@pytest.mark.skipif(not mosquitto_exe(), reason="mosquitto not installed (make test installs it)")
def test_v5_fanin_small_run(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([UBROKER, "bench", "--brokers", "ubroker,mosquitto,aedes", "--scenarios", "fanin1v5",
                        "--duration", "1", "--out", str(out)], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "MQTT 5" in (out / "results.md").read_text()
    results = json.loads((out / "results.json").read_text())["results"]
    by = {name: res["fanin1v5"] for name, res in results.items()}  # broker -> scenario -> result
    for name in ("ubroker", "mosquitto"):
        res = by[name]
        assert "fatal" not in res and "error" not in res, res
        assert res["rate"] > 0 and res["acked"] > 0, res
        assert res["unique"] == res["acked"] and res["lost_acked"] == 0, res
        assert res["duplicates"] == 0 and res["out_of_order"] == 0 and res["end"] == "complete", res
    if "aedes" in by:  # absent where bench/node_modules is not installed (CI: make bench installs it)
        assert "MQTT 5" in by["aedes"]["untested"]
