"""`ubroker serial-bridge`: readings from a sensor on a serial port (an Arduino, a USB
sensor, a board printing values) published to an MQTT broker, one message per line.

Line format (ASCII / UTF-8, ended by LF or CRLF):

    VALUE [UNIT]            -> TOPIC            e.g.  21.5      or  21.5 C
    NAME=VALUE [UNIT]       -> TOPIC/NAME       e.g.  temp=21.5 C    room2/hum=40 %

VALUE is a decimal number (-3, 21.5, 1.2e3; not nan or inf) and is published as written.
NAME is one or more topic levels of letters, digits, `_ - .` separated by `/`. UNIT is one
word; the first time a topic's unit is seen, and whenever it changes, it is published
retained to TOPIC[/NAME]/unit (as the broker's own sensors do). Empty lines and lines
starting with `#` are ignored; any other line is a bad line: logged, counted, skipped."""

import argparse
import math
import re
import signal
import sys
import threading

HELP = """Publish the readings a sensor prints on a serial port to an MQTT broker.

line format: VALUE [UNIT] -> TOPIC;  NAME=VALUE [UNIT] -> TOPIC/NAME;  # comments ignored

example:
  ubroker serial-bridge --port /dev/ttyUSB0 --topic home/garage
  ubroker serial-bridge --port /dev/ttyACM0 --baud 115200 --topic lab --broker 192.168.1.42:1883 --qos 1 --retain
"""

MAX_LINE = 256
NAME = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
UNIT = re.compile(r"^[^\s+#/]{1,16}$")
SHOWN_BAD = 20  # bad lines logged one by one; beyond, only counted


class BadLine(ValueError):
    pass


def parse_line(raw):
    """(name or None, value text, unit or None) of one line, None for a line to ignore;
    raises BadLine saying what is wrong."""
    if len(raw) > MAX_LINE:
        raise BadLine("longer than %d bytes" % MAX_LINE)
    try:
        line = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BadLine("not UTF-8 text")
    if not line or line.startswith("#"):
        return None
    words = line.split()
    if len(words) > 2:
        raise BadLine("expected VALUE [UNIT] or NAME=VALUE [UNIT]")
    name, eq, value = words[0].rpartition("=")
    if eq and not NAME.match(name):
        raise BadLine("name %r is not topic levels of letters, digits, _ - ." % name)
    if eq and (name == "unit" or name.endswith("/unit")):
        raise BadLine("name %r would clash with the unit topics" % name)
    if not NUMBER.match(value) or not math.isfinite(float(value)):
        raise BadLine("value %r is not a number" % value)
    unit = words[1] if len(words) > 1 else None
    if unit is not None and not UNIT.match(unit):
        raise BadLine("unit %r is not one word of up to 16 characters" % unit)
    return (name if eq else None), value, unit


def broker_address(text):
    host, _, port = text.rpartition(":")
    if not host:
        host, port = text, "1883"
    try:
        n = int(port)
    except ValueError:
        n = 0
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError("expects HOST:PORT, e.g. 127.0.0.1:1883, not %r" % text)
    return host, n


def topic_value(text):
    t = text.rstrip("/")
    if not t or "+" in t or "#" in t or t.startswith("$") or "\0" in t:
        raise argparse.ArgumentTypeError("%r is not a topic to publish to (no wildcards, not $...)" % text)
    return t


def qos_value(text):
    if text not in ("0", "1", "2"):
        raise argparse.ArgumentTypeError("must be 0, 1 or 2, not %r" % text)
    return int(text)


