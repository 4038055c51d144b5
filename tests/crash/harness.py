"""Runs a scenario against the real handlers as AWS would, and kills a handler at a chosen call.

AWS, as the stage's template configures it (``world.AwsBehaviour``):

- EventBridge invokes ``on_artifact_event`` (S3 "Object Created", read from moto's own rule and
  queue) and ``on_codedeploy_event`` asynchronously, and the schedule invokes ``reconcile``; a
  failed invocation is retried by Lambda's asynchronous invoke, 60 s and then 120 s later.
- ``on_verify_message`` and ``on_notify_message`` take batches of up to 10 from moto's SQS with
  the queue's own visibility timeout; what the function did not finish (a crash, an error, a
  reported item failure) comes back when its visibility runs out, and moves to the dead-letter
  queue after ``maxReceiveCount`` receives (moto's redrive).
- ``on_release_stream`` takes the table's stream records in order, 100 at a time; a failed batch
  is retried from the first record not done, up to the template's retry limit.
- The HTTP API is called as API Gateway calls the function after IAM authentication (the
  operator's ARN in the request context); when the call dies, the CLI repeats the request with
  the same ``Idempotency-Key``.
- Slack: a button pressed on a release card is the look-alike's signed ``block_actions`` request
  (``sandbox/slack_api.py``, signed at the run's time) handed to ``POST /slack/interactions`` as
  API Gateway hands it over (no IAM); when the route dies, Slack tells the user it failed and they
  click again: a new request. ``on_slack_action`` takes the actions queue like the other queues,
  and answers the user at the click's ``response_url`` on the look-alike.
- CloudWatch: an alarm changes state when the scenario says (``set_alarm``).
- CodeDeploy: moto's deployments, moved by ``CodeDeployDriver`` through ``sandbox.moto_extensions``
  (start, finish, stop on request) with the state-change events AWS sends.

A handler "dies" by ``Crash``, a ``BaseException``, raised from a botocore ``before-call`` hook
(every AWS client the app creates) or from slack_sdk's ``api_call`` and ``WebhookClient.send`` (a
click's answer, ``slack.webhook``): no ``except Exception``
cleanup runs, every later call of that invocation dies too (the process is gone), and the
container's cached clients and wiring are dropped (``bootstrap.reset()``).
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import botocore.handlers
from moto.backends import get_backend
from moto.core.models import DEFAULT_ACCOUNT_ID
from slack_sdk import WebClient

import app as chalice_app
from chalicelib import bootstrap
from chalicelib.adapters.dynamodb_store import DynamoReleaseStore
from chalicelib.domain.pipelines import Pipeline
from chalicelib.domain.release import Revision, upload_release_id
from chalicelib.domain.slack_interactions import SlackAction, actions_block, actions_for
from sandbox import moto_extensions
from sandbox.event_pump import lambda_sqs_record, lambda_stream_record
from sandbox.slack_api import SignedRequest
from tests.crash.clock import SimulatedClock
from tests.crash.world import (
    BUCKET,
    OPERATOR_ARN,
    REGION,
    SLACK_BOT_TOKEN,
    SLACK_CHANNEL,
    STAGE,
    TABLE,
    World,
)
from tests.integration.conftest import codedeploy_event

# A run that has not settled after this long (simulated) is stuck; the invariants say how.
HORIZON_S = 4 * 3600
# EventBridge hands an event to its target about this long after it happened.
EVENTBRIDGE_LATENCY_S = 0.5
# Lambda's stream poller retries a failed batch about this soon.
STREAM_RETRY_S = 1.0
# How long CodeDeploy takes to start and to finish an in-place HalfAtATime deployment of two
# instances, and to carry out a stop request.
DEPLOYMENT_START_S = 2.0
DEPLOYMENT_S = 70.0
STOP_S = 5.0
# Reconciles in a row that find nothing to do before a run that has open releases is called
# stuck: one after the claim lease (3 minutes, chalicelib.domain.leases) has run out.
QUIET_RECONCILES = 2
_SQS_BATCH = 10
_STREAM_BATCH = 100


# Calls that change nothing: a process that dies right after one leaves AWS and Slack exactly as
# it would have left them dying just before it.
_READ_PREFIXES = ("Get", "List", "Describe", "BatchGet", "Head")
_READ_OPERATIONS = frozenset({"Query", "Scan", "TransactGetItems"})
_SLACK_READS = ("conversations.", "auth.", "usergroups.")


def is_read(call: str) -> bool:
    service, _, operation = call.partition(".")
    if service == "slack":
        return operation.startswith(_SLACK_READS)
    if service == "github":
        return operation.startswith("GET ")
    return operation.startswith(_READ_PREFIXES) or operation in _READ_OPERATIONS


# A deployment id in a GitHub call's path, which the point's name leaves out.
_GITHUB_ID = re.compile(r"\d+")


class Crash(BaseException):
    """The Lambda's process died here (timeout, out of memory, a killed container)."""


# --- counting and killing calls ---------------------------------------------------------------


