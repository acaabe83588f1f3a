"""`ubroker discover`: the MQTT brokers on the LAN, found by multicast DNS (python-zeroconf): a
service browse for _mqtt._tcp and _secure-mqtt._tcp, or one board's NAME.local resolved."""

import argparse
import sys
import time

HELP = """List the MQTT brokers on the LAN that advertise themselves over mDNS (DNS-SD), as a
gateway installed with `ubroker service install` does through avahi, and as Tasmota looks for
them: the service types _mqtt._tcp and _secure-mqtt._tcp (TLS).

A board (ESP32, Pico W) cannot advertise a service on stock MicroPython, but its mDNS responder
answers for its host name (the config's `hostname`): find it with --resolve NAME.local.

example:
  ubroker discover                     # every broker that answers within 3 s
  ubroker discover --resolve ubroker-kitchen.local
"""

TYPES = (("_mqtt._tcp.local.", False), ("_secure-mqtt._tcp.local.", True))


def add_parser(sub):
    p = sub.add_parser("discover", help="list the MQTT brokers on the LAN (mDNS)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to listen for answers (default 3)")
    p.add_argument("--resolve", metavar="NAME.local", help="the address of one host name instead (a board)")
    p.set_defaults(func=main)


def browse(seconds):
    """[(name, address, port, tls, host)] of the services that answered within seconds."""
    from zeroconf import ServiceBrowser, ServiceStateChange, Zeroconf

    zc = Zeroconf()
    seen = []

    def changed(zeroconf, service_type, name, state_change):
        if state_change is ServiceStateChange.Added:
            seen.append((service_type, name))

    try:
        browser = ServiceBrowser(zc, [t for t, _ in TYPES], handlers=[changed])
        time.sleep(seconds)
        browser.cancel()
        tls_of = dict(TYPES)
        rows = []
        for service_type, name in list(seen):
            info = zc.get_service_info(service_type, name, timeout=int(seconds * 1000))
            if info is None:
                continue
            label = name[:-len(service_type) - 1] if name.endswith("." + service_type) else name
            for address in info.parsed_scoped_addresses() or ["?"]:
                rows.append((label, address, info.port, tls_of[service_type], (info.server or "").rstrip(".")))
        return sorted(set(rows))
    finally:
        zc.close()


def resolve(name, seconds):
    """The IPv4 addresses mDNS gives for name (NAME.local), [] if none answered."""
    from zeroconf import AddressResolverIPv4, Zeroconf

    fqdn = name.rstrip(".") + "."
    zc = Zeroconf()
    try:
        r = AddressResolverIPv4(fqdn)
        if not r.request(zc, int(seconds * 1000)):
            return []
        return r.parsed_addresses()
    finally:
        zc.close()


def main(args):
    try:
        import zeroconf  # noqa: F401
    except ImportError:
        sys.exit("ubroker discover: python-zeroconf is missing: install the venv (make setup)")
    if args.resolve:
        if not args.resolve.rstrip(".").endswith(".local"):
            sys.exit("ubroker discover: --resolve takes a multicast DNS name, NAME.local, not %r" % args.resolve)
        addresses = resolve(args.resolve, args.timeout)
        if not addresses:
            print("ubroker discover: no answer for %s within %g s" % (args.resolve, args.timeout), file=sys.stderr)
            return 1
        for a in addresses:
            print("%s  %s" % (args.resolve.rstrip("."), a))
        return 0
    try:
        rows = browse(args.timeout)
    except OSError as e:
        sys.exit("ubroker discover: cannot listen for mDNS (UDP 5353): %s" % e)
    if not rows:
        print("ubroker discover: no broker answered within %g s. A board does not advertise itself: find it by "
              "its hostname with --resolve NAME.local" % args.timeout, file=sys.stderr)
        return 1
    width = max(len(r[0]) for r in rows)
    print("%-*s  %-15s  %5s  %-3s  %s" % (width, "NAME", "ADDRESS", "PORT", "TLS", "HOST"))
    for label, address, port, tls, host in rows:
        print("%-*s  %-15s  %5d  %-3s  %s" % (width, label, address, port, "yes" if tls else "no", host))
    return 0
