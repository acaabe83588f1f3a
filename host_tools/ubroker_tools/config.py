"""`ubroker config`: write a commented default config for a board, or check one with the
firmware's own parser (so line numbers match what the board reports), against the board's
heap budget and against the sockets its stock firmware's network stack holds (sockets.py)."""

import argparse
import os
import shlex
import subprocess
import sys

from . import budget, paths, profiles, sockets

HELP = """Create or check a ubroker config file (mosquitto.conf form: `key value`, # comments).

The template is closed by default, as Mosquitto 2's: it listens on the network but only for
the users of its password_file (create it with `ubroker passwd`); anonymous access is a
commented-out line. --check fails on mistakes and warns (exit 0) when allow_anonymous true
leaves a listener beyond 127.0.0.1 open to anyone on the network. It also fails when the
clients, listeners and bridges ask for more sockets than the board's stock MicroPython can
open (an ESP32 has 10, a Pico W 5 TCP connections): the heap is not what runs out first.

Files the config names (password_file, acl_file, certfile, keyfile, cafile, bridge_cafile):
a relative path is looked up beside the config file, where `ubroker flash` takes it from;
with --board unix, in the current folder, where `ubroker run` opens it.

example:
  ubroker config --board esp32 --init ubroker.conf    # commented defaults for the board
  ubroker passwd users.txt alice                      # the users the template names
  ubroker config --board esp32 --check ubroker.conf   # errors with line numbers; exit 1 if any
"""

TEMPLATE = """# ubroker config for board {board} ({description}).
# One `key value` per line, # starts a comment; Mosquitto's keys where they exist.
# Check it with:  ubroker config --board {board} --check THIS_FILE
{files_note}
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

# --- clients and security (docs/security.md) --------------------------------------------------
# Only the users in the password_file may connect, as in Mosquitto 2. Create the file with:
#   {passwd_command}
password_file users.txt
# Anonymous access: anyone who can reach a listener beyond 127.0.0.1 could then connect with
# no password, read every topic and publish to any (commands to your devices included). Only
# on a network that is yours alone; `--check` warns while it is on.
#allow_anonymous true
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

# --- limits (the board profile sets these; lower them here freely, raising them is checked
# against heap_budget {heap_budget}) ---------------------------------------------------------
{stack_note}#max_connections {max_connections}
#max_subscriptions {max_subscriptions}
#max_inflight_messages {max_inflight_messages}
#max_queued_messages {max_queued_messages}
#max_packet_size {max_packet_size}

# --- persistence --------------------------------------------------------------------------
#persistence true
#persistence_location {flash_store}

# --- $SYS report every N seconds (0 = off) ---------------------------------------------------
sys_interval 10

# --- local sensors (docs/sensors.md): off while sensor_interval is 0 -------------------------
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
#bridge_cafile ca.pem
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


# Where the host finds the files a config names (password_file, acl_file, a TLS listener's
# certfile/keyfile/cafile, a bridge's bridge_cafile). The config names each as the broker
# opens it: on a board, relative to its root folder, which `ubroker flash` fills from the
# config file's folder, so that is where a relative path is looked up for every board but
# unix, whose `ubroker run` opens it from the folder it runs in. Absolute paths are taken
# as they are.
FILES_BESIDE = """# Files named here (password_file, acl_file, certfile, keyfile, cafile, bridge_cafile): keep
# them beside this config and name them by a relative path; `ubroker flash` copies each to
# that path on the board (relative to its root folder, where the broker runs).
"""
FILES_HERE = """# Files named here (password_file, acl_file, certfile, ...): a relative path is read from the
# folder `ubroker run` runs in.
"""
FILE_KEYS = ("password_file", "acl_file", "certfile", "keyfile", "cafile", "bridge_cafile")


# Where the board's stock firmware bounds the clients before the heap does (sockets.py).
STACK_NOTE = """# Stock MicroPython's network stack: {stack}.
# max_connections {max_connections} is what it leaves for clients beside one listener; a bridge,
# or another listener that takes from the same limit, leaves fewer (`--check` counts them).
"""


def files_beside(board):
    """True when a relative file path of board's config is looked up beside the config."""
    return board != "unix"


def host_path(value, config_path, beside=True):
    """The host's copy of a file the config at config_path names as value."""
    if os.path.isabs(value) or not beside:
        return value
    return os.path.join(os.path.dirname(config_path), value)


def passwd_command(path):
    return "ubroker passwd %s NAME" % shlex.quote(path)