@dataclass
class Invocation:
    number: int  # 1-based, in the order the run made them
    function: str
    occurrence: int  # 1-based among this function's invocations
    what: str
    calls: list[str] = field(default_factory=list)  # "dynamodb.TransactWriteItems", "slack.chat.postMessage"
    outcome: str = "ok"  # ok | error | crashed
    # For a crashed invocation: the call it died before (None: after its last call).
    crashed_before: str | None = None


@dataclass(frozen=True)
class CrashPoint:
    invocation: int
    before_call: int | None  # 1-based; None: after the invocation's last call


class Meter:
    """Counts each invocation's calls and kills it at its crash point."""

    def __init__(self) -> None:
        self.current: Invocation | None = None
        self.plan: dict[int, int | None] = {}
        self.dead = False

    def call(self, name: str) -> None:
        invocation = self.current
        if invocation is None:  # the sweep's own calls (set-up, polling, inspection)
            return
        if self.dead:
            raise Crash(f"{name} after the process died")
        about_to_make = len(invocation.calls) + 1
        if invocation.number in self.plan and self.plan[invocation.number] == about_to_make:
            self.dead = True
            invocation.crashed_before = name
            raise Crash(f"killed before {name}")
        invocation.calls.append(name)


METER = Meter()


def _before_aws_call(model: Any, **_: Any) -> None:
    METER.call(f"{model.service_model.service_name}.{model.name}")


_AWS_HOOK = ("before-call", _before_aws_call)


def install_meter() -> Callable[[], None]:
    """Hook every botocore session created from now on (the app's, after each
    ``bootstrap.reset()``), slack_sdk's Web API client and its webhook client (a click's
    ``response_url``), and the GitHub adapter's calls. Returns the uninstaller."""
    from slack_sdk.web.base_client import BaseClient
    from slack_sdk.webhook import WebhookClient

    from chalicelib.adapters.github import GithubRestApi

    original_api_call = BaseClient.api_call
    original_send = WebhookClient.send
    original_github_call = GithubRestApi._call_once

    def github_call(self: Any, repository: Any, method: str, path: str, body: Any) -> Any:
        # "github.POST deployments", "github.POST deployments/<id>/statuses": a point's name
        # must not depend on the id the look-alike handed out.
        METER.call(f"github.{method} {_GITHUB_ID.sub('<id>', path.partition('?')[0])}")
        return original_github_call(self, repository, method, path, body)

    def api_call(self: Any, api_method: str, *args: Any, **kwargs: Any) -> Any:
        METER.call(f"slack.{api_method}")
        return original_api_call(self, api_method, *args, **kwargs)

    def send(self: Any, *args: Any, **kwargs: Any) -> Any:
        METER.call("slack.webhook")
        return original_send(self, *args, **kwargs)

    botocore.handlers.BUILTIN_HANDLERS.append(_AWS_HOOK)
    BaseClient.api_call = api_call  # type: ignore[method-assign]
    WebhookClient.send = send  # type: ignore[method-assign]
    GithubRestApi._call_once = github_call  # type: ignore[method-assign]

    def uninstall() -> None:
        botocore.handlers.BUILTIN_HANDLERS.remove(_AWS_HOOK)
        BaseClient.api_call = original_api_call  # type: ignore[method-assign]
        WebhookClient.send = original_send  # type: ignore[method-assign]
        GithubRestApi._call_once = original_github_call  # type: ignore[method-assign]

    return uninstall


# --- what the network does to events in the randomized pass -----------------------------------


@dataclass(frozen=True)
class Chaos:
    """Duplicated, delayed and lost deliveries. Lost: CodeDeploy's events only (best effort);
    S3's, the queues' and the stream's are at least once."""

    rng: random.Random
    duplicate: float = 0.0
    delay: float = 0.0
    lose: float = 0.0
    max_delay_s: float = 90.0

    def deliveries(self, losable: bool) -> list[float]:
        """Extra seconds before each delivery of one event (none when it is lost)."""
        if losable and self.rng.random() < self.lose:
            return []
        copies = 2 if self.rng.random() < self.duplicate else 1
        return [
            self.rng.uniform(0, self.max_delay_s) if self.rng.random() < self.delay else 0.0
            for _ in range(copies)
        ]


NO_CHAOS: Chaos | None = None


# --- the scenario's ground truth -------------------------------------------------------------


@dataclass(frozen=True)
class Uploaded:
    key: str
    pipeline: str
    at_s: float
    good: bool  # CodeDeploy succeeds and the targets are healthy
    release_id: str
    revision: Revision


@dataclass
class ApiAnswer:
    what: str
    status: int
    message: str
    at_s: float


@dataclass(frozen=True)
class Decision:
    """What someone decided on an upload's approval, and who the history must name for it."""

    verdict: str  # "approved" | "rejected"
    actor: str


@dataclass(frozen=True)
class PipelineRollback:
    """An operator's ``relco rollback PIPELINE --to`` from one upload's release to another's."""

    what: str  # the request's label in ``Run.answers``
    pipeline: str
    from_key: str  # the upload whose release is the pipeline's current one, rolled back
    to_key: str  # the upload whose release (verified) it goes back to


