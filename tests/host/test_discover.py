"""`ubroker discover` finds brokers over real multicast DNS, in a network namespace of the test's
own whose loopback has multicast turned on (so no packet leaves this machine's namespace).

What answers stands in for what a LAN has: for a gateway, avahi-daemon publishing the service
file `ubroker service install` wrote (here python-zeroconf publishes that file's services, and
the broker itself runs behind them); for a board, its firmware's mDNS responder answering for
its host name (here python-zeroconf answering for NAME.local). The board's own part, its
`hostname` handed to the network stack before WiFi comes up, runs in the MicroPython unix port
with a stand-in network module."""

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

BIN = os.path.dirname(sys.executable)
UBROKER = os.path.join(BIN, "ubroker")

# The stand-in for avahi-daemon (or a board's responder): publishes the services of an avahi
# service file, or only a host name's address, until its stdin closes.
ADVERTISER = r"""
import socket, sys
import xml.etree.ElementTree as ET
from zeroconf import ServiceInfo, Zeroconf
host, avahi_file = sys.argv[1], sys.argv[2]
server = host + ".local."
zc = Zeroconf()
infos = []
if avahi_file:
    group = ET.parse(avahi_file).getroot()
    name = group.find("name").text.replace("%h", host)
    for s in group.findall("service"):
        t = s.find("type").text + ".local."
        infos.append(ServiceInfo(t, name + "." + t, addresses=[socket.inet_aton("127.0.0.1")],
                                 port=int(s.find("port").text), server=server))
else:
    infos.append(ServiceInfo("_device-info._tcp.local.", host + "._device-info._tcp.local.",
                             addresses=[socket.inet_aton("127.0.0.1")], port=9, server=server))
for info in infos:
    zc.register_service(info)
print("ready", flush=True)
sys.stdin.read()
zc.unregister_all_services()
zc.close()
"""


def netns_unavailable():
    if os.geteuid() != 0:
        return "needs root for a network namespace (CI runs as root)"
    if shutil.which("ip") is None:
        return "needs ip (Debian package iproute2)"
    return None


class Namespace:
    def __init__(self):
        self.name = "ubroker-mdns-" + uuid.uuid4().hex[:8]
        self.procs = []
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "link", "set", "lo", "multicast", "on"],
                    ["ip", "route", "add", "224.0.0.0/4", "dev", "lo"]):
            subprocess.run(self.wrap(cmd), check=True, capture_output=True)

    def wrap(self, cmd):
        return ["ip", "netns", "exec", self.name] + cmd

    def run(self, *cmd, timeout=60):
        return subprocess.run(self.wrap(list(cmd)), capture_output=True, text=True, timeout=timeout)

    def start(self, *cmd, **kw):
        p = subprocess.Popen(self.wrap(list(cmd)), text=True, **kw)
        self.procs.append(p)
        return p

    def advertise(self, host, avahi_file=""):
        p = self.start(sys.executable, "-c", ADVERTISER, host, avahi_file, stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE)
        assert p.stdout.readline().strip() == "ready", "the advertiser did not start"
        return p

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                if p.stdin:
                    p.stdin.close()
                p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


@pytest.fixture
def ns():
    why = netns_unavailable()
    if why:
        pytest.skip(why)
    n = Namespace()
    yield n
    n.close()


