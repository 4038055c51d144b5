"""What the notification use cases need from the outside world: the notify queue and its
dead-letter queue, the delivery log, secrets and the channels' services, and the channels
themselves, one per kind of notify route.

Channel adapters raise :class:`DeliveryRejected` when retrying cannot help and
:class:`DeliveryDeferred` when the channel asks to be called again later; anything else they raise
is transient and retried with backoff.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

if TYPE_CHECKING:
    # Named in signatures only: every function's wiring imports this module, and only the
    # notifying ones need a notification's content, messages and routes (import app stays lean).
    from chalicelib.domain.notification_content import Notice
    from chalicelib.domain.notifications import NotifyMessage, SlackPostMark, SlackThread
    from chalicelib.domain.notify_routes import NotifyKind, SecretRef


class DeliveryRejected(Exception):
    """The channel refused for good (bad token, unknown channel, unverified sender): the message
    goes to the dead-letter queue with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DeliveryDeferred(Exception):
    """The channel asked to be called again after ``retry_after_s`` (Slack's 429 Retry-After)."""

    def __init__(self, reason: str, retry_after_s: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Receipt:
    """How the notify queue knows the message being handled: to delay its next delivery."""

    handle: str
    receive_count: int


class NotQueued(Exception):
    """A send stopped short: the messages before ``first`` are queued, the others not all (their
    resend is deduplicated)."""

    def __init__(self, reason: str, first: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.first = first


class NotifyQueue(Protocol):
    def send(self, messages: Sequence[NotifyMessage]) -> None:
        """Enqueue every message, in order, or raise :class:`NotQueued` saying from which one
        they did not all go out."""
        ...

    def retry_after(self, receipt: Receipt, delay_s: int) -> None:
        """Make the message being handled visible again only after ``delay_s``."""
        ...

    def dead_letter(self, message: NotifyMessage, reason: str) -> None: ...


class Claim(StrEnum):
    CLAIMED = "claimed"  # this attempt delivers, and is the first to try
    # This attempt delivers, taking over from an earlier one that gave up or died: that one may
    # have posted already, so a channel that can look for its post looks before posting again.
    RETAKEN = "retaken"
    DELIVERED = "delivered"  # an earlier attempt delivered: nothing to do
    BUSY = "busy"  # another attempt is delivering right now


class DeliveryLog(Protocol):
    """One record per (release, history event, route), written conditionally."""

    def claim(self, message: NotifyMessage, now: datetime) -> Claim: ...

    def confirm(self, message: NotifyMessage, now: datetime) -> None: ...

    def confirm_and_claim(
        self, delivered: NotifyMessage, message: NotifyMessage, now: datetime
    ) -> Claim | None:
        """In one write, ``delivered`` confirmed and ``message`` claimed by its first attempt
        (``Claim.CLAIMED``). None when that write did not go through, because ``message`` has a
        record already (a retry, a duplicate) or the write failed: the caller then confirms and
        claims alone, which sorts out which."""
        ...

    def release(self, message: NotifyMessage) -> None:
        """Give up a claim whose delivery failed, so the retry may claim it at once (as
        ``RETAKEN``: the failed attempt may have posted part of it)."""
        ...


class Secrets(Protocol):
    def get(self, ref: SecretRef) -> str: ...


class SlackThreads(Protocol):
    """Slack's Web API with a bot token."""

    def post(
        self,
        token: str,
        channel: str,
        text: str,
        blocks: Sequence[Mapping[str, object]],
        thread_ts: str | None,
        *,
        mark: SlackPostMark,
    ) -> SlackThread:
        """Post a message (a reply when ``thread_ts`` is given) carrying ``mark`` in its
        metadata; return where it landed."""
        ...

    def find_card(self, token: str, channel: str, mark: SlackPostMark, since: datetime) -> SlackThread | None:
        """The root message carrying ``mark`` posted to ``channel`` (a name or an id) after
        ``since``, or None."""
        ...

    def find_reply(self, token: str, thread: SlackThread, mark: SlackPostMark, since: datetime) -> bool:
        """Whether a reply carrying ``mark`` was posted in ``thread`` after ``since``."""
        ...

    def update(
        self, token: str, thread: SlackThread, text: str, blocks: Sequence[Mapping[str, object]]
    ) -> None: ...


class SlackWebhook(Protocol):
    def send(self, url: str, text: str, blocks: Sequence[Mapping[str, object]]) -> None: ...


class EmailSender(Protocol):
    def send(self, sender: str, recipients: Sequence[str], subject: str, text: str, html: str) -> None: ...


class TopicPublisher(Protocol):
    def publish(self, topic_arn: str, subject: str, message: str, attributes: Mapping[str, str]) -> None: ...


class WebhookPoster(Protocol):
    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> None: ...


@dataclass(frozen=True)
class GithubRepository:
    """A repository as the GitHub adapter calls it: its API (github.com's or a GitHub Enterprise
    Server's), its "owner/name" and the token to call with."""

    api_url: str
    name: str
    # Out of repr: a repository in a log line or a traceback must not carry the token.
    token: str = field(repr=False)


class GithubDeployments(Protocol):
    """GitHub's REST API for deployments."""

    def find_deployment(
        self, repository: GithubRepository, sha: str, environment: str, release_id: str
    ) -> int | None:
        """The deployment of ``sha`` in ``environment`` created for ``release_id``, or None."""
        ...

    def create_deployment(
        self, repository: GithubRepository, sha: str, environment: str, release_id: str, description: str
    ) -> int: ...

    def post_status(
        self,
        repository: GithubRepository,
        deployment_id: int,
        state: str,
        description: str,
        *,
        log_url: str | None,
        environment_url: str | None,
    ) -> None:
        """A status on the deployment; ``log_url`` (the release's page) and ``environment_url``
        (the deployed app) are sent when given."""
        ...


class DeploymentRecords(Protocol):
    """Which GitHub deployment stands for a release on a route: recorded in the delivery log
    right after it is created, before any status is posted to it."""

    def recorded(self, release_id: str, route: str) -> int | None: ...

    def record(self, release_id: str, route: str, deployment_id: int) -> int:
        """Record ``deployment_id`` unless one is recorded already; the one recorded."""
        ...


@dataclass(frozen=True)
class Outgoing:
    """One delivery as its channel sends it: the message, the notice rendered for it, and what
    the delivery knows around it."""

    message: NotifyMessage
    notice: Notice
    # Taken over from an earlier attempt, which may have sent part of it.
    retaken: bool
    # The route's ``on`` names the notification: only such a one may open a Slack thread.
    opens_thread: bool
    sent_at: datetime
    # Stores a Slack thread's root card once posted, before anything else is sent: a retry that
    # found no stored thread would post a second card.
    remember_thread: Callable[[SlackThread], None]


SettingsT_contra = TypeVar("SettingsT_contra", contravariant=True)


class Channel(Protocol[SettingsT_contra]):
    """Sends notices to the routes of one kind, each with its route's typed settings."""

    kind: ClassVar[NotifyKind]

    def send(self, settings: SettingsT_contra, outgoing: Outgoing) -> bool:
        """Send; False when there was nothing to send. Raises :class:`DeliveryRejected`,
        :class:`DeliveryDeferred` or anything transient, as the module says."""
        ...


@dataclass(frozen=True)
class NotificationAdapters:
    queue: NotifyQueue
    deliveries: DeliveryLog
    # The channel of each kind; a route whose kind has none is refused for good.
    channels: Mapping[NotifyKind, Channel[Any]]
