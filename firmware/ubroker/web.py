"""Plain HTTP on a WebSockets listener (docs/status-page.md): the answer to a GET that is
not a WebSocket upgrade. `/` is the status page, kept gzip-compressed on the board's
filesystem and streamed from there by the caller; `/status.json` and `/metrics` (Prometheus'
text format) render the same $SYS figures the page and `ubroker monitor` read
(sysinfo.SysInfo.figures); anything else is 404. Imported only where a websockets listener
exists: a broker without one pays no heap for it."""

import os
import sys

# Where the page lies below a folder on sys.path: "" (the filesystem's root) or /lib on a
# board, the compiled tree (build/run) or firmware/ itself on the unix port.
_PAGE = "ubroker_web/status.html.gz"
_found = None  # the page's path once found (it never moves while the broker runs)


def page_path():
    global _found
    if _found is None:
        for d in sys.path:
            p = d + "/" + _PAGE if d and d[-1] != "/" else d + _PAGE
            try:
                os.stat(p)
            except OSError:
                continue
            _found = p
            break
    return _found


def _head(status, ctype, length, extra=""):
    # no-cache: the figures change every second, and a board's page after `ubroker flash`
    # must not be an old copy; Connection: close because the caller closes after the body,
    # which also ends a body streamed without a Content-Length (RFC 9112 section 6.3).
    if length is not None:
        extra = "Content-Length: %d\r\n%s" % (length, extra)
    return ("HTTP/1.1 %s\r\nContent-Type: %s\r\n%sCache-Control: no-cache\r\nConnection: close\r\n\r\n"
            % (status, ctype, extra)).encode()


def answer(server, path, stream=False):
    """(head, body or None, what to stream after head or None) for a GET of path (str or
    bytes, as the request line has it). The page comes as its file's path. With stream, the
    figures come as a Stream (readinto, like a file) rendered as it is read, without a
    Content-Length; else as one body, a block as large as the answer (/metrics: 1.7 kB)."""
    if not isinstance(path, str):
        path = bytes(path).decode()
    q = path.find("?")
    if q >= 0:
        path = path[:q]
    if path == "/":
        p = page_path()
        if p is not None:
            return _head("200 OK", "text/html; charset=utf-8", os.stat(p)[6],
                         "Content-Encoding: gzip\r\n" + _sensor_cookie(server)), None, p
        body = b"the status page is not on this board (ubroker_web/status.html.gz): ubroker flash copies it\n"
    elif path == "/status.json" or path == "/metrics":
        if path == "/metrics":
            ctype, parts = "text/plain; version=0.0.4; charset=utf-8", _metrics(server.sysinfo().figures())
        else:
            ctype, parts = "application/json", _json(server.sysinfo().figures())
        if stream:
            return _head("200 OK", ctype, None), None, Stream(parts)
        whole = bytearray()
        for s in parts:
            whole.extend(s.encode())
        return _head("200 OK", ctype, len(whole)), whole, None
    else:
        body = b"not found\n"
    return _head("404 Not Found", "text/plain; charset=utf-8", len(body)), body, None


class Stream:
    """Rendered figures read like a file: readinto(buf) fills buf from the pieces (one
    figure each, tens of bytes) as they come, so no block larger than a piece is needed.
    After a broker's start its heap is in small holes (measured: 12 kB free, no hole over
    192 B, esp32 profile with one client): a body as one block does not fit there."""

    def __init__(self, parts):
        self.parts = parts
        self.piece = b""
        self.at = 0

    def readinto(self, buf):
        n = 0
        size = len(buf)
        while n < size:
            p = self.piece
            if self.at == len(p):
                try:
                    p = self.piece = next(self.parts).encode()
                except StopIteration:
                    break
                self.at = 0
            k = min(size - n, len(p) - self.at)
            buf[n:n + k] = memoryview(p)[self.at:self.at + k]
            self.at += k
            n += k
        return n

    def close(self):  # as a file is closed when its connection is
        self.parts = iter(())
        self.piece = b""
        self.at = 0


