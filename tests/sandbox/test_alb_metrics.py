"""What the sandbox's load balancer counts for CloudWatch, as an ALB does: every request, the
5xx it answers itself, the targets' own 5xx and answer times, unhealthy targets; and how the
buckets become PutMetricData under the ALB's dimension names."""

from __future__ import annotations

from datetime import UTC, datetime

from sandbox.load_balancer import TRAFFIC_BUCKET_S, TrafficBucket, metric_data
from tests.sandbox.test_load_balancer import (
    HealthLog,
    MakeBackend,
    MakeLoadBalancer,
    fetch,
    health_log,
    make_backend,
    make_lb,
)

__all__ = ["health_log", "make_backend", "make_lb"]  # the fixtures this module borrows

LB_ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/staging/50dc6c495c0c9188"
TG_ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/demo/73e2d6bc24d8a067"


def test_the_balancer_counts_requests_its_own_5xx_and_the_targets_answers(
    make_lb: MakeLoadBalancer, make_backend: MakeBackend, health_log: HealthLog
) -> None:
    lb = make_lb()
    assert fetch(lb.url).status == 503  # no target: the balancer's own 5xx
    backend = make_backend("i-a")
    lb.register("i-a", backend.port)
    health_log.wait_for_state("i-a", "healthy")
    assert [fetch(lb.url).status for _ in range(3)] == [200, 200, 200]

    buckets = lb.take_traffic()

    assert sum(bucket.requests for bucket in buckets) == 4
    assert sum(bucket.elb_5xx for bucket in buckets) == 1
    assert sum(bucket.target_5xx for bucket in buckets) == 0
    assert sum(len(bucket.response_times_s) for bucket in buckets) == 3
    assert all(
        bucket.start.second % TRAFFIC_BUCKET_S == 0 and bucket.start.microsecond == 0 for bucket in buckets
    )
    # Taken once: the next take has only what came since.
    assert lb.take_traffic() == []


def test_a_bucket_is_published_under_the_alb_dimensions_with_raw_response_times() -> None:
    start = datetime(2026, 12, 1, 10, 0, 10, tzinfo=UTC)
    bucket = TrafficBucket(start, requests=3, target_5xx=1, response_times_s=[0.0104, 0.0101, 0.2])
    counts, latencies = metric_data(bucket, LB_ARN, TG_ARN)
    by_name = {(datum["MetricName"], len(datum["Dimensions"])): datum for datum in counts}
    assert by_name["RequestCount", 1]["Dimensions"] == [
        {"Name": "LoadBalancer", "Value": "app/staging/50dc6c495c0c9188"}
    ]
    assert by_name["HTTPCode_Target_5XX_Count", 2]["Dimensions"] == [
        {"Name": "TargetGroup", "Value": "targetgroup/demo/73e2d6bc24d8a067"},
        {"Name": "LoadBalancer", "Value": "app/staging/50dc6c495c0c9188"},
    ]
    assert by_name["HTTPCode_Target_5XX_Count", 2]["Value"] == 1
    assert {datum["Timestamp"] for datum in counts} == {start}
    [latency] = latencies
    assert (latency["Values"], latency["Counts"], latency["Unit"]) == ([0.01, 0.2], [2.0, 1.0], "Seconds")
