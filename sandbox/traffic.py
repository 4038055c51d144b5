"""A load generator for the sandbox: steady GET traffic against one URL while a deploy runs,
counting failures and which application version answered."""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

_MAX_RECORDED_FAILURES = 20


@dataclass(frozen=True)
class TrafficReport:
    """What a run of traffic saw. ``failures`` describes the first few failed requests;
    ``by_version`` counts successful answers per ``version`` of their JSON body."""

    sent: int
    failed: int
    failures: list[str]
    by_version: dict[str, int]
    duration_s: float


@dataclass(frozen=True)
class _Outcome:
    failure: str | None
    version: str | None


class SteadyTraffic:
    """Sends GET requests to ``url`` at ``rate_per_s`` from ``concurrency`` worker threads until
    stopped, or until ``max_duration_s`` has passed so a forgotten generator cannot run on.

    A request fails on a connection error, a timeout (``timeout_s`` per socket operation) or a
    status of 500 or more. Slow answers lower the rate rather than queueing a burst for later.
    """

    def __init__(
        self,
        url: str,
        rate_per_s: float = 20.0,
        concurrency: int = 4,
        timeout_s: float = 2.0,
        max_duration_s: float = 300.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"SteadyTraffic needs an http:// URL, got {url!r}")
        if min(rate_per_s, timeout_s, max_duration_s) <= 0 or concurrency < 1:
            raise ValueError("rate, timeout, duration and concurrency must be positive")
        self.url = url
        self.rate_per_s = rate_per_s
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_duration_s = max_duration_s
        self._host = parts.hostname
        self._port = parts.port or 80
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

        self._lock = threading.Lock()
        self._halted = threading.Event()
        self._workers: list[threading.Thread] = []
        self._started_at: float | None = None
        self._halted_at: float | None = None
        self._next_due = 0.0
        self._sent = 0
        self._failed = 0
        self._failures: list[str] = []
        self._by_version: Counter[str] = Counter()

    def start(self) -> Self:
        with self._lock:
            if self._started_at is not None:
                raise RuntimeError("a SteadyTraffic can be started once")
            started_at = self._started_at = self._next_due = time.monotonic()
        self._workers = [
            threading.Thread(
                target=self._run, args=(started_at,), name=f"steady-traffic-{index}", daemon=True
            )
            for index in range(self.concurrency)
        ]
        for worker in self._workers:
            worker.start()
        logger.info("traffic: %.1f requests/s to %s", self.rate_per_s, self.url)
        return self

    def stop(self) -> TrafficReport:
        """Stops sending, waits for requests in flight, and reports."""
        self._halt()
        for worker in self._workers:
            worker.join()
        report = self.snapshot()
        logger.info(
            "traffic: %d sent, %d failed, by version %s", report.sent, report.failed, report.by_version
        )
        return report

    def wait_finished(self, timeout_s: float) -> bool:
        """Waits for the workers to end (after stop() or max_duration_s); True if they have."""
        deadline = time.monotonic() + timeout_s
        for worker in self._workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        return not any(worker.is_alive() for worker in self._workers)

    def snapshot(self) -> TrafficReport:
        """The counts so far; safe to call while traffic runs."""
        with self._lock:
            if self._started_at is None:
                raise RuntimeError("traffic has not started")
            ended_at = self._halted_at if self._halted_at is not None else time.monotonic()
            return TrafficReport(
                sent=self._sent,
                failed=self._failed,
                failures=list(self._failures),
                by_version=dict(self._by_version),
                duration_s=ended_at - self._started_at,
            )

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self, started_at: float) -> None:
        deadline = started_at + self.max_duration_s
        while True:
            due = self._claim_slot()
            if self._halted.wait(max(0.0, min(due, deadline) - time.monotonic())):
                return
            if due >= deadline:
                logger.info("traffic: max duration of %.1f s reached", self.max_duration_s)
                self._halt()
                return
            self._record(self._send_one(), elapsed_s=due - started_at)

    def _claim_slot(self) -> float:
        """The time the calling worker should send its next request. A slot missed because every
        worker was busy is not made up for later: the schedule restarts from now."""
        with self._lock:
            due = max(self._next_due, time.monotonic())
            self._next_due = due + 1.0 / self.rate_per_s
            return due

    def _halt(self) -> None:
        with self._lock:
            if self._halted_at is None:
                self._halted_at = time.monotonic()
            self._halted.set()

    def _send_one(self) -> _Outcome:
        connection = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_s)
        try:
            connection.request("GET", self._path, headers={"Connection": "close"})
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            return _Outcome(failure=f"{type(error).__name__}: {error}", version=None)
        finally:
            connection.close()
        if response.status >= 500:
            return _Outcome(failure=f"HTTP {response.status}: {body[:200]!r}", version=None)
        return _Outcome(failure=None, version=_version_of(body))

    def _record(self, outcome: _Outcome, elapsed_s: float) -> None:
        with self._lock:
            self._sent += 1
            if outcome.failure is not None:
                self._failed += 1
                if len(self._failures) < _MAX_RECORDED_FAILURES:
                    self._failures.append(f"at {elapsed_s:.2f}s: {outcome.failure}")
            elif outcome.version is not None:
                self._by_version[outcome.version] += 1


def _version_of(body: bytes) -> str | None:
    """The ``version`` of a JSON object body, if it has one."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if isinstance(document, dict) and "version" in document:
        return str(document["version"])
    return None