def _sensor_cookie(server):
    """The page learns the sensors' topic prefix from a cookie: the page itself is a fixed
    file on flash. The default is sensor_setup.entries' own (that module is gone from the
    heap once the sensors run)."""
    if server.sensors is None:
        return ""
    cfg = server.cfg
    prefix = cfg.get("sensor_prefix") or "ubroker/%s/sensor" % (cfg.get("hostname") or cfg.get("board") or "unix")
    # A cookie value holds no space, comma or semicolon: %-escaped for the page's
    # decodeURIComponent. A loop: four replace() calls and their eight strings took the
    # import 960 B further on the 64-bit unix port (a new qstr pool), 16 B on 32 bits.
    v = ""
    for ch in prefix:
        v += "%%%02X" % ord(ch) if ch in " ,;%" else ch
    return "Set-Cookie: sensors=%s; Path=/; SameSite=Strict\r\n" % v


def _json_str(s):
    if '"' in s or "\\" in s or (s and min(s) < " "):
        e = ""
        for ch in s:
            e += "\\" + ch if ch == '"' or ch == "\\" else "\\u%04x" % ord(ch) if ch < " " else ch
        s = e
    return '"' + s + '"'


def _json(figures):
    """One JSON object, a piece per figure: the $SYS names below $SYS/broker/ as keys,
    numbers as numbers."""
    sep = "{"
    for name, value in figures:
        yield sep + _json_str(name) + ":" + (str(value) if isinstance(value, int) else _json_str(str(value)))
        sep = ","
    yield "{}\n" if sep == "{" else "}\n"


# Figures that only grow: Prometheus counters, whose names end in _total.
_GROWING = ("/received", "/sent", "/dropped", "/commits", "/bytes_written", "/compactions", "/torn", "/erases")
# Names that read better (unit last, no "count") in Prometheus' conventions: one string
# rather than a dict, whose 24 interned names cost 1.9 kB of heap more (64-bit unix port).
_RENAMED = (";clients/total=sessions;bytes/received=received_bytes;bytes/sent=sent_bytes;retained messages/count=retained_messages"
            ";subscriptions/count=subscriptions;store/messages/count=queued_messages"
            ";store/messages/bytes=queued_bytes;ubroker/heap/free=heap_free_bytes;ubroker/heap/used=heap_used_bytes"
            ";ubroker/retained/bytes=retained_bytes;ubroker/store/bytes=store_used_bytes"
            ";ubroker/store/budget=store_budget_bytes;ubroker/store/bytes_written=store_written_bytes;")


def metric(name):
    """(metric name, label text or "", counter?) for a $SYS figure's name."""
    counter = False
    for tail in _GROWING:
        if name.endswith(tail):
            counter = True
    label = ""
    if name.startswith("ubroker/limits/"):
        label = 'limit="%s"' % name[15:]
        name, counter = "limits_hit", True
    elif name.startswith("ubroker/clients/protocol/"):
        label = 'protocol="%s"' % name[25:]
        name = "clients_connected_by_protocol"
    elif name.startswith("bridge/"):
        i = name.find("/", 7)
        label = 'bridge="%s"' % name[7:i]
        name = "bridge/" + name[i + 1:]
    else:
        i = _RENAMED.find(";" + name + "=")
        if i >= 0:
            i += len(name) + 2
            name = _RENAMED[i:_RENAMED.find(";", i)]
    if name.startswith("ubroker/"):
        name = name[8:]
    name = "ubroker_" + name.replace("/", "_").replace(" ", "_")
    return (name + "_total" if counter else name), label, counter


def _metrics(figures):
    """Prometheus' text exposition format, a piece per figure: one sample a line, a TYPE
    line before a family's first sample. Text figures become an info metric's labels
    (version) or are left out. A labelled family's samples follow one another (limits,
    protocols), or repeat per bridge: its TYPE line comes with the first bridge only."""
    last = first = None
    for name, value in figures:
        if name == "version":
            yield '# TYPE ubroker_info gauge\nubroker_info{version="%s"} 1\n' % value
            continue
        if name == "uptime":  # "N seconds"
            name, value = "uptime_seconds", int(value.split()[0])
        if not isinstance(value, (int, float)):
            continue  # a bridge's last_error: for status.json and the page
        m, label, counter = metric(name)
        line = "%s{%s} %s\n" % (m, label, value) if label else "%s %s\n" % (m, value)
        if label.startswith("bridge="):
            if first is None:
                first = label
            if label != first:
                m = last
        if m != last:
            line = "# TYPE %s %s\n%s" % (m, "counter" if counter else "gauge", line)
            last = m
        yield line
