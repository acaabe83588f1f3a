"""TLS: the server-side ssl.SSLContext of one listener, from its certfile, keyfile and optional
cafile / require_certificate settings, and the PEM-to-DER reading of those files that a
bridge's bridge_cafile shares. Imported only when a listener or a bridge has TLS, and dropped
from the heap again once the contexts are made (forget): ~2 kB of code needed once.

The files may be PEM or DER. MicroPython's mbedTLS takes DER only (the unix port answers
"invalid key" to a PEM key, "invalid cert" to a PEM CA certificate), so PEM is turned into
DER here: the base64 between the first BEGIN/END lines. Encrypted keys are not supported;
cafile holds one CA certificate."""

import binascii
import ssl


def der(path):
    """The DER bytes of the first PEM block in path, or the file as it is if it is DER."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError("cannot read %s: %s" % (path, e))
    start = data.find(b"-----BEGIN ")
    if start < 0:
        return data
    if b"ENCRYPTED" in data[start:start + 40]:
        raise ValueError("%s: encrypted keys are not supported; write it without a passphrase" % path)
    body = data.find(b"\n", start) + 1
    end = data.find(b"-----END ", body)
    if body <= 0 or end < 0:
        raise ValueError("%s: PEM block without its END line" % path)
    try:
        return binascii.a2b_base64(data[body:end].replace(b"\r", b"").replace(b"\n", b""))
    except ValueError:
        raise ValueError("%s: bad base64 in the PEM block" % path)


def contexts(tls):
    """{listener index: SSLContext} for the config's {listener index: settings}."""
    return {i: context(tls[i]) for i in tls}


def context(opts):
    """An SSLContext for a listener's settings; ValueError says which file is wrong."""
    if "certfile" not in opts or "keyfile" not in opts:
        raise ValueError("a TLS listener needs both certfile and keyfile")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert, key = der(opts["certfile"]), der(opts["keyfile"])
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ValueError) as e:
        raise ValueError("certfile %s / keyfile %s: %s" % (opts["certfile"], opts["keyfile"], e))
    if opts.get("require_certificate"):
        if not opts.get("cafile"):
            raise ValueError("require_certificate true needs a cafile to check client certificates against")
        ca = der(opts["cafile"])
        try:
            ctx.load_verify_locations(cadata=ca)
        except (OSError, ValueError) as e:
            raise ValueError("cafile %s: %s" % (opts["cafile"], e))
        ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]  # the stubs lack it; the port has it
    return ctx

