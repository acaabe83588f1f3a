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


# Issue 15's other two MQTT 5 fan-ins, in one short run (each broker started once per scenario).
MORE = ("fanin1v5alias", "fanin1shared")


@pytest.fixture(scope="module")
def more_run(tmp_path_factory):
    """`ubroker bench` of MORE, 1 s each, ubroker beside Mosquitto (and aedes where installed):
    (exit status, output, results by broker and scenario, results.md)."""
    out = tmp_path_factory.mktemp("bench5") / "out"
    r = subprocess.run([UBROKER, "bench", "--brokers", "ubroker,mosquitto,aedes", "--scenarios", ",".join(MORE),
                        "--duration", "1", "--out", str(out)], capture_output=True, text=True, timeout=240)
    results = json.loads((out / "results.json").read_text())["results"]
    return r.returncode, r.stdout[-3000:] + r.stderr[-3000:], results, (out / "results.md").read_text()


def lossless(res):
    """A figure, and every acknowledged message delivered once, in order (per member), on its
    publisher's topic."""
    assert "fatal" not in res and "error" not in res, res
    assert res["rate"] > 0 and res["acked"] > 0, res
    assert res["unique"] == res["acked"] and res["lost_acked"] == 0, res
    assert res["duplicates"] == 0 and res["out_of_order"] == 0 and res["malformed"] == 0, res
    assert res["end"] == "complete", res


@pytest.mark.skipif(not mosquitto_exe(), reason="mosquitto not installed (make test installs it)")
@pytest.mark.parametrize("broker", ["ubroker", "mosquitto"])
def test_v5_fanin_with_a_topic_alias(more_run, broker):
    """fanin1v5alias: each publisher's first PUBLISH sets Topic Alias 1 for its topic, the rest
    carry an empty topic and the alias (MQTT-3.3.2-12: the broker resolves it), and every
    message reaches the subscriber on its publisher's topic, once and in order."""
    _, log, results, md = more_run
    assert "topic alias" in md, log
    lossless(results[broker]["fanin1v5alias"])


@pytest.mark.skipif(not mosquitto_exe(), reason="mosquitto not installed (make test installs it)")
def test_v5_fanin_to_a_shared_subscription_mosquitto(more_run):
    """fanin1shared against Mosquitto: every acknowledged message reaches exactly one member of
    $share/bench/bench/v5/# (MQTT 5.0 section 4.8.2), each publisher's in order per member,
    and both members get some."""
    _, log, results, md = more_run
    assert "shared subscription" in md, log
    res = results["mosquitto"]["fanin1shared"]
    lossless(res)
    assert len(res["per_member"]) == 2 and min(res["per_member"]) > 0, res


@pytest.mark.skipif(not mosquitto_exe(), reason="mosquitto not installed (make test installs it)")
def test_v5_fanin_to_a_shared_subscription_ubroker(more_run):
    """fanin1shared against ubroker, as for Mosquitto; and `ubroker bench` exits 0 only then."""
    code, log, results, _ = more_run
    res = results["ubroker"]["fanin1shared"]
    assert res.get("per_member") and min(res["per_member"]) > 0, res
    lossless(res)
    assert code == 0, log


def test_peers_without_mqtt5_are_not_measured(more_run):
    """aedes (where bench/node_modules has it; CI may not) is shown as not measured, with the reason."""
    _, _, results, _ = more_run
    if "aedes" not in results:
        pytest.skip("aedes not installed (bench/node_modules; make bench installs it)")
    for scen in MORE:
        assert "MQTT 5" in results["aedes"][scen]["untested"]


@pytest.mark.parametrize("peer", ["aedes", "amqtt"])
def test_the_mqtt5_scenarios_leave_peers_without_mqtt5_unstarted(peer):
    """Where aedes and amqtt are not installed too: each MQTT 5 scenario gives them 'not
    measured' with the reason before anything is started."""
    from ubroker_tools.bench_report import verification
    from ubroker_tools.bench_scenarios import V5, run_scenario

    class Peer:
        name = peer

        def start(self, port):
            raise AssertionError("started")

    for scen in V5:
        res = run_scenario(Peer(), scen, None, {"duration": 1, "drain": 1, "out": None})
        assert verification(res) == "not measured: %s does not speak MQTT 5" % peer, res


@pytest.mark.skipif(not mosquitto_exe(), reason="mosquitto not installed (make test installs it)")
def test_the_alias_scenario_fails_clearly_where_the_broker_allows_no_alias(tmp_path):
    """MQTT-3.2.2-17/18: a CONNACK without Topic Alias Maximum (or 0) allows no alias: the
    scenario stops before sending with that reason (Mosquitto with `max_topic_alias 0`)."""
    from ubroker_tools.bench_proc import Server, free_port
    from ubroker_tools.bench_v5 import fanin_v5

    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text("listener %d 127.0.0.1\nallow_anonymous true\nmax_topic_alias 0\n" % port)
    srv = Server([mosquitto_exe(), "-c", str(conf)], str(tmp_path), port, str(tmp_path / "log")).start()
    try:
        assert srv.wait_listening(), srv.log_tail()
        with pytest.raises(OSError, match="Topic Alias Maximum is 0"):
            fanin_v5(port, 0.2, 1.0, alias=True)
    finally:
        srv.stop()
