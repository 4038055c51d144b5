"""The sandbox load generator against a tiny backend on 127.0.0.1: what it counts as a failure,
versions seen, its rate, and that it stops by itself."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sandbox.traffic import SteadyTraffic

WAIT_S = 5.0


class Backend(ThreadingHTTPServer):
    """Answers every GET with ``status`` and a JSON body carrying ``version`` (or plain text when
    ``version`` is None), or hangs until stopped while ``hangs``."""

    request_queue_size = 64

    def __init__(self) -> None:
        self.status = 200
        self.version: str | None = "v1"
        self.hangs = False
        self.stopped = threading.Event()
        super().__init__(("127.0.0.1", 0), _BackendHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/"


class _BackendHandler(BaseHTTPRequestHandler):
    server: Backend

    def do_GET(self) -> None:
        backend = self.server
        if backend.hangs:
            backend.stopped.wait(WAIT_S)
        payload = (
            b"plain text" if backend.version is None else json.dumps({"version": backend.version}).encode()
        )
        try:
            self.send_response(backend.status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except ConnectionError:
            pass  # the client timed out first

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


@pytest.fixture
def backend() -> Iterator[Backend]:
    server = Backend()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server
    server.stopped.set()
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def dead_url() -> str:
    """A 127.0.0.1 URL with nothing listening: a port just bound and released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def make_traffic() -> Iterator[Callable[..., SteadyTraffic]]:
    generators: list[SteadyTraffic] = []

    def make(url: str, **settings: Any) -> SteadyTraffic:
        traffic = SteadyTraffic(url, **settings)
        generators.append(traffic)
        return traffic.start()

    yield make
    for traffic in generators:
        traffic.stop()


def wait_until(condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_counts_answers_per_version(backend: Backend, make_traffic: Callable[..., SteadyTraffic]) -> None:
    traffic = make_traffic(backend.url, rate_per_s=100.0)
    wait_until(lambda: traffic.snapshot().sent >= 5)
    backend.version = "v2"
    wait_until(lambda: traffic.snapshot().by_version.get("v2", 0) >= 5)

    report = traffic.stop()

    assert (report.failed, report.failures) == (0, [])
    assert report.by_version.keys() == {"v1", "v2"}
    assert sum(report.by_version.values()) == report.sent


def test_answers_without_a_version_are_counted_but_not_by_version(
    backend: Backend, make_traffic: Callable[..., SteadyTraffic]
) -> None:
    backend.version = None
    traffic = make_traffic(backend.url, rate_per_s=100.0)
    wait_until(lambda: traffic.snapshot().sent >= 3)

    report = traffic.stop()

    assert report.failed == 0
    assert report.by_version == {}


def test_counts_failures_when_the_target_is_down(
    dead_url: str, make_traffic: Callable[..., SteadyTraffic]
) -> None:
    traffic = make_traffic(dead_url, rate_per_s=200.0)
    wait_until(lambda: traffic.snapshot().sent >= 30)

    report = traffic.stop()

    assert report.failed == report.sent
    assert len(report.failures) == 20
    assert all("ConnectionRefusedError" in failure for failure in report.failures)
    assert report.by_version == {}


def test_counts_server_errors_but_not_client_errors_as_failures(
    backend: Backend, make_traffic: Callable[..., SteadyTraffic]
) -> None:
    backend.status = 503
    traffic = make_traffic(backend.url, rate_per_s=100.0)
    wait_until(lambda: traffic.snapshot().failed >= 3)
    backend.status = 404
    wait_until(lambda: traffic.snapshot().by_version.get("v1", 0) >= 3)

    report = traffic.stop()

    assert report.failures[0].endswith('HTTP 503: b\'{"version": "v1"}\'')
    assert report.failed + report.by_version["v1"] == report.sent


def test_counts_timeouts_as_failures(backend: Backend, make_traffic: Callable[..., SteadyTraffic]) -> None:
    backend.hangs = True
    traffic = make_traffic(backend.url, rate_per_s=50.0, timeout_s=0.1)
    wait_until(lambda: traffic.snapshot().failed >= 2)

    report = traffic.stop()

    assert report.failed == report.sent
    assert all("TimeoutError" in failure for failure in report.failures)


def test_stops_by_itself_at_max_duration_at_a_steady_rate(
    backend: Backend, make_traffic: Callable[..., SteadyTraffic]
) -> None:
    traffic = make_traffic(backend.url, rate_per_s=40.0, max_duration_s=0.5)

    assert traffic.wait_finished(WAIT_S)
    report = traffic.snapshot()

    assert 0.45 <= report.duration_s < 0.5 + WAIT_S
    # 40 per second for half a second, counting the request sent at the start.
    assert 5 <= report.sent <= 21
    assert report.failed == 0
    assert traffic.stop() == report


def test_context_manager_stops_the_workers(backend: Backend) -> None:
    with SteadyTraffic(backend.url, rate_per_s=100.0) as traffic:
        wait_until(lambda: traffic.snapshot().sent >= 2)

    assert traffic.wait_finished(0)
    report = traffic.snapshot()
    assert report.sent >= 2
    assert traffic.snapshot().duration_s == report.duration_s


@pytest.mark.parametrize("url", ["https://127.0.0.1/", "127.0.0.1:8080", "http:///path"])
def test_rejects_urls_it_cannot_send_to(url: str) -> None:
    with pytest.raises(ValueError, match="http://"):
        SteadyTraffic(url)
