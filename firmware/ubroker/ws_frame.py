"""RFC 6455 framing for one WebSocket connection: WsSock stands where a TCP socket stands in a
Conn (conn.sock) and gives the server readinto(), write() and close(). readinto() reads the
socket into the buffer it is given and de-frames there, in place: headers are taken out,
payloads unmasked and moved down, so the MQTT parser sees the same bytes as on TCP (MQTT
packets and frame boundaries need not line up, MQTT-6.0.0-2). write() sends a 2- or 4-byte
binary frame header and then the caller's bytes, never a copy of them; a partial write
continues the same frame on the next call. Ping, pong and close are answered here.

Why the poll registers the socket under the wrapper and not the wrapper: MicroPython's
select.poll takes any object with a stream ioctl, and on the unix port it would poll a
Python io.IOBase subclass through its fd (MP_STREAM_GET_FILENO); on the boards, though, poll
asks every object's ioctl(MP_STREAM_POLL) on each turn of its wait loop, and a Python object
cannot forward that to the socket it holds (a socket has no ioctl() method). So the server
polls `s` (the TCP or TLS socket) and maps it to the Conn; nothing here buffers bytes the
socket no longer shows as readable, so its readiness is the wrapper's."""

from micropython import const

# fl: the connection's state bits
_OPEN = const(1)  # upgraded: frames both ways
_FRAG = const(2)  # inside a fragmented message: only continuation frames may follow
_CLOSED = const(4)  # a close frame went out: nothing else may follow it (RFC 6455 5.5.1)
_HTTP = const(8)  # answering plain HTTP: bytes go out as they are, then the server closes
# frame opcodes (RFC 6455 section 5.2)
_CONT = const(0)
_TEXT = const(1)
_BINARY = const(2)
_CLOSE = const(8)
_PING = const(9)
_LONGEST = const(65535)  # the longest frame written: its length fits a 4-byte header

_H2 = bytearray(2)  # a frame header being written (shared: written at once, or kept in oh)
_H4 = bytearray(4)
_H2[0] = _H4[0] = 0x82  # FIN, binary
_H4[1] = 126


class WsClose(OSError):
    """The connection breaks the protocol: the close frame with its code went out."""