def default_config(board, path=None):
    """The commented template for board; path is where it will be written (for the exact
    `ubroker passwd` command that creates its users file)."""
    prof = profiles.load_board(board)
    users = host_path("users.txt", path or "", files_beside(board))
    return TEMPLATE.format(**dict(prof, description=prof.get("description", board),
                                  flash_store=prof.get("flash_store", "data"),
                                  sensors=", ".join(prof.get("sensor", [])) or "none",
                                  files_note=FILES_BESIDE if files_beside(board) else FILES_HERE,
                                  stack_note=stack_note(prof),
                                  passwd_command=passwd_command(users)))


def stack_note(prof):
    stack = sockets.describe(prof)
    return STACK_NOTE.format(stack=stack, max_connections=prof["max_connections"]) if stack else ""


def named_files(text, user):
    """[(key, value, line, context)] for each file the parsed config user names: the one
    password_file and acl_file, every TLS listener's files (with the listener as context),
    every bridge's bridge_cafile (with the line of its `connection`, and that as context)."""
    cfgmod = profiles.fwconfig()
    lines = [cfgmod.split(ln) for ln in text.split("\n")]

    def line_of(key, value):
        found = 0  # the last such line: a repeated key keeps its last value
        for no, words in enumerate(lines, 1):
            if words[:1] == [key] and " ".join(words[1:]) == value:
                found = no
        return found

    out = []
    for key in ("password_file", "acl_file"):
        if key in user:
            out.append((key, user[key], line_of(key, user[key]), ""))
    listeners = user.get("listener", [])
    for i in sorted(user.get("tls", {})):
        context = "listener %d (port %d): " % (i + 1, listeners[i][0]) if i < len(listeners) else ""
        for key in ("certfile", "keyfile", "cafile"):
            value = user["tls"][i].get(key)
            if value is not None:
                out.append((key, value, line_of(key, value), context))
    for br in user.get("connection", ()):
        if "bridge_cafile" in br:
            out.append(("bridge_cafile", br["bridge_cafile"], br["line"], "connection %s: " % br["name"]))
    return out


def missing_file(path, key, value, line, context, where):
    """The problem of a named file that the host does not have at where, or None."""
    if os.path.isfile(where):
        return None
    looked = "" if where == value else " (looked for %s)" % where
    if key == "password_file":
        hint = "; create it: " + passwd_command(where)
    elif key in ("certfile", "keyfile", "cafile"):
        hint = "; the broker cannot read it and would not start"
    else:
        hint = ""
    what = "is not a file" if os.path.exists(where) else "does not exist"
    return "%s:%d: %s%s %s %s%s%s" % (path, line, context, key, value, what, looked, hint)


def check(board, path, beside=None):
    """[messages] for the config at path; empty when it is fine. beside: whether relative
    file paths are looked up beside the config (default: files_beside(board))."""
    return review(board, path, beside)[0]


def review(board, path, beside=None):
    """([problems], [warnings]) for the config at path: problems make it unfit to flash or
    run; a warning names a risk the broker accepts (anonymous clients on the network)."""
    cfgmod = profiles.fwconfig()
    prof = profiles.load_board(board)
    beside = files_beside(board) if beside is None else beside
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        return ["%s: cannot read: %s" % (path, e.strerror)], []
    try:
        user = cfgmod.parse(text, path)
    except cfgmod.ConfigError as e:
        return list(e.errors), []
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
    where = {}  # value -> the host's copy, for the named files that exist
    for key, value, line, context in named_files(text, user):
        there = host_path(value, path, beside)
        msg = missing_file(path, key, value, line, context, there)
        if msg:
            problems.append(msg)
        else:
            where[value] = there
    cfg = cfgmod.resolve(prof, user)
    problems += security_problems(cfgmod, path, user, cfg, line_of, where)
    # On a board main.py makes the store's folder; `ubroker run` (unix_main.py) does not.
    store = None if beside else cfgmod.store_problem(cfg)
    if store:
        line = line_of("persistence_location")
        problems.append("%s%s: %s" % (path, ":%d" % line if line else "", store))
    ok, need, have = budget.fits(cfg)
    # A profile that itself overcommits (see tests/memory/test_boards.py) is the board's problem,
    # not the user's: only what the user raises beyond it is reported.
    if not ok and need > budget.total(prof):
        raised = [k for k in user if k in prof and isinstance(prof[k], int) and user[k] > prof[k]]
        where = ", ".join("%s (line %d, board value %d)" % (k, line_of(k), prof[k]) for k in raised)
        if user.get("sensor_interval"):
            where = (where or "the limits") + " (max_connections, say), or turn the sensors off " \
                "(sensor_interval, line %d: their code takes heap)" % line_of("sensor_interval")
        problems.append("%s: these limits need %d bytes of heap but board %s has heap_budget %d; lower %s"
                        % (path, need, board, have, where or "the limits"))
    problems += stack_problems(board, path, prof, user, cfg, line_of)
    return problems, open_warnings(path, cfg, line_of("allow_anonymous"))


