"""Who may act on a release, as the pipelines file says: approvers of a gated release (IAM
principals through the API, Slack users or user groups through the release card) and the Slack
users who may cancel, roll back and redeploy from the card.

A person is recorded by ``Person.name`` as the actor of what they did.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

# An IAM role's ARN, whose sessions call the API as ``arn:aws:sts::<account>:assumed-role/<name>/<session>``.
_ROLE_ARN = re.compile(r"arn:(?P<partition>[^:]+):iam::(?P<account>[^:]*):role/(?:.*/)?(?P<name>[^/]+)")


@dataclass(frozen=True)
class Person:
    """Who asks: an IAM principal through the signed API, or a Slack user clicking a card."""

    iam_arn: str | None = None
    slack_user: str | None = None
    # The Slack user groups (S...) among those the pipelines file names that the user belongs to.
    slack_groups: frozenset[str] = frozenset()
    slack_name: str | None = None

    @property
    def name(self) -> str:
        """The actor recorded in the history: the caller's ARN, or ``slack:<user id> (<name>)``."""
        if self.iam_arn is not None:
            return self.iam_arn
        label = f"slack:{self.slack_user}"
        return f"{label} ({self.slack_name})" if self.slack_name else label


def iam_principal_matches(pattern: str, arn: str) -> bool:
    """``pattern`` (an ARN, ``*`` and ``?`` as wildcards) names ``arn``. A role's ARN also names the
    role's sessions, which is how a person who assumed the role reaches the API."""
    if fnmatch.fnmatchcase(arn, pattern):
        return True
    role = _ROLE_ARN.fullmatch(pattern)
    if role is None:
        return False
    sessions = f"arn:{role['partition']}:sts::{role['account']}:assumed-role/{role['name']}/*"
    return fnmatch.fnmatchcase(arn, sessions)


def slack_allowed(allowed: tuple[str, ...], person: Person) -> bool:
    """The Slack user is listed by id, or belongs to a listed user group."""
    if person.slack_user is None:
        return False
    return person.slack_user in allowed or bool(person.slack_groups & set(allowed))


class OnNewer(StrEnum):
    """What a newer release does to one still awaiting approval."""

    SUPERSEDE = "supersede"  # only the newest waits for approval: nobody approves a stale build
    QUEUE = "queue"  # each waits for its own approval


DEFAULT_APPROVAL_EXPIRY = timedelta(hours=24)


@dataclass(frozen=True)
class ApprovalPolicy:
    """``[pipeline.approval]``: a release (other than a rollback) waits for a person's approval
    before it takes the pipeline's slot."""

    required: bool = False
    # IAM principal ARNs or patterns that may approve through the API.
    approvers: tuple[str, ...] = ()
    # Slack user (U..., W...) or user group (S...) ids that may approve from the release card.
    slack_approvers: tuple[str, ...] = ()
    expires_after: timedelta = DEFAULT_APPROVAL_EXPIRY
    on_newer: OnNewer = OnNewer.SUPERSEDE

    def allows(self, person: Person) -> bool:
        if person.iam_arn is not None:
            return any(iam_principal_matches(pattern, person.iam_arn) for pattern in self.approvers)
        return slack_allowed(self.slack_approvers, person)

    @property
    def slack_groups(self) -> tuple[str, ...]:
        return tuple(entry for entry in self.slack_approvers if entry.startswith("S"))


@dataclass(frozen=True)
class SlackOperators:
    """``[pipeline.slack] operators``: Slack users or user groups who may cancel, roll back and
    redeploy from the release card (through the API, IAM decides)."""

    operators: tuple[str, ...] = field(default_factory=tuple)

    def allows(self, person: Person) -> bool:
        return slack_allowed(self.operators, person)

    @property
    def slack_groups(self) -> tuple[str, ...]:
        return tuple(entry for entry in self.operators if entry.startswith("S"))
