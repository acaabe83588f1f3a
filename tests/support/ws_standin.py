"""A stand-in for the broker's WebSockets listener, for the browser tests while the broker
has none: it serves the committed status page for `GET /` as the broker does (gzip, from
the file) and carries each WebSocket connection's binary frames to and from the real
broker's TCP port, so the page's own MQTT client talks to the real broker. Loopback only."""

import base64
import hashlib
import socket
import struct
import threading

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3


class StandIn:
    def __init__(self, broker_port, page, cookie=""):
        self.broker_port = broker_port
        self.page = page
        self.cookie = cookie
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(8)
        self.port = self.ls.getsockname()[1]
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        for s in [self.ls] + self.socks:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self):
        while True:
            try:
                s, _ = self.ls.accept()
            except OSError:
                return
            self.socks.append(s)
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                got = s.recv(4096)
                if not got:
                    return
                head += got
            lines = head.split(b"\r\n\r\n")[0].decode().split("\r\n")
            fields = {k.lower(): v for k, _, v in (x.partition(": ") for x in lines[1:])}
            if fields.get("upgrade", "").lower() == "websocket":
                self._relay(s, fields["sec-websocket-key"])
                return
            path = lines[0].split(" ")[1]
            if path == "/":
                with open(self.page, "rb") as f:
                    body = f.read()
                extra = "Content-Encoding: gzip\r\n" + self.cookie
                kind = "200 OK", "text/html; charset=utf-8"
            else:
                body, extra, kind = b"not found\n", "", ("404 Not Found", "text/plain")
            s.sendall(("HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%sConnection: close\r\n\r\n"
                       % (kind[0], kind[1], len(body), extra)).encode() + body)
        except OSError:
            pass
        finally:
            s.close()

    def _relay(self, s, key):
        accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
        s.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n" % accept).encode())
        b = socket.create_connection(("127.0.0.1", self.broker_port))
        self.socks.append(b)

        def down():  # broker -> page: one unmasked binary frame per read
            try:
                while True:
                    data = b.recv(65536)
                    if not data:
                        break
                    n = len(data)
                    hdr = bytes([0x82, n]) if n < 126 else struct.pack("!BBH", 0x82, 126, n)
                    s.sendall(hdr + data)
            except OSError:
                pass
            for x in (s, b):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        threading.Thread(target=down, daemon=True).start()
        f = s.makefile("rb")
        try:
            while True:  # page -> broker: the browser's frames are masked (RFC 6455 5.3)
                h = f.read(2)
                if len(h) < 2:
                    break
                op, n = h[0] & 15, h[1] & 127
                if n == 126:
                    n = struct.unpack("!H", f.read(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", f.read(8))[0]
                mask = f.read(4)
                data = bytes(c ^ mask[i & 3] for i, c in enumerate(f.read(n)))
                if op == 8:
                    break
                if op in (0, 2):
                    b.sendall(data)
        except OSError:
            pass
        finally:
            b.close()
            s.close()