def add_parser(sub):
    p = sub.add_parser("serial-bridge", help="publish a serial sensor's readings to the broker",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", required=True, metavar="DEV", help="the sensor's serial device, e.g. /dev/ttyUSB0")
    p.add_argument("--topic", required=True, type=topic_value, help="topic of a bare VALUE line; NAME=VALUE goes to TOPIC/NAME")
    p.add_argument("--broker", type=broker_address, default=("127.0.0.1", 1883), metavar="HOST:PORT",
                   help="the MQTT broker (default 127.0.0.1:1883)")
    p.add_argument("--baud", type=int, default=9600, help="serial speed (default 9600)")
    p.add_argument("--qos", type=qos_value, default=0, help="QoS of the readings (default 0)")
    p.add_argument("--retain", action="store_true", help="publish readings retained")
    p.add_argument("--client-id", default="", help="MQTT client id (default: one the broker makes up)")
    p.add_argument("--username", help="user name, if the broker asks for one")
    p.add_argument("--password", help="password for --username")
    p.set_defaults(func=main)


class Bridge:
    """Turns lines into messages and counts what happened to them."""

    def __init__(self, topic, qos, retain, publish, log):
        self.topic = topic.rstrip("/")
        self.qos = qos
        self.retain = retain
        self.publish = publish  # (topic, payload, qos, retain) -> True if handed to the client
        self.log = log
        self.units = {}
        self.buf = b""
        self.skipping = False
        self.lines = self.published = self.bad = self.unsent = 0

    def line(self, raw):
        self.lines += 1
        try:
            parsed = parse_line(raw)
        except BadLine as e:
            self.bad += 1
            if self.bad <= SHOWN_BAD:
                self.log("bad line %d skipped (%s): %r" % (self.lines, e, raw[:80]))
                if self.bad == SHOWN_BAD:
                    self.log("further bad lines are only counted")
            return
        if parsed is None:
            return
        name, value, unit = parsed
        topic = self.topic + "/" + name if name else self.topic
        if unit is not None and self.units.get(topic) != unit:
            if self.publish(topic + "/unit", unit, self.qos, True):
                self.units[topic] = unit
        if self.publish(topic, value, self.qos, self.retain):
            self.published += 1
        else:
            self.unsent += 1

    def feed(self, data):
        """Take what the port gave, handling each complete line; a line longer than
        MAX_LINE is one bad line, skipped up to its end."""
        self.buf += data
        while True:
            i = self.buf.find(b"\n")
            if i < 0:
                break
            raw, self.buf = self.buf[:i], self.buf[i + 1:]
            if self.skipping:
                self.skipping = False
                continue
            self.line(raw.rstrip(b"\r"))
        if len(self.buf) > MAX_LINE:
            if not self.skipping:
                self.skipping = True
                self.line(self.buf)  # counted and logged as too long
            self.buf = b""

    def summary(self):
        return ("%d readings published, %d bad lines skipped, %d not sent (broker unreachable)"
                % (self.published, self.bad, self.unsent))


def log(msg):
    print("serial-bridge:", msg, file=sys.stderr, flush=True)


def mqtt_client(args):
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.client_id)
    if args.username:
        c.username_pw_set(args.username, args.password)
    c.reconnect_delay_set(1, 30)  # paho's loop reconnects by itself if the broker goes away
    return c


def main(args):
    try:
        import serial
    except ImportError:
        log("pyserial is not installed: pip install pyserial")
        return 1
    host, port = args.broker
    client = mqtt_client(args)
    try:
        client.connect(host, port, 60)
    except (OSError, ValueError) as e:
        log("cannot reach the broker at %s:%d: %s" % (host, port, e))
        return 1
    client.loop_start()

    last = []

    def publish(topic, payload, qos, retain):
        info = client.publish(topic, payload, qos, retain)
        last[:] = [info]
        return info.rc == 0

    bridge = Bridge(args.topic, args.qos, args.retain, publish, log)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    pause = 1.0
    try:
        while not stop.is_set():
            try:
                dev = serial.Serial(args.port, args.baud, timeout=0.2)
            except (serial.SerialException, OSError, ValueError) as e:
                log("cannot open %s: %s; trying again in %d s" % (args.port, e, pause))
                stop.wait(pause)
                pause = min(pause * 2, 30.0)
                continue
            pause = 1.0
            log("reading %s at %d baud; publishing to %s on %s:%d"
                % (args.port, args.baud, bridge.topic, host, port))
            bridge.buf = b""
            try:
                with dev:
                    while not stop.is_set():
                        bridge.feed(dev.read(max(1, dev.in_waiting)))
            except (serial.SerialException, OSError) as e:
                log("lost %s: %s" % (args.port, e))
                stop.wait(pause)
    finally:
        log(bridge.summary())
        # Messages handed to paho go out in order: once the last is sent (or acknowledged,
        # at QoS 1/2), all are. Give it a moment, not forever.
        if last and last[0].rc == 0:
            try:
                last[0].wait_for_publish(2)
            except (RuntimeError, ValueError):
                pass
        client.disconnect()
        client.loop_stop()
    return 0
