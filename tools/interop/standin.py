"""A stand-in for Mosquitto's test/mosq_test.py start_broker: the same arguments, but it starts
the broker under measurement. For mosquitto, Debian's binary with the test's own config; for
ubroker, `ubroker run` with the test's config where ubroker has the same keys. A test whose
config or command asks for what ubroker has not (a plugin, a persistence file, per-listener
settings ...) raises NotApplicable with the reason, and is not counted as a pass or a fail."""

import atexit
import os
import signal
import ssl
import subprocess
import time

import brokers

# Keys that change only what Mosquitto writes to its log, not what a client sees.
LOG_ONLY = ("log_type", "log_dest", "log_timestamp", "log_timestamp_format", "connection_messages")
# Mosquitto's file-valued keys whose files come from its build (test/broker/c/*.so).
BUILT_FILES = ("plugin", "auth_plugin")


class NotApplicable(BaseException):
    """BaseException: some tests start their broker inside `except Exception` and must not
    swallow this and carry on against no broker."""


_started = []
state = {"not_applicable": None, "starts": 0}


def ubroker_keys():
    """The config keys ubroker's own parser knows (firmware/ubroker/config.py)."""
    from ubroker_tools import profiles
    config = profiles.fwconfig()
    return set(config.SCHEMA) | set(config.BRIDGE)


def config_lines(path):
    """[(line number, key, rest)] of a mosquitto.conf-form file, comments and blanks left out."""
    out = []
    with open(path, errors="replace") as f:
        for no, line in enumerate(f, 1):
            words = line.split(None, 1)
            if words and not words[0].startswith("#"):
                out.append((no, words[0], words[1].strip() if len(words) > 1 else ""))
    return out


def not_applicable(reason):
    state["not_applicable"] = reason
    raise NotApplicable(reason)


def loopback(key, rest):
    """The line for `key rest` bound to 127.0.0.1 when it opens a listener on every interface:
    these tests reach their broker on loopback, and nothing here listens further."""
    if key == "listener" and len(rest.split()) == 1:
        return "listener %s 127.0.0.1" % rest
    if key == "port":
        return "port %s\nbind_address 127.0.0.1" % rest
    return "%s %s" % (key, rest)


def password_format(conf):
    """Not applicable when the config's password file holds Mosquitto's hashes ($6$, $7$):
    ubroker reads its own ($pbkdf2-sha256$), and the tests do not give the passwords to redo them."""
    for _no, key, rest in config_lines(conf):
        if key == "password_file" and os.path.exists(rest):
            with open(rest, errors="replace") as f:
                for line in f:
                    user, _, hashed = line.strip().partition(":")
                    if hashed.startswith(("$6$", "$7$")):
                        not_applicable("password file %s in Mosquitto's hash format (%s): ubroker reads "
                                       "$pbkdf2-sha256$ hashes" % (rest, hashed[:3]))


def translate(conf, workdir, broker):
    """The config file `broker` is to read for the test's config `conf`. For both: listeners on
    loopback. For ubroker: Mosquitto's persistence_file becomes a persistence_location folder
    of its own (the same feature in ubroker's form), per_listener_settings false (Mosquitto's
    default) and log-only keys are dropped, and any other key ubroker has not makes the test
    not applicable."""
    known = ubroker_keys() if broker == "ubroker" else None
    kept = []
    for _no, key, rest in config_lines(conf):
        if known is not None:
            if key in LOG_ONLY or (key, rest) == ("per_listener_settings", "false"):
                continue
            if key == "persistence_file":
                # Mosquitto writes its file into a folder that exists; ubroker's folder must too
                key, rest = "persistence_location", os.path.join(workdir, rest + ".d")
                os.makedirs(rest, exist_ok=True)
            elif key not in known:
                not_applicable("config key `%s %s`: ubroker has no such setting" % (key, rest))
        kept.append(loopback(key, rest))
    if known is not None:
        password_format(conf)
    out = os.path.join(workdir, "%s-%d-%s" % (broker, os.getpid(), os.path.basename(conf)))
    with open(out, "w") as f:
        f.write("\n".join(kept) + "\n")
    return out


