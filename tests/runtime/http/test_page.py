"""The status page (runtime/http/page.html) in headless Chromium (Debian's chromium and chromium-driver, driven by selenium).

The page is served by a tiny stdlib HTTP server in the test, with ``/api/status`` from a real ``StatusBoard`` that
the test feeds while the page is open; the integration test runs the real demo site with ``http:`` on and reads
the demo's events off the page's DOM. Set ``RTAUDIO_SCREENSHOT=1`` to rewrite docs/status-page.png from that test.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from rtaudio.config.site import HealthConfig
from rtaudio.runtime.checks import HealthChecks
from rtaudio.runtime.events import CaptionResult, Event, TagResult
from rtaudio.runtime.health import Health
from rtaudio.runtime.http.status import StatusBoard
from rtaudio.runtime.level import LevelReading
from tests.helpers import REPO, Broker, Subscriber, demo_site, free_port, http_server, wait_until

PAGE = REPO / "rtaudio" / "runtime" / "http" / "page.html"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
T0 = 1_800_000_000.0
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -e '.[test]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{path} is missing (Debian: apt-get install chromium chromium-driver; tools/dev.sh test installs them)"
    return None


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium through the Debian chromedriver; selenium-manager is never asked (the Service names the driver)."""
    missing = browser_missing()
    if missing:
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900", "--lang=en-US"):
        options.add_argument(argument)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console messages, for console_errors()
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, css: str, timeout: float = 15.0, condition: Callable[[list[Any]], bool] = bool) -> list[Any]:
    """The elements matching ``css`` once ``condition`` holds for them (polling, up to ``timeout`` s); the page's text on failure."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def found(d: Any) -> tuple[list[Any]] | None:
        elements = d.find_elements(By.CSS_SELECTOR, css)
        try:
            return (elements,) if condition(elements) else None  # a tuple: an empty list is a wanted answer too
        except StaleElementReferenceException:
            return None

    try:
        result = WebDriverWait(driver, timeout, poll_frequency=0.1).until(found)
    except TimeoutException:
        body = driver.execute_script("return document.body.innerText")
        raise AssertionError(f"no {css!r} (as wanted) within {timeout} s; the page reads:\n{body[:3000]}") from None
    assert result is not None  # until() returns only a true value
    return result[0]


def console_errors(driver: Any) -> list[str]:
    """The page's console errors so far (script errors, CSP violations, failed loads)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def one(driver: Any, css: str) -> Any:
    (element,) = wait_for(driver, css, condition=lambda found: len(found) == 1)
    return element


