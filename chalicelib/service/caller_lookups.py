"""What a caller names (a release id, a pipeline in the path or in the body), looked up, or a
``Refused`` saying what to fix: the API's queries and commands look things up the same way."""

from __future__ import annotations

from chalicelib.domain.api_requests import ConflictingState, InvalidValue, NotFound, known_release_id
from chalicelib.domain.pipelines import Pipeline
from chalicelib.domain.release import Release
from chalicelib.service.wiring import Wiring


def release_named(wiring: Wiring, release_id: str) -> Release:
    release = wiring.store.get_release(release_id) if known_release_id(release_id) else None
    if release is None:
        raise NotFound(f"no release {release_id[:200]!r}")
    return release


def pipeline_in_path(wiring: Wiring, name: str) -> Pipeline:
    pipeline = wiring.pipelines.named(name)
    if pipeline is None:
        raise NotFound(f"no pipeline {name[:200]!r}; configured: {_configured(wiring)}")
    return pipeline


def pipeline_in_body(wiring: Wiring, name: str) -> Pipeline:
    pipeline = wiring.pipelines.named(name)
    if pipeline is None:
        raise InvalidValue(f"pipeline {name[:200]!r} is not configured; configured: {_configured(wiring)}")
    return pipeline


def pipeline_of_release(wiring: Wiring, release: Release) -> Pipeline:
    pipeline = wiring.pipelines.named(release.pipeline)
    if pipeline is None:
        raise ConflictingState(
            f"pipeline {release.pipeline!r} of release {release.id} is no longer configured"
        )
    return pipeline


def _configured(wiring: Wiring) -> str:
    return ", ".join(pipeline.name for pipeline in wiring.pipelines.pipelines)
