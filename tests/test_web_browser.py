"""The outbox page in a real browser: Debian's Chromium, headless, driven by Selenium
through the system's chromedriver (nothing is downloaded), against the page served by a
real WSGI server on 127.0.0.1. Without Chromium the tests skip, and fail under CI=true.

Screenshots of each page go to ``$SIGNALBUS_SCREENSHOTS`` (default: a pytest tmp dir).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from signalbus.outbox import admin, browse, engine_of
from signalbus.outbox.worker import drain, runtime_of
from tests import webhost
from tests.webhost import FAIL, PERMANENT, join

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PREFIX = "/ops/outbox"

pytestmark = pytest.mark.signalbus_receiver_errors("log")


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return (f"{path} is missing: apt-get install -y chromium chromium-driver "
                    "(.ci/run does it)")
    return None


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    missing = _missing()
    if missing is not None:
        if IN_CI:
            pytest.fail(f"{missing} (CI=true: the browser tests must run)", pytrace=False)
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="signalbus-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                "--window-size=1360,1000", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    browser.implicitly_wait(0)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("SIGNALBUS_SCREENSHOTS")
    path = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    with webhost.host(database_url) as app:
        yield app


@pytest.fixture
def site(app: Flask, driver: Any) -> Iterator[str]:
    """The app served by werkzeug on 127.0.0.1, the browser signed in; its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    driver.delete_all_cookies()
    driver.get(base + "/login")
    try:
        yield base + PREFIX
    finally:
        server.shutdown()
        thread.join(5)


def shoot(driver: Any, shots: Path, name: str, request: pytest.FixtureRequest) -> None:
    driver.save_screenshot(str(shots / f"{name}-{request.node.callspec.id}.png"))


def by_id(driver: Any, ident: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, ident)


def navigates(driver: Any, action: Any) -> None:
    """Run ``action`` (a click, a key press) and wait until the next page has loaded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    action()
    WebDriverWait(driver, 10).until(expected_conditions.staleness_of(old))


def tile(driver: Any, name: str) -> str:
    from selenium.webdriver.common.by import By

    return str(by_id(driver, f"tile-{name}").find_element(By.CLASS_NAME, "value").text)


def test_the_overview_shows_the_counts_of_a_seeded_outbox(
        app: Flask, driver: Any, site: str, shots: Path, request: pytest.FixtureRequest
) -> None:
    from selenium.webdriver.common.by import By

    FAIL.add("b@example.com")
    PERMANENT.add("c@example.com")
    join(app, "a@example.com", "b@example.com", "c@example.com", "d@example.com")
    driver.get(site + "/")
    assert tile(driver, "pending") == "4"
    drain(app)
    join(app, "e@example.com")  # one left pending
    driver.get(site + "/")
    assert (tile(driver, "pending"), tile(driver, "done"), tile(driver, "retrying"),
            tile(driver, "dead")) == ("1", "4", "1", "1")
    row = driver.find_element(By.CSS_SELECTOR, 'tr[data-signal="web_member_joined"]')
    assert [td.text for td in row.find_elements(By.CSS_SELECTOR, "td.n")] == [
        "1", "4", "1", "1"]
    bars = driver.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar.ok")
    assert len(bars) == 60 and float(bars[-1].get_attribute("height") or 0) + \
        float(bars[-2].get_attribute("height") or 0) > 0
    shoot(driver, shots, "overview", request)


def test_retrying_a_dead_delivery_from_the_page_then_the_worker_delivers_it(
        app: Flask, driver: Any, site: str, shots: Path, request: pytest.FixtureRequest
) -> None:
    from selenium.webdriver.common.by import By

    PERMANENT.update({"a@example.com", "b@example.com"})
    FAIL.add("c@example.com")
    join(app, "a@example.com", "b@example.com", "c@example.com")
    drain(app)
    PERMANENT.clear()
    driver.get(site + "/deliveries?show=failing")
    shoot(driver, shots, "failing", request)
    driver.get(site + "/deliveries?show=dead")
    rows = driver.find_elements(By.CSS_SELECTOR, "#deliveries tbody tr")
    assert len(rows) == 2
    shoot(driver, shots, "dead", request)
    first = rows[0]
    delivery_id = int(first.get_attribute("data-delivery"))
    navigates(driver, first.find_element(By.CSS_SELECTOR, "button.retry-one").click)
    flash = driver.find_element(By.CSS_SELECTOR, ".flash.ok")
    assert flash.text == "1 delivery will be tried again now."
    assert len(driver.find_elements(By.CSS_SELECTOR, "#deliveries tbody tr")) == 1
    drain(app)
    assert admin.status(engine_of(runtime_of(app)))["deliveries"] == {
        "pending": 1, "delivered": 1, "dead": 1}
    retried = next(d for d in browse.problems(engine_of(runtime_of(app)), dead=True)["items"]
                   if d["id"] != delivery_id)
    assert retried["receiver"] == "tests.webhost:notify_slack"
    assert len([c for c in webhost.CALLS if c[0] == "notify_slack"]) == 1


def test_an_events_page_shows_its_attempts(
        app: Flask, driver: Any, site: str, shots: Path, request: pytest.FixtureRequest
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    FAIL.add("b@example.com")
    join(app, "b@example.com")
    drain(app)
    (item,) = browse.problems(engine_of(runtime_of(app)), dead=False)["items"]
    driver.get(site + "/")
    box = by_id(driver, "search")
    navigates(driver, lambda: box.send_keys(item["event_id"], Keys.ENTER))
    assert by_id(driver, "event-id").text == item["event_id"]
    assert by_id(driver, "event-state").text == "retrying"
    rows = {r.get_attribute("data-receiver"): r
            for r in driver.find_elements(By.CSS_SELECTOR, "#attempts tbody tr")}
    welcome = rows["tests.webhost:welcome"].find_elements(By.TAG_NAME, "td")
    slack = rows["tests.webhost:notify_slack"].find_elements(By.TAG_NAME, "td")
    assert welcome[1].text == "delivered with the event" and welcome[2].text == "1"
    assert slack[1].text == "pending" and slack[2].text == "1"
    assert slack[4].text == ("RuntimeError: posting to https://hooks.example/… failed with "
                             "Authorization: Bearer …")
    assert "b@example.com" in by_id(driver, "payload").text
    shoot(driver, shots, "event", request)
    driver.get(site + "/replay")
    shoot(driver, shots, "replay", request)
