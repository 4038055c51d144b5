"""The channels, one per kind of notify route: each renders the notice for its kind and sends it
through its service's adapter, with its route's typed settings. :func:`channel_registry` makes
the registry the delivery looks a route's channel up in, by kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any, ClassVar

from chalicelib.domain.notification_content import (
    email,
    mentions,
    payload_json,
    slack_card,
    slack_reply,
    slack_webhook_message,
    sns_subject,
)
from chalicelib.domain.notification_signature import SIGNATURE_HEADER, sign
from chalicelib.domain.notifications import SlackPostMark, SlackThread
from chalicelib.domain.notify_routes import (
    EmailSettings,
    GithubSettings,
    Notification,
    NotifyKind,
    SlackSettings,
    SlackWebhookSettings,
    SnsSettings,
    WebhookSettings,
)
from chalicelib.log import logger
from chalicelib.service.notification_ports import (
    Channel,
    DeploymentRecords,
    EmailSender,
    GithubDeployments,
    GithubRepository,
    Outgoing,
    Secrets,
    SlackThreads,
    SlackWebhook,
    TopicPublisher,
    WebhookPoster,
)

# A retry looks for its earlier post from this long before the history event: every post for an
# event is made after the event was written, give or take the clocks of Lambda and Slack.
LOOK_BACK = timedelta(minutes=5)


class SlackThreadChannel:
    """A Slack bot token: one thread per release on each route, its root card kept up to date."""

    kind: ClassVar[NotifyKind] = SlackSettings.kind

    def __init__(self, slack: SlackThreads, secrets: Secrets, card_actions: bool = False) -> None:
        self._slack = slack
        self._secrets = secrets
        # The card's buttons: only when the pipelines file names a Slack app ([slack]) whose
        # signing secret lets POST /slack/interactions accept the clicks.
        self._card_actions = card_actions

    def send(self, settings: SlackSettings, outgoing: Outgoing) -> bool:
        """The release's thread on this route: the first event posts the root card (and, for a
        failure, the reply with its details); each later one edits the card to the release's
        current state and replies with what happened. The card is edited before the reply so that
        a retry after a failed reply repeats only an idempotent edit; a retry that took over an
        earlier attempt looks for that attempt's card and reply before posting them."""
        message, notice, retaken = outgoing.message, outgoing.notice, outgoing.retaken
        slack = self._slack
        token = self._secrets.get(settings.token)
        card = slack_card(notice, self._card_actions)
        since = message.event.timestamp - LOOK_BACK
        stored = notice.release.notification_threads.get(message.route)
        if stored is None:
            if not outgoing.opens_thread:
                return False
            card_mark = SlackPostMark.card(message)
            found = slack.find_card(token, settings.channel, card_mark, since) if retaken else None
            if found is not None:
                logger.info("found the card an earlier attempt posted", extra={"route": message.route})
            posted = found or slack.post(
                token, settings.channel, card.text, card.blocks, None, mark=card_mark
            )
            thread = replace(posted, opened_by=message.event.id)
            outgoing.remember_thread(thread)
            if not message.notification.is_failure:
                return True
        else:
            thread = SlackThread.from_stored(stored)
            if thread.opened_by == message.event.id:
                # A retry of the delivery that posted the card, after the card was stored: what
                # may be left is a failure's details reply, never an edit or a reply for the card.
                if not message.notification.is_failure:
                    return True
            else:
                slack.update(token, thread, card.text, card.blocks)
        reply_mark = SlackPostMark.reply(message)
        if retaken and slack.find_reply(token, thread, reply_mark, since):
            logger.info("found the reply an earlier attempt posted", extra={"route": message.route})
            return True
        reply = slack_reply(notice, mentions(settings.mentions, notice))
        slack.post(token, thread.channel, reply.text, reply.blocks, thread.ts, mark=reply_mark)
        return True


class SlackWebhookChannel:
    """A Slack incoming webhook: one message per event, the card as it is now with the reply."""

    kind: ClassVar[NotifyKind] = SlackWebhookSettings.kind

    def __init__(self, webhook: SlackWebhook, secrets: Secrets) -> None:
        self._webhook = webhook
        self._secrets = secrets

    def send(self, settings: SlackWebhookSettings, outgoing: Outgoing) -> bool:
        notice = outgoing.notice
        content = slack_webhook_message(notice, mentions(settings.mentions, notice))
        self._webhook.send(self._secrets.get(settings.url), content.text, content.blocks)
        return True


class EmailChannel:
    kind: ClassVar[NotifyKind] = EmailSettings.kind

    def __init__(self, sender: EmailSender) -> None:
        self._sender = sender

    def send(self, settings: EmailSettings, outgoing: Outgoing) -> bool:
        mail = email(outgoing.notice)
        self._sender.send(settings.sender, list(settings.to), mail.subject, mail.text, mail.html)
        return True


class SnsChannel:
    """An SNS topic; the message attributes let subscriptions filter."""

    kind: ClassVar[NotifyKind] = SnsSettings.kind

    def __init__(self, topics: TopicPublisher) -> None:
        self._topics = topics

    def send(self, settings: SnsSettings, outgoing: Outgoing) -> bool:
        notice = outgoing.notice
        attributes = {
            "notification": notice.notification.value,
            "pipeline": notice.release.pipeline,
            "state": notice.release.state.value,
        }
        self._topics.publish(
            settings.topic_arn, sns_subject(notice), payload_json(notice).decode(), attributes
        )
        return True


