"""The opening handshake of a WebSockets listener's connection, and plain HTTP beside it.
Loaded by ws_frame.Ws while a request head is being answered, forgotten once none is. The
head is gathered until complete; an Upgrade to WebSocket version 13 offering the subprotocol
`mqtt` (or `mqttv3.1`, which MQTT.js offers for protocol level 3) gets 101 and the
subprotocol back (RFC 6455 section 4.2.2, MQTT-6.0.0-3, MQTT-6.0.0-4); a plain GET gets
web.answer's page or figures (WsSock.write sends its file or web.Stream); anything else 400 (426
for another version) and a close. Until the 101 the connection has no session, so the
half-open limits and connect_timeout apply to a slow handshake as to a silent TCP client."""

import binascii
import hashlib

from micropython import const

_FL = const(16)  # ws_frame's state bits, in WsSock.h
_OPEN = const(1)
_CLOSED = const(4)
_HTTP = const(8)
_HEAD_MAX = const(2048)  # a request head longer than this is refused (400)


def request(ws, w, buf, n):
    """buf[:n], read from w before its upgrade, added to its head. Returns how many bytes
    after a complete head were moved to buf's start (frames the client sent at once)."""
    req = ws.heads.get(w)
    if req is None:
        req = ws.heads[w] = bytearray()
    req.extend(memoryview(buf)[:n])
    end = req.find(b"\r\n\r\n")
    if end < 0:
        if len(req) > _HEAD_MAX:
            del ws.heads[w]
            _refuse(ws, w, "400 Bad Request", "head too long")
        return 0
    del ws.heads[w]
    rest = len(req) - end - 4
    buf[:rest] = memoryview(req)[end + 4 :]
    head = bytes(req[: end + 2])  # each line ends with \r\n
    low = head.lower()
    if not (low.startswith(b"get ") and low.find(b" http/1.1\r\n") == low.find(b"\r\n") - 9):
        _refuse(ws, w, "400 Bad Request", "not a GET of HTTP/1.1")
    elif b"websocket" not in _field(low, low, b"upgrade"):
        _http(ws, w, head[4 : head.find(b" ", 4)])
    elif _field(low, low, b"sec-websocket-version") != b"13":
        _refuse(ws, w, "426 Upgrade Required", "version", "Sec-WebSocket-Version: 13\r\n")
    else:
        key = _field(low, head, b"sec-websocket-key")
        try:
            ok = len(binascii.a2b_base64(key)) == 16 and b"upgrade" in _field(low, low, b"connection")
        except ValueError:
            ok = False
        offered = [p.strip() for p in _field(low, low, b"sec-websocket-protocol").split(b",")]
        proto = b"mqtt" if b"mqtt" in offered else b"mqttv3.1" if b"mqttv3.1" in offered else None
        if not ok:
            _refuse(ws, w, "400 Bad Request", "no key or no Connection: Upgrade")
        elif proto is None:  # MQTT-6.0.0-3: a client offers mqtt
            _refuse(ws, w, "400 Bad Request", "no mqtt subprotocol")
        else:
            accept = binascii.b2a_base64(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            head = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: " + accept[:-1] + b"\r\nSec-WebSocket-Protocol: " + proto + b"\r\n\r\n")
            # A new connection's socket has room for 160 bytes: written at once, or not at all.
            if (w.s.write(head) or 0) < len(head):
                w.h[_FL] |= _CLOSED  # no close frame on a connection that never opened
                raise OSError("websocket handshake: the answer did not go out")
            w.h[_FL] |= _OPEN
            return rest
    return 0


def _field(low, head, name):
    """The value of header field name (lower case) in head, found in its lower-case copy
    low; b"" when absent."""
    i = low.find(b"\r\n" + name + b":")
    if i < 0:
        return b""
    i += len(name) + 3
    return head[i : low.find(b"\r\n", i)].strip()


def _refuse(ws, w, status, why, extra=""):
    ws.server.log("websocket handshake refused (%s): %s" % (status, why))
    body = why.encode() + b"\n"
    _answer(ws, w, ("HTTP/1.1 %s\r\n%sContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close"
                    "\r\n\r\n" % (status, extra, len(body))).encode(), body, None)


def _http(ws, w, path):
    from . import forget

    try:
        from .web import answer
    except ImportError:  # a board without the status page
        _refuse(ws, w, "404 Not Found", "not found")
        return
    # The page's requests are few (the page reads its figures over MQTT): web.py leaves the
    # heap again with the answer made, as this module does.
    try:
        _answer(ws, w, *answer(ws.server, path, True))
    finally:
        forget("web")


def _answer(ws, w, head, body, path):
    """The answer goes out as the connection's output, written as the socket takes it;
    WsSock.write sends the file after it, then has it closed."""
    sv = ws.server
    c = sv.conns.get(w.s)
    w.h[_FL] |= _HTTP
    out = bytearray(head)
    if body is not None:
        out.extend(body)
    if path is not None:  # a file's path, or the figures as a web.Stream
        w.f = open(path, "rb") if type(path) is str else path
    c.out = out
    sv.broker.mark_dirty(c)
