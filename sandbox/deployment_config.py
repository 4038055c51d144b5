"""CodeDeploy's deployment configs as the local agent runs them: how many instances to deploy at a
time and whether a deployment succeeded, from the fleet size and the instances' outcomes so far
(../shared/reference/aws-facts.md, "CodeDeploy"). Pure arithmetic: no moto, no processes."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeploymentConfig:
    """The three CodeDeployDefault configs as batch size and minimum healthy instances."""

    name: str

    @classmethod
    def named(cls, name: str) -> DeploymentConfig:
        short = name.removeprefix("CodeDeployDefault.")
        if short not in ("AllAtOnce", "HalfAtATime", "OneAtATime"):
            logger.warning("deployment config %s is not modelled locally: running it OneAtATime", name)
            short = "OneAtATime"
        return cls(short)

    def batch_size(self, fleet: int) -> int:
        if self.name == "AllAtOnce":
            return max(fleet, 1)
        if self.name == "HalfAtATime":
            return max(fleet // 2, 1)
        return 1

    def min_healthy(self, fleet: int) -> int:
        if self.name == "AllAtOnce":
            return 0
        if self.name == "HalfAtATime":
            return math.ceil(fleet / 2)
        return max(fleet - 1, 0)

    def next_batch_size(self, fleet: int, untouched: int, succeeded: int, failed: int) -> int:
        """How many of the untouched instances to deploy next; 0 means stop here.

        An untouched instance still serves the previous revision and counts as healthy; one
        being deployed or failed does not. While nothing failed the batch size keeps the minimum
        by construction (and a single instance is deployed regardless, as AWS does)."""
        size = min(self.batch_size(fleet), untouched)
        if failed:
            size = min(size, untouched + succeeded - self.min_healthy(fleet))
        return max(size, 0)

    def succeeded(self, fleet: int, succeeded: int, skipped: int) -> bool:
        # OneAtATime succeeds even when only the last instance failed: that is AWS's rule too.
        return skipped == 0 and succeeded >= max(1, self.min_healthy(fleet))
