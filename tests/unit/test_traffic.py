"""The receipt's and the baseline comparison's pure parts (chalicelib/domain/traffic.py): ALB
dimensions, windows, the GetMetricData plan, figures, the summary line and the judgement."""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.domain.pipelines import (
    MIN_COMPARED_BAKE_S,
    CompareSettings,
    NotEnoughTraffic,
    PipelinesConfigError,
    parse_pipelines,
)
from chalicelib.domain.traffic import (
    MAX_QUERIES,
    PERIOD_S,
    SETTLING_S,
    Metric,
    Series,
    TrafficSource,
    Verdict,
    Window,
    WindowFigures,
    compare,
    figures,
    load_balancer_dimension,
    max_pairs,
    plan_queries,
    receipt,
    target_group_dimension,
    unavailable_receipt,
)

LB_ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/shop/50dc6c495c0c9188"
TG_ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/shop-prod/73e2d6bc24d8a067"
START = datetime(2026, 12, 1, 10, 0, 30, tzinfo=UTC)


def test_dimensions_are_the_tails_of_the_arns() -> None:
    assert load_balancer_dimension(LB_ARN) == "app/shop/50dc6c495c0c9188"
    assert target_group_dimension(TG_ARN) == "targetgroup/shop-prod/73e2d6bc24d8a067"
    source = TrafficSource.of([(TG_ARN, [LB_ARN])])
    assert source.pairs == (("targetgroup/shop-prod/73e2d6bc24d8a067", "app/shop/50dc6c495c0c9188"),)
    assert TrafficSource.from_list(source.to_list()) == source
    # A target group no listener forwards to has no traffic to count.
    assert TrafficSource.of([(TG_ARN, [])]).pairs == ()


def test_only_application_load_balancers_are_counted() -> None:
    # A Network Load Balancer publishes under AWS/NetworkELB: AWS/ApplicationELB has nothing for it.
    nlb_arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/shop-nlb/0123456789abcdef"
    assert TrafficSource.of([(TG_ARN, [nlb_arn])]).pairs == ()
    assert TrafficSource.of([(TG_ARN, [nlb_arn, LB_ARN])]).load_balancers == ("app/shop/50dc6c495c0c9188",)


def test_an_unavailable_receipt_summary_names_the_error_code_only() -> None:
    rollout = Window.around(START, START + timedelta(minutes=2))
    why = (
        "AccessDenied: User: arn:aws:sts::123456789012:assumed-role/relco/fn is not authorized to "
        "perform: cloudwatch:GetMetricData"
    )
    made = unavailable_receipt(rollout, "AccessDenied", why)
    assert made["summary"] == "no load-balancer figures: CloudWatch did not answer (AccessDenied)"
    assert made["unavailable"] == why


def test_windows_cover_whole_minutes_and_baselines_are_bounded() -> None:
    rollout = Window.around(START, START + timedelta(minutes=3, seconds=10))
    assert (rollout.start, rollout.end) == (
        START.replace(second=0),
        START.replace(second=0) + timedelta(minutes=4),
    )
    # Shorter than 5 minutes: a 5-minute baseline, ending where the rollout starts.
    assert rollout.baseline(rollout.start) == Window(rollout.start - timedelta(minutes=5), rollout.start)
    long = Window(rollout.start, rollout.start + timedelta(hours=3))
    assert long.baseline(long.start).length_s == 3600
    ten = Window(rollout.start, rollout.start + timedelta(minutes=10))
    assert ten.baseline(ten.start).length_s == 600
    # A start and end in the same minute still make a minute.
    assert Window.around(START, START).length_s == 60


