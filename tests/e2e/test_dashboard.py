"""`relco ui` in a real browser: Debian's headless Chromium, driven by Selenium through chromedriver,
against the dashboard serving a running sandbox. It opens the pipelines page and a release (its
timeline and its zero-downtime receipt), cancels a waiting release
through the page, follows a moving release without a reload, saves screenshots under build/ and
fails on any error in the browser's console."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from chalicelib import bootstrap
from chalicelib.domain.release import ReleaseState
from chalicelib.service import stats
from relco.api_client import ApiClient
from relco.ui import MAX_BODY_BYTES, DashboardServer
from sandbox.runtime import PROJECT_ROOT, Sandbox
from tests.e2e.test_demo import processes_under

RELCO = Path(sys.executable).parent / "relco"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = PROJECT_ROOT / "build" / "dashboard"
# `make screenshot` names where the README's picture of a release goes (docs/dashboard.png).
README_SCREENSHOT = os.environ.get("RELCO_DASHBOARD_SCREENSHOT")
# Headless as root on a closed network: no sandbox (root), no GPU, and none of the browser's own
# traffic (QUIC probes, component updates, sync) that would only fail here.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)
LIVE_WITHIN_S = 2.0
PAGE_WAIT_S = 15.0


def chromium(profile: Path) -> webdriver.Chrome:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(
            f"the dashboard's browser test needs {' and '.join(missing)}: install Debian's chromium and "
            "chromium-driver (`apt-get install -y chromium chromium-driver`; `make setup` does it as root)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    # The console's messages, read at the end: any error fails the test.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))


@contextmanager
def relco_ui(api_url: str, log: Path) -> Iterator[str]:
    """`relco ui --port 0` against the sandbox's API (the sandbox's credentials are in this
    process's environment, as a user's would be); yields the URL it prints."""
    with log.open("w") as errors:
        process = subprocess.Popen(
            [str(RELCO), "--api-url", api_url, "ui", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        try:
            assert process.stdout is not None
            printed = process.stdout.readline()
            found = re.search(r"http://127\.0\.0\.1:\d+/", printed)
            assert found, (printed, log.read_text())
            yield found.group(0)
        finally:
            process.terminate()
            process.wait(timeout=10)


def shown_state(driver: WebDriver, release_id: str) -> str | None:
    """The state the page shows for the release, read in one script: the page redraws a moving
    release every second, so an element found a moment ago may be gone already."""
    shown = driver.execute_script(
        "const heading = document.querySelector('h2 code');"
        "const state = document.getElementById('release-state');"
        "return heading && state && heading.textContent === arguments[0] ? state.textContent : null;",
        release_id,
    )
    return str(shown) if shown is not None else None


def wait_for_state(driver: WebDriver, state: str, timeout_s: float = PAGE_WAIT_S) -> None:
    WebDriverWait(driver, timeout_s).until(
        expected_conditions.text_to_be_present_in_element((By.ID, "release-state"), state)
    )


def element(driver: WebDriver, css: str) -> WebElement:
    found: WebElement = WebDriverWait(driver, PAGE_WAIT_S).until(
        expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, css))
    )
    return found


def screenshot(driver: WebDriver, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def listed_releases(driver: WebDriver) -> list[str]:
    """The releases page's rows, read in one script (a filter redraws the table)."""
    rows = driver.execute_script(
        "return [...document.querySelectorAll('tbody tr[data-release]')].map((row) => row.dataset.release);"
    )
    return [str(row) for row in rows]