@dataclass(frozen=True)
class CardClick:
    """A button pressed on a release card and sent to the interactions route."""

    what: str
    action: SlackAction
    key: str  # the upload whose release's card it was
    actor: str  # who the history must name: slack:<id> (<handle>)
    response_url: str
    at_s: float
    # The route queued it (it got as far as sending it, whether or not it lived to answer):
    # the worker must carry it out once and answer the user.
    queued: bool


@dataclass
class Violation:
    kind: str
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.message}"


# --- the run ----------------------------------------------------------------------------------


@dataclass(order=True)
class _Entry:
    at_s: float
    seq: int
    what: str = field(compare=False)
    action: Callable[[], None] = field(compare=False)
    recurring: bool = field(default=False, compare=False)


class Run:
    """One run of a scenario from the provisioned state."""

    def __init__(
        self,
        world: World,
        clock: SimulatedClock,
        *,
        crash_points: tuple[CrashPoint, ...] = (),
        chaos: Chaos | None = None,
    ) -> None:
        self.world = world
        self.clock = clock
        self.chaos = chaos
        self.crash_points = crash_points
        self.invocations: list[Invocation] = []
        self.uploads: list[Uploaded] = []
        self.answers: list[ApiAnswer] = []
        self.violations: list[Violation] = []
        self.outcomes: dict[str, str] = {}  # revision key -> CodeDeploy status it ends with
        # upload key -> what an operator decided on its approval, and who
        self.decisions: dict[str, Decision] = {}
        # every press of a button on a release card, in order
        self.clicks: list[CardClick] = []
        # upload keys an operator deployed again with break-glass
        self.broken_glass: list[str] = []
        # (when, alarm, state) of every change the scenario made to a CloudWatch alarm
        self.alarm_changes: list[tuple[float, str, str]] = []
        # every pipeline rollback an operator asked for (what the API answered: ``answers``)
        self.rollbacks: list[PipelineRollback] = []
        self._agenda: list[_Entry] = []
        self._seq = 0
        self._occurrences: dict[str, int] = {}
        self._stream_due_s: float | None = None
        self._stream_failures = 0
        # queue -> (when a receive found nothing due, how many messages it held then)
        self._empty_poll_s: dict[str, tuple[float, int]] = {}
        self.driver = CodeDeployDriver(self)
        self._scenario_steps = 0
        # The run does not settle before this (a time-driven move falls due then: ``wait_until``).
        self._due_s = 0.0
        # Called with each invocation's number just before it starts (the sweep forks there).
        self.before_invocation: Callable[[int], None] | None = None

    # scheduling

    def at(self, at_s: float, what: str, action: Callable[[], None], *, recurring: bool = False) -> None:
        self._seq += 1
        heapq.heappush(self._agenda, _Entry(at_s, self._seq, what, action, recurring))

    def wait_until(self, at_s: float) -> None:
        """A move falls due at ``at_s`` with nothing to announce it (a freeze ends, an approval
        expires): quiet reconciles before then do not end the run."""
        self._due_s = max(self._due_s, at_s)

    def step(self, at_s: float, what: str, action: Callable[[], None]) -> None:
        """A step of the scenario (an upload, an operator's request)."""
        self._scenario_steps += 1

        def run_step() -> None:
            self._scenario_steps -= 1
            action()

        self.at(at_s, what, run_step)

    @property
    def now_s(self) -> float:
        return self.clock.seconds

    # invoking handlers

    def invoke(self, function: str, what: str, call: Callable[[], Any]) -> tuple[bool, Any]:
        """Run one handler invocation; True when it finished (returned or raised an ordinary
        error counts as not finished: Lambda retries both)."""
        if self.before_invocation is not None:
            self.before_invocation(len(self.invocations) + 1)
        self._occurrences[function] = self._occurrences.get(function, 0) + 1
        invocation = Invocation(len(self.invocations) + 1, function, self._occurrences[function], what)
        self.invocations.append(invocation)
        METER.current = invocation
        METER.dead = False
        result: Any = None
        try:
            result = call()
            if METER.plan.get(invocation.number, 0) is None:
                # Killed after its last call: the work is done but Lambda never hears so.
                invocation.crashed_before = None
                raise Crash("killed after the last call")
        except Crash:
            invocation.outcome = "crashed"
            bootstrap.reset()
        except Exception as error:
            invocation.outcome = f"error: {type(error).__name__}: {str(error)[:200]}"
        finally:
            METER.current = None
            METER.dead = False
        return invocation.outcome == "ok", result

    def invoke_async(self, function: str, what: str, event: dict[str, Any], attempt: int = 1) -> None:
        # Only what the template invokes asynchronously gets Lambda's asynchronous retries.
        assert function in self.world.behaviour.asynchronous, function
        handler = getattr(chalice_app, function)
        done, _ = self.invoke(function, what, lambda: handler(json.loads(json.dumps(event)), None))
        delays = self.world.behaviour.async_retry_delays_s
        if not done and attempt <= len(delays):
            self.at(
                self.now_s + delays[attempt - 1],
                f"{what} (retry {attempt})",
                lambda: self.invoke_async(function, what, event, attempt + 1),
            )

    def eventbridge(self, function: str, what: str, event: dict[str, Any], *, losable: bool) -> None:
        """An event on its way to an asynchronously invoked function."""
        delays = self.chaos.deliveries(losable) if self.chaos else [0.0]
        for number, extra in enumerate(delays):
            label = what if number == 0 else f"{what} (duplicate)"
            self.at(
                self.now_s + EVENTBRIDGE_LATENCY_S + extra,
                label,
                functools.partial(self.invoke_async, function, label, event),
            )

    # scenario steps

    def upload(self, at_s: float, key: str, pipeline: str, *, good: bool = True) -> None:
        def put() -> None:
            # The commit CI builds from, as relco bundle push attaches it (GitHub deployments).
            commit = hashlib.sha1(key.encode()).hexdigest()
            response = self.world.s3.put_object(
                Bucket=BUCKET, Key=key, Body=f"bundle {key}".encode(), Metadata={"commit": commit}
            )
            revision = Revision(BUCKET, key, response["VersionId"], response["ETag"].strip('"'))
            self.uploads.append(
                Uploaded(key, pipeline, self.now_s, good, upload_release_id(revision), revision)
            )
            for event in self._drain(self.world.queues.artifact_events_url):
                self.eventbridge("on_artifact_event", f"upload {key}", event, losable=False)

        self.outcomes[key] = "Succeeded" if good else "Failed"
        self.step(at_s, f"upload {key}", put)

    def _drain(self, queue_url: str) -> list[dict[str, Any]]:
        messages = self.world.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
            "Messages", []
        )
        for message in messages:
            self.world.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return [json.loads(message["Body"]) for message in messages]

    def release_id(self, key: str) -> str:
        return next(upload.release_id for upload in self.uploads if upload.key == key)

    def cancel(self, at_s: float, key: str) -> None:
        """An operator cancels the release of upload ``key`` with ``relco cancel``."""
        self._operator_request(
            at_s, "cancel", key, "/releases/{release_id}/cancel", lambda: (self._release_of(key), {})
        )

    def approve(self, at_s: float, key: str) -> None:
        """An operator the approval pipeline names approves the release of upload ``key``."""
        self.decisions[key] = Decision("approved", OPERATOR_ARN)
        self._operator_request(
            at_s,
            "approve",
            key,
            "/releases/{release_id}/approve",
            lambda: (self._release_of(key), {"comment": "looks good"}),
        )

    def reject(self, at_s: float, key: str) -> None:
        """An operator the approval pipeline names rejects the release of upload ``key``."""
        self.decisions[key] = Decision("rejected", OPERATOR_ARN)
        self._operator_request(
            at_s,
            "reject",
            key,
            "/releases/{release_id}/reject",
            lambda: (self._release_of(key), {"comment": "not this one"}),
        )

    def promote(self, at_s: float, pipeline: str, key: str) -> None:
        """An operator promotes upload ``key``'s release into ``pipeline`` now, without waiting
        for the soak (``relco promote PIPELINE --release ID``)."""
        self._operator_request(
            at_s,
            "promote",
            key,
            "/pipelines/{name}/promote",
            lambda: ({"name": pipeline}, {"release": self.release_id(key)}),
        )

    def roll_back(self, at_s: float, pipeline: str, from_key: str, to_key: str) -> None:
        """An operator rolls ``pipeline`` back from upload ``from_key``'s release to upload
        ``to_key``'s with ``relco rollback PIPELINE --to``."""
        what = f"rollback {from_key}"
        self.rollbacks.append(PipelineRollback(what, pipeline, from_key, to_key))
        self._operator_request(
            at_s,
            "rollback",
            from_key,
            "/pipelines/{name}/rollback",
            lambda: ({"name": pipeline}, {"to": self.release_id(to_key)}),
        )

    def break_glass(self, at_s: float, key: str, pipeline: str) -> None:
        """An operator deploys the uploaded object ``key`` with ``relco deploy --break-glass``."""
        self.broken_glass.append(key)
        body = {"pipeline": pipeline, "key": key, "break_glass": "hotfix during the freeze"}
        self._operator_request(at_s, "break-glass", key, "/releases", lambda: (None, body))

    def _release_of(self, key: str) -> dict[str, str]:
        """The path parameters naming upload ``key``'s release."""
        return {"release_id": self.release_id(key)}

    def approve_from_card(self, at_s: float, key: str, user: tuple[str, str]) -> None:
        """The Slack user ``user`` (id, handle) presses Approve on the card of upload ``key``'s
        release; the history must name them as ``slack:<id> (<handle>)``."""
        self.decisions[key] = Decision("approved", _slack_actor(user))
        self._click(at_s, SlackAction.APPROVE, key, user)

    def redeploy_from_card(self, at_s: float, key: str, user: tuple[str, str]) -> None:
        """The Slack user ``user``, an operator of the pipeline, presses Redeploy on the card of
        upload ``key``'s release once it has ended."""
        self._click(at_s, SlackAction.REDEPLOY, key, user)

    def _click(self, at_s: float, action: SlackAction, key: str, user: tuple[str, str]) -> None:
        """The release's card is shown (once its release offers ``action``) and ``user`` presses
        the button: a signed request to the interactions route; when the route dies the user
        presses the same button again, a second later."""
        user_id, handle = user
        what = f"slack {action.value} {key}"
        card_ts: list[str] = []

        def press() -> None:
            signed_at = int(self.clock.now().timestamp())
            request = self.world.slack_messages.press(
                SLACK_CHANNEL, card_ts[0], action.value, user_id, handle, timestamp=signed_at
            )
            event = slack_interaction_event(request)
            done, response = self.invoke("api_handler", what, lambda: chalice_app.app(event, None))
            queued = "sqs.SendMessage" in self.invocations[-1].calls
            response_url = request.payload["response_url"]
            self.clicks.append(
                CardClick(what, action, key, _slack_actor(user), response_url, self.now_s, queued)
            )
            if not done:
                # API Gateway answers Slack 502, Slack tells the user, the user clicks again.
                self.at(self.now_s + 1, f"{what} (clicked again)", press)
                return
            status, body = int(response["statusCode"]), str(response.get("body") or "")
            self.answers.append(ApiAnswer(what, status, body, self.now_s))
            if status != 200:
                self.violations.append(
                    Violation("slack_click_refused", f"{what}: the route answered {status}: {body[:200]}")
                )

        def show_card() -> None:
            store = DynamoReleaseStore(self.world.dynamodb, TABLE)
            release = next((store.get_release(u.release_id) for u in self.uploads if u.key == key), None)
            if release is None or action not in actions_for(release.state):
                # Its release is not there yet (the upload's event is being retried), or not yet
                # in a state whose card offers the button: look again.
                self.at(self.now_s + 10, f"{what} (card not yet offered)", show_card)
                return
            block = actions_block(release)
            assert block is not None  # it offers the action
            slack = WebClient(token=SLACK_BOT_TOKEN, base_url=self.world.slack_messages.api_url)
            posted = slack.chat_postMessage(channel=SLACK_CHANNEL, text=release.id, blocks=[block])
            card_ts.append(str(posted["ts"]))
            press()

        self.step(at_s, what, show_card)

    def set_alarm(self, at_s: float, name: str, state: str) -> None:
        """CloudWatch moves an alarm to ``state`` (the sweep's own call: no handler runs)."""

        def change() -> None:
            self.world.cloudwatch.set_alarm_state(
                AlarmName=name, StateValue=state, StateReason=f"set to {state}"
            )
            self.alarm_changes.append((self.now_s, name, state))

        self.step(at_s, f"alarm {name} {state}", change)

    def _operator_request(
        self,
        at_s: float,
        verb: str,
        key: str,
        route: str,
        parameters_and_body: Callable[[], tuple[dict[str, str] | None, dict[str, Any]]],
    ) -> None:
        """A signed POST about upload ``key`` to ``route`` through API Gateway to the API
        function, with an Idempotency-Key; the CLI repeats it as it would (a 502 for a function
        that died, a 409 while the key is held). Its path parameters and body are made when it is
        sent: the release ids they name are known once the uploads' events have run."""
        idempotency_key = f"{verb}-{key}"
        what = f"{verb} {key}"

        def request(attempt: int = 1, first_refused_s: float | None = None) -> None:
            parameters, body = parameters_and_body()
            event = api_gateway_event(route, parameters, body, idempotency_key)
            done, response = self.invoke("api_handler", what, lambda: chalice_app.app(event, None))
            if not done:
                # API Gateway answers 502 for a function that died; the CLI repeats the request.
                self.at(self.now_s + 1, f"{what} (repeated)", lambda: request(attempt + 1, first_refused_s))
                return
            status = int(response["statusCode"])
            message = str(json.loads(response.get("body") or "{}").get("Message", ""))
            self.answers.append(ApiAnswer(what, status, message, self.now_s))
            if status == 409 and "still being answered" in message:
                first = first_refused_s if first_refused_s is not None else self.now_s
                if self.now_s - first >= API_RETRY_PATIENCE_S and not any(
                    v.kind == "api_retry_refused" for v in self.violations
                ):
                    self.violations.append(
                        Violation(
                            "api_retry_refused",
                            f"{what}: the same Idempotency-Key was still refused with 409 ({message!r}) "
                            f"{self.now_s - first:.0f}s after the request holding it died",
                        )
                    )
                backoff = min(30.0, 2.0 ** min(attempt, 5))
                self.at(self.now_s + backoff, f"{what} (repeated)", lambda: request(attempt + 1, first))
            elif status == 409 and "being started" in message:
                self.at(self.now_s + 5, f"{what} (repeated)", lambda: request(attempt + 1, None))
            elif status == 404:
                # The release it names is not there yet (its upload's event is being retried):
                # look again.
                self.at(self.now_s + 10, f"{what} (repeated)", lambda: request(attempt + 1, None))

        def first_request() -> None:
            if not any(upload.key == key for upload in self.uploads):
                raise AssertionError(f"scenario's {verb} names {key} before uploading it")
            request()

        self.step(at_s, what, first_request)

    # event sources polled like Lambda's

    def _queue(self, name: str) -> Any:
        return get_backend("sqs")[DEFAULT_ACCOUNT_ID][REGION].queues[name]

    def _queue_due_s(self, name: str) -> float | None:
        """When the next message of a queue can be received (None: the queue is empty)."""
        times = [
            max(message.visible_at, message.delayed_until) / 1000.0 - self._epoch_s
            for message in self._queue(name)._messages
        ]
        empty = self._empty_poll_s.get(name)
        if empty is not None and empty[1] == len(times):
            # Nothing new since a receive found the due ones held (a FIFO group in flight).
            times = [t for t in times if t > empty[0]]
        if not times:
            return None
        # moto compares "now > visible_at": receive a millisecond after.
        return float(max(min(times) + 0.001, self.now_s))

    @property
    def _epoch_s(self) -> float:
        return self.clock._unix_time(self.clock.now().replace(tzinfo=None)) - self.now_s

    def _poll_queue(self, function: str, settings_name: str, queue_url: str) -> None:
        queue = self._queue(settings_name)
        messages = self.world.sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=_SQS_BATCH, AttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            self._empty_poll_s[settings_name] = (self.now_s, len(queue._messages))
            return
        self._empty_poll_s.pop(settings_name, None)
        records = [lambda_sqs_record(message, queue.queue_arn, REGION) for message in messages]
        handler = getattr(chalice_app, function)
        # SQS's at-least-once delivery, in the randomized pass: a message handed over twice.
        redelivered = function in ("on_verify_message", "on_slack_action")
        copies = 2 if self.chaos and redelivered and self.chaos.deliveries(False)[1:] else 1
        finished: set[str] = set()
        for _ in range(copies):
            done, response = self.invoke(
                function, f"{len(records)} message(s)", lambda: handler({"Records": records}, None)
            )
            if done:
                failed = {item["itemIdentifier"] for item in (response or {}).get("batchItemFailures", [])}
                finished |= {record["messageId"] for record in records if record["messageId"] not in failed}
        entries = [
            {"Id": str(number), "ReceiptHandle": record["receiptHandle"]}
            for number, record in enumerate(records)
            if record["messageId"] in finished
        ]
        if entries:
            self.world.sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)

    def _stream_shard(self) -> Any:
        table = get_backend("dynamodb")[DEFAULT_ACCOUNT_ID][REGION].get_table(TABLE)
        return table.stream_shard

    def _stream_pending(self) -> bool:
        return bool(self._stream_shard().items)

    def _consume_stream(self, count: int) -> None:
        """The poller is the stream's only reader: what it is done with leaves the shard, as moto
        itself drops records a Lambda event source mapping took (``StreamShard.add``), with the
        sequence numbers kept increasing. (moto deep-copies the whole table, stream included,
        for every item of a transaction: a short shard keeps each transaction cheap.)"""
        shard = self._stream_shard()
        del shard.items[:count]
        shard.starting_sequence_number += count

    def _poll_stream(self) -> None:
        batch = self._stream_shard().items[:_STREAM_BATCH]
        stream_arn = f"arn:aws:dynamodb:{REGION}:{DEFAULT_ACCOUNT_ID}:table/{TABLE}/stream/crash"
        records = [lambda_stream_record(item.to_json(), stream_arn) for item in batch]
        copies = 2 if self.chaos and self.chaos.deliveries(False)[1:] else 1
        for _ in range(copies):
            done, response = self.invoke(
                "on_release_stream",
                f"{len(records)} stream record(s)",
                lambda: chalice_app.on_release_stream({"Records": records}, None),
            )
        if done:
            failed = [item["itemIdentifier"] for item in (response or {}).get("batchItemFailures", [])]
            numbers = [record["dynamodb"]["SequenceNumber"] for record in records]
            first_failed = min(
                (numbers.index(number) for number in failed if number in numbers), default=None
            )
            if first_failed is None:
                self._consume_stream(len(records))
                self._stream_failures = 0
                return
            self._consume_stream(first_failed)
        self._stream_failures += 1
        if self._stream_failures > self.world.behaviour.stream_max_retries:
            # The batch goes to the on-failure destination and the shard moves on.
            self._consume_stream(len(records))
            self._stream_failures = 0
            return
        self._stream_due_s = self.now_s + STREAM_RETRY_S

    # the loop

    def reconcile_every(self) -> None:
        every = self.world.behaviour.reconcile_every_s

        def tick() -> None:
            event = {
                "version": "0",
                "id": f"reconcile-{self.now_s:.0f}",
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "account": DEFAULT_ACCOUNT_ID,
                "time": self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                "region": REGION,
                "resources": [f"arn:aws:events:{REGION}:{DEFAULT_ACCOUNT_ID}:rule/reconcile"],
                "detail": {},
            }
            self.invoke_async("reconcile", "schedule", event)
            self.at(self.now_s + every, "reconcile", tick, recurring=True)

        self.at(every, "reconcile", tick, recurring=True)

    def _quiet(self) -> bool:
        return (
            self._scenario_steps == 0
            and all(entry.recurring for entry in self._agenda)
            and not self._stream_pending()
            and not self._queue(self.world.behaviour.verify_queue.name)._messages
            and not self._queue(self.world.behaviour.notify_queue.name)._messages
            and not self._queue(self.world.behaviour.slack_actions_queue.name)._messages
            and not self.driver.busy()
        )

    def execute(self) -> None:
        """Deliver everything in time order until the run settles: nothing left but the
        schedule, and one more reconcile changed nothing."""
        METER.plan = {point.invocation: point.before_call for point in self.crash_points}
        self.reconcile_every()
        behaviour = self.world.behaviour
        sources = (
            ("on_verify_message", behaviour.verify_queue.name, self.world.queues.verify_url),
            ("on_notify_message", behaviour.notify_queue.name, self.world.queues.notify_url),
            ("on_slack_action", behaviour.slack_actions_queue.name, self.world.queues.slack_actions_url),
        )
        quiet_reconciles = 0
        try:
            while True:
                candidates: list[tuple[float, int, Callable[[], None]]] = []
                if self._stream_pending():
                    due = self._stream_due_s if self._stream_due_s is not None else self.now_s
                    candidates.append((max(due, self.now_s), 0, self._stream_due_poll))
                for order, (function, name, url) in enumerate(sources, start=1):
                    due_s = self._queue_due_s(name)
                    if due_s is not None:
                        candidates.append(
                            (due_s, order, functools.partial(self._poll_queue, function, name, url))
                        )
                if self._agenda:
                    candidates.append((self._agenda[0].at_s, len(sources) + 1, self._pop_agenda))
                if not candidates:
                    break
                at_s, _, action = min(candidates, key=lambda candidate: (candidate[0], candidate[1]))
                if at_s > HORIZON_S:
                    break
                settling = (
                    action == self._pop_agenda
                    and self._agenda[0].recurring
                    and self._agenda[0].at_s >= self._due_s
                    and self._quiet()
                )
                self.clock.advance_to(at_s)
                action()
                self.driver.observe()
                if settling and self._quiet():
                    # Nothing is on its way and reconcile changed nothing: done when every
                    # release ended; else give the claim lease (3 minutes) one more reconcile.
                    quiet_reconciles += 1
                    if quiet_reconciles >= QUIET_RECONCILES or self._all_ended():
                        break
                elif not self._quiet():
                    quiet_reconciles = 0
        finally:
            METER.plan = {}

    def _all_ended(self) -> bool:
        """Every release ended, and no last good release is still soaking for a pipeline that
        promotes it (its promotion is a time-driven move, made by reconcile should its wake-up be
        lost)."""
        store = DynamoReleaseStore(self.world.dynamodb, TABLE)
        now = self.clock.now()

        def ended(pipeline: Pipeline) -> bool:
            slot = store.get_slot(pipeline.name)
            soaking = slot.last_good_at is not None and any(
                slot.last_good_at + soak > now for soak in pipeline.downstream_soaks
            )
            return (
                not store.open_releases(pipeline.name)
                and slot.active is None
                and not slot.waiting
                and not soaking
            )

        return all(ended(pipeline) for pipeline in self.world.pipelines.pipelines)

    def _stream_due_poll(self) -> None:
        self._stream_due_s = None
        self._poll_stream()

    def _pop_agenda(self) -> None:
        entry = heapq.heappop(self._agenda)
        entry.action()


