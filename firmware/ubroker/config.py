"""Configuration in mosquitto.conf form: one `key value` per line, `#` comments. The same
parser reads the board profile (boards/*.conf) and the user's config, on the board and in the
host tools, so a mistake is reported with the same line number everywhere.
Settings apply in layers: DEFAULTS <- board profile <- user config <- command line."""

# key -> kind. Kinds: int (>= 0), pos (>= 1), size (>= 1, with an optional k or M suffix:
# 96k = 98304; size0: >= 0), bool, str, qos (0..2), listener, and
# "+str": a key that may repeat, collected in a list.
SCHEMA = {
    # Mosquitto's own keys
    "listener": "listener",
    "port": "pos",
    "bind_address": "str",
    "max_connections": "pos",
    "max_inflight_messages": "pos",
    "max_queued_messages": "pos",
    "max_packet_size": "size0",
    "max_qos": "qos",
    "retain_available": "bool",
    "sys_interval": "int",
    "persistence": "bool",
    "persistence_location": "str",
    "allow_anonymous": "bool",
    "max_keepalive": "int",
    "password_file": "str",
    "acl_file": "str",
    # TLS: these four apply to the listener declared last (Mosquitto's per-listener form)
    "certfile": "str",
    "keyfile": "str",
    "cafile": "str",
    "require_certificate": "bool",
    # `protocol mqtt|websockets`, for the listener declared last (Mosquitto's form)
    "protocol": "str",
    # ubroker's limits, for what Mosquitto has no word for
    "max_sessions": "pos",
    "max_subscriptions": "pos",
    "max_subscriptions_per_client": "pos",
    "max_retained_messages": "int",
    "max_retained_bytes": "int",
    "max_topic_length": "pos",
    "max_client_id_length": "pos",
    "max_queued_bytes": "size",
    "out_buffer_size": "size",
    "read_buffer_size": "size",
    "connect_timeout": "pos",
    "route_cache_size": "pos",
    "buffer_pool_size": "int",
    "heap_reserve": "size",
    "store_hold_ms": "int",
    "poll_presize": "bool",
    "gc_threshold": "size",
    "max_connection_rate": "int",
    "max_half_open_connections": "pos",
    # MQTT 5 (v5_protocol.py reads them with cfg.get; not in DEFAULTS, which every broker
    # keeps): CONNACK's Response Information is PREFIX/<client id>, default `response`; the
    # Topic Aliases the server may set per client, default 4, 0 none; the Topic Aliases a
    # client may set (Mosquitto's key, per listener there, for all here), default 8 (the
    # unix profile: 10, Mosquitto's), 0 none
    "response_topic_prefix": "str",
    "max_topic_alias_out": "int",
    "max_topic_alias": "int",
    # Reason Strings (the log's words) on a v5 refusal: default false, as Mosquitto
    "reason_strings": "bool",
    # board profile (boards/*.conf)
    "board": "str",
    "description": "str",
    "arch": "str",
    "emit": "str",
    "opt_level": "int",
    "heap_budget": "size",
    # feature groups frozen into the board's firmware image (firmware/image/), e.g.
    # `frozen core,store,security,bridge,sensors,v5`: `ubroker flash` copies only the rest
    "frozen": "str",
    # the stock MicroPython network stack's limits (lwIP), read by `ubroker config --check`
    # (host_tools/ubroker_tools/sockets.py): one key, `stock_lwip sockets=N tcp=N`
    "stock_lwip": "str",
    "usb_id": "+str",
    "flash_store": "str",
    "store_size": "size",
    "wifi": "str",
    "wifi_ssid": "str",
    "wifi_password": "str",
    "wifi_ap_ssid": "str",
    "wifi_ap_password": "str",
    "hostname": "str",
    "sensor": "+str",
    # local sensors (sensors.py): off while sensor_interval is 0. Not in DEFAULTS: every key
    # there costs heap in every broker's settings; sensors.py reads them with cfg.get.
    "sensor_interval": "int",
    "sensor_prefix": "str",
    "sensor_qos": "qos",
    "sensor_retain": "bool",
    "pin": "+str",
    # bridges: `connection NAME` opens a section that the BRIDGE keys below fill
    "connection": "section",
    "bridge_max_queued_messages": "pos",
}

