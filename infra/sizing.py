"""Timeout, memory and concurrency of each function, and the visibility timeout of the queues they
consume, from each function's worst case. infra/render.py writes them into the merge template
(Chalice's config.json cannot carry the reasoning next to the numbers).

Worst cases are counted in two kinds of wait:

* an AWS call in the same region: ``AWS_CALL_S``. Such calls answer in tens of milliseconds; 3 s
  covers one standard-mode retry after throttling (chalicelib/bootstrap.py: standard retries,
  3 attempts). A call hanging to the SDK's 20 s read timeout three times over is an AWS incident,
  not a case to size for: the invocation then times out, the event or batch is redelivered, and
  every handler is idempotent, so a timeout costs a delay, never a second deployment.
* an outside party (Slack, a webhook): its client's own timeout and retries, read from the
  adapter, because these do wait that long when the party is slow.

AWS's rules these numbers follow (Lambda developer guide, "Using Lambda with Amazon SQS"): the
source queue's visibility timeout must be at least the function's timeout, and AWS recommends six
times it, so a batch throttled or retried by the poller is not redelivered while still running.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

# Lambda's largest timeout (15 minutes) and SQS's largest visibility timeout (12 hours, botocore
# sqs model, SetQueueAttributes VisibilityTimeout: "from 0 to 43,200 seconds").
LAMBDA_MAX_TIMEOUT_S = 900
SQS_MAX_VISIBILITY_S = 43_200
VISIBILITY_FACTOR = 6
# API Gateway's REST integration timeout: after 29 s the caller has its 504 already.
API_GATEWAY_INTEGRATION_S = 29

AWS_CALL_S = 3.0
# AWS calls one unit of work (an event, a queue message) makes at most: DESIGN.md section 8's
# budget for a whole failed release, its automatic rollback and the rollback's success (22 calls
# over DynamoDB, CodeDeploy, ELBv2 and SQS, measured by bench/api_calls.py). One event does a part
# of that; the whole is the bound.
AWS_CALLS_PER_EVENT = 22
# A notify message besides Slack: claim, release read, history, the token, storing the thread
# (read and write), confirm; rounded up.
AWS_CALLS_PER_NOTIFICATION = 8
# A stream batch's messages go to the notify queue ten to a SendMessageBatch call: at most one
# call per record (a record has one message per route), the bound used here.
AWS_CALLS_PER_STREAM_RECORD = 1
# The schedule's period (app.py: Rate(5 minutes)).
RECONCILE_PERIOD_S = 300


def slack_call_worst_s() -> float:
    """One Slack Web API call at its worst (chalicelib/adapters/slack.py): an attempt answered with a
    short 429 after the full timeout, the inline wait (slack_sdk's ``RateLimitErrorRetryHandler``
    sleeps ``Retry-After`` plus up to 1 s of random jitter), then the call again with slack_sdk's
    server error retries, every attempt taking the full timeout, with the backoff between them (the
    backoff calculator's ``factor x 2^attempt`` plus up to 1 s of random jitter)."""
    from chalicelib.adapters import slack

    (handler,) = slack._server_error_retries()
    attempts = 1 + handler.max_retry_count
    backoff = sum(
        handler.interval_calculator.backoff_factor * 2**attempt + 1.0 for attempt in range(attempts - 1)
    )
    one_call = attempts * slack.TIMEOUT_S + backoff
    return float(slack.TIMEOUT_S + slack.INLINE_RETRY_AFTER_S + 1.0 + one_call)


# Slack calls one notification makes at most: edit the root card and reply in its thread, or post
# the root card and, for a failure, the reply with the details (chalicelib/service/notifications.py).
SLACK_CALLS_PER_NOTIFICATION = 2


# Slack calls one button click makes at most: the members of the user groups the pipeline names
# (two, say: operators and approvers rarely name more) and the answer to the user.
SLACK_CALLS_PER_ACTION = 3


def slack_action_call_worst_s() -> float:
    """One Slack call of the actions worker at its worst (chalicelib/adapters/slack_interactions.py):
    slack_sdk's default connection-error retry makes it two attempts of the full timeout."""
    from chalicelib.adapters import slack_interactions

    return float(2 * slack_interactions.TIMEOUT_S)


@dataclass(frozen=True)
class Sizing:
    """What one function gets; ``worst_case_s`` is what its timeout was sized from."""

    worst_case_s: float
    timeout_s: int
    memory_mb: int
    reason: str
    # None: no reservation (see RESERVED_CONCURRENCY's note for each function).
    reserved_concurrency: int | None = None
    # SQS consumers: at most this many concurrent batches (the event source mapping's
    # ScalingConfig), instead of reserved concurrency (see below).
    maximum_concurrency: int | None = None

    @property
    def visibility_timeout_s(self) -> int:
        return min(SQS_MAX_VISIBILITY_S, VISIBILITY_FACTOR * self.timeout_s)


def _timeout(worst_case_s: float) -> int:
    return min(LAMBDA_MAX_TIMEOUT_S, math.ceil(worst_case_s))


def _batch_worst_s(batch_size: int, per_unit_s: float) -> float:
    return batch_size * per_unit_s


def notification_worst_s() -> float:
    return SLACK_CALLS_PER_NOTIFICATION * slack_call_worst_s() + AWS_CALLS_PER_NOTIFICATION * AWS_CALL_S


# Memory, from bench/memory.py (cold-start CPU: import app, build the clients, the first event),
# measured 2026-12-01 on this project's 2-core build machine: 0.65 to 0.72 CPU seconds for every
# function (import 0.21 s, clients 0.43-0.49 s, first event under 0.08 s). Lambda gives CPU in
# proportion to memory, one vCPU at 1,769 MB, so the same cold start takes about 10 s at 128 MB,
# 5 s at 256, 2.5 s at 512, 1.25 s at 1,024 and 0.72 s at 1,769. CPU-bound time costs the same
# GB-seconds at any size below one vCPU (half the memory, twice the time); what a larger size
# makes dearer is waiting (on Slack, on AWS). So: the API, where a person waits, gets a whole
# vCPU; the functions on a release's path get 1,024 MB (a 1.25 s cold start); the background
# functions, which mostly wait on other services, get 512 MB (2.5 s, once per instance).
API_MEMORY_MB = 1769
RELEASE_PATH_MEMORY_MB = 1024
BACKGROUND_MEMORY_MB = 512


def function_sizing(batch_sizes: Mapping[str, int]) -> dict[str, Sizing]:
    """Per Chalice function name; ``batch_sizes`` are the event sources' batch sizes in app.py."""
    event_s = AWS_CALLS_PER_EVENT * AWS_CALL_S
    verify_batch = batch_sizes["on_verify_message"]
    notify_batch = batch_sizes["on_notify_message"]
    stream_batch = batch_sizes["on_release_stream"]
    action_batch = batch_sizes["on_slack_action"]
    action_worst = _batch_worst_s(
        action_batch, event_s + SLACK_CALLS_PER_ACTION * slack_action_call_worst_s()
    )
    notify_worst = _batch_worst_s(notify_batch, notification_worst_s())
    return {
        # One EventBridge event per invocation.
        "on_artifact_event": Sizing(
            event_s,
            _timeout(event_s),
            RELEASE_PATH_MEMORY_MB,
            f"one upload: at most {AWS_CALLS_PER_EVENT} AWS calls x {AWS_CALL_S:g} s",
            # A CI burst (1,000 uploads at once) must not take the account's whole concurrency:
            # ten at a time is far above what one table slot per pipeline can use, and throttled
            # asynchronous events wait in Lambda's queue (retried up to 6 hours) and then the
            # EventBridge target's retry policy and failure queue: delayed, never lost.
            reserved_concurrency=10,
        ),
        "on_codedeploy_event": Sizing(
            event_s,
            _timeout(event_s),
            RELEASE_PATH_MEMORY_MB,
            f"one state change (a failure reads diagnostics, starts the rollback): "
            f"{AWS_CALLS_PER_EVENT} calls x {AWS_CALL_S:g} s",
            # No reservation: CodeDeploy emits a handful of events per deployment, bounded by the
            # deployments themselves; a reservation would only take capacity from the account.
        ),
        "on_verify_message": Sizing(
            _batch_worst_s(verify_batch, event_s),
            _timeout(_batch_worst_s(verify_batch, event_s)),
            RELEASE_PATH_MEMORY_MB,
            f"batch of {verify_batch} checks; one that ends a release starts the next or the rollback: "
            f"{AWS_CALLS_PER_EVENT} calls x {AWS_CALL_S:g} s each",
            # SQS consumers take maximum concurrency on the event source, not reserved
            # concurrency: a reservation throttles the poller's invocations, and each throttled
            # batch returns to the queue counting a receive towards maxReceiveCount (Lambda
            # developer guide, "Configuring maximum concurrency for Amazon SQS event sources").
            maximum_concurrency=10,
        ),
        "on_notify_message": Sizing(
            notify_worst,
            _timeout(notify_worst),
            BACKGROUND_MEMORY_MB,
            # 10 x (2 x 45.5 s + 8 x 3 s) = 1,150 s does not fit in Lambda's 900 s: the batch
            # gets the maximum, and a batch that runs out of time is redelivered; what it did
            # deliver is in the delivery log and is dropped as a duplicate. A batch size of 5
            # would fit (575 s).
            f"batch of {notify_batch}: {SLACK_CALLS_PER_NOTIFICATION} Slack calls at their worst "
            f"({slack_call_worst_s():g} s) + {AWS_CALLS_PER_NOTIFICATION} AWS calls each; capped at "
            f"Lambda's {LAMBDA_MAX_TIMEOUT_S} s",
            # Slack allows about one message per second per channel: more parallel batches would
            # only collect 429s. The FIFO queue already keeps one batch per message group.
            maximum_concurrency=5,
        ),
        "on_slack_action": Sizing(
            action_worst,
            _timeout(action_worst),
            RELEASE_PATH_MEMORY_MB,
            f"batch of {action_batch} click(s): the use case ({AWS_CALLS_PER_EVENT} calls x "
            f"{AWS_CALL_S:g} s) and {SLACK_CALLS_PER_ACTION} Slack calls "
            f"at {slack_action_call_worst_s():g} s",
            # A person waits for each answer: a few clicks at once at most, each its own batch.
            maximum_concurrency=5,
        ),
        "on_release_stream": Sizing(
            _batch_worst_s(stream_batch, AWS_CALLS_PER_STREAM_RECORD * AWS_CALL_S),
            _timeout(_batch_worst_s(stream_batch, AWS_CALLS_PER_STREAM_RECORD * AWS_CALL_S)),
            BACKGROUND_MEMORY_MB,
            f"batch of {stream_batch} records, at most one SendMessageBatch each",
            # No reservation: Lambda reads each shard with one invocation at a time, so the
            # table's few shards bound it already.
        ),
        "reconcile": Sizing(
            RECONCILE_PERIOD_S,
            _timeout(RECONCILE_PERIOD_S),
            BACKGROUND_MEMORY_MB,
            # Its work grows with the pipelines (about 3 calls each: 300 at 100 pipelines, some
            # 10 s at usual latency); a run cut short leaves the rest to the next one, each
            # pipeline's repair being independent and idempotent.
            "one schedule period: a run ends before the next is due",
            # Exactly one run at a time: two would race over the same releases (safely, but for
            # nothing), and the reservation guarantees it a slot when the account is busy.
            reserved_concurrency=1,
        ),
        "api_handler": Sizing(
            API_GATEWAY_INTEGRATION_S,
            API_GATEWAY_INTEGRATION_S,
            API_MEMORY_MB,
            # A request makes a few calls (a deploy: about 8, 24 s at the AWS-call budget).
            "API Gateway answers 504 after 29 s: running longer helps no caller",
            # Guaranteed capacity: during an account-wide burst an operator can still cancel or
            # roll back; five concurrent requests are plenty for a CLI and a dashboard.
            reserved_concurrency=5,
        ),
    }
