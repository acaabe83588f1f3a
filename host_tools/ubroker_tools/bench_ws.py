"""The WebSockets side of `ubroker bench`: the path the load generator's clients open and the
check, made on every broker started with a websockets listener, that the listener really
answers the Upgrade (RFC 6455 section 4, subprotocol mqtt). A peer whose listener does not is
reported as not measured with the reason found here, never given a figure."""

import base64
import hashlib
import os
import socket

WS_PATH = "/mqtt"
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def handshake_problem(port, timeout=3.0):
    """None if 127.0.0.1:port answers an MQTT WebSocket Upgrade with 101, the right accept key
    and the subprotocol mqtt; else what went wrong, in a few words."""
    key = base64.b64encode(os.urandom(16))
    req = (b"GET " + WS_PATH.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: " % port + key +
           b"\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(req)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 4096:
                got = s.recv(4096)
                if not got:
                    return "the websockets port closed the connection without an answer"
                head += got
    except OSError as e:
        return "no websockets listener on port %d (%s)" % (port, e)
    lines = head.split(b"\r\n\r\n")[0].split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1.1 101"):
        return "websockets Upgrade answered %r" % lines[0].decode("latin-1")[:80]
    fields = {}
    for ln in lines[1:]:
        name, _, val = ln.partition(b":")
        fields[name.strip().lower()] = val.strip()
    want = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    if fields.get(b"sec-websocket-accept") != want:
        return "wrong Sec-WebSocket-Accept in the Upgrade's answer"
    if fields.get(b"sec-websocket-protocol") != b"mqtt":
        return "the Upgrade's answer does not choose the subprotocol mqtt"
    return None