class WebhookChannel:
    """A generic webhook: the JSON payload, signed with the route's key at the time of sending."""

    kind: ClassVar[NotifyKind] = WebhookSettings.kind

    def __init__(self, poster: WebhookPoster, secrets: Secrets) -> None:
        self._poster = poster
        self._secrets = secrets

    def send(self, settings: WebhookSettings, outgoing: Outgoing) -> bool:
        url = settings.url if isinstance(settings.url, str) else self._secrets.get(settings.url)
        key = self._secrets.get(settings.signing_key)
        body = payload_json(outgoing.notice)
        signature = sign(body, key.encode(), int(outgoing.sent_at.timestamp()))
        self._poster.post(url, body, {SIGNATURE_HEADER: signature})
        return True


# The GitHub deployment status each notice posts (GitHub's states: error, failure, inactive,
# in_progress, queued, pending, success). A release that never ran to its end (superseded while
# it waited, or stopped) leaves its deployment "inactive".
GITHUB_STATES: Mapping[Notification, str] = {
    Notification.QUEUED: "queued",
    Notification.AWAITING_APPROVAL: "pending",
    Notification.STARTED: "in_progress",
    Notification.SUCCEEDED: "success",
    Notification.ROLLED_BACK: "success",
    Notification.FAILED: "failure",
    Notification.VERIFY_FAILED: "failure",
    Notification.STOPPED: "inactive",
    Notification.SUPERSEDED: "inactive",
}
# The release's commit: the upload's S3 user metadata that ``relco bundle push`` attaches.
COMMIT_METADATA = "commit"


class GithubDeploymentChannel:
    """A GitHub deployment per release on each route, for the release's commit, its statuses
    following the release. GitHub has no idempotency key: the deployment's id is recorded before
    any status is posted, and where none is recorded the deployment an earlier attempt may have
    created (found by its payload's release id) is looked for before one is created."""

    kind: ClassVar[NotifyKind] = GithubSettings.kind

    def __init__(
        self,
        github: GithubDeployments,
        records: DeploymentRecords,
        secrets: Secrets,
    ) -> None:
        self._github = github
        self._records = records
        self._secrets = secrets

    def send(self, settings: GithubSettings, outgoing: Outgoing) -> bool:
        message, notice = outgoing.message, outgoing.notice
        release = notice.release
        state = GITHUB_STATES.get(message.notification)
        if state is None:
            return False
        deployment_id = self._records.recorded(release.id, message.route)
        if deployment_id is None:
            commit = _commit_to_deploy(outgoing)
            if commit is None:
                return False
            repository = self._repository(settings)
            environment = settings.environment_for(release.pipeline)
            created = self._deployment(repository, release.id, environment, commit)
            deployment_id = self._records.record(release.id, message.route, created)
        else:
            repository = self._repository(settings)
        self._github.post_status(
            repository,
            deployment_id,
            state,
            f"{notice.title}: {notice.label}",
            log_url=settings.release_link(release.id),
            environment_url=settings.environment_url,
        )
        return True

    def _repository(self, settings: GithubSettings) -> GithubRepository:
        return GithubRepository(settings.base_url, settings.repository, self._secrets.get(settings.token))

    def _deployment(
        self, repository: GithubRepository, release_id: str, environment: str, commit: str
    ) -> int:
        """The release's deployment: the one an earlier attempt created (it died, or GitHub failed
        after creating it, before the id was recorded), else a new one. Looking every time costs
        one call per release and route, and keeps a release to one deployment even when the
        notice that created it was dead-lettered before its id was recorded."""
        found = self._github.find_deployment(repository, commit, environment, release_id)
        if found is not None:
            logger.info(
                "found the GitHub deployment an earlier attempt created", extra={"release_id": release_id}
            )
            return found
        return self._github.create_deployment(
            repository, commit, environment, release_id, f"release {release_id}"
        )


def _commit_to_deploy(outgoing: Outgoing) -> str | None:
    """The commit a release's GitHub deployment is created for, when this notice may create it
    (the route's ``on`` names it); None when it may not, or the release has no commit (logged)."""
    if not outgoing.opens_thread:
        return None
    release = outgoing.notice.release
    commit = release.metadata.get(COMMIT_METADATA)
    if not commit:
        logger.warning(
            "no GitHub deployment: the release has no commit sha (relco bundle push attaches it)",
            extra={"release_id": release.id, "route": outgoing.message.route},
        )
        return None
    return commit


def channel_registry(
    secrets: Secrets,
    *,
    slack: SlackThreads,
    slack_webhook: SlackWebhook,
    email_sender: EmailSender,
    sns: TopicPublisher,
    webhook: WebhookPoster,
    github: GithubDeployments,
    github_records: DeploymentRecords,
    slack_card_actions: bool = False,
) -> Mapping[NotifyKind, Channel[Any]]:
    """Every kind's channel, by kind; ``slack_card_actions`` puts buttons on bot-token cards."""
    channels: tuple[Channel[Any], ...] = (
        SlackThreadChannel(slack, secrets, slack_card_actions),
        SlackWebhookChannel(slack_webhook, secrets),
        EmailChannel(email_sender),
        SnsChannel(sns),
        WebhookChannel(webhook, secrets),
        GithubDeploymentChannel(github, github_records, secrets),
    )
    return {channel.kind: channel for channel in channels}