def avahi_file_for(tmp_path, config):
    conf = tmp_path / "ubroker.conf"
    conf.write_text(config)
    r = subprocess.run([UBROKER, "service", "install", "--prefix", str(tmp_path / "root"), "--config", str(conf)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return conf, tmp_path / "root" / "etc" / "avahi" / "services" / "ubroker.service"


def rows(out):
    """discover's table as [(address, port, tls, host)], the header left out."""
    lines = out.strip().splitlines()
    assert lines[0].split()[-4:] == ["ADDRESS", "PORT", "TLS", "HOST"], out
    return [tuple(line.split()[-4:]) for line in lines[1:]]


PUBSUB = r"""
import sys, paho.mqtt.client as mqtt
host, port = sys.argv[1], int(sys.argv[2])
got = []
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="found-it")
c.on_message = lambda cl, u, m: got.append(m.payload)
c.connect(host, port)
c.subscribe("found/#", 1)
c.loop_start()
import time
time.sleep(0.5)
c.publish("found/it", b"hello", qos=1).wait_for_publish(5)
deadline = time.time() + 5
while not got and time.time() < deadline:
    time.sleep(0.05)
print(got)
"""


def test_discover_finds_the_installed_gateway_and_it_serves(ns, tmp_path):
    """The service file `ubroker service install` wrote, published, leads discover to the
    broker's address and port; a client there gets its own message back through the broker."""
    port = 1883  # the namespace is the test's own: nothing else listens there
    conf, avahi = avahi_file_for(tmp_path, "listener %d 0.0.0.0\nallow_anonymous true\n" % port)
    broker = ns.start(UBROKER, "run", "--config", str(conf), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ns.advertise("gw-test", str(avahi))
    r = ns.run(UBROKER, "discover", "--timeout", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert rows(r.stdout) == [("127.0.0.1", str(port), "no", "gw-test.local")]
    assert "ubroker on gw-test" in r.stdout
    assert broker.poll() is None, "the broker died"
    r = ns.run(sys.executable, "-c", PUBSUB, "127.0.0.1", str(port))
    assert r.stdout.strip() == "[b'hello']", r.stdout + r.stderr


def test_discover_tells_a_tls_listener(ns, tmp_path):
    _, avahi = avahi_file_for(tmp_path, "listener 1883 0.0.0.0\nlistener 8883 0.0.0.0\ncertfile c.der\n"
                                        "keyfile k.der\nallow_anonymous true\n")
    ns.advertise("gw-tls", str(avahi))
    r = ns.run(UBROKER, "discover", "--timeout", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert rows(r.stdout) == [("127.0.0.1", "1883", "no", "gw-tls.local"), ("127.0.0.1", "8883", "yes", "gw-tls.local")]


def test_discover_with_nothing_advertised_says_how_to_find_a_board(ns):
    r = ns.run(UBROKER, "discover", "--timeout", "1")
    assert r.returncode == 1
    assert "--resolve NAME.local" in r.stderr


def test_resolve_a_board_hostname(ns):
    ns.advertise("board-test")
    r = ns.run(UBROKER, "discover", "--resolve", "board-test.local", "--timeout", "3")
    assert (r.returncode, r.stdout.strip()) == (0, "board-test.local  127.0.0.1"), r.stderr
    r = ns.run(UBROKER, "discover", "--resolve", "nobody-here.local", "--timeout", "1")
    assert r.returncode == 1 and "no answer for nobody-here.local" in r.stderr


# A board's side: firmware/ubroker/platform.py run in the MicroPython unix port as a board
# (sys.platform "rp2"), with a network module that records what is asked of it.
BOARD_NETWORK = r"""
import json, sys
real_sys = sys
calls = []

class BoardSys:
    platform = "rp2"

class WLAN:
    up = real_sys.argv[1] == "up"
    def __init__(self, i):
        pass
    def active(self, v=None):
        if v is None:
            return WLAN.up
        calls.append("active %s" % v)
        WLAN.up = v
    def isconnected(self):
        return WLAN.up and "connect" in calls
    def connect(self, ssid, password):
        calls.append("connect")
    def config(self, **kw):
        pass
    def ifconfig(self):
        return ("198.18.0.7", "255.255.255.0", "", "")
    def disconnect(self):
        pass

class network:
    STA_IF = 0
    AP_IF = 1
    WLAN = WLAN
    def hostname(name):
        if len(name) > 32:  # MICROPY_PY_NETWORK_HOSTNAME_MAX_LEN, as the firmware's
            raise ValueError("name too long")
        calls.append("hostname " + name)

sys.modules["sys"] = BoardSys
sys.modules["network"] = network
from ubroker import platform
sys.modules["sys"] = real_sys
logs = []
address = platform.network_up({"wifi_ssid": "home", "hostname": real_sys.argv[2]}, logs.append)
print(json.dumps([address, calls, logs]))
"""


def board_network_up(tmp_path, interface, hostname):
    script = tmp_path / "board_network.py"
    script.write_text(BOARD_NETWORK)
    firmware = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "firmware")
    r = subprocess.run([os.path.join(BIN, "micropython"), str(script), interface, hostname], capture_output=True,
                       text=True, timeout=60, env=dict(os.environ, MICROPYPATH=firmware))
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def test_board_hostname_is_set_before_wifi_comes_up(tmp_path):
    """The firmware's mDNS responder takes the host name as the interface comes up (rp2) or
    at the first connection (ESP32), so `hostname` reaches network.hostname() before either."""
    address, calls, logs = board_network_up(tmp_path, "down", "gw-kitchen")
    assert address == "198.18.0.7"
    assert calls == ["hostname gw-kitchen", "active True", "connect"]
    assert "hostname gw-kitchen.local" in logs


def test_board_interface_left_up_is_restarted_with_the_name(tmp_path):
    """WiFi left up by boot.py (or before a soft reset) had the old name: it goes down first."""
    _, calls, _ = board_network_up(tmp_path, "up", "gw-kitchen")
    assert calls == ["active False", "hostname gw-kitchen", "active True", "connect"]


def test_board_hostname_refused_is_logged(tmp_path):
    _, calls, logs = board_network_up(tmp_path, "down", "x" * 40)
    assert calls == ["active True", "connect"]
    assert "hostname %s not set: name too long" % ("x" * 40) in logs
