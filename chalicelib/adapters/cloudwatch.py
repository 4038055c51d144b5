"""CloudWatch: the state of the alarms a pipeline names (``verify.alarms``), read at every health
check, and the load balancer's metrics for a release's receipt and baseline comparison."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

from chalicelib.domain.traffic import MetricsReadError, QueryPlan, Series
from chalicelib.domain.verification import AlarmReadError, AlarmState, AlarmStatus

# Every alarm type botocore's cloudwatch model lists (AlarmType): without AlarmTypes,
# DescribeAlarms returns metric alarms only, and a named composite or log alarm would look missing.
_ALARM_TYPES = ("MetricAlarm", "CompositeAlarm", "LogAlarm")
# The lists of DescribeAlarmsOutput, one per alarm type (the paginator's result keys).
_RESULT_KEYS = ("MetricAlarms", "CompositeAlarms", "LogAlarms")
# CloudWatch's throttling codes: "Throttling" in its query-compatible protocols (botocore's standard
# retry mode has retried it before it gets here). Every other 4xx is a refusal the same request
# never gets past: AccessDenied, InvalidParameterValue, the modeled InvalidNextToken.
_THROTTLING_CODES = frozenset({"Throttling", "ThrottlingException", "RequestLimitExceeded"})
# MetricDataResult.StatusCode (botocore's cloudwatch model: Complete | InternalError | PartialData |
# Forbidden). These come with no data: the read failed, though the call answered 200. PartialData
# comes with a NextToken, followed below.
_FAILED_RESULTS = frozenset({"InternalError", "Forbidden"})
# An error names this many of the alarms asked for: it ends up in a release's history.
_NAMED_IN_ERRORS = 3


def _refusal(error: ClientError) -> tuple[str, str, bool]:
    """CloudWatch's error code and message, and whether the same request will never get past it
    (a 4xx other than throttling)."""
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    code = str(error.response.get("Error", {}).get("Code") or "Unknown")
    message = str(error.response.get("Error", {}).get("Message") or "")
    return code, message, status < 500 and code not in _THROTTLING_CODES


class CloudWatchAlarms:
    def __init__(self, connect: Callable[[], Any]) -> None:
        # The client is made on first read: most functions, and most pipelines, read no alarm.
        self._connect = connect

    @functools.cached_property
    def _client(self) -> Any:
        return self._connect()

    def alarm_states(self, names: Sequence[str]) -> list[AlarmStatus]:
        """The named alarms CloudWatch has, of every type; a name it has no alarm for is left
        out. One DescribeAlarms call (the pipelines file allows at most the 100 names it takes),
        followed by its NextToken pages. Raises ``AlarmReadError``."""
        more = f" and {len(names) - _NAMED_IN_ERRORS} more" if len(names) > _NAMED_IN_ERRORS else ""
        context = f"alarms {', '.join(names[:_NAMED_IN_ERRORS])}{more}"
        try:
            pages = self._client.get_paginator("describe_alarms").paginate(
                AlarmNames=list(names), AlarmTypes=list(_ALARM_TYPES)
            )
            alarms = [alarm for page in pages for key in _RESULT_KEYS for alarm in page.get(key, [])]
        except ClientError as error:
            code, message, permanent = _refusal(error)
            raise AlarmReadError(code, f"{message} ({context})", permanent=permanent) from error
        except (ConnectionError, HTTPClientError) as error:
            # No answer at all (connect or read timeout, reset): worth another try.
            raise AlarmReadError(type(error).__name__, f"{error} ({context})", permanent=False) from error
        return [_status(alarm) for alarm in alarms]


def _status(alarm: dict[str, Any]) -> AlarmStatus:
    updated: datetime | None = alarm.get("StateUpdatedTimestamp")
    return AlarmStatus(
        name=alarm["AlarmName"],
        state=AlarmState(alarm["StateValue"]),
        reason=alarm.get("StateReason", ""),
        updated_at=updated,
    )


class CloudWatchMetrics:
    def __init__(self, connect: Callable[[], Any]) -> None:
        # Made on first read: only a release that ends behind a load balancer reads metrics.
        self._connect = connect

    @functools.cached_property
    def _client(self) -> Any:
        return self._connect()

    def metric_series(self, plan: QueryPlan) -> Series:
        """Every query's data points over the plan's span, by query id: one GetMetricData call
        (a NextToken page follows only past the 100,800 data points one answer holds). Raises
        ``MetricsReadError``."""
        series: dict[str, list[tuple[datetime, float]]] = {query.id: [] for query in plan.queries}
        try:
            pages = self._client.get_paginator("get_metric_data").paginate(
                MetricDataQueries=[query.to_api() for query in plan.queries],
                StartTime=plan.span.start,
                EndTime=plan.span.end,
                ScanBy="TimestampAscending",
            )
            for page in pages:
                for result in page.get("MetricDataResults", []):
                    _raise_if_failed(result)
                    points = series.setdefault(result["Id"], [])
                    points.extend(zip(result.get("Timestamps", []), result.get("Values", []), strict=False))
        except ClientError as error:
            code, message, permanent = _refusal(error)
            raise MetricsReadError(code, message, permanent=permanent) from error
        except (ConnectionError, HTTPClientError) as error:
            raise MetricsReadError(type(error).__name__, str(error), permanent=False) from error
        return series


def _raise_if_failed(result: dict[str, Any]) -> None:
    """A query's result that CloudWatch could not give (it has no data points, which would
    read as no traffic): the whole read fails, naming the status and CloudWatch's messages."""
    status = result.get("StatusCode")
    if status not in _FAILED_RESULTS:
        return
    messages = "; ".join(
        f"{message.get('Code', '')}: {message.get('Value', '')}" for message in result.get("Messages", [])
    )
    raise MetricsReadError(
        str(status),
        f"query {result.get('Id')}: {messages or 'no message'}",
        # An internal error may pass; a forbidden metric stays forbidden.
        permanent=status == "Forbidden",
    )
