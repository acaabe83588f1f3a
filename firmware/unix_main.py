"""Entry point on the MicroPython unix port (Linux / Raspberry Pi gateways and tests):
    micropython unix_main.py [--host H] [--port P] [--config FILE] [--board-file FILE]
                             [--data DIR] [--verbose]
`ubroker run` on the host builds this command line. Settings apply in layers: defaults <-
board profile <- config file <- command line."""

import gc
import sys

from ubroker import VERSION
from ubroker.log import log

USAGE = "usage: unix_main.py [--host H] [--port P] [--config FILE] [--board-file FILE] [--data DIR] [--verbose]"


def args(argv):
    opts = {}
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
    return opts


def settings(opts):
    """The resolved config. The parser's tables are dropped from the heap afterwards: the
    broker keeps only the resulting dict."""
    from ubroker.config import ConfigError, load, open_problem, resolve

    try:
        layers = []
        if "board-file" in opts:
            layers.append(load(opts["board-file"]))
        if "config" in opts:
            layers.append(load(opts["config"]))
        cfg = resolve(*layers)
        if "host" in opts or "port" in opts:
            port0, host0 = cfg["listener"][0]
            try:
                port = int(opts.get("port", port0))
            except ValueError:
                log("--port expects a number")
                return None
            # --host/--port move the first listener; the others (a TLS one, say) stay
            cfg["listener"] = [(port, opts.get("host", host0))] + cfg["listener"][1:]
        problem = open_problem(cfg)
        if problem:
            log("cannot start: " + problem)
            return None
        return cfg
    except ConfigError as e:
        for line in e.errors:
            log(line)
    except OSError as e:
        log(str(e))
    finally:
        import ubroker

        del sys.modules["ubroker.config"]
        del ubroker.config
    return None


def main(argv):
    try:
        opts = args(argv)
    except ValueError as e:
        log(str(e))
        return 2
    cfg = settings(opts)
    gc.collect()
    if cfg is None:
        return 2
    if "data" in opts:
        cfg["persistence_location"] = opts["data"]
        cfg["persistence"] = True
        from ubroker.store import makedirs

        makedirs(opts["data"])
    cfg["verbose"] = opts.get("verbose", False)
    log("ubroker %s on MicroPython %s" % (VERSION, ".".join(str(v) for v in sys.implementation.version[:3])))
    from ubroker.server import Server

    try:
        server = Server(cfg, log)
    except ValueError as e:  # password_file or acl_file unreadable or wrong
        log("cannot start: %s" % e)
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
