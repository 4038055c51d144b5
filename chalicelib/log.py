"""The coordinator's one logger: Powertools' structured JSON lines (POWERTOOLS_LOG_LEVEL, stdout).

Its own module so every layer may log through it: adapters and the API glue import it without
importing the service layer.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

logger = Logger(service="release-coordinator")
