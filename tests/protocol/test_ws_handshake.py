"""The WebSockets listener's opening handshake over raw sockets (RFC 6455 section 4): the
accept key, the subprotocol (MQTT-6.0.0-3, MQTT-6.0.0-4), refusals with 400 and 426, a head
that arrives a byte at a time or too long, plain HTTP beside it, and handshakes that never
finish counting against the same limits as silent TCP connections. The broker runs with the
esp32 profile, a plain listener (the fixture's port) and a WebSockets one.

The helpers here (ws_broker, upgrade, frame, WsRaw) serve the other test_ws_* modules and
test_fuzz_ws.py."""

import base64
import hashlib
import os
import socket
import struct
import time

import pytest

import mqttraw
from conftest import free_port, wait_for

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3


def ws_config(port, extra=""):
    return "listener 1883 127.0.0.1\nlistener %d 127.0.0.1\nprotocol websockets\n%s" % (port, extra)


def ws_broker(broker_factory, extra="", **kw):
    """A broker with a WebSockets listener on b.ws_port besides its plain one (b.port)."""
    port = free_port()
    b = broker_factory(config=ws_config(port, extra), **kw)
    b.ws_port = port
    return b


@pytest.fixture
def wsb(broker_factory):
    return ws_broker(broker_factory)


def request(key=None, version="13", protocol="mqtt", method="GET", http="HTTP/1.1", upgrade="websocket",
            connection="Upgrade", extra=""):
    """An opening handshake's head; a field given as None is left out."""
    lines = ["%s /mqtt %s" % (method, http), "Host: 127.0.0.1"]
    for name, value in (("Upgrade", upgrade), ("Connection", connection), ("Sec-WebSocket-Key", key),
                        ("Sec-WebSocket-Version", version), ("Sec-WebSocket-Protocol", protocol)):
        if value is not None:
            lines.append("%s: %s" % (name, value))
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def new_key():
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def read_head(sock):
    """(status code, {lower-case name: value}, bytes after the head)."""
    data = b""
    while b"\r\n\r\n" not in data:
        got = sock.recv(4096)
        if not got:
            raise ConnectionError("closed before the answer's head: %r" % data)
        data += got
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    fields = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        fields[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), fields, rest


def closed_after(sock, timeout=5.0):
    """True when the peer closes within timeout (what it sends first is read and dropped)."""
    sock.settimeout(timeout)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if not sock.recv(4096):
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    return False


def upgrade(port, head=None, **kw):
    """A socket that sent the head (request(**kw) by default): (sock, status, fields, rest)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(head if head is not None else request(**kw))
    return (s,) + read_head(s)


def frame(payload, op=2, fin=True, mask=True, rsv=0, length=None):
    """One client frame; length: the length field's form forced (126 or 127) or a false one."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv << 4 | op
    m = 0x80 if mask else 0
    if length == 127 or (length is None and n > 65535):
        head = bytes((b0, m | 127)) + struct.pack(">Q", n)
    elif length == 126 or (length is None and n > 125):
        head = bytes((b0, m | 126)) + struct.pack(">H", n)
    elif length is not None:  # a length that is not the payload's
        head = bytes((b0, m | 127)) + struct.pack(">Q", length)
    else:
        head = bytes((b0, m | n))
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i & 3] for i, b in enumerate(payload))


