"""What a notify route of the pipelines file is made of: the notifications it may subscribe to,
its kind of channel and that kind's settings, typed.

A route's id digests its settings as written in the file (``route_key``), and delivery records and
Slack threads are keyed by it: each kind's settings therefore keep which form every setting was
written in (an SSM parameter or a Secrets Manager secret, a plain URL, an empty list or none), and
give the table back exactly with ``as_written``.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar


class Notification(StrEnum):
    """What a history event notifies (``notifications.notification_for``). The values are the wire
    and stored form: the pipelines file's ``on``, queued messages, the delivery log's keys."""

    STARTED = "started"
    QUEUED = "queued"
    # A release waits for a person's approval ([pipeline.approval]): the card says who may give it.
    AWAITING_APPROVAL = "awaiting_approval"
    # Not one a route subscribes to: a step inside a release (verification begins) that only a
    # Slack thread already following the release shows.
    PROGRESS = "progress"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    VERIFY_FAILED = "verify_failed"
    STOPPED = "stopped"
    SUPERSEDED = "superseded"

    @property
    def is_failure(self) -> bool:
        """A failure's notice carries diagnostics and pings the route's mentions."""
        return self in (Notification.FAILED, Notification.VERIFY_FAILED)


# The notifications a route's ``on`` may name, and those it gets when it names none.
SUBSCRIBABLE = frozenset(Notification) - {Notification.PROGRESS}
DEFAULT_SUBSCRIPTION = frozenset(
    {
        Notification.STARTED,
        Notification.AWAITING_APPROVAL,
        Notification.SUCCEEDED,
        Notification.FAILED,
        Notification.VERIFY_FAILED,
        Notification.ROLLED_BACK,
    }
)


class NotifyKind(StrEnum):
    SLACK = "slack"  # a bot token: one thread per release, its card kept up to date
    SLACK_WEBHOOK = "slack_webhook"
    EMAIL = "email"
    SNS = "sns"
    WEBHOOK = "webhook"
    GITHUB = "github"  # a GitHub deployment per release, its statuses following the release


@dataclass(frozen=True)
class SecretRef:
    """A secret named in the pipelines file: an SSM parameter or a Secrets Manager secret."""

    source: str  # "ssm" | "secretsmanager"
    name: str


# ``<name>_parameter`` names an SSM parameter, ``<name>_secret`` a Secrets Manager secret.
SECRET_SOURCES = {"_parameter": "ssm", "_secret": "secretsmanager"}


def secret_ref(settings: Mapping[str, Any], name: str) -> SecretRef | None:
    """The secret a table as written names for ``name``: ``<name>_parameter`` or ``<name>_secret``."""
    for suffix, source in SECRET_SOURCES.items():
        value = settings.get(f"{name}{suffix}")
        if isinstance(value, str) and value:
            return SecretRef(source, value)
    return None


def _written_secret(name: str, ref: SecretRef) -> dict[str, str]:
    suffix = next(suffix for suffix, source in SECRET_SOURCES.items() if source == ref.source)
    return {f"{name}{suffix}": ref.name}


def _required_secret(settings: Mapping[str, Any], name: str) -> SecretRef:
    ref = secret_ref(settings, name)
    if ref is None:
        raise ValueError(f"no {name}_parameter or {name}_secret")
    return ref


@dataclass(frozen=True)
class SlackMentions:
    """Who a Slack failure pings. None: the setting is not in the file (an empty list is)."""

    mention_on_failure: tuple[str, ...] | None = None
    authors: Mapping[str, str] | None = None

    def written(self) -> dict[str, Any]:
        table: dict[str, Any] = {}
        if self.mention_on_failure is not None:
            table["mention_on_failure"] = list(self.mention_on_failure)
        if self.authors is not None:
            table["authors"] = dict(self.authors)
        return table

    @classmethod
    def from_written(cls, settings: Mapping[str, Any]) -> SlackMentions:
        mention, authors = settings.get("mention_on_failure"), settings.get("authors")
        return cls(
            mention_on_failure=None if mention is None else tuple(mention),
            authors=None if authors is None else dict(authors),
        )


@dataclass(frozen=True)
class SlackSettings:
    kind: ClassVar[NotifyKind] = NotifyKind.SLACK
    channel: str  # a name ("#deploys") or an id
    token: SecretRef
    mentions: SlackMentions = SlackMentions()

    def as_written(self) -> dict[str, Any]:
        return {"channel": self.channel, **_written_secret("token", self.token), **self.mentions.written()}

    @classmethod
    def from_written(cls, settings: Mapping[str, Any]) -> SlackSettings:
        return cls(
            channel=settings["channel"],
            token=_required_secret(settings, "token"),
            mentions=SlackMentions.from_written(settings),
        )


@dataclass(frozen=True)
class SlackWebhookSettings:
    kind: ClassVar[NotifyKind] = NotifyKind.SLACK_WEBHOOK
    url: SecretRef
    mentions: SlackMentions = SlackMentions()

    def as_written(self) -> dict[str, Any]:
        return {**_written_secret("url", self.url), **self.mentions.written()}

    @classmethod
    def from_written(cls, settings: Mapping[str, Any]) -> SlackWebhookSettings:
        return cls(url=_required_secret(settings, "url"), mentions=SlackMentions.from_written(settings))


@dataclass(frozen=True)
class EmailSettings:
    kind: ClassVar[NotifyKind] = NotifyKind.EMAIL
    sender: str
    to: tuple[str, ...]

    def as_written(self) -> dict[str, Any]:
        return {"sender": self.sender, "to": list(self.to)}

    @classmethod
    def from_written(cls, settings: Mapping[str, Any]) -> EmailSettings:
        return cls(sender=settings["sender"], to=tuple(settings["to"]))


@dataclass(frozen=True)
class SnsSettings:
    kind: ClassVar[NotifyKind] = NotifyKind.SNS
    topic_arn: str

    def as_written(self) -> dict[str, Any]:
        return {"topic_arn": self.topic_arn}

    @classmethod
    def from_written(cls, settings: Mapping[str, Any]) -> SnsSettings:
        return cls(topic_arn=settings["topic_arn"])


@dataclass(frozen=True)
class WebhookSettings:
    kind: ClassVar[NotifyKind] = NotifyKind.WEBHOOK
    url: str | SecretRef  # plain in the file, or a secret
    signing_key: SecretRef

    def as_written(self) -> dict[str, Any]:
        url = {"url": self.url} if isinstance(self.url, str) else _written_secret("url", self.url)
        return {**url, **_written_secret("signing_key", self.signing_key)}

    @classmethod
    def from_written(cls, settings: Mapping[str, Any]) -> WebhookSettings:
        url = settings.get("url")
        return cls(
            url=url if isinstance(url, str) else _required_secret(settings, "url"),
            signing_key=_required_secret(settings, "signing_key"),
        )


GITHUB_API_URL = "https://api.github.com"
# Where a github route's ``release_url`` takes the release's id.
RELEASE_ID_PLACEHOLDER = "{release_id}"
# A GitHub route follows a release from the first notice: a waiting release's deployment is
# "queued", so one superseded while it waited ends "inactive" like one that was stopped.
GITHUB_SUBSCRIPTION = SUBSCRIBABLE


@dataclass(frozen=True)
class GithubSettings:
    """GitHub deployments: one per release in ``repository`` for the release's commit, in
    ``environment`` (the pipeline's name when None), through ``api_url`` (GitHub Enterprise
    Server's ``https://HOST/api/v3``; None: github.com). Each status links the release at
    ``release_url`` (its ``{release_id}`` filled in) and the deployed app at ``environment_url``;
    None: no such link."""

    kind: ClassVar[NotifyKind] = NotifyKind.GITHUB
    repository: str  # "owner/name"
    token: SecretRef
    api_url: str | None = None
    environment: str | None = None
    release_url: str | None = None
    environment_url: str | None = None

    @property
    def owner_and_name(self) -> tuple[str, str]:
        owner, _, name = self.repository.partition("/")
        return owner, name

    def environment_for(self, pipeline: str) -> str:
        return self.environment or pipeline

    @property
    def base_url(self) -> str:
        return (self.api_url or GITHUB_API_URL).rstrip("/")

    def release_link(self, release_id: str) -> str | None:
        """The release's page as the route's ``release_url`` names it, or None without one."""
        if self.release_url is None:
            return None
        return self.release_url.replace(RELEASE_ID_PLACEHOLDER, urllib.parse.quote(release_id, safe=""))

    def as_written(self) -> dict[str, Any]:
        optional = {
            "api_url": self.api_url,
            "environment": self.environment,
            "release_url": self.release_url,
            "environment_url": self.environment_url,
        }
        return {
            "repository": self.repository,
            **_written_secret("token", self.token),
            **{name: value for name, value in optional.items() if value is not None},
        }

    @classmethod
    def from_written(cls, settings: Mapping[str, Any]) -> GithubSettings:
        return cls(
            repository=settings["repository"],
            token=_required_secret(settings, "token"),
            api_url=settings.get("api_url"),
            environment=settings.get("environment"),
            release_url=settings.get("release_url"),
            environment_url=settings.get("environment_url"),
        )


def default_subscription(kind: NotifyKind) -> frozenset[Notification]:
    """The notifications a route of ``kind`` gets when its ``on`` names none."""
    return GITHUB_SUBSCRIPTION if kind is NotifyKind.GITHUB else DEFAULT_SUBSCRIPTION


ChannelSettings = (
    SlackSettings | SlackWebhookSettings | EmailSettings | SnsSettings | WebhookSettings | GithubSettings
)
SETTINGS_BY_KIND: Mapping[NotifyKind, type[ChannelSettings]] = {
    settings.kind: settings
    for settings in (
        SlackSettings,
        SlackWebhookSettings,
        EmailSettings,
        SnsSettings,
        WebhookSettings,
        GithubSettings,
    )
}
