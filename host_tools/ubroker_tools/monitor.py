"""`ubroker monitor`: a live terminal view of a running broker, from its $SYS topics (Mosquitto's
names, and ubroker's own under $SYS/broker/ubroker/): clients, messages per second, heap,
queues and how often each limit was hit. Works with any broker that publishes $SYS."""

import argparse
import sys
import threading
import time

HELP = """Show a running broker's figures from its $SYS topics, refreshed live.

example:
  ubroker monitor                           # the broker on 127.0.0.1:1883
  ubroker monitor --host 192.168.4.1 --once # one snapshot (e.g. a board's access point)
"""

PREFIX = "$SYS/broker/"


def add_parser(sub):
    p = sub.add_parser("monitor", help="live view of a broker's $SYS figures", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="broker address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=1883, help="broker port (default 1883)")
    p.add_argument("--username", help="user name, if the broker asks for one")
    p.add_argument("--password", help="password for --username")
    p.add_argument("--once", action="store_true", help="print one snapshot and exit")
    p.add_argument("--wait", type=float, default=3.0,
                   help="with --once: seconds to collect figures (default 3; a rate needs two $SYS reports)")
    p.add_argument("--interval", type=float, default=1.0, help="refresh period in seconds (default 1)")
    p.set_defaults(func=main)


class Figures:
    """The latest $SYS values, and the rates of the counters between reports."""

    def __init__(self):
        self.lock = threading.Lock()
        self.values = {}
        self.history = {}  # name -> [(time, value)] of the last two distinct reports
        self.updated = 0.0

    def update(self, name, payload, when=None):
        when = time.time() if when is None else when
        with self.lock:
            self.values[name] = payload
            self.updated = when
            try:
                v = float(payload)
            except ValueError:
                return
            h = self.history.setdefault(name, [])
            if not h or h[-1][1] != v:
                h.append((when, v))
                del h[:-2]

    def get(self, name, default="-"):
        return self.values.get(name, default)

    def rate(self, name):
        h = self.history.get(name)
        if not h or len(h) < 2 or h[1][0] <= h[0][0]:
            return None
        return (h[1][1] - h[0][1]) / (h[1][0] - h[0][0])


def render(fig, where):
    g = fig.get

    def rate(name):
        r = fig.rate(name)
        return "-" if r is None else "%.1f/s" % r

    lines = [
        "%s at %s   uptime %s" % (g("version", "broker"), where, g("uptime")),
        "clients        connected %s   disconnected %s   maximum %s   total %s"
        % (g("clients/connected"), g("clients/disconnected"), g("clients/maximum"), g("clients/total")),
        "protocols      MQTT 5 %s   3.1.1 %s   3.1 %s"
        % (g("ubroker/clients/protocol/v5"), g("ubroker/clients/protocol/v311"), g("ubroker/clients/protocol/v31")),
        "messages       received %s (%s)   sent %s (%s)   dropped %s"
        % (g("publish/messages/received"), rate("publish/messages/received"), g("publish/messages/sent"),
           rate("publish/messages/sent"), g("publish/messages/dropped")),
        "bytes          received %s   sent %s" % (g("bytes/received"), g("bytes/sent")),
        "subscriptions  %s   retained %s (%s bytes)   queued %s messages, %s bytes"
        % (g("subscriptions/count"), g("retained messages/count"), g("ubroker/retained/bytes"),
           g("store/messages/count"), g("store/messages/bytes")),
        "heap           free %s   used %s" % (g("ubroker/heap/free"), g("ubroker/heap/used")),
    ]
    limits = sorted((k[len("ubroker/limits/"):], v) for k, v in fig.values.items() if k.startswith("ubroker/limits/"))
    lines.append("limits hit     " + ("   ".join("%s %s" % kv for kv in limits) if limits else "none"))
    return "\n".join(lines)


def connect(args, fig):
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="", clean_session=True)
    if args.username:
        c.username_pw_set(args.username, args.password)

    def on_connect(client, userdata, flags, reason, props):
        client.subscribe("$SYS/#", 0)

    def on_message(client, userdata, msg):
        if msg.topic.startswith(PREFIX):
            fig.update(msg.topic[len(PREFIX):], msg.payload.decode("utf-8", "replace"))

    c.on_connect = on_connect
    c.on_message = on_message
    c.connect(args.host, args.port, 30)
    c.loop_start()
    return c


def main(args):
    fig = Figures()
    where = "%s:%d" % (args.host, args.port)
    try:
        client = connect(args, fig)
    except OSError as e:
        print("ubroker monitor: cannot connect to %s: %s. Is the broker running (ubroker run), and is the "
              "address right?" % (where, e), file=sys.stderr)
        return 1
    try:
        if args.once:
            deadline = time.time() + args.wait
            while time.time() < deadline:
                time.sleep(0.05)
            if not fig.values:
                print("ubroker monitor: no $SYS figures from %s within %.0f s (is sys_interval 0 in its config?)"
                      % (where, args.wait), file=sys.stderr)
                return 1
            print(render(fig, where))
            return 0
        while True:
            sys.stdout.write("\x1b[H\x1b[2J" + render(fig, where) + "\n\n(Ctrl-C to quit)\n")
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        client.loop_stop()
        client.disconnect()
