"""`ubroker passwd`: add, change or delete users in a password file for the broker's
`password_file`. Each line is `user:$pbkdf2-sha256$ITERATIONS$SALT$HASH` (salt and hash in
base64; the hash is PBKDF2-HMAC-SHA256 of the password), read on the board by
firmware/ubroker/sec_auth.py, so the board never holds a password, only its hash."""

import argparse
import base64
import getpass
import hashlib
import os
import sys

HELP = """Add or change a user's password in a ubroker password file (created, mode 0600, if missing).

example:
  ubroker passwd users.txt alice                  # asks for the password twice
  echo "s3cret" | ubroker passwd users.txt bob --stdin
  ubroker passwd users.txt carol --password s3cret --iterations 20000
  ubroker passwd users.txt alice -D               # delete alice
then in the broker's config:  password_file users.txt
(for a board, keep users.txt beside the config: `ubroker flash --config` copies it)
"""

# A check costs 3.7 us per iteration in the unix port on a PC and, estimated, 20 to 40 times
# that on an ESP32 at 240 MHz (docs/security.md, "Users and passwords"): 10000 iterations is about 1 s there,
# spread over the loop in slices so other clients are still served meanwhile.
DEFAULT_ITERATIONS = 10000
SCHEME = "$pbkdf2-sha256$"


def hash_line(user, password, iterations=DEFAULT_ITERATIONS, salt=None):
    salt = salt if salt is not None else os.urandom(16)
    dk = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return "%s:%s%d$%s$%s" % (user, SCHEME, iterations, base64.b64encode(salt).decode(),
                              base64.b64encode(dk).decode())


def check_user(user):
    if not user or ":" in user or any(ch.isspace() for ch in user):
        raise ValueError("a user name must not be empty nor hold ':' or spaces: %r" % user)


def update(path, user, line):
    """Replace user's line (or append it; line None deletes it); the file keeps mode 0600."""
    lines = []
    found = False
    if os.path.exists(path):
        with open(path) as f:
            for old in f.read().split("\n"):
                if old.partition(":")[0] == user and not old.startswith("#"):
                    found = True
                    if line is not None:
                        lines.append(line)
                elif old:
                    lines.append(old)
    if line is not None and not found:
        lines.append(line)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(x + "\n" for x in lines))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return found


def add_parser(sub):
    p = sub.add_parser("passwd", help="manage users of a password file", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="the password file (created if missing)")
    p.add_argument("user", help="user name")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--password", "-b", metavar="PASSWORD",
                   help="the password on the command line (batch use; it is visible to `ps`)")
    g.add_argument("--stdin", action="store_true", help="read the password from the first line of stdin")
    g.add_argument("-D", "--delete", action="store_true", help="delete the user")
    p.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS,
                   help="PBKDF2 iterations (default %d); more is slower to check, on the board too" % DEFAULT_ITERATIONS)
    p.set_defaults(func=main)


def main(args):
    try:
        check_user(args.user)
    except ValueError as e:
        print("ubroker passwd: %s" % e, file=sys.stderr)
        return 2
    if args.delete:
        if not update(args.file, args.user, None):
            print("ubroker passwd: no user %s in %s" % (args.user, args.file), file=sys.stderr)
            return 1
        print("deleted %s from %s" % (args.user, args.file))
        return 0
    if args.iterations < 1:
        print("ubroker passwd: --iterations must be at least 1", file=sys.stderr)
        return 2
    if args.password is not None:
        pw = args.password
    elif args.stdin:
        pw = sys.stdin.readline().rstrip("\r\n")
    else:
        try:
            pw = getpass.getpass("Password for %s: " % args.user)
            if getpass.getpass("Again: ") != pw:
                print("ubroker passwd: the passwords differ; nothing changed", file=sys.stderr)
                return 1
        except (EOFError, KeyboardInterrupt):
            print("ubroker passwd: no password given; nothing changed", file=sys.stderr)
            return 1
    if not pw:
        print("ubroker passwd: empty password refused", file=sys.stderr)
        return 1
    found = update(args.file, args.user, hash_line(args.user, pw, args.iterations))
    print("%s %s in %s" % ("changed" if found else "added", args.user, args.file))
    return 0
