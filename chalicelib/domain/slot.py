"""The pipeline slot: CodeDeploy runs one deployment per group, so a pipeline has one active
release at a time and an ordered list of releases waiting for it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum


class BusyPolicy(StrEnum):
    QUEUE = "queue"  # FIFO: every waiting release deploys in turn
    SUPERSEDE = "supersede"  # only the newest waiting release survives


@dataclass(frozen=True)
class Admission:
    slot: PipelineSlot
    active: bool  # the release took the slot and may start now
    superseded: tuple[str, ...]  # waiting releases the newcomer replaced


@dataclass(frozen=True)
class PipelineSlot:
    pipeline: str
    active: str | None = None
    waiting: tuple[str, ...] = ()
    last_good: str | None = None
    # Optimistic-lock version of the stored item; 0 when it was never written.
    version: int = 0

    def admit(self, release_id: str, policy: BusyPolicy) -> Admission:
        """Take the slot if it is free, else wait per the pipeline's policy."""
        if self.active is None and not self.waiting:
            return Admission(dataclasses.replace(self, active=release_id), True, ())
        if policy is BusyPolicy.SUPERSEDE:
            superseded = self.waiting
            return Admission(dataclasses.replace(self, waiting=(release_id,)), False, superseded)
        return Admission(dataclasses.replace(self, waiting=(*self.waiting, release_id)), False, ())

    def give_first(self, release_id: str) -> PipelineSlot:
        """Rollbacks go first: the slot if it is free, else the head of the waiting line."""
        if self.active is None:
            return dataclasses.replace(self, active=release_id)
        return dataclasses.replace(self, waiting=(release_id, *self.waiting))

    def free(self, release_id: str) -> PipelineSlot:
        """Let go of a release that reached a terminal state, wherever it stands in the slot."""
        active = None if self.active == release_id else self.active
        waiting = tuple(waiting_id for waiting_id in self.waiting if waiting_id != release_id)
        return dataclasses.replace(self, active=active, waiting=waiting)

    def promote_next(self) -> tuple[PipelineSlot, str | None]:
        """When the slot is free, the first waiting release takes it."""
        if self.active is not None or not self.waiting:
            return self, None
        head, *rest = self.waiting
        return dataclasses.replace(self, active=head, waiting=tuple(rest)), head
