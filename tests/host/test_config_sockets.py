"""The board profiles promise only the clients that stock MicroPython's network stack can hold,
and `ubroker config --check` says, naming the sockets and the firmware, when a config asks the
stack for more: clients, listeners and bridge links all take from it (host_tools/
ubroker_tools/sockets.py)."""

import os
import subprocess
import sys

import pytest

from ubroker_tools import config as configmod
from ubroker_tools import paths, profiles, sockets

UBROKER = os.path.join(os.path.dirname(sys.executable), "ubroker")
cfgmod = profiles.fwconfig()

# The stock stacks as the profiles must state them (the figures' sources are in each
# profile's comments: MicroPython v1.28.0's sdkconfig.base and lwipopts, ESP-IDF's and lwIP's
# defaults), and the clients that leaves beside the one listener.
STOCK = {
    "esp32": ({"sockets": 10, "tcp": 12}, 9),
    "esp32s3": ({"sockets": 10, "tcp": 12}, 9),
    "rp2-pico-w": ({"tcp": 5, "listeners": 8}, 5),
    "rp2-pico2-w": ({"tcp": 5, "listeners": 8}, 5),
}
BRIDGE = "connection cloud\naddress broker.example.net:1883\ntopic sensors/# out 1\n"


def ub(*args):
    return subprocess.run([UBROKER] + list(args), capture_output=True, text=True, timeout=60)


def check(board, tmp_path, text):
    path = tmp_path / "c.conf"
    path.write_text(text)
    return configmod.check(board, str(path)), str(path)


@pytest.mark.parametrize("board", [b for b in paths.known_boards() if not b.endswith("-image")])
def test_profile_clients_are_what_the_stock_stack_holds(board):
    """Each board's max_connections is what its stock stack leaves for clients beside the one
    listener it configures, derived from its stock_lwip line; a board without one (unix)
    has no stack limit to state."""
    prof = profiles.load_board(board)
    stack = sockets.stack(prof)
    if board not in STOCK:
        assert stack == {}, "a stock stack for %s: add it to STOCK" % board
        return
    want, clients = STOCK[board]
    assert stack == want
    cfg = cfgmod.resolve(prof)
    assert len(cfg["listener"]) == 1 and not cfg.get("connection")
    left = [sockets.clients_left(k, n, cfg) for k, n in stack.items()]
    assert prof["max_connections"] == min(x for x in left if x is not None) == clients
    assert sockets.problem(board, prof, cfg) is None


def test_check_names_sockets_and_firmware_and_the_fix(tmp_path):
    """9 clients, 2 listeners and a bridge on an ESP32 need 12 sockets of stock MicroPython's
    10: the check fails at the max_connections line, says so, and the count it advises
    passes."""
    text = "listener 1883 127.0.0.1\nlistener 1884 127.0.0.1\nmax_connections 9\n" + BRIDGE
    path = tmp_path / "c.conf"
    path.write_text(text)
    r = ub("config", "--board", "esp32", "--check", str(path))
    assert r.returncode == 1, r.stdout + r.stderr
    assert ("%s:3: esp32 stock MicroPython: 10 sockets; this config needs 9 clients + 2 listeners + 1 bridge "
            "= 12: lower max_connections to 7 or use the ubroker firmware image (--board esp32-image)" % path) in r.stderr, \
        r.stderr
    path.write_text(text.replace("max_connections 9", "max_connections 7"))
    r = ub("config", "--board", "esp32", "--check", str(path))
    assert r.returncode == 0 and "OK for board esp32" in r.stdout, r.stderr


def test_a_bridge_takes_a_client_s_place(tmp_path):
    """The profile's own max_connections with a bridge: one connection too many for the stack
    (a Pico W's 5 TCP connections; an ESP32's 10 sockets with the listener), reported at the
    config, not at a line, since the user did not set max_connections. The way out names
    the image board of the same hardware where there is one (boards/BOARD-image.conf)."""
    problems, path = check("rp2-pico-w", tmp_path, BRIDGE)
    assert problems == ["%s: rp2-pico-w stock MicroPython: 5 TCP connections besides the listeners; this config "
                        "needs 5 clients + 1 bridge = 6: lower max_connections to 4 or use the ubroker firmware "
                        "image (--board rp2-pico-w-image)" % path], problems
    problems, path = check("esp32", tmp_path, BRIDGE)
    assert len(problems) == 1 and "9 clients + 1 listener + 1 bridge = 11: lower max_connections to 8" in problems[0]
    assert check("esp32", tmp_path, BRIDGE + "max_connections 8\n")[0] == []
    problems, path = check("rp2-pico2-w", tmp_path, BRIDGE)  # no image for the Pico 2 W
    assert len(problems) == 1 and problems[0].endswith("or use the ubroker firmware image"), problems


