"""Accept-time policies that only some configurations need, kept out of the server's heap
otherwise: the connection rate limit (max_connection_rate) and TLS listeners (their contexts,
and wrapping each accepted socket). Imported when either is configured."""

import time


class Gate:
    def __init__(self, server):
        self.server = server
        cfg = server.cfg
        self.rate = cfg["max_connection_rate"]
        self.accepts = 0  # accepted in the second that began at `window`
        self.window = server.now
        self.tls = {}  # listening socket -> ssl.SSLContext
        self.contexts = {}  # listener index -> ssl.SSLContext
        if cfg["tls"]:
            import ubroker
            from . import sec_tls

            try:
                self.contexts = sec_tls.contexts(cfg["tls"])  # ValueError names a bad file
            finally:
                ubroker.forget("sec_tls")  # the contexts made, its code is not needed again

    def listening(self, i, s):
        ctx = self.contexts.get(i)
        if ctx is not None:
            self.tls[s] = ctx
            self.server.log("listener %d is TLS" % (i + 1))

    def admit(self, ls, s):
        """The accepted socket to serve (wrapped for TLS), or None when it was closed."""
        sv = self.server
        if self.rate:
            if time.ticks_diff(sv.now, self.window) >= 1000:
                self.window = sv.now
                self.accepts = 0
            self.accepts += 1
            if self.accepts > self.rate:
                sv.broker.stats.hit("connection_rate")
                s.close()
                return None
        ctx = self.tls.get(ls)
        if ctx is None:
            return s
        s.setblocking(False)
        try:
            s.setsockopt(6, 1, 1)  # TCP_NODELAY, before the wrapper hides the socket
        except OSError:
            pass
        try:
            # The handshake happens in the reads that follow, driven by poll like any input.
            return ctx.wrap_socket(s, server_side=True, do_handshake_on_connect=False)
        except Exception as e:  # OSError, MemoryError (a tuple of types would allocate)
            sv.broker.stats.hit("tls")
            sv.log("TLS: new connection refused: %r" % (e,))
            s.close()
            return None
