"""What a use case says about an AWS failure: the code AWS answered, read from the error an
adapter let through, without importing botocore (the service layer reaches AWS only through its
adapters)."""

from __future__ import annotations

from collections.abc import Mapping


def aws_error_code(error: BaseException) -> str:
    """The AWS error code of a failed call (botocore's ``ClientError.response``), else the
    exception's type: what a history event or log line names."""
    response = getattr(error, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, Mapping) else None
    return str(code) if code else type(error).__name__
