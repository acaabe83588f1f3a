"""Topic names and filters: validation (MQTT 4.7), matching, and the subscription index that
maps filters to subscribers. Everything that allocates happens on SUBSCRIBE; matching a
published topic walks byte offsets and allocates nothing."""

from .buffers import rebuild, table


def forbidden(t):
    """Is `$` topic t (its callers have seen the `$`) one a client may not publish to, nor set
    its will on? All are but `$SYS/broker/connection/NAME/state`, where a Mosquitto bridge
    says whether its link is up (its `notifications`, on by default: a retained "1", and "0"
    as its will), as Mosquitto lets it."""
    return not (len(t) > 29 and t.startswith(b"$SYS/broker/connection/") and t.endswith(b"/state"))


def valid_topic(t):
    """A PUBLISH topic name: at least one byte (MQTT-4.7.3-1), no wildcard (MQTT-3.3.2-2)."""
    return len(t) > 0 and b"+" not in t and b"#" not in t


def valid_filter(f):
    """A subscription filter: '#' only as the whole last level (MQTT-4.7.1-2), '+' only as a
    whole level (MQTT-4.7.1-3), at least one byte (MQTT-4.7.3-1)."""
    n = len(f)
    if n == 0:
        return False
    i = f.find(b"#")
    if i >= 0 and (i != n - 1 or (i > 0 and f[i - 1] != 47)):
        return False
    i = f.find(b"+")
    while i >= 0:
        if (i > 0 and f[i - 1] != 47) or (i + 1 < n and f[i + 1] != 47):
            return False
        i = f.find(b"+", i + 1)
    return True


def is_wild(f):
    return b"+" in f or b"#" in f


def match_levels(levels, topic):
    """Does the filter, already split into levels, match the topic? A leading wildcard never
    matches a topic that starts with '$' (MQTT-4.7.2-1)."""
    tn = len(topic)
    first = levels[0]
    if tn and topic[0] == 36 and (first == b"+" or first == b"#"):
        return False
    last = len(levels) - 1
    ti = 0
    i = 0
    for lv in levels:
        if lv == b"#":
            return True
        end = topic.find(b"/", ti)
        if end < 0:
            end = tn
        if lv != b"+" and (end - ti != len(lv) or not topic.startswith(lv, ti)):
            return False
        if end == tn:
            # The topic has no more levels: the filter must end here, or with '/#' which
            # also matches its parent level.
            return i == last or (i + 1 == last and levels[last] == b"#")
        ti = end + 1
        i += 1
    return False


