"""The BME280 example driver (firmware/ubroker/sensor_bme280.py) against a fake I2C bus holding
registers as a BME280 would: calibration, chip id, raw readings. The expected values are
computed here independently, with the datasheet's floating-point formulas (BME280 datasheet
section 8.1), while the driver uses the integer ones (section 4.2.3); and for temperature and
pressure, the worked example of the Bosch BMP280 datasheet (same formulas and calibration
layout): dig_T1..dig_P9 below with adc_T 519888, adc_P 415148 give 25.08 C and 100653.27 Pa.
That datasheet has no humidity; the humidity calibration here is made up within the
registers' ranges, once with positive and once with negative dig_H4/dig_H5."""

import os
import struct
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "firmware"))

from ubroker import sensor_bme280 as bme280  # noqa: E402
from ubroker.sensors import Unavailable  # noqa: E402

ADDR = 0x76
# The BMP280 datasheet's example calibration (section 3.12).
T_P = dict(T1=27504, T2=26435, T3=-1000, P1=36477, P2=-10685, P3=3024, P4=2855, P5=140, P6=-7,
           P7=15500, P8=-14600, P9=6000)
HUM_A = dict(H1=75, H2=362, H3=0, H4=313, H5=50, H6=30)
HUM_B = dict(H1=20, H2=370, H3=12, H4=-50, H5=-7, H6=-20)


class FakeI2C:
    """The two calls the driver uses, on a 256-byte register file; another address answers
    as MicroPython's I2C does when nothing acknowledges (OSError ENODEV)."""

    def __init__(self, regs, addr=ADDR):
        self.regs = regs
        self.addr = addr
        self.writes = []

    def _check(self, addr):
        if addr != self.addr:
            raise OSError(19, "ENODEV")

    def readfrom_mem(self, addr, reg, n):
        self._check(addr)
        return bytes(self.regs[reg:reg + n])

    def writeto_mem(self, addr, reg, buf):
        self._check(addr)
        self.writes.append((reg, bytes(buf)))
        self.regs[reg:reg + len(buf)] = buf


def registers(cal, adc_t, adc_p, adc_h, chip=0x60):
    """The register file of a BME280 with these calibration values and raw readings, laid
    out as the datasheet's memory map (tables 16 and 18) says."""
    r = bytearray(256)
    r[0xD0] = chip
    r[0x88:0x88 + 24] = struct.pack("<HhhHhhhhhhhh", cal["T1"], cal["T2"], cal["T3"], cal["P1"], cal["P2"],
                                    cal["P3"], cal["P4"], cal["P5"], cal["P6"], cal["P7"], cal["P8"], cal["P9"])
    r[0xA1] = cal["H1"]
    r[0xE1:0xE3] = struct.pack("<h", cal["H2"])
    r[0xE3] = cal["H3"]
    h4, h5 = cal["H4"] & 0xFFF, cal["H5"] & 0xFFF  # 12-bit two's complement
    r[0xE4] = h4 >> 4
    r[0xE5] = (h4 & 0x0F) | (h5 & 0x0F) << 4
    r[0xE6] = h5 >> 4
    r[0xE7] = cal["H6"] & 0xFF
    r[0xF7:0xFF] = bytes([adc_p >> 12, (adc_p >> 4) & 0xFF, (adc_p & 0x0F) << 4,
                          adc_t >> 12, (adc_t >> 4) & 0xFF, (adc_t & 0x0F) << 4,
                          adc_h >> 8, adc_h & 0xFF])
    return r


