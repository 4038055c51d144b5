"""`relco ui` in a real browser: Debian's headless Chromium, driven by Selenium through chromedriver,
against the dashboard serving a running sandbox. It opens the pipelines page and a release (its
timeline, and its zero-downtime receipt when the coordinator wrote one), cancels a waiting release
through the page, follows a moving release without a reload, saves screenshots under build/ and
fails on any error in the browser's console."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


def listed_releases(driver: WebDriver) -> list[str | None]:
    return [
        row.get_attribute("data-release")
        for row in driver.find_elements(By.CSS_SELECTOR, "tbody tr[data-release]")
    ]


def console_errors(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """Errors in the browser's console, but for the one absence the page expects: an API without
    GET /stats answers 404 (API Gateway: 403 for an unknown path), which Chromium logs as a failed
    load while the page leaves the DORA section out."""
    # Selenium leaves get_log unannotated.
    logged: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [
        entry
        for entry in logged
        if entry["level"] == "SEVERE"
        and not (
            entry.get("source") == "network"
            and "/api/stats?" in entry["message"]
            and re.search(r"status of 40[34]\b", entry["message"])
        )
    ]


def terminal_receipt(release_id: str) -> dict[str, Any] | None:
    """The receipt on the release's terminal history event, when the coordinator wrote one."""
    history = bootstrap.wiring().store.history(release_id)
    ended = [event for event in history if event.state.is_terminal]
    receipt = ended[-1].detail.get("receipt") if ended else None
    return dict(receipt) if receipt else None


@pytest.mark.timeout(180)
def test_the_dashboard_in_chromium(tmp_path: Path) -> None:
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
                receipt = terminal_receipt(first.id)
                if receipt is not None and receipt.get("summary"):
                    assert element(driver, "#receipt .summary").text == receipt["summary"]
                else:
                    assert driver.find_elements(By.ID, "receipt") == []

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

                # The second release followed live: the page shows its next state within 2 s of
                # the coordinator recording it, in the same document (no reload).
                driver.get(f"{url}#/release/{second}")
                before = WebDriverWait(driver, PAGE_WAIT_S).until(lambda d: shown_state(d, second))
                assert before not in ("SUCCEEDED", "FAILED", "STOPPED"), "it ended before the page opened"
                driver.execute_script("window.sameDocument = true")
                store = bootstrap.wiring().store
                recorded = sandbox.wait_for(second, lambda release: release.state.value != before, "moved on")
                moved_at = time.monotonic()
                WebDriverWait(driver, LIVE_WITHIN_S, poll_frequency=0.05).until(
                    lambda d: shown_state(d, second) != before
                )
                assert time.monotonic() - moved_at <= LIVE_WITHIN_S
                assert driver.execute_script("return window.sameDocument") is True
                assert recorded.state.value != before
                assert sandbox.wait_terminal(second).state is ReleaseState.SUCCEEDED
                wait_for_state(driver, "SUCCEEDED", LIVE_WITHIN_S + 1)
                assert driver.execute_script("return window.sameDocument") is True
                screenshot(driver, "release")
                if README_SCREENSHOT:
                    driver.save_screenshot(README_SCREENSHOT)

                # The releases page: newest first, filtered by state through the page's form.
                driver.get(f"{url}#/releases?pipeline=demo")
                element(driver, f'tr[data-release="{first.id}"]')
                listed = listed_releases(driver)
                assert set(listed) == {first.id, second, third}
                assert listed[-1] == first.id
                assert [r.id for r in store.list_releases("demo", 10, None)] == listed
                screenshot(driver, "releases")
                driver.find_element(By.CSS_SELECTOR, 'select[name="state"] option[value="STOPPED"]').click()
                WebDriverWait(driver, PAGE_WAIT_S).until(lambda d: listed_releases(d) == [third])
            except BaseException:
                screenshot(driver, "failure")  # the page as it was when the test failed
                raise
            finally:
                errors = console_errors(driver)
                driver.quit()
        assert errors == []
    assert processes_under(tmp_path) == []