def check_files(conf):
    """Not applicable for either broker: a plugin not built, or a certificate of the test tree
    past its end date (test/ssl's expired in February 2025)."""
    for _no, key, rest in config_lines(conf):
        if key in BUILT_FILES and not os.path.exists(rest.split()[0] if rest else ""):
            not_applicable("`%s %s`: needs Mosquitto's test plugins built from its source tree" % (key, rest))
        if key == "certfile" and os.path.exists(rest):
            try:
                end = ssl._ssl._test_decode_cert(rest)["notAfter"]
            except (ssl.SSLError, KeyError, AttributeError):
                continue
            if ssl.cert_time_to_seconds(end) < time.time():
                not_applicable("the test tree's certificate %s expired on %s" % (rest, end))


class BrokerProcess:
    """What mosq_test's callers use of a Popen (terminate, wait, communicate, send_signal,
    returncode ...), over a broker started in its own process group so that stopping it
    also stops `ubroker run`'s MicroPython child, even after a SIGHUP ended the supervisor.
    Its output goes to a file (a verbose log can fill a pipe and stall the broker)."""

    def __init__(self, cmd, logpath):
        self.args = cmd
        self.logpath = logpath
        self._log = open(logpath, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid
        _started.append(self)

    @property
    def returncode(self):
        return self.proc.returncode

    def poll(self):
        return self.proc.poll()

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def terminate(self):
        self.proc.terminate()

    def kill(self):
        self.proc.kill()

    def _group(self, sig):
        try:
            os.killpg(self.pid, sig)
        except OSError:
            pass

    def wait(self, timeout=None):
        try:
            rc = self.proc.wait(10 if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            if timeout is not None:
                raise
            self.proc.kill()
            rc = self.proc.wait()
        self._group(signal.SIGTERM)
        time.sleep(0.05)
        self._group(signal.SIGKILL)
        return rc

    def communicate(self, input=None, timeout=None):
        self.wait(timeout)
        self._log.close()
        with open(self.logpath, "rb") as f:
            return b"", f.read()


@atexit.register
def _stop_all():
    for b in _started:
        if b.proc.poll() is None:
            b.proc.terminate()
        b.wait()


def mosquitto_args(cmd):
    """(config file, port) from a mosquitto command line a test built itself."""
    conf = port = None
    for i, a in enumerate(cmd[:-1]):
        if a == "-c":
            conf = cmd[i + 1]
        elif a == "-p":
            port = int(cmd[i + 1])
    return conf, port


def make_start_broker(broker, workdir):
    """start_broker(filename, cmd=None, port=0, use_conf=False, expect_fail=False, nolog=False)
    as mosq_test's, for `broker`."""

    def start_broker(filename, cmd=None, port=0, use_conf=False, expect_fail=False, nolog=False):
        conf = None
        if cmd is not None:
            if not os.path.basename(cmd[0]).startswith("mosquitto"):
                not_applicable("the test starts its own broker command %s" % " ".join(cmd))
            conf, p = mosquitto_args(cmd)
            port = p or port
        elif use_conf or port == 0:
            conf = filename.replace(".py", ".conf")
        if port == 0:
            port = 1888
        if conf is not None:
            check_files(conf)
        state["starts"] += 1
        line = brokers.command(broker, config=translate(conf, workdir, broker) if conf else None,
                               port=None if conf else port)
        logpath = os.path.join(workdir, "%s-%d-%d.log" % (broker, os.getpid(), state["starts"]))
        b = BrokerProcess(line, logpath)
        if brokers.wait_listening(b.proc, port, 30 if broker == "ubroker" else 5):
            return b
        if expect_fail:
            return b
        b.terminate()
        _out, err = b.communicate()
        print("FAIL: unable to start broker: %s" % err.decode(errors="replace"))
        raise IOError

    return start_broker
