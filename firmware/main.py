"""Board entry: read board.conf and ubroker.conf from the board's filesystem, bring the network
up, start the broker and say where it listens. If the broker crashes it is logged and started
again (with a growing pause), so the board never stays dead; Ctrl-C stops it and leaves the
REPL to mpremote. Built as ubmain.mpy and imported by a two-line main.py; runs as it is on the
unix port too (ubroker vboard), where there is no WiFi to bring up."""

import gc
import sys

from ubroker import VERSION
from ubroker import log
from ubroker.platform import network_up, print_exception, sleep_ms
from ubroker.server import Server

BOARD_FILE = "board.conf"
CONFIG_FILE = "ubroker.conf"
MAX_PAUSE_MS = 30000


def main():
    log("ubroker %s on MicroPython %s (%s)"
        % (VERSION, ".".join(str(v) for v in sys.implementation.version[:3]), sys.platform))
    from ubroker.config import settings

    cfg = settings((BOARD_FILE, CONFIG_FILE), log, True)
    del settings  # the function would keep the parser module alive for the broker's life
    gc.collect()
    if cfg is None:
        log("fix %s (ubroker config --check) and flash it again" % CONFIG_FILE)
        return
    if cfg.get("persistence") and cfg.get("persistence_location"):
        from ubroker.store_log import makedirs

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
