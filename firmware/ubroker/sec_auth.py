"""Password checks. Owns the users of the password file (one
`user:$pbkdf2-sha256$ITERATIONS$SALT$HASH` line per user, SALT and HASH in base64, written by
`ubroker passwd` on the host; parsed by sec_files.py, which hands them to Guard as plain data),
the PBKDF2-HMAC-SHA256 verification of a CONNECT's password against them, and the slow-down of
addresses that keep failing. The board only ever holds the hashes. Imported only when
`password_file` is configured (or allow_anonymous is false)."""

import hashlib
import time

from .codec import BAD_CREDENTIALS, NOT_AUTHORISED, const

_BLOCK = const(64)  # SHA-256 block size, for HMAC's key pads
# Iterations per slice of a check: 0.3 ms on a PC, 10 to 20 ms on an ESP32 (estimated, see
# README "Security"), the longest the loop stops serving others for one password check.
_SLICE = const(128)
# Failed logins from one address: the answer to its next attempt waits 1, 2, 4, ... up to
# MAX_DELAY_MS; an address with no failure for FORGET_MS is forgotten. The table keeps at
# most FAIL_TABLE addresses (the oldest goes), so a flood from many addresses costs no heap.
_MAX_DELAY_MS = const(16000)
_FORGET_MS = const(60000)
_FAIL_TABLE = const(16)


def _sha(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def _xor(key, pad):
    return bytes(b ^ pad for b in key)


def pbkdf2_steps(password, salt, iterations, step=_SLICE):
    """Generator: PBKDF2-HMAC-SHA256 (RFC 8018) with a 32-byte result (one block, so T1 only),
    yielding 0 after every `step` iterations so the broker's loop can serve others between
    slices; the derived key is its return value. HMAC is written out because MicroPython has
    no hmac module; its hash objects cannot be copied either, so the padded key is hashed
    again every round (4 compressions a round instead of 2)."""
    if len(password) > _BLOCK:
        password = _sha(password)
    password = password + bytes(_BLOCK - len(password))
    ipad = _xor(password, 0x36)
    opad = _xor(password, 0x5C)
    u = _sha(opad, _sha(ipad, salt, b"\x00\x00\x00\x01"))
    acc = int.from_bytes(u, "big")
    left = iterations - 1
    while left > 0:
        for _ in range(step if left > step else left):
            u = _sha(opad, _sha(ipad, u))
            acc ^= int.from_bytes(u, "big")
        left -= step
        if left > 0:
            yield 0
    return acc.to_bytes(32, "big")


def same(a, b):
    """Constant-time comparison: the time taken does not tell how many leading bytes match."""
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0


class Guard:
    """Who may connect: anonymous clients or not, and user names with their passwords."""

    def __init__(self, proto, users):
        """users: {user name: (iterations, salt, hash)}, as secfiles.passwords returns them
        ({} without a password_file)."""
        cfg = proto.cfg
        anon = cfg["allow_anonymous"]
        # Unset: anonymous clients are allowed only when there are no users.
        self.anonymous = anon if anon is not None else not cfg["password_file"]
        self.users = users
        # An unknown user costs as much as a known one, so timing does not reveal names.
        n = 1000
        for entry in self.users.values():
            n = entry[0]
            break
        self.dummy = (n, b"ubroker-no-user", bytes(32))
        self.fails = {}  # address (bytes, or str where accept() gives one) -> [failures, ticks_ms of the last]
        self.server = proto.server
        self.stats = proto.b.stats
        self.acl = proto.acl  # asked once the password is right
        self.verifying = []  # connections whose password is being checked, see step()

    def connect(self, c, user, pw, cid, will):
        """For a CONNECT: 0 to accept, a CONNACK code to refuse (4 bad user name or password,
        5 not authorised: MQTT-3.2.2), or None while the password is being checked. PBKDF2 is
        slow by design, so it runs in slices between loop passes (step) while the connection
        waits like a paused publisher; then the server hands its CONNECT to the protocol again
        and this finds the result in c.verify."""
        if user is None:
            if self.anonymous:
                return self.acl.connect(c, user, pw, cid, will) if self.acl else 0
            self.stats.hit("auth_failures")
            return NOT_AUTHORISED
        v = c.verify
        if v is True:
            del c.verify
            c.user = user
            return self.acl.connect(c, user, pw, cid, will) if self.acl else 0
        if v is False:
            self.stats.hit("auth_failures")
            return BAD_CREDENTIALS
        if v is None or type(v) is bytes or type(v) is str:  # the peer's address (Server.accept)
            c.verify = self.verify(user, pw, v)
            self.verifying.append(c)
        return None

    def step(self):
        """Advance every password check by one slice. Returns the poll timeout for this loop
        pass: 0 while a check computes, else the time to the nearest delayed answer."""
        wait = 200
        for c in list(self.verifying):
            try:
                if c.sock is None:  # closed meanwhile
                    raise StopIteration
                w = next(c.verify)
                if w < wait:
                    wait = w
            except StopIteration as e:
                self.verifying.remove(c)
                if c.sock is not None:
                    c.verify = e.value
                    self.server.broker.freed = True  # the server resumes the paused CONNECT
                    wait = 0
        return wait

    def verify(self, user, password, addr):
        """Generator: True when user exists and password is its password, returned once the
        delay earned by addr's past failures is over. Yields 0 while it computes and the
        milliseconds left while it waits."""
        now = self.server.now
        due = time.ticks_add(now, self.delay(addr, now))
        entry = self.users.get(user)
        if entry is None or password is None:
            entry = self.dummy
        dk = yield from pbkdf2_steps(password or b"", entry[1], entry[0])
        ok = entry is not self.dummy and same(dk, entry[2])
        if ok:
            self.fails.pop(addr, None)
        else:
            self.failed(addr, now)
        while True:
            left = time.ticks_diff(due, self.server.now)
            if left <= 0:
                return ok
            yield left

    def delay(self, addr, now):
        e = self.fails.get(addr)
        if e is None:
            return 0
        if time.ticks_diff(now, e[1]) > _FORGET_MS:
            del self.fails[addr]
            return 0
        return min(1000 << min(e[0] - 1, 8), _MAX_DELAY_MS)

    def failed(self, addr, now):
        t = self.fails
        e = t.get(addr)
        if e is None:
            if len(t) >= _FAIL_TABLE:
                oldest = None
                for k in t:
                    if oldest is None or time.ticks_diff(t[oldest][1], t[k][1]) > 0:
                        oldest = k
                del t[oldest]
            t[addr] = [1, now]
        else:
            e[0] += 1
            e[1] = now
