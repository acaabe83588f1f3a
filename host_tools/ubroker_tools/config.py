"""`ubroker config`: write a commented default config for a board, or check one with the
firmware's own parser (so line numbers match what the board reports) and against the board's
heap budget."""

import argparse
import os
import subprocess
import sys

from . import budget, paths, profiles

HELP = """Create or check a ubroker config file (mosquitto.conf form: `key value`, # comments).

example:
  ubroker config --board esp32 --init ubroker.conf    # commented defaults for the board
  ubroker config --board esp32 --check ubroker.conf   # errors with line numbers; exit 1 if any
"""

TEMPLATE = """# ubroker config for board {board} ({description}).
# One `key value` per line, # starts a comment; Mosquitto's keys where they exist.
# Check it with:  ubroker config --board {board} --check THIS_FILE

# --- network (boards) ---------------------------------------------------------------------
# The WiFi network to join. Without wifi_ssid the board does not start WiFi.
#wifi_ssid my-network
#wifi_password my-secret
# If joining fails, open an access point instead (omit both to keep retrying the station).
#wifi_ap_ssid ubroker
#wifi_ap_password at-least-8-chars
#hostname ubroker

# --- listeners ----------------------------------------------------------------------------
# listener PORT [ADDRESS]; repeat for more than one. 0.0.0.0 listens on every interface.
listener 1883 0.0.0.0

# --- clients and security (README, "Security") -------------------------------------------
# Listening beyond 127.0.0.1 needs users (password_file) or allow_anonymous true said outright.
allow_anonymous true
# Users: `ubroker passwd users.txt NAME`; with a password_file, anonymous clients are refused
# unless allow_anonymous true.
#password_file users.txt
# Access rules in Mosquitto's acl_file form (user / topic read|write|readwrite|deny / pattern).
#acl_file acl.txt
# TLS on a second listener: the four keys apply to the listener declared just before them.
#listener 8883 0.0.0.0
#certfile server-cert.pem
#keyfile server-key.pem
#cafile ca.pem
#require_certificate false
# Connections accepted per second (0 = no limit); connections still without CONNECT.
#max_connection_rate 0
#max_half_open_connections 16
#max_keepalive 65535
#connect_timeout 10

# --- limits (the board profile sets these from its heap budget; lower them here freely,
# raising them is checked against heap_budget {heap_budget}) -----------------------------
#max_connections {max_connections}
#max_subscriptions {max_subscriptions}
#max_inflight_messages {max_inflight_messages}
#max_queued_messages {max_queued_messages}
#max_packet_size {max_packet_size}

# --- persistence --------------------------------------------------------------------------
#persistence true
#persistence_location {flash_store}

# --- $SYS report every N seconds (0 = off) ---------------------------------------------------
sys_interval 10

# --- local sensors (README "Sensors"): off while sensor_interval is 0 -------------------------
# Readings every N seconds to PREFIX/NAME (default ubroker/HOSTNAME-or-board/sensor/NAME).
# The board's sensors: {sensors}. `sensor` lines here replace that list.
# The sensors' code takes heap when on: `--check` says if the limits leave room for it.
#sensor_interval 10
#sensor_prefix ubroker/{board}/sensor
#sensor_qos 0
#sensor_retain false
#sensor bme280 i2c=0 scl=22 sda=21 addr=0x76

# --- bridge to an upstream broker (keep this section last: its keys belong to the connection
# above them) ----------------------------------------------------------------------------------
#connection cloud
#address broker.example.net:8883
#remote_clientid {board}-gateway-1
#bridge_cafile /ca.pem
# topic PATTERN [in|out|both [QOS [LOCAL_PREFIX REMOTE_PREFIX]]]
#topic sensors/# out 1
#topic cmd/# in 1
"""


