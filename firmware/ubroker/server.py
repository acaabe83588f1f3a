"""The one loop: accepting connections (listen.py opens the listening sockets), non-blocking
connections on select.poll, reading in chunks into one shared buffer and parsing in place,
flushing each connection's output in one write, pausing publishers that must wait
(backpressure), keepalive and connect timeouts, and the periodic $SYS report. No exception
from one connection leaves this module."""

import gc
import select
import sys
import time

from micropython import const

from . import forget
from .broker import Broker
from .buffers import rebuild, table
from .codec import Malformed, decode_length
from .protocol import Protocol
from .session import Conn

# select's POLLIN, POLLOUT, POLLERR | POLLHUP: the same bits on every port (MicroPython's
# stream poll flags on the boards, poll(2)'s on Linux), as consts: no global each
_IN = const(1)
_OUT = const(4)
_ERR = const(8 | 16)
# A connection still without CONNECT this long after its handshake is not a client of a
# reconnecting fleet that is merely behind (those send it within a round trip or two).
_SILENT_MS = const(2000)
# accept() found nothing waiting: the one failure that is not a shortage of sockets.
_EAGAIN = const(11)


class Server:
    sensors = None  # the sensor scheduler (sensors.py), only when sensor_interval > 0

    def __init__(self, cfg, log):
        self.cfg = cfg
        self.log = log
        self.now = time.ticks_ms()
        self.started = self.now
        self.broker = b = Broker(cfg, log, self.write_out)
        # One read buffer for all connections: what a connection carried over (at most one
        # incomplete packet, or what a paused publisher sent) plus one read of at most
        # read_buffer_size bytes. Allocated before the store and the sensors are set up:
        # their start-up code leaves holes when it goes (ubroker.forget), and a 100k heap with
        # 20 kB free then had no 2.5 kB block for it (esp32 profile, 9 clients, four sensors).
        # max_packet_size 0 is Mosquitto's default, no limit announced: a packet longer than
        # rbuf's share (read_buffer_size) then arrives in a buffer of its own (_long), up to
        # max_queued_bytes, the most the broker would hold of messages anyway.
        self.chunk = cfg["read_buffer_size"]
        # max_packet_size counts the whole packet, as Mosquitto's key and MQTT 5's Maximum
        # Packet Size do (section 3.1.2.11.4); max_packet is the longest remaining length in
        # rbuf: what is left after the first byte and the length's own 1 to 4 bytes
        mp = cfg["max_packet_size"]
        if mp:
            k = 1
            while mp - 1 - k >= 1 << (7 * k):
                k += 1
            self.max_packet = max(0, mp - 1 - k)
        else:
            self.max_packet = self.chunk
        self.rbuf = bytearray(self.max_packet + 5 + self.chunk)
        self.rmv = memoryview(self.rbuf)
        # What a read fills when nothing was carried over (the usual case), made once: a
        # slice of rmv per read was a 16 B heap block per packet on 32 bits (tools/heap32)
        self.rfirst = self.rmv[: self.chunk]
        self.persist = None
        if cfg["persistence"] and cfg["persistence_location"]:
            from .store_persist import Persist

            self.persist = b.persist = Persist(b, cfg["persistence_location"], cfg, log)
        # The $SYS report (sysinfo.py, 3.5 kB of heap on the esp32 profile) is loaded at its
        # first use (sysinfo()): most brokers are never asked for it.
        self.sys = None
        b.sys_report = self.sysinfo
        if cfg.get("sensor_interval"):  # imported only when on: no heap for it otherwise
            from .sensors import Sensors

            self.sensors = Sensors(self)
        # A paused publisher is still read (for its acks) while it carries under one read's
        # worth, so a carry never outgrows a pool buffer (2 reads).
        self.rx_limit = self.chunk
        self.poll = select.poll()
        self.listeners = []
        self.conns = table(b.max_sockets)  # socket -> Conn
        self.gone = 0  # connections closed since conns was built (see buffers.rebuild)
        # After the large blocks: with passwords or rules, files are read and parsed here,
        # and what the parsing leaves behind must not split the heap before them.
        self.proto = Protocol(b, self)
        self.gate = None  # accept-time policies some configurations need (sec_gate.py)
        if cfg["max_connection_rate"] or cfg["tls"]:
            from .sec_gate import Gate

            self.gate = Gate(self)  # ValueError for a bad TLS file, before anything listens
        self.ws = None  # the WebSockets listeners (ws_frame.Ws; listen.py), if configured
        self.paused = []
        self.running = False
        self.bridges = ()  # bridge.py, imported only when a `connection` is configured

    # ------------------------------------------------------------------ sockets

    def listen(self):
        from .listen import listen

        listen(self)
        forget("listen")  # start-up code: its heap is better spent on clients

    def accept(self, ls):
        cfg = self.cfg
        st = self.broker.stats
        conns = self.conns
        limit = self.broker.max_sockets
        # At most half the half-open limit per loop pass: what was accepted gets a pass to be
        # read before a flood's newer sockets can make it the oldest and displace it (seen:
        # a client accepted early in one long accept loop closed before its CONNECT was read).
        fresh = []  # accepted in this call: not read yet, so never the ones to displace
        for _ in range(max(1, cfg["max_half_open_connections"] // 2)):
            try:
                s, addr = ls.accept()
            except Exception as e:  # OSError or MemoryError (a tuple of types would allocate)
                if isinstance(e, OSError) and e.args[0] == _EAGAIN:
                    return
                # No socket, or no memory for one, in the stack or the process (EMFILE or
                # ENFILE on the unix port, ECONNABORTED from ESP32's lwIP once its sockets are
                # all taken, MemoryError for the socket object). The connection left waiting
                # keeps the listener readable: polled, it would wake every pass (a busy loop,
                # measured: 0.7 of a core). So it rests until the next tick, which puts it
                # back (0 to 1 s; at most two failures a second), while the clients already
                # connected are served; the waiting one gets in once one of them leaves.
                st.hit("accept_failed")
                self.poll.modify(ls, 0)
                return
            raw = s
            if self.gate is not None:  # connection rate, TLS (sec_gate.py)
                s = self.gate.admit(ls, s)
                if s is None:
                    continue
            n = len(conns)
            full = n >= limit
            if full or n - st.connected >= cfg["max_half_open_connections"]:
                # The table is full, or holds enough connections without CONNECT: the one
                # waiting longest for its CONNECT makes room, so a flood of silent sockets only
                # displaces itself. Below a full table only one silent for longer than a client
                # needs is taken: a fleet reconnecting at once sends its CONNECTs some ms after
                # the handshakes (100 at a time: 84 of each 100 were lost). Without one there is
                # no room even to say CONNACK 3. One paused for its password check stays.
                old = None
                for c in conns.values():
                    if c.sess is None and not c.paused and c.bridge is None and c not in fresh and \
                            (old is None or time.ticks_diff(old.last, c.last) > 0):
                        old = c
                if old is not None and (full or time.ticks_diff(self.now, old.last) > _SILENT_MS):
                    st.hit("half_open")
                    self.close(old, "closed: too many connections without CONNECT", False)
                elif full:
                    st.hit("sockets")
                    s.close()
                    continue
            s.setblocking(False)
            try:
                s.setsockopt(6, 1, 1)  # TCP_NODELAY: each packet goes out at once
            except (OSError, AttributeError):
                pass
            try:
                c = Conn(s if self.ws is None else self.ws.wrap(ls, s), self.now)  # s is polled
                if s is not raw:
                    # TLS: the wrapper, once its read failed, does not close the TCP socket
                    # under it; close() closes both (an fd a failed handshake leaked)
                    c.raw = raw
                if self.proto.guard is not None:  # to slow down an address that keeps failing
                    # a tuple on boards; on the unix port a sockaddr: IPv4 at 4..8, IPv6 at 8..24
                    c.verify = addr[0] if type(addr) is tuple else bytes(addr[4:8] if addr[0] == 2 else addr[8:24])
                self.poll.register(s, _IN)
            except MemoryError:
                self.broker.stats.hit("memory")
                s.close()
                raw.close()
                gc.collect()
                continue
            if self.gone > limit >> 1:
                self.gone = 0
                self.conns = conns = rebuild(conns, limit)
            conns[s] = c
            fresh.append(c)

    def close(self, c, why, abnormal=True, flush=False):
        s = c.sock
        if s is None:
            return
        if flush and c.out:
            try:
                s.write(c.out)
            except OSError:
                pass
        # What conns and the poll know it by: a WebSocket's wrapper (ws_frame.WsSock) holds
        # it as .s; a socket has no attribute s.
        k = getattr(s, "s", s)
        self.conns.pop(k, None)
        pool = self.broker.pool
        if c.out is not None:
            pool.give(c.out)
            c.out = None
        if c.rx is not None:
            pool.give(c.rx)
            c.rx = None
        if c.big is not None:  # a long packet's buffer (long_packet.py) not kept by a Conn held on to
            c.big = None
        if c.acks is not None:
            c.acks = None
        try:
            self.poll.unregister(k)
        except (OSError, ValueError, KeyError):
            pass
        c.sock = None
        s.close()
        if c.raw is not None:
            c.raw.close()
            c.raw = None
        self.gone += 1
        if c.paused:
            c.paused = False
            self.paused.remove(c)
        self.log_event(c, why)
        self.broker.detach(c, abnormal)
        if c.bridge is not None:
            c.bridge.closed(c, why)

    def goodbye(self, c, code, why):
        """The DISCONNECT a v5 client gets before the server closes its connection, with `why`
        as its Reason String where it fits (V5.told)."""
        try:
            self.broker.send(c, self.broker.v5.told(c, bytes((0xE0, 1, code)), why))  # type: ignore[attr-defined]
        except MemoryError:  # the close matters more than its reason
            pass

    def log_event(self, c, what):
        if self.cfg.get("verbose"):
            s = c.sess
            try:
                self.log("client %s %s" % (s.cid.decode() if s else "?", what))
            except MemoryError:  # a line of log is not worth a connection's state
                pass

    def _mask(self, c):
        m = (_IN if not c.paused or len(c.rx) < self.rx_limit else 0) | (_OUT if c.out else 0)
        if m != c.mask:
            # The usual mask is the class default: an idle connection keeps no field for it.
            if m == _IN:
                del c.mask
            else:
                c.mask = m
            self.poll.modify(getattr(c.sock, "s", c.sock), m)  # see close

    # ------------------------------------------------------------------ input

    def read(self, c):
        have = 0
        rx = c.rx
        if rx is not None:
            have = len(rx)
            self.rbuf[:have] = rx
        keep = None
        if c.paused:
            # What a paused publisher sends is kept, not handled (_acks_only): its buffer is
            # made before the bytes leave the socket, so a heap too fragmented for it delays
            # the read instead of costing the connection (seen on the esp32 profile). Not
            # for good: a heap that stayed too full, from the first failed try on, for longer
            # than the client's keepalive lets it be silent (+ 2 s; 2 s without keepalive)
            # closes it, the reason logged (before, it waited for as long as the heap stayed
            # full: a stall with no end). The failed allocation has already collected the
            # garbage (the allocator does, once, before it raises). When the shortage began
            # is kept in c.paused (True until then): a new field could not be made now.
            try:
                keep = bytearray(have + self.chunk)
            except MemoryError:
                self.broker.stats.hit("memory")
                since = c.paused
                if since is True:
                    c.paused = self.now or 1  # never 0: it stays true
                elif time.ticks_diff(self.now, since) > c.ka + _SILENT_MS:
                    self.close(c, "out of memory")
                return
            keep[:] = b""  # empty, its room kept
            c.paused = True
        try:
            n = c.sock.readinto(self.rmv[have : have + self.chunk] if have else self.rfirst)
        except (OSError, ValueError) as e:  # ValueError: TLS, e.g. a certificate refused
            self.close(c, "read error %s" % str(e).strip())
            return
        if n is None:  # spurious wake-up; c.rx is still as it was
            return
        if rx is not None:
            c.rx = None
            self.broker.pool.give(rx)
        if n == 0:
            self.close(c, "connection closed by the client")
            return
        self.broker.stats.bytes_in += n
        if c.sess is not None:  # before CONNECT, the accept time stays: a byte a second
            c.last = self.now  # must not keep a slowloris past connect_timeout
        self.consume(c, have + n, keep)
        if c.out:  # (none once consume closed it: close() gives c.out back)
            # Its answers (PUBACK, PUBREC, ...) now, not after the other sockets of this pass
            # are read: the client sends its next messages while the broker works on the
            # rest (the same one write per pass; fan-in QoS 1 +30 %, side by side).
            self.write_out(c, True)

    def consume(self, c, have, keep=None):
        """Handle the complete packets in rbuf[:have]; keep the incomplete rest in c.rx. A
        paused connection only has its acknowledgements taken (see _acks_only)."""
        try:
            if c.paused:
                self._acks_only(c, have, keep)
            else:
                # A v5 connection's packets go straight to the v5 handlers (Broker.v5, same
                # calls): Protocol.publish/handle would only pass them on, each with a frame
                # that is a heap block on MicroPython. One test per read, not per packet.
                self._packets(c, have, self.proto if c.v5 is None else self.broker.v5)  # type: ignore[attr-defined]
        except Malformed as e:
            why = "protocol error: %s" % e.args[0]
            if c.v5 is not None:  # DISCONNECT with the reason first (MQTT 5.0 section 4.13)
                self.goodbye(c, e.args[1] if len(e.args) > 1 else 0x81, why)
            self.close(c, why, True, True)
        except MemoryError:
            c.rx = None
            self.broker.stats.hit("memory")
            gc.collect()
            try:
                why = "out of memory (%d bytes free)" % gc.mem_free()
            except MemoryError:  # the heap is that full: even the message has no room
                why = "out of memory"
            self.close(c, why)
            gc.collect()
        except Exception as e:  # a bug must cost one connection, never the broker
            sys.print_exception(e)
            self.close(c, "internal error %r" % e)

    def _packets(self, c, have, proto):
        buf = self.rbuf
        stats = self.broker.stats
        pos = 0
        if c.big is not None:  # (a test per read, not per packet)
            pos = self._long(c, 0, have, proto, 0, 0)
            if pos < 0:
                return
        while have - pos >= 2:
            rl = buf[pos + 1]
            p = pos + 2
            if rl > 127:  # a remaining length of more than one byte
                rl, p = decode_length(buf, pos + 1, have)
                if rl < 0:
                    break
            if rl > self.max_packet:
                if self.cfg["max_packet_size"]:
                    stats.hit("packet_size")
                    raise Malformed("packet of %d bytes exceeds max_packet_size" % (p - pos + rl), 0x95)
                pos = self._long(c, pos, have, proto, rl, p - pos + rl)
                if pos < 0:
                    return
                continue
            end = p + rl
            if end > have:
                break
            b0 = buf[pos]
            # PUBLISH from a connected client, the usual packet, skips the dispatch
            if b0 >> 4 == 3 and c.sess is not None:
                ok = proto.publish(c, b0, buf, p, end)
            elif b0 == 0x40 and c.v5 is None and c.sess is not None:  # and PUBACK (see puback)
                ok = proto.puback(c, buf, p, end)
            else:
                ok = proto.handle(c, b0, buf, p, end)
            if not ok:
                self._carry(c, pos, have)
                self.pause(c)
                return
            stats.msgs_in += 1
            if c.sock is None:
                return
            pos = end
        if pos < have:
            self._carry(c, pos, have)

    def _long(self, c, pos, have, proto, rl, n):
        """A packet longer than rbuf takes, with no max_packet_size (long_packet.py, loaded at
        the first one: a board with a limit never loads it)."""
        from .long_packet import take

        return take(self, c, pos, have, proto, rl, n)

    def _carry(self, c, pos, have):
        rx = self.broker.pool.take()
        rx.extend(self.rmv[pos:have])
        c.rx = rx

    def _acks_only(self, c, have, keep=None):
        """While a publisher waits for room, keep taking its PUBACK/PUBREC/PUBREL/PUBCOMP and
        PINGREQ, which may come after the waiting PUBLISH: a client that subscribes to what it
        publishes would otherwise never acknowledge the messages that would make the room.
        Every other packet keeps its place behind the waiting one."""
        buf = self.rbuf
        mv = self.rmv
        if c.big is None:
            rl, p = decode_length(buf, 1, have)
            pos = p + rl  # the waiting PUBLISH, always complete
        else:
            pos = 0  # the waiting PUBLISH is c.big
        if keep is None:
            keep = self.broker.pool.take()
        keep.extend(mv[:pos])
        while have - pos >= 2:
            rl, p = decode_length(buf, pos + 1, have)
            if rl < 0 or rl > self.max_packet or p + rl > have:
                break
            end = p + rl
            t = buf[pos] >> 4
            if 4 <= t <= 7 or t == 12:
                self.proto.handle(c, buf[pos], buf, p, end)
                self.broker.stats.msgs_in += 1
                if c.sock is None:
                    return
            else:
                keep.extend(mv[pos:end])
            pos = end
        keep.extend(mv[pos:have])
        c.rx = keep
        self._mask(c)

    def pause(self, c):
        """Stop reading from a publisher whose message has nowhere to go yet; its
        acknowledgement is withheld until subscribers make room (backpressure)."""
        if not c.paused:
            c.paused = True
            self.paused.append(c)
            if c.sess is not None:  # else a CONNECT waiting for its password check
                self.broker.stats.hit("backpressure")
            self._mask(c)

    def resume(self):
        b = self.broker
        while b.freed and self.paused:
            b.freed = False
            for c in list(self.paused):
                if c.sock is None or not c.paused:
                    continue
                c.paused = False
                self.paused.remove(c)
                rx = c.rx
                c.rx = None
                c.last = self.now
                n = len(rx)
                self.rbuf[:n] = rx
                self.broker.pool.give(rx)
                self.consume(c, n)
                if c.sock is not None:
                    self._mask(c)
        b.freed = False

    # ------------------------------------------------------------------ output

    def flush(self):
        """Write every listed connection. Writing one can fill another's output (a write
        error closes a connection whose will goes out; a drained one is refilled from its
        queue): those are listed behind the cursor and written in this same flush, including
        one written earlier in it (what fills a connection in its own write asks for POLLOUT,
        write_out's _mask). Nothing is taken off the list unwritten: if a write raises
        (MemoryError), that connection and the rest stay listed for the next pass."""
        b = self.broker
        dirty = b.dirty
        while b.fcur < b.ndirty:
            c = dirty[b.fcur]
            self.write_out(c, True)
            i = b.fcur  # again: listing others may have moved the list up (mark_dirty)
            dirty[i] = None
            b.fcur = i + 1
            c.listed = False
        b.ndirty = b.fcur = 0

    def write_out(self, c, may_close, data=None):
        """Send what c has waiting (or data, from the broker's scratch buffer, which must not
        be kept), as far as its socket takes it. In the middle of routing (may_close False)
        a write error only leaves the bytes for the next flush, which then closes: closing
        there would change the subscriber lists being walked."""
        out = c.out if data is None else data
        if c.sock is None:
            return
        if out:
            try:
                n = c.sock.write(out)
            except (OSError, ValueError) as e:
                if may_close:
                    self.close(c, "write error %s" % e)
                    return
                n = 0
            if n is None:
                n = 0
            self.broker.stats.bytes_out += n
            if data is not None:
                if n < len(data):  # the socket is full: keep the rest in a buffer of its own
                    c.out = bytearray(memoryview(data)[n:])
                    self.broker.mark_dirty(c)
                    self._mask(c)
                return
            if n == len(out):
                c.out = None
                self.broker.pool.give(out)
            elif n:
                if len(out) > self.broker.pool.most:
                    # It held a long packet (long_packet.py): its rest in a buffer of that size,
                    # so the pool never keeps the long one's room (Pool.give)
                    c.out = bytearray(memoryview(out)[n:])
                else:
                    out[:n] = b""
        elif not may_close:
            return
        if may_close and not c.out:
            # Drained: QoS 1/2 messages that waited for it (Broker.deliver) go now; what they
            # write goes out with the next pass (_mask asks for POLLOUT).
            s = c.sess
            if s is not None and s.queue and s.conn is c:
                self.broker.refill(s)
        self._mask(c)

    # ------------------------------------------------------------------ timers

    def tick(self):
        """Once a second: keepalive (MQTT-3.1.2-24), connect timeouts, $SYS, sensors."""
        now = self.now
        limit = self.cfg["connect_timeout"] * 1000
        late = None
        for c in self.conns.values():
            if c.paused:
                continue
            idle = time.ticks_diff(now, c.last)
            up = c.sess is not None
            if (up and c.ka and idle > c.ka) or (not up and idle > limit):
                if late is None:
                    late = []
                late.append(c)
        if late:
            for c in late:
                if c.sess is not None:
                    if c.v5 is not None:  # Keep Alive timeout (MQTT 5.0 section 3.1.2.10)
                        self.goodbye(c, 0x8D, "keepalive expired")
                    self.close(c, "keepalive expired", True, True)
                else:
                    self.close(c, "no CONNECT/CONNACK within connect_timeout", False)
        for ls in self.listeners:  # back from a rest after a failed accept, if any
            self.poll.modify(ls, _IN)
        for br in self.bridges:
            br.tick(now)
        self.broker.stats.carry()
        self.broker.tick(now)
        if self.sys is not None or self.broker.index.sys:
            self.sysinfo().tick(now)
        if self.sensors is not None:
            self.sensors.tick(now)

    def sysinfo(self):
        """The $SYS report (sysinfo.SysInfo), loaded at its first use: the first tick after a
        filter that starts with $ was subscribed (Index.sys: until then there is nobody to
        publish the figures to), a $SYS subscription's current values (Broker.send_retained),
        the status page (web.py). Until then it takes no heap: 3.5 kB on the esp32 profile."""
        si = self.sys
        if si is None:
            from .sysinfo import SysInfo

            si = self.sys = SysInfo(self)
        return si

    # ------------------------------------------------------------------ loop

    def serve(self):
        if self.persist is not None:
            self.persist.start(self.proto)
        if self.cfg.get("connection"):
            from .bridge import start_all

            start_all(self)
        self.listen()
        t = self.cfg.get("gc_threshold")
        if t:
            # Collect after every t bytes allocated instead of when the heap is full: in a
            # large heap the allocator scans past all the garbage for each multi-block
            # allocation (a frame is one): 55-65 % of the CPU on the unix port; 2M here
            # took the round trip from ~140 to ~90 us.
            gc.threshold(t)
        self.running = True
        self.next_tick = time.ticks_add(time.ticks_ms(), 1000)
        try:
            while self.running:
                try:
                    self.one_pass()
                except MemoryError:
                    # Outside any one connection's handling (that has its own guard): drop
                    # the garbage and carry on; the next pass retries.
                    self.broker.stats.hit("memory")
                    gc.collect()
                    try:
                        self.log("out of memory in the loop (%d bytes free)" % gc.mem_free())
                    except MemoryError:
                        pass
                except Exception as e:
                    sys.print_exception(e)
        finally:
            self.shutdown()

    def one_pass(self):
        conns = self.conns
        b = self.broker
        g = self.proto.guard
        ready = None
        for ev in self.poll.ipoll(g.step() if g is not None and g.verifying else 200):
            s = ev[0]
            c = conns.get(s)
            if c is None:
                if s in self.listeners:
                    if ready is None:
                        ready = [s]
                    else:
                        ready.append(s)
                continue
            flags = ev[1]
            if flags & _OUT and c.out:
                b.mark_dirty(c)
            if flags & (_IN | _ERR):
                self.read(c)
        if ready is not None:
            # New sockets after this pass's reads: a client accepted in the last pass has its
            # CONNECT read before a flood's newer sockets can make it the oldest half-open one.
            for s in ready:
                self.accept(s)
        self.now = time.ticks_ms()
        if b.freed:
            self.resume()
        p = self.persist
        if p is not None:
            p.tick(self.now)
            p.commit()  # group commit: one flush for all this pass took on
        if b.ndirty:
            self.flush()
        if time.ticks_diff(self.now, self.next_tick) >= 0:
            self.next_tick = time.ticks_add(self.now, 1000)
            self.tick()
            if b.ndirty:
                self.flush()

    def shutdown(self):
        """Send what is waiting and close every socket (v5_protocol.V5.shutdown comes first
        once a v5 client has come). Nothing here allocates: a SIGINT can arrive while the
        heap is locked, and stopping must work then too. The store's last lazy records
        (deliveries done) are written if the heap allows; if not, those messages are only
        sent again after the restart, which QoS 1/2 permits."""
        if self.persist is not None:
            try:
                self.persist.store.commit()
            except Exception:
                pass
        conns = self.conns
        for k in conns:  # not conns.values(): a view is an allocation
            c = conns[k]
            s = c.sock
            try:
                if c.out:
                    s.write(c.out)
            except Exception:  # also MemoryError: a WebSocket's write may need the heap
                pass
            try:
                s.close()
                if c.raw is not None:
                    c.raw.close()
            except OSError:
                pass
        conns.clear()
        for s in self.listeners:
            s.close()
