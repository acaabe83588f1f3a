"""The status page's source (firmware/web/status.html) and its committed compressed copy
(firmware/ubroker_web/status.html.gz, what the broker streams for `GET /`): the copy is the
source compressed by host_tools/ubroker_tools/webpage.py, small enough for a board's flash,
and the page needs nothing from outside the board."""

import gzip
import os
import re

from ubroker_tools import webpage


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_the_committed_copy_is_the_source_compressed():
    source, page = read(webpage.SOURCE), read(webpage.PAGE)
    assert gzip.decompress(page) == source, "run: .venv/bin/python -m ubroker_tools.webpage"
    assert webpage.compress(source) == page


def test_the_compression_is_deterministic_and_small():
    page = read(webpage.PAGE)
    assert len(page) < 16 * 1024
    assert page[4:8] == b"\0\0\0\0"  # mtime 0
    assert not page[3] & 0x08  # no file name
    assert webpage.compress(b"x") == webpage.compress(b"x")


def test_write_makes_the_copy_and_refuses_a_page_too_large(tmp_path):
    src = tmp_path / "p.html"
    src.write_bytes(b"<p>hello</p>")
    out = tmp_path / "ubroker_web" / "status.html.gz"
    assert webpage.write(str(src), str(out)) == out.stat().st_size
    assert gzip.decompress(out.read_bytes()) == b"<p>hello</p>"
    src.write_bytes(os.urandom(20000))  # random bytes do not compress
    try:
        webpage.write(str(src), str(out))
    except ValueError as e:
        assert "more than 16384" in str(e)
    else:
        raise AssertionError("a page over 16 kB compressed was written")


def test_install_puts_the_page_where_web_py_looks(tmp_path):
    name = webpage.install(str(tmp_path))
    assert name == "ubroker_web/status.html.gz"
    assert (tmp_path / name).read_bytes() == read(webpage.PAGE)


def test_the_page_loads_nothing_from_outside():
    """No CDN, no framework: no script, style, image or font from another address."""
    text = read(webpage.SOURCE).decode()
    assert not re.search(r"<(script|link|img|iframe)[^>]*\b(src|href)=\"(?!data:)", text, re.I)
    assert not re.search(r"https?://", text)
    assert "@import" not in text and "url(" not in text
