"""The CloudWatch adapter against botocore's Stubber: every page of DescribeAlarms is read, every
alarm type asked for, and errors sorted into transient and permanent."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError
from botocore.stub import Stubber

from chalicelib.adapters.cloudwatch import CloudWatchAlarms
from chalicelib.domain.verification import AlarmReadError, AlarmState, AlarmStatus

CHANGED = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)
NAMES = ["api-5xx", "api-health", "api-p99"]


def client() -> Any:
    # One attempt: the errors reach the adapter at once.
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client("cloudwatch", config=Config(retries={"total_max_attempts": 1}))


def alarm(name: str, state: str, reason: str = "") -> dict[str, Any]:
    return {"AlarmName": name, "StateValue": state, "StateReason": reason, "StateUpdatedTimestamp": CHANGED}


def test_every_page_and_every_alarm_type_is_read() -> None:
    cloudwatch = client()
    asked = {"AlarmNames": NAMES, "AlarmTypes": ["MetricAlarm", "CompositeAlarm", "LogAlarm"]}
    with Stubber(cloudwatch) as stub:
        stub.add_response(
            "describe_alarms",
            {"MetricAlarms": [alarm("api-5xx", "ALARM", "5xx above 1")], "NextToken": "page-2"},
            asked,
        )
        stub.add_response(
            "describe_alarms",
            {"CompositeAlarms": [alarm("api-health", "INSUFFICIENT_DATA")]},
            {**asked, "NextToken": "page-2"},
        )
        states = CloudWatchAlarms(lambda: cloudwatch).alarm_states(NAMES)
        stub.assert_no_pending_responses()

    # api-p99 does not exist: left out, for the domain to call missing.
    assert states == [
        AlarmStatus("api-5xx", AlarmState.ALARM, "5xx above 1", CHANGED),
        AlarmStatus("api-health", AlarmState.INSUFFICIENT_DATA, "", CHANGED),
    ]


@pytest.mark.parametrize(
    ("code", "status", "permanent"),
    [
        ("Throttling", 400, False),
        ("ThrottlingException", 400, False),
        ("InternalFailure", 500, False),
        ("ServiceUnavailable", 503, False),
        ("AccessDenied", 403, True),
        ("InvalidParameterValue", 400, True),
        ("InvalidNextToken", 400, True),
    ],
)
def test_errors_are_transient_or_permanent(code: str, status: int, permanent: bool) -> None:
    cloudwatch = client()
    with Stubber(cloudwatch) as stub:
        stub.add_client_error("describe_alarms", code, "from the test", status)
        with pytest.raises(AlarmReadError) as raised:
            CloudWatchAlarms(lambda: cloudwatch).alarm_states(NAMES)
    assert (raised.value.code, raised.value.permanent) == (code, permanent)
    assert str(raised.value) == f"CloudWatch {code}: from the test (alarms api-5xx, api-health, api-p99)"


def test_no_answer_is_transient_and_many_names_are_cut_short() -> None:
    def no_connection(**_: Any) -> None:
        raise EndpointConnectionError(endpoint_url="https://monitoring.invalid")

    cloudwatch = client()
    cloudwatch.meta.events.register("before-send.cloudwatch.DescribeAlarms", no_connection)
    with pytest.raises(AlarmReadError) as raised:
        CloudWatchAlarms(lambda: cloudwatch).alarm_states([f"alarm-{n}" for n in range(100)])
    assert (raised.value.code, raised.value.permanent) == ("EndpointConnectionError", False)
    assert str(raised.value).endswith("(alarms alarm-0, alarm-1, alarm-2 and 97 more)")


def test_the_client_is_made_on_first_read() -> None:
    made: list[Any] = []

    def connect() -> Any:
        made.append(client())
        return made[-1]

    alarms = CloudWatchAlarms(connect)
    assert made == []
    with Stubber(alarms._client) as stub:
        stub.add_response("describe_alarms", {})
        assert alarms.alarm_states(["api-5xx"]) == []
    assert len(made) == 1
