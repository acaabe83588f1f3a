"""Entry point on the MicroPython unix port (Linux / Raspberry Pi gateways and tests):
    micropython unix_main.py [--host H] [--port P] [--config FILE] [--board-file FILE]
                             [--data DIR] [--verbose]
`ubroker run` on the host builds this command line. Settings apply in layers: defaults <-
board profile <- config file <- command line."""

import gc
import sys

from ubroker import VERSION
from ubroker import log

USAGE = "usage: unix_main.py [--host H] [--port P] [--config FILE] [--board-file FILE] [--data DIR] [--verbose]"


def args(argv):
    opts = {}  # type: dict
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--verbose", "-v"):
            opts["verbose"] = True
            i += 1
            continue
        if a not in ("--host", "--port", "--config", "--board-file", "--data") or i + 1 >= len(argv):
            raise ValueError(USAGE)
        opts[a[2:]] = argv[i + 1]
        i += 2
    if "port" in opts:
        try:
            opts["port"] = int(opts["port"])
        except ValueError:
            raise ValueError("--port expects a number")
    return opts


def settings(opts):
    """defaults <- board profile <- config file <- --host/--port (config.settings)."""
    from ubroker.config import settings

    def amend(cfg):
        if "host" in opts or "port" in opts:
            # --host/--port move the first listener; the others (a TLS one, say) stay
            port0, host0 = cfg["listener"][0]
            cfg["listener"] = [(opts.get("port", port0), opts.get("host", host0))] + cfg["listener"][1:]
        if "data" in opts:  # before the settings check a store folder: --data is made here
            cfg["persistence_location"] = opts["data"]
            cfg["persistence"] = True
            from ubroker.store_log import makedirs

            makedirs(opts["data"])

    files = [opts[k] for k in ("board-file", "config") if k in opts]
    return settings(files, log, amend=amend)


def main(argv):
    try:
        opts = args(argv)
    except ValueError as e:
        log(str(e))
        return 2
    try:
        cfg = settings(opts)
    except MemoryError:
        gc.collect()
        log("cannot start: this heap (%d bytes) is too small even to read the settings; give more heap "
            "(ubroker run --heap)" % (gc.mem_alloc() + gc.mem_free()))
        return 2
    gc.collect()
    if cfg is None:
        return 2
    cfg["verbose"] = opts.get("verbose", False)
    log("ubroker %s on MicroPython %s" % (VERSION, ".".join(str(v) for v in sys.implementation.version[:3])))
    try:
        from ubroker.server import Server

        server = Server(cfg, log)
    except ValueError as e:  # password_file or acl_file unreadable or wrong
        log("cannot start: %s" % e)
        return 2
    except MemoryError:
        # ubroker run checks the heap against its model first; this is the backstop, never a
        # bare traceback: drop the half-built tables so that the line below can be written.
        server = None
        gc.collect()
        log("cannot start: the tables of these limits do not fit this heap (%d bytes); give more heap "
            "(ubroker run --heap) or lower the limits" % (gc.mem_alloc() + gc.mem_free()))
        return 2
    gc.collect()
    log("heap: %d bytes used, %d free" % (gc.mem_alloc(), gc.mem_free()))
    try:
        server.serve()
    except KeyboardInterrupt:
        try:
            log("stopped")
        except MemoryError:
            pass
    except OSError as e:
        log("cannot serve: %s" % e)
        return 1
    except ValueError as e:  # a TLS listener's files
        log("cannot start: %s" % e)
        return 2
    return 0


sys.exit(main(sys.argv[1:]))
