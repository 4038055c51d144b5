"""What the load balancer saw while a release rolled out: the zero-downtime receipt recorded when
a release ends, and the baseline comparison that judges a bake.

Both read the Application Load Balancer's CloudWatch metrics (namespace ``AWS/ApplicationELB``,
published in 60-second periods) with one ``GetMetricData`` call: the load balancer's own
(dimension ``LoadBalancer``) and each target group's (dimensions ``TargetGroup`` and
``LoadBalancer``). Everything here is pure: the query plan, the figures of a window, the receipt
and its one-line summary, and the comparison's judgement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from chalicelib.domain.pipelines import CompareSettings, NotEnoughTraffic

NAMESPACE = "AWS/ApplicationELB"
# The load balancer publishes one data point per metric every 60 seconds.
PERIOD_S = 60
# The baseline window is as long as the window it is compared with, within these bounds: a few
# minutes of traffic to mean something, and no more than an hour of history.
MIN_BASELINE_S = 5 * 60
MAX_BASELINE_S = 60 * 60
# CloudWatch has a load balancer's minute about a minute after it ends: a window that ended less
# than this before the read may still be missing its last data points.
SETTLING_S = 120
# GetMetricData takes at most 500 queries (botocore's cloudwatch model: MetricDataQueries max).
MAX_QUERIES = 500
# Each load balancer asks for this many metrics, each (target group, load balancer) pair this many.
_LOAD_BALANCER_QUERIES = 3
_TARGET_GROUP_QUERIES = 5


class MetricsReadError(Exception):
    """CloudWatch gave no metric data (refused, throttled past botocore's retries, no answer).
    ``permanent``: the same read can never succeed (access denied, a bad request); otherwise
    (throttled, a 5xx, no answer, a result with status InternalError) it may later."""

    def __init__(self, code: str, message: str, *, permanent: bool) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.permanent = permanent


class Metric(StrEnum):
    """The ALB metrics the receipt reads (AWS's "CloudWatch metrics for your Application Load
    Balancer")."""

    ELB_5XX = "HTTPCode_ELB_5XX_Count"
    REJECTED_CONNECTIONS = "RejectedConnectionCount"
    REQUESTS = "RequestCount"
    TARGET_5XX = "HTTPCode_Target_5XX_Count"
    CONNECTION_ERRORS = "TargetConnectionErrorCount"
    UNHEALTHY_HOSTS = "UnHealthyHostCount"
    RESPONSE_TIME = "TargetResponseTime"


# The ``LoadBalancer`` dimension of an Application Load Balancer. A Network Load Balancer's
# (``net/...``) publishes under AWS/NetworkELB, with other metrics: AWS/ApplicationELB has nothing
# for it, so its traffic is not counted.
_APPLICATION_LOAD_BALANCER = "app/"


def load_balancer_dimension(arn: str) -> str:
    """``app/<name>/<id>``: the ``LoadBalancer`` dimension, the tail of the load balancer's ARN
    (``arn:aws:elasticloadbalancing:<region>:<account>:loadbalancer/app/<name>/<id>``)."""
    return arn.split(":", 5)[-1].removeprefix("loadbalancer/")


def target_group_dimension(arn: str) -> str:
    """``targetgroup/<name>/<id>``: the ``TargetGroup`` dimension, the tail of the group's ARN."""
    return arn.split(":", 5)[-1]


@dataclass(frozen=True)
class TrafficSource:
    """Where a deployment's traffic is counted: each (target group, load balancer) pair, as
    dimension values. A target group serves the load balancers whose listener rules forward to
    it, one pair each."""

    pairs: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, groups: Sequence[tuple[str, Sequence[str]]]) -> TrafficSource:
        """From each target group's ARN and its load balancers' ARNs (DescribeTargetGroups).
        Only Application Load Balancers count: a group behind Network Load Balancers only has
        no pair, hence no receipt."""
        return cls(
            tuple(
                (target_group_dimension(group), dimension)
                for group, balancers in groups
                for balancer in balancers
                if (dimension := load_balancer_dimension(balancer)).startswith(_APPLICATION_LOAD_BALANCER)
            )
        )

    @property
    def load_balancers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(balancer for _, balancer in self.pairs))

    def to_list(self) -> list[list[str]]:
        return [list(pair) for pair in self.pairs]

    @classmethod
    def from_list(cls, raw: Sequence[Sequence[str]]) -> TrafficSource:
        return cls(tuple((str(group), str(balancer)) for group, balancer in raw))