class StatusServer:
    """The page and ``/api/status`` (from ``board``) on a loopback port; ``fail`` makes the API answer 503; ``paths`` logs requests."""

    def __init__(self, board: StatusBoard):
        self.board, self.fail = board, False
        self.paths: list[str] = []

    def handler(self) -> type[BaseHTTPRequestHandler]:
        app = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                app.paths.append(self.path)
                if self.path == "/":
                    self._send(200, PAGE.read_bytes(), "text/html; charset=utf-8")
                elif self.path == "/api/status" and not app.fail:
                    self._send(200, json.dumps(app.board.snapshot(), allow_nan=False).encode(), "application/json")
                elif self.path == "/api/status":
                    self._send(503, b'{"error": "failing on purpose"}', "application/json")
                else:
                    self._send(404, b"not found", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

        return Handler


@pytest.fixture
def site() -> Iterator[tuple[StatusBoard, StatusServer, str]]:
    """A board (source "yard" counted in Health, checks on a settable clock) served with the page; yields (board, server, url)."""
    health = Health()
    yard = health.source("yard")
    yard.connected, yard.level_dbfs, yard.windows_processed = True, -40.0, 12
    yard.last_data = health.started
    health.engine = "onnxruntime-cpu"
    board = StatusBoard("home", "m1", health, HealthChecks(HealthConfig(), health, mqtt=False))
    server = StatusServer(board)
    with http_server(server.handler()) as url:
        yield board, server, url


def onset(event_id: str, label: str = "dog_bark", at: float = T0, query: str | None = None, source: str = "yard") -> Event:
    return Event("onset", event_id, source, "m1", label, at, None, 0.8, 0.7, 3, query=query)


def offset(first: Event, at: float, **extra: Any) -> Event:
    return dataclasses.replace(first, kind="offset", offset_time=at, peak_score=0.93, **extra)


# ---------------------------------------------------------------- the file itself


def test_the_page_is_one_self_contained_file_that_never_parses_api_text_as_html() -> None:
    text = PAGE.read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", text, re.I), "external src/href"
    assert not re.search(r"@import|url\(|<link|<img", text, re.I), "a stylesheet, font, icon or image from elsewhere"
    assert len(re.findall(r"<script", text)) == 1 and "<script src" not in text
    sinks = re.findall(r"\.(?:inner|outer)HTML\b|insertAdjacentHTML|document\.write|\beval\(|new Function|DOMParser|createContextualFragment", text)
    assert not sinks, f"{sinks} in page.html: put API text in with textContent"
    assert "prefers-color-scheme: dark" in text and "max-width: 600px" in text and 'name="viewport"' in text


def test_the_content_security_policy_names_the_pages_own_script() -> None:
    """The page's CSP allows only its own inline script (by hash): an injected script could not run even if some text were parsed."""
    text = PAGE.read_text()
    (script,) = re.findall(r"<script>(.*?)</script>", text, re.S)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in text, f"page.html's script changed: put 'sha256-{digest}' in its Content-Security-Policy"


# ---------------------------------------------------------------- in headless Chromium


def test_a_new_event_appears_on_the_open_page_and_its_offset_brings_the_clip(browser: Any, site: tuple[StatusBoard, StatusServer, str]) -> None:
    board, server, url = site
    board.level(LevelReading("yard", T0, 1.0, -31.26, -25.0, -36.0, calibrated=False))
    board.tags(TagResult("yard", "m1", T0, T0 + 1, [("dog_bark", 0.9), ("speech", 0.41)]))
    browser.get(url)
    card = one(browser, '.source[data-source="yard"]')
    level = card.find_element("css selector", ".level")
    assert (level.get_attribute("data-db"), level.get_attribute("data-zone")) == ("-31.3", "normal")
    assert "-31.3 dBFS(A)" in card.find_element("css selector", ".level .db").text
    assert [t.text.split("\n")[0] for t in card.find_elements("css selector", ".tag .label")] == ["dog_bark", "speech"]
    assert card.find_element("css selector", '.tag[data-label="speech"] .score').text == "0.41"
    assert browser.find_elements("css selector", "tr.event") == []
    assert one(browser, '#figures [data-key="engine"] dd').text == "onnxruntime-cpu"

    first = onset("e-1", at=T0 + 2)
    board.event(first)
    row = one(browser, 'tr.event[data-event-id="e-1"][data-open="true"]')
    assert row.find_element("css selector", ".c-label .label").text == "dog_bark"
    assert row.find_element("css selector", ".c-offset").text == "open"
    assert one(browser, '.opennow li[data-event-id="e-1"]').text.startswith("dog_bark since ")

    board.caption(CaptionResult("yard", "m1", "1", T0, T0 + 4, "a dog barks twice", 4.0, 10.0))
    clip = {"file": "yard dog #1.flac", "start": "2027-01-15T08:00:00.000Z", "duration_s": 7.5, "pre_s": 2.0, "post_s": 3.0}
    board.event(offset(first, T0 + 4.5, clip=clip))
    row = one(browser, 'tr.event[data-event-id="e-1"][data-open="false"]')
    assert row.find_element("css selector", ".c-duration").text == "2.5 s"
    assert row.find_element("css selector", ".c-peak").text == "0.93"
    audio = row.find_element("css selector", ".c-clip audio")
    assert audio.get_attribute("controls") is not None and audio.get_attribute("preload") == "none"
    assert browser.execute_script("return arguments[0].getAttribute('src')", audio) == "/clips/yard%20dog%20%231.flac"
    assert one(browser, '.source[data-source="yard"] .caption').text == "a dog barks twice"
    wait_for(browser, ".opennow li", condition=lambda found: not found)

    # A later event goes on top, and the clip's player is the same element after more polls (a playing clip is not cut off).
    second = onset("e-2", label="speech", at=T0 + 6, query="someone talking")
    board.event(second)
    rows = wait_for(browser, "tr.event", condition=lambda found: len(found) == 2)
    assert [r.get_attribute("data-event-id") for r in rows] == ["e-2", "e-1"]
    assert rows[0].find_element("css selector", ".query").text == "“someone talking”"
    polls = server.paths.count("/api/status")
    assert wait_until(lambda: server.paths.count("/api/status") >= polls + 2, timeout=10)
    assert audio.get_attribute("data-file") == "yard dog #1.flac"  # not stale: the row and its player were updated in place
    assert set(server.paths) <= {"/", "/api/status", "/favicon.ico"}, server.paths  # nothing else fetched: no font, script or clip (preload none)
    assert console_errors(browser) == []


def test_text_from_the_api_is_shown_as_text_never_run(browser: Any, site: tuple[StatusBoard, StatusServer, str]) -> None:
    board, _, url = site
    board.event(onset("x1", label=HOSTILE, query=HOSTILE, source=HOSTILE))
    board.caption(CaptionResult("yard", "m1", "1", T0, T0 + 4, "<b>bold</b>" + HOSTILE, 4.0, 1.0))
    board.tags(TagResult("yard", "m1", T0, T0 + 1, [(HOSTILE, 0.5)]))
    browser.get(url)
    row = one(browser, 'tr.event[data-event-id="x1"]')
    assert row.find_element("css selector", ".c-label .label").text == HOSTILE
    assert row.find_element("css selector", ".c-label .query").text == f"“{HOSTILE}”"
    hostile_card = browser.execute_script("return [...document.querySelectorAll('.source')].find(c => c.dataset.source === arguments[0])", HOSTILE)
    assert hostile_card is not None and hostile_card.find_element("css selector", "h2 .name").text == HOSTILE
    assert one(browser, '.source[data-source="yard"] .caption').text == "<b>bold</b>" + HOSTILE
    assert one(browser, '.source[data-source="yard"] .tag .label').text == HOSTILE
    counts = browser.execute_script(
        "return [document.scripts.length, document.querySelectorAll('img, b').length, window.__pwned === undefined, document.title]"
    )
    assert counts == [1, 0, True, "rtaudio home"]


def test_failing_checks_show_in_red_and_clear_when_they_pass(browser: Any, site: tuple[StatusBoard, StatusServer, str]) -> None:
    board, _, url = site
    assert board.checks is not None
    board.checks.config = HealthConfig(source_silent_s=5)
    yard = board.record.source("yard")
    yard.last_data = board.record.started - 60
    browser.get(url)
    check = one(browser, '#failing li.check[data-check="source_silent"][data-source="yard"]')
    assert "no audio for" in check.text and "(limit 5 s)" in check.text
    red, green, blue = (int(v) for v in re.findall(r"\d+", check.value_of_css_property("color"))[:3])
    assert red > 150 and green < 100 and blue < 100, check.value_of_css_property("color")
    assert one(browser, "#health").get_attribute("data-healthy") == "false"
    assert not one(browser, "#healthy").is_displayed()
    yard.last_data = time.time() + 3600  # audio again
    wait_for(browser, "#failing li", condition=lambda found: not found)
    assert one(browser, "#healthy").is_displayed() and one(browser, "#health").get_attribute("data-healthy") == "true"


def test_connection_lost_is_said_on_the_page_and_it_recovers(browser: Any, site: tuple[StatusBoard, StatusServer, str]) -> None:
    board, server, url = site
    browser.get(url)
    assert one(browser, "#conn").get_attribute("data-state") in ("connecting", "live")
    wait_for(browser, '#conn[data-state="live"]')
    server.fail = True
    conn = one(browser, '#conn[data-state="lost"]')
    assert "connection lost" in conn.text and "HTTP 503" in conn.text
    failed = server.paths.count("/api/status")
    board.event(onset("later"))
    server.fail = False
    wait_for(browser, '#conn[data-state="live"]', timeout=25)  # the backoff is capped at 10 s
    one(browser, 'tr.event[data-event-id="later"]')
    assert failed >= 2


def test_on_a_phone_the_page_is_one_column_without_horizontal_scroll(browser: Any, site: tuple[StatusBoard, StatusServer, str]) -> None:
    board, _, url = site
    board.record.source("hall")
    long_word = "glass_break_" * 12
    for i in range(12):
        first = onset(f"p{i}", label=long_word if i % 3 == 0 else "dog_bark", at=T0 + 10 * i, query="a very long query text " * 5 if i % 4 == 0 else None)
        board.event(first)
        if i < 11:
            board.event(offset(first, T0 + 10 * i + 3, clip={"file": f"clip-{i}-{long_word}.flac", "duration_s": 8.0} if i % 2 else None))
    board.tags(TagResult("yard", "m1", T0, T0 + 1, [(long_word, 0.9), ("speech", 0.5), ("music", 0.2)]))
    board.caption(CaptionResult("yard", "m1", "1", T0, T0 + 4, "a caption " * 40 + long_word, 4.0, 1.0))
    board.level(LevelReading("yard", T0, 1.0, -20.0, -10.0, -30.0, calibrated=True))
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": 3, "mobile": True})
    browser.get(url)
    wait_for(browser, "tr.event", condition=lambda found: len(found) == 12)
    wait_for(browser, ".source audio", condition=lambda found: len(found) == 5)
    sizes = browser.execute_script(
        "const d = document.documentElement;"
        "return {inner: window.innerWidth, scroll: Math.max(d.scrollWidth, document.body.scrollWidth),"
        " cards: [...document.querySelectorAll('main > .card')].map(c => [Math.round(c.getBoundingClientRect().left), Math.round(c.getBoundingClientRect().width)]),"
        " widest: Math.max(...[...document.querySelectorAll('main *')].map(e => e.getBoundingClientRect().right))}"
    )
    assert sizes["inner"] == 390, f"the mobile layout viewport widened to fit the content: {sizes}"
    assert sizes["scroll"] <= sizes["inner"], sizes
    assert sizes["widest"] <= sizes["inner"] + 0.5, sizes  # nothing sticks out, not even inside a scrolling box
    assert len(sizes["cards"]) == 3 and len({tuple(c) for c in sizes["cards"]}) == 1, sizes["cards"]  # health + 2 sources stacked, same column


# ---------------------------------------------------------------- the real demo site


def _start(log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """``python -m rtaudio ARGS`` with its output in ``log_path`` (a pipe nobody reads could fill and stall it)."""
    with log_path.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "rtaudio", *args], stdout=out, stderr=subprocess.STDOUT)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@pytest.mark.integration
