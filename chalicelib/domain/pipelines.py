"""The pipelines file: which S3 uploads deploy where, and how.

Read with the standard library's ``tomllib``. An invalid file fails at load with the file, the
pipeline, the key and what was wrong, so a bad deploy of the config never half-works.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from chalicelib.domain.freeze import FreezeWindow, FreezeWindowError
from chalicelib.domain.notify_routes import (
    RELEASE_ID_PLACEHOLDER,
    SECRET_SOURCES,
    SETTINGS_BY_KIND,
    SUBSCRIBABLE,
    ChannelSettings,
    Notification,
    NotifyKind,
    SecretRef,
    SlackSettings,
    default_subscription,
    secret_ref,
)
from chalicelib.domain.permissions import (
    DEFAULT_APPROVAL_EXPIRY,
    ApprovalPolicy,
    OnNewer,
    SlackOperators,
)
from chalicelib.domain.slot import BusyPolicy
from chalicelib.domain.watchdog import CODEDEPLOY_HOOK_TIMEOUT, WatchdogLimits

DEFAULT_DEPLOYMENT_CONFIG = "CodeDeployDefault.HalfAtATime"
_E = TypeVar("_E", bound=StrEnum)


class PipelinesConfigError(ValueError):
    """The pipelines file is wrong; the message names the file, pipeline, key and the problem."""


# The Slack actions queue hands a message back after its visibility timeout (576 s,
# infra/sizing.py): an approval must stay open longer than a click may take to be retried.
MIN_APPROVAL_EXPIRY = timedelta(minutes=15)


class PromoteMode(StrEnum):
    AUTO = "auto"  # the downstream pipeline gets the release once it has soaked
    APPROVAL = "approval"  # ... and it waits for approval ([pipeline.approval]) there


class AlarmAtStart(StrEnum):
    WAIT = "wait"  # the release waits QUEUED, the alarm named, until every alarm is out of ALARM
    FAIL = "fail"  # the release fails at once, the alarm named


@dataclass(frozen=True)
class VerifySettings:
    healthy_checks: int = 2
    # None: take the target group's own HealthCheckIntervalSeconds / derive from it.
    interval_s: int | None = None
    deadline_s: int | None = None
    bake_s: int = 0
    # CloudWatch alarms (by name) that must not be in ALARM at any health check.
    alarms: tuple[str, ...] = ()
    # What an alarm already in ALARM does to a release about to start.
    alarm_at_start: AlarmAtStart = AlarmAtStart.WAIT
    # Read the load balancer's CloudWatch metrics once a release ends, for its zero-downtime
    # receipt (chalicelib/domain/traffic.py); only deployment groups with a load balancer have one.
    receipt: bool = True
    # Judge the bake against the baseline window before it; None: not judged.
    compare: CompareSettings | None = None


class NotEnoughTraffic(StrEnum):
    """``verify.compare.not_enough_traffic``: what a bake too quiet to judge does."""

    PASS = "pass"
    FAIL = "fail"


@dataclass(frozen=True)
class CompareSettings:
    """``verify.compare``: the bake's target-group error rate and p90 must stay within these
    ratios of the baseline window's, judged only with ``min_requests`` in each window."""

    error_rate_ratio: float = 2.0
    p90_ratio: float = 1.5
    min_requests: int = 100
    not_enough_traffic: NotEnoughTraffic = NotEnoughTraffic.PASS


@dataclass(frozen=True)
class RollbackSettings:
    on_deploy_failure: bool = True
    on_verify_failure: bool = True


@dataclass(frozen=True)
class NotifyRoute:
    on: frozenset[Notification]
    channel: ChannelSettings

    @property
    def kind(self) -> NotifyKind:
        return self.channel.kind

    @property
    def settings(self) -> Mapping[str, Any]:
        """The route's table as the pipelines file wrote it, without ``kind`` and ``on``: what its
        id digests."""
        return self.channel.as_written()


# [pipeline.fleet] deployments: how many of the group's newest deployments the fleet is read from
# (chalicelib/service/fleet.py), one ListDeploymentTargets call each. The default reaches back
# past a scale-out and a rollback and stays cheap.
DEFAULT_FLEET_DEPLOYMENTS = 5
MAX_FLEET_DEPLOYMENTS = 25


@dataclass(frozen=True)
class FleetSettings:
    """``[pipeline.fleet]``: check the fleet after each release ends (``check``), redeploy the
    last verified revision when it is mixed (``heal``), reading ``deployments`` recent ones."""

    check: bool = True
    heal: bool = False
    deployments: int = DEFAULT_FLEET_DEPLOYMENTS


# [pipeline.digest]: datetime.weekday()'s order (Monday is 0, as in ISO weeks), and the defaults.
DIGEST_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DEFAULT_DIGEST_WEEKDAY = "monday"
DEFAULT_DIGEST_HOUR = 9
DEFAULT_DIGEST_DAYS = 7
# As GET /stats: a window longer than a year says little about this week.
MAX_DIGEST_DAYS = 365


@dataclass(frozen=True)
class DigestSettings:
    """``[pipeline.digest]``: a weekly DORA digest (chalicelib/domain/digest.py) posted through one
    of the pipeline's ``slack`` routes, resolved at load: that route's bot token, and its channel
    unless the digest names its own."""

    route: int  # the number of the pipeline's [[pipeline.notify]] table, from 1
    channel: str
    token: SecretRef
    weekday: int = DIGEST_WEEKDAYS.index(DEFAULT_DIGEST_WEEKDAY)
    hour: int = DEFAULT_DIGEST_HOUR  # UTC
    days: int = DEFAULT_DIGEST_DAYS