@dataclass(frozen=True)
class Window:
    """A span of whole minutes, ``start`` included, ``end`` not: the load balancer's data points
    are per minute, each stamped with the minute's start."""

    start: datetime
    end: datetime

    @classmethod
    def around(cls, start: datetime, end: datetime) -> Window:
        """The whole minutes that cover ``start`` to ``end`` (at least one)."""
        first = _minute(start)
        last = _minute(end)
        if last < end or last == first:
            last += timedelta(seconds=PERIOD_S)
        return cls(first, last)

    @property
    def length_s(self) -> int:
        return int((self.end - self.start).total_seconds())

    def baseline(self, ending: datetime) -> Window:
        """The window to compare this one with, ending at ``ending`` (the rollout's start, so
        the baseline is the previous release's traffic): as long as this one, within bounds."""
        length = min(max(self.length_s, MIN_BASELINE_S), MAX_BASELINE_S)
        end = _minute(ending)
        return Window(end - timedelta(seconds=length), end)

    def holds(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    def to_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


@dataclass(frozen=True)
class MetricQuery:
    # Whose metric: "lb<n>" (a load balancer) or "tg<n>" (a target group pair).
    owner: str
    metric: Metric
    dimensions: tuple[tuple[str, str], ...]
    stat: str

    @property
    def id(self) -> str:
        # GetMetricData's ``^[a-z][a-zA-Z0-9_]*$``.
        return f"{self.owner}_{_QUERY_NAMES[self.metric]}"

    @property
    def of_target_group(self) -> bool:
        return self.owner.startswith("tg")

    def to_api(self) -> dict[str, Any]:
        """A MetricDataQuery of GetMetricData."""
        return {
            "Id": self.id,
            "MetricStat": {
                "Metric": {
                    "Namespace": NAMESPACE,
                    "MetricName": self.metric.value,
                    "Dimensions": [{"Name": name, "Value": value} for name, value in self.dimensions],
                },
                "Period": PERIOD_S,
                "Stat": self.stat,
            },
            "ReturnData": True,
        }


# What each metric is read as: counts are summed; the unhealthy hosts' peak; the latency's p90.
_STATS = {
    Metric.ELB_5XX: "Sum",
    Metric.REJECTED_CONNECTIONS: "Sum",
    Metric.REQUESTS: "Sum",
    Metric.TARGET_5XX: "Sum",
    Metric.CONNECTION_ERRORS: "Sum",
    Metric.UNHEALTHY_HOSTS: "Maximum",
    Metric.RESPONSE_TIME: "p90",
}
_LOAD_BALANCER_METRICS = (Metric.ELB_5XX, Metric.REJECTED_CONNECTIONS, Metric.REQUESTS)
_TARGET_GROUP_METRICS = (
    Metric.TARGET_5XX,
    Metric.CONNECTION_ERRORS,
    Metric.REQUESTS,
    Metric.UNHEALTHY_HOSTS,
    Metric.RESPONSE_TIME,
)
_QUERY_NAMES = {
    Metric.ELB_5XX: "elb_5xx",
    Metric.REJECTED_CONNECTIONS: "rejected",
    Metric.REQUESTS: "requests",
    Metric.TARGET_5XX: "target_5xx",
    Metric.CONNECTION_ERRORS: "connection_errors",
    Metric.UNHEALTHY_HOSTS: "unhealthy",
    Metric.RESPONSE_TIME: "p90",
}


@dataclass(frozen=True)
class QueryPlan:
    """One GetMetricData call: every query over ``span``."""

    queries: tuple[MetricQuery, ...]
    span: Window


def max_pairs(load_balancers: int) -> int:
    """How many (target group, load balancer) pairs fit in one call beside the load balancers."""
    return (MAX_QUERIES - _LOAD_BALANCER_QUERIES * load_balancers) // _TARGET_GROUP_QUERIES


def plan_queries(source: TrafficSource, windows: Sequence[Window]) -> QueryPlan:
    """The queries covering every window. A deployment group names at most a handful of target
    groups; past what one call takes, the pairs beyond are left out."""
    balancers = source.load_balancers
    queries = [
        MetricQuery(f"lb{index}", metric, (("LoadBalancer", balancer),), _STATS[metric])
        for index, balancer in enumerate(balancers)
        for metric in _LOAD_BALANCER_METRICS
    ]
    queries += [
        MetricQuery(
            f"tg{index}",
            metric,
            (("TargetGroup", group), ("LoadBalancer", balancer)),
            _STATS[metric],
        )
        for index, (group, balancer) in enumerate(source.pairs[: max_pairs(len(balancers))])
        for metric in _TARGET_GROUP_METRICS
    ]
    span = Window(min(window.start for window in windows), max(window.end for window in windows))
    return QueryPlan(tuple(queries), span)


# A query's data points: (the minute's start, its value).
Series = Mapping[str, Sequence[tuple[datetime, float]]]


@dataclass(frozen=True)
class WindowFigures:
    """What the load balancer saw in one window."""

    # Through the load balancers (every target group they serve).
    requests: int
    elb_5xx: int
    rejected_connections: int
    # Through the deployment's target groups.
    target_requests: int
    target_5xx: int
    connection_errors: int
    max_unhealthy_hosts: int
    # The slowest minute's p90 response time, and the minutes' p90 weighted by their requests.
    slowest_p90_ms: float | None
    typical_p90_ms: float | None

    @property
    def errors(self) -> int:
        """The 5xx answers clients got: from the load balancer itself and from the targets."""
        return self.elb_5xx + self.target_5xx

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def target_error_rate(self) -> float | None:
        """The target groups' own failures: 5xx answers and connections not established."""
        return (
            (self.target_5xx + self.connection_errors) / self.target_requests
            if self.target_requests
            else None
        )


def figures(plan: QueryPlan, series: Series, window: Window) -> WindowFigures:
    """The window's figures from the plan's series."""

    def points(metric: Metric) -> list[tuple[MetricQuery, datetime, float]]:
        return [
            (query, moment, value)
            for query in plan.queries
            if query.metric is metric
            for moment, value in series.get(query.id, ())
            if window.holds(moment)
        ]

    def total(metric: Metric, *, of_target_groups: bool) -> int:
        return round(
            sum(value for query, _, value in points(metric) if query.of_target_group == of_target_groups)
        )

    # Each minute's p90 of a target group, weighted by the requests the group served that minute.
    requests_by_minute = {
        (query.owner, moment): value
        for query, moment, value in points(Metric.REQUESTS)
        if query.of_target_group
    }
    latencies = [
        (value, requests_by_minute.get((query.owner, moment), 0.0))
        for query, moment, value in points(Metric.RESPONSE_TIME)
    ]
    weight = sum(requests for _, requests in latencies)
    return WindowFigures(
        requests=total(Metric.REQUESTS, of_target_groups=False),
        elb_5xx=total(Metric.ELB_5XX, of_target_groups=False),
        rejected_connections=total(Metric.REJECTED_CONNECTIONS, of_target_groups=False),
        target_requests=total(Metric.REQUESTS, of_target_groups=True),
        target_5xx=total(Metric.TARGET_5XX, of_target_groups=True),
        connection_errors=total(Metric.CONNECTION_ERRORS, of_target_groups=True),
        max_unhealthy_hosts=round(max((value for _, _, value in points(Metric.UNHEALTHY_HOSTS)), default=0)),
        # TargetResponseTime is in seconds.
        slowest_p90_ms=_ms(max((value for value, _ in latencies), default=None)),
        typical_p90_ms=_ms(sum(value * requests for value, requests in latencies) / weight)
        if weight
        else None,
    )


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


def receipt(
    plan: QueryPlan, series: Series, rollout: Window, *, rollout_ended_at: datetime, read_at: datetime
) -> dict[str, Any]:
    """The receipt of a rollout: its figures against the baseline window's error rate, and the
    line that says it. ``so_far``: the rollout ended too recently for CloudWatch to have its
    last minute."""
    during = figures(plan, series, rollout)
    baseline_window = rollout.baseline(rollout.start)
    before = figures(plan, series, baseline_window)
    so_far = (read_at - rollout_ended_at).total_seconds() < SETTLING_S
    return {
        "requests": during.requests,
        "elb_5xx": during.elb_5xx,
        "target_5xx": during.target_5xx,
        "connection_errors": during.connection_errors,
        "rejected_connections": during.rejected_connections,
        "max_unhealthy_hosts": during.max_unhealthy_hosts,
        "slowest_p90_ms": _whole(during.slowest_p90_ms),
        "error_rate_ppm": _ppm(during.error_rate),
        "baseline_requests": before.requests,
        "baseline_error_rate_ppm": _ppm(before.error_rate),
        "rollout": rollout.to_dict(),
        "baseline": baseline_window.to_dict(),
        "so_far": so_far,
        "summary": summary(during, before, so_far=so_far),
    }


# The history stores whole numbers only (DynamoDB hands numbers back as Decimal): rates are in
# parts per million, times in whole milliseconds.
def _ppm(rate: float | None) -> int | None:
    return round(rate * 1_000_000) if rate is not None else None


def _whole(value: float | None) -> int | None:
    return round(value) if value is not None else None


def unavailable_receipt(rollout: Window, code: str, why: str) -> dict[str, Any]:
    """The receipt when CloudWatch gave no figures: the release is not held up for it. The
    summary, which goes to Slack, mail and GitHub, names the error code only: an error's message
    may name the role's ARN and the account (AccessDenied's does); ``unavailable`` in the
    history keeps it whole."""
    return {
        "rollout": rollout.to_dict(),
        "unavailable": why,
        "summary": f"no load-balancer figures: CloudWatch did not answer ({code})",
    }


def summary(during: WindowFigures, before: WindowFigures, *, so_far: bool) -> str:
    """One line: "0 load-balancer errors in 14,210 requests during rollout (baseline 0.00%)"."""
    noun = "error" if during.errors == 1 else "errors"
    baseline = f"baseline {before.error_rate:.2%}" if before.error_rate is not None else "no baseline traffic"
    latency = f"; slowest p90 {during.slowest_p90_ms:,.0f} ms" if during.slowest_p90_ms is not None else ""
    when = "during rollout so far" if so_far else "during rollout"
    return (
        f"{during.errors:,} load-balancer {noun} in {during.requests:,} requests {when} ({baseline}){latency}"
    )


# Baseline comparison (``verify.compare``).

# A baseline without errors is compared as if it had this rate: a bake's rate is judged against
# at least this floor times the ratio, so one stray 5xx in a quiet bake does not fail a release.
ERROR_RATE_FLOOR = 0.001
# ... and a baseline p90 faster than this as if it were this fast (a few ms of jitter on a
# near-instant endpoint is not a regression).
P90_FLOOR_MS = 10.0


class Verdict(StrEnum):
    WITHIN = "within"
    EXCEEDED = "exceeded"
    NOT_ENOUGH_TRAFFIC = "not_enough_traffic"


@dataclass(frozen=True)
class Comparison:
    verdict: Verdict
    # Whether the release passes: within, or not enough traffic when that passes.
    passes: bool
    reason: str
    bake: WindowFigures
    baseline: WindowFigures

    def to_dict(self) -> dict[str, Any]:
        def side(figures: WindowFigures) -> dict[str, Any]:
            return {
                "requests": figures.target_requests,
                "errors": figures.target_5xx + figures.connection_errors,
                "error_rate_ppm": _ppm(figures.target_error_rate),
                "p90_ms": _whole(figures.typical_p90_ms),
            }

        return {
            "verdict": self.verdict.value,
            "passes": self.passes,
            "reason": self.reason,
            "bake": side(self.bake),
            "baseline": side(self.baseline),
        }


def compare(settings: CompareSettings, bake: WindowFigures, baseline: WindowFigures) -> Comparison:
    """The bake against the baseline: the error rate may be at most ``error_rate_ratio`` times
    the baseline's (a baseline under ``ERROR_RATE_FLOOR`` counts as the floor), the p90 at most
    ``p90_ratio`` times the baseline's (under ``P90_FLOOR_MS``: the floor)."""
    fewest = min(bake.target_requests, baseline.target_requests)
    if fewest < settings.min_requests or bake.target_error_rate is None or baseline.target_error_rate is None:
        passes = settings.not_enough_traffic is NotEnoughTraffic.PASS
        reason = (
            f"not enough traffic to judge: {bake.target_requests:,} requests during the bake, "
            f"{baseline.target_requests:,} in the baseline window (verify.compare.min_requests = "
            f"{settings.min_requests}); {'passes' if passes else 'fails'} as "
            f"verify.compare.not_enough_traffic says"
        )
        return Comparison(Verdict.NOT_ENOUGH_TRAFFIC, passes, reason, bake, baseline)
    exceeded: list[str] = []
    error_limit = settings.error_rate_ratio * max(baseline.target_error_rate, ERROR_RATE_FLOOR)
    if bake.target_error_rate > error_limit:
        exceeded.append(
            f"error rate {bake.target_error_rate:.2%} during the bake against "
            f"{baseline.target_error_rate:.2%} before (limit {error_limit:.2%}: "
            f"verify.compare.error_rate_ratio = {settings.error_rate_ratio:g})"
        )
    if bake.typical_p90_ms is not None and baseline.typical_p90_ms is not None:
        p90_limit = settings.p90_ratio * max(baseline.typical_p90_ms, P90_FLOOR_MS)
        if bake.typical_p90_ms > p90_limit:
            exceeded.append(
                f"p90 {bake.typical_p90_ms:,.0f} ms during the bake against "
                f"{baseline.typical_p90_ms:,.0f} ms before (limit {p90_limit:,.0f} ms: "
                f"verify.compare.p90_ratio = {settings.p90_ratio:g})"
            )
    if exceeded:
        return Comparison(Verdict.EXCEEDED, False, "; ".join(exceeded), bake, baseline)
    reason = f"error rate {bake.target_error_rate:.2%} against {baseline.target_error_rate:.2%} before, " + (
        f"p90 {bake.typical_p90_ms:,.0f} ms against {baseline.typical_p90_ms:,.0f} ms"
        if bake.typical_p90_ms is not None and baseline.typical_p90_ms is not None
        else "no p90 data"
    )
    return Comparison(Verdict.WITHIN, True, reason, bake, baseline)
