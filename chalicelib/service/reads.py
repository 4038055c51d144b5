"""Saving reads in read-decide-write loops: the first attempt may use a release the caller
already holds; the conditional write catches a stale copy, and the retry reads afresh."""

from __future__ import annotations

import dataclasses

from chalicelib.domain.release import Release
from chalicelib.service.ports import ReleaseStore


def stored(release: Release) -> Release:
    """The release as the store holds it after committing it (the store writes version + 1)."""
    return dataclasses.replace(release, version=release.version + 1)


class FirstRead:
    """Returns ``known`` once, then reads from the store on every later call."""

    def __init__(self, store: ReleaseStore, release_id: str, known: Release | None) -> None:
        self._store = store
        self._release_id = release_id
        self._known = known if known is not None and known.id == release_id else None

    def __call__(self) -> Release | None:
        if self._known is not None:
            known, self._known = self._known, None
            return known
        return self._store.get_release(self._release_id)