# Keys of a `connection NAME` section (Mosquitto's bridge keys), with their defaults.
# topic: PATTERN [in|out|both [QOS [LOCAL_PREFIX REMOTE_PREFIX]]], repeatable.
BRIDGE = {
    "address": "str",
    "topic": "+topic",
    "remote_clientid": "str",
    "remote_username": "str",
    "remote_password": "str",
    "keepalive_interval": "pos",
    "cleansession": "bool",
    "try_private": "bool",
    "restart_timeout": "backoff",
    "bridge_cafile": "str",
    "bridge_insecure": "bool",
    "bridge_protocol_version": "str",
}

BRIDGE_DEFAULTS = {
    "keepalive_interval": 60,
    "cleansession": False,
    "try_private": True,
    "restart_timeout": (5, 30),
    "bridge_insecure": False,
    "bridge_protocol_version": "mqttv311",
}

DEFAULTS = {
    "listener": [(1883, "127.0.0.1")],
    "max_connections": 1024,
    "max_sessions": 2048,
    "max_inflight_messages": 20,
    "max_queued_messages": 1000,
    "max_queued_bytes": 16 * 1024 * 1024,
    "max_packet_size": 256 * 1024,
    "max_topic_length": 1024,
    "max_client_id_length": 256,
    "max_subscriptions": 16384,
    "max_subscriptions_per_client": 256,
    "max_retained_messages": 4096,
    "max_retained_bytes": 4 * 1024 * 1024,
    "max_qos": 2,
    "retain_available": True,
    "out_buffer_size": 64 * 1024,
    "read_buffer_size": 16 * 1024,
    "connect_timeout": 10,
    "route_cache_size": 64,
    "buffer_pool_size": 8,
    "heap_reserve": 0,
    "store_hold_ms": 100,
    "poll_presize": False,
    "store_size": 1024 * 1024,
    "max_keepalive": 0,  # no limit; N refuses 3.1.1 clients asking for more, or for 0 (as Mosquitto)
    "sys_interval": 10,
    "persistence": False,
    "persistence_location": "",
    # None: not set. Anonymous clients are then allowed when there is no password_file, and
    # the broker refuses to start on a non-loopback listener (open_problem).
    "allow_anonymous": None,
    "password_file": "",
    "acl_file": "",
    "max_connection_rate": 0,
    "max_half_open_connections": 16,
    "tls": {},  # listener index -> {certfile, keyfile, cafile, require_certificate}
    "bridge_max_queued_messages": 1000,
}

TLS_KEYS = ("certfile", "keyfile", "cafile", "require_certificate")
# what `protocol` and `bridge_protocol_version` accept (Mosquitto's words)
PROTOCOLS = ("mqtt", "websockets")
BRIDGE_VERSIONS = ("mqttv311", "mqttv50")


class ConfigError(Exception):
    """All the mistakes of one file, each as 'source:line: message'."""

    def __init__(self, errors):
        super().__init__("\n".join(errors))
        self.errors = errors


def _topic(words):
    """A bridge `topic` line: (pattern, direction, qos, local prefix, remote prefix). "" is an
    empty pattern or prefix, as in Mosquitto (the prefix alone is then the topic)."""
    if not 1 <= len(words) <= 5 or len(words) == 4:
        raise ValueError("expects PATTERN [in|out|both [QOS [LOCAL_PREFIX REMOTE_PREFIX]]]")
    w = [("" if x == '""' else x) for x in words]
    direction = w[1] if len(w) > 1 else "out"
    if direction not in ("in", "out", "both"):
        raise ValueError("direction must be in, out or both, not '%s'" % direction)
    qos = _value("qos", w[2:3]) if len(w) > 2 else 0
    local = w[3] if len(w) > 3 else ""
    remote = w[4] if len(w) > 4 else ""
    if not (w[0] or local or remote):
        raise ValueError("needs a pattern or a prefix")
    if "+" in local + remote or "#" in local + remote:
        raise ValueError("prefixes cannot hold wildcards")
    return (w[0], direction, qos, local, remote)


