"""Secrets named in the pipelines file (Slack token, webhook URLs, signing keys), read through
Powertools Parameters from SSM Parameter Store or Secrets Manager and cached per container.

Values never reach a log: errors name the parameter, not its value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from chalicelib.domain.notify_routes import SecretRef
from chalicelib.service.notification_ports import DeliveryRejected

ClientFactory = Callable[[str], Any]
# A rotated secret is picked up within this long; a warm container reads each secret this rarely.
CACHE_S = 300
# Errors that a retry cannot fix: the secret is not there, or the function may not read it.
_PERMANENT_MARKERS = (
    "ParameterNotFound",
    "ResourceNotFoundException",
    "AccessDenied",
    "ParameterVersionNotFound",
)


class ParameterSecrets:
    def __init__(self, clients: ClientFactory, cache_s: int = CACHE_S) -> None:
        self._clients = clients
        self._cache_s = cache_s
        self._providers: dict[str, Any] = {}

    def _provider(self, source: str) -> Any:
        # Powertools Parameters loads on first use: most invocations never read a secret.
        provider = self._providers.get(source)
        if provider is None:
            from aws_lambda_powertools.utilities.parameters import SecretsProvider, SSMProvider

            if source == "ssm":
                provider = SSMProvider(boto3_client=self._clients("ssm"))
            else:
                provider = SecretsProvider(boto3_client=self._clients("secretsmanager"))
            self._providers[source] = provider
        return provider

    def get(self, ref: SecretRef) -> str:
        from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

        provider = self._provider(ref.source)
        options: dict[str, Any] = {"decrypt": True} if ref.source == "ssm" else {}
        try:
            value = provider.get(ref.name, max_age=self._cache_s, **options)
        except GetParameterError as error:
            where = "SSM parameter" if ref.source == "ssm" else "secret"
            if any(marker in str(error) for marker in _PERMANENT_MARKERS):
                raise DeliveryRejected(f"{where} {ref.name} cannot be read: {_error_code(error)}") from None
            raise
        if isinstance(value, bytes):
            value = value.decode()
        if not isinstance(value, str) or not value:
            raise DeliveryRejected(f"{ref.source} {ref.name} is empty")
        return value


# Powertools' GetParameterError keeps botocore's text: "An error occurred (Code) when calling ...".
_AWS_CODE = re.compile(r"An error occurred \((\w+)\)")


def _error_code(error: Exception) -> str:
    """AWS's error code as botocore reported it, else the marker that matched."""
    text = str(error)
    answered = _AWS_CODE.search(text)
    if answered:
        return answered.group(1)
    return next((marker for marker in _PERMANENT_MARKERS if marker in text), "error")
