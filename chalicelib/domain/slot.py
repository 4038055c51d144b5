"""The pipeline slot: CodeDeploy runs one deployment per group, so a pipeline has one active
release at a time and an ordered list of releases waiting for it.

Uploads are admitted in the order S3 stored them, not the order their events arrive: events are
retried and unordered, so an upload's event can arrive after a newer upload's release already
deployed. The slot remembers the newest upload that started, by S3's ``LastModified``; an upload
stored before it never starts (it would replace a newer build) and ends SUPERSEDED. Waiting
uploads keep S3's order too: under ``queue`` a late one waits ahead of those stored after it;
under ``supersede`` it cannot replace a newer waiting one. ``LastModified`` has
whole seconds: uploads stored in the same second cannot be ordered by it and are admitted in the
order they arrive (for one key, only S3's event ``sequencer`` could order them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class BusyPolicy(StrEnum):
    QUEUE = "queue"  # FIFO: every waiting release deploys in turn
    SUPERSEDE = "supersede"  # only the newest waiting release survives


@dataclass(frozen=True)
class UploadMark:
    """An automatic upload, and when S3 stored it (``LastModified``)."""

    release_id: str
    stored_at: datetime

    @property
    def second(self) -> datetime:
        """``LastModified``'s resolution: a whole second."""
        return self.stored_at.replace(microsecond=0)

    def stored_before(self, other: UploadMark) -> bool:
        return self.second < other.second


@dataclass(frozen=True)
class ApprovalMark:
    """A release awaiting approval: when the approval expires, and (an automatic upload) when S3
    stored it, so that once approved it keeps S3's order like any upload."""

    release_id: str
    expires_at: datetime
    upload: UploadMark | None = None


@dataclass(frozen=True)
class Admission:
    slot: PipelineSlot
    active: bool  # the release took the slot and may start now
    superseded: tuple[str, ...]  # waiting releases the newcomer replaced
    # The newer upload that turned this one away: deploying it would replace a newer build.
    turned_away_by: UploadMark | None = None


@dataclass(frozen=True)
class PipelineSlot:
    pipeline: str
    active: str | None = None
    waiting: tuple[str, ...] = ()
    last_good: str | None = None
    # When ``last_good`` succeeded: a promotion downstream is due its soak after it.
    last_good_at: datetime | None = None
    # The newest automatic upload that started: an upload S3 stored before it never starts.
    newest_started: UploadMark | None = None
    # When S3 stored each waiting automatic upload: the line keeps S3's order, and a promotion
    # moves ``newest_started``.
    waiting_uploads: tuple[UploadMark, ...] = ()
    # Releases awaiting approval, oldest first: they have not taken a place in the line yet.
    awaiting_approval: tuple[ApprovalMark, ...] = ()
    # Optimistic-lock version of the stored item; 0 when it was never written.
    version: int = 0

    def admit(
        self,
        release_id: str,
        policy: BusyPolicy,
        upload: UploadMark | None = None,
        *,
        may_start: bool = True,
    ) -> Admission:
        """Take the slot if it is free (and the release ``may_start``: not during a freeze), else
        wait per the pipeline's policy. An automatic ``upload`` stored before one that started,
        or (supersede) before the one waiting, is turned away; under ``queue`` it waits ahead of
        the waiting uploads stored after it."""
        if upload is not None:
            newer = self._newer_than(upload, policy)
            if newer is not None:
                return Admission(self, False, (), newer)
        if may_start and self.active is None and not self.waiting:
            started = upload or self.newest_started
            return Admission(dataclasses.replace(self, active=release_id, newest_started=started), True, ())
        marks = (upload,) if upload else ()
        if policy is BusyPolicy.SUPERSEDE:
            superseded = self.waiting
            return Admission(
                dataclasses.replace(self, waiting=(release_id,), waiting_uploads=marks), False, superseded
            )
        position = self._place_in_line(upload)
        waiting = (*self.waiting[:position], release_id, *self.waiting[position:])
        return Admission(
            dataclasses.replace(self, waiting=waiting, waiting_uploads=(*self.waiting_uploads, *marks)),
            False,
            (),
        )

    def _newer_than(self, upload: UploadMark, policy: BusyPolicy) -> UploadMark | None:
        if self.newest_started is not None and upload.stored_before(self.newest_started):
            return self.newest_started
        if policy is BusyPolicy.SUPERSEDE:
            return next((mark for mark in self.waiting_uploads if upload.stored_before(mark)), None)
        return None

    def _place_in_line(self, upload: UploadMark | None) -> int:
        """Before the first waiting upload S3 stored in a later second; else at the end."""
        if upload is not None:
            later = {mark.release_id for mark in self.waiting_uploads if mark.second > upload.second}
            for position, waiting_id in enumerate(self.waiting):
                if waiting_id in later:
                    return position
        return len(self.waiting)

    def give_first(self, release_id: str) -> PipelineSlot:
        """Rollbacks go first: the slot if it is free, else the head of the waiting line."""
        if self.active is None:
            return dataclasses.replace(self, active=release_id)
        return dataclasses.replace(self, waiting=(release_id, *self.waiting))

    def free(self, release_id: str) -> PipelineSlot:
        """Let go of a release that reached a terminal state, wherever it stands in the slot."""
        active = None if self.active == release_id else self.active
        waiting = tuple(waiting_id for waiting_id in self.waiting if waiting_id != release_id)
        marks = tuple(mark for mark in self.waiting_uploads if mark.release_id != release_id)
        awaiting = tuple(mark for mark in self.awaiting_approval if mark.release_id != release_id)
        return dataclasses.replace(
            self, active=active, waiting=waiting, waiting_uploads=marks, awaiting_approval=awaiting
        )

    def approval_mark(self, release_id: str) -> ApprovalMark | None:
        return next((mark for mark in self.awaiting_approval if mark.release_id == release_id), None)

    def promote(self, release_id: str) -> PipelineSlot:
        """A waiting release takes the free slot (the head of the line, unless a freeze lets only
        one further back start)."""
        mark = next((mark for mark in self.waiting_uploads if mark.release_id == release_id), None)
        return dataclasses.replace(
            self,
            active=release_id,
            waiting=tuple(waiting_id for waiting_id in self.waiting if waiting_id != release_id),
            waiting_uploads=tuple(m for m in self.waiting_uploads if m.release_id != release_id),
            newest_started=mark or self.newest_started,
        )