def datasheet_float(cal, adc_t, adc_p, adc_h):
    """(C, Pa, %RH) by the datasheet's double-precision formulas."""
    c = cal
    var1 = (adc_t / 16384.0 - c["T1"] / 1024.0) * c["T2"]
    var2 = ((adc_t / 131072.0 - c["T1"] / 8192.0) * (adc_t / 131072.0 - c["T1"] / 8192.0)) * c["T3"]
    t_fine = var1 + var2
    t = t_fine / 5120.0

    var1 = t_fine / 2.0 - 64000.0
    var2 = var1 * var1 * c["P6"] / 32768.0
    var2 = var2 + var1 * c["P5"] * 2.0
    var2 = var2 / 4.0 + c["P4"] * 65536.0
    var1 = (c["P3"] * var1 * var1 / 524288.0 + c["P2"] * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * c["P1"]
    p = 1048576.0 - adc_p
    p = (p - var2 / 4096.0) * 6250.0 / var1
    var1 = c["P9"] * p * p / 2147483648.0
    var2 = p * c["P8"] / 32768.0
    p = p + (var1 + var2 + c["P7"]) / 16.0

    h = t_fine - 76800.0
    h = (adc_h - (c["H4"] * 64.0 + c["H5"] / 16384.0 * h)) * \
        (c["H2"] / 65536.0 * (1.0 + c["H6"] / 67108864.0 * h * (1.0 + c["H3"] / 67108864.0 * h)))
    h = h * (1.0 - c["H1"] * h / 524288.0)
    h = min(max(h, 0.0), 100.0)
    return t, p, h


def test_datasheet_example():
    cal = dict(T_P, **HUM_A)
    bus = FakeI2C(registers(cal, 519888, 415148, 27000))
    t, hpa, h = bme280.BME280(bus, ADDR).read()
    assert abs(t - 25.08) < 0.005
    assert abs(hpa * 100 - 100653.27) < 0.5
    ft, fp, fh = datasheet_float(cal, 519888, 415148, 27000)
    assert abs(ft - 25.08) < 0.005 and abs(fp - 100653.27) < 0.5  # the formulas here are right
    assert 0 < h < 100 and abs(h - fh) < 0.05


# (humidity calibration, adc_T, adc_P, adc_H): 25 C / 1007 hPa, cold / high, warm / low,
# each with a raw humidity that lands mid-range (a clamped 0 or 100 would prove little).
CASES = [
    (HUM_A, 519888, 415148, 27000),
    (HUM_A, 430000, 300000, 30000),
    (HUM_A, 600000, 500000, 29000),
    (HUM_B, 519888, 415148, 5000),
    (HUM_B, 430000, 300000, 7000),
    (HUM_B, 600000, 500000, 9000),
]


@pytest.mark.parametrize("hum,adc_t,adc_p,adc_h", CASES)
def test_integer_formulas_match_float_ones(hum, adc_t, adc_p, adc_h):
    cal = dict(T_P, **hum)
    bus = FakeI2C(registers(cal, adc_t, adc_p, adc_h))
    t, hpa, h = bme280.BME280(bus, ADDR).read()
    ft, fp, fh = datasheet_float(cal, adc_t, adc_p, adc_h)
    assert 20 < fh < 80
    assert abs(t - ft) < 0.01           # integer result in hundredths of a degree
    assert abs(hpa * 100 - fp) < 1.0    # Q24.8 Pa
    assert abs(h - fh) < 0.05           # Q22.10 %RH


@pytest.mark.parametrize("adc_h,expected", [(0, 0.0), (65535, 100.0)])
def test_humidity_is_clamped_as_the_datasheet_says(adc_h, expected):
    cal = dict(T_P, **HUM_A)
    t, hpa, h = bme280.BME280(FakeI2C(registers(cal, 519888, 415148, adc_h)), ADDR).read()
    assert datasheet_float(cal, 519888, 415148, adc_h)[2] == expected
    assert h == expected


def test_setup_writes_normal_mode_with_humidity_first():
    bus = FakeI2C(registers(dict(T_P, **HUM_A), 519888, 415148, 27000))
    bme280.BME280(bus, ADDR)
    regs = [w[0] for w in bus.writes]
    # ctrl_hum only takes effect with a later ctrl_meas write; config before normal mode.
    assert regs == [0xF2, 0xF5, 0xF4]
    assert bus.regs[0xF4] & 0x03 == 0x03, "normal mode: the sensor measures by itself"
    assert bus.regs[0xF2] & 0x07 and bus.regs[0xF4] >> 5 and (bus.regs[0xF4] >> 2) & 0x07, "no channel skipped"


def test_before_the_first_measurement_there_is_no_value():
    bus = FakeI2C(registers(dict(T_P, **HUM_A), 0x80000, 0x80000, 0x8000))
    sensors = bme280.sensors(bus=bus)
    assert [s.read() for s in sensors] == [None, None, None]


def test_factory_gives_three_named_sensors():
    bus = FakeI2C(registers(dict(T_P, **HUM_A), 519888, 415148, 27000), addr=0x77)
    sensors = bme280.sensors(bus=bus, addr=0x77, name="outdoor")
    assert [(s.name, s.unit) for s in sensors] == [
        ("outdoor/temperature", "C"), ("outdoor/pressure", "hPa"), ("outdoor/humidity", "%")]
    t, p, h = [s.read() for s in sensors]
    assert abs(t - 25.08) < 0.005 and abs(p - 1006.5327) < 0.005 and 0 < h < 100


def test_wrong_chip_or_address_is_reported():
    regs = registers(dict(T_P, **HUM_A), 519888, 415148, 27000, chip=0x58)  # a BMP280
    with pytest.raises(Unavailable, match="not a BME280"):
        bme280.BME280(FakeI2C(regs), ADDR)
    with pytest.raises(OSError):
        bme280.BME280(FakeI2C(registers(dict(T_P, **HUM_A), 519888, 415148, 27000), addr=0x77), ADDR)
