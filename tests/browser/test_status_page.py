"""The status page in a real browser: Debian's chromium, driven by selenium through
chromium-driver (both installed by the Makefile's web-deps step), against a real broker
in the MicroPython unix port. The page's own MQTT client reads $SYS over a WebSocket: the
page loads, its message counter grows while a publisher sends, and with users configured it
asks for a user name and password and shows the figures once signed in.

A screenshot of each page is kept in the test's folder; UBROKER_SCREENSHOT=PATH also saves
the first one there (docs/status-page.png is made so)."""

import os
import shutil
import threading
import time

import pytest
from conftest import free_port

from ubroker_tools.passwd import hash_line

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        why = "chromium and chromium-driver are not installed (`make web-deps` installs them)"
        if os.environ.get("CI"):
            pytest.fail(why)  # CI's machine installs them: a missing browser there is a fault
        pytest.skip(why)
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    o = webdriver.ChromeOptions()
    o.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,860",
              "--disable-gpu", "--no-first-run"):
        o.add_argument(a)
    d = webdriver.Chrome(options=o, service=Service(CHROMEDRIVER))
    d.set_page_load_timeout(30)
    yield d
    d.quit()


def start(broker_factory, config=""):
    """A broker with the esp32 profile, its MQTT listener (the fixture's port) and a
    WebSockets one, whose address is b.url. From the source: the unix port's compiled tree
    has no ubroker_web/ yet (run.py), and compiling at start needs a heap above the profile's."""
    port = free_port()
    b = broker_factory(config="listener 1883 127.0.0.1\nlistener %d 127.0.0.1\nprotocol websockets\n"
                       "sys_interval 1\nmax_connections 8\n%s" % (port, config),
                       extra=("--from-source",), heap="200k")
    b.url = "http://127.0.0.1:%d/" % port
    return b


def text(d, id_):
    return d.find_element("id", id_).text


def until(cond, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("not within %.0f s" % timeout)


def count(d, id_):
    t = text(d, id_).replace(",", "")
    return int(t) if t.isdigit() else None


def shot(d, tmp_path, name):
    path = tmp_path / name
    d.save_screenshot(str(path))
    return path


def publisher(broker, stop):
    c = broker.client()
    n = 0
    while not stop.is_set():
        c.publish("demo/counter", str(n), qos=0)
        n += 1
        time.sleep(0.02)


def test_the_page_shows_the_figures_and_the_counter_grows(broker_factory, browser, tmp_path):
    b = start(broker_factory, "sensor_interval 1\nsensor heap_free\nsensor_prefix demo/sensor\n")
    watcher = b.client()
    watcher.subscribe("demo/#", 0)  # messages out too, for the chart's second line
    browser.get(b.url)
    assert browser.title == "ubroker"
    until(lambda: text(browser, "state") == "connected")
    until(lambda: text(browser, "version").startswith("ubroker"))
    first = until(lambda: count(browser, "msgs-in") is not None) and count(browser, "msgs-in")
    stop = threading.Event()
    t = threading.Thread(target=publisher, args=(b, stop), daemon=True)
    t.start()
    try:
        until(lambda: count(browser, "msgs-in") > first + 50)
        until(lambda: text(browser, "rate-in").endswith("/s") and float(text(browser, "rate-in")[:-2]) > 5)
        # a few points on the chart; for the README's picture, a minute's worth
        time.sleep(20 if os.environ.get("UBROKER_SCREENSHOT") else 3)
        assert int(text(browser, "heap-used").split()[0].replace(",", "")) > 0
        clients = text(browser, "clients")
        assert "connected" in clients and "MQTT 3.1.1" in clients  # ubroker/clients/protocol/v311
        # the sensors' prefix came with the page (a cookie), their readings over MQTT
        until(lambda: "heap_free" in text(browser, "sensors") and " B" in text(browser, "sensors"))
        path = shot(browser, tmp_path, "status-page.png")
        if os.environ.get("UBROKER_SCREENSHOT"):
            shutil.copyfile(path, os.environ["UBROKER_SCREENSHOT"])
    finally:
        stop.set()
        t.join(5)


def test_with_users_the_page_asks_for_them_and_signs_in(broker_factory, browser, tmp_path):
    """MQTT-3.1.2-19/-21: the page's CONNECT carries the user name and password it asked for.
    An anonymous CONNECT is refused with return code 5 (MQTT 3.1.1 section 3.2.2.3), and
    the page then asks."""
    users = tmp_path / "users.txt"
    users.write_text(hash_line("alice", "wonder", 1000) + "\n")
    b = start(broker_factory, "password_file %s\n" % users)
    browser.get(b.url)
    form = until(lambda: browser.find_element("id", "login").is_displayed() and browser.find_element("id", "login"))
    assert text(browser, "version") == "-"  # nothing shown before signing in
    browser.find_element("id", "user").send_keys("alice")
    browser.find_element("id", "pass").send_keys("not it")
    browser.find_element("id", "go").click()
    until(lambda: form.is_displayed() and "wrong" in text(browser, "loginmsg"))
    assert text(browser, "version") == "-"
    browser.find_element("id", "pass").clear()
    browser.find_element("id", "pass").send_keys("wonder")
    browser.find_element("id", "go").click()
    until(lambda: text(browser, "state") == "connected as alice")
    until(lambda: text(browser, "version").startswith("ubroker"))
    assert not form.is_displayed()
    shot(browser, tmp_path, "signed-in.png")


def test_the_access_rules_hide_sys_from_a_user_not_allowed_it(broker_factory, browser, tmp_path):
    """A user whose rules do not let it read $SYS gets SUBACK 0x80 for $SYS/# (MQTT-3.9.3-2
    allows the failure code): the page says so and shows no figure."""
    users = tmp_path / "users.txt"
    users.write_text(hash_line("bob", "b", 1000) + "\n")
    acl = tmp_path / "acl.txt"
    acl.write_text("user bob\ntopic read sensors/#\n")
    b = start(broker_factory, "password_file %s\nacl_file %s\n" % (users, acl))
    browser.get(b.url)
    until(lambda: browser.find_element("id", "login").is_displayed())
    browser.find_element("id", "user").send_keys("bob")
    browser.find_element("id", "pass").send_keys("b")
    browser.find_element("id", "go").click()
    until(lambda: "may not read $SYS" in text(browser, "note"))
    time.sleep(1.5)  # a $SYS report would have come by now
    assert text(browser, "version") == "-" and text(browser, "msgs-in") == "-"


def test_a_user_allowed_part_of_sys_sees_that_part(broker_factory, browser, tmp_path):
    """$SYS/# is refused (SUBACK 0x80), the parts the rules allow are granted one by one:
    the page shows the clients and nothing else."""
    users = tmp_path / "users.txt"
    users.write_text(hash_line("carol", "c", 1000) + "\n")
    acl = tmp_path / "acl.txt"
    acl.write_text("user carol\ntopic read $SYS/broker/clients/#\n")
    b = start(broker_factory, "password_file %s\nacl_file %s\n" % (users, acl))
    browser.get(b.url)
    until(lambda: browser.find_element("id", "login").is_displayed())
    browser.find_element("id", "user").send_keys("carol")
    browser.find_element("id", "pass").send_keys("c")
    browser.find_element("id", "go").click()
    until(lambda: "hide part of $SYS" in text(browser, "note"))
    until(lambda: "connected" in text(browser, "clients"))
    time.sleep(1.5)  # a $SYS report would have come by now
    assert text(browser, "version") == "-" and text(browser, "msgs-in") == "-"