API_RETRY_PATIENCE_S = 60.0


def _slack_actor(user: tuple[str, str]) -> str:
    """How the history names a Slack user (id, handle) who acted from a card."""
    user_id, handle = user
    return f"slack:{user_id} ({handle})"


def api_gateway_event(
    route: str, parameters: dict[str, str] | None, body: dict[str, Any], idempotency_key: str
) -> dict[str, Any]:
    """A POST as API Gateway hands it to the function after IAM authentication: the caller's
    verified ARN in ``requestContext.identity.userArn``."""
    headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}
    return _api_gateway_post(route, parameters, headers, json.dumps(body), {"userArn": OPERATOR_ARN})


def slack_interaction_event(request: SignedRequest) -> dict[str, Any]:
    """Slack's signed request to ``POST /slack/interactions``, the route without IAM auth: no
    caller ARN, the form body and Slack's signature headers as sent."""
    return _api_gateway_post("/slack/interactions", None, dict(request.headers), request.body.decode(), {})


def _api_gateway_post(
    route: str,
    parameters: dict[str, str] | None,
    headers: dict[str, str],
    body: str,
    caller: dict[str, str],
) -> dict[str, Any]:
    path = route.format(**(parameters or {}))
    return {
        "resource": route,
        "path": path,
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": parameters,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": route,
            "httpMethod": "POST",
            "path": f"/{STAGE}{path}",
            "stage": STAGE,
            "identity": {"accountId": DEFAULT_ACCOUNT_ID, "sourceIp": "203.0.113.9", **caller},
        },
        "body": body,
        "isBase64Encoded": False,
    }


