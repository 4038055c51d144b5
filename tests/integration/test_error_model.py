"""AWS errors injected into the calls the coordinator's handlers and routes make.

``aws_faults`` answers a chosen operation with an AWS error, as botocore's ``Stubber`` would: a
``before-call`` handler on every botocore session created while it is installed (the app's
clients are rebuilt for it), active only inside a Lambda handler or route, so the test's own
calls still reach moto.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import botocore.handlers
import pytest
from botocore.awsrequest import AWSResponse

from chalicelib import bootstrap
from tests.integration import conftest


@dataclass
class Fault:
    service: str  # botocore's service name: codedeploy, dynamodb, s3, sqs, elbv2, ...
    operation: str  # the API operation: StopDeployment, TransactWriteItems, ...
    code: str
    http_status: int
    # Fail only this many calls (None: every one), after letting ``skip`` calls through.
    times: int | None = None
    skip: int = 0
    seen: int = 0
    failed: int = 0

    def applies(self, service: str, operation: str) -> bool:
        if (service, operation) != (self.service, self.operation):
            return False
        self.seen += 1
        if self.seen <= self.skip or (self.times is not None and self.failed >= self.times):
            return False
        self.failed += 1
        return True


@dataclass
class AwsFaults:
    faults: list[Fault] = field(default_factory=list)

    def inject(
        self,
        service: str,
        operation: str,
        code: str,
        http_status: int = 400,
        *,
        times: int | None = None,
        skip: int = 0,
    ) -> Fault:
        fault = Fault(service, operation, code, http_status, times, skip)
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        self.faults.clear()

    def before_call(self, model: Any, **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        if conftest._CURRENT_FUNCTION.get() is None:
            return None
        service, operation = str(model.service_model.service_name), str(model.name)
        for fault in self.faults:
            if fault.applies(service, operation):
                return error_answer(fault.code, fault.http_status, operation)
        return None


_request_ids = itertools.count(1)


def error_answer(code: str, http_status: int, operation: str) -> tuple[AWSResponse, dict[str, Any]]:
    """What botocore hands the client for an AWS error answer: the HTTP response and the parsed
    error (the shape ``Stubber.add_client_error`` builds)."""
    request_id = f"injected-{next(_request_ids)}"
    http = AWSResponse("https://aws.invalid", http_status, {"x-amzn-requestid": request_id}, None)
    parsed = {
        "Error": {"Code": code, "Message": f"injected {code} on {operation}"},
        "ResponseMetadata": {"HTTPStatusCode": http_status, "RequestId": request_id, "HTTPHeaders": {}},
    }
    return http, parsed


@pytest.fixture
def aws_faults() -> Iterator[AwsFaults]:
    faults = AwsFaults()
    spec = ("before-call", faults.before_call)
    botocore.handlers.BUILTIN_HANDLERS.append(spec)
    bootstrap.reset()  # the app's clients come from a new session, with the handler
    try:
        yield faults
    finally:
        botocore.handlers.BUILTIN_HANDLERS.remove(spec)
        bootstrap.reset()
