"""The WebSockets listeners' side of the server (imported only when a listener has `protocol
websockets`): each accepted socket is wrapped in a ws_frame.WsSock, and its first bytes are
an HTTP/1.1 request. An Upgrade to WebSocket version 13 offering the subprotocol `mqtt` (or
`mqttv3.1`, which MQTT.js offers for protocol level 3) gets 101 and the subprotocol back
(RFC 6455 section 4.2.2, MQTT-6.0.0-3, MQTT-6.0.0-4); a plain GET gets web.answer's page or
figures, streamed from the file in small chunks as the socket takes them; anything else 400
(426 for another version) and a close. Until the 101 the connection has no session, so the
half-open limits and connect_timeout apply to a slow handshake as to a silent TCP client."""

import binascii
import hashlib

from micropython import const

from .ws_frame import WsClose, WsSock

_OPEN = const(1)  # ws_frame's state bits
_CLOSED = const(4)
_HTTP = const(8)
_HEAD_MAX = const(2048)  # a request head longer than this is refused (400)
_CHUNK = const(512)  # plain HTTP: the file goes out this much at a time
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3


class Ws:
    def __init__(self, server):
        self.server = server
        self.listeners = []  # the listening sockets that speak WebSockets
        WsSock.limit = server.max_packet + 5
        WsSock.hs = self

    def wrap(self, ls, s):
        """The Conn's socket for s accepted on ls: a WsSock for a WebSockets listener."""
        return WsSock(s) if ls in self.listeners else s

    def polled(self, s):
        """The socket the poll holds for a Conn's sock: a WebSocket's is under its wrapper."""
        return s.s if type(s) is WsSock else s

    def request(self, w, buf, n):
        """Bytes read before the upgrade: the request head, gathered until complete. Returns
        how many bytes after the head were moved to buf's start (frames sent at once)."""
        req = w.req
        if req is None:
            req = w.req = bytearray()
        req.extend(memoryview(buf)[:n])
        end = req.find(b"\r\n\r\n")
        if end < 0:
            if len(req) > _HEAD_MAX:
                self._refuse(w, "400 Bad Request", "request head too long")
            return 0
        w.req = None
        lines = bytes(req[:end]).split(b"\r\n")
        rest = len(req) - end - 4
        buf[:rest] = req[end + 4 :]
        words = lines[0].split(b" ")
        if len(words) != 3 or words[0] != b"GET" or words[2] != b"HTTP/1.1":
            self._refuse(w, "400 Bad Request", "not a GET of HTTP/1.1")
            return 0
        fields = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(b":")
            fields[bytes(k.strip().lower())] = v.strip()
        if b"websocket" not in fields.get(b"upgrade", b"").lower():
            self._http(w, words[1])
            return 0
        if fields.get(b"sec-websocket-version") != b"13":
            self._refuse(w, "426 Upgrade Required", "version", "Sec-WebSocket-Version: 13\r\n")
            return 0
        key = fields.get(b"sec-websocket-key", b"")
        try:
            ok = len(binascii.a2b_base64(key)) == 16
        except ValueError:
            ok = False
        if not ok or b"upgrade" not in fields.get(b"connection", b"").lower():
            self._refuse(w, "400 Bad Request", "no key or no Connection: Upgrade")
            return 0
        offered = [p.strip() for p in fields.get(b"sec-websocket-protocol", b"").split(b",")]
        proto = b"mqtt" if b"mqtt" in offered else b"mqttv3.1" if b"mqttv3.1" in offered else None
        if proto is None:  # MQTT-6.0.0-3: a client offers mqtt
            self._refuse(w, "400 Bad Request", "no mqtt subprotocol")
            return 0
        accept = binascii.b2a_base64(hashlib.sha1(key + _GUID).digest()).strip()
        head = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\nSec-WebSocket-Protocol: " + proto + b"\r\n\r\n")
        # A new connection's socket has room for 160 bytes: written at once, or not at all
        if (w.s.write(head) or 0) < len(head):
            w.fl |= _CLOSED  # no close frame on a connection that never opened
            raise WsClose("websocket handshake: the answer did not go out")
        w.h = bytearray(14)
        w.fl |= _OPEN
        return rest

    def _refuse(self, w, status, why, extra=""):
        self.server.log("websocket handshake refused (%s): %s" % (status, why))
        body = ("%s\n" % why).encode()
        head = ("HTTP/1.1 %s\r\n%sContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                % (status, extra, len(body))).encode()
        self._answer(w, head, body, None)

    def _http(self, w, path):
        try:
            from .web import answer
        except ImportError:  # a board without the status page
            self._refuse(w, "404 Not Found", "not found")
            return
        head, body, path = answer(self.server, path)
        self._answer(w, head, body, path)

    def _answer(self, w, head, body, path):
        """The answer goes out as the connection's output, written as the socket takes it;
        drained() sends the file after it, then closes."""
        sv = self.server
        c = sv.conns.get(w.s)
        w.req = None
        w.fl |= _HTTP
        out = bytearray(head)
        if body is not None:
            out.extend(body)
        if path is not None:
            w.f = open(path, "rb")
        c.out = out
        sv.broker.mark_dirty(c)

    def drained(self, c):
        """c's output is all written. For a plain HTTP answer: the file's next chunk, or the
        close once it is all sent; True when c was closed."""
        w = c.sock
        if type(w) is not WsSock or not w.fl & _HTTP:
            return False
        f = w.f
        if f is not None:
            out = bytearray(_CHUNK)
            n = f.readinto(out)
            if n:
                if n < _CHUNK:
                    out[n:] = b""
                c.out = out
                return False
        self.server.close(c, "answered plain HTTP", False)
        return True
