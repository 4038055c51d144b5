"""What must hold after every run, however the handlers died: read from moto, the table and the
Slack look-alike, and judged against the scenario's ground truth (which uploads are good)."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from boto3.dynamodb.types import TypeDeserializer
from moto.backends import get_backend
from moto.core.models import DEFAULT_ACCOUNT_ID

from chalicelib.adapters.codedeploy import release_id_in_description
from chalicelib.adapters.dynamodb_store import DynamoReleaseStore, release_from_item
from chalicelib.domain.freeze import current_freeze
from chalicelib.domain.notification_content import FAILURES, LABELS
from chalicelib.domain.notifications import notification_for, opens_thread, receives
from chalicelib.domain.notify_routes import Notification
from chalicelib.domain.pipelines import NotifyRoute, Pipeline
from chalicelib.domain.release import (
    BREAK_GLASS,
    PROMOTED_FROM,
    ROLLED_BACK_BY,
    EventType,
    HistoryEvent,
    Release,
    ReleaseState,
    Trigger,
)
from chalicelib.domain.slack_interactions import SlackAction
from chalicelib.service.notification_channels import COMMIT_METADATA, GITHUB_STATES
from sandbox import moto_extensions
from sandbox.slack_api import Message
from tests.crash.clock import EPOCH
from tests.crash.harness import PipelineRollback, Run, Violation, is_read
from tests.crash.world import REGION, SLACK_CHANNEL, TABLE

_RELEASE_IN_CARD = re.compile(r"Release `([^`]+)`")
_RELEASE_IN_MAIL = re.compile(r"<th align='left'>Release</th><td>([^<]+)</td>")
_deserializer = TypeDeserializer()


@dataclass
class FinalState:
    releases: dict[str, Release]
    histories: dict[str, list[HistoryEvent]]
    deployments: list[Any]


def final_state(run: Run) -> FinalState:
    client = run.world.dynamodb
    items: list[dict[str, Any]] = []
    arguments: dict[str, Any] = {"TableName": TABLE}
    while True:
        page = client.scan(**arguments)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            break
        arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    releases = {}
    for item in items:
        if item["sk"]["S"] == "META" and item["pk"]["S"].startswith("REL#"):
            release = release_from_item(
                {name: _deserializer.deserialize(value) for name, value in item.items()}
            )
            releases[release.id] = release
    store = DynamoReleaseStore(client, TABLE)
    histories = {release_id: store.history(release_id) for release_id in releases}
    deployments = list(moto_extensions.backend(REGION).deployments.values())
    return FinalState(releases, histories, deployments)


def check(run: Run) -> list[Violation]:
    state = final_state(run)
    found = list(run.violations)
    found += _deployments(state)
    found += _ended(run, state)
    found += _histories(state)
    found += _uploads(run, state)
    found += _served(run, state)
    found += _notifications(run, state)
    found += _approvals(run, state)
    found += _gates(run, state)
    found += _card_clicks(run, state)
    found += _promotions(run, state)
    return found


def _deployments(state: FinalState) -> list[Violation]:
    """One CodeDeploy deployment per release that deploys."""
    found = []
    per_release = Counter(release_id_in_description(d.description) for d in state.deployments)
    for release_id, count in per_release.items():
        if release_id is not None and count > 1:
            found.append(
                Violation("deployed_twice", f"release {release_id} has {count} CodeDeploy deployments")
            )
    for release in state.releases.values():
        if (
            release.deployment_id is not None
            and per_release.get(release.id, 0) == 0
            and release.trigger.value != "external"
        ):
            found.append(
                Violation(
                    "deployment_unknown",
                    f"release {release.id} names {release.deployment_id}, not one of its own",
                )
            )
    return found


def _ended(run: Run, state: FinalState) -> list[Violation]:
    """Every release terminal and every slot free at the end."""
    found = [
        Violation("not_terminal", f"release {r.id} ({r.revision.key}) still {r.state.value}: {r.reason}")
        for r in state.releases.values()
        if not r.state.is_terminal
    ]
    store = DynamoReleaseStore(run.world.dynamodb, TABLE)
    for pipeline in run.world.pipelines.pipelines:
        slot = store.get_slot(pipeline.name)
        awaiting = [mark.release_id for mark in slot.awaiting_approval]
        if slot.active is not None or slot.waiting or awaiting:
            found.append(
                Violation(
                    "slot_held",
                    f"{pipeline.name}'s slot: active {slot.active}, waiting {list(slot.waiting)}, "
                    f"awaiting approval {awaiting}",
                )
            )
    return found


def _histories(state: FinalState) -> list[Violation]:
    found = []
    for release_id, history in state.histories.items():
        ids = [event.id for event in history]
        chained = all(event.previous_event_id == event.id - 1 for event in history)
        if ids != list(range(1, len(ids) + 1)) or not chained:
            found.append(Violation("history_gap", f"release {release_id}: history ids {ids}"))
        elif history and history[-1].state is not state.releases[release_id].state:
            found.append(
                Violation(
                    "history_state",
                    f"release {release_id} is {state.releases[release_id].state.value} but its last "
                    f"event says {history[-1].state.value}",
                )
            )
    return found


def _uploads(run: Run, state: FinalState) -> list[Violation]:
    return [
        Violation("upload_lost", f"upload {upload.key} has no release {upload.release_id}")
        for upload in run.uploads
        if upload.release_id not in state.releases
    ]


def _served(run: Run, state: FinalState) -> list[Violation]:
    """What the fleet runs and the slot's last good release are the newest upload that passed
    (good by the scenario, and not cancelled, superseded or rolled back by someone's decision); a
    release whose targets were healthy is never failed by its verification."""
    found = []
    for release in state.releases.values():
        if release.state is ReleaseState.FAILED and release.reason.startswith("verify_failed"):
            found.append(
                Violation(
                    "healthy_failed_verification",
                    f"release {release.id} ({release.revision.key}) FAILED although its targets were "
                    f"healthy throughout: {release.reason}",
                )
            )
    store = DynamoReleaseStore(run.world.dynamodb, TABLE)
    rolled_back = {rollback.from_key for rollback in _accepted_rollbacks(run)}
    for pipeline in run.world.pipelines.pipelines:
        uploads = [upload for upload in run.uploads if upload.pipeline == pipeline.name]
        if not uploads or pipeline.promote_from is not None:
            # A pipeline that promotes refuses its uploads; what it runs is ``_promotions``'s.
            continue
        passed = [
            upload
            for upload in uploads
            if upload.good
            and upload.key not in rolled_back
            and upload.release_id in state.releases
            and state.releases[upload.release_id].state not in (ReleaseState.STOPPED, ReleaseState.SUPERSEDED)
        ]
        expected = max(passed, key=lambda upload: upload.at_s).key if passed else None
        served = run.driver.served.get(pipeline.deployment_group)
        slot = store.get_slot(pipeline.name)
        last_good = state.releases.get(slot.last_good) if slot.last_good else None
        last_good_key = last_good.revision.key if last_good else None
        stopped = {
            upload.key
            for upload in uploads
            if upload.release_id in state.releases
            and state.releases[upload.release_id].state is ReleaseState.STOPPED
        }
        if expected is None and last_good_key is None and served in stopped:
            # Cancelled after CodeDeploy had already finished (a cancel retried late), with no
            # verified release to return to: the fleet keeps what it got, and its release says
            # STOPPED. With one to return to, this is a violation.
            continue
        if served != expected or last_good_key != expected:
            found.append(
                Violation(
                    "served_not_newest",
                    f"{pipeline.name}: the fleet runs {served} and the last good release is "
                    f"{last_good_key}, but the newest upload that passed is {expected}",
                )
            )
    return found


def repair_within_s(run: Run) -> float:
    """How long after a time-driven move falls due (a freeze ends, an approval expires, an alarm
    clears) the lane may take to make it: its wake-up is on time, but a crash between the commit
    and the wake-up's send leaves it to the next reconcile, which Lambda retries after a crash."""
    behaviour = run.world.behaviour
    return float(behaviour.reconcile_every_s + sum(behaviour.async_retry_delays_s))


def _seconds(moment: datetime) -> float:
    """Seconds after the run's start."""
    return (moment - EPOCH).total_seconds()


def _started_s(history: list[HistoryEvent]) -> float | None:
    """When the release took the slot (entered DEPLOYING), in seconds of the run."""
    return next(
        (
            _seconds(event.timestamp)
            for event in history
            if event.type is EventType.STATE_ENTERED and event.state is ReleaseState.DEPLOYING
        ),
        None,
    )


def _approvals(run: Run, state: FinalState) -> list[Violation]:
    """On a pipeline that requires approval nothing but a rollback deploys unless approved, and
    each upload ends as the operator decided, the decision recorded once with who made it (through
    the API or the Slack card): approved by them (then it deploys), rejected by them (STOPPED), or
    nobody decided and it expired (STOPPED) by the repair after its expiry."""
    found = []
    late_s = repair_within_s(run)
    for release in state.releases.values():
        pipeline = run.world.pipelines.named(release.pipeline)
        if pipeline is None or not pipeline.approval.required or release.trigger.is_rollback:
            continue
        history = state.histories[release.id]
        if _started_s(history) is not None and not any("approved_by" in e.detail for e in history):
            found.append(
                Violation(
                    "deployed_unapproved",
                    f"release {release.id} ({release.revision.key}) deployed unapproved",
                )
            )
    for upload in run.uploads:
        pipeline = run.world.pipelines.named(upload.pipeline)
        ended = state.releases.get(upload.release_id)
        if pipeline is None or not pipeline.approval.required or ended is None:
            continue
        if ended.state is ReleaseState.SUPERSEDED:
            continue
        history = state.histories[ended.id]
        decision = run.decisions.get(upload.key)
        decided = f"{decision.verdict} by {decision.actor}" if decision else "not decided"
        what = f"release {ended.id} ({upload.key}), {decided}, ended {ended.state.value}"
        if decision is not None and decision.verdict == "approved":
            approvers = [e.detail["approved_by"] for e in history if "approved_by" in e.detail]
            if approvers != [decision.actor] or _started_s(history) is None:
                found.append(Violation("approval_lost", f"{what}: approved by {approvers}: {ended.reason}"))
        elif decision is not None and decision.verdict == "rejected":
            rejecters = [e.detail["rejected_by"] for e in history if "rejected_by" in e.detail]
            if ended.state is not ReleaseState.STOPPED or rejecters != [decision.actor]:
                found.append(Violation("rejection_lost", f"{what}: rejected by {rejecters}: {ended.reason}"))
        else:
            expired = next((e for e in history if "approval_expired" in e.detail), None)
            if ended.state is not ReleaseState.STOPPED or expired is None:
                found.append(Violation("approval_not_expired", f"{what}: {ended.reason}"))
                continue
            due_s = _seconds(datetime.fromisoformat(str(expired.detail["approval_expired"])))
            at_s = _seconds(expired.timestamp)
            if not due_s <= at_s <= due_s + late_s:
                found.append(
                    Violation(
                        "approval_expired_off_time",
                        f"{what}: expired at {at_s:.0f}s, due at {due_s:.0f}s (within {late_s:.0f}s)",
                    )
                )
    return found


def _gates(run: Run, state: FinalState) -> list[Violation]:
    """Freezes and alarm gates: nothing but a rollback or break-glass takes the slot during a
    freeze or while a named alarm is in ALARM; a release held by either starts by the repair after
    it ends; a break-glass deploy during a freeze starts before the freeze ends."""
    found = []
    late_s = repair_within_s(run)
    for release in state.releases.values():
        pipeline = run.world.pipelines.named(release.pipeline)
        if pipeline is None:
            continue
        history = state.histories[release.id]
        started_s = _started_s(history)
        exempt = release.trigger.is_rollback or BREAK_GLASS in release.metadata
        label = f"release {release.id} ({release.revision.key})"
        if started_s is not None and not exempt:
            freeze = current_freeze(pipeline.freeze, EPOCH + timedelta(seconds=started_s))
            if freeze is not None:
                found.append(
                    Violation(
                        "started_in_freeze", f"{label} started at {started_s:.0f}s, during {freeze.to_dict()}"
                    )
                )
            firing = _alarms_in_alarm(run, pipeline.verify.alarms, started_s)
            if firing:
                found.append(
                    Violation(
                        "started_in_alarm", f"{label} started at {started_s:.0f}s with {firing} in ALARM"
                    )
                )
        for event in history:
            if event.state is not ReleaseState.QUEUED or event.type is not EventType.STATE_ENTERED:
                continue
            free_s: float | None
            if "freeze" in event.detail:
                free_s = _seconds(datetime.fromisoformat(str(event.detail["freeze"]["ends_at"])))
            elif "alarms" in event.detail:
                free_s = _alarms_clear_s(run, pipeline.verify.alarms, _seconds(event.timestamp))
            else:
                continue
            if release.state in (ReleaseState.SUPERSEDED, ReleaseState.STOPPED):
                continue
            if started_s is None or free_s is None or started_s > free_s + late_s:
                found.append(
                    Violation(
                        "held_too_long",
                        f"{label} was held ({event.detail.get('reason')}) until {free_s}s, started at "
                        f"{started_s}s (within {late_s:.0f}s)",
                    )
                )
    for key in run.broken_glass:
        broken = [r for r in state.releases.values() if r.revision.key == key and BREAK_GLASS in r.metadata]
        if len(broken) != 1:
            found.append(
                Violation("break_glass_lost", f"{key}: {len(broken)} break-glass releases, expected 1")
            )
            continue
        [release] = broken
        created = state.histories[release.id][0].timestamp
        pipeline = run.world.pipelines.named(release.pipeline)
        freeze = current_freeze(pipeline.freeze, created) if pipeline else None
        started_s = _started_s(state.histories[release.id])
        if freeze is not None and (started_s is None or started_s >= _seconds(freeze.ends_at)):
            found.append(
                Violation(
                    "break_glass_waited",
                    f"break-glass release {release.id} of {key} during {freeze.to_dict()} started at "
                    f"{started_s}s: {release.reason}",
                )
            )
    return found


def _card_clicks(run: Run, state: FinalState) -> list[Violation]:
    """Every click the interactions route queued is answered to its user at its ``response_url``
    (the worker answers each message it handles, a redelivered one too), and carried out once
    however often its message is handed to the worker: each queued Redeploy makes one release,
    in the clicking user's name (an approval's once is ``_approvals``'s)."""
    answered = Counter(response.action for response in run.world.slack_messages.responses())
    found = [
        Violation(
            "slack_click_unanswered", f"{click.what} at {click.at_s:.0f}s: no answer at {click.response_url}"
        )
        for click in run.clicks
        if click.queued and not answered[_click_number(click.response_url)]
    ]
    redeploys = Counter(
        (release.metadata["redeploy_of"], str(release.actor))
        for release in state.releases.values()
        if "redeploy_of" in release.metadata
    )
    wanted = Counter(
        (run.release_id(click.key), click.actor)
        for click in run.clicks
        if click.action is SlackAction.REDEPLOY and click.queued
    )
    for release_id, actor in sorted(set(redeploys) | set(wanted)):
        made, queued = redeploys[(release_id, actor)], wanted[(release_id, actor)]
        if made != queued:
            found.append(
                Violation(
                    "slack_redeploy_count",
                    f"{queued} Redeploy click(s) on release {release_id}'s card by {actor} queued, "
                    f"{made} release(s) made",
                )
            )
    return found


def _click_number(response_url: str) -> str:
    """The look-alike's number of a click, from its response_url ``.../actions/<team>/<n>/...``."""
    return urlsplit(response_url).path.split("/")[3]


# Only these are promoted (docs/pipelines.md, "Promotion"): a rollback upstream redeploys an older
# build, and a deployment made outside the coordinator was never verified by it.
_PROMOTED_TRIGGERS = frozenset({Trigger.UPLOAD, Trigger.API, Trigger.PROMOTION})


def _accepted_rollbacks(run: Run) -> list[PipelineRollback]:
    """The operators' pipeline rollbacks the API carried out (a rollback refused, say because its
    target was not verified yet after a crash delayed it, changed nothing)."""
    accepted = {answer.what for answer in run.answers if answer.status < 300}
    return [rollback for rollback in run.rollbacks if rollback.what in accepted]


def _succeeded_s(history: list[HistoryEvent]) -> float | None:
    """When the release was verified (SUCCEEDED), in seconds of the run: from then it is its
    pipeline's last good release."""
    return next((_seconds(e.timestamp) for e in history if e.state is ReleaseState.SUCCEEDED), None)


def _promotions(run: Run, state: FinalState) -> list[Violation]:
    """Promotion (issue 15): a pipeline that promotes deploys nothing but promotions (its uploads
    are refused), each of exactly its upstream release's revision (bucket, key, version id, eTag,
    in CodeDeploy too), at most once per upstream release, linked once from the upstream release's
    history; an upstream release that stayed last good for the soak is promoted by the repair
    after the soak ends (unless rolled back first), and never before it unless an operator asked;
    a promotion of a release rolled back upstream never starts after the rollback, and one still
    pending then is cancelled by the repair after it; and the downstream fleet runs its pipeline's
    last good release."""
    found: list[Violation] = []
    late_s = repair_within_s(run)
    pipelines = run.world.pipelines
    promotions = [r for r in state.releases.values() if r.trigger is Trigger.PROMOTION]
    found += [
        Violation("promoted_twice", f"{upstream_id} promoted {count} times into {pipeline}")
        for (pipeline, upstream_id), count in Counter(
            (r.pipeline, r.metadata.get(PROMOTED_FROM)) for r in promotions
        ).items()
        if count > 1
    ]
    # pipeline -> [(when verified, release)], the moments its last good release changed
    verified: dict[str, list[tuple[float, Release]]] = {}
    for release in state.releases.values():
        succeeded_s = _succeeded_s(state.histories[release.id])
        if succeeded_s is not None:
            verified.setdefault(release.pipeline, []).append((succeeded_s, release))

    def newer_verified(upstream: Release, since_s: float, until_s: float) -> bool:
        """Another release of the upstream pipeline became its last good in (since, until]."""
        return any(
            since_s < at_s <= until_s and other.id != upstream.id
            for at_s, other in verified.get(upstream.pipeline, [])
        )

    def rolled_back_s(upstream: Release) -> float | None:
        """When a manual rollback marked the release (the rollback's own write made it)."""
        rollback = state.releases.get(upstream.metadata.get(ROLLED_BACK_BY, ""))
        return _seconds(rollback.created_at) if rollback else None

    for promotion in promotions:
        found += _promotion(run, state, promotion, newer_verified, rolled_back_s, late_s)
    for upstream_pipeline in pipelines.pipelines:
        for succeeded_s, upstream in verified.get(upstream_pipeline.name, []):
            if upstream.trigger not in _PROMOTED_TRIGGERS:
                continue
            for downstream in pipelines.downstream_of(upstream_pipeline.name):
                due_s = succeeded_s + downstream.soak.total_seconds()
                marked_s = rolled_back_s(upstream)
                if newer_verified(upstream, succeeded_s, due_s):
                    continue  # it did not stay last good for the soak
                if marked_s is not None and marked_s <= due_s + late_s:
                    continue  # rolled back before it was due, or before the repair: never promoted
                made = [
                    _seconds(p.created_at)
                    for p in promotions
                    if p.pipeline == downstream.name and p.metadata.get(PROMOTED_FROM) == upstream.id
                ]
                if not made and newer_verified(upstream, succeeded_s, due_s + late_s):
                    # Its wake-up was lost and a newer release became last good before the repair
                    # came: the promotion goes to the release last good when it runs, as documented
                    # (docs/pipelines.md), like a pending promotion a newer one supersedes.
                    continue
                if not made or made[0] > due_s + late_s:
                    found.append(
                        Violation(
                            "promotion_late",
                            f"{upstream.id} ({upstream.revision.key}) stayed {upstream.pipeline}'s last good "
                            f"for {downstream.name}'s soak, due at {due_s:.0f}s: promoted at {made} "
                            f"(within {late_s:.0f}s)",
                        )
                    )
    for upload in run.uploads:
        pipeline = pipelines.named(upload.pipeline)
        refused = state.releases.get(upload.release_id)
        if pipeline is None or pipeline.promote_from is None or refused is None:
            continue
        if refused.state is not ReleaseState.FAILED or refused.deployment_id is not None:
            found.append(
                Violation(
                    "downstream_upload_not_refused",
                    f"upload {upload.key} to {pipeline.name}, which promotes from {pipeline.promote_from}: "
                    f"{refused.state.value}, deployment {refused.deployment_id}: {refused.reason}",
                )
            )
    for rollback in _accepted_rollbacks(run):
        rolled_back = state.releases.get(run.release_id(rollback.from_key))
        if rolled_back is not None and ROLLED_BACK_BY not in rolled_back.metadata:
            found.append(
                Violation(
                    "rollback_unmarked",
                    f"{rollback.what} was carried out, but release {rolled_back.id} does not say so: its "
                    "promotions may still go ahead",
                )
            )
    for pipeline in pipelines.pipelines:
        if pipeline.promote_from is not None:
            found += _downstream_fleet(run, state, pipeline)
    return found


def _promotion(
    run: Run,
    state: FinalState,
    promotion: Release,
    newer_verified: Callable[[Release, float, float], bool],
    rolled_back_s: Callable[[Release], float | None],
    late_s: float,
) -> list[Violation]:
    label = f"promotion {promotion.id} into {promotion.pipeline}"
    downstream = run.world.pipelines.named(promotion.pipeline)
    upstream = state.releases.get(promotion.metadata.get(PROMOTED_FROM, ""))
    if downstream is None or upstream is None or upstream.pipeline != downstream.promote_from:
        return [Violation("promotion_orphan", f"{label} names no release of the pipeline it promotes from")]
    found = []
    if promotion.revision != upstream.revision:
        found.append(
            Violation(
                "promotion_revision",
                f"{label}: {promotion.revision} but {upstream.id} ran {upstream.revision}",
            )
        )
    for deployment in state.deployments:
        location = deployment.revision["s3Location"]
        if release_id_in_description(deployment.description) == promotion.id and (
            location["bucket"],
            location["key"],
            location.get("version"),
            location.get("eTag"),
        ) != (
            upstream.revision.bucket,
            upstream.revision.key,
            upstream.revision.version,
            upstream.revision.etag,
        ):
            found.append(
                Violation(
                    "promotion_revision", f"{label}: CodeDeploy deployed {location}, not {upstream.revision}"
                )
            )
    history = state.histories[promotion.id]
    created_s = _seconds(promotion.created_at)
    started_s = _started_s(history)
    succeeded_s = _succeeded_s(state.histories[upstream.id])
    if promotion.actor is None and (
        succeeded_s is None
        or created_s < succeeded_s + downstream.soak.total_seconds()
        or newer_verified(upstream, succeeded_s, created_s)
    ):
        found.append(
            Violation(
                "promoted_unsoaked",
                f"{label} made at {created_s:.0f}s: {upstream.id} was verified at {succeeded_s}s, "
                f"soak {downstream.soak.total_seconds():.0f}s, and had to stay last good until then",
            )
        )
    links = [
        e
        for e in state.histories[upstream.id]
        if e.type is EventType.TASK_SUCCEEDED
        and e.detail.get("task") == "Promotion"
        and e.detail.get("release_id") == promotion.id
    ]
    if len(links) != 1:
        found.append(
            Violation("promotion_link", f"{label}: linked {len(links)}x from {upstream.id}'s history")
        )
    marked_s = rolled_back_s(upstream)
    if marked_s is not None:
        if started_s is not None and started_s >= marked_s:
            found.append(
                Violation(
                    "promoted_after_rollback",
                    f"{label} started at {started_s:.0f}s; {upstream.id} was rolled back at {marked_s:.0f}s",
                )
            )
        if started_s is None and promotion.state is not ReleaseState.SUPERSEDED:
            cancelled = next((e for e in history if "cancelled_promotion_of" in e.detail), None)
            due_s = max(marked_s, created_s) + late_s
            if cancelled is None or _seconds(cancelled.timestamp) > due_s:
                found.append(
                    Violation(
                        "promotion_not_cancelled",
                        f"{label} of {upstream.id}, rolled back at {marked_s:.0f}s, ended "
                        f"{promotion.state.value} ({promotion.reason}); cancelled by {due_s:.0f}s: "
                        f"{cancelled is not None}",
                    )
                )
    return found


def _downstream_fleet(run: Run, state: FinalState, pipeline: Pipeline) -> list[Violation]:
    """A pipeline that promotes runs only promotions, break-glass deploys, and rollbacks to what a
    promotion verified there; its fleet runs its last good release."""
    found = []
    verified_here = {
        r.revision
        for r in state.releases.values()
        if r.pipeline == pipeline.name and r.trigger is Trigger.PROMOTION
    }
    for deployment in state.deployments:
        if deployment.deployment_group_name != pipeline.deployment_group:
            continue
        release = state.releases.get(release_id_in_description(deployment.description) or "")
        allowed = release is not None and (
            release.trigger is Trigger.PROMOTION
            or BREAK_GLASS in release.metadata
            or (release.trigger.is_rollback and release.revision in verified_here)
        )
        if not allowed:
            what = f"{release.trigger.value} release {release.id}" if release else "no release"
            found.append(
                Violation(
                    "deployed_unpromoted",
                    f"{pipeline.name} deployed {deployment.deployment_id} ({what}), which is no promotion",
                )
            )
    slot = DynamoReleaseStore(run.world.dynamodb, TABLE).get_slot(pipeline.name)
    last_good = state.releases.get(slot.last_good) if slot.last_good else None
    served = run.driver.served.get(pipeline.deployment_group)
    if served != (last_good.revision.key if last_good else None):
        found.append(
            Violation(
                "served_not_newest",
                f"{pipeline.name}: the fleet runs {served}, the last good release is "
                f"{last_good.id if last_good else None}",
            )
        )
    return found


def _alarm_states(run: Run, at_s: float) -> dict[str, str]:
    """The alarms the scenario set, as they stood at ``at_s``."""
    states: dict[str, str] = {}
    for changed_s, name, value in run.alarm_changes:
        if changed_s <= at_s:
            states[name] = value
    return states


def _alarms_in_alarm(run: Run, names: tuple[str, ...], at_s: float) -> list[str]:
    states = _alarm_states(run, at_s)
    return [name for name in names if states.get(name) == "ALARM"]


def _alarms_clear_s(run: Run, names: tuple[str, ...], from_s: float) -> float | None:
    """When none of ``names`` was in ALARM any more, from ``from_s`` on (None: never)."""
    for at_s in [from_s, *(changed_s for changed_s, _, _ in run.alarm_changes if changed_s > from_s)]:
        if not _alarms_in_alarm(run, names, at_s):
            return at_s
    return None


def _notifications(run: Run, state: FinalState) -> list[Violation]:
    """Each notification event posted once per route: a Slack thread's root card once and each
    reply once; each email once. SES offers no way to look for a mail already sent, so a crash
    right after SendEmail (before the delivery is confirmed) may mail that event twice: the
    channel's documented window, allowed here once per such crash and no more."""
    found = []
    slack_messages = run.world.slack_messages.messages(SLACK_CHANNEL)
    roots = [message for message in slack_messages if message.thread_ts is None]
    mails = list(get_backend("ses")[DEFAULT_ACCOUNT_ID][REGION].sent_messages)
    ses_window = sum(
        1 for inv in run.invocations if inv.outcome == "crashed" and _last_write(inv.calls) == "ses.SendEmail"
    )
    mailed = Counter((_mail_release(mail), mail.subject.split("]", 1)[0] + "]") for mail in mails)
    # GitHub offers no way to look for a status already posted either: a crash right after one
    # posts it again, once per such crash.
    status_window = [
        sum(
            1
            for inv in run.invocations
            if inv.outcome == "crashed" and _last_write(inv.calls) == GITHUB_STATUS_POST
        )
    ]
    expected_mail: Counter[tuple[str | None, str]] = Counter()
    for release in state.releases.values():
        pipeline = run.world.pipelines.named(release.pipeline)
        if pipeline is None:
            continue
        notifications = [
            n
            for n in (notification_for(event, release.trigger) for event in state.histories[release.id])
            if n
        ]
        for route in pipeline.notify:
            if route.kind == "slack":
                found += _slack_thread(run, release, route, notifications, roots)
            elif route.kind == "github":
                found += _github_deployment(run, release, route, notifications, status_window)
            elif route.kind == "email":
                for notification in notifications:
                    if receives(route, notification):
                        expected_mail[(release.id, f"[{LABELS[notification]}]")] += 1
    for key in sorted(set(mailed) | set(expected_mail), key=str):
        sent, wanted = mailed[key], expected_mail[key]
        if sent < wanted:
            found.append(
                Violation("email_missing", f"release {key[0]}: {key[1]} mailed {sent}x, expected {wanted}")
            )
        elif sent > wanted:
            extra = sent - wanted
            if extra <= ses_window:
                ses_window -= extra
            else:
                found.append(
                    Violation(
                        "email_duplicate", f"release {key[0]}: {key[1]} mailed {sent}x, expected {wanted}"
                    )
                )
    return found


GITHUB_STATUS_POST = "github.POST deployments/<id>/statuses"


def _github_deployment(
    run: Run, release: Release, route: NotifyRoute, notifications: list[Notification], window: list[int]
) -> list[Violation]:
    """Exactly one GitHub deployment for a release that notified the route (none for one that
    did not, or has no commit), its statuses the release's notices in order, so ending in the
    release's final state. ``window``: repeats of a status that crashes allow, used up here."""
    deployments = [d for d in run.world.github.deployments() if d.payload.get("release_id") == release.id]
    opening = next((i for i, n in enumerate(notifications) if opens_thread(route, n)), None)
    if opening is None or not release.metadata.get(COMMIT_METADATA):
        if deployments:
            return [Violation("github_unexpected", f"release {release.id}: a deployment nobody asked for")]
        return []
    if len(deployments) != 1:
        kind = "github_deployment_duplicate" if deployments else "github_missing"
        return [Violation(kind, f"release {release.id}: {len(deployments)} GitHub deployments, expected 1")]
    expected = [GITHUB_STATES[n] for n in notifications[opening:] if n in GITHUB_STATES]
    posted = deployments[0].states
    repeats = sum(1 for before, state in itertools.pairwise(posted) if before == state)
    distinct = [state for number, state in enumerate(posted) if number == 0 or posted[number - 1] != state]
    if distinct != expected:
        return [
            Violation(
                "github_statuses",
                f"release {release.id} ({release.state}): posted {posted}, expected {expected}",
            )
        ]
    if repeats > window[0]:
        return [Violation("github_status_duplicate", f"release {release.id}: posted {posted}")]
    window[0] -= repeats
    return []


def _last_write(calls: list[str]) -> str | None:
    return next((call for call in reversed(calls) if not is_read(call)), None)


def _mail_release(mail: Any) -> str | None:
    match = _RELEASE_IN_MAIL.search(str(mail.body))
    return match.group(1) if match else None


def _slack_thread(
    run: Run, release: Release, route: NotifyRoute, notifications: list[Notification], roots: list[Message]
) -> list[Violation]:
    opening = next((i for i, n in enumerate(notifications) if opens_thread(route, n)), None)
    cards = [root for root in roots if _card_release(root) == release.id]
    if opening is None:
        if cards:
            return [
                Violation("slack_unexpected", f"release {release.id}: {len(cards)} card(s) nobody asked for")
            ]
        return []
    expected_replies = notifications[opening + 1 :]
    if notifications[opening] in FAILURES:
        expected_replies = [notifications[opening], *expected_replies]
    found = []
    if len(cards) != 1:
        kind = "slack_root_duplicate" if len(cards) > 1 else "slack_missing"
        found.append(
            Violation(
                kind, f"release {release.id} ({release.revision.key}): {len(cards)} root cards, expected 1"
            )
        )
    replies = [reply for card in cards for reply in run.world.slack_messages.thread(SLACK_CHANNEL, card.ts)]
    texts = Counter(reply.text for reply in replies)
    doubled = sorted(text.splitlines()[0][:80] for text, count in texts.items() if text and count > 1)
    if doubled or len(replies) > len(expected_replies):
        found.append(
            Violation(
                "slack_reply_duplicate",
                f"release {release.id}: {len(replies)} replies for {len(expected_replies)} events "
                f"{expected_replies}; posted more than once: {doubled}",
            )
        )
    elif len(replies) < len(expected_replies):
        found.append(
            Violation(
                "slack_missing",
                f"release {release.id}: {len(replies)} replies for {len(expected_replies)} events "
                f"{expected_replies}",
            )
        )
    return found


def _card_release(message: Message) -> str | None:
    for block in message.blocks or []:
        if block.get("type") == "context":
            for element in block.get("elements", []):
                match = _RELEASE_IN_CARD.search(str(element.get("text", "")))
                if match:
                    return match.group(1)
    return None
