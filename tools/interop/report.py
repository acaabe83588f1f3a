"""The counts and the markdown report of a run (run.py's results dict): pass counts per suite
and protocol group, then each failing test with what it printed, so that the failing packet
exchange can be read without running it again."""

from mosq_suite import GROUPS


def _tests(recs):
    """The records of tests proper (not the suite's or the broker's own notes)."""
    return [r for r in recs if not r["test"].startswith("(")]


def paho_count(recs):
    tests = _tests(recs)
    notes = [r["message"] for r in recs if r["test"].startswith("(")]
    return "%d of %d pass%s" % (sum(r["verdict"] == "pass" for r in tests), len(tests),
                                "; " + "; ".join(notes) if notes else "")


def mosq_counts(recs):
    out = []
    for name in [g for g, _ in GROUPS] + ["?"]:
        rs = [r for r in recs if r["group"] == name]
        if not rs:
            continue
        n = {v: sum(r["verdict"] == v for r in rs) for v in ("pass", "fail", "n/a")}
        applicable = n["pass"] + n["fail"]
        out.append("protocol %s: %d of %d pass (%d not applicable, %d listed)"
                   % (name if name != "?" else "not identified", n["pass"], applicable, n["n/a"], len(rs)))
    return out


def summary(results):
    lines = []
    for broker, entry in results["brokers"].items():
        lines.append("%s (%s):" % (broker, entry["version"]))
        for title, recs in entry["suites"].items():
            if title == "mosquitto":
                for line in mosq_counts(recs):
                    lines.append("  Mosquitto's broker tests, %s" % line)
            else:
                lines.append("  %s: %s" % (title, paho_count(recs)))
    if results.get("lenient_connack"):
        lines.append("(lenient CONNACK comparison: a diagnostic run, not the suite's own verdicts)")
    return lines


def _block(text):
    text = (text or "").strip()
    return "```\n%s\n```\n" % text if text else ""


def markdown(results):
    out = ["# Interoperability run, %s\n" % results["started"], "\n".join(summary(results)), ""]
    for broker, entry in results["brokers"].items():
        for title, recs in entry["suites"].items():
            out.append("## %s: %s\n" % (broker, "Mosquitto's broker tests" if title == "mosquitto" else title))
            out.append("| test | protocol | verdict | note |\n|---|---|---|---|")
            for r in recs:
                note = r.get("not_applicable") or (r.get("doc") or "")
                if r.get("mixed"):
                    note = (note + "; " if note else "") + r["mixed"]
                out.append("| %s | %s | %s | %s |" % (r["test"], r.get("group", ""), r["verdict"],
                                                     note.replace("|", "/")))
            out.append("")
            for r in recs:
                if r["verdict"] in ("fail", "error", "timeout"):
                    out.append("### %s %s (%s)\n" % (r["test"], r.get("group", ""), r["verdict"]))
                    out.append(_block(r.get("message") or r.get("error")))
                    out.append(_block(r.get("output")))
                    if r.get("trace"):
                        out.append("Packets during the test (seconds from its start; c<n> a connection, "
                                   "> to the broker, < from it):\n")
                        out.append(_block("\n".join(r["trace"])))
    return "\n".join(out) + "\n"
