"""firmware/ubroker/web.py's answer(server, path), run in the MicroPython unix port against a
stand-in server whose $SYS figures are fixed: what each path is answered with, and that
/status.json is JSON and /metrics Prometheus' text exposition format carrying the same
figures. The answers go through a real listener in tests/protocol/test_web_http.py."""

import ast
import json
import os
import re
import shutil
import subprocess
import sys

from conftest import ROOT

MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")
FIRMWARE = os.path.join(ROOT, "firmware")
PAGE = os.path.join(FIRMWARE, "ubroker_web", "status.html.gz")

# The names sysinfo.SysInfo.figures gives, a bridge's and a limit's among them, and values
# that need escaping in JSON.
FIGURES = [
    ("version", "ubroker 0.1"),
    ("uptime", "42 seconds"),
    ("clients/connected", 3),
    ("clients/disconnected", 1),
    ("clients/maximum", 5),
    ("clients/total", 4),
    ("ubroker/clients/protocol/v5", 1),
    ("ubroker/clients/protocol/v311", 2),
    ("messages/received", 120),
    ("messages/sent", 80),
    ("publish/messages/received", 100),
    ("publish/messages/sent", 60),
    ("publish/messages/dropped", 0),
    ("bytes/received", 4096),
    ("bytes/sent", 2048),
    ("subscriptions/count", 7),
    ("retained messages/count", 2),
    ("store/messages/count", 0),
    ("ubroker/heap/free", 30000),
    ("ubroker/heap/used", 70000),
    ("ubroker/store/bytes", 1234),
    ("ubroker/store/compactions", 1),
    ("ubroker/store/erases", 3),  # not reported yet: a counter when it is
    ("bridge/cloud/connected", 0),
    ("bridge/cloud/queued", 4),
    ("bridge/cloud/sent", 9),
    ("bridge/cloud/last_error", 'refused "5"\nthen\\gone'),
    ("bridge/backup/connected", 1),
    ("bridge/backup/queued", 0),
    ("bridge/backup/sent", 2),
    ("bridge/backup/last_error", "none"),
    ("ubroker/limits/max_connections", 2),
    ("ubroker/limits/packet_too_large", 1),
]

# The stand-in server, and a Stream read as the listener reads it (ws_handshake.drained).
PRELUDE = """
from ubroker import web
buf = bytearray(CHUNK)
class Sys:
    def figures(self):
        for kv in FIGURES:
            yield kv
class Server:
    sensors = SENSORS
    cfg = CFG
    def sysinfo(self):  # the $SYS report, loaded at its first use (server.py)
        return Sys()
def read_all(f, keep=True):
    body = bytearray() if keep else None
    got = 0
    while True:
        n = f.readinto(buf)
        if not n:
            return body if keep else got
        got += n
        if keep:
            body.extend(buf[:n])
"""

SCRIPT = PRELUDE + """
for path in PATHS:
    head, body, f = web.answer(Server(), path, STREAM)
    if f is not None and not isinstance(f, str):  # a Stream
        body = read_all(f)
        f.close()
        f = "stream" if f.readinto(buf) == 0 else "read after close"
    print(repr((head, None if body is None else bytes(body), f)))
"""


