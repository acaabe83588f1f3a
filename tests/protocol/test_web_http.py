"""Plain HTTP on the broker's WebSockets listener, through the network: the status page is
the committed compressed file, sent whole; /status.json carries exactly the figures a $SYS
subscriber gets (one source of truth with `ubroker monitor` and the page); /metrics the same
counters in Prometheus' text format; anything else is 404. The broker runs with the esp32
profile, a plain MQTT listener (the fixture's port) and a WebSockets one."""

import gzip
import http.client
import json
import time

import pytest
from conftest import free_port

from ubroker_tools import webpage

# The page's file is found below a folder on sys.path: the unix port's compiled tree has no
# ubroker_web/ yet (run.py), the source tree has.
SOURCE = ("--from-source",)  # the source compiled at start: a heap above the profile's


@pytest.fixture
def web(broker_factory):
    port = free_port()
    b = broker_factory(config="listener 1883 127.0.0.1\nlistener %d 127.0.0.1\nprotocol websockets\n"
                       "sys_interval 1\nmax_connections 8\n" % port, extra=SOURCE, heap="200k")
    b.web_port = port
    return b


def get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path, headers={"Accept-Encoding": "gzip"})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r, body


def test_the_page_is_the_committed_file_gzip(web):
    r, body = get(web.web_port, "/")
    assert r.status == 200
    assert r.getheader("Content-Encoding") == "gzip"
    assert r.getheader("Content-Type").startswith("text/html")
    assert int(r.getheader("Content-Length")) == len(body)
    with open(webpage.PAGE, "rb") as f:
        assert body == f.read()
    with open(webpage.SOURCE, "rb") as f:
        assert gzip.decompress(body) == f.read()


def sys_names(broker):
    """The $SYS/broker/ names a new subscriber gets at once."""
    c = broker.client()
    c.subscribe("$SYS/#", 0)
    deadline = time.time() + 5
    while time.time() < deadline and not any(m.topic.endswith("/clients/connected") for m in c.messages):
        time.sleep(0.05)
    time.sleep(0.3)
    return {m.topic[len("$SYS/broker/"):] for m in c.messages}


def test_status_json_has_the_figures_sys_has(web):
    names = sys_names(web)
    r, body = get(web.web_port, "/status.json")
    assert r.status == 200 and r.getheader("Content-Type") == "application/json"
    data = json.loads(body)
    assert set(data) == names
    assert data["clients/connected"] >= 1 and data["version"].startswith("ubroker")


def test_metrics_count_what_the_broker_received(web):
    c = web.client()
    for i in range(5):
        c.publish("t/x", b"m", qos=1).wait_for_publish(5)
    _, body = get(web.web_port, "/status.json")
    received = json.loads(body)["publish/messages/received"]
    assert received >= 5
    r, body = get(web.web_port, "/metrics")
    assert r.status == 200 and r.getheader("Content-Type").startswith("text/plain; version=0.0.4")
    lines = body.decode().splitlines()
    assert "# TYPE ubroker_publish_messages_received_total counter" in lines
    got = [ln for ln in lines if ln.startswith("ubroker_publish_messages_received_total ")]
    assert len(got) == 1 and int(got[0].split()[1]) >= received


def test_anything_else_is_404_and_the_listener_goes_on(web):
    for path in ("/nope", "/status.json/x", "/favicon.ico"):
        r, body = get(web.web_port, path)
        assert r.status == 404
    r, _ = get(web.web_port, "/status.json")
    assert r.status == 200


def test_the_page_learns_the_sensors_prefix(broker_factory):
    port = free_port()
    b = broker_factory(config="listener 1883 127.0.0.1\nlistener %d 127.0.0.1\nprotocol websockets\n"
                       "sensor_interval 1\nsensor heap_free\nsensor_prefix home/gw1/sensor\nmax_connections 8\n" % port,
                       extra=SOURCE, heap="200k")
    r, _ = get(port, "/")
    assert r.getheader("Set-Cookie").startswith("sensors=home/gw1/sensor;")
    assert b.alive()


def test_the_figures_are_answered_in_the_boards_own_heap(broker_factory):
    """The esp32 profile compiled as a board runs it, in its own heap_budget: /status.json and
    /metrics, asked for again and again, are answered every time and the broker goes on (the
    heap after start has no hole over 192 B with a client connected: the figures go out as a
    Stream in chunks, never as one body)."""
    port = free_port()
    b = broker_factory(config="listener 1883 127.0.0.1\nlistener %d 127.0.0.1\nprotocol websockets\n"
                       "max_connections 8\n" % port)
    c = b.client()
    for i in range(20):
        c.publish("t/x", b"m", qos=0)
        r, body = get(port, "/status.json" if i % 2 else "/metrics")
        length = r.getheader("Content-Length")  # none when streamed: the close ends it
        assert r.status == 200 and len(body) > 500 and (length is None or int(length) == len(body))
    data = json.loads(get(port, "/status.json")[1])
    assert data["ubroker/heap/free"] > 0 and data["clients/connected"] == 1
    c.publish("t/x", b"m", qos=1).wait_for_publish(5)  # MQTT still served