class WsSock:
    # Class defaults: an instance stores only the fields a connection has used (an idle
    # MQTT client over WebSockets: s, h, fl and the counters of its last frame).
    hs = None  # the one ws_handshake.Ws, which answers the request head
    req = None  # the request head as it arrives (ws_handshake.Ws.request)
    h = None  # bytearray(14): the frame header being read; its mask key stays there
    fl = 0
    hn = 0  # header bytes read
    rem = 0  # payload bytes of the frame being read still to come
    mp = 0  # where in the mask key the next payload byte is
    ol = 0  # payload bytes of the frame being written still to go
    oh = None  # header bytes of the frame being written still to go (a partial write)
    ctl = None  # a control frame's payload, as it arrives
    f = None  # plain HTTP: the file being streamed (ws_handshake.drained)
    limit = 0  # frames longer than this close with 1009: max_packet_size + 5 (set by Ws)

    def __init__(self, s):
        self.s = s

    def readinto(self, buf):
        fl = self.fl
        if fl & _CLOSED:
            return 0
        n = self.s.readinto(buf)
        if not n:
            return n
        if not fl & _OPEN:
            if fl & _HTTP:
                return None  # an answer is going out: what else the client sends is ignored
            n = self.hs.request(self, buf, n)  # the handshake; what follows its head, if any
            if not n:
                return None
        n = self._deframe(buf, n)
        return n if n or self.fl & _CLOSED else None  # 0 would say end of stream

    def _deframe(self, buf, n):
        h = self.h
        hn = self.hn
        rem = self.rem
        mp = self.mp
        i = o = 0
        while i < n:
            if rem == 0:  # a header, byte by byte: it may arrive split over reads
                h[hn] = buf[i]
                i += 1
                hn += 1
                if hn < 2:
                    continue
                ln = h[1] & 127
                hk = 2 if ln < 126 else 4 if ln == 126 else 10
                if hn == 2:
                    self._check(h)
                if hn < hk + 4:
                    continue
                hn = 0
                if ln == 126:
                    ln = h[2] << 8 | h[3]
                elif ln == 127:
                    if h[2] & 0x80:
                        self.fail(1002, "frame length with the top bit set")
                    ln = 0
                    for j in range(2, 10):
                        ln = ln << 8 | h[j]
                op = h[0] & 15
                if op & 8:
                    self.ctl = bytearray()
                elif ln > self.limit:
                    self.fail(1009, "frame of %d bytes exceeds max_packet_size" % ln)
                mp = 0
                rem = ln
                if rem == 0:
                    if op & 8 and self._control(op):
                        break
                continue
            k = n - i if n - i < rem else rem
            hk = h[1] & 127
            hk = 2 if hk < 126 else 4 if hk == 126 else 10
            if h[0] & 8:  # a control frame's payload, collected
                ctl = self.ctl
                for j in range(k):
                    ctl.append(buf[i + j] ^ h[hk + ((mp + j) & 3)])
            else:
                o = _unmask(buf, o, i, k, h, hk, mp)
            i += k
            rem -= k
            mp = (mp + k) & 3
            if rem == 0 and h[0] & 8 and self._control(h[0] & 15):
                break
        self.hn = hn
        self.rem = rem
        self.mp = mp
        return o

    def _check(self, h):
        """The first two bytes of a header (RFC 6455 section 5.2)."""
        b0 = h[0]
        op = b0 & 15
        if b0 & 0x70:
            self.fail(1002, "reserved bits set")
        if not h[1] & 0x80:
            self.fail(1002, "unmasked frame")  # RFC 6455 section 5.1
        if op & 8:
            if op > 10:
                self.fail(1002, "unknown opcode %d" % op)
            if not b0 & 0x80 or h[1] & 127 > 125:
                self.fail(1002, "fragmented or long control frame")  # section 5.5
            return
        if op == _TEXT:
            self.fail(1003, "text frame")  # MQTT-6.0.0-1
        if op > _BINARY:
            self.fail(1002, "unknown opcode %d" % op)
        if (op == _CONT) != bool(self.fl & _FRAG):
            self.fail(1002, "continuation frame out of place")  # section 5.4
        if b0 & 0x80:
            self.fl &= ~_FRAG
        else:
            self.fl |= _FRAG

    def _control(self, op):
        """A complete control frame: True once the connection is closing."""
        ctl = self.ctl
        self.ctl = None
        if op == _PING:
            self._send(0x8A, ctl)
        elif op == _CLOSE:
            if len(ctl) == 1:
                self.fail(1002, "close frame of one byte")
            self._send(0x88, ctl[:2])  # the client's code echoed (section 5.5.1)
            self.fl |= _CLOSED
            return True
        return False  # a pong: nothing to do

    def _send(self, b0, payload):
        """A control frame, unless a data frame is part way out: its bytes cannot be split,
        and this frame is dropped (a pong a congested client has to do without)."""
        if self.ol or self.oh is not None or self.fl & _CLOSED:
            return
        try:
            self.s.write(bytes((b0, len(payload))) + payload)
        except OSError:
            pass

    def fail(self, code, why):
        self._send(0x88, bytes((code >> 8, code & 255)))
        self.fl |= _CLOSED
        raise WsClose("websocket %d: %s" % (code, why))

    def write(self, data):
        if not self.fl & _OPEN:
            return self.s.write(data)  # the handshake's answer or plain HTTP
        s = self.s
        n = len(data)
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

    def close(self):
        if self.fl & (_OPEN | _CLOSED) == _OPEN:
            self._send(0x88, b"\x03\xe8")  # 1000, normal closure: the server ends it
        self.fl |= _CLOSED
        if self.f is not None:
            self.f.close()
            self.f = None
        self.s.close()


def _unmask(buf, o, i, k, h, hk, mp):
    """Unmask buf[i:i+k] into buf[o:o+k] (o <= i: moving down is safe); the new o."""
    m0 = h[hk + (mp & 3)]
    m1 = h[hk + ((mp + 1) & 3)]
    m2 = h[hk + ((mp + 2) & 3)]
    m3 = h[hk + ((mp + 3) & 3)]
    end = i + k
    while end - i >= 4:
        buf[o] = buf[i] ^ m0
        buf[o + 1] = buf[i + 1] ^ m1
        buf[o + 2] = buf[i + 2] ^ m2
        buf[o + 3] = buf[i + 3] ^ m3
        i += 4
        o += 4
    if i < end:
        buf[o] = buf[i] ^ m0
        o += 1
        i += 1
        if i < end:
            buf[o] = buf[i] ^ m1
            o += 1
            i += 1
            if i < end:
                buf[o] = buf[i] ^ m2
                o += 1
    return o
