"""`ubroker service install|uninstall`: the broker as a systemd service on a Linux gateway (a
Raspberry Pi), with its own user and state folder, advertised on the LAN through avahi."""

import argparse
import os
import shutil
import subprocess
import sys

from . import paths, profiles

HELP = """Install the broker as a systemd service, started at boot and restarted after a crash.

install writes three files, each under --prefix (default /):
  etc/systemd/system/ubroker.service   runs `ubroker run --config FILE --data /var/lib/ubroker`
                                       as USER, sandboxed; the durable store is its state folder
  etc/sysusers.d/ubroker.conf          creates USER (a system user) if it does not exist
  etc/avahi/services/ubroker.service   advertises the config's LAN listeners as _mqtt._tcp
                                       (_secure-mqtt._tcp for TLS), so devices find the broker
With the default prefix it then creates the user, compiles the firmware (the service cannot
write to this checkout) and enables and starts the service; run it again after updating the
checkout. uninstall stops the service and removes the three files; the store and the user stay.

The config is the unix port's (`ubroker config --board unix --init FILE`); a relative file name
in it (password_file, certfile ...) is found beside it, as on a board.

example:
  sudo .venv/bin/ubroker service install --config /etc/ubroker/ubroker.conf
  journalctl -u ubroker -f                        # the broker's log
  sudo .venv/bin/ubroker service uninstall
  ubroker service install --prefix pkgroot --config /etc/ubroker/ubroker.conf    # files only
"""

UNIT = "etc/systemd/system/ubroker.service"
SYSUSERS = "etc/sysusers.d/ubroker.conf"
AVAHI = "etc/avahi/services/ubroker.service"
STATE = "/var/lib/ubroker"
DEFAULT_CONFIG = "/etc/ubroker/ubroker.conf"