class Index:
    """Subscriptions of all clients. Each filter maps to a flat list [client, qos, client,
    qos, ...] (smaller than a dict for the usual one or two subscribers). A topic's exact
    filter is found by one dict lookup; wildcard filters are walked, and the routes of
    recently published topics are cached until the subscriptions change, so a sensor
    publishing to the same topic again costs one dict lookup however many wildcard filters
    there are."""

    # Set by the first filter that starts with $ (a $SYS one): from then on the server loads
    # and publishes its $SYS report (Server.sysinfo). A class default until then.
    sys = False

    def __init__(self, cache_size=64, size=64):
        self.size = size  # exact filters at most (max_subscriptions)
        self.exact = table(size)  # filter -> (client, qos) or [client, qos, client, qos, ...]
        self.wild = {}  # filter -> (levels, [client, qos, ...])
        self.count = 0
        self.gone = 0  # exact filters deleted since the table was built (see buffers.rebuild)
        self.cache = {}  # topic -> [client, qos, ...] merged over all matching filters
        self.cache_size = cache_size
        self._seq = 0
        # Topic names published before, by a fingerprint of a few of their bytes: the 3.1.1
        # parser finds the bytes object of a name without a copy (protocol.py, publish), and
        # the cache and the index are then asked with it. Up to cache_size of them.
        self.names = {}

    def route(self, topic):
        """The clients a message on topic goes to, each once with the highest QoS of its
        matching subscriptions (MQTT-3.3.5-1), as a flat list [client, qos, ...]."""
        if not self.wild:
            return self.exact.get(topic, _NONE)  # one filter matches: no duplicates
        r = self.cache.get(topic)
        if r is None:
            self._seq += 1
            hits = []
            self.collect(topic, hits, self._seq)
            r = []
            for c in hits:
                r.append(c)
                r.append(c.mq)
            if topic[0] == 36:
                # $SYS: a report's 30 topics every sys_interval, more than a board's cache
                # holds, would each be a miss anyway; kept (or clearing a full cache for
                # them), they pushed the clients' topics out and held 2 kB of the esp32
                # profile's heap (tests/memory/test_heap_pressure.py)
                return r
            if len(self.cache) >= self.cache_size:
                self.cache.clear()
            try:
                self.cache[topic] = r
            except MemoryError:
                # Only a cache: the route is right without it. Its table (272 B at 16 entries)
                # may find no block in a heap the v5 modules fragment; that MemoryError closed
                # the publisher, its message lost (test_fuzz_v5, test_mqtt5_publish)
                pass
        return r

    def _subs(self, flt, create):
        """The subscriber list of flt; create makes one for a wildcard filter only."""
        if is_wild(flt):
            entry = self.wild.get(flt)
            if entry is None and create:
                entry = self.wild[flt] = (flt.split(b"/"), [])
            return None if entry is None else entry[1]
        return self.exact.get(flt)

    def add(self, flt, client, qos):
        """Returns True when this is a new subscription, False when it replaced one. An exact
        filter with one subscriber is held as a tuple (half a list's heap)."""
        if flt.startswith(b"$share/"):  # the first shared subscription: v5_shared.py takes over
            from .v5_shared import install

            return install(self).add(flt, client, qos)
        self.cache.clear()
        if flt[0] == 36:  # $
            self.sys = True
        if not is_wild(flt):
            subs = self.exact.get(flt)
            if subs is None:
                if self.gone > self.size >> 1:
                    self.gone = 0
                    self.exact = rebuild(self.exact, self.size)
                self.exact[flt] = (client, qos)
                self.count += 1
                return True
            if type(subs) is tuple:
                if subs[0] is client:
                    self.exact[flt] = (client, qos)
                    return False
                subs = self.exact[flt] = list(subs)
        else:
            subs = self._subs(flt, True)
        for i in range(0, len(subs), 2):
            if subs[i] is client:
                subs[i + 1] = qos
                return False
        subs.append(client)
        subs.append(qos)
        self.count += 1
        return True

    def remove(self, flt, client):
        subs = self._subs(flt, False)
        if subs is None:
            return False
        for i in range(0, len(subs), 2):
            if subs[i] is client:
                self.cache.clear()
                self.count -= 1
                if len(subs) == 2:
                    if is_wild(flt):
                        del self.wild[flt]
                    else:
                        del self.exact[flt]
                        self.gone += 1
                else:
                    del subs[i : i + 2]
                return True
        return False

    def qos_of(self, flt, client):
        subs = self._subs(flt, False)
        if subs:
            for i in range(0, len(subs), 2):
                if subs[i] is client:
                    return subs[i + 1]
        return 0

    def collect(self, topic, hits, seq):
        """Append each subscribed client once to hits, leaving on it the highest QoS of its
        matching subscriptions. Clients carry two scratch fields for this: mark (the
        sequence number of the last collect that saw them) and mq."""
        subs = self.exact.get(topic)
        if subs:
            _add_subscribers(subs, hits, seq)
        wild = self.wild
        for flt in wild:
            levels, subs = wild[flt]
            if match_levels(levels, topic):
                _add_subscribers(subs, hits, seq)


_NONE = []


def _add_subscribers(subs, hits, seq):
    for i in range(0, len(subs), 2):
        c = subs[i]
        q = subs[i + 1]
        if c.mark != seq:
            c.mark = seq
            c.mq = q
            hits.append(c)
        elif q > c.mq:
            c.mq = q
