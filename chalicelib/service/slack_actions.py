"""A click on a release card's button, in two halves.

:func:`accept` is ``POST /slack/interactions``: Slack wants an answer within three seconds, so it
only verifies the request's signature (the ``[slack]`` app's signing secret, slack_sdk's
``SignatureVerifier`` with its five-minute window), takes the request once (a replay is refused),
and queues the click. :func:`act` is the queue's worker: it maps the Slack user to a ``Person``
(user id, and the user groups the pipeline names that they belong to), checks what the pipelines
file lets them do, acts through the same use cases as the API with the person as the actor, and
answers the user through the click's ``response_url``. The card itself follows through the normal
notification flow: the history event the action writes reaches Slack through the outbox.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from chalicelib.domain.api_requests import ConflictingState, Forbidden, Malformed, Refused, known_release_id
from chalicelib.domain.notification_content import escape
from chalicelib.domain.permissions import Person
from chalicelib.domain.pipelines import Pipeline
from chalicelib.domain.release import Release, ReleaseState
from chalicelib.domain.slack_interactions import (
    ActionRequest,
    BadSignature,
    Replayed,
    SlackAction,
    SlackActionsUnavailable,
    SlackNotConfigured,
    parse_click,
)
from chalicelib.log import logger
from chalicelib.service.notification_ports import DeliveryRejected, Secrets

if TYPE_CHECKING:
    from chalicelib.service.wiring import Wiring

# A request is remembered past the signature's five-minute window (its timestamp may be up to
# five minutes ahead of our clock, too): by then SignatureVerifier refuses it anyway.
REQUEST_REMEMBERED_FOR = timedelta(minutes=10)
# What the pipeline's [pipeline.slack] operators may do; approving is [pipeline.approval]'s to
# decide, inside its use case.
OPERATOR_ACTIONS = frozenset({SlackAction.CANCEL, SlackAction.ROLL_BACK, SlackAction.REDEPLOY})
# Roll back looks this far back for a release that succeeded before the card's (the store reads
# them newest first, in as many queries as that takes).
ROLLBACK_SEARCH_LIMIT = 100


class InteractionLedger(Protocol):
    def first_time(self, request_id: str, keep_until: datetime) -> bool:
        """Record the request; False when it was recorded before."""
        ...

    def forget(self, request_id: str) -> None: ...


class SlackActionQueue(Protocol):
    def send(self, request: ActionRequest) -> None: ...


class SlackWorkspace(Protocol):
    def group_members(self, token: str, group: str) -> frozenset[str]:
        """Raises ``DeliveryRejected`` when Slack refuses to tell."""
        ...

    def respond(self, response_url: str, text: str) -> None: ...


@dataclass(frozen=True)
class SlackActionAdapters:
    secrets: Secrets
    ledger: InteractionLedger
    queue: SlackActionQueue
    workspace: SlackWorkspace


def accept(wiring: Wiring, body: bytes | str, timestamp: str | None, signature: str | None) -> ActionRequest:
    """Verify, record and queue one interaction request; raises a ``Refused`` for one that is
    not Slack's, not a button click, or seen before. Runs no use case."""
    app = wiring.pipelines.slack
    if app is None:
        raise SlackNotConfigured(
            "no Slack app is configured: the pipelines file needs a [slack] table with "
            "signing_secret_parameter or signing_secret_secret"
        )
    adapters = _adapters(wiring)
    try:
        signing_secret = adapters.secrets.get(app.signing_secret)
    except DeliveryRejected as unreadable:
        logger.error("the Slack signing secret cannot be read", extra={"why": str(unreadable)})
        raise SlackActionsUnavailable(f"the [slack] signing secret cannot be read: {unreadable}") from None
    except Exception as failed:
        # SSM or Secrets Manager throttled or failing: Slack does not retry, the user clicks again.
        logger.exception("the Slack signing secret could not be read now")
        raise SlackActionsUnavailable("the [slack] signing secret could not be read now; retry") from failed
    try:
        # Slack's form bodies are ASCII; SignatureVerifier decodes bytes as UTF-8.
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError:
        raise Malformed("the body is not UTF-8: Slack sends a form-encoded payload") from None
    if timestamp is None or signature is None or not _signed_by(signing_secret, text, timestamp, signature):
        logger.warning("a Slack interaction with a bad or stale signature refused")
        raise BadSignature(
            "the request is not signed with the Slack app's signing secret within the last five minutes"
        )
    request_id = hashlib.sha256(f"{timestamp}:{signature}".encode()).hexdigest()
    request = parse_click(text, request_id)
    keep_until = datetime.fromtimestamp(int(timestamp), UTC) + REQUEST_REMEMBERED_FOR
    if not adapters.ledger.first_time(request_id, keep_until):
        logger.warning("a replayed Slack interaction refused", extra={"request_id": request_id})
        raise Replayed("this Slack request was received before; a replayed request has no effect")
    try:
        adapters.queue.send(request)
    except Exception:
        # Not queued: the user's next click is a new request, and this one may come again.
        adapters.ledger.forget(request_id)
        raise
    logger.info(
        "Slack action queued",
        extra={
            "action": request.action.value,
            "release_id": request.release_id,
            "slack_user": request.user_id,
        },
    )
    return request


