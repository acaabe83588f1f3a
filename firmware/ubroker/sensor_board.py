"""Built-in sensors of a board: free heap (every port, the unix port too), the chip's own
temperature (RP2040/RP2350: ADC channel 4; ESP32: esp32.mcu_temperature() where the port has
it, else the uncalibrated raw_temperature()) and the WiFi signal strength of the station
interface. Which a board has is listed by `sensor` lines in its profile (boards/*.conf);
a constructor raises Unavailable where the port lacks the sensor."""

import gc
import sys

from .sensors import Unavailable


class HeapFree:
    name = "heap_free"
    unit = "B"
    interval = 0

    def read(self):
        return gc.mem_free()


class ChipTemp:
    name = "chip_temp"
    unit = "C"
    interval = 0
    digits = 1

    def __init__(self):
        self.adc = None
        self.f = None
        if sys.platform == "rp2":
            import machine

            self.adc = machine.ADC(4)
        elif sys.platform == "esp32":
            import esp32

            # getattr: the original ESP32 port has only raw_temperature (Fahrenheit), the
            # S2/S3/C3 ports only mcu_temperature (Celsius).
            self.f = getattr(esp32, "mcu_temperature", None)
            if self.f is None:
                raw = getattr(esp32, "raw_temperature", None)
                if raw is None:
                    raise Unavailable("this esp32 port has no temperature call")
                self.f = lambda: (raw() - 32) / 1.8
        else:
            raise Unavailable("no chip temperature sensor on %s" % sys.platform)

    def read(self):
        if self.f is not None:
            return self.f()
        # RP2040 / RP2350 datasheets: 0.706 V at 27 C, -1.721 mV per degree, 3.3 V reference.
        volts = self.adc.read_u16() * 3.3 / 65535
        return 27 - (volts - 0.706) / 0.001721


class WifiRssi:
    name = "wifi_rssi"
    unit = "dBm"
    interval = 0

    def __init__(self):
        self.sta = None
        if sys.platform == "linux":
            raise Unavailable("the unix port has no WiFi interface of its own")
        else:
            import network

            self.sta = network.WLAN(network.STA_IF)

    def read(self):
        if not self.sta.isconnected():
            return None  # access-point mode or joining: no signal to report
        return self.sta.status("rssi")
