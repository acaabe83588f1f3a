"""The security modules on their own: PBKDF2-HMAC-SHA256 of firmware/ubroker/sec_auth.py run in the
MicroPython unix port and cross-checked against CPython's hashlib.pbkdf2_hmac; the password
file parser; `ubroker passwd`; the access rules of firmware/ubroker/sec_acl.py (pure functions,
imported under CPython) case by case; config parsing of the per-listener TLS keys and the
refusal to start on a non-loopback listener without users."""

import hashlib
import inspect
import os
import stat
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "firmware"))

from ubroker import config  # noqa: E402
from ubroker import sec_acl as acl  # noqa: E402
from ubroker import sec_auth as auth  # noqa: E402
from ubroker import sec_files as secfiles  # noqa: E402
from ubroker_tools import cli, passwd  # noqa: E402

MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")


def pbkdf2(password, salt, iterations):
    """The firmware's PBKDF2 (auth.pbkdf2_steps) run to its end in one go. Test code: the
    board only ever runs it in slices, so this lives here and not in the firmware. Its source
    is also sent to the unix port (test below)."""
    from ubroker.sec_auth import pbkdf2_steps

    g = pbkdf2_steps(password, salt, iterations)
    try:
        while True:
            next(g)
    except StopIteration as e:
        return e.value

CASES = [
    (b"secret", b"saltsalt", 1),
    (b"secret", b"saltsalt", 2),
    (b"", b"0123456789abcdef", 1000),
    (b"p" * 64, b"saltsalt", 300),  # a key of exactly one block
    (b"long" * 40, b"saltsalt", 129),  # a key longer than a block is hashed first; 129 = one slice + 1
    (b"k", b"saltsalt", 256),  # two whole slices
    ("pässwörd".encode(), os.urandom(16), 10000),
]