def _signed_by(secret: str, body: str, timestamp: str, signature: str) -> bool:
    # SignatureVerifier reads the timestamp with int(): anything else is no signature at all.
    if not timestamp.isascii() or not timestamp.isdigit():
        return False
    from slack_sdk.signature import SignatureVerifier

    return SignatureVerifier(secret).is_valid(body, timestamp, signature)


def act(wiring: Wiring, request: ActionRequest) -> str:
    """Carry out a queued click and answer the user who clicked; returns the answer. Refusals
    (not allowed, a release in the wrong state) are answers, not errors: the message is done."""
    adapters = _adapters(wiring)
    answer = _outcome(wiring, adapters, request)
    try:
        adapters.workspace.respond(request.response_url, answer)
    except Exception:
        # The action is done (or refused) either way, and the card shows the release's state:
        # retrying the message for the sake of the answer could act twice.
        logger.exception("could not answer a Slack click", extra={"release_id": request.release_id})
    return answer


def _outcome(wiring: Wiring, adapters: SlackActionAdapters, request: ActionRequest) -> str:
    release = wiring.store.get_release(request.release_id) if known_release_id(request.release_id) else None
    if release is None:
        logger.warning(
            "Slack action on a release that does not exist skipped", extra={"release_id": request.release_id}
        )
        return f":warning: Release `{escape(request.release_id)}` does not exist."
    pipeline = wiring.pipelines.named(release.pipeline)
    if pipeline is None:
        return f":warning: Pipeline {escape(release.pipeline)} is no longer configured."
    named_groups = (
        pipeline.slack.slack_groups if request.action in OPERATOR_ACTIONS else pipeline.approval.slack_groups
    )
    person = _person(wiring, adapters, request, named_groups)
    refusal = f":no_entry: You may not {request.action.verb} releases of {escape(pipeline.name)}."
    if request.action in OPERATOR_ACTIONS and not pipeline.slack.allows(person):
        logger.warning(
            "Slack action refused: not an operator of the pipeline",
            extra={"action": request.action.value, "actor": person.name, "pipeline": pipeline.name},
        )
        return refusal
    with logger.append_context_keys(release_id=release.id, pipeline=pipeline.name, actor=person.name):
        try:
            return _run(wiring, request, release, pipeline, person)
        except Forbidden:
            # The approval policy, checked inside the use case before anything is written.
            logger.warning(
                "Slack action refused: not an approver of the pipeline",
                extra={"action": request.action.value, "actor": person.name, "pipeline": pipeline.name},
            )
            return refusal
        except Refused as refused:
            logger.info("Slack action refused", extra={"action": request.action.value, "why": str(refused)})
            return (
                f":warning: Could not {request.action.verb} release `{escape(release.id)}`: {escape(refused)}"
            )