@dataclass(frozen=True)
class Pipeline:
    name: str
    bucket: str
    prefix: str
    application: str
    deployment_group: str
    deployment_config: str = DEFAULT_DEPLOYMENT_CONFIG
    on_busy: BusyPolicy = BusyPolicy.QUEUE
    verify: VerifySettings = VerifySettings()
    rollback: RollbackSettings = RollbackSettings()
    notify: tuple[NotifyRoute, ...] = ()
    # The global [[freeze]] windows, then the pipeline's own [[pipeline.freeze]].
    freeze: tuple[FreezeWindow, ...] = ()
    approval: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    slack: SlackOperators = field(default_factory=SlackOperators)
    # Promotion: this pipeline deploys only what passed ``promote_from`` (its last good release,
    # ``soak`` after it was verified), never its own uploads.
    promote_from: str | None = None
    promote: PromoteMode = PromoteMode.AUTO
    soak: timedelta = timedelta(0)
    # The soaks of the pipelines that promote from this one (set at load): when its last good
    # release is due downstream.
    downstream_soaks: tuple[timedelta, ...] = ()
    # [pipeline.fleet]: the fleet checked for mixed revisions after each release, healed or not.
    fleet: FleetSettings = field(default_factory=FleetSettings)
    # When a running deployment counts as stuck and is stopped (chalicelib/domain/watchdog.py).
    watchdog: WatchdogLimits = field(default_factory=WatchdogLimits)
    # [pipeline.digest]: None posts no digest.
    digest: DigestSettings | None = None

    def matches(self, bucket: str, key: str) -> bool:
        return bucket == self.bucket and key.startswith(self.prefix)

    def to_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "application": self.application,
            "deployment_group": self.deployment_group,
            "deployment_config": self.deployment_config,
            "on_busy": self.on_busy.value,
        }


@dataclass(frozen=True)
class SlackApp:
    """``[slack]``: the Slack app whose release cards people act on. Its signing secret proves a
    request to ``POST /slack/interactions`` came from Slack; its bot token (optional) reads the
    members of user groups named as approvers or operators."""

    signing_secret: SecretRef
    token: SecretRef | None = None


@dataclass(frozen=True)
class PipelinesConfig:
    pipelines: tuple[Pipeline, ...]
    slack: SlackApp | None = None

    def downstream_of(self, name: str) -> tuple[Pipeline, ...]:
        """The pipelines that promote from ``name``."""
        return tuple(pipeline for pipeline in self.pipelines if pipeline.promote_from == name)

    def for_upload(self, bucket: str, key: str) -> Pipeline | None:
        # Prefixes within a bucket never overlap (checked at load), so at most one matches.
        return next((p for p in self.pipelines if p.matches(bucket, key)), None)

    def for_deployment_group(self, application: str, group: str) -> Pipeline | None:
        return next(
            (p for p in self.pipelines if p.application == application and p.deployment_group == group),
            None,
        )

    def named(self, name: str) -> Pipeline | None:
        return next((p for p in self.pipelines if p.name == name), None)


_REQUIRED = ("name", "bucket", "prefix", "application", "deployment_group")
_OPTIONAL = (
    "deployment_config",
    "on_busy",
    "verify",
    "rollback",
    "notify",
    "freeze",
    "approval",
    "slack",
    "fleet",
    "promote_from",
    "promote",
    "soak",
    "watchdog",
    "digest",
)


def load_pipelines(path: str | Path) -> PipelinesConfig:
    """Read and validate a pipelines file."""
    source = Path(path)
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelinesConfigError(f"{source}: file not found") from None
    except tomllib.TOMLDecodeError as error:
        raise PipelinesConfigError(f"{source}: not valid TOML: {error}") from None
    return parse_pipelines(raw, source=str(source))


