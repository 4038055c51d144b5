"""The sandbox's pipelines file: the watchdog's limits and the fleet's heal are set on the demo
pipeline only when asked for; without them (``make demo``, ``relco sandbox up``) it is unchanged."""

from __future__ import annotations

import tomllib
from datetime import timedelta

from chalicelib.domain.pipelines import FleetSettings, parse_pipelines
from chalicelib.domain.watchdog import WatchdogLimits
from sandbox.runtime import DEMO_ALARM, PIPELINE, PRODUCTION_PIPELINE, pipelines_toml

SHORT = WatchdogLimits(
    agent_timeout=timedelta(seconds=15), hook_timeout=timedelta(seconds=10), margin=timedelta(seconds=5)
)


def test_short_watchdog_limits_and_heal_apply_to_the_demo_pipeline_only() -> None:
    written = pipelines_toml(gates=True, production=True, watchdog=SHORT, heal_fleet=True)
    config = parse_pipelines(tomllib.loads(written))
    demo, production = config.named(PIPELINE), config.named(PRODUCTION_PIPELINE)
    assert demo is not None
    assert production is not None
    assert demo.watchdog == SHORT
    assert demo.fleet == FleetSettings(heal=True)
    assert demo.verify.alarms == (DEMO_ALARM,)  # the gates still apply to the demo pipeline
    assert (production.watchdog, production.fleet) == (WatchdogLimits(), FleetSettings())


def test_without_them_the_file_is_the_default_sandboxes() -> None:
    assert pipelines_toml(gates=True, production=True, watchdog=None, heal_fleet=False) == pipelines_toml(
        gates=True, production=True
    )
    config = parse_pipelines(tomllib.loads(pipelines_toml(gates=False)))
    demo = config.named(PIPELINE)
    assert demo is not None
    assert (demo.watchdog, demo.fleet) == (WatchdogLimits(), FleetSettings())