def add_parser(sub):
    p = sub.add_parser("service", help="install the broker as a systemd service (Raspberry Pi)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    i = acts.add_parser("install", help="write the unit, user and avahi files; enable and start")
    i.add_argument("--prefix", default="/", help="write under DIR instead of / and start nothing (tests, packages)")
    i.add_argument("--config", default=DEFAULT_CONFIG, help="the broker's config (default %s)" % DEFAULT_CONFIG)
    i.add_argument("--user", default="ubroker", help="the user the broker runs as (default ubroker)")
    u = acts.add_parser("uninstall", help="stop the service and remove what install wrote")
    u.add_argument("--prefix", default="/", help="remove under DIR instead of /")
    p.set_defaults(func=main)


def under(prefix, path):
    return os.path.join(prefix, path.lstrip("/"))


def load_config(args):
    """(cfg, the user's layer): the config resolved over the unix profile, read at --prefix if
    it is there (a package root), else as named. Exits on mistakes, as the broker would not
    start."""
    cfgmod = profiles.fwconfig()
    path = under(args.prefix, args.config)
    if not os.path.exists(path):
        path = args.config
    try:
        user = cfgmod.load(path)
        cfg = cfgmod.resolve(profiles.load_board("unix"), user)
    except OSError as e:
        sys.exit("ubroker service: cannot read the config %s (%s); write one with "
                 "`ubroker config --board unix --init %s`" % (args.config, e.strerror, args.config))
    except cfgmod.ConfigError as e:
        sys.exit("ubroker service: the broker would not start:\n" + str(e))
    problem = cfgmod.open_problem(cfg)
    if problem:
        sys.exit("ubroker service: the broker would not start: " + problem)
    return cfg, user


def lan(host):
    return not (host.startswith("127.") or host in ("::1", "localhost"))


def adverts(cfg):
    """[(service type, port)] for the listeners reachable from the LAN. A status page will
    be `_http._tcp` here once the broker serves one."""
    out = []
    for i, (port, host) in enumerate(cfg["listener"]):
        if lan(host):
            out.append(("_secure-mqtt._tcp" if cfg["tls"].get(i, {}).get("certfile") else "_mqtt._tcp", port))
    return out


def avahi_text(services):
    """An avahi-daemon service group (avahi.service(5)); %h is the machine's host name."""
    body = "".join("  <service>\n    <type>%s</type>\n    <port>%d</port>\n  </service>\n" % s for s in services)
    return ('<?xml version="1.0" standalone="no"?>\n<!DOCTYPE service-group SYSTEM "avahi-service.dtd">\n'
            "<!-- written by `ubroker service install`; removed by `ubroker service uninstall` -->\n"
            '<service-group>\n  <name replace-wildcards="yes">ubroker on %%h</name>\n%s</service-group>\n' % body)


def quoted(word):
    if word and not any(c in word for c in ' \t"\\\'%$;'):
        return word
    return '"%s"' % word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")


def unit_text(ubroker, config, user, cfg):
    low = [port for port, _ in cfg["listener"] if port < 1024]
    caps = "CAP_NET_BIND_SERVICE" if low else ""
    lines = [
        "# Written by `ubroker service install`; removed by `ubroker service uninstall`.",
        "[Unit]",
        "Description=ubroker MQTT broker (MicroPython unix port)",
        "Documentation=file://%s" % os.path.join(paths.ROOT, "docs", "raspberry-pi.md"),
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=%s" % " ".join(quoted(w) for w in (ubroker, "run", "--config", config, "--data", STATE)),
        # Relative file names in the config are found beside it, as on a board.
        "WorkingDirectory=%s" % quoted(os.path.dirname(config)),
        "User=%s" % user,
        "StateDirectory=%s" % STATE.rsplit("/", 1)[1],
        "StateDirectoryMode=0750",
        "Restart=on-failure",
        "RestartSec=5",
        # SIGTERM to `ubroker run` alone: it stops the broker cleanly (store closed); the
        # broker itself would die on a SIGTERM of its own.
        "KillMode=mixed",
        "TimeoutStopSec=20",
        # One descriptor per client beyond the default 1024 (the unix profile allows 1024).
        "LimitNOFILE=%d" % (cfg["max_connections"] + 64),
        "Environment=PYTHONDONTWRITEBYTECODE=1",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        # read-only rather than hidden: the checkout and its venv may live in a home folder.
        "ProtectHome=read-only",
        "PrivateTmp=yes",
        "PrivateMounts=yes",
        "UMask=0027",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "ProtectProc=invisible",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "RemoveIPC=yes",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        # Not set: MemoryDenyWriteExecute (the unix port runs native code from memory it
        # writes), ProcSubset=pid (the host sensors read /proc/stat and /proc/meminfo).
        "CapabilityBoundingSet=%s" % caps,
    ]
    if caps:
        lines.append("AmbientCapabilities=%s" % caps)
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    print("ubroker service: wrote %s" % path)


def systemd_running():
    return os.path.isdir("/run/systemd/system") and shutil.which("systemctl") is not None


def call(*cmd):
    print("ubroker service: " + " ".join(cmd), flush=True)
    return subprocess.run(cmd).returncode == 0


def ubroker_command():
    here = os.path.join(os.path.dirname(sys.executable), "ubroker")
    return here if os.path.exists(here) else shutil.which("ubroker") or here


def install(args):
    real = os.path.abspath(args.prefix) == "/"
    if real and os.geteuid() != 0:
        sys.exit("ubroker service: install writes under /etc: run it as root (sudo), or give --prefix DIR")
    config = os.path.abspath(args.config)
    args.config = config
    cfg, _ = load_config(args)
    services = adverts(cfg)
    write(under(args.prefix, UNIT), unit_text(ubroker_command(), config, args.user, cfg))
    write(under(args.prefix, SYSUSERS), 'u %s - "ubroker MQTT broker" %s\n' % (args.user, STATE))
    if services:
        write(under(args.prefix, AVAHI), avahi_text(services))
    else:
        print("ubroker service: nothing to advertise: the config listens on the loopback only, out of the LAN's "
              "reach (add `listener 1883 0.0.0.0`)")
    if not real:
        return 0
    from . import run  # compiles the firmware as `ubroker run` would, now that this checkout is writable

    _, emit, opt = run.board_profile("unix")
    run.compiled(run.native_arch(paths.micropython() or "micropython") if emit == "native" else None, opt)
    if not systemd_running():
        print("ubroker service: this machine does not run systemd: nothing enabled")
        return 0
    if shutil.which("systemd-sysusers"):
        call("systemd-sysusers", under("/", SYSUSERS))
    ok = call("systemctl", "daemon-reload") and call("systemctl", "enable", "--now", "ubroker.service")
    if services and not shutil.which("avahi-daemon"):
        print("ubroker service: avahi-daemon is not installed, so nothing is advertised: apt install avahi-daemon")
    print("ubroker service: the broker's log: journalctl -u ubroker -f")
    return 0 if ok else 1


def uninstall(args):
    real = os.path.abspath(args.prefix) == "/"
    if real and os.geteuid() != 0:
        sys.exit("ubroker service: uninstall removes files under /etc: run it as root (sudo), or give --prefix DIR")
    if real and systemd_running():
        call("systemctl", "disable", "--now", "ubroker.service")
    for rel in (UNIT, SYSUSERS, AVAHI):
        path = under(args.prefix, rel)
        if os.path.exists(path):
            os.remove(path)
            print("ubroker service: removed %s" % path)
    if real and systemd_running():
        call("systemctl", "daemon-reload")
    print("ubroker service: kept the store in %s and the user (remove them by hand if wanted)" % STATE)
    return 0


def main(args):
    return install(args) if args.action == "install" else uninstall(args)