def _run(wiring: Wiring, request: ActionRequest, release: Release, pipeline: Pipeline, person: Person) -> str:
    from chalicelib.service import release_commands

    actor = person.name
    if request.action is SlackAction.CANCEL:
        cancellation = release_commands.cancel(wiring, release.id, actor)
        if cancellation.stopped:
            return (
                f":black_square_for_stop: You cancelled release `{escape(release.id)}` "
                f"of {escape(pipeline.name)}."
            )
        return (
            f":black_square_for_stop: CodeDeploy was asked to stop deployment "
            f"`{escape(release.deployment_id)}`; release `{escape(release.id)}` ends when it has."
        )
    if request.action is SlackAction.REDEPLOY:
        submitted = release_commands.redeploy(wiring, release.id, actor, request.new_release_id)
        return (
            f":repeat: Redeploying release `{escape(release.id)}` of {escape(pipeline.name)} as release "
            f"`{escape(submitted.release.id)}` ({submitted.release.state.value})."
        )
    if request.action is SlackAction.ROLL_BACK:
        target = _succeeded_before(wiring, release)
        submitted = release_commands.roll_back(
            wiring, pipeline.name, target.id, actor, request.new_release_id
        )
        return (
            f":leftwards_arrow_with_hook: Rolling back {escape(pipeline.name)} to release "
            f"`{escape(target.id)}` as release `{escape(submitted.release.id)}` "
            f"({submitted.release.state.value})."
        )
    from chalicelib.service import approvals

    if request.action is SlackAction.APPROVE:
        approved = approvals.approve(wiring, release.id, person, None)
        return (
            f":white_check_mark: You approved release `{escape(release.id)}` of {escape(pipeline.name)} "
            f"(now {approved.state.value})."
        )
    rejected = approvals.reject(wiring, release.id, person, None)
    return (
        f":no_entry_sign: You rejected release `{escape(release.id)}` of {escape(pipeline.name)} "
        f"(now {rejected.state.value})."
    )


def _succeeded_before(wiring: Wiring, release: Release) -> Release:
    """What the card's Roll back deploys: the newest release of the pipeline that succeeded before
    the card's release (the API's rollback takes the last good one, which may be this one)."""
    older = wiring.store.list_releases(release.pipeline, ROLLBACK_SEARCH_LIMIT, release.created_key)
    found = next((candidate for candidate in older if candidate.state is ReleaseState.SUCCEEDED), None)
    if found is not None:
        return found
    raise ConflictingState(
        f"no release of {release.pipeline} succeeded before {release.id}: there is nothing to roll back to"
    )


def _person(
    wiring: Wiring, adapters: SlackActionAdapters, request: ActionRequest, named_groups: tuple[str, ...]
) -> Person:
    """The clicking user, with the user groups among ``named_groups`` they belong to. Groups Slack
    will not list (no token, a missing scope, an unknown group) count as not theirs, logged."""
    member_of: set[str] = set()
    app = wiring.pipelines.slack
    token_ref = app.token if app is not None else None
    if named_groups and token_ref is None:
        logger.warning(
            "the pipeline names Slack user groups but [slack] has no token to read their members: "
            "group membership unknown",
            extra={"groups": list(named_groups)},
        )
    elif named_groups and token_ref is not None:
        try:
            token = adapters.secrets.get(token_ref)
        except DeliveryRejected as unreadable:
            logger.error(
                "the [slack] token cannot be read: group membership unknown", extra={"why": str(unreadable)}
            )
            return Person(slack_user=request.user_id, slack_name=request.user_name)
        for group in named_groups:
            try:
                if request.user_id in adapters.workspace.group_members(token, group):
                    member_of.add(group)
            except DeliveryRejected as refused:
                logger.warning(
                    "Slack would not list a user group's members", extra={"group": group, "why": str(refused)}
                )
    return Person(slack_user=request.user_id, slack_groups=frozenset(member_of), slack_name=request.user_name)


def _adapters(wiring: Wiring) -> SlackActionAdapters:
    if wiring.slack_actions is None:
        raise SlackActionsUnavailable(
            "Slack actions are not wired: SLACK_ACTIONS_QUEUE_URL must name the Slack actions queue"
        )
    return wiring.slack_actions