def answers(paths, sensors=None, cfg=None, path=FIRMWARE, stream=False, chunk=64):
    """[(head, body, file)] from the unix port, one per path; with stream, what a Stream
    gives, read chunk bytes at a time, as the body (and file "stream")."""
    script = ("FIGURES = %r\nSENSORS = %r\nCFG = %r\nPATHS = %r\nSTREAM = %r\nCHUNK = %d\n"
              % (FIGURES, sensors, cfg or {}, paths, stream, chunk)) + SCRIPT
    env = dict(os.environ, MICROPYPATH=path)
    r = subprocess.run([MICROPYTHON, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return [ast.literal_eval(line) for line in r.stdout.splitlines()]


def head_fields(head):
    lines = head.decode().split("\r\n")
    assert head.endswith(b"\r\n\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:] if line)
    return lines[0], fields


def test_the_page_is_the_compressed_file_streamed_after_the_head():
    (head, body, f), = answers(["/"])
    status, fields = head_fields(head)
    assert status == "HTTP/1.1 200 OK"
    assert body is None and os.path.samefile(f, PAGE)
    assert fields["Content-Encoding"] == "gzip"
    assert fields["Content-Type"].startswith("text/html")
    assert int(fields["Content-Length"]) == os.path.getsize(PAGE)
    assert fields["Connection"] == "close" and fields["Cache-Control"] == "no-cache"
    assert "Set-Cookie" not in fields  # no sensors: the page subscribes to $SYS only


def test_the_page_learns_the_sensors_prefix_from_a_cookie():
    (a, _, _), (b, _, _), (c, _, _) = answers(["/"], sensors=1, cfg={"sensor_prefix": "home/gw1/sensor"}) + \
        answers(["/"], sensors=1, cfg={"board": "esp32"}) + answers([b"/"], sensors=1, cfg={"sensor_prefix": "a b;c,d%"})
    assert head_fields(a)[1]["Set-Cookie"].startswith("sensors=home/gw1/sensor;")
    # sensor_setup.entries' default
    assert head_fields(b)[1]["Set-Cookie"].startswith("sensors=ubroker/esp32/sensor;")
    # a path as bytes; what a cookie value cannot hold, %-escaped
    assert head_fields(c)[1]["Set-Cookie"].startswith("sensors=a%20b%3Bc%2Cd%25;")


def test_status_json_holds_every_figure():
    (head, body, f), = answers(["/status.json"])
    status, fields = head_fields(head)
    assert status == "HTTP/1.1 200 OK" and f is None
    assert fields["Content-Type"] == "application/json"
    assert int(fields["Content-Length"]) == len(body)
    assert json.loads(body) == dict(FIGURES)


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*"\})? (-?[0-9.]+)$')


def parse_metrics(text):
    """{(name, labels): value}, checking the text format: a sample per line, one TYPE line
    per family before its first sample, counters named *_total."""
    types, samples = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in types, "second TYPE line for " + name
            assert kind in ("counter", "gauge")
            assert (kind == "counter") == name.endswith("_total"), name
            types[name] = kind
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        assert m.group(1) in types, "sample before its TYPE line: " + line
        samples[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return types, samples


def test_metrics_are_prometheus_text_with_the_same_figures():
    (head, body, f), = answers(["/metrics"])
    status, fields = head_fields(head)
    assert status == "HTTP/1.1 200 OK" and f is None
    assert fields["Content-Type"].startswith("text/plain; version=0.0.4")
    assert int(fields["Content-Length"]) == len(body)
    types, samples = parse_metrics(body.decode())
    assert samples[("ubroker_messages_received_total", "")] == 120
    assert types["ubroker_messages_received_total"] == "counter"
    assert samples[("ubroker_publish_messages_received_total", "")] == 100
    assert samples[("ubroker_received_bytes_total", "")] == 4096
    assert samples[("ubroker_clients_connected", "")] == 3
    assert types["ubroker_clients_connected"] == "gauge"
    assert samples[("ubroker_heap_free_bytes", "")] == 30000
    assert samples[("ubroker_sessions", "")] == 4  # a gauge: not named _total
    assert types["ubroker_store_erases_total"] == "counter"
    assert samples[("ubroker_retained_messages", "")] == 2
    assert samples[("ubroker_uptime_seconds", "")] == 42
    assert samples[("ubroker_info", '{version="ubroker 0.1"}')] == 1
    assert samples[("ubroker_bridge_queued", '{bridge="cloud"}')] == 4
    assert samples[("ubroker_bridge_sent_total", '{bridge="cloud"}')] == 9
    assert samples[("ubroker_bridge_sent_total", '{bridge="backup"}')] == 2  # one TYPE line for both
    assert samples[("ubroker_limits_hit_total", '{limit="max_connections"}')] == 2
    assert samples[("ubroker_limits_hit_total", '{limit="packet_too_large"}')] == 1
    assert samples[("ubroker_clients_connected_by_protocol", '{protocol="v5"}')] == 1
    assert samples[("ubroker_clients_connected_by_protocol", '{protocol="v311"}')] == 2
    # every numeric figure is there once; the text ones (last_error) are not
    numeric = [n for n, v in FIGURES if isinstance(v, int)]
    assert len(samples) == len(numeric) + 2  # + uptime and the info metric


def test_anything_else_is_404():
    got = answers(["/index.html", "/status.json/", "/metrics/x", "/../ubroker_web/status.html.gz", ""])
    for head, body, f in got:
        status, fields = head_fields(head)
        assert status == "HTTP/1.1 404 Not Found"
        assert f is None and int(fields["Content-Length"]) == len(body)


def test_a_query_string_is_ignored():
    (a, _, fa), (b, body, _) = answers(["/?x=1", "/metrics?name[]=x"])
    assert head_fields(a)[0].endswith("200 OK") and fa is not None
    assert head_fields(b)[0].endswith("200 OK") and b"ubroker_messages_received_total 120" in body


def test_a_board_without_the_page_says_so_in_a_404(tmp_path):
    """The package alone on sys.path, without ubroker_web/ beside it."""
    shutil.copytree(os.path.join(FIRMWARE, "ubroker"), tmp_path / "ubroker")
    (head, body, f), = answers(["/"], path=str(tmp_path))
    assert head_fields(head)[0] == "HTTP/1.1 404 Not Found" and f is None
    assert b"ubroker_web/status.html.gz" in body



def test_streamed_figures_are_the_same_bytes_without_a_length():
    for chunk in (7, 64, 512):
        whole = answers(["/status.json", "/metrics"])
        streamed = answers(["/status.json", "/metrics"], stream=True, chunk=chunk)
        for (h1, b1, _), (h2, b2, f2) in zip(whole, streamed):
            assert f2 == "stream" and b2 == b1
            status, fields = head_fields(h2)
            assert status == "HTTP/1.1 200 OK" and "Content-Length" not in fields
            assert fields["Connection"] == "close"  # the close ends the body
    # the page and a 404 are as without stream
    assert answers(["/", "/x"], stream=True) == answers(["/", "/x"])


FRAGMENTED = """
FIGURES = [("version", "ubroker 0.1"), ("uptime", "42 seconds")] + [("ubroker/limits/limit_number_%d" % i, i)
                                                                   for i in range(40)]
SENSORS, CFG, CHUNK = None, {}, 64
""" + PRELUDE + """
import gc


def fragment():
    # The list is made before the heap fills: grown while filling, it would leave its old
    # copies behind as holes larger than those meant.
    keep = [None] * 1024
    n = 0
    try:
        while n < len(keep):
            keep[n] = bytes(240)
            n += 1
    except MemoryError:
        pass
    for i in range(0, n, 2):  # holes of about 256 B, and no larger
        keep[i] = None
    return keep


def measure(out):
    # In a function, so that nothing but the answer allocates: a new global would grow the
    # script's globals dict, a block of some hundred bytes that the holes cannot give.
    for stream in (True, False):
        try:
            head, body, f = web.answer(Server(), "/metrics", stream)
            out[stream] = read_all(f, False) if f is not None else len(body)  # counted, not kept
        except MemoryError:
            out[stream] = "MemoryError"


out = [None, None]
gc.collect()
keep = fragment()
gc.collect()
measure(out)
keep = None
out.reverse()  # [streamed, whole]
print(out)
"""


def test_a_stream_needs_no_block_larger_than_a_figure():
    """A broker's heap after start is in small holes (12 kB free in holes of at most 192 B,
    esp32 profile with one client, measured): there, /metrics as one body (2.2 kB) fails,
    and as a Stream it is answered."""
    env = dict(os.environ, MICROPYPATH=FIRMWARE)
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=64k", "-c", FRAGMENTED], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    streamed, whole = ast.literal_eval(r.stdout.strip())
    assert whole == "MemoryError"  # the heap is as fragmented as meant
    assert streamed > 2000
