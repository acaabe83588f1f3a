"""Parsers of the password_file and the acl_file, with the reasons a line is wrong, and the
wiring of what they hold: load() reads the files and hands plain data to auth.Guard and
acl.Acl, which import nothing back. The broker imports this at start and drops it from the
heap once the files are read (its code is only needed then); the host tools use the parsers
to check the files (`ubroker config --check`)."""

import binascii

from .topics import valid_filter

SCHEME = "$pbkdf2-sha256$"


def load(proto):
    """Set up what the config asks for on the protocol: its Acl (acl_file), its Guard
    (password_file, or allow_anonymous false), and sec, the one that checks a CONNECT: the
    Guard (which asks the Acl once the password is right), else the Acl. Then this module
    leaves the heap. ValueError names a file that cannot be used."""
    cfg = proto.cfg
    try:
        path = cfg["acl_file"]
        if path:
            from .sec_acl import Acl

            users, patterns = acl(read(path, "acl_file"), path)
            proto.acl = Acl(proto, users, patterns)
        path = cfg["password_file"]
        if path or cfg["allow_anonymous"] is False:
            from .sec_auth import Guard

            proto.guard = Guard(proto, passwords(read(path, "password_file"), path) if path else {})
        proto.sec = proto.guard or proto.acl
    finally:
        import ubroker

        ubroker.forget("sec_files")  # the files are read: the parser's code can go


def read(path, what):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        raise ValueError("cannot read %s %s: %s" % (what, path, e))


def parse_line(line):
    """'user:$pbkdf2-sha256$N$SALT$HASH' -> (user bytes, (N, salt, hash)); ValueError with a
    reason for anything else."""
    user, sep, rest = line.partition(":")
    if not sep or not user:
        raise ValueError("expects USER:%sITERATIONS$SALT$HASH" % SCHEME)
    if not rest.startswith(SCHEME):
        raise ValueError("unknown hash scheme (expects %s...; make it with `ubroker passwd`)" % SCHEME)
    parts = rest[len(SCHEME):].split("$")
    if len(parts) != 3:
        raise ValueError("expects ITERATIONS$SALT$HASH after %s" % SCHEME)
    try:
        n = int(parts[0])
        salt = binascii.a2b_base64(parts[1])
        digest = binascii.a2b_base64(parts[2])
    except Exception:
        raise ValueError("iterations must be a number, salt and hash base64")
    if n < 1 or len(salt) < 8 or len(digest) != 32:
        raise ValueError("iterations >= 1, a salt of 8 bytes or more and a 32-byte hash expected")
    return user.encode(), (n, salt, digest)


def passwords(text, source="password_file"):
    """{user: (iterations, salt, hash)}; ValueError naming the first bad line."""
    users = {}
    for no, line in enumerate(text.split("\n"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            user, entry = parse_line(line)
        except ValueError as e:
            raise ValueError("%s:%d: %s" % (source, no, e.args[0]))
        users[user] = entry
    return users


def _rule(words, access_of, source, no):
    if len(words) == 1:
        access, pat = access_of["readwrite"], words[0]
    elif len(words) == 2 and words[0] in access_of:
        access, pat = access_of[words[0]], words[1]
    else:
        raise ValueError("%s:%d: expects [read|write|readwrite|deny] PATTERN" % (source, no))
    p = pat.encode()
    # %c and %u hold no wildcard once filled in (Acl skips a pattern whose name would have
    # one), so a pattern is checked as the filter it stands for.
    if not valid_filter(p):
        raise ValueError("%s:%d: not a topic filter: '#' only as the whole last level, '+' only as a "
                         "whole level" % (source, no))
    return access, p


def acl(text, source="acl_file"):
    """(users, patterns): users maps a user name (bytes; None = anonymous) to [(access,
    levels)]; patterns is [(access, pattern bytes)] with %c/%u still in. ValueError names the
    first bad line."""
    from .sec_acl import DENY, READ, WRITE

    access_of = {"read": READ, "write": WRITE, "readwrite": READ | WRITE, "deny": DENY}
    users = {}
    patterns = []
    current = None
    for no, line in enumerate(text.split("\n"), 1):
        words = line.split()  # no trailing comments: '#' is a wildcard in a pattern
        if not words or words[0][:1] == "#":
            continue
        key = words[0]
        if key == "user":
            if len(words) != 2:
                raise ValueError("%s:%d: expects 'user NAME'" % (source, no))
            current = words[1].encode()
            users.setdefault(current, [])
        elif key == "topic":
            access, p = _rule(words[1:], access_of, source, no)
            users.setdefault(current, []).append((access, p.split(b"/")))
        elif key == "pattern":
            patterns.append(_rule(words[1:], access_of, source, no))
        else:
            raise ValueError("%s:%d: unknown keyword '%s' (user, topic, pattern)" % (source, no, key))
    return users, patterns


