"""What differs between boards, in one place: bringing the network up (WiFi station with
retries, access-point fallback) and the few calls the unix port lacks. The handlers never
look at sys.platform; main.py asks this module."""

import sys
import time

from micropython import const

UNIX = sys.platform == "linux"

# How long one WiFi join may take, and how many joins before the access-point fallback.
_JOIN_MS = const(15000)
_JOINS = const(3)
# CYW43 power-management word that turns power saving off (rp2 network docs; mqtt_as does so).
_RP2_PM_NONE = const(0xA11140)


def print_exception(e):
    try:
        sys.print_exception(e)  # type: ignore[attr-defined]  # MicroPython only
    except AttributeError:
        print(repr(e))


def sleep_ms(ms):
    time.sleep_ms(ms)


def _join(sta, ssid, password, log):
    if not sta.isconnected():
        sta.connect(ssid, password)
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < _JOIN_MS:
        if sta.isconnected():
            return True
        time.sleep_ms(250)
    return False


if sys.platform == "linux":

    def network_up(cfg, log):
        """The unix port has no network module: the host's network is already up."""
        return ""

else:
    import network

    def network_up(cfg, log):
        """Join the configured WiFi and return the board's address: the station's, else the
        access point's when wifi_ap_ssid is set and joining failed, else None (the caller
        retries). "" when the config names no WiFi."""
        ssid = cfg.get("wifi_ssid")
        if not ssid:
            log("no wifi_ssid in the config: WiFi stays off")
            return ""
        sta = network.WLAN(network.STA_IF)
        name = cfg.get("hostname")
        if name:
            # The mDNS responder takes the name as the interface comes up (rp2: active(True);
            # ESP32: the first connection since power-on), so it is set before; an interface
            # left up by boot.py or before a soft reset is taken down first.
            if sta.active():
                sta.active(False)
            try:
                network.hostname(name)
                log("hostname %s.local" % name)
            except (AttributeError, ValueError, OSError) as e:
                log("hostname %s not set: %s" % (name, e))
        sta.active(True)
        if sys.platform == "rp2":
            try:
                sta.config(pm=_RP2_PM_NONE)  # a broker must answer at once: no WiFi power save
            except (ValueError, OSError):
                pass
        for attempt in range(1, _JOINS + 1):
            log("joining WiFi %r (attempt %d of %d)" % (ssid, attempt, _JOINS))
            try:
                if _join(sta, ssid, cfg.get("wifi_password", ""), log):
                    return sta.ifconfig()[0]
            except OSError as e:
                log("WiFi error: %s" % e)
            try:
                sta.disconnect()
            except OSError:
                pass
            time.sleep_ms(1000 * attempt)
        ap_ssid = cfg.get("wifi_ap_ssid")
        if not ap_ssid:
            log("could not join %r" % ssid)
            return None
        sta.active(False)
        ap = network.WLAN(network.AP_IF)
        ap.active(True)
        password = cfg.get("wifi_ap_password")
        if password:
            ap.config(ssid=ap_ssid, key=password)
        else:
            ap.config(ssid=ap_ssid)
        log("could not join %r: opened access point %r" % (ssid, ap_ssid))
        return ap.ifconfig()[0]