def _value(kind, words):
    if kind == "+topic":
        return _topic(words)
    if kind == "backoff":
        if not 1 <= len(words) <= 2:
            raise ValueError("expects BASE [CAP] in seconds")
        base = _value("pos", words[:1])
        cap = _value("pos", words[1:]) if len(words) > 1 else max(base, 30)
        if cap < base:
            raise ValueError("cap must not be below base")
        return (base, cap)
    if kind == "section":
        if len(words) != 1:
            raise ValueError("expects one name")
        return words[0]
    if kind == "listener":
        if not 1 <= len(words) <= 2:
            raise ValueError("expects 'listener PORT [ADDRESS]'")
        port = _value("pos", words[:1])
        if port > 65535:
            raise ValueError("port must be 1..65535")
        return (port, words[1] if len(words) > 1 else "0.0.0.0")
    if kind == "+str" or kind == "str":
        if not words:
            raise ValueError("expects a value")
        return " ".join(words)
    if len(words) != 1:
        raise ValueError("expects exactly one value")
    w = words[0]
    if kind == "size" or kind == "size0":
        mult = 1
        if w[-1:] in ("k", "K"):
            mult, w = 1024, w[:-1]
        elif w[-1:] in ("m", "M"):
            mult, w = 1024 * 1024, w[:-1]
        try:
            n = int(w) * mult
        except ValueError:
            raise ValueError("expects a size such as 4096, 96k or 2M, not '%s'" % words[0])
        if n < 0 or n == 0 and kind == "size":
            raise ValueError("must be at least 1" if kind == "size" else "must not be negative")
        return n
    if kind == "bool":
        if w in ("true", "false"):
            return w == "true"
        raise ValueError("expects true or false, not '%s'" % w)
    try:
        n = int(w)
    except ValueError:
        raise ValueError("expects a whole number, not '%s'" % w)
    if kind == "pos" and n < 1:
        raise ValueError("must be at least 1")
    if kind == "int" and n < 0:
        raise ValueError("must not be negative")
    if kind == "qos" and not 0 <= n <= 2:
        raise ValueError("must be 0, 1 or 2")
    return n


def split(line):
    """The words of a line. `#` starts a comment at the start of a word, except on a bridge
    `topic` line, whose pattern may be `#` itself (as in Mosquitto, a comment there must have
    its own line)."""
    words = line.split()
    if words and words[0] != "topic":
        for i in range(len(words)):
            if words[i][0] == "#":
                return words[:i]
    elif words and words[0][0] == "#":
        return []
    return words


def _address(v):
    """HOST[:PORT] -> (host, port); 1883 when no port is given."""
    host, _, port = v.partition(":")
    if " " in v or not host:
        raise ValueError("expects HOST[:PORT]")
    if not port:
        return (host, 1883)
    n = _value("pos", [port])
    if n > 65535:
        raise ValueError("port must be 1..65535")
    return (host, n)


def parse(text, source="config"):
    """Settings of one file as a dict. Raises ConfigError naming every bad line."""
    out = {}
    errors = []
    listeners = []
    section = None  # the `connection` being filled
    for no, line in enumerate(text.split("\n"), 1):
        words = split(line)
        if not words:
            continue
        key = words[0]
        kind = SCHEMA.get(key)
        into = out
        if kind is None and key in BRIDGE:
            kind = BRIDGE[key]
            if section is None:
                errors.append("%s:%d: %s belongs to a bridge: put it after a `connection NAME` line"
                              % (source, no, key))
                continue
            into = section
        if kind is None:
            errors.append("%s:%d: unknown key '%s'" % (source, no, key))
            continue
        try:
            v = _value(kind, words[1:])
            if key == "address":
                v = _address(v)
            elif key == "protocol" and v not in PROTOCOLS:
                raise ValueError("expects one of %s" % ", ".join(PROTOCOLS))
            elif key == "bridge_protocol_version" and v not in BRIDGE_VERSIONS:
                raise ValueError("expects one of %s (mqttv31 is not supported)" % ", ".join(BRIDGE_VERSIONS))
        except ValueError as e:
            errors.append("%s:%d: %s %s" % (source, no, key, e.args[0]))
            continue
        if kind == "section":
            section = dict(BRIDGE_DEFAULTS)
            section["name"] = v
            section["line"] = no
            out.setdefault(key, []).append(section)
        elif kind == "listener":
            listeners.append(v)
        elif key in TLS_KEYS:  # -1: before any `listener` line (see _listeners)
            out.setdefault("tls", {}).setdefault(len(listeners) - 1, {})[key] = v
        elif key == "protocol":
            # listener index -> "websockets"; not in DEFAULTS: a broker without WebSockets
            # keeps no entry for it (read with cfg.get("protocols"))
            out.setdefault("protocols", {})[len(listeners) - 1] = v
        elif kind[0] == "+":
            into.setdefault(key, []).append(v)
        else:
            into[key] = v
    for br in out.get("connection", ()):
        if "address" not in br:
            errors.append("%s:%d: connection %s has no `address HOST[:PORT]`" % (source, br["line"], br["name"]))
        if "topic" not in br:
            errors.append("%s:%d: connection %s has no `topic` line" % (source, br["line"], br["name"]))
    if errors:
        raise ConfigError(errors)
    _listeners(out, listeners)
    return out


