from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from chalicelib.bootstrap import PROJECT_ROOT
from chalicelib.domain.freeze import FreezeWindow
from chalicelib.domain.pipelines import (
    DEFAULT_DEPLOYMENT_CONFIG,
    MAX_ALARM_NAME_CHARS,
    MAX_ALARMS,
    PipelinesConfigError,
    VerifySettings,
    load_pipelines,
)
from chalicelib.domain.slot import BusyPolicy
from tests.unit.test_verification import sqs_max_delay_s

VALID = """
[[pipeline]]
name = "api"
bucket = "b"
prefix = "api/"
application = "app"
deployment_group = "g"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipelines.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_sample_loads() -> None:
    config = load_pipelines(PROJECT_ROOT / "chalicelib" / "pipelines.toml")
    assert [p.name for p in config.pipelines] == ["api-prod"]


def test_defaults(tmp_path: Path) -> None:
    [pipeline] = load_pipelines(write(tmp_path, VALID)).pipelines
    assert pipeline.deployment_config == DEFAULT_DEPLOYMENT_CONFIG
    assert pipeline.on_busy is BusyPolicy.QUEUE
    assert pipeline.verify == VerifySettings(healthy_checks=2, interval_s=None, deadline_s=None, bake_s=0)
    assert pipeline.rollback.on_deploy_failure
    assert pipeline.notify == ()


def test_matching_by_bucket_prefix_and_group(tmp_path: Path) -> None:
    config = load_pipelines(write(tmp_path, VALID))
    assert config.for_upload("b", "api/x.zip") is not None
    assert config.for_upload("b", "web/x.zip") is None
    assert config.for_upload("other", "api/x.zip") is None
    assert config.for_deployment_group("app", "g") is config.named("api")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[pipeline]]\nname = 'x'\n", "pipeline 'x': key 'bucket': is required"),
        (VALID + "on_busy = 'sometimes'\n", "pipeline 'api': key 'on_busy': must be 'queue' or 'supersede'"),
        (VALID + "colour = 'red'\n", "pipeline 'api': key 'colour': unknown key"),
        (
            VALID + "[pipeline.verify]\nhealthy_checks = 0\n",
            "key 'verify.healthy_checks': must be a whole number >= 1",
        ),
        (VALID + "[pipeline.verify]\nbake = 3\n", "key 'verify.bake': unknown key"),
        (
            VALID + "[pipeline.verify]\ninterval_s = 0\n",
            "pipeline 'api': key 'verify.interval_s': must be a whole number >= 1, got 0",
        ),
        (
            VALID + "[pipeline.verify]\ninterval_s = 901\n",
            "pipeline 'api': key 'verify.interval_s': must be at most 900 (15 minutes, the longest SQS can "
            "delay one health check), got 901",
        ),
        (VALID + "[pipeline.verify]\ninterval_s = '30'\n", "key 'verify.interval_s': must be a whole number"),
        (VALID + "[pipeline.verify]\ninterval_s = 2.5\n", "key 'verify.interval_s': must be a whole number"),
        (
            VALID + "[pipeline.verify]\nbake_s = -1\n",
            "key 'verify.bake_s': must be a whole number >= 0, got -1",
        ),
        (
            VALID + "[pipeline.verify]\nbake_s = 86401\n",
            "pipeline 'api': key 'verify.bake_s': must be at most 86400 (24 hours: the release holds its "
            "pipeline's slot while it bakes), got 86401",
        ),
        (
            VALID + "[pipeline.verify]\ndeadline_s = 0\n",
            "key 'verify.deadline_s': must be a whole number >= 1",
        ),
        (
            VALID + "[pipeline.verify]\ndeadline_s = 172801\n",
            "key 'verify.deadline_s': must be at most 172800",
        ),
        (
            VALID + "[pipeline.rollback]\non_deploy_failure = 'yes'\n",
            "key 'rollback.on_deploy_failure': must be true",
        ),
        (VALID + "[[pipeline.notify]]\nkind = 'pager'\n", "key 'notify[1].kind': must be one of"),
        (VALID + "[[pipeline.notify]]\nkind = 'email'\non = ['exploded']\n", "unknown event(s) ['exploded']"),
        (VALID + VALID.replace('bucket = "b"', 'bucket = "c"'), "pipeline 'api': key 'name': used twice"),
        (
            VALID
            + VALID.replace('name = "api"', 'name = "api2"').replace('prefix = "api/"', 'prefix = "api/v2/"'),
            "pipeline 'api2': key 'prefix': s3://b/api/v2/ overlaps pipeline 'api'",
        ),
        (
            VALID
            + VALID.replace('name = "api"', 'name = "api2"').replace('prefix = "api/"', 'prefix = "web/"'),
            "key 'deployment_group': app/g is used by another pipeline",
        ),
        ("", "no [[pipeline]] defined"),
        ("pipeline = 3", "'pipeline' must be an array of tables"),
        ("[[pipeline]\n", "not valid TOML"),
        ("[[pipeline]]\nbucket = 5\n", "pipeline #1: key 'name': is required"),
    ],
)
def test_invalid_file_names_file_pipeline_key_and_problem(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PipelinesConfigError) as error:
        load_pipelines(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


def test_the_largest_verify_values_load(tmp_path: Path) -> None:
    text = VALID + "[pipeline.verify]\ninterval_s = 900\nbake_s = 86400\ndeadline_s = 172800\n"
    [pipeline] = load_pipelines(write(tmp_path, text)).pipelines
    assert pipeline.verify == VerifySettings(
        healthy_checks=2, interval_s=900, deadline_s=172800, bake_s=86400
    )


def test_the_longest_interval_is_one_sqs_delay(tmp_path: Path) -> None:
    """One check per message: the interval's maximum is SendMessage's DelaySeconds maximum."""
    longest = sqs_max_delay_s()
    [pipeline] = load_pipelines(
        write(tmp_path, VALID + f"[pipeline.verify]\ninterval_s = {longest}\n")
    ).pipelines
    assert pipeline.verify.interval_s == longest
    with pytest.raises(PipelinesConfigError, match=f"must be at most {longest} "):
        load_pipelines(write(tmp_path, VALID + f"[pipeline.verify]\ninterval_s = {longest + 1}\n"))


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PipelinesConfigError, match=r"missing\.toml: file not found"):
        load_pipelines(tmp_path / "missing.toml")


GLOBAL_FREEZE = """
[[freeze]]
reason = "year-end"
timezone = "Europe/Berlin"
start = 2025-12-22T00:00:00
end = 2026-01-05T08:00:00
"""
WEEKEND_FREEZE = """
[[pipeline.freeze]]
reason = "weekend"
timezone = "Europe/Berlin"
start = 2025-03-21T16:00:00
rrule = "FREQ=WEEKLY;BYDAY=FR"
duration = "2d16h"
"""


def test_a_pipelines_freeze_windows_are_the_global_ones_then_its_own(tmp_path: Path) -> None:
    other = VALID.replace('name = "api"', 'name = "web"').replace('prefix = "api/"', 'prefix = "web/"')
    other = other.replace('deployment_group = "g"', 'deployment_group = "w"')
    config = load_pipelines(write(tmp_path, GLOBAL_FREEZE + VALID + WEEKEND_FREEZE + other))
    api, web = config.pipelines
    year_end = FreezeWindow.one_off(
        "year-end", "Europe/Berlin", datetime(2025, 12, 22), datetime(2026, 1, 5, 8)
    )
    weekend = FreezeWindow.recurring(
        "weekend", "Europe/Berlin", datetime(2025, 3, 21, 16), "FREQ=WEEKLY;BYDAY=FR", timedelta(hours=64)
    )
    assert api.freeze == (year_end, weekend)
    assert web.freeze == (year_end,)


def test_a_freeze_window_defaults_to_utc(tmp_path: Path) -> None:
    text = (
        VALID + "[[pipeline.freeze]]\nreason = 'r'\nstart = 2025-06-01T10:00:00\nend = 2025-06-01T11:00:00\n"
    )
    [pipeline] = load_pipelines(write(tmp_path, text)).pipelines
    assert [window.timezone for window in pipeline.freeze] == ["UTC"]


_ONE_OFF = "[[pipeline.freeze]]\nreason = 'r'\nstart = 2025-06-01T10:00:00\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            VALID + _ONE_OFF + "end = 2025-06-01T11:00:00\ntimezone = 'Mars/Olympus'\n",
            "pipeline 'api': key 'freeze[1].timezone': unknown IANA time zone 'Mars/Olympus'",
        ),
        (
            VALID + _ONE_OFF + "end = 2025-06-01T09:00:00\n",
            "pipeline 'api': key 'freeze[1].end': 2025-06-01T09:00:00 is not after start 2025-06-01T10:00:00",
        ),
        (
            VALID + _ONE_OFF + "rrule = 'FREQ=WEEKLY;BYDAY=FRIDAY'\nduration = '1h'\n",
            "pipeline 'api': key 'freeze[1].rrule': not a valid RFC 5545 RRULE",
        ),
        (
            VALID + _ONE_OFF + "rrule = 'FREQ=HOURLY'\nduration = '1h'\n",
            "key 'freeze[1].rrule': FREQ must be one of DAILY, WEEKLY, MONTHLY, YEARLY, got 'HOURLY'",
        ),
        (
            VALID + _ONE_OFF + "rrule = 'FREQ=DAILY'\nduration = '32d'\n",
            "pipeline 'api': key 'freeze[1].duration': must be from 0:01:00 to 31 days, got 32 days, 0:00:00",
        ),
        (
            VALID + _ONE_OFF + "rrule = 'FREQ=DAILY'\nduration = '0m'\n",
            "key 'freeze[1].duration': must be from 0:01:00 to 31 days",
        ),
        (
            VALID + _ONE_OFF + "rrule = 'FREQ=DAILY'\nduration = 3600\n",
            "key 'freeze[1].duration': must be days, hours and minutes such as '64h'",
        ),
        (VALID + _ONE_OFF + "rrule = 'FREQ=DAILY'\n", "key 'freeze[1].duration': is required with 'rrule'"),
        (
            VALID + _ONE_OFF + "end = 2025-06-01T11:00:00\nduration = '1h'\n",
            "key 'freeze[1].duration': a one-off window ends at 'end'",
        ),
        (VALID + _ONE_OFF, "key 'freeze[1]': set either 'end' (a one-off window) or 'rrule'"),
        (
            VALID + "[[pipeline.freeze]]\nstart = 2025-06-01T10:00:00\nend = 2025-06-01T11:00:00\n",
            "pipeline 'api': key 'freeze[1].reason': is required",
        ),
        (
            VALID + _ONE_OFF + "end = 2025-06-01T11:00:00\nrepeat = 'weekly'\n",
            "pipeline 'api': key 'freeze[1].repeat': unknown key (allowed: reason, timezone, start,",
        ),
        (
            VALID
            + "[[pipeline.freeze]]\nreason = 'r'\nstart = '2025-06-01 10:00'\nend = 2025-06-01T11:00:00\n",
            "key 'freeze[1].start': must be a TOML local date-time such as 2025-12-24T18:00:00 (no quotes)",
        ),
        (
            VALID
            + "[[pipeline.freeze]]\nreason = 'r'\nstart = 2025-06-01T10:00:00Z\nend = 2025-06-01T11:00:00\n",
            "key 'freeze[1].start': write the local time without an offset",
        ),
        (
            VALID + "[pipeline.freeze]\nreason = 'r'\n",
            "pipeline 'api': key 'freeze': must be an array of tables",
        ),
        (
            "[[freeze]]\nreason = 'r'\ntimezone = 'Europe/Berln'\nstart = 2025-06-01T10:00:00\n"
            "end = 2025-06-02T10:00:00\n" + VALID,
            "key 'freeze[1].timezone': unknown IANA time zone 'Europe/Berln'",
        ),
        (
            "[[freeze]]\nstart = 2025-06-01T10:00:00\nend = 2025-06-02T10:00:00\n" + VALID,
            "key 'freeze[1].reason': is required",
        ),
    ],
)
def test_invalid_freeze_windows_name_file_key_and_problem(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PipelinesConfigError) as error:
        load_pipelines(path)
    assert str(error.value).startswith(f"{path}: ")


def cloudwatch_limits() -> tuple[int, int]:
    """AlarmName's longest length and how many AlarmNames DescribeAlarms takes, from botocore's
    cloudwatch model."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("cloudwatch")
    names = model.operation_model("DescribeAlarms").input_shape.members["AlarmNames"]
    return int(names.member.metadata["max"]), int(names.metadata["max"])


