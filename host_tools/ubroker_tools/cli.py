"""The `ubroker` command: one subcommand per job, each with --help and an example."""

import argparse
import importlib
import sys

# Each subcommand is a module with add_parser(subparsers); the order is the help's order.
COMMANDS = ["run", "build", "flash", "firmware", "config", "monitor", "vboard", "bench", "passwd", "serial_bridge",
            "service", "discover"]

HELP = """ubroker: host tools for the MicroPython MQTT broker.

example:
  ubroker run --port 1883          # start the broker on the unix port
  ubroker bench                    # side-by-side benchmark against Mosquitto, aedes, amqtt
"""


def parser():
    p = argparse.ArgumentParser(prog="ubroker", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module("ubroker_tools." + name)
        except ImportError as e:
            if e.name != "ubroker_tools." + name:
                raise
            continue  # not built yet
        mod.add_parser(sub)
    return p


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    if not getattr(args, "func", None):
        p.print_help()
        return 2
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