def stack_problems(board, path, prof, user, cfg, line_of):
    """The sockets cfg needs beyond what the board's stock network stack holds, at the user's
    max_connections line if there is one."""
    try:
        msg = sockets.problem(board, prof, cfg)
    except ValueError as e:  # the profile's own stock_lwip line
        return ["%s: %s" % (os.path.relpath(paths.board_file(board)), e)]
    if msg is None:
        return []
    line = line_of("max_connections") if "max_connections" in user else 0
    return ["%s%s: %s" % (path, ":%d" % line if line else "", msg)]


def loopback(host):
    return host.startswith("127.") or host in ("::1", "localhost")


def open_warnings(path, cfg, line):
    """A warning for each listener other machines can reach where allow_anonymous true lets
    clients in without a password (a listener that requires a client certificate excepted):
    the broker starts so, as Mosquitto does, but it is open to the whole network."""
    if cfg["allow_anonymous"] is not True:
        return []
    can = "do what the acl_file allows clients without a user name" if cfg["acl_file"] \
        else "read every topic and publish to any (commands to your devices included)"
    out = []
    for i, (port, host) in enumerate(cfg["listener"]):
        if loopback(host) or cfg["tls"].get(i, {}).get("require_certificate"):
            continue
        out.append("%s:%d: warning: allow_anonymous true with listener %s:%d, which other machines can reach: "
                   "anyone on the network can connect without a password and %s. Unless the network is yours "
                   "alone, add users (`ubroker passwd FILE NAME`, then `password_file FILE`) and remove "
                   "allow_anonymous, or listen on 127.0.0.1" % (path, line, host, port, can))
    return out


def security_problems(cfgmod, path, user, cfg, line_of, where):
    """The refusal to open beyond loopback without users, the password_file and acl_file (with
    the firmware's parsers) and each TLS listener's files (loaded by the firmware's sec_tls.py in
    the MicroPython unix port, whose mbedTLS is the one boards use). where maps each named
    file that exists to its host copy; the missing ones are reported already."""
    out = []
    msg = cfgmod.open_problem(cfg)
    if msg:
        out.append("%s: %s" % (path, msg))
    from ubroker import sec_files as secfiles

    for key, parse in (("password_file", secfiles.passwords), ("acl_file", secfiles.acl)):
        if user.get(key) in where:
            try:
                there = where[user[key]]
                parse(secfiles.read(there, key), there)
            except ValueError as e:
                out.append("%s:%d: %s" % (path, line_of(key), e.args[0]))
    for i in sorted(cfg["tls"]):
        opts = cfg["tls"][i]
        place = "%s: listener %d (port %d)" % (path, i + 1, cfg["listener"][i][0]) if i < len(cfg["listener"]) \
            else "%s: TLS settings without their listener" % path
        missing = [k for k in ("certfile", "keyfile") if k not in opts]
        if opts.get("require_certificate") and "cafile" not in opts:
            missing.append("cafile (require_certificate true)")
        if missing:
            out.append("%s needs %s" % (place, " and ".join(missing)))
            continue
        files = {k: opts[k] for k in ("certfile", "keyfile", "cafile") if k in opts}
        if any(v not in where for v in files.values()):
            continue
        files = dict((k, where[v]) for k, v in files.items())
        unreadable = [v for v in files.values() if not os.access(v, os.R_OK)]
        if unreadable:
            out.append("%s: cannot read %s" % (place, ", ".join(unreadable)))
            continue
        err = tls_error(dict(opts, **files)) or pair_error(files)
        if err:
            out.append("%s: %s" % (place, err))
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
    script = "from ubroker.sec_tls import context\ncontext(%r)\n" % dict(opts)
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
            text = default_config(args.board, args.init)
            try:
                with open(args.init, "w") as f:
                    f.write(text)
            except OSError as e:
                print("ubroker config: cannot write %s: %s" % (args.init, e.strerror), file=sys.stderr)
                return 1
            print("wrote %s for board %s; add a user (%s), edit it, then: ubroker config --board %s --check %s"
                  % (args.init, args.board, passwd_command(host_path("users.txt", args.init, files_beside(args.board))),
                     args.board, args.init))
            return 0
        problems, warnings = review(args.board, args.check)
    except profiles.UnknownBoard as e:
        print("ubroker config: %s" % e, file=sys.stderr)
        return 2
    for w in warnings:
        print(w, file=sys.stderr)
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        print("%d problem%s in %s" % (len(problems), "" if len(problems) == 1 else "s", args.check), file=sys.stderr)
        return 1
    print("%s: OK for board %s%s" % (args.check, args.board, " (%d warning%s)" % (
        len(warnings), "" if len(warnings) == 1 else "s") if warnings else ""))
    return 0