def add_parser(sub):
    p = sub.add_parser("config", help="create or check a config file", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--board", default="unix", help="board whose profile and budget apply (default unix)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--check", metavar="FILE", help="validate FILE; exit 1 on any mistake")
    g.add_argument("--init", metavar="FILE", help="write a commented default config to FILE")
    p.add_argument("--force", action="store_true", help="with --init: overwrite an existing file")
    p.set_defaults(func=main)


def default_config(board):
    prof = profiles.load_board(board)
    return TEMPLATE.format(**dict(prof, description=prof.get("description", board),
                                  flash_store=prof.get("flash_store", "data"),
                                  sensors=", ".join(prof.get("sensor", [])) or "none"))


def check(board, path):
    """[messages] for the config at path; empty when it is fine."""
    cfgmod = profiles.fwconfig()
    prof = profiles.load_board(board)
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        return ["%s: cannot read: %s" % (path, e.strerror)]
    try:
        user = cfgmod.parse(text, path)
    except cfgmod.ConfigError as e:
        return list(e.errors)
    problems = []

    def line_of(key):
        for no, line in enumerate(text.split("\n"), 1):
            words = line.split("#", 1)[0].split()
            if words and words[0] == key:
                return no
        return 0

    for key in ("board", "arch", "heap_budget", "usb_id", "flash_store", "pin"):
        if key in user:
            problems.append("%s:%d: %s belongs in the board profile (boards/%s.conf), not in the user config; "
                            "remove the line" % (path, line_of(key), key, board))
    if "wifi_password" in user and "wifi_ssid" not in user:
        problems.append("%s:%d: wifi_password without wifi_ssid; add `wifi_ssid NAME`"
                        % (path, line_of("wifi_password")))
    if "wifi_ap_ssid" in user:
        pw = user.get("wifi_ap_password", "")
        if pw and len(pw) < 8:
            problems.append("%s:%d: wifi_ap_password must have at least 8 characters (WPA2), or omit it "
                            "for an open access point" % (path, line_of("wifi_ap_password")))
    if "wifi_ssid" in user and prof.get("wifi", "none") == "none":
        problems.append("%s:%d: board %s has no WiFi; remove the wifi_* lines" % (path, line_of("wifi_ssid"), board))
    for br in user.get("connection", ()):
        ca = br.get("bridge_cafile")
        if ca is not None and not os.path.isfile(ca):
            problems.append("%s:%d: connection %s: bridge_cafile %s does not exist" % (path, br["line"], br["name"], ca))
    cfg = cfgmod.resolve(prof, user)
    problems += security_problems(cfgmod, path, user, cfg, line_of)
    ok, need, have = budget.fits(cfg)
    # A profile that itself overcommits (see tests/test_boards.py) is the board's problem,
    # not the user's: only what the user raises beyond it is reported.
    if not ok and need > budget.total(prof):
        raised = [k for k in user if k in prof and isinstance(prof[k], int) and user[k] > prof[k]]
        where = ", ".join("%s (line %d, board value %d)" % (k, line_of(k), prof[k]) for k in raised)
        if user.get("sensor_interval"):
            where = (where or "the limits") + " (max_connections, say), or turn the sensors off " \
                "(sensor_interval, line %d: their code takes heap)" % line_of("sensor_interval")
        problems.append("%s: these limits need %d bytes of heap but board %s has heap_budget %d; lower %s"
                        % (path, need, board, have, where or "the limits"))
    return problems


def security_problems(cfgmod, path, user, cfg, line_of):
    """The refusal to open beyond loopback without users, the password_file and acl_file (with
    the firmware's parsers) and each TLS listener's files (loaded by the firmware's tls.py in
    the MicroPython unix port, whose mbedTLS is the one boards use). Paths are taken as the
    broker takes them: relative to the directory it runs in."""
    out = []
    msg = cfgmod.open_problem(cfg)
    if msg:
        out.append("%s: %s" % (path, msg))
    from ubroker import secfiles

    for key, parse in (("password_file", secfiles.passwords), ("acl_file", secfiles.acl)):
        if key in user:
            try:
                parse(secfiles.read(user[key], key), user[key])
            except ValueError as e:
                out.append("%s:%d: %s" % (path, line_of(key), e.args[0]))
    for i in sorted(cfg["tls"]):
        opts = cfg["tls"][i]
        where = "%s: listener %d (port %d)" % (path, i + 1, cfg["listener"][i][0]) if i < len(cfg["listener"]) \
            else "%s: TLS settings without their listener" % path
        missing = [k for k in ("certfile", "keyfile") if k not in opts]
        if opts.get("require_certificate") and "cafile" not in opts:
            missing.append("cafile (require_certificate true)")
        if missing:
            out.append("%s needs %s" % (where, " and ".join(missing)))
            continue
        unreadable = [opts[k] for k in ("certfile", "keyfile", "cafile") if k in opts and not os.access(opts[k], os.R_OK)]
        if unreadable:
            out.append("%s: cannot read %s" % (where, ", ".join(unreadable)))
            continue
        err = tls_error(opts) or pair_error(opts)
        if err:
            out.append("%s: %s" % (where, err))
    return out


def _pem(path, labels):
    """path's text as PEM: as it is, or its DER wrapped under the first label CPython takes."""
    import base64

    with open(path, "rb") as f:
        data = f.read()
    if b"-----BEGIN " in data:
        return [data.decode("ascii", "replace")]
    b64 = base64.encodebytes(data).decode()
    return ["-----BEGIN %s-----\n%s-----END %s-----\n" % (lab, b64, lab) for lab in labels]


def pair_error(opts):
    """mbedTLS loads a certificate with any key (the handshakes then fail): CPython's ssl checks
    that the key is the certificate's."""
    import ssl
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        cert = os.path.join(d, "cert.pem")
        with open(cert, "w") as f:
            f.write(_pem(opts["certfile"], ["CERTIFICATE"])[0])
        err = None
        for text in _pem(opts["keyfile"], ["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"]):
            key = os.path.join(d, "key.pem")
            with open(key, "w") as f:
                f.write(text)
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
                return None
            except ssl.SSLError as e:
                err = "certfile %s / keyfile %s: %s" % (opts["certfile"], opts["keyfile"], e.reason or e)
    return err


def tls_error(opts):
    """What the firmware's tls.context() says of these files in the unix port, or None."""
    mp = paths.micropython()
    if not mp:
        return None
    script = "from ubroker.tls import context\ncontext(%r)\n" % dict(opts)
    env = dict(os.environ, MICROPYPATH=paths.FIRMWARE + os.pathsep + ".frozen")
    r = subprocess.run([mp, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    if r.returncode == 0:
        return None
    lines = (r.stderr or r.stdout).strip().splitlines()  # the port prints its traceback on stdout
    return lines[-1].split(": ", 1)[-1] if lines else "TLS check failed (exit %d)" % r.returncode


def main(args):
    try:
        if args.init:
            if os.path.exists(args.init) and not args.force:
                print("ubroker config: %s exists; pass --force to overwrite it" % args.init, file=sys.stderr)
                return 1
            text = default_config(args.board)
            with open(args.init, "w") as f:
                f.write(text)
            print("wrote %s for board %s; edit it, then: ubroker config --board %s --check %s"
                  % (args.init, args.board, args.board, args.init))
            return 0
        problems = check(args.board, args.check)
    except profiles.UnknownBoard as e:
        print("ubroker config: %s" % e, file=sys.stderr)
        return 2
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        print("%d problem%s in %s" % (len(problems), "" if len(problems) == 1 else "s", args.check), file=sys.stderr)
        return 1
    print("%s: OK for board %s" % (args.check, args.board))
    return 0
