"""The `connect_tls` scenario's parts, which the C load generator lacks: throwaway certificates
made with the openssl command, and a CPython ssl client counting complete MQTT sessions over TLS
per second, the same client for every broker."""

import os
import socket
import ssl
import subprocess
import threading
import time

from .bench_rawmqtt import connect_packet

TLS_CONC = 4


def tls_certs(out):
    """A CA and a server certificate for 127.0.0.1 signed by it (EC P-256), made once with the
    openssl command in OUT/tls; both brokers get the same files."""
    d = os.path.join(os.path.abspath(out), "tls")
    if os.path.exists(os.path.join(d, "server.pem")):
        return d
    os.makedirs(d, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*a):
        subprocess.run(["openssl"] + list(a), cwd=d, check=True, capture_output=True)

    run("req", "-x509", *ec, "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "30", "-subj", "/CN=bench CA")
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    run("req", "-new", *ec, "-keyout", "server-key.pem", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
        "-out", "server.pem", "-days", "30", "-extfile", "san.ext")
    # Throwaway test keys: readable, since Mosquitto started as root reads them as its own user
    for name in os.listdir(d):
        os.chmod(os.path.join(d, name), 0o644)
    os.chmod(d, 0o755)
    return d


def tls_connects(port, cafile, seconds, conc=TLS_CONC):
    """Complete MQTT sessions over TLS per second: TCP connect, handshake (the server's
    certificate verified), CONNECT, CONNACK 0, DISCONNECT; conc client threads for `seconds`.
    The client is CPython's ssl, the same for every broker."""
    ctx = ssl.create_default_context(cafile=cafile)
    done = [0] * conc
    failed = [0] * conc
    errors = []
    stop = time.time() + seconds

    def worker(i):
        n = 0
        while time.time() < stop:
            n += 1
            connect = connect_packet(b"tls-%d-%d" % (i, n))
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                    # each small packet at once, as the load generator does
                    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                        s.sendall(connect)
                        got = b""
                        while len(got) < 4:
                            chunk = s.recv(4 - len(got))
                            if not chunk:
                                raise OSError("closed before CONNACK")
                            got += chunk
                        if got != b"\x20\x02\x00\x00":
                            raise OSError("CONNACK %r" % got)
                        s.sendall(b"\xe0\x00")
                done[i] += 1
            except (OSError, ssl.SSLError) as e:
                failed[i] += 1
                if len(errors) < 3:
                    errors.append(str(e))

    t0 = time.time()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    span = time.time() - t0
    out = {"rate": round(sum(done) / span, 1), "connects": sum(done), "failed": sum(failed),
           "client": "CPython ssl, %d threads" % conc}
    if errors:
        out["first_error"] = errors[0]
    return out
