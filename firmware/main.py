"""Board entry: read board.conf and ubroker.conf from the board's filesystem, bring the network
up, start the broker and say where it listens. If the broker crashes it is logged and started
again (with a growing pause), so the board never stays dead; Ctrl-C stops it and leaves the
REPL to mpremote. Built as ubmain.mpy and imported by a two-line main.py; runs as it is on the
unix port too (ubroker vboard), where there is no WiFi to bring up."""

import gc
import sys

from ubroker import VERSION
from ubroker.config import ConfigError, load, open_problem, resolve
from ubroker.log import log
from ubroker.platform import network_up, print_exception, sleep_ms
from ubroker.server import Server

BOARD_FILE = "board.conf"
CONFIG_FILE = "ubroker.conf"
MAX_PAUSE_MS = 30000


def settings():
    """The resolved config, or None when a file has a mistake (logged with its line)."""
    layers = []
    for path in (BOARD_FILE, CONFIG_FILE):
        try:
            layers.append(load(path))
        except OSError:
            log("no %s: using the defaults for it" % path)
        except ConfigError as e:
            for line in e.errors:
                log(line)
            log("fix %s (ubroker config --check) and flash it again" % path)
            return None
    return resolve(*layers)


def main():
    log("ubroker %s on MicroPython %s (%s)"
        % (VERSION, ".".join(str(v) for v in sys.implementation.version[:3]), sys.platform))
    cfg = settings()
    if cfg is None:
        return
    problem = open_problem(cfg)
    if problem:
        log("cannot start: %s; fix %s (ubroker config --check) and flash it again" % (problem, CONFIG_FILE))
        return
    if cfg.get("persistence") and cfg.get("persistence_location"):
        from ubroker.store import makedirs

        makedirs(cfg["persistence_location"])
    pause = 1000
    address = network_up(cfg, log)
    while address is None:
        log("network down; trying again in %d s" % (pause // 1000))
        sleep_ms(pause)
        pause = min(pause * 2, MAX_PAUSE_MS)
        address = network_up(cfg, log)
    pause = 1000
    restarts = 0
    while True:
        gc.collect()
        server = None
        try:
            server = Server(cfg, log)
            for port, host in cfg["listener"]:
                shown = address if address and host in ("0.0.0.0", "") else host
                log("broker at mqtt://%s:%d" % (shown, port))
            server.serve()
            log("broker stopped")
            return
        except KeyboardInterrupt:
            log("stopped (Ctrl-C)")
            return
        except ValueError as e:  # password, acl or TLS files: restarting cannot mend them
            log("cannot start: %s; fix it and flash again" % e)
            return
        except Exception as e:  # MemoryError and OSError included: restart, never stay dead
            restarts += 1
            log("broker crashed (%d): %r; restarting in %d s" % (restarts, e, pause // 1000))
            print_exception(e)
        server = None
        gc.collect()
        try:
            sleep_ms(pause)
        except KeyboardInterrupt:
            log("stopped (Ctrl-C)")
            return
        pause = min(pause * 2, MAX_PAUSE_MS)


main()