def parse_pipelines(raw: Mapping[str, Any], *, source: str = "<pipelines>") -> PipelinesConfig:
    unknown = set(raw) - {"pipeline", "freeze", "slack"}
    if unknown:
        raise PipelinesConfigError(
            f"{source}: unknown top-level key(s) {sorted(unknown)}; "
            "expected [[pipeline]], [[freeze]] and [slack] tables"
        )

    def fail_global(key: str, what: str) -> PipelinesConfigError:
        return PipelinesConfigError(f"{source}: key '{key}': {what}")

    global_freeze = _parse_freeze(raw.get("freeze", []), "[[freeze]]", fail_global)
    entries = raw.get("pipeline", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise PipelinesConfigError(f"{source}: 'pipeline' must be an array of tables ([[pipeline]])")
    if not entries:
        raise PipelinesConfigError(f"{source}: no [[pipeline]] defined")
    pipelines = tuple(
        _parse_pipeline(entry, index, source, global_freeze) for index, entry in enumerate(entries)
    )
    _check_unique_names(pipelines, source)
    _check_no_overlap(pipelines, source)
    pipelines = _check_promotions(pipelines, source)
    slack = _parse_slack_app(raw["slack"], fail_global) if "slack" in raw else None
    return PipelinesConfig(pipelines, slack)


def _parse_pipeline(
    entry: Mapping[str, Any], index: int, source: str, global_freeze: tuple[FreezeWindow, ...]
) -> Pipeline:
    label = f"pipeline '{entry['name']}'" if isinstance(entry.get("name"), str) else f"pipeline #{index + 1}"

    def fail(key: str, what: str) -> PipelinesConfigError:
        return PipelinesConfigError(f"{source}: {label}: key '{key}': {what}")

    unknown = set(entry) - set(_REQUIRED) - set(_OPTIONAL)
    if unknown:
        key = sorted(unknown)[0]
        raise fail(key, f"unknown key (allowed: {', '.join(_REQUIRED + _OPTIONAL)})")
    values: dict[str, str] = {}
    for key in _REQUIRED:
        value = entry.get(key)
        if value is None:
            raise fail(key, "is required")
        if not isinstance(value, str) or (key != "prefix" and not value.strip()):
            raise fail(key, f"must be a non-empty string, got {value!r}")
        values[key] = value
    deployment_config = entry.get("deployment_config", DEFAULT_DEPLOYMENT_CONFIG)
    if not isinstance(deployment_config, str) or not deployment_config:
        raise fail("deployment_config", f"must be a deployment config name, got {deployment_config!r}")
    on_busy_raw = entry.get("on_busy", BusyPolicy.QUEUE.value)
    try:
        on_busy = BusyPolicy(on_busy_raw)
    except ValueError:
        raise fail("on_busy", f"must be 'queue' or 'supersede', got {on_busy_raw!r}") from None
    notify = _parse_notify(entry.get("notify", []), fail)
    return Pipeline(
        name=values["name"],
        bucket=values["bucket"],
        prefix=values["prefix"],
        application=values["application"],
        deployment_group=values["deployment_group"],
        deployment_config=deployment_config,
        on_busy=on_busy,
        verify=_parse_verify(entry.get("verify", {}), fail),
        rollback=_parse_rollback(entry.get("rollback", {}), fail),
        notify=notify,
        freeze=global_freeze + _parse_freeze(entry.get("freeze", []), "[[pipeline.freeze]]", fail),
        approval=_parse_approval(entry.get("approval", {}), fail),
        slack=_parse_slack_operators(entry.get("slack", {}), fail),
        fleet=_parse_fleet(entry.get("fleet", {}), fail),
        watchdog=_parse_watchdog(entry.get("watchdog", {}), fail),
        digest=_parse_digest(entry["digest"], notify, fail) if "digest" in entry else None,
        **_parse_promotion(entry, fail),
    )


def _table(value: Any, key: str, fail: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise fail(key, f"must be a table ([pipeline.{key}]), got {value!r}")
    return value


def _whole_number(
    table: Mapping[str, Any], name: str, key: str, fail: Any, *, minimum: int, maximum: int | None = None
) -> int | None:
    value = table.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise fail(f"{key}.{name}", f"must be a whole number >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise fail(f"{key}.{name}", f"must be at most {maximum} ({_MAXIMUM_REASONS[name]}), got {value!r}")
    return value


# CloudWatch's limits (botocore's cloudwatch model): AlarmName is 1 to 255 characters, and
# DescribeAlarms takes at most 100 AlarmNames, so one call reads every alarm of a pipeline.
MAX_ALARM_NAME_CHARS = 255
MAX_ALARMS = 100

# The largest verify values that make sense, and why (docs/pipelines.md says the same).
MAX_VERIFY_INTERVAL_S = 900
MAX_BAKE_S = 86_400
MAX_DEADLINE_S = 172_800
# The shortest bake verify.compare can judge. The bake's window is read at the check after it, and
# CloudWatch has an ALB minute only about 2 minutes after it ends (traffic.SETTLING_S = 120): a bake
# holds a whole minute with settled data only when it lasts that long plus two minutes (one it may
# begin partway through, one whole).
MIN_COMPARED_BAKE_S = 240
_MAXIMUM_REASONS = {
    "interval_s": "15 minutes, the longest SQS can delay one health check",
    "bake_s": "24 hours: the release holds its pipeline's slot while it bakes",
    "deadline_s": "48 hours: the longest bake plus time for the targets to turn healthy",
}


def _parse_verify(value: Any, fail: Any) -> VerifySettings:
    table = _table(value, "verify", fail)
    allowed = {
        "healthy_checks",
        "interval_s",
        "deadline_s",
        "bake_s",
        "alarms",
        "alarm_at_start",
        "receipt",
        "compare",
    }
    for name in table:
        if name not in allowed:
            raise fail(f"verify.{name}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
    receipt = table.get("receipt", True)
    if not isinstance(receipt, bool):
        raise fail("verify.receipt", f"must be true or false, got {receipt!r}")
    if "compare" in table and not table.get("bake_s"):
        raise fail("verify.compare", "judges the bake: set verify.bake_s (seconds) too")
    defaults = VerifySettings()
    healthy_checks = _whole_number(table, "healthy_checks", "verify", fail, minimum=1)
    bake_s = _whole_number(table, "bake_s", "verify", fail, minimum=0, maximum=MAX_BAKE_S)
    if "compare" in table and bake_s is not None and bake_s < MIN_COMPARED_BAKE_S:
        raise fail(
            "verify.bake_s",
            f"must be at least {MIN_COMPARED_BAKE_S} with verify.compare (CloudWatch has a load "
            "balancer's minute about 2 minutes after it ends: a shorter bake holds no whole minute "
            f"of figures to judge by the check after it), got {bake_s}",
        )
    return VerifySettings(
        healthy_checks=defaults.healthy_checks if healthy_checks is None else healthy_checks,
        interval_s=_whole_number(
            table, "interval_s", "verify", fail, minimum=1, maximum=MAX_VERIFY_INTERVAL_S
        ),
        deadline_s=_whole_number(table, "deadline_s", "verify", fail, minimum=1, maximum=MAX_DEADLINE_S),
        bake_s=defaults.bake_s if bake_s is None else bake_s,
        alarms=_alarm_names(table.get("alarms", []), fail),
        alarm_at_start=_choice(table, "alarm_at_start", "verify", fail, default=AlarmAtStart.WAIT),
        receipt=receipt,
        compare=_parse_compare(table["compare"], fail) if "compare" in table else None,
    )


def _parse_compare(value: Any, fail: Any) -> CompareSettings:
    table = _table(value, "verify.compare", fail)
    allowed = {"error_rate_ratio", "p90_ratio", "min_requests", "not_enough_traffic"}
    for name in table:
        if name not in allowed:
            raise fail(f"verify.compare.{name}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
    defaults = CompareSettings()
    ratios = {}
    for name in ("error_rate_ratio", "p90_ratio"):
        ratio = table.get(name, getattr(defaults, name))
        # A ratio of 1 or less would fail a release whose figures merely equal the baseline's.
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not ratio > 1:
            raise fail(f"verify.compare.{name}", f"must be a number greater than 1, got {ratio!r}")
        ratios[name] = float(ratio)
    min_requests = _whole_number(table, "min_requests", "verify.compare", fail, minimum=1)
    return CompareSettings(
        error_rate_ratio=ratios["error_rate_ratio"],
        p90_ratio=ratios["p90_ratio"],
        min_requests=defaults.min_requests if min_requests is None else min_requests,
        not_enough_traffic=_choice(
            table, "not_enough_traffic", "verify.compare", fail, default=NotEnoughTraffic.PASS
        ),
    )


def _choice(table: Mapping[str, Any], name: str, key: str, fail: Any, *, default: _E) -> _E:
    enum = type(default)
    value = table.get(name, default.value)
    try:
        return enum(value)
    except ValueError:
        allowed = " or ".join(repr(member.value) for member in enum)
        raise fail(f"{key}.{name}", f"must be {allowed}, got {value!r}") from None


def _parse_approval(value: Any, fail: Any) -> ApprovalPolicy:
    table = _table(value, "approval", fail)
    allowed = {"required", "approvers", "slack_approvers", "expires_after", "on_newer"}
    for name in table:
        if name not in allowed:
            raise fail(f"approval.{name}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
    required = table.get("required", bool(table))
    if not isinstance(required, bool):
        raise fail("approval.required", f"must be true or false, got {required!r}")
    approvers = table.get("approvers", [])
    if not isinstance(approvers, list) or not all(
        isinstance(arn, str) and arn.startswith("arn:") for arn in approvers
    ):
        raise fail(
            "approval.approvers",
            "must be a list of IAM principal ARNs or patterns such as "
            f"'arn:aws:iam::123456789012:role/Releasers', got {approvers!r}",
        )
    slack_approvers = _slack_ids(table, "slack_approvers", "approval", fail, allowed)
    if required and not approvers and not slack_approvers:
        raise fail("approval", "nobody may approve: name 'approvers' (IAM) or 'slack_approvers' (Slack)")
    expires_after = (
        _duration(table["expires_after"], "approval.expires_after", fail)
        if "expires_after" in table
        else DEFAULT_APPROVAL_EXPIRY
    )
    if expires_after < MIN_APPROVAL_EXPIRY:
        raise fail(
            "approval.expires_after",
            "must be at least 15m: a click on the Slack card whose worker died is carried out when "
            "SQS hands it back, up to about 10 minutes later, and must find the approval open",
        )
    return ApprovalPolicy(
        required=required,
        approvers=tuple(approvers),
        slack_approvers=slack_approvers,
        expires_after=expires_after,
        on_newer=_choice(table, "on_newer", "approval", fail, default=OnNewer.SUPERSEDE),
    )


def _parse_promotion(entry: Mapping[str, Any], fail: Any) -> dict[str, Any]:
    """``promote_from``, ``promote`` and ``soak``; the pipeline named is checked once every
    pipeline is read (``_check_promotions``)."""
    promote_from = entry.get("promote_from")
    if promote_from is None:
        for name in ("promote", "soak"):
            if name in entry:
                raise fail(name, "is for a pipeline that promotes: set promote_from too")
        return {}
    if not isinstance(promote_from, str) or not promote_from:
        raise fail("promote_from", f"must name another pipeline, got {promote_from!r}")
    promote = _choice(entry, "promote", "pipeline", fail, default=PromoteMode.AUTO)
    soak = _duration(entry["soak"], "soak", fail) if "soak" in entry else timedelta(0)
    approval = entry.get("approval")
    if promote is PromoteMode.APPROVAL and not (
        isinstance(approval, dict) and (approval.get("approvers") or approval.get("slack_approvers"))
    ):
        raise fail("promote", "'approval' needs [pipeline.approval] naming approvers or slack_approvers")
    return {"promote_from": promote_from, "promote": promote, "soak": soak}


def _check_promotions(pipelines: tuple[Pipeline, ...], source: str) -> tuple[Pipeline, ...]:
    """Every ``promote_from`` names another pipeline and the chains have no cycle; each pipeline
    learns the soaks of those that promote from it."""
    by_name = {pipeline.name: pipeline for pipeline in pipelines}
    for pipeline in pipelines:
        if pipeline.promote_from is None:
            continue
        if pipeline.promote_from not in by_name:
            raise PipelinesConfigError(
                f"{source}: pipeline '{pipeline.name}': key 'promote_from': no pipeline is named "
                f"{pipeline.promote_from!r} (pipelines: {', '.join(sorted(by_name))})"
            )
        chain = [pipeline.name]
        upstream: str | None = pipeline.promote_from
        while upstream is not None:
            if upstream in chain:
                cycle = " -> ".join([*chain[chain.index(upstream) :], upstream])
                raise PipelinesConfigError(
                    f"{source}: pipeline '{pipeline.name}': key 'promote_from': promote_from forms a "
                    f"cycle ({cycle}, each promoting from the next): a chain must start at a "
                    "pipeline that deploys its own uploads"
                )
            chain.append(upstream)
            upstream = by_name[upstream].promote_from
    return tuple(
        dataclasses.replace(
            pipeline,
            downstream_soaks=tuple(other.soak for other in pipelines if other.promote_from == pipeline.name),
        )
        for pipeline in pipelines
    )


def _parse_slack_operators(value: Any, fail: Any) -> SlackOperators:
    return SlackOperators(_slack_ids(_table(value, "slack", fail), "operators", "slack", fail, {"operators"}))


def _slack_ids(
    table: Mapping[str, Any], name: str, key: str, fail: Any, allowed: Iterable[str]
) -> tuple[str, ...]:
    for written in table:
        if written not in allowed:
            raise fail(f"{key}.{written}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
    value = table.get(name, [])
    if not isinstance(value, list) or not all(_is_slack_id(entry) for entry in value):
        raise fail(
            f"{key}.{name}",
            f"must be a list of Slack user (U..., W...) or user group (S...) ids, got {value!r}",
        )
    return tuple(value)


def _parse_slack_app(value: Any, fail: Callable[[str, str], PipelinesConfigError]) -> SlackApp:
    if not isinstance(value, dict):
        raise fail("slack", f"must be a table ([slack]), got {value!r}")
    allowed = {f"{name}{suffix}" for name in ("signing_secret", "token") for suffix in SECRET_SOURCES}
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise fail(f"slack.{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
    for name, written in value.items():
        if not isinstance(written, str) or not written:
            raise fail(f"slack.{name}", f"must name an SSM parameter or a secret, got {written!r}")
    signing_secret = secret_ref(value, "signing_secret")
    if signing_secret is None:
        raise fail("slack", "needs signing_secret_parameter (SSM) or signing_secret_secret (Secrets Manager)")
    return SlackApp(signing_secret, secret_ref(value, "token"))


def _alarm_names(value: Any, fail: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise fail("verify.alarms", f"must be a list of CloudWatch alarm names, got {value!r}")
    for name in value:
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_ALARM_NAME_CHARS:
            raise fail(
                "verify.alarms",
                f"each alarm name must be a string of 1 to {MAX_ALARM_NAME_CHARS} characters "
                f"(CloudWatch's AlarmName), got {name!r}",
            )
    if len(value) > MAX_ALARMS:
        raise fail(
            "verify.alarms",
            f"at most {MAX_ALARMS} alarms (what one DescribeAlarms call takes), got {len(value)}",
        )
    repeated = sorted({name for name in value if value.count(name) > 1})
    if repeated:
        raise fail("verify.alarms", f"names an alarm more than once: {', '.join(repeated)}")
    return tuple(value)


def _parse_rollback(value: Any, fail: Any) -> RollbackSettings:
    table = _table(value, "rollback", fail)
    allowed = {"on_deploy_failure", "on_verify_failure"}
    flags: dict[str, bool] = {}
    for name, flag in table.items():
        if name not in allowed:
            raise fail(f"rollback.{name}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
        if not isinstance(flag, bool):
            raise fail(f"rollback.{name}", f"must be true or false, got {flag!r}")
        flags[name] = flag
    return RollbackSettings(**flags)


def _parse_fleet(value: Any, fail: Any) -> FleetSettings:
    table = _table(value, "fleet", fail)
    allowed = ("check", "heal", "deployments")
    for name in table:
        if name not in allowed:
            raise fail(f"fleet.{name}", f"unknown key (allowed: {', '.join(allowed)})")
    flags: dict[str, bool] = {}
    for name in ("check", "heal"):
        if name in table:
            if not isinstance(table[name], bool):
                raise fail(f"fleet.{name}", f"must be true or false, got {table[name]!r}")
            flags[name] = table[name]
    if flags.get("heal") and not flags.get("check", True):
        raise fail("fleet.heal", "needs check = true: only a checked fleet is known to be mixed")
    deployments = table.get("deployments", FleetSettings.deployments)
    if (
        isinstance(deployments, bool)
        or not isinstance(deployments, int)
        or not 1 <= deployments <= MAX_FLEET_DEPLOYMENTS
    ):
        raise fail(
            "fleet.deployments",
            f"must be a whole number from 1 to {MAX_FLEET_DEPLOYMENTS} (one ListDeploymentTargets "
            f"call each), got {deployments!r}",
        )
    return FleetSettings(deployments=deployments, **flags)


def _parse_watchdog(value: Any, fail: Any) -> WatchdogLimits:
    """``[pipeline.watchdog]``: ``enabled``, and the durations ``agent_timeout``, ``hook_timeout``
    (at most CodeDeploy's 3600 s, the longest a hook may be given) and ``margin``."""
    table = _table(value, "watchdog", fail)
    durations = ("agent_timeout", "hook_timeout", "margin")
    allowed = {"enabled", *durations}
    limits: dict[str, Any] = {}
    for name, setting in table.items():
        key = f"watchdog.{name}"
        if name not in allowed:
            raise fail(key, f"unknown key (allowed: {', '.join(sorted(allowed))})")
        if name == "enabled":
            if not isinstance(setting, bool):
                raise fail(key, f"must be true or false, got {setting!r}")
            limits[name] = setting
            continue
        span = _duration(setting, key, fail)
        if name != "margin" and span <= timedelta(0):
            raise fail(key, f"must be longer than 0s, got {setting!r}")
        if name == "hook_timeout" and span > CODEDEPLOY_HOOK_TIMEOUT:
            raise fail(key, f"must be at most 3600s (CodeDeploy's longest hook timeout), got {setting!r}")
        limits[name] = span
    return WatchdogLimits(**limits)


def _parse_notify(value: Any, fail: Any) -> tuple[NotifyRoute, ...]:
    if not isinstance(value, list):
        raise fail("notify", "must be an array of tables ([[pipeline.notify]])")
    routes = []
    for number, entry in enumerate(value, start=1):
        key = f"notify[{number}]"
        if not isinstance(entry, dict):
            raise fail(key, "must be a table")
        kind_written = entry.get("kind")
        if not isinstance(kind_written, str) or kind_written not in set(NotifyKind):
            raise fail(f"{key}.kind", f"must be one of {', '.join(sorted(NotifyKind))}, got {kind_written!r}")
        kind = NotifyKind(kind_written)
        on = entry.get("on", sorted(default_subscription(kind)))
        if not isinstance(on, list) or not all(isinstance(name, str) for name in on):
            raise fail(f"{key}.on", "must be a list of event names")
        unknown_events = sorted(set(on) - SUBSCRIBABLE)
        if unknown_events:
            raise fail(
                f"{key}.on",
                f"unknown event(s) {unknown_events} (known: {', '.join(sorted(SUBSCRIBABLE))})",
            )
        settings = {name: setting for name, setting in entry.items() if name not in ("kind", "on")}
        _check_notify_settings(kind, settings, key, fail)
        routes.append(
            NotifyRoute(
                on=frozenset(Notification(name) for name in on),
                channel=SETTINGS_BY_KIND[kind].from_written(settings),
            )
        )
    return tuple(routes)


def _parse_digest(value: Any, notify: tuple[NotifyRoute, ...], fail: Any) -> DigestSettings:
    """``[pipeline.digest]``: ``route`` (a ``slack`` route's number; may be left out when the
    pipeline has one), ``channel`` (default: the route's), ``weekday``, ``hour`` (UTC), ``days``."""
    table = _table(value, "digest", fail)
    allowed = ("route", "channel", "weekday", "hour", "days")
    for name in table:
        if name not in allowed:
            raise fail(f"digest.{name}", f"unknown key (allowed: {', '.join(allowed)})")
    slack_routes = {
        number: route.channel
        for number, route in enumerate(notify, start=1)
        if isinstance(route.channel, SlackSettings)
    }
    if "route" in table:
        number = table["route"]
        if isinstance(number, bool) or not isinstance(number, int) or number not in slack_routes:
            raise fail(
                "digest.route",
                f"must be the number of one of the pipeline's slack routes ([[pipeline.notify]] "
                f'with kind = "slack", counted from 1: {sorted(slack_routes) or "none"}), got {number!r}',
            )
    elif len(slack_routes) == 1:
        [number] = slack_routes
    else:
        raise fail(
            "digest.route",
            'is required: the number of the slack route ([[pipeline.notify]] with kind = "slack", '
            f"counted from 1) whose bot token posts the digest; the pipeline has {len(slack_routes)}",
        )
    route = slack_routes[number]
    channel = table.get("channel", route.channel)
    if not isinstance(channel, str) or not channel.strip():
        raise fail("digest.channel", f"must be a channel name or id, got {channel!r}")
    weekday = table.get("weekday", DEFAULT_DIGEST_WEEKDAY)
    if weekday not in DIGEST_WEEKDAYS:
        raise fail("digest.weekday", f"must be one of {', '.join(DIGEST_WEEKDAYS)}, got {weekday!r}")
    hour = table.get("hour", DEFAULT_DIGEST_HOUR)
    if isinstance(hour, bool) or not isinstance(hour, int) or not 0 <= hour <= 23:
        raise fail("digest.hour", f"must be a whole hour from 0 to 23 (UTC), got {hour!r}")
    days = table.get("days", DEFAULT_DIGEST_DAYS)
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DIGEST_DAYS:
        raise fail("digest.days", f"must be a whole number of days from 1 to {MAX_DIGEST_DAYS}, got {days!r}")
    return DigestSettings(
        route=number,
        channel=channel,
        token=route.token,
        weekday=DIGEST_WEEKDAYS.index(weekday),
        hour=hour,
        days=days,
    )


_FREEZE_KEYS = ("reason", "timezone", "start", "end", "rrule", "duration")
# A duration in days, hours and minutes, largest first: "64h", "2d16h", "90m".
_DURATION = re.compile(r"(?:(?P<days>\d+)d)?(?:(?P<hours>\d+)h)?(?:(?P<minutes>\d+)m)?(?:(?P<seconds>\d+)s)?")


def _parse_freeze(
    value: Any, written_as: str, fail: Callable[[str, str], PipelinesConfigError]
) -> tuple[FreezeWindow, ...]:
    """Freeze windows, global ([[freeze]]) or a pipeline's ([[pipeline.freeze]]): a one-off has
    ``end``, a recurring window ``rrule`` and ``duration``; ``start`` is a TOML local date-time
    in ``timezone`` (default UTC). chalicelib/domain/freeze.py checks what the values mean."""
    if not isinstance(value, list):
        raise fail("freeze", f"must be an array of tables ({written_as})")
    windows = []
    for number, entry in enumerate(value, start=1):
        key = f"freeze[{number}]"
        if not isinstance(entry, dict):
            raise fail(key, "must be a table")
        unknown = sorted(set(entry) - set(_FREEZE_KEYS))
        if unknown:
            raise fail(f"{key}.{unknown[0]}", f"unknown key (allowed: {', '.join(_FREEZE_KEYS)})")
        reason = entry.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise fail(f"{key}.reason", f"is required: a non-empty string saying why, got {reason!r}")
        timezone = entry.get("timezone", "UTC")
        if not isinstance(timezone, str):
            raise fail(f"{key}.timezone", f"must be an IANA time zone name, got {timezone!r}")
        start = _local_date_time(entry, "start", key, fail)
        if ("end" in entry) == ("rrule" in entry):
            raise fail(key, "set either 'end' (a one-off window) or 'rrule' and 'duration' (a recurring one)")
        try:
            if "end" in entry:
                if "duration" in entry:
                    raise fail(f"{key}.duration", "a one-off window ends at 'end'; 'duration' is for 'rrule'")
                end = _local_date_time(entry, "end", key, fail)
                windows.append(FreezeWindow.one_off(reason, timezone, start, end))
                continue
            rule = entry["rrule"]
            if not isinstance(rule, str):
                raise fail(
                    f"{key}.rrule", f"must be an RRULE string such as 'FREQ=WEEKLY;BYDAY=FR', got {rule!r}"
                )
            duration = _duration(entry.get("duration"), f"{key}.duration", fail)
            windows.append(FreezeWindow.recurring(reason, timezone, start, rule, duration))
        except FreezeWindowError as error:
            raise fail(f"{key}.{error.key}", error.what) from None
    return tuple(windows)


def _local_date_time(
    entry: Mapping[str, Any], name: str, key: str, fail: Callable[[str, str], PipelinesConfigError]
) -> datetime:
    value = entry.get(name)
    if value is None:
        raise fail(f"{key}.{name}", "is required")
    if not isinstance(value, datetime):
        raise fail(
            f"{key}.{name}",
            f"must be a TOML local date-time such as 2025-12-24T18:00:00 (no quotes), got {value!r}",
        )
    return value


def _duration(value: Any, key: str, fail: Callable[[str, str], PipelinesConfigError]) -> timedelta:
    if value is None:
        raise fail(key, "is required with 'rrule'")
    written = _DURATION.fullmatch(value) if isinstance(value, str) and value else None
    if written is None:
        raise fail(
            key,
            f"must be days, hours, minutes and seconds such as '64h', '2d16h', '90m' or '30s', got {value!r}",
        )
    return timedelta(**{unit: int(amount) for unit, amount in written.groupdict(default="0").items()})


# Each kind's settings, by what they hold. A "secret" is named, never written in the file:
# ``<name>_parameter`` (SSM Parameter Store) or ``<name>_secret`` (Secrets Manager). A generic
# webhook's URL may be plain (``url``) or a secret.
_NOTIFY_SETTINGS: Mapping[NotifyKind, Mapping[str, str]] = {
    NotifyKind.SLACK: {
        "channel": "text",
        "token": "secret",
        "mention_on_failure": "slack_ids",
        "authors": "authors",
    },
    NotifyKind.SLACK_WEBHOOK: {"url": "secret", "mention_on_failure": "slack_ids", "authors": "authors"},
    NotifyKind.EMAIL: {"sender": "address", "to": "addresses"},
    NotifyKind.SNS: {"topic_arn": "topic"},
    NotifyKind.WEBHOOK: {"url": "url_or_secret", "signing_key": "secret"},
    NotifyKind.GITHUB: {
        "repository": "repository",
        "token": "secret",
        "api_url": "token_url",
        "environment": "text",
        "release_url": "release_url",
        "environment_url": "http_url",
    },
}
_OPTIONAL_NOTIFY_SETTINGS = frozenset(
    {"mention_on_failure", "authors", "api_url", "environment", "release_url", "environment_url"}
)
# Hosts a token may be sent to over plain http: this machine's (the sandbox's and tests' look-alikes).
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
# GitHub's "owner/name": letters, digits, '-', '_' and '.'.
_GITHUB_REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


def _is_slack_id(value: Any) -> bool:
    # Users (U..., W... on Enterprise Grid) and user groups (S...), as Slack shows them.
    return (
        isinstance(value, str)
        and len(value) > 2
        and value[0] in "UWS"
        and value.isalnum()
        and value.isupper()
    )


def _is_token_url(value: Any) -> bool:
    """An API URL a bearer token may be sent to: https, or http to this machine only."""
    if not isinstance(value, str):
        return False
    try:
        parsed = urllib.parse.urlsplit(value)
        host = parsed.hostname
    except ValueError:  # an unbalanced IPv6 bracket
        return False
    if not host:
        return False
    return parsed.scheme == "https" or (parsed.scheme == "http" and host in _LOOPBACK_HOSTS)


def _check_notify_settings(kind: NotifyKind, settings: Mapping[str, Any], key: str, fail: Any) -> None:
    spec = _NOTIFY_SETTINGS[kind]
    allowed: set[str] = set()
    for name, holds in spec.items():
        secret_names = [f"{name}{suffix}" for suffix in SECRET_SOURCES]
        if holds in ("secret", "url_or_secret"):
            names = secret_names + ([name] if holds == "url_or_secret" else [])
            allowed.update(names)
            given = [candidate for candidate in names if candidate in settings]
            if len(given) != 1:
                raise fail(f"{key}.{name}", f"set exactly one of {', '.join(names)}")
            value = settings[given[0]]
            if not isinstance(value, str) or not value.strip():
                raise fail(f"{key}.{given[0]}", f"must be a non-empty string, got {value!r}")
            if given[0] == name and not value.startswith(("https://", "http://")):
                raise fail(f"{key}.{name}", f"must be an http(s) URL, got {value!r}")
            continue
        allowed.add(name)
        value = settings.get(name)
        if value is None:
            if name in _OPTIONAL_NOTIFY_SETTINGS:
                continue
            raise fail(f"{key}.{name}", "is required")
        if holds == "text" and not (isinstance(value, str) and value.strip()):
            raise fail(f"{key}.{name}", f"must be a non-empty string, got {value!r}")
        if holds == "repository" and not (isinstance(value, str) and _GITHUB_REPOSITORY.fullmatch(value)):
            raise fail(f"{key}.{name}", f'must be a GitHub repository "owner/name", got {value!r}')
        if holds == "http_url" and not (isinstance(value, str) and value.startswith(("https://", "http://"))):
            raise fail(f"{key}.{name}", f"must be an http(s) URL, got {value!r}")
        if holds == "token_url" and not _is_token_url(value):
            raise fail(
                f"{key}.{name}",
                "must be an https URL (the token goes with every call; http only to "
                f"127.0.0.1, ::1 or localhost), got {value!r}",
            )
        if holds == "release_url" and not (
            isinstance(value, str)
            and value.startswith(("https://", "http://"))
            and RELEASE_ID_PLACEHOLDER in value
        ):
            raise fail(
                f"{key}.{name}",
                f"must be an http(s) URL with {RELEASE_ID_PLACEHOLDER} where the release's id goes, "
                f"got {value!r}",
            )
        if holds == "address" and not (isinstance(value, str) and "@" in value):
            raise fail(f"{key}.{name}", f"must be an email address, got {value!r}")
        if holds == "addresses" and not (
            isinstance(value, list) and value and all(isinstance(a, str) and "@" in a for a in value)
        ):
            raise fail(f"{key}.{name}", f"must be a non-empty list of email addresses, got {value!r}")
        if holds == "topic" and not (
            isinstance(value, str) and value.startswith("arn:") and ":sns:" in value
        ):
            raise fail(f"{key}.{name}", f"must be an SNS topic ARN, got {value!r}")
        if holds == "slack_ids" and not (isinstance(value, list) and all(_is_slack_id(v) for v in value)):
            raise fail(
                f"{key}.{name}",
                f"must be a list of Slack user or group ids (U..., W..., S...), got {value!r}",
            )
        if holds == "authors" and not (
            isinstance(value, dict) and all(isinstance(a, str) and _is_slack_id(v) for a, v in value.items())
        ):
            raise fail(
                f"{key}.{name}",
                f'must map upload authors to Slack user ids ({{ "alice" = "U..." }}), got {value!r}',
            )
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise fail(
            f"{key}.{unknown[0]}", f"unknown key for kind '{kind}' (allowed: {', '.join(sorted(allowed))})"
        )


def _check_unique_names(pipelines: Iterable[Pipeline], source: str) -> None:
    seen: set[str] = set()
    for pipeline in pipelines:
        if pipeline.name in seen:
            raise PipelinesConfigError(f"{source}: pipeline '{pipeline.name}': key 'name': used twice")
        seen.add(pipeline.name)


def _check_no_overlap(pipelines: tuple[Pipeline, ...], source: str) -> None:
    for index, first in enumerate(pipelines):
        for second in pipelines[index + 1 :]:
            if first.bucket != second.bucket:
                continue
            if first.prefix.startswith(second.prefix) or second.prefix.startswith(first.prefix):
                raise PipelinesConfigError(
                    f"{source}: pipeline '{second.name}': key 'prefix': "
                    f"s3://{second.bucket}/{second.prefix} overlaps pipeline '{first.name}' "
                    f"(s3://{first.bucket}/{first.prefix}); an upload must match one pipeline"
                )
        if any(
            other.application == first.application and other.deployment_group == first.deployment_group
            for other in pipelines[index + 1 :]
        ):
            raise PipelinesConfigError(
                f"{source}: pipeline '{first.name}': key 'deployment_group': "
                f"{first.application}/{first.deployment_group} is used by another pipeline; "
                "CodeDeploy runs one deployment per group, so one pipeline owns a group"
            )
