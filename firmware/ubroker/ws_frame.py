"""RFC 6455 framing for one WebSocket connection: WsSock stands where a TCP socket stands in a
Conn (conn.sock) and gives the server readinto(), write() and close(). readinto() reads the
socket into the buffer it is given and de-frames there, in place: headers are taken out,
payloads unmasked and moved down, so the MQTT parser sees the same bytes as on TCP (MQTT
packets and frame boundaries need not line up, MQTT-6.0.0-2); payloads are unmasked by
ws_unmask.py's machine code where the port has it. write() sends a 2- or 4-byte binary frame
header and the caller's bytes in one write, copied behind the header into the broker's
scratch buffer where they fit (a copy costs less than a write of its own), else header and
bytes apart; a partial write continues the same frame on the next call. Ping, pong and close
are answered here.

Why the poll registers the socket under the wrapper and not the wrapper: MicroPython's
select.poll takes any object with a stream ioctl, and on the unix port it would poll a
Python io.IOBase subclass through its fd (MP_STREAM_GET_FILENO); on the boards, though, poll
asks every object's ioctl(MP_STREAM_POLL) on each turn of its wait loop, and a Python object
cannot forward that to the socket it holds (a socket has no ioctl() method). So the server
polls `s` (the TCP or TLS socket) and maps it to the Conn; nothing here buffers bytes the
socket no longer shows as readable, so its readiness is the wrapper's.

Heap: an open connection holds s, h, rem and ol (measured with tests/memory/test_ws_memory.py);
the small counters live in h beside the header bytes, each attribute being a 16-byte slot."""

import gc

from micropython import const

try:  # the payload loop as machine code where the port makes it (ws_unmask.py)
    from .ws_unmask import unmask as _unmask
except Exception:  # ImportError: not built for this board; SyntaxError: no native emitter
    _unmask = None  # type: ignore[assignment]

# h: the frame header being read (its mask key stays there while the payload comes), then
_HN = const(14)  # how many header bytes are in
_MP = const(15)  # where in the mask key the next payload byte is
_FL = const(16)  # the state bits:
_OPEN = const(1)  # upgraded: frames both ways
_FRAG = const(2)  # inside a fragmented message: only continuation frames may follow
_CLOSED = const(4)  # a close frame went out: nothing else may follow it (RFC 6455 5.5.1)
_HTTP = const(8)  # answering plain HTTP: bytes go out as they are, then the server closes
_TEXT = const(1)  # opcodes (RFC 6455 section 5.2)
_BINARY = const(2)
_CLOSE = const(8)
_PING = const(9)
_LONGEST = const(65535)  # the longest frame written: its length fits a 4-byte header
# Plain HTTP: the file goes out this much at a time. A board's heap after start can be all in
# holes of under 192 B (web.Stream), where a larger block does not fit.
_CHUNK = const(128)

_H2 = bytearray(b"\x82\x00")  # FIN, binary: a frame header being written (shared: it goes
_H4 = bytearray(b"\x82\x7e\x00\x00")  # out at once, or its rest is kept in oh)


class Ws:
    """The server's side of its WebSockets listeners (Server.ws). What a handshake needs is
    in ws_handshake.py, loaded while a request head is being answered and forgotten once
    none is: on a board its code is heap better spent on clients between handshakes."""

    def __init__(self, server):
        self.server = server
        self.listeners = []  # the listening sockets that speak WebSockets
        self.heads = {}  # WsSock -> its request head so far (only while it arrives)
        mp = server.cfg["max_packet_size"]
        if not mp:  # none: the longest packet long_packet.py takes (never loaded with a limit)
            from .long_packet import most

            mp = most(server.cfg)
        WsSock.limit = mp + 5
        WsSock.hs = self  # type: ignore[assignment]  # the class default is None
        sc = server.broker.scratch
        WsSock.sc = sc  # type: ignore[assignment]
        WsSock.sn = min(len(sc), _LONGEST) - 4

    def wrap(self, ls, s):
        """The Conn's socket for s accepted on ls: a WsSock for a WebSockets listener."""
        return WsSock(s) if ls in self.listeners else s

    def request(self, w, buf, n):
        from . import forget

        try:
            from .ws_handshake import request

            return request(self, w, buf, n)
        except MemoryError:  # the connection goes, not the loop's pass
            self.heads.pop(w, None)
            w.h[_FL] |= _CLOSED
            raise WsClose("websocket handshake: out of memory")
        finally:
            if not self.heads:
                forget("ws_handshake")
                # Its code (5 kB on the 64-bit port) freed now, in one piece, before the
                # client's CONNECT may load v5's code into a heap it would otherwise split.
                gc.collect()


