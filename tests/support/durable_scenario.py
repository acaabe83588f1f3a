"""Power cut at every write of a durability scenario, run inside the MicroPython unix port:

    micropython durable_scenario.py sweep [MAX_POINTS]   -> one JSON line: the sweep summary
    micropython durable_scenario.py wear                  -> one JSON line: erases per 1000

The scenario (on LittleFS on an emulated flash chip, tests/support/flashsim.py): a persistent
subscriber subscribes at QoS 2 and goes offline; QoS 1 and QoS 2 messages arrive (each
acknowledged to its publisher only once safe); the subscriber returns, takes everything,
acknowledges part of it and leaves QoS 2 handshakes half done; more messages arrive. The power
goes at write N. The check restarts the broker on what the flash kept, lets the subscriber
reconnect and take everything, and demands: every message acknowledged to a publisher was
delivered, and no QoS 2 message was delivered twice."""

import json
import sys

import broker_sim as bs
import powercut


def scenario(fs, acked):
    state = {}
    acked.append(state)  # the subscriber's own memory, which survives the broker
    sent = []  # payloads acknowledged to publishers
    state["acked"] = sent
    sim = bs.Sim(bs.config(fs))
    sub = bs.Client(sim, b"sub", clean=False)
    sub.send(bs.subscribe_pkt(1, b"t/#", 2))
    sub.packets()
    sub.drop()
    pub = bs.Client(sim, b"pub", clean=True)
    for i in range(6):
        bs.publish(pub, sent, b"t/a", b"m%d" % i, 1 + (i % 2), i + 1)
    model = bs.Subscriber(state)
    sub = bs.Client(sim, b"sub", clean=False)
    model.take(sub, ack=True, limit=3)  # takes all it is sent, acknowledges three
    for i in range(6, 10):
        bs.publish(pub, sent, b"t/b", b"m%d" % i, 1 + (i % 2), i + 1)
    model.take(sub, ack=False)
    sub.drop()
    for i in range(10, 14):
        bs.publish(pub, sent, b"t/c", b"m%d" % i, 1 + (i % 2), i + 1)
    bs.collect_acks(pub, sent)


def check(fs, n, acked):
    if not acked:
        state = {"acked": []}
    else:
        state = acked[0]
    sim = bs.Sim(bs.config(fs))  # the broker starts on whatever the flash kept
    model = bs.Subscriber(state)
    sub = bs.Client(sim, b"sub", clean=False)
    for _ in range(20):
        if not model.take(sub, ack=True):
            break
    delivered = state["delivered"]
    for payload in state["acked"]:
        if payload not in delivered:
            return "acknowledged %r never delivered" % payload
    for payload in delivered:
        i = int(payload[1:])
        if i % 2 == 1 and delivered[payload] > 1:
            return "QoS 2 %r delivered %d times" % (payload, delivered[payload])
    return None


def wear(progsize=32):
    """Erases of the flash for 1000 QoS 1 messages queued for an offline subscriber, and
    writes for 1000 to an online subscriber that acknowledges at once; LittleFS mounted with
    program (and read) size progsize, the store's erase estimate on the model for it."""
    from ubroker import store_log

    model = {32: store_log.WEAR_PROG32, 256: store_log.WEAR_PROG256}[progsize]
    store_log.Store.inline, store_log.Store.small, store_log.Store.meta = model
    mount = {"progsize": progsize, "readsize": progsize}
    out = {}

    def offline(pubs, window, name):
        """pubs publishers, each with window messages in flight (paho's default is 20), send
        1000 QoS 1 messages as fast as they are acknowledged; what arrives in one pass of the
        loop shares one commit. pubs=1, window=1 is a sensor sending now and then."""
        def run(fs):
            sim = bs.Sim(bs.config(fs, store_size=200 * 1024, max_queued_messages=1000,
                                   max_queued_bytes=1 << 20))
            sub = bs.Client(sim, b"sub", clean=False)
            sub.send(bs.subscribe_pkt(1, b"w/#", 1))
            sub.drop()
            clients = [bs.Client(sim, b"pub%d" % k) for k in range(pubs)]
            dev = powercut.current_device
            dev.reset_counters()
            sent = 0
            while sent < 1000:
                for c in clients:
                    c.conn.rx = None
                    burst = b"".join(bs.encode_publish(b"w/x", b"reading %04d" % (sent + j), 1,
                                                      False, False, (sent + j) % 65535 + 1)
                                     for j in range(window))
                    sent += window
                    # one read: all publishers' messages are handled before the pass ends
                    sv = sim.sv
                    sv.rbuf[: len(burst)] = burst
                    sv.consume(c.conn, len(burst))
                sim.end_pass()
                for c in clients:
                    c.packets()
            out[name] = dev.stats()
            out[name]["estimated"] = sim.sv.persist.store.wear / 10  # what $SYS reports
        return run

    def online(fs):
        sim = bs.Sim(bs.config(fs))
        sub = bs.Client(sim, b"sub", clean=False)
        sub.send(bs.subscribe_pkt(1, b"w/#", 1))
        sub.packets()
        model = bs.Subscriber({})
        pub = bs.Client(sim, b"pub")
        dev = powercut.current_device
        dev.reset_counters()
        for i in range(1000):
            pub.send(bs.encode_publish(b"w/x", b"reading %04d" % i, 1, False, False, i % 65535 + 1))
            model.take(sub, ack=True)
            pub.packets()
        out["online"] = dev.stats()
        out["online_delivered"] = len(model.st["delivered"])

    powercut.erases_for(offline(4, 20, "offline_4x20"), blocks=128, mount_opts=mount)
    powercut.erases_for(offline(1, 20, "offline_1x20"), blocks=128, mount_opts=mount)
    powercut.erases_for(offline(1, 1, "offline_single"), blocks=128, mount_opts=mount)
    powercut.erases_for(online, blocks=128, mount_opts=mount)
    return out


if __name__ == "__main__":
    if sys.argv[1] == "sweep":
        maxp = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] != "all" else None
        torn = len(sys.argv) > 3 and sys.argv[3] == "torn"
        summary = powercut.sweep(scenario, check, max_points=maxp, blocks=64, torn=torn)
        print(json.dumps({k: summary[k] for k in ("total", "tried", "cut", "failures", "details")}))
    else:
        print(json.dumps(wear(int(sys.argv[2]) if len(sys.argv) > 2 else 32)))
