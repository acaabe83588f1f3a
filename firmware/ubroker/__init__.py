"""ubroker: an MQTT 3.1.1 broker for MicroPython gateways (ESP32, Pico W, the unix port)."""

VERSION = "0.1.0"
