"""The sandbox's load balancer: a local reverse proxy that behaves like an ALB target group.

It health-checks its targets with thresholds, routes round robin over the healthy ones, fails open
like an ALB when none is healthy, and drains deregistered targets before letting them go. Every
change of a target's health is reported through ``on_health_change`` with the exact ELBv2 state
and reason strings, so the sandbox can make moto's DescribeTargetHealth tell the truth.
"""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from chalicelib.domain.traffic import load_balancer_dimension, target_group_dimension

logger = logging.getLogger(__name__)

_LOOPBACK = "127.0.0.1"
# A connection error on these may be retried on another target: the request had no effect.
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD"})
# Headers that describe one connection, not the message, so a proxy must not pass them on.
_HOP_BY_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


# PutMetricData takes at most 1,000 metric data per call, and at most 150 unique values in a call
# that gives a Values array (botocore's cloudwatch model, MetricDatum.Values).
_METRIC_DATA_PER_CALL = 1000
# The sandbox's load balancer counts its traffic in 10-second buckets (CloudWatch's reads are per
# minute: six buckets make one of its data points).
TRAFFIC_BUCKET_S = 10
# How often the publisher puts what the load balancer served into CloudWatch.
PUBLISH_EVERY_S = 0.5
_UNIQUE_VALUES_PER_CALL = 150


@dataclass
class TrafficBucket:
    """What the load balancer served in one span (seconds to a minute), as an ALB counts it for
    CloudWatch: requests, the 5xx it answered itself (no target, or the target failed), the
    targets' own 5xx, connections to targets that failed, and each answered request's time."""

    start: datetime
    requests: int = 0
    elb_5xx: int = 0
    target_5xx: int = 0
    connection_errors: int = 0
    rejected_connections: int = 0
    unhealthy_hosts: int = 0
    response_times_s: list[float] = field(default_factory=list)


def attach_load_balancer(session: Any, target_group_arn: str, name: str) -> str:
    """An ALB in the emulated ELBv2 whose listener forwards to the target group, so the group has
    a load balancer (DescribeTargetGroups' ``LoadBalancerArns``) whose CloudWatch dimensions the
    published metrics carry. Returns its ARN."""
    elbv2 = session.client("elbv2")
    ec2 = session.client("ec2")
    vpc = elbv2.describe_target_groups(TargetGroupArns=[target_group_arn])["TargetGroups"][0]["VpcId"]
    taken = {
        subnet["CidrBlock"]
        for subnet in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
    }
    blocks = (f"10.0.{n}.0/24" for n in range(1, 255) if f"10.0.{n}.0/24" not in taken)
    # An ALB needs subnets in two Availability Zones.
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=next(blocks), AvailabilityZone=f"{session.region_name}{zone}")[
            "Subnet"
        ]["SubnetId"]
        for zone in ("a", "b")
    ]
    balancer_arn: str = elbv2.create_load_balancer(Name=name, Subnets=subnets)["LoadBalancers"][0][
        "LoadBalancerArn"
    ]
    elbv2.create_listener(
        LoadBalancerArn=balancer_arn,
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": target_group_arn}],
    )
    return balancer_arn


