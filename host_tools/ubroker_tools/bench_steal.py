"""`ubroker bench`'s guard against a virtual machine's stolen time: the share of the machine's
CPU time the hypervisor gave to other guests while one broker ran one scenario (the `steal`
column of /proc/stat, all CPUs). On the shared 2-core VM the bench runs on, rounds with a few
percent stolen ran at half the rate of their neighbours, the broker then idle a third of the
time (measured 2026-12-07: 24-38 ticks of 300 stolen on the broker's CPU in the slow runs, 1-6
in the others). Such a round is run again, up to AGAIN more times, for every broker alike; the
result keeps the share stolen (`steal_pct`) and the attempts it took (`attempts`), and the
report says how many rounds were run again."""

STEAL_MAX = 2.0  # % of all CPUs' time stolen during a run above which it is run again
AGAIN = 2  # at most this many more runs of one (broker, scenario, round)


def sample(path="/proc/stat"):
    """(stolen, total) CPU ticks of all CPUs so far, or None where /proc/stat has no steal."""
    try:
        with open(path) as f:
            fields = f.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    ticks = [int(x) for x in fields[1:]]
    # guest and guest_nice (fields 9 and 10) are counted in user and nice already
    return ticks[7], sum(ticks[:8])


def stolen_pct(before, after):
    """The share of the CPU time between two samples that was stolen, in %, or None."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return 100.0 * (after[0] - before[0]) / (after[1] - before[1])


def undisturbed(run, sample_=sample, log=None):
    """run() once, and again (up to AGAIN more times) while more than STEAL_MAX % of the
    machine's CPU time was stolen during it. Returns the last result, with `steal_pct` and
    `attempts`; log(message) is told of each run that is repeated."""
    attempt = 0
    while True:
        attempt += 1
        before = sample_()
        r = run()
        pct = stolen_pct(before, sample_())
        r["steal_pct"] = None if pct is None else round(pct, 1)
        r["attempts"] = attempt
        if pct is None or pct <= STEAL_MAX or attempt > AGAIN:
            return r
        if log is not None:
            log("%.1f %% of the CPU time stolen by the hypervisor: run again" % pct)


def rerun_note(rounds):
    """A sentence for the report: how many rounds were run again for stolen time, and the most
    stolen from a round reported. rounds: {broker: {scenario: [results]}} (or their picks)."""
    results = [r for by_scen in rounds.values() for rs in by_scen.values()
               for r in (rs if isinstance(rs, list) else [rs])]
    again = sum(r.get("attempts", 1) - 1 for r in results)
    steals = [r["steal_pct"] for r in results if r.get("steal_pct") is not None]
    if not steals:
        return "Stolen CPU time: not known here (/proc/stat has no steal column)."
    return ("Stolen CPU time (the hypervisor's, /proc/stat): a run with more than %.0f %% of the machine's "
            "CPU time stolen is run again, up to %d more times, for every broker alike: %d run%s repeated; "
            "the runs kept had %.1f %% stolen at most." % (STEAL_MAX, AGAIN, again, " was" if again == 1 else "s were",
                                                           max(steals)))
