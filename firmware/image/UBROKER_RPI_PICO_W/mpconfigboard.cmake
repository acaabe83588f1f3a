# ubroker's image for the Raspberry Pi Pico W (docs/firmware-image.md): MicroPython's own
# RPI_PICO_W board, without Bluetooth, with the broker frozen into flash (manifest.py) and
# lwIP's TCP limits raised (mpconfigboard.h). `ubroker firmware --board rp2-pico-w-image` runs
# `make -C ports/rp2 BOARD_DIR=<this folder>` in a MicroPython source tree.

include(${MICROPY_PORT_DIR}/boards/RPI_PICO_W/mpconfigboard.cmake)

# The same hardware: the stock board's pin names (LED and the CYW43's WL_GPIO pins).
set(MICROPY_BOARD_PINS ${MICROPY_PORT_DIR}/boards/RPI_PICO_W/pins.csv)

# The broker has no use for Bluetooth, and BTstack's buffers are static RAM, which on the
# RP2040 comes out of the GC heap (the heap is what the linker leaves: memmap_mp_rp2040.ld).
set(MICROPY_PY_BLUETOOTH OFF)
set(MICROPY_BLUETOOTH_BTSTACK OFF)
set(MICROPY_PY_BLUETOOTH_CYW43 OFF)
# Without Bluetooth nothing else brings the pico-sdk's pico/cyw43_driver.h onto the include
# path that its own cyw43_bus_pio_spi.c needs (MicroPython v1.28 builds no CYW43 board without
# BTstack), so link the headers in once the port has made its target (CMake 3.19 or newer).
cmake_language(DEFER CALL target_link_libraries ${MICROPY_TARGET} pico_cyw43_driver_headers)

# The stock board's cmake points this at its own manifest; ours names the feature groups.
set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)
