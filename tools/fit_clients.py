"""How many subscribed clients fit in a board's heap: test_memory's scenario (each client
connects, then subscribes to its own topic at QoS 1) against `ubroker run --board B --heap H`,
for several heap sizes, counting until the first refusal or failure. The esp32 profile must
hold its 64 clients at 100k; the heaps below show the margin.

    .venv/bin/python tools/fit_clients.py [--board esp32] [--clients 64] 100k 99k 98k 97k
    .venv/bin/python tools/fit_clients.py --data /tmp/fit [--persistent] 100k   # store on

Set UBROKER_FIRMWARE=<tree>/firmware to measure another firmware tree."""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
import mqttraw  # noqa: E402

UBROKER = os.path.join(ROOT, ".venv", "bin", "ubroker")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fit(board, heap, clients, data=None, clean=True):
    port = free_port()
    # The profile's max_connections is what stock MicroPython's network stack holds; this
    # measures the heap, so the client table is as large as the clients asked for.
    conf = os.path.join(ROOT, "build", "fit-%d.conf" % port)
    os.makedirs(os.path.dirname(conf), exist_ok=True)
    with open(conf, "w") as f:
        f.write("max_connections %d\n" % clients)
    cmd = [UBROKER, "run", "--board", board, "--port", str(port), "--heap", heap, "--config", conf]
    if data:
        shutil.rmtree(data, ignore_errors=True)
        cmd += ["--data", data]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    held = []
    try:
        for _ in range(150):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        for i in range(clients):
            try:
                r = mqttraw.RawClient(port, timeout=5)
                r.send(mqttraw.connect("fit%03d" % i, keepalive=0, clean=clean))
                pk = r.recv_packet(5)
                if pk is None or pk.type != 2 or pk.body != b"\x00\x00":
                    break
                r.send(mqttraw.subscribe(1, ("fit/%d" % i, 1)))
                pk = r.recv_packet(5)
                if pk is None or pk.type != 9 or pk.body[-1] != 1:
                    break
            except OSError:
                break
            held.append(r)
        return len(held)
    finally:
        for r in held:
            r.close()
        p.terminate()
        p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--board", default="esp32")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--data", help="a folder for the durable store (emptied first): persistence on, "
                                   "as on a board whose profile has flash_store")
    ap.add_argument("--persistent", action="store_true", help="clients connect with clean session 0")
    ap.add_argument("heaps", nargs="+")
    args = ap.parse_args()
    for h in args.heaps:
        n = fit(args.board, h, args.clients, args.data, not args.persistent)
        print("%s heap %s%s%s: %d of %d clients" % (args.board, h, " --data" if args.data else "",
                                                    " persistent" if args.persistent else "", n, args.clients),
              flush=True)


if __name__ == "__main__":
    main()