def console_errors(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """Errors in the browser's console."""
    # Selenium leaves get_log unannotated.
    logged: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [entry for entry in logged if entry["level"] == "SEVERE"]


def terminal_receipt(release_id: str) -> dict[str, Any] | None:
    """The receipt on the release's terminal history event (None: none written)."""
    history = bootstrap.wiring().store.history(release_id)
    ended = [event for event in history if event.state.is_terminal]
    receipt = ended[-1].detail.get("receipt") if ended else None
    return dict(receipt) if receipt else None


@pytest.mark.timeout(180)
def test_the_dashboard_in_chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Sandbox(tmp_path / "sandbox") as sandbox:
        assert sandbox.endpoints is not None
        first = sandbox.deploy("1.0.0")
        assert first.state is ReleaseState.SUCCEEDED
        with relco_ui(sandbox.endpoints.api_url, tmp_path / "ui.log") as url:
            driver = chromium(tmp_path / "chromium-profile")
            try:
                # The pipelines page: the demo pipeline runs the first release.
                driver.get(url)
                card = element(driver, 'section.pipeline[data-pipeline="demo"]')
                assert "1.0.0" in card.text
                assert first.id in card.text
                # DORA over the last 30 days, from GET /stats: a chart per figure.
                dora = element(driver, "#dora")
                assert "DORA metrics, last 30 days" in dora.text
                assert driver.find_elements(By.CSS_SELECTOR, "#dora svg.chart rect.chart-bar")
                screenshot(driver, "pipelines")

                # A release, opened from its pipeline: its timeline has a bar per state it went
                # through and a mark where it ended; its health checks; its receipt when written.
                card.find_element(By.LINK_TEXT, first.id).click()
                wait_for_state(driver, "SUCCEEDED")
                spans = driver.find_elements(By.CSS_SELECTOR, "#timeline g.span")
                states = [span.get_attribute("data-state") for span in spans]
                assert states[-1] == "SUCCEEDED"
                assert {"DEPLOYING", "VERIFYING"} <= set(states)
                assert len(driver.find_elements(By.CSS_SELECTOR, "#timeline rect.bar")) == len(states) - 1
                assert len(driver.find_elements(By.CSS_SELECTOR, "#health-checks tbody tr")) >= 2
                # The zero-downtime receipt the coordinator read from the load balancer's metrics.
                receipt = terminal_receipt(first.id)
                assert receipt is not None
                assert receipt["summary"], receipt
                assert element(driver, "#receipt .summary").text == receipt["summary"]
                assert f"requests\n{receipt['requests']}" in element(driver, "#receipt").text

                # Two more uploads: the second deploys, the third waits in line, and is cancelled
                # through the page, behind its confirm step.
                second = sandbox.upload("2.0.0")
                third = sandbox.upload("3.0.0")
                sandbox.wait_for(third, lambda release: release.state is ReleaseState.QUEUED, "queued")
                driver.get(f"{url}#/release/{third}")
                wait_for_state(driver, "QUEUED")
                driver.find_element(By.CSS_SELECTOR, 'button[data-action="cancel"]').click()
                element(driver, ".confirm .confirm-yes").click()
                wait_for_state(driver, "STOPPED")
                assert sandbox.wait_terminal(third).state is ReleaseState.STOPPED
                screenshot(driver, "cancelled")

                # A release followed live from the moment the coordinator records it (a fresh one:
                # it moves for seconds yet): the page shows each next state within 2 s of the
                # coordinator recording it, in the same document (no reload).
                fourth = sandbox.upload("4.0.0")
                sandbox.wait_for(fourth, lambda release: True, "recorded")
                driver.get(f"{url}#/release/{fourth}")
                before = WebDriverWait(driver, PAGE_WAIT_S).until(lambda d: shown_state(d, fourth))
                assert before is not None
                assert not ReleaseState(before).is_terminal
                driver.execute_script("window.sameDocument = true")
                sandbox.wait_for(fourth, lambda release: release.state.value != before, "moved on")
                moved_at = time.monotonic()
                WebDriverWait(driver, LIVE_WITHIN_S, poll_frequency=0.05).until(
                    lambda d: shown_state(d, fourth) != before
                )
                assert time.monotonic() - moved_at <= LIVE_WITHIN_S
                assert sandbox.wait_terminal(fourth).state is ReleaseState.SUCCEEDED
                moved_at = time.monotonic()
                wait_for_state(driver, "SUCCEEDED", LIVE_WITHIN_S)
                assert time.monotonic() - moved_at <= LIVE_WITHIN_S
                assert driver.execute_script("return window.sameDocument") is True
                screenshot(driver, "release")
                if README_SCREENSHOT:
                    driver.save_screenshot(README_SCREENSHOT)

                # The releases page: newest first, filtered by state through the page's form.
                driver.get(f"{url}#/releases?pipeline=demo")
                element(driver, f'tr[data-release="{first.id}"]')
                listed = listed_releases(driver)
                assert set(listed) == {first.id, second, third, fourth}
                assert listed[-1] == first.id
                store = bootstrap.wiring().store
                assert [release.id for release in store.list_releases("demo", 10, None)] == listed
                screenshot(driver, "releases")
                driver.find_element(By.CSS_SELECTOR, 'select[name="state"] option[value="STOPPED"]').click()
                WebDriverWait(driver, PAGE_WAIT_S).until(lambda d: listed_releases(d) == [third])
                # The API filtered, not the page: it was asked for the STOPPED releases only.
                asked = driver.execute_script(
                    "return performance.getEntriesByType('resource').map((entry) => entry.name);"
                )
                assert any(
                    "/api/releases?" in name and "pipeline=demo" in name and "state=STOPPED" in name
                    for name in asked
                ), asked

                # With GET /stats bounded to 2 releases, demo's figures cover its newest two only
                # (fourth and third), and the note under the charts says so.
                monkeypatch.setattr(stats, "RELEASES_PER_REQUEST", 2)
                driver.get(url)
                note = element(driver, '#dora p.partial[data-pipeline="demo"]')
                assert note.text.startswith("demo: these figures cover only since "), note.text
                assert "relco stats demo" in note.text
                monkeypatch.undo()
                driver.refresh()
                element(driver, "#dora svg.chart")
                assert not driver.find_elements(By.CSS_SELECTOR, "#dora p.partial")
            except BaseException:
                screenshot(driver, "failure")  # the page as it was when the test failed
                raise
            finally:
                errors = console_errors(driver)
                driver.quit()
        assert errors == []
    assert processes_under(tmp_path) == []


class RecordingApi(BaseHTTPRequestHandler):
    """An API that answers every call with the headers it received."""

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer()

    def _answer(self) -> None:
        body = json.dumps({"path": self.path, "headers": dict(self.headers)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def ask(port: int, method: str, path: str, headers: dict[str, str], body: str = "") -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body.encode() or None, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.timeout(30)
def test_the_dashboard_signs_what_its_page_asks_and_refuses_other_hosts_and_sites(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    api = ThreadingHTTPServer(("127.0.0.1", 0), RecordingApi)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    dashboard = DashboardServer(
        ApiClient(f"http://127.0.0.1:{api.server_address[1]}/api"), 0
    ).serve_in_thread()
    port = dashboard.server_address[1]
    own = {"Host": f"127.0.0.1:{port}"}
    try:
        # The page's call reaches the API signed (SigV4 for execute-api); the page sees the answer.
        status, answer = ask(port, "GET", "/api/releases?pipeline=demo&limit=5", own)
        assert status == 200
        assert answer["path"] == "/api/releases?pipeline=demo&limit=5"
        assert answer["headers"]["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
        assert "/execute-api/aws4_request" in answer["headers"]["Authorization"]
        posted = {**own, "Origin": f"http://127.0.0.1:{port}", "Content-Type": "application/json"}
        status, answer = ask(
            port, "POST", "/api/releases/r1/cancel", {**posted, "Idempotency-Key": "k1"}, "{}"
        )
        assert (status, answer["headers"]["Idempotency-Key"]) == (200, "k1")

        # A rebound DNS name, another site's page, a form post: refused.
        assert ask(port, "GET", "/api/pipelines", {"Host": f"attacker.example:{port}"})[0] == 403
        foreign = {**posted, "Origin": "http://attacker.example"}
        assert ask(port, "POST", "/api/releases/r1/cancel", foreign, "{}")[0] == 403
        form = {**posted, "Content-Type": "application/x-www-form-urlencoded"}
        assert ask(port, "POST", "/api/releases/r1/cancel", form, "a=b")[0] == 415
    finally:
        dashboard.stop()
        api.shutdown()
        api.server_close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("content_length", "status"),
    [
        ("abc", 400),
        # Before the check, -1 made the server read until the client gave up.
        ("-1", 400),
        ("+2", 400),
        (str(MAX_BODY_BYTES + 1), 413),
    ],
)
def test_a_bad_or_huge_content_length_is_refused_before_the_body_is_read(
    content_length: str, status: int
) -> None:
    # Never called: the body is refused before anything is forwarded.
    dashboard = DashboardServer(ApiClient("http://127.0.0.1:9/api"), 0).serve_in_thread()
    port = dashboard.server_address[1]
    headers = {
        "Host": f"127.0.0.1:{port}",
        "Content-Type": "application/json",
        "Content-Length": content_length,
    }
    try:
        answered, answer = ask(port, "POST", "/api/releases/r1/cancel", headers, "{}")
        assert answered == status
        assert "Message" in answer
    finally:
        dashboard.stop()
