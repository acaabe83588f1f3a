"""Log lines to stderr, prefixed so that they stand out in a board's serial output."""

import sys


def log(msg):
    print("ubroker:", msg, file=sys.stderr)
