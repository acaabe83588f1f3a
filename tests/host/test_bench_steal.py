"""`ubroker bench`'s guard against stolen CPU time (bench_steal): /proc/stat read, the share
stolen between two samples, a run repeated while too much was stolen and kept once not (or
after AGAIN more runs), and the report's sentence. No brokers: the runs are stand-ins."""

from ubroker_tools import bench_steal
from ubroker_tools.bench_report import render, summary
from ubroker_tools.bench_steal import AGAIN, STEAL_MAX, rerun_note, sample, stolen_pct, undisturbed


def test_sample_reads_the_steal_column_of_all_cpus(tmp_path):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 2 30 800 4 0 6 58 7 0\ncpu0 50 1 15 400 2 0 3 29 3 0\n")
    assert sample(str(stat)) == (58, 100 + 2 + 30 + 800 + 4 + 0 + 6 + 58)


def test_sample_without_proc_stat_or_its_steal_column(tmp_path):
    assert sample(str(tmp_path / "absent")) is None
    old = tmp_path / "stat"
    old.write_text("cpu  100 2 30 800\n")  # a kernel before 2.6.11
    assert sample(str(old)) is None


def test_stolen_pct():
    assert stolen_pct((10, 1000), (40, 1600)) == 5.0
    assert stolen_pct(None, (40, 1600)) is None
    assert stolen_pct((10, 1000), (10, 1000)) is None  # no time passed


class Machine:
    """Samples where each run steals the next share in `shares` (% of 1,000 ticks)."""

    def __init__(self, shares):
        self.shares = list(shares)
        self.stolen = self.total = 0
        self.runs = 0

    def sample(self):
        return self.stolen, self.total

    def run(self):
        self.runs += 1
        self.stolen += int(10 * self.shares.pop(0))
        self.total += 1000
        return {"scenario": "fanin1", "rate": 1000 * self.runs}


def test_a_quiet_run_is_kept():
    m = Machine([0.5])
    r = undisturbed(m.run, m.sample)
    assert (m.runs, r["attempts"], r["steal_pct"], r["rate"]) == (1, 1, 0.5, 1000)


def test_a_disturbed_run_is_run_again_until_one_is_quiet():
    said = []
    m = Machine([STEAL_MAX + 4, 1.0, 9.0])
    r = undisturbed(m.run, m.sample, said.append)
    assert (m.runs, r["attempts"], r["steal_pct"], r["rate"]) == (2, 2, 1.0, 2000)
    assert len(said) == 1 and "6.0 % of the CPU time stolen" in said[0]


def test_runs_again_at_most_again_times_and_keeps_the_last():
    m = Machine([9.0] * (AGAIN + 3))
    r = undisturbed(m.run, m.sample)
    assert m.runs == AGAIN + 1 and r["attempts"] == AGAIN + 1 and r["steal_pct"] == 9.0


def test_unknown_steal_is_run_once():
    calls = []
    r = undisturbed(lambda: calls.append(1) or {"rate": 1}, lambda: None)
    assert calls == [1] and r["steal_pct"] is None and r["attempts"] == 1


def test_the_report_says_how_many_runs_were_repeated():
    rounds = {"ubroker": {"fanin1": [{"steal_pct": 0.4, "attempts": 1}, {"steal_pct": 1.2, "attempts": 3}]},
              "mosquitto": {"fanin1": [{"steal_pct": 0.2, "attempts": 2}, {"steal_pct": 0.1, "attempts": 1}]}}
    note = rerun_note(rounds)
    assert "3 runs were repeated" in note and "1.2 % stolen at most" in note
    assert "not known" in rerun_note({"ubroker": {"fanin1": {"rate": 1}}})


def test_the_summary_line_shows_the_share_stolen():
    r = {"scenario": "fanin1", "rate": 50000, "qos": 1, "end": "complete", "steal_pct": 2.5, "attempts": 2}
    assert "stolen 2.50% (run 2 times)" in summary(r)


def test_the_rendered_report_carries_the_note():
    report = {"date": "d", "command": "c", "machine": "m", "scenarios": ["fanin1"],
              "settings": {"duration": 3.0, "idle_clients": 200},
              "brokers": {"ubroker": {"version": "u"}},
              "results": {"ubroker": {"fanin1": {"scenario": "fanin1", "rate": 5, "qos": 1, "end": "complete",
                                                  "steal_pct": 0.3, "attempts": 1}}}}
    assert "0.3 % stolen at most" in render(report)


def test_the_thresholds_are_what_the_docs_say():
    assert (bench_steal.STEAL_MAX, bench_steal.AGAIN) == (2.0, 2)
