"""`ubroker bench --rounds N`: which round's result the tables report (bench_rounds.pick, no
brokers), and one short run of two interleaved rounds whose report says so."""

import json
import subprocess

from conftest import UBROKER
from ubroker_tools.bench_report import render
from ubroker_tools.bench_rounds import pick, select


def fanin(rate, round_, **more):
    r = {"scenario": "fanin1", "qos": 1, "rate": rate, "end": "complete", "round": round_}
    r.update(more)
    return r


def test_the_median_rate_round_is_reported():
    rounds = [fanin(90000, 1), fanin(110000, 2), fanin(100000, 3)]
    assert pick(rounds)["round"] == 3


def test_an_even_count_reports_the_worse_middle_round():
    assert pick([fanin(120, 1), fanin(90, 2), fanin(100, 3), fanin(110, 4)])["round"] == 3


def test_latency_reports_the_median_p50_round_with_its_own_p99():
    rounds = [{"scenario": "latency", "p50_us": p50, "p99_us": p99, "round": i + 1}
              for i, (p50, p99) in enumerate([(40, 900), (60, 100), (50, 300)])]
    chosen = pick(rounds)
    assert chosen["round"] == 3 and chosen["p99_us"] == 300
    # lower is better: with an even count the worse middle one is the higher p50
    assert pick(rounds + [{"scenario": "latency", "p50_us": 45, "p99_us": 1, "round": 4}])["p50_us"] == 50


def test_a_failing_round_is_reported_even_when_its_rate_is_the_median_or_not():
    lost = fanin(100000, 2, lost_acked=3, end="idle")
    assert pick([fanin(90000, 1), lost, fanin(95000, 3)]) is lost  # the highest rate, not the median
    crashed = {"scenario": "fanin1", "fatal": "loadgen printed no result", "round": 3}
    assert pick([fanin(1, 1), fanin(2, 2), crashed]) is crashed
    assert pick([fanin(1, 1), {"scenario": "fanin1", "error": "did not start", "round": 2}])["round"] == 2


def test_not_measured_in_every_round_reports_the_first():
    rounds = [{"scenario": "fanin1v5", "untested": "aedes does not speak MQTT 5", "round": i} for i in (1, 2)]
    assert pick(rounds)["round"] == 1


def test_render_shows_the_rounds_range_only_with_rounds():
    rounds = {"mosquitto": {"fanin1": [fanin(100000, 1), fanin(80000, 2), fanin(112000, 3)]},
              "ubroker": {"fanin1": [fanin(120000, 1), fanin(130000, 2, lost_acked=1, end="idle"),
                                     fanin(125000, 3)]}}
    report = {"brokers": {"mosquitto": {"version": "m"}, "ubroker": {"version": "u"}}, "scenarios": ["fanin1"],
              "settings": {"duration": 1.0, "idle_clients": 50}, "results": select(rounds), "rounds": rounds}
    text = render(report)
    assert "medians of 3 interleaved rounds" in text
    assert "| fanin1 | msg/s | 80,000-112,000 (round 1) | 120,000-130,000 (round 2) **failed in round 2** |" in text
    assert "1 acknowledged messages lost" in text  # the failing round, not the median, under Verification
    del report["rounds"]
    assert "interleaved rounds" not in render(report)


def test_bench_with_two_rounds(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([UBROKER, "bench", "--rounds", "2", "--quick", "--brokers", "ubroker", "--scenarios", "fanin1",
                        "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "medians of 2 interleaved rounds" in r.stdout
    assert "round 2  ubroker" in r.stderr
    report = json.loads((out / "results.json").read_text())
    assert [x["round"] for x in report["rounds"]["ubroker"]["fanin1"]] == [1, 2]
    assert report["results"]["ubroker"]["fanin1"]["rate"] == min(x["rate"] for x in report["rounds"]["ubroker"]["fanin1"])
    assert (out / "results.md").read_text().count("medians of 2 interleaved rounds") == 1