def _listeners(out, listeners):
    """A file's `listener` lines, and the per-listener keys (TLS, protocol) by the index of
    the listener they follow, -1 for those before any. As in Mosquitto, `port` (and
    bind_address) beside `listener` lines is one more listener, opened first, which the
    keys before any `listener` line belong to; without it they belong to the first."""
    shift = 0
    if listeners and ("port" in out or "bind_address" in out):
        listeners.insert(0, (out.pop("port", 1883), out.pop("bind_address", "0.0.0.0")))
        shift = 1
    if listeners:
        out["listener"] = listeners
    for key in ("tls", "protocols"):
        if key in out:
            by = {}
            for i in sorted(out[key]):  # -1 before 0: a later line wins
                j = max(i + shift, 0)
                if key == "tls" and j in by:
                    by[j].update(out[key][i])
                else:
                    by[j] = out[key][i]
            out[key] = by


def resolve(*layers):
    """Merge layers over DEFAULTS; a layer's listeners replace those before it. The old
    single-listener keys port/bind_address of a layer without `listener` lines become its one
    listener, as in Mosquitto (parse puts them first among a file's `listener` lines)."""
    cfg = dict(DEFAULTS)
    for layer in layers:
        if "listener" in layer:  # new listeners: TLS settings of replaced ones do not carry over
            cfg["tls"] = {}
            cfg.pop("protocols", None)
        cfg.update(layer)
        if "port" in layer or "bind_address" in layer:
            port = layer.get("port", cfg["listener"][0][0])
            addr = layer.get("bind_address", "0.0.0.0" if "port" in layer else cfg["listener"][0][1])
            cfg["listener"] = [(port, addr)]
    cfg.pop("port", None)
    cfg.pop("bind_address", None)
    return cfg


def open_problem(cfg):
    """Why the broker must not start as configured, or None. As in Mosquitto 2, listening
    beyond the loopback interface without users needs `allow_anonymous true` said outright."""
    if cfg["password_file"] or cfg["allow_anonymous"] is not None:
        return None
    for port, host in cfg["listener"]:
        if not (host.startswith("127.") or host in ("::1", "localhost")):
            return ("listener %s:%d is reachable from the network and no users are configured: add a user "
                    "(`ubroker passwd FILE USER`, then `password_file FILE` in the config) or allow anonymous "
                    "clients explicitly with `allow_anonymous true`" % (host, port))
    return None


def store_problem(cfg):
    """Why the durable store cannot open, or None: `persistence true` with a
    persistence_location that is not a folder. The broker would stop at its first file
    (ENOENT) with no word of which setting is wrong. A relative path is the working folder's."""
    where = cfg["persistence_location"]
    if not (cfg["persistence"] and where):
        return None
    import os

    try:
        if os.stat(where)[0] & 0x4000:  # S_IFDIR
            return None
        what = "is not a folder"
    except OSError:
        what = "does not exist"
    return ("persistence_location %s %s (persistence true): create the folder or name another"
            % (where, what))


def load(path, source=None):
    with open(path) as f:
        return parse(f.read(), source or path)


def settings(files, log, missing_ok=False, amend=None):
    """What a broker starts with, in layers: defaults <- each file of files in turn (the
    board profile, then the user's config) <- amend(cfg), the command line's changes. Each
    mistake is logged with its line and the answer is None; so is a config that must not
    start (open_problem). A missing file is a mistake unless missing_ok, when its layer is
    left out. Both entries (main.py on a board, unix_main.py) start here. Without
    missing_ok (unix_main.py, which makes no folders) a store folder that is not there is a
    mistake too (store_problem); main.py makes it after this.

    Afterwards this module leaves the heap: the broker keeps only the resulting dict, and on
    a board the parser's tables are heap better spent on clients."""
    import ubroker

    try:
        layers = []
        for path in files:
            try:
                layers.append(load(path))
            except OSError as e:
                if not missing_ok:
                    raise e
                log("no %s: using the defaults for it" % path)
        cfg = resolve(*layers)
        if amend is not None:
            amend(cfg)
        problem = open_problem(cfg) or (None if missing_ok else store_problem(cfg))
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
        ubroker.forget("config")
    return None
