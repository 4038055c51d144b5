"""The zero-downtime receipt's reads: one GetMetricData of the load balancer's metrics over a
release's rollout and a baseline window (chalicelib/domain/traffic.py), for verification's end,
its baseline comparison, and the releases that end before verification (a CodeDeploy failure, a
stop, the watchdog's stop)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib.domain.release import Release
from chalicelib.domain.traffic import (
    MetricsReadError,
    QueryPlan,
    Series,
    TrafficSource,
    Window,
    plan_queries,
    receipt,
    unavailable_receipt,
)
from chalicelib.domain.verification import LoadBalancerError, TargetGroupSettings
from chalicelib.log import logger
from chalicelib.service.ports import DeploymentInfo, DeploymentNotFound
from chalicelib.service.wiring import Wiring


@dataclass(frozen=True)
class TrafficRead:
    """The load balancer's metrics over some windows, as one GetMetricData gave them."""

    plan: QueryPlan
    series: Series
    # Why CloudWatch gave no figures, when it did not.
    error: MetricsReadError | None = None


def read_traffic(wiring: Wiring, source: TrafficSource, windows: Sequence[Window]) -> TrafficRead:
    """One GetMetricData over every window. A read that fails never holds up the release: it
    is logged and the figures are missing."""
    plan = plan_queries(source, windows)
    if wiring.traffic is None:
        return TrafficRead(plan, {}, MetricsReadError("NotWired", "no CloudWatch is wired", permanent=True))
    try:
        return TrafficRead(plan, wiring.traffic.metric_series(plan))
    except MetricsReadError as error:
        logger.warning(
            "could not read the load balancer's metrics; going on without", extra={"why": str(error)}
        )
        return TrafficRead(plan, {}, error)


def rollout_receipt(
    read: TrafficRead, rollout: Window, *, ended_at: datetime, read_at: datetime
) -> dict[str, Any]:
    if read.error is not None:
        return unavailable_receipt(rollout, read.error.code, str(read.error))
    return receipt(read.plan, read.series, rollout, rollout_ended_at=ended_at, read_at=read_at)


def receipt_of_groups(
    wiring: Wiring, pipeline_name: str, groups: Sequence[TargetGroupSettings], started_at: datetime | None
) -> dict[str, Any] | None:
    pipeline = wiring.pipelines.named(pipeline_name)
    source = TrafficSource.of([(group.arn, group.load_balancer_arns) for group in groups])
    if pipeline is None or not pipeline.verify.receipt or not source.pairs:
        return None
    # The release leaves DEPLOYING now: the rollout ends at this read.
    now = wiring.clock.now()
    rollout = Window.around(started_at or now, now)
    read = read_traffic(wiring, source, [rollout, rollout.baseline(rollout.start)])
    return rollout_receipt(read, rollout, ended_at=now, read_at=now)


def deployment_receipt(
    wiring: Wiring, release: Release, deployment_id: str, info: DeploymentInfo | None
) -> dict[str, Any] | None:
    """The receipt of a release that ends before verification (CodeDeploy failed, or the
    deployment was stopped), or None when its group has no load balancer or the pipeline turned
    receipts off. ``info``: the deployment as the caller described it; None (a STOP event) to
    describe it here, for its target groups and start. The target groups are resolved as
    verification resolves them (the adapter keeps them once read)."""
    pipeline = wiring.pipelines.named(release.pipeline)
    if pipeline is None or not pipeline.verify.receipt:
        return None
    if info is None:
        try:
            info = wiring.deployments.describe(deployment_id)
        except DeploymentNotFound:
            return None
    if not info.target_group_names:
        return None
    try:
        groups = wiring.load_balancing.target_groups(info.target_group_names)
    except LoadBalancerError as error:
        now = wiring.clock.now()
        return unavailable_receipt(
            Window.around(info.created_at or now, now), f"ELBv2 {error.code}", str(error)
        )
    return receipt_of_groups(wiring, release.pipeline, groups, info.created_at)
