"""The status page's compressed copy: firmware/web/status.html (the source, edited by hand)
gzip-compressed into firmware/ubroker_web/status.html.gz, the file the broker streams from
flash for `GET /` (firmware/ubroker/web.py finds it as ubroker_web/status.html.gz below a
folder on sys.path). The compression is deterministic (no time stamp, no file name), so the
committed copy changes only when the page does.

    python -m ubroker_tools.webpage      # after editing the page: writes the .gz again
"""

import gzip
import os
import shutil
import sys

from . import paths

SOURCE = os.path.join(paths.FIRMWARE, "web", "status.html")
ON_BOARD = "ubroker_web/status.html.gz"  # below the board's root, which is on sys.path
PAGE = os.path.join(paths.FIRMWARE, *ON_BOARD.split("/"))
LIMIT = 16 * 1024  # the compressed page's most (issue 16): a few flash blocks


def compress(data):
    """gzip bytes of data: level 9, mtime 0 and no name, the same bytes on every run."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def write(source=SOURCE, page=PAGE):
    """Compress source into page if page is missing or differs; returns page's size."""
    with open(source, "rb") as f:
        data = compress(f.read())
    if len(data) > LIMIT:
        raise ValueError("%s compresses to %d bytes, more than %d" % (source, len(data), LIMIT))
    try:
        with open(page, "rb") as f:
            same = f.read() == data
    except OSError:
        same = False
    if not same:
        os.makedirs(os.path.dirname(page), exist_ok=True)
        with open(page, "wb") as f:
            f.write(data)
    return len(data)


def install(out):
    """Copy the compressed page into a board's file tree (build/BOARD/); returns its name
    there, as `ubroker build` lists files."""
    write()
    dst = os.path.join(out, *ON_BOARD.split("/"))
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copyfile(PAGE, dst)
    return ON_BOARD


def main():
    n = write()
    print("%s: %d bytes (from %s)" % (os.path.relpath(PAGE), n, os.path.relpath(SOURCE)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
