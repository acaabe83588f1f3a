# ubroker's image for an ESP32 without PSRAM (docs/firmware-image.md): MicroPython's
# ESP32_GENERIC without Bluetooth, with the broker frozen into flash (manifest.py) and lwIP's
# socket limits raised (sdkconfig.board). `ubroker firmware --board esp32-image` runs
# `make -C ports/esp32 BOARD_DIR=<this folder>` in a MicroPython source tree, with ESP-IDF's
# environment set up (idf.py on PATH).

# ESP32_GENERIC's settings less boards/sdkconfig.ble: no Bluetooth controller, whose memory
# would otherwise be reserved at boot.
set(SDKCONFIG_DEFAULTS
    boards/sdkconfig.base
    ${MICROPY_BOARD_DIR}/sdkconfig.board
)

set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)