def test_the_plan_asks_each_metric_once_with_valid_ids_within_one_call() -> None:
    source = TrafficSource.of([(TG_ARN, [LB_ARN])])
    window = Window.around(START, START + timedelta(minutes=2))
    plan = plan_queries(source, [window, window.baseline(window.start)])
    assert plan.span == Window(window.start - timedelta(minutes=5), window.end)
    asked = sorted((query.metric.value, query.stat, len(query.dimensions)) for query in plan.queries)
    assert asked == sorted(
        [
            ("HTTPCode_ELB_5XX_Count", "Sum", 1),
            ("RejectedConnectionCount", "Sum", 1),
            ("RequestCount", "Sum", 1),
            ("HTTPCode_Target_5XX_Count", "Sum", 2),
            ("TargetConnectionErrorCount", "Sum", 2),
            ("RequestCount", "Sum", 2),
            ("UnHealthyHostCount", "Maximum", 2),
            ("TargetResponseTime", "p90", 2),
        ]
    )
    ids = [query.id for query in plan.queries]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[a-z][a-zA-Z0-9_]*", query_id) for query_id in ids)
    api = plan.queries[-1].to_api()["MetricStat"]
    assert api["Period"] == 60
    assert api["Metric"]["Namespace"] == "AWS/ApplicationELB"
    assert [d["Name"] for d in api["Metric"]["Dimensions"]] == ["TargetGroup", "LoadBalancer"]
    # Past 500 queries, the pairs beyond are left out.
    many = TrafficSource(tuple((f"targetgroup/g{n}/1", "app/shop/1") for n in range(200)))
    assert len(plan_queries(many, [window]).queries) <= MAX_QUERIES
    assert len(plan_queries(many, [window]).queries) == 3 + 5 * max_pairs(1)


def series_for(plan: Any, values: dict[tuple[str, Metric], list[tuple[datetime, float]]]) -> Series:
    return {query.id: values.get((query.owner, query.metric), []) for query in plan.queries}


def test_figures_sum_each_window_and_weigh_the_p90_by_requests() -> None:
    source = TrafficSource.of([(TG_ARN, [LB_ARN])])
    rollout = Window.around(START, START + timedelta(minutes=1))
    baseline = rollout.baseline(rollout.start)
    plan = plan_queries(source, [rollout, baseline])
    first, second = rollout.start, rollout.start + timedelta(minutes=1)
    before = baseline.start
    series = series_for(
        plan,
        {
            ("lb0", Metric.REQUESTS): [(before, 500), (first, 900), (second, 100)],
            ("lb0", Metric.ELB_5XX): [(first, 2)],
            ("tg0", Metric.REQUESTS): [(before, 500), (first, 900), (second, 100)],
            ("tg0", Metric.TARGET_5XX): [(before, 1), (second, 3)],
            ("tg0", Metric.UNHEALTHY_HOSTS): [(first, 1), (second, 2)],
            ("tg0", Metric.RESPONSE_TIME): [(before, 0.02), (first, 0.010), (second, 0.110)],
        },
    )
    during = figures(plan, series, rollout)
    assert (during.requests, during.elb_5xx, during.target_5xx, during.errors) == (1000, 2, 3, 5)
    assert during.max_unhealthy_hosts == 2
    assert during.slowest_p90_ms == 110.0
    assert during.typical_p90_ms == pytest.approx(20.0)  # (900 x 10 + 100 x 110) / 1000
    made = receipt(
        plan,
        series,
        rollout,
        rollout_ended_at=START + timedelta(minutes=5),
        read_at=START + timedelta(minutes=8),
    )
    assert made["error_rate_ppm"] == 5000
    assert made["baseline_error_rate_ppm"] == 2000
    assert made["so_far"] is False
    assert made["summary"] == (
        "5 load-balancer errors in 1,000 requests during rollout (baseline 0.20%); slowest p90 110 ms"
    )
    quiet = receipt(plan, {}, rollout, rollout_ended_at=START, read_at=START + timedelta(seconds=30))
    assert (
        quiet["summary"] == "0 load-balancer errors in 0 requests during rollout so far (no baseline traffic)"
    )


def window_figures(requests: int, errors: int, p90_ms: float | None = 50.0) -> WindowFigures:
    return WindowFigures(
        requests=requests,
        elb_5xx=0,
        rejected_connections=0,
        target_requests=requests,
        target_5xx=errors,
        connection_errors=0,
        max_unhealthy_hosts=0,
        slowest_p90_ms=p90_ms,
        typical_p90_ms=p90_ms,
    )


def test_a_bake_that_doubles_its_error_rate_fails_and_one_within_passes() -> None:
    settings = CompareSettings()
    doubled = compare(settings, window_figures(1000, 21), window_figures(1000, 10))
    assert (doubled.verdict, doubled.passes) == (Verdict.EXCEEDED, False)
    assert doubled.reason.startswith("error rate 2.10% during the bake against 1.00% before (limit 2.00%")
    within = compare(settings, window_figures(1000, 19), window_figures(1000, 10))
    assert (within.verdict, within.passes) == (Verdict.WITHIN, True)
    slower = compare(settings, window_figures(1000, 0, 80.0), window_figures(1000, 0, 50.0))
    assert (slower.verdict, slower.passes) == (Verdict.EXCEEDED, False)
    assert "p90 80 ms during the bake against 50 ms before (limit 75 ms" in slower.reason
    assert slower.to_dict()["bake"] == {"requests": 1000, "errors": 0, "error_rate_ppm": 0, "p90_ms": 80}


