"""The sandbox load balancer against tiny backends on 127.0.0.1: health states and reasons as
ELBv2 reports them, routing, fail-open, draining, retries, and a zero-failure rolling restart."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from typing import Any

import pytest

from sandbox.load_balancer import LoadBalancer, TargetHealth
from sandbox.traffic import SteadyTraffic

WAIT_S = 5.0

REGISTERING = ("initial", "Elb.RegistrationInProgress", "Target registration is in progress")
INITIAL_CHECKING = ("initial", "Elb.InitialHealthChecking", "Initial health checks in progress")
HEALTHY = ("healthy", None, None)
DRAINING = ("draining", "Target.DeregistrationInProgress", "Target deregistration is in progress")
UNUSED = ("unused", "Target.NotRegistered", "Target is not registered to the target group")


def as_tuple(health: TargetHealth) -> tuple[str, str | None, str | None]:
    return (health.state, health.reason, health.description)


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Backend:
    """A tiny instance: ``/health`` answers ``health_status`` (or hangs while ``health_hangs``),
    ``/slow`` waits for ``release_slow``, any other path answers JSON with version and instance
    after ``response_delay_s``. Requests still running when it stops get no answer, as from a
    killed process."""

    def __init__(self, instance: str, version: str) -> None:
        self.instance = instance
        self.version = version
        self.health_status = 200
        self.health_hangs = False
        self.response_delay_s = 0.0
        self.health_answers: list[int] = []
        self.received: list[ReceivedRequest] = []
        self.slow_started = threading.Event()
        self.release_slow = threading.Event()
        self.stopped = threading.Event()
        self._server = _BackendServer(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_port

    def stop(self) -> None:
        if self.stopped.is_set():
            return
        self.stopped.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class _BackendServer(ThreadingHTTPServer):
    request_queue_size = 64

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        super().__init__(("127.0.0.1", 0), _BackendHandler)


class _BackendHandler(BaseHTTPRequestHandler):
    server: _BackendServer

    def do_GET(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        backend = self.server.backend
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/health":
            if backend.health_hangs:
                backend.stopped.wait(WAIT_S)
            status = backend.health_status
            backend.health_answers.append(status)
            payload = b"{}"
        else:
            backend.received.append(ReceivedRequest(self.command, self.path, dict(self.headers), body))
            if self.path == "/slow":
                backend.slow_started.set()
                backend.release_slow.wait(WAIT_S)
            time.sleep(backend.response_delay_s)
            if backend.stopped.is_set():
                return  # like a killed process: the connection closes without an answer
            status = 200
            document = {"version": backend.version, "instance": backend.instance, "echo": body.decode()}
            payload = json.dumps(document).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        except ConnectionError:
            pass  # the load balancer gave up on a hung health check

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


class HealthLog:
    """Records on_health_change calls and lets tests wait for one."""

    def __init__(self) -> None:
        self._changes: list[tuple[str, TargetHealth]] = []
        self._changed = threading.Condition()

    def __call__(self, target_id: str, health: TargetHealth) -> None:
        with self._changed:
            self._changes.append((target_id, health))
            self._changed.notify_all()

    def of(self, target_id: str) -> list[tuple[str, str | None, str | None]]:
        with self._changed:
            return [as_tuple(health) for changed_id, health in self._changes if changed_id == target_id]

    def wait_for_state(self, target_id: str, state: str) -> tuple[str, str | None, str | None]:
        """Waits until the latest reported health of ``target_id`` has ``state``; returns it."""
        with self._changed:
            reached = self._changed.wait_for(
                lambda: bool(self.of(target_id)) and self.of(target_id)[-1][0] == state, timeout=WAIT_S
            )
            assert reached, f"{target_id} never reached {state}: {self.of(target_id)}"
            return self.of(target_id)[-1]


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document


def fetch(
    url: str,
    path: str = "/",
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    address = url.removeprefix("http://")
    connection = http.client.HTTPConnection(address, timeout=WAIT_S)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Answer(response.status, dict(response.getheaders()), response.read())
    finally:
        connection.close()


def wait_until(condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


MakeBackend = Callable[..., Backend]
MakeLoadBalancer = Callable[..., LoadBalancer]


@pytest.fixture
def make_backend() -> Iterator[MakeBackend]:
    backends: list[Backend] = []

    def make(instance: str = "i-a", version: str = "v1") -> Backend:
        backend = Backend(instance, version)
        backends.append(backend)
        return backend

    yield make
    for backend in backends:
        backend.release_slow.set()
        backend.stop()


@pytest.fixture
def health_log() -> HealthLog:
    return HealthLog()


@pytest.fixture
def make_lb(make_backend: MakeBackend, health_log: HealthLog) -> Iterator[MakeLoadBalancer]:
    # Depends on make_backend so that backends outlive the balancers routing to them.
    balancers: list[LoadBalancer] = []

    def make(**overrides: Any) -> LoadBalancer:
        settings: dict[str, Any] = {
            "interval_s": 0.05,
            "timeout_s": 1.0,
            "healthy_threshold": 2,
            "unhealthy_threshold": 2,
            "deregistration_delay_s": 2.0,
            "on_health_change": health_log,
        }
        balancer = LoadBalancer(**(settings | overrides)).start()
        balancers.append(balancer)
        return balancer

    yield make
    for balancer in balancers:
        balancer.stop()


def test_registered_target_becomes_healthy_after_the_threshold(
    make_lb: MakeLoadBalancer, make_backend: MakeBackend, health_log: HealthLog
) -> None:
    lb = make_lb()
    backend = make_backend()

    lb.register("i-a", backend.port)

    assert lb.health()["i-a"].state == "initial"
    assert lb.wait_healthy("i-a", WAIT_S)
    health_log.wait_for_state("i-a", "healthy")
    assert health_log.of("i-a") == [REGISTERING, INITIAL_CHECKING, HEALTHY]
    assert {target_id: as_tuple(health) for target_id, health in lb.health().items()} == {"i-a": HEALTHY}
    assert len(backend.health_answers) >= 2


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (
            "status 500",
            ("unhealthy", "Target.ResponseCodeMismatch", "Health checks failed with these codes: [500]"),
        ),
        ("hang", ("unhealthy", "Target.Timeout", "Request timed out")),
        ("down", ("unhealthy", "Target.FailedHealthChecks", "Health checks failed")),
    ],
)
def test_healthy_target_turns_unhealthy_after_failed_checks(
    make_lb: MakeLoadBalancer,
    make_backend: MakeBackend,
    health_log: HealthLog,
    failure: str,
    expected: tuple[str, str, str],
) -> None:
    lb = make_lb(timeout_s=0.2)
    backend = make_backend()
    lb.register("i-a", backend.port)
    assert lb.wait_healthy("i-a", WAIT_S)

    if failure == "status 500":
        backend.health_status = 500
    elif failure == "hang":
        backend.health_hangs = True
    else:
        backend.stop()

    assert health_log.wait_for_state("i-a", "unhealthy") == expected
    assert health_log.of("i-a")[-2:] == [HEALTHY, expected]
    assert as_tuple(lb.health()["i-a"]) == expected


def test_unhealthy_needs_the_threshold_and_recovers(
    make_lb: MakeLoadBalancer, make_backend: MakeBackend, health_log: HealthLog
) -> None:
    lb = make_lb(unhealthy_threshold=3)
    backend = make_backend()
    lb.register("i-a", backend.port)
    assert lb.wait_healthy("i-a", WAIT_S)

    backend.health_status = 500
    health_log.wait_for_state("i-a", "unhealthy")
    # Every failing check the balancer counted was answered by the backend first.
    assert backend.health_answers.count(500) >= 3

    backend.health_status = 200
    assert lb.wait_healthy("i-a", WAIT_S)
    health_log.wait_for_state("i-a", "healthy")


def test_a_failing_health_change_callback_stops_nothing(
    make_lb: MakeLoadBalancer, make_backend: MakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_callback(target_id: str, health: TargetHealth) -> None:
        raise RuntimeError("moto is gone")

    lb = make_lb(on_health_change=broken_callback)
    lb.register("i-a", make_backend().port)

    assert lb.wait_healthy("i-a", WAIT_S)
    assert fetch(lb.url).status == 200
    assert "on_health_change failed for i-a" in caplog.text


def test_wait_healthy_gives_up_on_a_failing_target(
    make_lb: MakeLoadBalancer, make_backend: MakeBackend, health_log: HealthLog
) -> None:
    lb = make_lb()
    backend = make_backend()
    backend.health_status = 503
    lb.register("i-a", backend.port)

    assert not lb.wait_healthy("i-a", 0.3)
    assert health_log.wait_for_state("i-a", "unhealthy") == (
        "unhealthy",
        "Target.ResponseCodeMismatch",
        "Health checks failed with these codes: [503]",
    )
    assert health_log.of("i-a")[:2] == [REGISTERING, INITIAL_CHECKING]


def test_round_robin_across_healthy_targets(make_lb: MakeLoadBalancer, make_backend: MakeBackend) -> None:
    lb = make_lb()
    for instance in ("i-a", "i-b"):
        lb.register(instance, make_backend(instance).port)
    assert lb.wait_healthy("i-a", WAIT_S)
    assert lb.wait_healthy("i-b", WAIT_S)

    answered_by = [fetch(lb.url).json()["instance"] for _ in range(10)]

    assert all(first != second for first, second in pairwise(answered_by))
    assert lb.served() == {"i-a": 5, "i-b": 5}


def test_routes_only_to_healthy_targets(
    make_lb: MakeLoadBalancer, make_backend: MakeBackend, health_log: HealthLog
) -> None:
    lb = make_lb()
    failing = make_backend("i-b")
    failing.health_status = 500
    lb.register("i-a", make_backend("i-a").port)
    lb.register("i-b", failing.port)
    assert lb.wait_healthy("i-a", WAIT_S)
    health_log.wait_for_state("i-b", "unhealthy")

    answered_by = {fetch(lb.url).json()["instance"] for _ in range(6)}

    assert answered_by == {"i-a"}
    assert failing.received == []


def test_fails_open_when_no_target_is_healthy(
    make_lb: MakeLoadBalancer, make_backend: MakeBackend, health_log: HealthLog
) -> None:
    lb = make_lb()
    for instance in ("i-a", "i-b"):
        backend = make_backend(instance)
        backend.health_status = 500
        lb.register(instance, backend.port)
    health_log.wait_for_state("i-a", "unhealthy")
    health_log.wait_for_state("i-b", "unhealthy")

    answers = [fetch(lb.url) for _ in range(6)]

    assert {answer.status for answer in answers} == {200}
    assert {answer.json()["instance"] for answer in answers} == {"i-a", "i-b"}


def test_answers_503_without_targets(make_lb: MakeLoadBalancer, make_backend: MakeBackend) -> None:
    lb = make_lb()
    answer = fetch(lb.url)
    assert answer.status == 503
    assert answer.headers["Server"] == "awselb/2.0"

    lb.register("i-a", make_backend().port)
    assert fetch(lb.url).status == 200
    lb.deregister("i-a")
    assert fetch(lb.url).status == 503


def test_forwards_method_body_and_headers(make_lb: MakeLoadBalancer, make_backend: MakeBackend) -> None:
    lb = make_lb()
    backend = make_backend()
    lb.register("i-a", backend.port)
    assert lb.wait_healthy("i-a", WAIT_S)

    posted = fetch(lb.url, "/orders?page=2", "POST", b'{"n": 1}', {"X-Request-Id": "r-1"})
    forwarded = fetch(lb.url, "/", "GET", headers={"X-Forwarded-For": "10.0.0.1"})
    head = fetch(lb.url, "/", "HEAD")

    assert posted.status == 200
    assert posted.json()["echo"] == '{"n": 1}'
    first, second, third = backend.received
    assert (first.method, first.path, first.body) == ("POST", "/orders?page=2", b'{"n": 1}')
    assert first.headers["X-Request-Id"] == "r-1"
    assert first.headers["X-Forwarded-For"] == "127.0.0.1"
    assert second.headers["X-Forwarded-For"] == "10.0.0.1, 127.0.0.1"
    assert third.method == "HEAD"
    assert forwarded.headers["Content-Type"] == "application/json"
    assert (head.status, head.body) == (200, b"")
    assert head.headers["Content-Length"] == forwarded.headers["Content-Length"]


def test_draining_target_finishes_in_flight_request_and_gets_no_new_ones(
    make_lb: MakeLoadBalancer, make_backend: MakeBackend, health_log: HealthLog
) -> None:
    lb = make_lb(deregistration_delay_s=30.0)
    draining, staying = make_backend("i-a"), make_backend("i-b")
    lb.register("i-a", draining.port)
    assert lb.wait_healthy("i-a", WAIT_S)
    slow_answers: list[Answer] = []
    slow_request = threading.Thread(target=lambda: slow_answers.append(fetch(lb.url, "/slow")))
    slow_request.start()
    assert draining.slow_started.wait(WAIT_S)
    lb.register("i-b", staying.port)
    assert lb.wait_healthy("i-b", WAIT_S)

    lb.deregister("i-a")
    answered_by = {fetch(lb.url).json()["instance"] for _ in range(6)}

    assert answered_by == {"i-b"}
    assert [request.path for request in draining.received] == ["/slow"]
    assert as_tuple(lb.health()["i-a"]) == DRAINING
    assert not lb.wait_drained("i-a", 0.1)

    draining.release_slow.set()
    slow_request.join(WAIT_S)
    assert lb.wait_drained("i-a", WAIT_S)
    assert [answer.status for answer in slow_answers] == [200]
    assert health_log.wait_for_state("i-a", "unused") == UNUSED
    assert health_log.of("i-a")[-2:] == [DRAINING, UNUSED]
    assert "i-a" not in lb.health()
    assert lb.served() == {"i-a": 1, "i-b": 6}


def test_draining_ends_at_the_deregistration_delay_with_requests_still_in_flight(
    make_lb: MakeLoadBalancer, make_backend: MakeBackend, health_log: HealthLog
) -> None:
    lb = make_lb(deregistration_delay_s=0.3)
    backend = make_backend()
    lb.register("i-a", backend.port)
    assert lb.wait_healthy("i-a", WAIT_S)
    slow_answers: list[Answer] = []
    slow_request = threading.Thread(target=lambda: slow_answers.append(fetch(lb.url, "/slow")))
    slow_request.start()
    assert backend.slow_started.wait(WAIT_S)

    lb.deregister("i-a")

    assert lb.wait_drained("i-a", WAIT_S)
    assert health_log.wait_for_state("i-a", "unused") == UNUSED
    assert slow_request.is_alive()
    backend.release_slow.set()
    slow_request.join(WAIT_S)
    assert [answer.status for answer in slow_answers] == [200]


def test_idle_target_is_drained_at_once(
    make_lb: MakeLoadBalancer, make_backend: MakeBackend, health_log: HealthLog
) -> None:
    lb = make_lb(deregistration_delay_s=30.0)
    lb.register("i-a", make_backend().port)
    assert lb.wait_healthy("i-a", WAIT_S)

    lb.deregister("i-a")

    assert lb.health() == {}
    assert lb.wait_drained("i-a", 0)
    assert health_log.wait_for_state("i-a", "unused") == UNUSED
    assert health_log.of("i-a")[-2:] == [DRAINING, UNUSED]


def test_registering_a_draining_target_again_starts_it_over(
    make_lb: MakeLoadBalancer, make_backend: MakeBackend, health_log: HealthLog
) -> None:
    lb = make_lb(deregistration_delay_s=30.0)
    old, new = make_backend("i-a", "v1"), make_backend("i-a", "v2")
    lb.register("i-a", old.port)
    assert lb.wait_healthy("i-a", WAIT_S)
    slow_request = threading.Thread(target=lambda: fetch(lb.url, "/slow"))
    slow_request.start()
    assert old.slow_started.wait(WAIT_S)
    lb.deregister("i-a")

    lb.register("i-a", new.port)
    assert lb.wait_healthy("i-a", WAIT_S)
    old.release_slow.set()
    slow_request.join(WAIT_S)

    assert fetch(lb.url).json()["version"] == "v2"
    health_log.wait_for_state("i-a", "healthy")
    # The abandoned drain reports nothing more: the id is registered again.
    assert health_log.of("i-a") == [
        *(REGISTERING, INITIAL_CHECKING, HEALTHY, DRAINING),
        *(REGISTERING, INITIAL_CHECKING, HEALTHY),
    ]


def test_retries_idempotent_requests_on_another_target_when_one_is_gone(
    make_lb: MakeLoadBalancer, make_backend: MakeBackend
) -> None:
    # One passing check makes a target healthy, and the next check is far away: the balancer
    # still believes in the stopped backend below.
    lb = make_lb(interval_s=30.0, healthy_threshold=1)
    gone, alive = make_backend("i-a"), make_backend("i-b")
    lb.register("i-a", gone.port)
    lb.register("i-b", alive.port)
    assert lb.wait_healthy("i-a", WAIT_S)
    assert lb.wait_healthy("i-b", WAIT_S)
    gone.stop()

    gets = [fetch(lb.url) for _ in range(4)]
    posts = [fetch(lb.url, method="POST", body=b"x") for _ in range(2)]

    assert [answer.status for answer in gets] == [200] * 4
    assert {answer.json()["instance"] for answer in gets} == {"i-b"}
    # A POST is not retried: the one that went to the stopped backend fails.
    assert sorted(answer.status for answer in posts) == [200, 502]
    assert lb.served() == {"i-b": 5}


def test_stop_leaves_no_thread_running(make_backend: MakeBackend) -> None:
    backend = make_backend()
    with LoadBalancer(interval_s=0.05, healthy_threshold=1) as lb:
        lb.register("i-a", backend.port)
        assert lb.wait_healthy("i-a", WAIT_S)
        assert fetch(lb.url).status == 200

    assert [thread.name for thread in threading.enumerate() if thread.name.startswith("load-balancer")] == []


@pytest.mark.timeout(60)
def test_rolling_restart_behind_the_balancer_loses_no_request(
    make_lb: MakeLoadBalancer, make_backend: MakeBackend
) -> None:
    lb = make_lb(deregistration_delay_s=2.0)
    serving = {instance: make_backend(instance, "v1") for instance in ("i-a", "i-b")}
    for instance, backend in serving.items():
        # Slow enough answers that requests are in flight whenever a target is deregistered.
        backend.response_delay_s = 0.03
        lb.register(instance, backend.port)
        assert lb.wait_healthy(instance, WAIT_S)

    with SteadyTraffic(lb.url, rate_per_s=100.0, concurrency=8, max_duration_s=30.0) as traffic:
        wait_until(lambda: traffic.snapshot().by_version.get("v1", 0) >= 10)
        for instance in ("i-a", "i-b"):
            lb.deregister(instance)
            assert lb.wait_drained(instance, WAIT_S)
            serving[instance].stop()
            serving[instance] = make_backend(instance, "v2")
            serving[instance].response_delay_s = 0.03
            lb.register(instance, serving[instance].port)
            assert lb.wait_healthy(instance, WAIT_S)
        wait_until(lambda: traffic.snapshot().by_version.get("v2", 0) >= 10)
    report = traffic.snapshot()

    assert report.failures == []
    assert report.failed == 0
    assert report.by_version.keys() == {"v1", "v2"}
    assert report.sent == sum(report.by_version.values())
