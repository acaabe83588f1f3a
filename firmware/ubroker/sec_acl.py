"""Access rules. Owns the acl_file (Mosquitto's form) and the two questions asked of it: may this
client publish to a topic, and may it subscribe to a filter. Imported only when `acl_file` is
configured; without one everything is allowed.

    # comment
    topic read $SYS/#                 before any `user` line: rules for anonymous clients
    user alice
    topic readwrite home/#            ACCESS is read, write, readwrite (the default) or deny
    topic deny home/secret/#
    pattern readwrite clients/%c/#    for every client: %c is its client id, %u its user name

A user with no rules of its own may only do what `pattern` lines allow. A deny rule that
matches wins over any allowing rule. A `$` topic is matched only by a rule whose first level is
that same `$` level: `#` never grants `$SYS`.

A SUBSCRIBE is granted only if every topic its filter can match is readable: some read rule
covers the filter level by level, and no deny rule overlaps it. Deliveries are then never
checked, which keeps the routing path free of rule lookups. This is stricter than Mosquitto,
which grants any subscription and drops the messages a rule forbids: here `#` with a rule for
`home/#` only is refused (SUBACK 0x80), and the client must subscribe to `home/#`.

The file is parsed by sec_files.py, which hands the rules to Acl as plain data: this module
imports nothing back. A rule matches a topic as a subscription filter would
(topics.match_levels), so a rule and a filter never disagree on what `+`, `#` and `$` mean.
Also runs under CPython (tests, `ubroker config --check`)."""

from .codec import NOT_AUTHORISED, const
from .topics import match_levels

# The access bits of a rule; sec_files.py maps the file's words onto them.
READ = const(1)
WRITE = const(2)
DENY = const(4)


def _covers(levels, flt):
    """Is every topic the filter flt (levels) can match also matched by the rule?"""
    if flt[0][:1] == b"$" and levels[0] != flt[0]:
        return False
    last = len(levels) - 1
    for i in range(len(flt)):
        if i > last:
            return False
        lv = levels[i]
        if lv == b"#":
            return True
        f = flt[i]
        if f == b"#":
            return False  # the filter goes on to any depth, the rule does not
        if lv != b"+" and lv != f:
            return False
    # The filter ends here: it matches its own depth only (a/# also matched 'a', handled above)
    return last == len(flt) - 1 or (last == len(flt) and levels[last] == b"#")


def _overlaps(levels, flt):
    """Could some topic be matched by both the rule and the filter?"""
    a0, b0 = levels[0], flt[0]
    if a0[:1] == b"$" or b0[:1] == b"$":
        if a0 != b0:  # a $ level meets only the same $ level, never a wildcard
            return False
    n = min(len(levels), len(flt))
    for i in range(n):
        a, b = levels[i], flt[i]
        if a == b"#" or b == b"#":
            return True
        if a != b"+" and b != b"+" and a != b:
            return False
    if len(levels) == len(flt):
        return True
    longer = levels if len(levels) > len(flt) else flt
    return len(longer) == n + 1 and longer[n] == b"#"  # a/# matches a


class Acl:
    def __init__(self, proto, users, patterns):
        """users: user name (bytes; None = anonymous) -> [(access, levels)]; patterns:
        [(access, pattern bytes with %c/%u still in)], as secfiles.acl returns them."""
        self.proto = proto
        self.users = users
        self.patterns = patterns

    def connect(self, c, user, pw, cid, will):
        """For a CONNECT (after its password check, if any): 0, or CONNACK 5 for a will on a
        topic the client may not write, as Mosquitto 2 does; the will would otherwise be
        published where it may not be."""
        if user is not None:
            c.user = user
        if will is None or self.can_publish(user, cid, will[0]):
            return 0
        self.proto.b.stats.hit("acl_denied_will")
        return NOT_AUTHORISED

    def recheck(self, c, s):
        """A persistent session may come back under another user name: what it kept
        subscribed must be allowed to this one too, or it is unsubscribed."""
        b = self.proto.b
        for flt in list(s.filters()):
            if not self.can_subscribe(c.user, s.cid, flt):
                b.stats.hit("acl_denied_subscribe")
                s.drop_filter(flt)
                b.index.remove(flt, s)
                if b.persist is not None:
                    b.persist.unsubscribed(s, flt)

    def _rules(self, user, cid):
        """The rules that apply to this client: its user's, then the patterns with its names in.
        A name holding a wildcard or '/' would widen a pattern: such a pattern does not apply."""
        rules = self.users.get(user)
        if rules:
            yield from rules
        for access, p in self.patterns:
            if b"%u" in p:
                if user is None or b"/" in user or b"+" in user or b"#" in user:
                    continue
                p = p.replace(b"%u", user)
            if b"%c" in p:
                if b"/" in cid or b"+" in cid or b"#" in cid:
                    continue
                p = p.replace(b"%c", cid)
            yield access, p.split(b"/")

    def can_publish(self, user, cid, topic):
        ok = False
        for access, levels in self._rules(user, cid):
            if match_levels(levels, topic):
                if access & DENY:
                    return False
                if access & WRITE:
                    ok = True
        return ok

    def can_subscribe(self, user, cid, flt):
        f = flt.split(b"/")
        ok = False
        for access, levels in self._rules(user, cid):
            if access & DENY:
                if _overlaps(levels, f):
                    return False
            elif access & READ and not ok and _covers(levels, f):
                ok = True
        return ok
