"""Example I2C sensor driver, and the model for adding one: the Bosch BME280 (temperature,
pressure, humidity). A driver is one module whose factory a `sensor` line names:

    sensor bme280 i2c=0 scl=22 sda=21 addr=0x76      # name=outdoor for a second one

The sensor runs in normal mode (it measures by itself once a second), so read() is a single
8-byte burst read of its latest result plus integer arithmetic: nothing waits for a
conversion inside the broker's loop. Register map and compensation formulas (the integer
ones, 32-bit for temperature and humidity, 64-bit for pressure) are the datasheet's (BME280
datasheet, sections 4.2.2, 4.2.3 and 5.4)."""

import sys

try:
    from micropython import const
except ImportError:  # CPython, for the unit tests

    def const(x):  # type: ignore[misc]
        return x


from .sensors import Unavailable

_CHIP_ID = const(0x60)  # a BMP280 answers 0x58: it has no humidity, and this driver refuses it
_REG_ID = const(0xD0)
_REG_CALIB_A = const(0x88)  # 0x88..0xA1: dig_T1..dig_P9, then dig_H1 at 0xA1
_REG_CALIB_B = const(0xE1)  # 0xE1..0xE7: dig_H2..dig_H6
_REG_CTRL_HUM = const(0xF2)
_REG_CTRL_MEAS = const(0xF4)
_REG_CONFIG = const(0xF5)
_REG_DATA = const(0xF7)  # press_msb .. hum_lsb, 8 bytes
# Oversampling x1 everywhere; standby 1000 ms (t_sb 101), filter off; normal mode (11).
_CTRL_HUM = const(0x01)
_CONFIG = const(0b101 << 5)
_CTRL_MEAS = const(0b001 << 5 | 0b001 << 2 | 0b11)
_SKIPPED = const(0x80000)  # a 20-bit result still at its reset value: no measurement yet


def _u16(b, i):
    return b[i] | b[i + 1] << 8


def _s16(b, i):
    v = b[i] | b[i + 1] << 8
    return v - 0x10000 if v & 0x8000 else v


def _s8(v):
    return v - 0x100 if v & 0x80 else v


def _div(a, b):
    """C's integer division (toward zero), as the datasheet's formulas assume."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


class BME280:
    def __init__(self, i2c, addr=0x76):
        self.i2c = i2c
        self.addr = addr
        chip = i2c.readfrom_mem(addr, _REG_ID, 1)[0]
        if chip != _CHIP_ID:
            raise Unavailable("the chip at 0x%02x is not a BME280 (id 0x%02x)" % (addr, chip))
        c = i2c.readfrom_mem(addr, _REG_CALIB_A, 26)
        self.T1 = _u16(c, 0)
        self.T2 = _s16(c, 2)
        self.T3 = _s16(c, 4)
        self.P1 = _u16(c, 6)
        self.P = [_s16(c, i) for i in range(8, 24, 2)]  # dig_P2..dig_P9
        self.H1 = c[25]
        h = i2c.readfrom_mem(addr, _REG_CALIB_B, 7)
        self.H2 = _s16(h, 0)
        self.H3 = h[2]
        # 12-bit signed values split over three registers (datasheet table 16).
        self.H4 = _s8(h[3]) * 16 | (h[4] & 0x0F)
        self.H5 = _s8(h[5]) * 16 | (h[4] >> 4)
        self.H6 = _s8(h[6])
        # ctrl_hum takes effect only with the following ctrl_meas write; config before
        # normal mode, which may ignore writes to it.
        i2c.writeto_mem(addr, _REG_CTRL_HUM, bytes([_CTRL_HUM]))
        i2c.writeto_mem(addr, _REG_CONFIG, bytes([_CONFIG]))
        i2c.writeto_mem(addr, _REG_CTRL_MEAS, bytes([_CTRL_MEAS]))

    def raw(self):
        d = self.i2c.readfrom_mem(self.addr, _REG_DATA, 8)
        adc_p = d[0] << 12 | d[1] << 4 | d[2] >> 4
        adc_t = d[3] << 12 | d[4] << 4 | d[5] >> 4
        adc_h = d[6] << 8 | d[7]
        return adc_t, adc_p, adc_h

    def compensate(self, adc_t, adc_p, adc_h):
        """(hundredths of C, Pa * 256, %RH * 1024) from raw readings: the datasheet's
        integer formulas."""
        T1 = self.T1
        var1 = (((adc_t >> 3) - (T1 << 1)) * self.T2) >> 11
        var2 = (((((adc_t >> 4) - T1) * ((adc_t >> 4) - T1)) >> 12) * self.T3) >> 14
        t_fine = var1 + var2
        t = (t_fine * 5 + 128) >> 8

        P2, P3, P4, P5, P6, P7, P8, P9 = self.P
        var1 = t_fine - 128000
        var2 = var1 * var1 * P6
        var2 = var2 + ((var1 * P5) << 17)
        var2 = var2 + (P4 << 35)
        var1 = ((var1 * var1 * P3) >> 8) + ((var1 * P2) << 12)
        var1 = (((1 << 47) + var1) * self.P1) >> 33
        if var1 == 0:
            p = 0  # the datasheet's guard against a division by zero
        else:
            p = 1048576 - adc_p
            p = _div(((p << 31) - var2) * 3125, var1)
            var1 = (P9 * (p >> 13) * (p >> 13)) >> 25
            var2 = (P8 * p) >> 19
            p = ((p + var1 + var2) >> 8) + (P7 << 4)

        v = t_fine - 76800
        v = ((((adc_h << 14) - (self.H4 << 20) - (self.H5 * v)) + 16384) >> 15) * \
            (((((((v * self.H6) >> 10) * (((v * self.H3) >> 11) + 32768)) >> 10) + 2097152) * self.H2 + 8192) >> 14)
        v = v - (((((v >> 15) * (v >> 15)) >> 7) * self.H1) >> 4)
        v = 0 if v < 0 else 419430400 if v > 419430400 else v
        return t, p, v >> 12

    def read(self):
        """(C, hPa, %RH), or None before the first measurement is done."""
        adc_t, adc_p, adc_h = self.raw()
        if adc_t == _SKIPPED:
            return None
        t, p, h = self.compensate(adc_t, adc_p, adc_h)
        return t / 100, p / 25600, h / 1024


class Reading:
    """One of the three values of a BME280 as a sensor of its own."""

    interval = 1  # the sensor measures once a second (t_sb 1000 ms)
    digits = 2

    def __init__(self, dev, name, unit, index):
        self.dev = dev
        self.name = name
        self.unit = unit
        self.index = index

    def read(self):
        v = self.dev.read()
        return None if v is None else v[self.index]


def sensors(i2c=0, addr=0x76, scl=None, sda=None, freq=100000, name="bme280", bus=None):
    """The factory a `sensor bme280 ...` line calls: the three readings of one BME280, on
    I2C bus `i2c` (its default pins, or scl/sda) or on an I2C-like object `bus`."""
    if bus is None:
        if sys.platform == "linux":
            raise Unavailable("the unix port has no I2C bus")
        import machine

        if scl is not None and sda is not None:
            bus = machine.I2C(i2c, scl=machine.Pin(scl), sda=machine.Pin(sda), freq=freq)
        else:
            bus = machine.I2C(i2c, freq=freq)
    dev = BME280(bus, addr)
    return [Reading(dev, name + "/temperature", "C", 0),
            Reading(dev, name + "/pressure", "hPa", 1),
            Reading(dev, name + "/humidity", "%", 2)]
