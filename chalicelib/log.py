"""The coordinator's one logger (Powertools' structured JSON lines, POWERTOOLS_LOG_LEVEL, stdout)
and the names its metrics carry.

Its own module so every layer may log through it: adapters and the API glue import it without
importing the service layer.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

if TYPE_CHECKING:
    from aws_lambda_powertools.metrics import EphemeralMetrics

# The service every log line and metric names, and the CloudWatch namespace of the metrics
# (Powertools EMF) the upload path and the release stream print.
SERVICE = "release-coordinator"
METRICS_NAMESPACE = "ReleaseCoordinator"
# Every metric's dimension that tells one deployed coordinator from another: its releases table's
# name. The service is the same in every stack, and two stages (or two stacks) in one account and
# region would otherwise add up in one line and fire each other's alarms; each stack's table has
# a name of its own (the stack id's hex ends it), which the template's alarm and dashboard name.
COORDINATOR_DIMENSION = "coordinator"

logger = Logger(service=SERVICE)


def new_metrics(coordinator: str) -> EphemeralMetrics:
    """Powertools metrics in the coordinator's namespace, with the service and ``coordinator``
    (the releases table's name) as dimensions. Powertools' metrics load on first use."""
    from aws_lambda_powertools.metrics import EphemeralMetrics

    metrics = EphemeralMetrics(namespace=METRICS_NAMESPACE, service=SERVICE)
    metrics.add_dimension(name=COORDINATOR_DIMENSION, value=coordinator)
    return metrics


def write_metrics(document: Mapping[str, Any]) -> None:
    """An Embedded Metric Format document (Powertools' ``serialize_metric_set``) written where the
    log lines go, not printed: in Lambda that is stdout all the same, where CloudWatch Logs
    extracts the metrics, and the sandbox sends it to its log file, away from what
    `relco demo --json` prints."""
    handler = logger.registered_handler
    stream = handler.stream if isinstance(handler, logging.StreamHandler) else sys.stdout
    stream.write(json.dumps(document, separators=(",", ":")) + "\n")
    stream.flush()