class WsClose(OSError):
    """The connection broke the protocol; the close frame with its code went out."""


class WsSock:
    # Class defaults: an instance stores only the fields it has set.
    hs = None  # the one Ws (set by it): it has the request head answered
    limit = 0  # frames longer than this close with 1009: max_packet_size + 5 (set by Ws)
    rem = 0  # payload bytes of the frame being read still to come
    ol = 0  # payload bytes of the frame being written still to go
    oh = None  # header bytes of the frame being written still to go (a partial write)
    ctl = None  # a control frame's payload, as it arrives
    f = None  # plain HTTP: the file or web.Stream being sent (write)
    # The broker's scratch buffer (Broker._out) and the most it takes beside a header: a frame
    # whose payload fits goes out in one write, its header and a copy of the payload there
    # (set by Ws; without it, as for a payload that does not fit, header and payload are two).
    sc = None
    sn = 0

    def __init__(self, s):
        self.s = s
        self.h = bytearray(17)

    def readinto(self, buf):
        h = self.h
        if h[_FL] & _CLOSED:
            return 0
        n = self.s.readinto(buf)
        if not n:
            return n
        if not h[_FL] & _OPEN:
            if h[_FL] & _HTTP:
                return None  # an answer is going out: what else the client sends is ignored
            # the handshake; what follows its head, if any (hs: the class default is None)
            n = self.hs.request(self, buf, n)  # type: ignore[attr-defined]
            if not n:
                return None
        n = self._deframe(buf, n, h)
        return n if n or h[_FL] & _CLOSED else None  # 0 would say end of stream

    def _deframe(self, buf, n, h):
        rem = self.rem
        i = o = 0
        while i < n:
            if rem == 0:
                ln = buf[i + 1] & 127 if n - i >= 8 and h[_HN] == 0 else 127
                if ln < 127:
                    # The usual header, whole in buf: taken at once, not a byte a turn
                    # (6.5k instructions a frame less: fanin_ws_inprocess.py WS_FRAME=1, callgrind)
                    b0 = h[0] = buf[i]
                    b1 = h[1] = buf[i + 1]
                    h[2] = buf[i + 2]
                    h[3] = buf[i + 3]
                    h[4] = buf[i + 4]
                    h[5] = buf[i + 5]
                    i += 6
                    if ln == 126:
                        h[6] = buf[i]
                        h[7] = buf[i + 1]
                        i += 2
                    if b0 != 0x82 or not b1 & 0x80 or h[_FL] & _FRAG:  # not FIN binary masked
                        self._check(h)
                    h[_MP] = 0
                else:  # byte by byte: it may arrive split over reads
                    hn = h[_HN]
                    h[hn] = buf[i]
                    i += 1
                    hn += 1
                    h[_HN] = hn
                    if hn == 2:
                        self._check(h)
                    if hn < 6:
                        continue
                    ln = h[1] & 127
                    if hn < (6 if ln < 126 else 8 if ln == 126 else 14):
                        continue
                    h[_HN] = h[_MP] = 0
                if ln == 126:
                    ln = h[2] << 8 | h[3]
                elif ln == 127:
                    if h[2] & 0x80:
                        self.fail(1002)  # a 64-bit length with its top bit set
                    ln = 0
                    for j in range(2, 10):
                        ln = ln << 8 | h[j]
                if h[0] & 8:
                    self.ctl = bytearray()
                elif ln > self.limit:
                    self.fail(1009)
                rem = ln
                if rem == 0 and h[0] & 8 and self._control(h):
                    break
                continue
            k = n - i if n - i < rem else rem
            hk = h[1] & 127
            hk = 2 if hk < 126 else 4 if hk == 126 else 10  # the mask key's place
            mp = h[_MP]
            if h[0] & 8:  # a control frame's payload, collected
                for j in range(k):
                    self.ctl.append(buf[i + j] ^ h[hk + ((mp + j) & 3)])
            elif _unmask is not None:
                _unmask(buf, o, i, k, h, hk, mp)
                o += k
            else:
                for j in range(k):
                    buf[o + j] = buf[i + j] ^ h[hk + ((mp + j) & 3)]
                o += k
            i += k
            rem -= k
            h[_MP] = (mp + k) & 3
            if rem == 0 and h[0] & 8 and self._control(h):
                break
        self.rem = rem
        return o

    def _check(self, h):
        """The first two bytes of a header (RFC 6455 sections 5.1, 5.2, 5.4, 5.5)."""
        b0 = h[0]
        op = b0 & 15
        if b0 & 0x70 or not h[1] & 0x80 or (op & 7) > 2:  # reserved bits, unmasked, opcode
            self.fail(1002)
        if op & 8:
            if not b0 & 0x80 or h[1] & 127 > 125:  # a fragmented or long control frame
                self.fail(1002)
            return
        if op == _TEXT:
            self.fail(1003)  # MQTT-6.0.0-1
        if (op == 0) != bool(h[_FL] & _FRAG):  # a continuation out of place
            self.fail(1002)
        h[_FL] = h[_FL] & ~_FRAG if b0 & 0x80 else h[_FL] | _FRAG

    def _control(self, h):
        """A complete control frame: True once the connection is closing."""
        ctl = self.ctl
        self.ctl = None
        op = h[0] & 15
        if op == _PING:
            self._send(0x8A, ctl)
        elif op == _CLOSE:
            if len(ctl) == 1:  # type: ignore[arg-type]  # set with the frame's header
                self.fail(1002)
            self._send(0x88, ctl[:2])  # the client's code echoed (section 5.5.1)
            h[_FL] |= _CLOSED
            return True
        return False  # a pong: nothing to do

    def _send(self, b0, payload):
        """A control frame, unless a data frame is part way out: its bytes cannot be split,
        and this frame is dropped (a pong a congested client has to do without)."""
        if self.ol or self.oh is not None or self.h[_FL] & _CLOSED:
            return
        try:
            self.s.write(bytes((b0, len(payload))) + payload)
        except Exception:  # OSError, or MemoryError when stopping with the heap locked
            pass

    def fail(self, code):
        self._send(0x88, bytes((code >> 8, code & 255)))
        self.h[_FL] |= _CLOSED
        raise WsClose("websocket close %d" % code)

    def write(self, data):
        if not self.h[_FL] & _OPEN:
            return self._http(data)
        s = self.s
        n = len(data)
        sc = self.sc
        if 0 < n <= self.sn and self.ol == 0 and self.oh is None and data is not sc:
            # One write, not two: the header alone was a write and a TCP segment of its own
            # (half the broker's writes in the fan-in over WebSockets, strace), which woke
            # the reader for 2 bytes. Copying up to out_buffer_size costs less than a write.
            # The scratch is free here: Broker._out fills it only to write it at once, and
            # that write (data is sc) takes the two writes below.
            if n < 126:
                sc[:] = _H2  # type: ignore[index]
                sc[1] = n  # type: ignore[index]
            else:
                sc[:] = _H4  # type: ignore[index]
                sc[2] = n >> 8  # type: ignore[index]
                sc[3] = n & 255  # type: ignore[index]
            hl = len(sc)  # type: ignore[arg-type]
            sc += data  # type: ignore[operator]  # in place, within its room: no allocation
            m = s.write(sc) or 0
            if m < hl:  # the socket took less than the header: its rest goes first next time
                self.oh = bytes(sc[m:hl])  # type: ignore[index]
                m = hl
            self.ol = n - (m - hl)
            return m - hl
        done = 0
        while done < n:
            oh = self.oh
            if oh is not None:  # the rest of a header a full socket cut short
                m = s.write(oh) or 0
                if m < len(oh):
                    self.oh = oh[m:]
                    break
                self.oh = None
            ol = self.ol
            if ol == 0:
                ol = n - done if n - done < _LONGEST else _LONGEST
                if ol < 126:
                    hdr = _H2
                    hdr[1] = ol
                else:
                    hdr = _H4
                    hdr[2] = ol >> 8
                    hdr[3] = ol & 255
                m = s.write(hdr) or 0
                self.ol = ol
                if m < len(hdr):
                    self.oh = bytes(hdr[m:])
                    break
            m = s.write(data if done == 0 and ol >= n else memoryview(data)[done : done + ol]) or 0
            self.ol = ol - m
            done += m
            if m < ol:
                break
        return done

    def _http(self, data):
        """Plain HTTP (ws_handshake._answer put the head in the connection's output): once
        data is all out, the file's next piece replaces it and 0 is returned, so the server
        keeps it as the output still to write, without code of its own for this; after the
        last piece an OSError makes the server close the connection."""
        n = self.s.write(data) or 0
        if n < len(data):
            return n
        f = self.f
        if f is not None:
            try:
                data[:] = bytes(_CHUNK)
                k = f.readinto(data)
            except MemoryError:
                raise OSError("out of memory for the HTTP answer")
            if k:
                data[k:] = b""
                return 0
        raise OSError("answered plain HTTP")

    def close(self):
        h = self.h
        if h[_FL] & (_OPEN | _CLOSED) == _OPEN:
            self._send(0x88, b"\x03\xe8")  # 1000, normal closure: the server ends it
        h[_FL] |= _CLOSED
        if self.f is not None:
            self.f.close()
            self.f = None
        self.hs.heads.pop(self, None)  # type: ignore[attr-defined]
        self.s.close()