def test_pbkdf2_in_micropython_matches_cpython_hashlib():
    """The firmware's hand-written HMAC and PBKDF2 (RFC 8018), run by the MicroPython unix port,
    give the bytes CPython's hashlib.pbkdf2_hmac gives, for short, block-sized and long keys
    and iteration counts around the slice size."""
    script = inspect.getsource(pbkdf2) + "import binascii\n" + "".join(
        "print(binascii.hexlify(pbkdf2(%r, %r, %d)).decode())\n" % c for c in CASES)
    env = dict(os.environ, MICROPYPATH=os.path.join(ROOT, "firmware"))
    r = subprocess.run([MICROPYTHON, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    got = r.stdout.split()
    want = [hashlib.pbkdf2_hmac("sha256", p, s, n).hex() for p, s, n in CASES]
    assert got == want


def test_pbkdf2_under_cpython_too():
    for p, s, n in CASES[:3]:
        assert pbkdf2(p, s, n) == hashlib.pbkdf2_hmac("sha256", p, s, n)


def test_constant_time_compare():
    assert auth.same(b"abc", b"abc")
    assert not auth.same(b"abc", b"abd")
    assert not auth.same(b"abc", b"ab")


def test_passwd_line_verifies_with_the_firmware_parser():
    line = passwd.hash_line("alice", "s3cret", 500)
    user, (n, salt, digest) = secfiles.parse_line(line)
    assert (user, n, len(salt)) == (b"alice", 500, 16)
    assert auth.same(pbkdf2(b"s3cret", salt, n), digest)
    assert not auth.same(pbkdf2(b"s3creT", salt, n), digest)


@pytest.mark.parametrize("line, why", [
    ("alice", "expects USER:"),
    ("alice:plain", "unknown hash scheme"),
    ("alice:$pbkdf2-sha256$ten$c2FsdHNhbHQ=$" + "A" * 44, "iterations must be a number"),
    ("alice:$pbkdf2-sha256$10$c2FsdA==$" + "A" * 44, "salt of 8 bytes"),
    ("alice:$pbkdf2-sha256$10$c2FsdHNhbHQ=", "ITERATIONS$SALT$HASH"),
])
def test_bad_password_lines_are_named(line, why):
    with pytest.raises(ValueError) as e:
        secfiles.passwords("# users\n" + line + "\n", "users.txt")
    assert "users.txt:2:" in str(e.value) and why in str(e.value)


def test_passwd_command_adds_changes_deletes_and_keeps_mode_0600(tmp_path, capsys):
    f = str(tmp_path / "users.txt")
    assert cli.main(["passwd", f, "alice", "--password", "one", "--iterations", "50"]) == 0
    assert cli.main(["passwd", f, "bob", "-b", "two", "--iterations", "50"]) == 0
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    first = secfiles.passwords(open(f).read())
    assert cli.main(["passwd", f, "alice", "-b", "three", "--iterations", "50"]) == 0
    users = secfiles.passwords(open(f).read())
    assert set(users) == {b"alice", b"bob"} and users[b"alice"] != first[b"alice"]
    n, salt, digest = users[b"alice"]
    assert auth.same(pbkdf2(b"three", salt, n), digest)
    assert cli.main(["passwd", f, "bob", "-D"]) == 0
    assert set(secfiles.passwords(open(f).read())) == {b"alice"}
    assert cli.main(["passwd", f, "bob", "-D"]) == 1
    assert cli.main(["passwd", f, "bad:name", "-b", "x"]) == 2
    assert "deleted bob" in capsys.readouterr().out


def test_passwd_reads_stdin_for_scripts(tmp_path):
    f = tmp_path / "users.txt"
    r = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ubroker"), "passwd", str(f), "carol",
                        "--stdin", "--iterations", "20"], input="pw-from-stdin\n", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    n, salt, digest = secfiles.passwords(f.read_text())[b"carol"]
    assert hashlib.pbkdf2_hmac("sha256", b"pw-from-stdin", salt, n) == digest


# ---------------------------------------------------------------- access rules

RULES = """# comment
topic read public/#
user alice
topic readwrite home/#
topic deny home/secret/#
topic write sensors/+/temp
topic read $SYS/broker/clients/#
user bob
topic read home/+/light
pattern readwrite clients/%c/#
pattern read users/%u/inbox
"""


def rules_of(text):
    """The parsed rules without a broker around them (can_* never look at the protocol)."""
    users, patterns = secfiles.acl(text, "acl")
    return acl.Acl(None, users, patterns)


@pytest.fixture
def rules():
    return rules_of(RULES)


@pytest.mark.parametrize("user, cid, topic, ok", [
    (b"alice", b"c1", b"home/kitchen/temp", True),
    (b"alice", b"c1", b"home", True),  # home/# matches its parent level
    (b"alice", b"c1", b"home/secret/key", False),  # deny wins
    (b"alice", b"c1", b"sensors/a/temp", True),  # + one level
    (b"alice", b"c1", b"sensors/a/b/temp", False),
    (b"alice", b"c1", b"public/x", False),  # read-only for anonymous, and alice has no rule
    (b"bob", b"c1", b"home/kitchen/light", False),  # read only
    (None, b"c1", b"public/x", False),
    (b"bob", b"bob-1", b"clients/bob-1/state", True),  # %c
    (b"bob", b"bob-1", b"clients/other/state", False),
    (None, b"anon", b"clients/anon/x", True),  # patterns apply to anonymous clients too
    (b"mallory", b"m", b"home/x", False),  # a user without rules may do nothing
    (b"alice", b"c1", b"$SYS/broker/clients/connected", False),  # read-only
])
def test_publish_rules(rules, user, cid, topic, ok):
    assert rules.can_publish(user, cid, topic) is ok


@pytest.mark.parametrize("user, cid, flt, ok", [
    (b"alice", b"c1", b"home/kitchen/#", True),
    (b"alice", b"c1", b"home/kitchen/+", True),
    (b"alice", b"c1", b"home", True),
    # home/# and home/+/temp would also match home/secret/...: deny wins for the whole filter
    (b"alice", b"c1", b"home/#", False),
    (b"alice", b"c1", b"home/+/temp", False),
    (b"alice", b"c1", b"home/secret/#", False),  # denied
    (b"alice", b"c1", b"home/+/key", False),  # overlaps home/secret/key: deny wins
    (b"alice", b"c1", b"#", False),  # stricter than Mosquitto: not every topic is readable
    (b"alice", b"c1", b"+/kitchen", False),
    (b"alice", b"c1", b"sensors/+/temp", False),  # write only
    (b"alice", b"c1", b"$SYS/broker/clients/connected", True),
    (b"alice", b"c1", b"$SYS/#", False),  # more than the rule covers
    (b"bob", b"c1", b"home/+/light", True),
    (b"bob", b"c1", b"home/kitchen/light", True),
    (b"bob", b"c1", b"home/#", False),
    (b"bob", b"c1", b"users/bob/inbox", True),  # %u
    (b"bob", b"c1", b"users/alice/inbox", False),
    (None, b"c1", b"users/+/inbox", False),  # %u never applies to anonymous clients
    (None, b"c1", b"public/#", True),
    (None, b"c1", b"public/a/+", True),
    (None, b"c1", b"$SYS/#", False),  # $SYS only where a rule names it
    (b"x/y", b"c1", b"users/x/y/inbox", False),  # a '/' in a name does not widen %u
    (b"bob", b"+", b"clients/+/#", False),  # nor a wildcard in a client id
])
def test_subscribe_rules(rules, user, cid, flt, ok):
    assert rules.can_subscribe(user, cid, flt) is ok


def test_hash_never_grants_dollar_topics():
    r = rules_of("topic readwrite #\n")
    assert r.can_subscribe(None, b"c", b"#") and r.can_publish(None, b"c", b"a/b")
    assert not r.can_subscribe(None, b"c", b"$SYS/#")
    assert not r.can_publish(None, b"c", b"$SYS/x")
    assert not r.can_subscribe(None, b"c", b"$SYS/broker/uptime")


@pytest.mark.parametrize("text, why", [
    ("topic sometimes a/b\n", "expects [read|write|readwrite|deny] PATTERN"),
    ("topic read a/#/b\n", "'#' only as the whole last level"),
    ("topic read a/b+\n", "'+' only as a whole level"),
    ("user\n", "expects 'user NAME'"),
    ("allow everything\n", "unknown keyword 'allow'"),
])
def test_bad_acl_lines_are_named(text, why):
    with pytest.raises(ValueError) as e:
        secfiles.acl("user a\n" + text, "acl.txt")
    assert "acl.txt:2:" in str(e.value) and why in str(e.value)


# ---------------------------------------------------------------- config

def test_tls_keys_belong_to_the_listener_declared_last():
    cfg = config.resolve(config.parse(
        "listener 1883 127.0.0.1\nlistener 8883\ncertfile c.pem\nkeyfile k.pem\nrequire_certificate true\n"))
    assert cfg["listener"] == [(1883, "127.0.0.1"), (8883, "0.0.0.0")]
    assert cfg["tls"] == {1: {"certfile": "c.pem", "keyfile": "k.pem", "require_certificate": True}}


@pytest.mark.parametrize("text, problem", [
    ("", False),  # the default listener, 127.0.0.1
    ("listener 1883 127.0.0.1\n", False),
    ("listener 1883 0.0.0.0\n", True),
    ("listener 1883\n", True),
    ("listener 1883 0.0.0.0\nallow_anonymous true\n", False),
    ("listener 1883 0.0.0.0\nallow_anonymous false\n", False),
    ("listener 1883 0.0.0.0\npassword_file users.txt\n", False),
])
def test_refuses_to_open_beyond_loopback_without_users(text, problem):
    msg = config.open_problem(config.resolve(config.parse(text)))
    assert bool(msg) is problem
    if problem:
        assert "ubroker passwd" in msg and "allow_anonymous true" in msg


def test_config_check_reports_security_mistakes(tmp_path):
    """`ubroker config --check`: the refusal to open beyond loopback, and a bad line of the
    password_file or acl_file with its own file and line."""
    from ubroker_tools import config as configmod

    users = tmp_path / "users.txt"
    users.write_text(passwd.hash_line("alice", "x", 10) + "\nbob\n")
    rules = tmp_path / "acl.txt"
    rules.write_text("user alice\ntopic maybe a/b\n")
    conf = tmp_path / "u.conf"
    conf.write_text("listener 1883 0.0.0.0\n")
    problems = configmod.check("esp32", str(conf))
    assert len(problems) == 1 and "allow_anonymous true" in problems[0]
    conf.write_text("listener 1883 0.0.0.0\npassword_file %s\nacl_file %s\n" % (users, rules))
    problems = configmod.check("esp32", str(conf))
    assert len(problems) == 2, problems
    assert "users.txt:2: expects USER:" in problems[0] and "u.conf:2:" in problems[0]
    assert "acl.txt:2: expects [read|write|readwrite|deny]" in problems[1] and "u.conf:3:" in problems[1]
    users.write_text(passwd.hash_line("alice", "x", 10) + "\n")
    rules.write_text("user alice\ntopic read a/#\n")
    assert configmod.check("esp32", str(conf)) == []