def test_the_demos_events_appear_on_the_page_as_they_happen(browser: Any, tmp_path: Path) -> None:
    """The demo site (engines/default, config/demo.flac looping in real time, captions, a query, clips) with
    ``http:`` on: an onset a real MQTT subscriber receives after the page is open shows up in the page's DOM."""
    broker = Broker(tmp_path / "mosquitto").start()
    sub = Subscriber(broker, "rtaudio/demo/demo/events")
    port = free_port()
    config = demo_site(
        tmp_path / "site.yaml",
        broker,
        source={"loop": True},
        http={"listen": f"127.0.0.1:{port}"},
        captions={"every_s": 4},
        queries={"water_leak": "water from a tap"},
        clips={"dir": str(tmp_path / "clips"), "labels": ["smoke_alarm", "glass_break"]},
    )
    log_path = tmp_path / "rtaudio.log"
    proc = _start(log_path, "run", "--config", str(config))
    url = f"http://127.0.0.1:{port}/"
    try:
        assert wait_until(lambda: _answers(url + "api/status") or proc.poll() is not None, timeout=60) and proc.poll() is None, log_path.read_text()[-3000:]
        browser.get(url)
        wait_for(browser, '#conn[data-state="live"]')
        wait_for(browser, '.source[data-source="demo"]')
        seen = len(sub.on("rtaudio/demo/demo/events"))

        def onsets_since() -> list[dict[str, Any]]:
            events = [json.loads(m.payload) for m in sub.on("rtaudio/demo/demo/events")[seen:]]
            return [e for e in events if e["kind"] == "onset"]

        assert sub.wait_for(onsets_since, timeout=90), log_path.read_text()[-3000:]
        event = onsets_since()[0]
        row = one(browser, f'tr.event[data-event-id="{event["event_id"]}"]')
        assert row.get_attribute("data-label") == event["label"]
        offsets = lambda: [json.loads(m.payload) for m in sub.on("rtaudio/demo/demo/events") if json.loads(m.payload)["event_id"] == event["event_id"]][1:]  # noqa: E731
        assert sub.wait_for(offsets, timeout=120), "no offset for the demo's event"
        one(browser, f'tr.event[data-event-id="{event["event_id"]}"][data-open="false"]')
        level = one(browser, '.source[data-source="demo"] .level').get_attribute("data-db")
        assert level and float(level) < 0
        assert console_errors(browser) == []  # the real server's headers (its CSP too) let the page run cleanly
        if os.environ.get("RTAUDIO_SCREENSHOT") == "1":
            wait_for(browser, ".source audio", timeout=180)  # a clip's player in the picture
            wait_for(browser, '.source[data-source="demo"] .caption', condition=lambda found: bool(found and found[0].text))
            browser.set_window_size(1280, 1000)
            browser.save_screenshot(str(REPO / "docs" / "status-page.png"))
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        sub.close()
        broker.stop()
    assert proc.returncode == 0, log_path.read_text()[-3000:]