class WsRaw(mqttraw.RawClient):
    """mqttraw.RawClient over a WebSocket: send() sends its bytes as one binary frame,
    recv_packet() reads MQTT packets from the binary frames' payloads. The server's control
    frames are kept in `controls` as (opcode, payload); its data frames' headers in `frames`
    as (fin, opcode, length)."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0, protocol="mqtt"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0
        self.wire = bytearray()
        self.controls = []
        self.frames = []
        key = new_key()
        self.sock.sendall(request(key=key, protocol=protocol))
        status, fields, rest = read_head(self.sock)
        assert status == 101, (status, fields)
        assert fields["sec-websocket-accept"] == accept_for(key)
        self.protocol = fields.get("sec-websocket-protocol")
        self.wire += rest

    def send(self, data):
        self.sock.sendall(frame(data))

    def send_raw(self, data):
        self.sock.sendall(data)

    def _wire(self, n):
        while len(self.wire) < n:
            got = self.sock.recv(65536)
            if not got:
                return False
            self.wire += got
        return True

    def read_frame(self):
        """(fin, opcode, payload) of the server's next frame, or None at the end of stream."""
        if not self._wire(2):
            return None
        b0, b1 = self.wire[0], self.wire[1]
        assert not b1 & 0x80, "a server frame is never masked (RFC 6455 section 5.1)"
        n, at = b1 & 127, 2
        if n == 126:
            if not self._wire(4):
                return None
            n, at = struct.unpack(">H", self.wire[2:4])[0], 4
        elif n == 127:
            if not self._wire(10):
                return None
            n, at = struct.unpack(">Q", self.wire[2:10])[0], 10
        if not self._wire(at + n):
            return None
        payload = bytes(self.wire[at:at + n])
        del self.wire[:at + n]
        return bool(b0 & 0x80), b0 & 15, payload

    def _fill(self, n):
        while len(self.buf) - self.pos < n:
            try:
                f = self.read_frame()
            except ConnectionResetError:
                return False
            if f is None:
                return False
            fin, op, payload = f
            if op in (0, 2):
                self.frames.append((fin, op, len(payload)))
                self.buf += payload
            else:
                self.controls.append((op, payload))
        return True

    def close_code(self, timeout=5.0):
        """The code of the server's close frame (None without one), once it closed the
        connection; frames before it are kept as usual."""
        self.sock.settimeout(timeout)
        while True:
            try:
                f = self.read_frame()
            except (ConnectionResetError, socket.timeout):
                f = None
            if f is None:
                break
            fin, op, payload = f
            if op == 8:
                self.controls.append((op, payload))
            elif op in (0, 2):
                self.buf += payload
        for op, payload in self.controls:
            if op == 8:
                return struct.unpack(">H", payload[:2])[0] if payload else 1005
        return None


# ---------------------------------------------------------------------------- the tests