def test_a_baseline_without_errors_is_judged_against_the_floor() -> None:
    settings = CompareSettings()
    # Floor 0.1%, ratio 2: up to 0.2% passes.
    assert compare(settings, window_figures(1000, 2), window_figures(1000, 0)).passes
    assert not compare(settings, window_figures(1000, 3), window_figures(1000, 0)).passes


@pytest.mark.parametrize(("when", "passes"), [(NotEnoughTraffic.PASS, True), (NotEnoughTraffic.FAIL, False)])
def test_too_little_traffic_passes_or_fails_as_configured(when: NotEnoughTraffic, passes: bool) -> None:
    settings = CompareSettings(min_requests=100, not_enough_traffic=when)
    judged = compare(settings, window_figures(99, 50), window_figures(1000, 0))
    assert (judged.verdict, judged.passes) == (Verdict.NOT_ENOUGH_TRAFFIC, passes)
    assert judged.reason.startswith(
        "not enough traffic to judge: 99 requests during the bake, 1,000 in the baseline"
    )


PIPELINE = """
[[pipeline]]
name = "shop"
bucket = "b"
prefix = "shop/"
application = "shop"
deployment_group = "shop"
[pipeline.verify]
bake_s = 600
"""


def test_verify_compare_and_receipt_parse_with_defaults() -> None:
    [pipeline] = parse_pipelines(tomllib.loads(PIPELINE)).pipelines
    assert (pipeline.verify.receipt, pipeline.verify.compare) == (True, None)
    text = (
        PIPELINE + 'receipt = false\n[pipeline.verify.compare]\np90_ratio = 2\nnot_enough_traffic = "fail"\n'
    )
    [pipeline] = parse_pipelines(tomllib.loads(text)).pipelines
    assert pipeline.verify.receipt is False
    assert pipeline.verify.compare == CompareSettings(2.0, 2.0, 100, NotEnoughTraffic.FAIL)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            "error_rate_ratio = 1",
            "key 'verify.compare.error_rate_ratio': must be a number greater than 1, got 1",
        ),
        ('p90_ratio = "x"', "key 'verify.compare.p90_ratio': must be a number greater than 1, got 'x'"),
        ("min_requests = 0", "key 'verify.compare.min_requests': must be a whole number >= 1, got 0"),
        ('not_enough_traffic = "maybe"', "key 'verify.compare.not_enough_traffic': must be 'pass' or 'fail'"),
        ("ratio = 2", "key 'verify.compare.ratio': unknown key"),
    ],
)
def test_verify_compare_errors_name_the_key(table: str, message: str) -> None:
    with pytest.raises(PipelinesConfigError, match=re.escape(message)):
        parse_pipelines(tomllib.loads(PIPELINE + f"[pipeline.verify.compare]\n{table}\n"))


def test_a_compared_bake_must_hold_a_settled_minute() -> None:
    # A minute is settled SETTLING_S after it ends; a bake begun just past a minute's start
    # holds a whole settled minute by its end only with two more minutes.
    assert MIN_COMPARED_BAKE_S == SETTLING_S + 2 * PERIOD_S
    short = PIPELINE.replace("bake_s = 600\n", "bake_s = 239\n") + "[pipeline.verify.compare]\n"
    with pytest.raises(
        PipelinesConfigError,
        match=re.escape("key 'verify.bake_s': must be at least 240 with verify.compare (CloudWatch has"),
    ):
        parse_pipelines(tomllib.loads(short))
    [pipeline] = parse_pipelines(tomllib.loads(short.replace("bake_s = 239", "bake_s = 240"))).pipelines
    assert pipeline.verify.bake_s == 240
    # Without compare a short bake is fine: nothing reads its figures.
    [pipeline] = parse_pipelines(tomllib.loads(PIPELINE.replace("bake_s = 600", "bake_s = 60"))).pipelines
    assert pipeline.verify.bake_s == 60


def test_verify_compare_without_a_bake_is_refused() -> None:
    without_bake = PIPELINE.replace("bake_s = 600\n", "")
    with pytest.raises(
        PipelinesConfigError, match=re.escape("key 'verify.compare': judges the bake: set verify.bake_s")
    ):
        parse_pipelines(tomllib.loads(without_bake + "[pipeline.verify.compare]\n"))
