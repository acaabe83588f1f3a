"""The firmware type-checks (mypy) against the MicroPython stubs of every board, and the check
has teeth: code using a module or function that a board lacks fails for that board only.
The stub packages are installed on first use into .venv/mpy-stubs/ (pinned in
host_tools/ubroker_tools/typecheck.py)."""

import os
import re

import pytest

from ubroker_tools import paths, typecheck

BOARDS = sorted(typecheck.BOARD_STUBS)


def test_every_board_has_stubs():
    assert set(BOARDS) == set(paths.known_boards())


def firmware_files(board):
    files = ["ubroker", "main.py"]
    if board == "unix":
        files.append("unix_main.py")
    return files


@pytest.mark.parametrize("board", BOARDS)
def test_firmware_typechecks(board):
    rc, out = typecheck.run_mypy(board, firmware_files(board))
    n = int(re.search(r"(?:checked|in) (\d+) source files?", out).group(1))
    modules = len([f for f in os.listdir(os.path.join(paths.FIRMWARE, "ubroker")) if f.endswith(".py")])
    assert n >= modules + 1, out
    assert typecheck.firmware_errors(out) == [], out


PROBES = {
    "uses_network.py": "import network\nnetwork.WLAN(network.STA_IF).active(True)\n",
    "uses_pin.py": "import machine\nmachine.Pin(2, machine.Pin.OUT).value(1)\n",
    "uses_rp2.py": "import rp2\nrp2.bootsel_button()\n",
    "uses_esp32.py": "import esp32\nesp32.mcu_temperature()\n",
    "typo.py": "import time\ntime.ticks_msec()\n",
    "fine.py": "import time, gc, select, socket\ntime.ticks_diff(time.ticks_ms(), 0)\ngc.mem_free()\n",
}
# board -> the probes that must fail there
MUST_FAIL = {
    "unix": {"uses_network.py", "uses_pin.py", "uses_rp2.py", "uses_esp32.py", "typo.py"},
    "esp32": {"uses_rp2.py", "uses_esp32.py", "typo.py"},  # the original ESP32 has only raw_temperature()
    "esp32s3": {"uses_rp2.py", "typo.py"},
    "rp2-pico-w": {"uses_esp32.py", "typo.py"},
    "rp2-pico2-w": {"uses_esp32.py", "typo.py"},
    "esp32-image": {"uses_rp2.py", "uses_esp32.py", "typo.py"},
    "rp2-pico-w-image": {"uses_esp32.py", "typo.py"},
}


@pytest.mark.parametrize("board", BOARDS)
def test_check_catches_what_a_board_lacks(board, tmp_path):
    for name, text in PROBES.items():
        (tmp_path / name).write_text(text)
    rc, out = typecheck.run_mypy(board, sorted(PROBES), cwd=str(tmp_path))
    failed = {e.split(":")[0] for e in typecheck.firmware_errors(out)}
    assert failed == MUST_FAIL[board], out
