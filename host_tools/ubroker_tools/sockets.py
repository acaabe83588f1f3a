"""The network stack's share of a configuration: what a config takes from the stack of a
board's stock MicroPython (lwIP), and whether that stack holds it. On the small boards the
stack runs out long before the heap does (docs/memory-and-boards.md, Boards).

A board profile states its stock stack in one line, `stock_lwip NAME=COUNT ...` (one key, not
three: each key a profile adds stays in the broker's settings, on the board's heap):

  sockets    sockets open at once (ESP-IDF's CONFIG_LWIP_MAX_SOCKETS); every listener, client
             connection and bridge link takes one
  tcp        TCP connections other than listeners (lwIP's MEMP_NUM_TCP_PCB); every client
             connection and bridge link takes one
  listeners  listening connections (lwIP's MEMP_NUM_TCP_PCB_LISTEN)

The profile's comments say where each figure comes from. A profile without the line (unix, or
an image whose firmware raised the limits) has nothing to check here."""

import os

from . import firmware, paths

# limit -> (its name in a message, the parts of a config it counts)
LIMITS = {
    "sockets": ("sockets", ("clients", "listeners", "bridges")),
    "tcp": ("TCP connections besides the listeners", ("clients", "bridges")),
    "listeners": ("listeners", ("listeners",)),
}
PART_NAMES = {"clients": ("client", "clients"), "listeners": ("listener", "listeners"),
              "bridges": ("bridge", "bridges")}


def stack(profile):
    """{limit: count} from the profile's stock_lwip line; {} without one. ValueError names a
    word that is not LIMIT=COUNT with a known LIMIT and a count of at least 1."""
    out = {}
    for word in profile.get("stock_lwip", "").split():
        name, eq, count = word.partition("=")
        if name not in LIMITS or not eq or not count.isdigit() or int(count) < 1:
            raise ValueError("stock_lwip expects LIMIT=COUNT with LIMIT one of %s, not '%s'"
                             % (", ".join(LIMITS), word))
        out[name] = int(count)
    return out


def parts(cfg):
    """{part: count} a resolved config takes from the stack: its clients (max_connections),
    listeners, and bridge links (one per `connection`)."""
    return {"clients": cfg["max_connections"], "listeners": len(cfg["listener"]),
            "bridges": len(cfg.get("connection") or ())}


def clients_left(limit, have, cfg):
    """Clients the limit leaves room for beside cfg's other parts it counts, or None if it
    does not count clients."""
    counted = LIMITS[limit][1]
    if "clients" not in counted:
        return None
    p = parts(cfg)
    return have - sum(p[k] for k in counted if k != "clients")


def shortfall(profile, cfg):
    """(limit, have, need) for the limit of the profile's stock stack that cfg exceeds by the
    most clients (the one to name), or None when the stack holds cfg."""
    worst = None
    p = parts(cfg)
    for limit, have in stack(profile).items():
        need = sum(p[k] for k in LIMITS[limit][1])
        if need > have and (worst is None or need - have > worst[2] - worst[1]):
            worst = (limit, have, need)
    return worst


def describe(profile):
    """The stock stack in words ("10 sockets, 12 TCP connections besides the listeners"), or
    "" for a profile without one."""
    return ", ".join("%d %s" % (n, LIMITS[k][0]) for k, n in stack(profile).items())


def _count(part, n):
    return "%d %s" % (n, PART_NAMES[part][n != 1])


def image_board(board):
    """The profile of the ubroker firmware image for board's hardware (firmware.STOCK), if
    there is one."""
    for image, stock in firmware.STOCK.items():
        if stock == board and os.path.exists(paths.board_file(image)):
            return image
    return None


def problem(board, profile, cfg):
    """What to tell the user when cfg asks more of the board's stock stack than it holds
    (naming the limit, the firmware, what the config needs and what to change), or None."""
    short = shortfall(profile, cfg)
    if short is None:
        return None
    limit, have, need = short
    p = parts(cfg)
    counted = [k for k in LIMITS[limit][1] if p[k]]
    left = clients_left(limit, have, cfg)
    if left is not None and left >= 1:
        fix = "lower max_connections to %d" % left
    else:
        fix = "use fewer %s" % " and ".join(PART_NAMES[k][1] for k in counted if k != "clients")
    image = image_board(board)
    return "%s stock MicroPython: %d %s; this config needs %s = %d: %s or use the ubroker firmware image%s" % (
        board, have, LIMITS[limit][0], " + ".join(_count(k, p[k]) for k in counted), need, fix,
        " (--board %s)" % image if image else "")