def metric_data(
    bucket: TrafficBucket, load_balancer_arn: str, target_group_arn: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The bucket as the ALB publishes it to ``AWS/ApplicationELB``: the counts (the load
    balancer's with dimension ``LoadBalancer``, ``app/<name>/<id>``; the target group's with
    ``TargetGroup``, ``targetgroup/<name>/<id>``, and ``LoadBalancer``), and the response times
    as raw values (whole milliseconds, each with its count) so CloudWatch computes percentiles,
    in data of at most 150 unique values each."""
    balancer = [{"Name": "LoadBalancer", "Value": load_balancer_dimension(load_balancer_arn)}]
    group = [{"Name": "TargetGroup", "Value": target_group_dimension(target_group_arn)}, *balancer]

    def count(name: str, dimensions: list[dict[str, str]], value: int) -> dict[str, Any]:
        return {
            "MetricName": name,
            "Dimensions": dimensions,
            "Timestamp": bucket.start,
            "Value": value,
            "Unit": "Count",
        }

    counts = [
        count("RequestCount", balancer, bucket.requests),
        count("HTTPCode_ELB_5XX_Count", balancer, bucket.elb_5xx),
        count("RejectedConnectionCount", balancer, bucket.rejected_connections),
        count("RequestCount", group, bucket.requests),
        count("HTTPCode_Target_5XX_Count", group, bucket.target_5xx),
        count("TargetConnectionErrorCount", group, bucket.connection_errors),
        count("UnHealthyHostCount", group, bucket.unhealthy_hosts),
    ]
    times = Counter(round(seconds, 3) for seconds in bucket.response_times_s)
    values = sorted(times)
    latencies = [
        {
            "MetricName": "TargetResponseTime",
            "Dimensions": group,
            "Timestamp": bucket.start,
            "Values": chunk,
            "Counts": [float(times[value]) for value in chunk],
            "Unit": "Seconds",
        }
        for chunk in (
            values[first : first + _UNIQUE_VALUES_PER_CALL]
            for first in range(0, len(values), _UNIQUE_VALUES_PER_CALL)
        )
    ]
    return counts, latencies


def publish(
    cloudwatch: Any, buckets: Iterable[TrafficBucket], load_balancer_arn: str, target_group_arn: str
) -> None:
    """PutMetricData of the buckets: their counts together, each response-time datum alone."""
    counts: list[dict[str, Any]] = []
    latencies: list[dict[str, Any]] = []
    for bucket in buckets:
        bucket_counts, bucket_latencies = metric_data(bucket, load_balancer_arn, target_group_arn)
        counts += bucket_counts
        latencies += bucket_latencies
    calls = [
        counts[first : first + _METRIC_DATA_PER_CALL]
        for first in range(0, len(counts), _METRIC_DATA_PER_CALL)
    ]
    for data in [*calls, *([datum] for datum in latencies)]:
        cloudwatch.put_metric_data(Namespace="AWS/ApplicationELB", MetricData=data)


class MetricsPublisher:
    """Puts what a load balancer serves into CloudWatch (``AWS/ApplicationELB``) every
    ``PUBLISH_EVERY_S``, as increments of its 10-second buckets, under the dimensions of the ALB
    and target group that stand for it in the emulated ELBv2. ``stop()`` publishes the rest."""

    def __init__(
        self, load_balancer: LoadBalancer, cloudwatch: Any, load_balancer_arn: str, target_group_arn: str
    ) -> None:
        self._load_balancer = load_balancer
        self._cloudwatch = cloudwatch
        self._arns = (load_balancer_arn, target_group_arn)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alb-metrics", daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def flush(self) -> None:
        publish(self._cloudwatch, self._load_balancer.take_traffic(), *self._arns)

    def _run(self) -> None:
        while not self._stopping.wait(PUBLISH_EVERY_S):
            try:
                self.flush()
            except Exception:
                # The emulator shutting down under it; the next round (or stop) tries again.
                logger.exception("could not publish the load balancer's metrics")

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        self.flush()


class TargetState(StrEnum):
    """ELBv2 target health states (the ones a local target group can reach)."""

    INITIAL = "initial"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"
    UNUSED = "unused"


class TargetHealthReason(StrEnum):
    """ELBv2 target health reason codes."""

    REGISTRATION_IN_PROGRESS = "Elb.RegistrationInProgress"
    INITIAL_HEALTH_CHECKING = "Elb.InitialHealthChecking"
    RESPONSE_CODE_MISMATCH = "Target.ResponseCodeMismatch"
    TIMEOUT = "Target.Timeout"
    FAILED_HEALTH_CHECKS = "Target.FailedHealthChecks"
    DEREGISTRATION_IN_PROGRESS = "Target.DeregistrationInProgress"
    NOT_REGISTERED = "Target.NotRegistered"


@dataclass(frozen=True)
class TargetHealth:
    """One target's health as DescribeTargetHealth reports it; a healthy target has no reason."""

    state: TargetState
    reason: TargetHealthReason | None = None
    description: str | None = None


HealthChangeCallback = Callable[[str, TargetHealth], None]

_REGISTERING = TargetHealth(
    TargetState.INITIAL, TargetHealthReason.REGISTRATION_IN_PROGRESS, "Target registration is in progress"
)
_INITIAL_CHECKING = TargetHealth(
    TargetState.INITIAL, TargetHealthReason.INITIAL_HEALTH_CHECKING, "Initial health checks in progress"
)
_HEALTHY = TargetHealth(TargetState.HEALTHY)
_DRAINING = TargetHealth(
    TargetState.DRAINING,
    TargetHealthReason.DEREGISTRATION_IN_PROGRESS,
    "Target deregistration is in progress",
)
_NOT_REGISTERED = TargetHealth(
    TargetState.UNUSED, TargetHealthReason.NOT_REGISTERED, "Target is not registered to the target group"
)
_CHECK_TIMED_OUT = TargetHealth(TargetState.UNHEALTHY, TargetHealthReason.TIMEOUT, "Request timed out")
_CHECK_FAILED = TargetHealth(
    TargetState.UNHEALTHY, TargetHealthReason.FAILED_HEALTH_CHECKS, "Health checks failed"
)


@dataclass(eq=False)
class _Target:
    """One registration of a target. Re-registering an id creates a new record; only the record
    held in ``LoadBalancer._targets`` is current and reports health changes."""

    target_id: str
    port: int
    health: TargetHealth
    consecutive_passes: int = 0
    consecutive_failures: int = 0
    in_flight: int = 0
    drain_deadline: float | None = None
    # Set once the record is no longer current (drained, replaced, or the balancer stopped).
    retired: bool = False

    @property
    def under_health_checks(self) -> bool:
        return not self.retired and self.drain_deadline is None


@dataclass(frozen=True)
class _Reply:
    """A complete HTTP response, read in full before anything is sent to the client so that a
    failed upstream attempt can still be retried."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @classmethod
    def from_load_balancer(cls, status: int, message: str) -> _Reply:
        body = f"{message}\n".encode()
        headers = [
            ("Server", "awselb/2.0"),
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ]
        return cls(status, headers, body)


Forward = Callable[[str, str, list[tuple[str, str]], bytes | None], _Reply]


class LoadBalancer:
    """A local stand-in for an ALB with one target group, listening on 127.0.0.1.

    Targets are local processes identified by an id (the instance id in the sandbox) and a port.
    Each registered target has its own health-check thread. Draining ends as soon as the target
    has no request in flight, or at ``deregistration_delay_s`` if requests are still running
    then (those are left to complete). A real ALB always waits out the delay; ending early keeps
    the sandbox's deploys fast and changes nothing for clients, since a draining target gets no
    new requests either way.
    """

    def __init__(
        self,
        health_check_path: str = "/health",
        *,
        interval_s: float = 0.5,
        timeout_s: float = 0.5,
        healthy_threshold: int = 2,
        unhealthy_threshold: int = 2,
        deregistration_delay_s: float = 2.0,
        on_health_change: HealthChangeCallback | None = None,
        upstream_timeout_s: float = 10.0,
    ) -> None:
        if min(interval_s, timeout_s, upstream_timeout_s) <= 0 or deregistration_delay_s < 0:
            raise ValueError("intervals and timeouts must be positive, the deregistration delay not negative")
        if min(healthy_threshold, unhealthy_threshold) < 1:
            raise ValueError("health thresholds must be at least 1")
        self.health_check_path = health_check_path
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.healthy_threshold = healthy_threshold
        self.unhealthy_threshold = unhealthy_threshold
        self.deregistration_delay_s = deregistration_delay_s
        self.upstream_timeout_s = upstream_timeout_s
        self._on_health_change = on_health_change

        # One condition guards all target state; waiters (health checkers, wait_* callers) are
        # woken on every change.
        self._changed = threading.Condition()
        self._targets: dict[str, _Target] = {}
        self._served: Counter[str] = Counter()
        self._next_pick = 0
        self._watchers: list[threading.Thread] = []
        self._stopped = False
        # Health changes are queued under the lock and delivered outside it, one at a time and in
        # order, so a slow or re-entrant callback can neither block routing nor reorder events.
        self._pending_changes: deque[tuple[str, TargetHealth]] = deque()
        self._delivery_lock = threading.RLock()

        self._server: _ProxyServer | None = None
        self._server_thread: threading.Thread | None = None
        # What it served since the last take_traffic(), by bucket start, as an ALB counts it for
        # CloudWatch (guarded by its own lock: routing must not wait on it).
        self._traffic: dict[datetime, TrafficBucket] = {}
        self._traffic_lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None or self._stopped:
            raise RuntimeError("a LoadBalancer can be started once")
        self._server = _ProxyServer(self._forward)
        self._server_thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="load-balancer",
            daemon=True,
        )
        self._server_thread.start()
        logger.info("load balancer listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stops accepting, lets in-flight requests finish (up to ``upstream_timeout_s``), then
        stops every health checker. No thread of this balancer is left running afterwards."""
        if self._server is None or self._server_thread is None:
            return
        self._server.shutdown()
        self._server_thread.join()
        self._server.join_request_threads(timeout_s=self.upstream_timeout_s)
        self._server.server_close()
        with self._changed:
            self._stopped = True
            for target in self._targets.values():
                target.retired = True
            self._changed.notify_all()
            watchers = list(self._watchers)
        # Each checker is at most one probe away from noticing, and probes have socket timeouts.
        for watcher in watchers:
            watcher.join()
        self._server = None
        self._server_thread = None
        logger.info("load balancer stopped")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the load balancer is not running")
        return f"http://{_LOOPBACK}:{self._server.server_port}"

    # -- targets ----------------------------------------------------------------------------

    def register(self, target_id: str, port: int) -> None:
        """Registers a target (state ``initial``). Registering it again on the same port is a
        no-op, unless it is draining: then the drain is abandoned and it starts over."""
        with self._changed:
            if self._server is None:
                raise RuntimeError("start the load balancer before registering targets")
            current = self._targets.get(target_id)
            if current is not None and current.port == port and current.drain_deadline is None:
                return
            if current is not None:
                current.retired = True
            target = _Target(target_id, port, _REGISTERING)
            self._targets[target_id] = target
            self._announce_locked(target)
            self._changed.notify_all()
            watcher = threading.Thread(
                target=self._watch, args=(target,), name=f"load-balancer-health-{target_id}", daemon=True
            )
            self._watchers = [thread for thread in self._watchers if thread.is_alive()]
            self._watchers.append(watcher)
            watcher.start()
        self._deliver_health_changes()

    def deregister(self, target_id: str) -> None:
        """Starts draining a target: no new requests, in-flight ones complete. Deregistering an
        unknown or already draining target does nothing, like DeregisterTargets."""
        with self._changed:
            target = self._targets.get(target_id)
            if target is None or target.drain_deadline is not None:
                return
            target.drain_deadline = time.monotonic() + self.deregistration_delay_s
            self._set_health_locked(target, _DRAINING)
            if target.in_flight == 0:
                self._finish_drain_locked(target)
        self._deliver_health_changes()

    def health(self) -> dict[str, TargetHealth]:
        """Health of every registered target, draining ones included."""
        with self._changed:
            return {target_id: target.health for target_id, target in self._targets.items()}

    def served(self) -> dict[str, int]:
        """Responses each target id has given through the balancer (any status)."""
        with self._changed:
            return dict(self._served)

    def wait_healthy(self, target_id: str, timeout: float) -> bool:
        """True once ``target_id`` is healthy, False if it is not by ``timeout`` seconds."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._state_of(target_id) is TargetState.HEALTHY, timeout=timeout
            )

    def wait_drained(self, target_id: str, timeout: float) -> bool:
        """True once ``target_id`` is not draining (at once if it never was), False if it still is
        after ``timeout`` seconds."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._state_of(target_id) is not TargetState.DRAINING, timeout=timeout
            )

    def _state_of(self, target_id: str) -> TargetState | None:
        target = self._targets.get(target_id)
        return None if target is None else target.health.state

    # -- health checks and draining ---------------------------------------------------------

    def _watch(self, target: _Target) -> None:
        """Health-checks one target every ``interval_s`` until it is deregistered, then drains it."""
        while True:
            failure = self._probe(target.port)
            with self._changed:
                if not target.under_health_checks:
                    break
                self._record_check_locked(target, failure)
            self._deliver_health_changes()
            with self._changed:
                if self._changed.wait_for(lambda: not target.under_health_checks, timeout=self.interval_s):
                    break
        self._drain(target)

    def _probe(self, port: int) -> TargetHealth | None:
        """One health check: None when it passes, else the health the target gets if it keeps
        failing this way."""
        connection = http.client.HTTPConnection(_LOOPBACK, port, timeout=self.timeout_s)
        try:
            connection.request(
                "GET",
                self.health_check_path,
                headers={"Connection": "close", "User-Agent": "ELB-HealthChecker/2.0"},
            )
            response = connection.getresponse()
            response.read()
        except TimeoutError:
            return _CHECK_TIMED_OUT
        except (OSError, http.client.HTTPException):
            return _CHECK_FAILED
        finally:
            connection.close()
        if response.status == 200:
            return None
        return TargetHealth(
            TargetState.UNHEALTHY,
            TargetHealthReason.RESPONSE_CODE_MISMATCH,
            f"Health checks failed with these codes: [{response.status}]",
        )

    def _record_check_locked(self, target: _Target, failure: TargetHealth | None) -> None:
        if failure is None:
            target.consecutive_passes += 1
            target.consecutive_failures = 0
            reached_threshold = target.consecutive_passes >= self.healthy_threshold
        else:
            target.consecutive_failures += 1
            target.consecutive_passes = 0
            reached_threshold = target.consecutive_failures >= self.unhealthy_threshold
        if reached_threshold:
            self._set_health_locked(target, failure or _HEALTHY)
        elif target.health.state is TargetState.INITIAL:
            self._set_health_locked(target, _INITIAL_CHECKING)

    def _drain(self, target: _Target) -> None:
        with self._changed:
            if target.retired or target.drain_deadline is None:
                return
            ended_early = self._changed.wait_for(
                lambda: target.retired, timeout=max(0.0, target.drain_deadline - time.monotonic())
            )
            if not ended_early:
                logger.info(
                    "%s: deregistration delay over with %d request(s) in flight",
                    target.target_id,
                    target.in_flight,
                )
                self._finish_drain_locked(target)
        self._deliver_health_changes()

    def _finish_drain_locked(self, target: _Target) -> None:
        if target.retired:
            return
        self._set_health_locked(target, _NOT_REGISTERED)
        del self._targets[target.target_id]
        target.retired = True

    # -- health change reporting ------------------------------------------------------------

    def _set_health_locked(self, target: _Target, health: TargetHealth) -> None:
        if target.health == health:
            return
        target.health = health
        if self._targets.get(target.target_id) is target:
            self._announce_locked(target)
        self._changed.notify_all()

    def _announce_locked(self, target: _Target) -> None:
        health = target.health
        logger.info("target %s (port %d): %s %s", target.target_id, target.port, health.state, health.reason)
        if self._on_health_change is not None:
            self._pending_changes.append((target.target_id, health))

    def _deliver_health_changes(self) -> None:
        if self._on_health_change is None:
            return
        with self._delivery_lock:
            while True:
                with self._changed:
                    if not self._pending_changes:
                        return
                    target_id, health = self._pending_changes.popleft()
                try:
                    self._on_health_change(target_id, health)
                except Exception:
                    logger.exception("on_health_change failed for %s", target_id)

    # -- routing ----------------------------------------------------------------------------

    def take_traffic(self) -> list[TrafficBucket]:
        """What it served since the last call, in buckets of ``TRAFFIC_BUCKET_S`` seconds (each
        with its start): the increments a publisher puts into CloudWatch, whose sums add them
        up again."""
        with self._traffic_lock:
            taken = sorted(self._traffic.values(), key=lambda bucket: bucket.start)
            self._traffic = {}
        return taken

    def _count(
        self, started: datetime, reply: _Reply, *, from_target: bool, connection_errors: int, seconds: float
    ) -> None:
        """One request in its bucket (by when it arrived): a target's answer counts its 5xx and
        its time; the balancer's own 5xx (no target, a failed or timed-out target) counts as
        ELB 5xx; every connection to a target that failed counts."""
        with self._changed:
            unhealthy = sum(
                1 for target in self._targets.values() if target.health.state is TargetState.UNHEALTHY
            )
        start = started.replace(second=started.second - started.second % TRAFFIC_BUCKET_S, microsecond=0)
        with self._traffic_lock:
            bucket = self._traffic.setdefault(start, TrafficBucket(start))
            bucket.requests += 1
            bucket.connection_errors += connection_errors
            bucket.unhealthy_hosts = max(bucket.unhealthy_hosts, unhealthy)
            if from_target:
                bucket.target_5xx += reply.status >= 500
                bucket.response_times_s.append(seconds)
            elif reply.status >= 500:
                bucket.elb_5xx += 1

    def _forward(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes | None) -> _Reply:
        started = datetime.now(UTC)
        began = time.monotonic()
        failed_connections = 0

        def counted(reply: _Reply, *, from_target: bool = False) -> _Reply:
            self._count(
                started,
                reply,
                from_target=from_target,
                connection_errors=failed_connections,
                seconds=time.monotonic() - began,
            )
            return reply

        attempts = 2 if method in _IDEMPOTENT_METHODS else 1
        tried: set[str] = set()
        for _ in range(attempts):
            target = self._acquire(excluding=tried)
            if target is None:
                break
            tried.add(target.target_id)
            answered = False
            try:
                reply = _send_upstream(
                    target.port,
                    method=method,
                    path=path,
                    headers=headers,
                    body=body,
                    timeout_s=self.upstream_timeout_s,
                )
                answered = True
                return counted(reply, from_target=True)
            except TimeoutError:
                # Not retried: the target may still be working on it, as an ALB would answer.
                logger.warning("%s %s: target %s timed out", method, path, target.target_id)
                return counted(_Reply.from_load_balancer(504, "Gateway Timeout"))
            except (OSError, http.client.HTTPException) as error:
                logger.info("%s %s: target %s failed: %r", method, path, target.target_id, error)
                failed_connections += 1
            finally:
                self._release(target, answered=answered)
        if not tried:
            return counted(_Reply.from_load_balancer(503, "Service Unavailable: no registered targets"))
        return counted(_Reply.from_load_balancer(502, "Bad Gateway"))

    def _acquire(self, excluding: set[str]) -> _Target | None:
        """Picks the next target round robin and counts the request in flight, atomically, so a
        target that is being deregistered is either picked before (and drained) or never."""
        with self._changed:
            routable = [
                target
                for target_id, target in sorted(self._targets.items())
                if target.health.state is not TargetState.DRAINING and target_id not in excluding
            ]
            healthy = [target for target in routable if target.health.state is TargetState.HEALTHY]
            # Fail open like an ALB: with no healthy target, every registered one gets traffic.
            candidates = healthy or routable
            if not candidates:
                return None
            target = candidates[self._next_pick % len(candidates)]
            self._next_pick += 1
            target.in_flight += 1
            return target

    def _release(self, target: _Target, answered: bool) -> None:
        with self._changed:
            target.in_flight -= 1
            if answered:
                self._served[target.target_id] += 1
            if target.drain_deadline is not None and target.in_flight == 0:
                self._finish_drain_locked(target)
            self._changed.notify_all()
        self._deliver_health_changes()


