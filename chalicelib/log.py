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
from typing import Any

from aws_lambda_powertools import Logger

# The service every log line and metric names, and the CloudWatch namespace of the metrics
# (Powertools EMF) the upload path and the release stream print.
SERVICE = "release-coordinator"
METRICS_NAMESPACE = "ReleaseCoordinator"

logger = Logger(service=SERVICE)


def write_metrics(document: Mapping[str, Any]) -> None:
    """An Embedded Metric Format document (Powertools' ``serialize_metric_set``) written where the
    log lines go, not printed: in Lambda that is stdout all the same, where CloudWatch Logs
    extracts the metrics, and the sandbox sends it to its log file, away from what
    `relco demo --json` prints."""
    handler = logger.registered_handler
    stream = handler.stream if isinstance(handler, logging.StreamHandler) else sys.stdout
    stream.write(json.dumps(document, separators=(",", ":")) + "\n")
    stream.flush()
