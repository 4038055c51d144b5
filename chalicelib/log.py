"""The coordinator's one logger (Powertools' structured JSON lines, POWERTOOLS_LOG_LEVEL, stdout)
and the names its metrics carry.

Its own module so every layer may log through it: adapters and the API glue import it without
importing the service layer.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

# The service every log line and metric names, and the CloudWatch namespace of the metrics
# (Powertools EMF) the upload path and the release stream print.
SERVICE = "release-coordinator"
METRICS_NAMESPACE = "ReleaseCoordinator"

logger = Logger(service=SERVICE)