def test_accept_key_and_subprotocol_then_mqtt(wsb):
    """RFC 6455 section 4.2.2: 101, Upgrade and Connection, Sec-WebSocket-Accept from the
    key (the RFC's own example), and the subprotocol mqtt back (MQTT-6.0.0-4); then CONNECT
    and CONNACK in binary frames."""
    s, status, fields, rest = upgrade(wsb.ws_port, key="dGhlIHNhbXBsZSBub25jZQ==")
    assert status == 101
    assert fields["upgrade"].lower() == "websocket" and "upgrade" in fields["connection"].lower()
    assert fields["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert fields["sec-websocket-protocol"] == "mqtt"
    s.close()
    c = WsRaw(wsb.ws_port)
    assert c.connect("ws-hs") == (0, 0)
    assert c.frames[0][:2] == (True, 2)


def test_mqttv31_is_echoed_and_mqtt_preferred(wsb):
    """MQTT.js offers mqttv3.1 for protocol level 3: that name comes back; mqtt, when also
    offered, is the one chosen (MQTT-6.0.0-4)."""
    assert WsRaw(wsb.ws_port, protocol="mqttv3.1").protocol == "mqttv3.1"
    assert WsRaw(wsb.ws_port, protocol="mqttv3.1, mqtt").protocol == "mqtt"
    c = WsRaw(wsb.ws_port, protocol="mqttv3.1")
    c.send(mqttraw.packet(0x10, mqttraw.s(b"MQIsdp") + bytes((3, 2, 0, 30)) + mqttraw.s(b"v31")))
    assert c.expect(2).body == b"\x00\x00"


@pytest.mark.parametrize("kw, status", [
    ({"protocol": None}, 400),  # MQTT-6.0.0-3: the client offers mqtt
    ({"protocol": "chat, superchat"}, 400),
    ({"version": "8"}, 426),
    ({"version": None}, 426),
    ({"key": None}, 400),
    ({"key": "c2hvcnQ="}, 400),  # 5 bytes, not 16 (section 4.1)
    ({"connection": "keep-alive"}, 400),
    ({"method": "POST"}, 400),
    ({"http": "HTTP/1.0"}, 400),
])
def test_bad_handshake_is_refused_and_closed(wsb, kw, status):
    """A refused opening handshake gets its HTTP status (426 names the version the server
    speaks, RFC 6455 section 4.4) and the connection is closed; the listener goes on."""
    kw.setdefault("key", new_key())
    s, got, fields, _ = upgrade(wsb.ws_port, **kw)
    assert got == status
    if status == 426:
        assert fields["sec-websocket-version"] == "13"
    assert closed_after(s)
    assert WsRaw(wsb.ws_port).connect("after-refusal") == (0, 0)


def test_head_a_byte_at_a_time_and_a_frame_behind_it(wsb):
    """The head is gathered over many reads; a CONNECT frame sent in the same segment as
    the head's end is read too."""
    key = new_key()
    head = request(key=key)
    s = socket.create_connection(("127.0.0.1", wsb.ws_port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(len(head) - 1):
        s.send(head[i:i + 1])
        time.sleep(0.002)
    s.sendall(head[-1:] + frame(mqttraw.connect("bytewise")))
    status, fields, rest = read_head(s)
    assert status == 101 and fields["sec-websocket-accept"] == accept_for(key)
    while len(rest) < 6:
        rest += s.recv(100)
    assert rest[:6] == b"\x82\x04\x20\x02\x00\x00"
    s.close()


def test_head_too_long_is_refused(wsb):
    s, status, _, _ = upgrade(wsb.ws_port, key=new_key(), extra="X-Filler: %s\r\n" % ("f" * 3000))
    assert status == 400
    assert closed_after(s)


def test_plain_get_without_upgrade_gets_http(wsb):
    """A GET that is not an upgrade gets an HTTP answer (the status page's, web.py) and the
    connection closes after it."""
    s, status, fields, rest = upgrade(wsb.ws_port, upgrade=None, connection=None, key=None, version=None,
                                      protocol=None)
    assert status in (200, 404)
    assert int(fields["content-length"]) >= 0
    assert closed_after(s)


def test_slow_handshake_is_closed_at_connect_timeout(broker_factory):
    """A head that never completes keeps the connection as long as a TCP client without
    CONNECT is kept: connect_timeout (1 s here), then closed."""
    b = ws_broker(broker_factory, "connect_timeout 1\n")
    s = socket.create_connection(("127.0.0.1", b.ws_port), timeout=5)
    head = request(key=new_key())
    t0 = time.time()
    try:
        for i in range(12):  # a byte now and then does not keep it open
            s.send(head[i:i + 1])
            time.sleep(0.4)
    except OSError:  # closed meanwhile
        pass
    assert closed_after(s, 5)
    assert time.time() - t0 < 3.5  # 1 s and the once-a-second tick, not the 4.8 s of bytes


def test_half_open_handshakes_displace_themselves(broker_factory):
    """Unfinished handshakes are connections without CONNECT: once max_half_open_connections
    of them wait, the oldest makes room, and a TCP client and a WebSocket client still get
    in."""
    b = ws_broker(broker_factory, "max_half_open_connections 4\n")
    stuck = []
    for _ in range(8):
        s = socket.create_connection(("127.0.0.1", b.ws_port), timeout=5)
        s.send(b"GET /mqtt HTTP/1.1\r\n")
        stuck.append(s)
    time.sleep(2.3)  # older than the 2 s a reconnecting fleet is given (server._SILENT_MS)
    stuck.append(socket.create_connection(("127.0.0.1", b.ws_port), timeout=5))
    assert wait_for(lambda: "too many connections without CONNECT" in b.log(), 5), b.log()
    assert b.raw().connect("tcp-after") == (0, 0)
    assert WsRaw(b.ws_port).connect("ws-after") == (0, 0)
    for s in stuck:
        s.close()