def _send_upstream(
    port: int,
    *,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    body: bytes | None,
    timeout_s: float,
) -> _Reply:
    """One request on a fresh connection (no keep-alive), response read in full."""
    connection = http.client.HTTPConnection(_LOOPBACK, port, timeout=timeout_s)
    try:
        # putrequest rather than request(): the headers are a list, so repeated ones survive.
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        if body is not None or method == "POST":
            connection.putheader("Content-Length", str(len(body or b"")))
        connection.putheader("Connection", "close")
        connection.endheaders(body)
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    reply_headers = [
        (name, value)
        for name, value in response.getheaders()
        if name.lower() not in _HOP_BY_HOP_HEADERS and name.lower() != "content-length"
    ]
    # A HEAD reply keeps the length of the body it describes; others carry what was read.
    length = response.getheader("Content-Length") if method == "HEAD" else str(len(payload))
    if length is not None:
        reply_headers.append(("Content-Length", length))
    return _Reply(response.status, reply_headers, payload)


class _ProxyServer(ThreadingHTTPServer):
    """Serves each client connection on its own daemon thread and keeps track of those threads
    so that stopping can wait for in-flight requests."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, forward: Forward) -> None:
        self.forward = forward
        self._request_threads: set[threading.Thread] = set()
        self._request_threads_lock = threading.Lock()
        super().__init__((_LOOPBACK, 0), _ProxyHandler)

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        # Registered here, in the accepting thread, so that once shutdown() has returned every
        # accepted request is known to join_request_threads().
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="load-balancer-request",
            daemon=self.daemon_threads,
        )
        with self._request_threads_lock:
            self._request_threads.add(thread)
        thread.start()

    def process_request_thread(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._request_threads_lock:
                self._request_threads.discard(threading.current_thread())

    def join_request_threads(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self._request_threads_lock:
            threads = list(self._request_threads)
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in threads):
            logger.warning("load balancer stopped with requests still in flight")


class _ProxyHandler(BaseHTTPRequestHandler):
    """Reads one client request, has the balancer forward it, writes the reply. HTTP/1.0: one
    request per client connection."""

    server: _ProxyServer

    def do_GET(self) -> None:
        self._proxy()

    def do_HEAD(self) -> None:
        self._proxy()

    def do_POST(self) -> None:
        self._proxy()

    def _proxy(self) -> None:
        if "Transfer-Encoding" in self.headers:
            self._send(_Reply.from_load_balancer(411, "Length Required"))
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            self._send(_Reply.from_load_balancer(400, "Bad Request: invalid Content-Length"))
            return
        body = self.rfile.read(length) if length > 0 else None
        self._send(self.server.forward(self.command, self.path, self._upstream_headers(), body))

    def _upstream_headers(self) -> list[tuple[str, str]]:
        headers = [
            (name, value)
            for name, value in self.headers.items()
            if name.lower() not in _HOP_BY_HOP_HEADERS
            and name.lower() not in {"content-length", "x-forwarded-for"}
        ]
        forwarded_for = [*self.headers.get_all("X-Forwarded-For", []), self.client_address[0]]
        headers.append(("X-Forwarded-For", ", ".join(forwarded_for)))
        return headers

    def _send(self, reply: _Reply) -> None:
        self.log_request(reply.status)
        try:
            self.send_response_only(reply.status)
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)
        except ConnectionError as error:
            logger.debug("client went away before the reply was sent: %r", error)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)
