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

The profile's comments say where each figure comes from. A profile without the line (unix)
has nothing to check here. A board running ubroker's firmware image (firmware.STOCK) has its
stock board's stack with what the image's board definition raises (firmware/image/FOLDER/
mpconfigboard.h, sdkconfig.board: LWIP_NAMES), read from there, not restated in the profile."""

import os

from . import firmware, paths, profiles

# limit -> (its name in a message, the parts of a config it counts)
LIMITS = {
    "sockets": ("sockets", ("clients", "listeners", "bridges")),
    "tcp": ("TCP connections besides the listeners", ("clients", "bridges")),
    "listeners": ("listeners", ("listeners",)),
}
# a board definition's setting -> the limit it raises in an image
LWIP_NAMES = {"CONFIG_LWIP_MAX_SOCKETS": "sockets", "CONFIG_LWIP_MAX_ACTIVE_TCP": "tcp", "MEMP_NUM_TCP_PCB": "tcp",
              "MEMP_NUM_TCP_PCB_LISTEN": "listeners"}
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


def image_stack(profile):
    """{limit: count} of the network stack in ubroker's firmware image that profile's board
    runs: its stock board's (stack()) with what the image's board definition raises; {} for
    a stock board."""
    board = profile.get("board")
    if board not in firmware.STOCK or not profile.get("frozen"):
        return {}
    out = stack(profiles.load_board(firmware.STOCK[board]))
    for name, count in firmware.board_settings(board).items():
        if name in LWIP_NAMES:
            out[LWIP_NAMES[name]] = count
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


def shortfall(profile, cfg, limits=None):
    """(limit, have, need) for the limit of the profile's stock stack (or limits) that cfg
    exceeds by the most clients (the one to name), or None when the stack holds cfg."""
    worst = None
    p = parts(cfg)
    for limit, have in (stack(profile) if limits is None else limits).items():
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
    """What to tell the user when cfg asks more of the board's stack (stock, or its image's)
    than it holds (naming the limit, the firmware, what the config needs and what to
    change), or None."""
    image = image_stack(profile)
    short = shortfall(profile, cfg, image or None)
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
    needs = "this config needs %s = %d" % (" + ".join(_count(k, p[k]) for k in counted), need)
    if image:
        return "%s's ubroker firmware image: %d %s; %s: %s" % (board, have, LIMITS[limit][0], needs, fix)
    image = image_board(board)
    return "%s stock MicroPython: %d %s; %s: %s or use the ubroker firmware image%s" % (
        board, have, LIMITS[limit][0], needs, fix, " (--board %s)" % image if image else "")
