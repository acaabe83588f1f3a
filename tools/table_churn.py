"""What keys coming and going do to a MicroPython dict, and what buffers.rebuild() undoes:
the time of a lookup of an absent key (every new client id, filter or retained topic is
one) in a 1,024-key session table, fresh, after 15,000 client ids came and went with
nothing done, and after the same churn with the broker's rule (a table that lost half its
size in keys is rebuilt at the next insert). Run in the MicroPython unix port:

    MICROPYPATH=firmware .venv/bin/micropython tools/table_churn.py"""

import time

from ubroker.buffers import rebuild, table

N = 1024
LIVE = 16  # client ids connected at any moment
CHURN = 15000


def miss_us(d):
    k = b"absent"
    t = time.ticks_us()
    for _ in range(2000):
        d.get(k)
    return time.ticks_diff(time.ticks_us(), t) / 2000


def churn(d, rule):
    live = []
    gone = 0
    for i in range(CHURN):
        if rule and gone > N >> 1:
            d = rebuild(d, N)
            gone = 0
        k = b"client-%d" % i
        d[k] = i
        live.append(k)
        if len(live) > LIVE:
            del d[live.pop(0)]
            gone += 1
    return d


print("fresh table:               %.2f us a miss" % miss_us(table(N)))
print("after churn:               %.2f us a miss" % miss_us(churn(table(N), False)))
print("after churn, with rebuild: %.2f us a miss" % miss_us(churn(table(N), True)))
