"""What the stack declares and the sandbox provisions alike: the queues (visibility, delay, FIFO,
redrive), the releases table and the S3 "Object Created" rules. infra/render.py writes them into
the merge template; sandbox/provision.py creates them through the AWS API. One definition, two
renderings: what the sandbox exercises is what ships (tests/integration/test_provision_matches_template.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from infra.sizing import Sizing

# --- queues -------------------------------------------------------------------------------------

TABLE = "ReleasesTable"
VERIFY_QUEUE = "VerifyQueue"
VERIFY_DLQ = "VerifyDeadLetterQueue"
NOTIFY_QUEUE = "NotifyQueue"
NOTIFY_DLQ = "NotifyDeadLetterQueue"
SLACK_ACTIONS_QUEUE = "SlackActionsQueue"
SLACK_ACTIONS_DLQ = "SlackActionsDeadLetterQueue"
STREAM_FAILURES = "StreamFailureQueue"
EVENT_FAILURES = "EventFailureQueue"
DEAD_LETTER_QUEUES = (VERIFY_DLQ, NOTIFY_DLQ, SLACK_ACTIONS_DLQ, STREAM_FAILURES, EVENT_FAILURES)

VERIFY_MAX_RECEIVES = 5
# Transient failures that never pass move to the DLQ; permanent refusals are sent there at once
# by the coordinator.
NOTIFY_MAX_RECEIVES = 8
# A click the worker could not carry out three times (AWS failing) is parked: by then the person
# who clicked has long been told nothing happened, and acting minutes later would surprise them.
SLACK_ACTION_MAX_RECEIVES = 3
# SQS's longest retention (botocore sqs model: MessageRetentionPeriod "from 60 seconds (1 minute)
# to 1,209,600 seconds (14 days)"): the last stop keeps what it holds as long as SQS can.
DLQ_RETENTION_S = 14 * 24 * 3600


@dataclass(frozen=True)
class QueueSpec:
    logical_id: str
    suffix: str  # the name after the stack's prefix ("verify" -> release-coordinator-dev-verify)
    fifo: bool = False
    # The Chalice function consuming it: its visibility timeout is sized from that function.
    consumer: str | None = None
    dead_letters: str | None = None  # logical id of its dead-letter queue
    max_receives: int = 0
    # Verify messages carry their own delay (the check's interval); no queue delays everything.
    delay_s: int = 0


QUEUES: tuple[QueueSpec, ...] = (
    QueueSpec(VERIFY_DLQ, "verify-dlq"),
    QueueSpec(
        VERIFY_QUEUE,
        "verify",
        consumer="on_verify_message",
        dead_letters=VERIFY_DLQ,
        max_receives=VERIFY_MAX_RECEIVES,
    ),
    QueueSpec(NOTIFY_DLQ, "notify-dlq", fifo=True),
    QueueSpec(
        NOTIFY_QUEUE,
        "notify",
        fifo=True,
        consumer="on_notify_message",
        dead_letters=NOTIFY_DLQ,
        max_receives=NOTIFY_MAX_RECEIVES,
    ),
    QueueSpec(SLACK_ACTIONS_DLQ, "slack-actions-dlq"),
    QueueSpec(
        SLACK_ACTIONS_QUEUE,
        "slack-actions",
        consumer="on_slack_action",
        dead_letters=SLACK_ACTIONS_DLQ,
        max_receives=SLACK_ACTION_MAX_RECEIVES,
    ),
    QueueSpec(STREAM_FAILURES, "stream-failures"),
    QueueSpec(EVENT_FAILURES, "event-failures"),
)
QUEUES_BY_ID = {spec.logical_id: spec for spec in QUEUES}


def queue_name(prefix: str, spec: QueueSpec) -> str:
    return f"{prefix}-{spec.suffix}.fifo" if spec.fifo else f"{prefix}-{spec.suffix}"


@dataclass(frozen=True)
class QueueSettings:
    """A queue's attributes as typed values; ``dead_letter_arn`` is whatever names the DLQ's ARN
    in the rendering (an ``Fn::GetAtt`` in the template, a real ARN in the sandbox)."""

    fifo: bool
    delay_s: int
    visibility_timeout_s: int | None
    retention_s: int | None
    max_receives: int | None
    dead_letters: str | None


def queue_settings(spec: QueueSpec, sizing: Mapping[str, Sizing]) -> QueueSettings:
    if spec.dead_letters is None:
        return QueueSettings(spec.fifo, spec.delay_s, None, DLQ_RETENTION_S, None, None)
    if spec.consumer is None:
        raise ValueError(f"{spec.logical_id} has a dead-letter queue but no consumer to size it from")
    return QueueSettings(
        fifo=spec.fifo,
        delay_s=spec.delay_s,
        visibility_timeout_s=sizing[spec.consumer].visibility_timeout_s,
        retention_s=None,
        max_receives=spec.max_receives,
        dead_letters=spec.dead_letters,
    )


def queue_properties(prefix: str, spec: QueueSpec, settings: QueueSettings) -> dict[str, Any]:
    """``AWS::SQS::Queue`` properties."""
    properties: dict[str, Any] = {
        "QueueName": queue_name(prefix, spec),
        "SqsManagedSseEnabled": True,
        "DelaySeconds": settings.delay_s,
    }
    if settings.fifo:
        properties["FifoQueue"] = True
    if settings.retention_s is not None:
        properties["MessageRetentionPeriod"] = settings.retention_s
    if settings.visibility_timeout_s is not None:
        properties["VisibilityTimeout"] = settings.visibility_timeout_s
    if settings.dead_letters is not None:
        properties["RedrivePolicy"] = {
            "deadLetterTargetArn": {"Fn::GetAtt": [settings.dead_letters, "Arn"]},
            "maxReceiveCount": settings.max_receives,
        }
    return properties


def queue_attributes(settings: QueueSettings, dead_letter_arn: str | None) -> dict[str, str]:
    """``CreateQueue`` attributes (strings, as the SQS API takes them)."""
    attributes = {"SqsManagedSseEnabled": "true", "DelaySeconds": str(settings.delay_s)}
    if settings.fifo:
        attributes["FifoQueue"] = "true"
    if settings.retention_s is not None:
        attributes["MessageRetentionPeriod"] = str(settings.retention_s)
    if settings.visibility_timeout_s is not None:
        attributes["VisibilityTimeout"] = str(settings.visibility_timeout_s)
    if settings.dead_letters is not None:
        if dead_letter_arn is None:
            raise ValueError("a queue with a dead-letter queue needs that queue's ARN")
        attributes["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": settings.max_receives}
        )
    return attributes


# --- the table ----------------------------------------------------------------------------------

# The API's Idempotency-Key records carry their expiry in ``expires_at`` (Powertools' ``expiry_attr``,
# chalicelib/adapters/request_ledger.py EXPIRY_ATTRIBUTE).
TTL_ATTRIBUTE = "expires_at"


def table_definition(name: str) -> dict[str, Any]:
    """``CreateTable`` parameters (the store's own shape, chalicelib/adapters/dynamodb_store.py)."""
    from chalicelib.adapters import dynamodb_store

    return dynamodb_store.table_definition(name)


# --- the S3 "Object Created" rules --------------------------------------------------------------

# What CodeDeploy deploys from S3 (chalicelib.domain.release.Revision.bundle_type). EventBridge's
# matching is case-sensitive, as S3 keys are: the usual spellings of each are listed.
BUNDLE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
BUNDLE_SUFFIX_SPELLINGS = tuple(s for suffix in BUNDLE_SUFFIXES for s in (suffix, suffix.upper()))
# botocore's events models: EventPattern is a string of at most 4,096 characters (2015-10-07), 2,048
# in the older 2014-02-03 API: the smaller one keeps every rule acceptable to both.
EVENT_PATTERN_MAX_CHARS = 2048


@dataclass(frozen=True)
class ArtifactRule:
    logical_id: str
    name: str
    bucket: str
    prefixes: tuple[str, ...]
    pattern: dict[str, Any]

    @property
    def description(self) -> str:
        shown = ", ".join(self.prefixes[:3]) + (", ..." if len(self.prefixes) > 3 else "")
        return f"S3 Object Created of a bundle in s3://{self.bucket} under {shown or 'any key'}"


def artifact_rule_name_prefix(stack_prefix: str) -> str:
    """Every artifact rule's name starts with this: one Lambda permission covers them all."""
    return f"{stack_prefix}-artifacts-"


def _wildcard_literal(text: str) -> str:
    # In an EventBridge wildcard pattern "*" matches anything and "\" escapes; a key's own "*" or
    # "\" must be escaped to match itself.
    return text.replace("\\", "\\\\").replace("*", "\\*")


def _key_filters(prefixes: Sequence[str]) -> list[dict[str, str]]:
    # A key filter's list is an OR, and one filter cannot hold both a prefix and a suffix: the
    # "wildcard" filter can ("releases/*.zip"; EventBridge user guide, "Content filtering in
    # Amazon EventBridge event patterns", wildcard matching).
    return [
        {"wildcard": f"{_wildcard_literal(prefix)}*{suffix}"}
        for prefix in prefixes
        for suffix in BUNDLE_SUFFIX_SPELLINGS
    ]


def _pattern(bucket: str, prefixes: Sequence[str]) -> dict[str, Any]:
    return {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": [bucket]}, "object": {"key": _key_filters(prefixes)}},
    }


def _pattern_chars(pattern: Mapping[str, Any]) -> int:
    return len(json.dumps(pattern, separators=(",", ":")))


def artifact_rules(stack_prefix: str, buckets: Mapping[str, Sequence[str]]) -> list[ArtifactRule]:
    """Rules for ``buckets`` (bucket -> the pipelines' key prefixes): one per bucket, or as many as
    keep each event pattern within EventBridge's 2,048 characters. A pipeline with the empty prefix
    takes the whole bucket."""
    rules: list[ArtifactRule] = []
    for bucket in sorted(buckets):
        prefixes = sorted(set(buckets[bucket]))
        if "" in prefixes:
            prefixes = [""]
        chunks: list[list[str]] = [[]]
        for prefix in prefixes:
            if (
                chunks[-1]
                and _pattern_chars(_pattern(bucket, [*chunks[-1], prefix])) > EVENT_PATTERN_MAX_CHARS
            ):
                chunks.append([])
            chunks[-1].append(prefix)
            if _pattern_chars(_pattern(bucket, chunks[-1])) > EVENT_PATTERN_MAX_CHARS:
                raise ValueError(
                    f"s3://{bucket}/{prefix}: the prefix alone exceeds EventBridge's event pattern size"
                )
        # Named after the bucket (stable when other buckets come and go), within EventBridge's
        # 64 characters for a rule name.
        digest = hashlib.sha256(bucket.encode()).hexdigest()[:10]
        for number, chunk in enumerate(chunks, start=1):
            rules.append(
                ArtifactRule(
                    logical_id=f"ArtifactRule{digest.upper()}N{number}",
                    name=f"{artifact_rule_name_prefix(stack_prefix)}{digest}-{number}",
                    bucket=bucket,
                    prefixes=tuple(chunk),
                    pattern=_pattern(bucket, chunk),
                )
            )
    return rules


def pipeline_buckets(pipelines: Any) -> dict[str, list[str]]:
    buckets: dict[str, list[str]] = {}
    for pipeline in pipelines.pipelines:
        buckets.setdefault(pipeline.bucket, []).append(pipeline.prefix)
    return buckets