def test_verify_alarms_limits_are_cloudwatchs() -> None:
    assert cloudwatch_limits() == (MAX_ALARM_NAME_CHARS, MAX_ALARMS)


def test_verify_alarms_load_in_order(tmp_path: Path) -> None:
    longest_name, most = cloudwatch_limits()
    names = [f"{number:03d}-" + "x" * (longest_name - 4) for number in range(most)]
    text = VALID + f"[pipeline.verify]\nalarms = {names!r}\n"
    [pipeline] = load_pipelines(write(tmp_path, text)).pipelines
    assert pipeline.verify.alarms == tuple(names)
    [without] = load_pipelines(write(tmp_path, VALID)).pipelines
    assert without.verify.alarms == ()


@pytest.mark.parametrize(
    ("alarms", "message"),
    [
        ("'api-5xx'", "key 'verify.alarms': must be a list of CloudWatch alarm names, got 'api-5xx'"),
        ("[3]", "key 'verify.alarms': each alarm name must be a string of 1 to 255 characters"),
        ("['']", "key 'verify.alarms': each alarm name must be a string of 1 to 255 characters"),
        (f"['{'x' * 256}']", "(CloudWatch's AlarmName), got 'xxx"),
        (repr([f"a{n}" for n in range(101)]), "key 'verify.alarms': at most 100 alarms"),
        ("['api-5xx', 'p99', 'api-5xx']", "key 'verify.alarms': names an alarm more than once: api-5xx"),
    ],
)
def test_invalid_verify_alarms_fail_at_load(tmp_path: Path, alarms: str, message: str) -> None:
    with pytest.raises(PipelinesConfigError) as error:
        load_pipelines(write(tmp_path, VALID + f"[pipeline.verify]\nalarms = {alarms}\n"))
    assert message in str(error.value)
