"""Topic names and filters: validation (MQTT 4.7), matching, and the subscription index that
maps filters to subscribers. Everything that allocates happens on SUBSCRIBE; matching a
published topic walks byte offsets and allocates nothing."""


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


def matches(flt, topic):
    return match_levels(flt.split(b"/"), topic)


class Index:
    """Subscriptions of all clients. Exact filters are found by one dict lookup; wildcard
    filters are walked. Each filter maps to {client: granted qos}. The routes of recently
    published topics are cached until the subscriptions change, so a sensor publishing to
    the same topic again costs one dict lookup however many wildcard filters there are."""

    def __init__(self, cache_size=64):
        self.exact = {}
        self.wild = {}  # filter -> (levels, {client: qos})
        self.count = 0
        self.cache = {}  # topic -> [client, qos, client, qos, ...]
        self.cache_size = cache_size
        self._seq = 0

    def route(self, topic):
        """The clients a message on topic goes to, each once with the highest QoS of its
        matching subscriptions (MQTT-3.3.5-1), as a flat list [client, qos, ...]."""
        r = self.cache.get(topic)
        if r is None:
            self._seq += 1
            hits = []
            self.collect(topic, hits, self._seq)
            r = []
            for c in hits:
                r.append(c)
                r.append(c.mq)
            if len(self.cache) >= self.cache_size:
                self.cache.clear()
            self.cache[topic] = r
        return r

    def add(self, flt, client, qos):
        """Returns True when this is a new subscription, False when it replaced one."""
        if is_wild(flt):
            entry = self.wild.get(flt)
            if entry is None:
                entry = self.wild[flt] = (flt.split(b"/"), {})
            subs = entry[1]
        else:
            subs = self.exact.get(flt)
            if subs is None:
                subs = self.exact[flt] = {}
        new = client not in subs
        subs[client] = qos
        self.cache.clear()
        if new:
            self.count += 1
        return new

    def remove(self, flt, client):
        table = self.wild if is_wild(flt) else self.exact
        entry = table.get(flt)
        if entry is None:
            return False
        subs = entry[1] if isinstance(entry, tuple) else entry
        if client not in subs:
            return False
        del subs[client]
        self.cache.clear()
        if not subs:
            del table[flt]
        self.count -= 1
        return True

    def collect(self, topic, hits, seq):
        """Append each subscribed client once to hits, leaving on it the highest QoS of its
        matching subscriptions (MQTT-3.3.5-1). Clients carry two scratch fields for this:
        mark (the publish sequence number last seen) and mq."""
        subs = self.exact.get(topic)
        if subs:
            _take(subs, hits, seq)
        wild = self.wild
        for flt in wild:
            levels, subs = wild[flt]
            if match_levels(levels, topic):
                _take(subs, hits, seq)


def _take(subs, hits, seq):
    for c in subs:
        q = subs[c]
        if c.mark != seq:
            c.mark = seq
            c.mq = q
            hits.append(c)
        elif q > c.mq:
            c.mq = q