# The image boards' stacks as their board definitions raise them (firmware/image/), and the
# connections each profile keeps beside its clients and one listener (its comments say why).
IMAGE = {
    "esp32-image": ({"sockets": 48, "tcp": 56}, 3),  # a bridge link, a WebSockets listener, a status page
    "rp2-pico-w-image": ({"tcp": 40, "listeners": 8}, 4),  # a bridge link, a status page, 2 refused
}


@pytest.mark.parametrize("board", sorted(IMAGE))
def test_an_image_profile_is_checked_against_its_image_s_stack(board, tmp_path):
    """A board running ubroker's firmware image is checked against the stack its board
    definition raises, not stock MicroPython's: the profile's clients, its listener and what
    it keeps spare fit it exactly, a bridge fits, and one client more than the stack leaves
    is refused with the count that fits and no advice to use the image it runs."""
    prof = profiles.load_board(board)
    want, spare = IMAGE[board]
    assert sockets.stack(prof) == {} and sockets.image_stack(prof) == want
    cfg = cfgmod.resolve(prof)
    left = min(x for x in (sockets.clients_left(k, n, cfg) for k, n in want.items()) if x is not None)
    assert prof["max_connections"] == left - spare
    assert check(board, tmp_path, "")[0] == [] and check(board, tmp_path, BRIDGE)[0] == []
    text = BRIDGE + "max_connections %d\n" % left
    problems, path = check(board, tmp_path, text)
    what = "48 sockets; this config needs %d clients + 1 listener + 1 bridge = 49" % left if "esp32" in board else \
        "40 TCP connections besides the listeners; this config needs %d clients + 1 bridge = 41" % left
    assert problems == ["%s:4: %s's ubroker firmware image: %s: lower max_connections to %d" % (
        path, board, what, left - 1)], problems
    assert check(board, tmp_path, BRIDGE + "max_connections %d\n" % (left - 1))[0] == []


def test_listeners_a_pico_w_does_not_count_against_its_clients(tmp_path):
    """On a Pico W listeners have their own pool: a second listener leaves the 5 clients as
    they are, while on an ESP32 it takes a socket. Past the pool (8), the check asks for fewer
    listeners; so it does when listeners alone leave no socket for a client."""
    two = "listener 1883 0.0.0.0\nlistener 1884 0.0.0.0\nallow_anonymous true\n"
    assert check("rp2-pico-w", tmp_path, two)[0] == []
    problems = check("esp32", tmp_path, two)[0]
    assert len(problems) == 1 and "lower max_connections to 8" in problems[0], problems
    nine = "".join("listener %d 0.0.0.0\n" % (1883 + i) for i in range(9)) + "allow_anonymous true\n"
    problems = check("rp2-pico-w", tmp_path, nine + "max_connections 1\n")[0]
    assert len(problems) == 1 and "8 listeners; this config needs 9 listeners = 9: use fewer listeners" \
        in problems[0], problems
    ten = nine + "listener 1892 0.0.0.0\n"
    problems = check("esp32", tmp_path, ten + "max_connections 1\n")[0]
    assert len(problems) == 1 and "needs 1 client + 10 listeners = 11: use fewer listeners or use" in problems[0]


def test_no_stack_limit_without_a_stock_stack(tmp_path):
    """The unix port has no stock_lwip line: listeners and bridges are not counted there."""
    text = "".join("listener %d 127.0.0.1\n" % (1883 + i) for i in range(12)) + BRIDGE
    assert check("unix", tmp_path, text)[0] == []


@pytest.mark.parametrize("word", ["sockets", "sockets=0", "pcbs=5", "tcp=five"])
def test_a_bad_stock_lwip_word_is_refused(word):
    with pytest.raises(ValueError, match="stock_lwip expects LIMIT=COUNT"):
        sockets.stack({"stock_lwip": "tcp=5 " + word})


@pytest.mark.parametrize("board", sorted(STOCK))
def test_template_says_what_the_stack_holds(board, tmp_path):
    """`ubroker config --init` says, beside max_connections, what the stock stack holds."""
    text = configmod.default_config(board)
    assert "# Stock MicroPython's network stack: %s." % sockets.describe(profiles.load_board(board)) in text
    assert "#max_connections %d\n" % STOCK[board][1] in text