class CodeDeployDriver:
    """Plays CodeDeploy: a new deployment starts, then ends as the scenario says (its revision's
    outcome), or ``Stopped`` soon after a StopDeployment; each change sends its state-change
    event. Also checks, after every step, that no group ever has two active deployments."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self._seen: set[str] = set()
        self._stopping: set[str] = set()
        self._pending: set[str] = set()
        # deployment group -> revision key of its last Succeeded deployment (what it serves)
        self.served: dict[str, str] = {}

    def busy(self) -> bool:
        return bool(self._pending)

    def _backend(self) -> Any:
        return moto_extensions.backend(REGION)

    def observe(self) -> None:
        active: dict[tuple[str, str], list[str]] = {}
        for deployment in list(self._backend().deployments.values()):
            deployment_id = deployment.deployment_id
            terminal = deployment.status in moto_extensions.TERMINAL_STATUSES
            if not terminal:
                active.setdefault((deployment.application_name, deployment.deployment_group_name), []).append(
                    deployment_id
                )
            if deployment_id not in self._seen:
                self._seen.add(deployment_id)
                self._pending.add(deployment_id)
                self.run.at(
                    self.run.now_s + DEPLOYMENT_START_S,
                    f"CodeDeploy starts {deployment_id}",
                    functools.partial(self._start, deployment_id),
                )
                self.run.at(
                    self.run.now_s + DEPLOYMENT_S,
                    f"CodeDeploy ends {deployment_id}",
                    functools.partial(self._finish, deployment_id),
                )
            if (
                not terminal
                and moto_extensions.stop_requested(deployment_id)
                and deployment_id not in self._stopping
            ):
                self._stopping.add(deployment_id)
                self.run.at(
                    self.run.now_s + STOP_S,
                    f"CodeDeploy stops {deployment_id}",
                    functools.partial(self._stop, deployment_id),
                )
        for (application, group), ids in active.items():
            if len(ids) > 1:
                self.run.violations.append(
                    Violation(
                        "concurrent_deployments",
                        f"{application}/{group} had {len(ids)} active deployments at "
                        f"{self.run.now_s:.0f}s: {ids}",
                    )
                )

    def _deployment(self, deployment_id: str) -> Any:
        return self._backend().deployments[deployment_id]

    def _emit(self, deployment_id: str, state: str) -> None:
        deployment = self._deployment(deployment_id)
        event = codedeploy_event(
            deployment_id, state, deployment.application_name, deployment.deployment_group_name
        )
        self.run.eventbridge(
            "on_codedeploy_event",
            f"CodeDeploy {state} ({deployment.deployment_group_name})",
            event,
            losable=True,
        )

    def _start(self, deployment_id: str) -> None:
        if moto_extensions.claim(deployment_id, REGION):
            self._emit(deployment_id, "START")

    def _finish(self, deployment_id: str) -> None:
        self._pending.discard(deployment_id)
        deployment = self._deployment(deployment_id)
        if deployment.status in moto_extensions.TERMINAL_STATUSES:
            return
        key = deployment.revision["s3Location"]["key"]
        status = self.run.outcomes.get(key, "Succeeded")
        group = self.run.world.load_balanced.get(_pipeline_of(self.run, deployment.deployment_group_name))
        instances = group.instance_ids if group else ()
        if status == "Succeeded":
            moto_extensions.set_instance_targets(
                deployment_id, {i: {"status": "Succeeded"} for i in instances}
            )
            moto_extensions.complete(deployment_id, "Succeeded")
            self.served[deployment.deployment_group_name] = key
            self._emit(deployment_id, "SUCCESS")
            return
        failing, *rest = instances
        moto_extensions.set_instance_targets(
            deployment_id,
            {
                failing: {
                    "status": "Failed",
                    "lifecycleEvents": [
                        {
                            "lifecycleEventName": "ValidateService",
                            "status": "Failed",
                            "diagnostics": {
                                "errorCode": "ScriptFailed",
                                "scriptName": "scripts/validate.sh",
                                "message": "Script at specified location: scripts/validate.sh run "
                                "as user root failed with exit code 1",
                                "logTail": "curl: (7) Failed to connect to localhost port 8080\n",
                            },
                        }
                    ],
                },
                **{i: {"status": "Skipped"} for i in rest},
            },
        )
        moto_extensions.complete(
            deployment_id,
            "Failed",
            error_code="HEALTH_CONSTRAINTS",
            error_message="The overall deployment failed because too many individual instances "
            "failed deployment",
        )
        self._emit(deployment_id, "FAILURE")

    def _stop(self, deployment_id: str) -> None:
        self._pending.discard(deployment_id)
        if self._deployment(deployment_id).status in moto_extensions.TERMINAL_STATUSES:
            return
        moto_extensions.complete(
            deployment_id, "Stopped", error_code="MANUAL_STOP", error_message="stopped on request"
        )
        self._emit(deployment_id, "STOP")


def _pipeline_of(run: Run, deployment_group: str) -> str:
    return next(p.name for p in run.world.pipelines.pipelines if p.deployment_group == deployment_group)
