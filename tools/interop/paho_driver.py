"""Runs one paho interoperability suite (client_test5.py or client_test.py) in this process,
as its own __main__ would, and writes one JSON record per test: verdict, time, output.

    python paho_driver.py SUITE.py PORT RESULTS.json TIMEOUT [TEST_NAME ...]

Run with the suite's folder as working directory (it imports its `mqtt` package from there).
A paho test that catches its own failure and only returns False (test_zero_length_clientid)
is a pass to unittest; here it is recorded as a failure, with that said in its message.
A test still running after TIMEOUT seconds (test_flow_control2 waits for a DISCONNECT that a
broker may never send, on a socket without a timeout) is recorded as "timeout" and the process
ends there: paho_suite.py starts it again for the tests after it."""

import io
import json
import os
import runpy
import sys
import threading
import time
import traceback
import unittest

OUTPUT_TAIL = 4000  # characters of a test's output kept: the end holds the assertion


def save(path, names, records):
    with open(path, "w") as f:
        json.dump({"tests": names, "records": records}, f, indent=1)


class Recorder(unittest.TestResult):
    def __init__(self, records, timeout, on_timeout):
        super().__init__()
        self.records = records
        self._out = None
        self.timeout = timeout
        self.on_timeout = on_timeout
        self._timer = None

    def startTest(self, test):
        super().startTest(test)
        self._out = io.StringIO()
        self._saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = self._out
        test._interop_returned = None
        self._rec = {"test": test.id().rpartition(".")[2], "doc": test.shortDescription() or "",
                     "start": time.time(), "verdict": "pass", "message": ""}
        self._timer = threading.Timer(self.timeout, self._expired)
        self._timer.daemon = True
        self._timer.start()

    def _expired(self):
        rec = dict(self._rec, end=time.time(), verdict="timeout",
                   message="still running after %d s: stopped here" % self.timeout,
                   output=self._out.getvalue()[-OUTPUT_TAIL:])
        self.records.append(rec)
        self.on_timeout()

    def stopTest(self, test):
        self._timer.cancel()
        sys.stdout, sys.stderr = self._saved
        rec = self._rec
        rec["end"] = time.time()
        if rec["verdict"] == "pass" and test._interop_returned is False:
            rec["verdict"] = "fail"
            rec["message"] = "the test returned False (its own check failed; unittest counts it as a pass)"
        rec["output"] = self._out.getvalue()[-OUTPUT_TAIL:]
        self.records.append(rec)
        super().stopTest(test)

    def _failed(self, test, verdict, err):
        if not isinstance(test, unittest.TestCase):  # setUpClass or the like: no test around it
            self.records.append({"test": str(test), "doc": "", "start": time.time(), "end": time.time(),
                                 "verdict": verdict, "output": "",
                                 "message": "".join(traceback.format_exception(*err))[-OUTPUT_TAIL:]})
            return
        self._rec["verdict"] = verdict
        self._rec["message"] = "".join(traceback.format_exception(*err))[-OUTPUT_TAIL:]

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._failed(test, "fail", err)

    def addError(self, test, err):
        super().addError(test, err)
        self._failed(test, "error", err)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._rec["verdict"] = "skip"
        self._rec["message"] = reason


def _call_test_method(self, method):
    self._interop_returned = method()


def _flatten(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _flatten(t)
        else:
            yield t


def main(argv):
    suite, port, results, timeout = argv[1], argv[2], argv[3], float(argv[4])
    only = argv[5:]
    records = []
    names = []

    def on_timeout():
        save(results, names, records)
        os._exit(3)

    class Runner:
        def run(self, test):
            names.extend(t.id().rpartition(".")[2] for t in _flatten(test))
            result = Recorder(records, timeout, on_timeout)
            test(result)
            return result

    def patched_main(*args, **kw):
        names = ["Test." + n if "." not in n else n for n in only]
        unittest.TestProgram(module="__main__", argv=[suite] + names, testRunner=Runner(), exit=False)

    # The suites read their port from argv and call unittest.main() themselves.
    unittest.main = patched_main
    unittest.TestCase._callTestMethod = _call_test_method
    sys.argv = [suite, "-p", port]
    sys.path.insert(0, os.path.dirname(os.path.abspath(suite)))  # the suite's own `mqtt` package
    try:
        runpy.run_path(suite, run_name="__main__")
    finally:
        save(results, names, records)
    # The suites' client threads may linger on a socket the broker keeps open.
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv)
    os._exit(0)
