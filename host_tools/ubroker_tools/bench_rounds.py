"""`ubroker bench --rounds N`: which of a (broker, scenario)'s N results the tables report.

The rule, one job: a round that failed verification is never hidden (the first failing round is
the one reported); otherwise the round with the median of the scenario's figure, the number its
ratio to Mosquitto is made of (bench_report.figure: the rate; p50 for latency; RSS per client
for idle; clients in for storm). With an even N, the worse of the two middle rounds. The result
reported is always one whole round (its verification and CPU figures come along), never an
average; its p99, for latency, is the median-p50 round's p99."""

from .bench_report import figure, is_failure, lower_is_better


def pick(rounds):
    """The result reported for one (broker, scenario) out of its rounds' results, in run order."""
    failed = [r for r in rounds if is_failure(r)]
    if failed:
        return failed[0]
    measured = [(figure(r), i) for i, r in enumerate(rounds) if figure(r) is not None]
    if not measured:
        return rounds[0]  # not measured (or no figure) in every round: the first says why
    lower = lower_is_better(rounds[0].get("scenario"))
    # Worst first, the run order breaking ties: index (n-1)//2 is the median, or with an even
    # count the worse middle one.
    measured.sort(key=lambda vi: (-vi[0] if lower else vi[0], vi[1]))
    return rounds[measured[(len(measured) - 1) // 2][1]]


def select(rounds_by_broker):
    """{broker: {scenario: [round results]}} -> {broker: {scenario: the result reported}}."""
    return {b: {s: pick(rs) for s, rs in by_scen.items()} for b, by_scen in rounds_by_broker.items()}
