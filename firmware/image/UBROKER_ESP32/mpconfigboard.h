// ubroker's ESP32 image: ESP32_GENERIC's names, and no Bluetooth (sdkconfig.board has no
// controller for it).
#define MICROPY_HW_BOARD_NAME "Generic ESP32 module (ubroker image)"
#define MICROPY_HW_MCU_NAME "ESP32"

#define MICROPY_PY_BLUETOOTH (0)
