"""DORA's figures as CloudWatch metrics, one Embedded Metric Format line per release that reached
the deployment, written to the log as the table's stream brings the history event of its end.
The lines are at least once: a batch retried from a record it reported failed prints only what
comes from that record on, but a batch retried whole (the invocation timed out or raised after
printing; the event source mapping then bisects and retries it) prints its ended releases again.
The definitions are chalicelib/domain/dora.py's; docs/stats.md says where these differ from
``relco stats``.

The release itself usually comes in the same stream batch as its terminal event (one transaction
writes both under the same partition key), so the metric costs no AWS call; only a batch that
split them reads the release.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from chalicelib.domain.dora import TerminalFigures, terminal_figures
from chalicelib.domain.notifications import StreamedEvent
from chalicelib.domain.release import EventType, Release
from chalicelib.log import logger, new_metrics, write_metrics
from chalicelib.service.wiring import Wiring

# The ends a deployment can have; an aborted release (stopped, superseded) never reached it.
_ENDS = frozenset({EventType.EXECUTION_SUCCEEDED, EventType.EXECUTION_FAILED})


def record_ended(
    wiring: Wiring, streamed: Sequence[StreamedEvent], in_batch: Callable[[str], Release | None]
) -> None:
    """Print the metrics of each release these history events end. ``in_batch``: the release as
    the same stream batch last wrote it, or None."""
    for event in streamed:
        if event.event.type not in _ENDS:
            continue
        release = in_batch(event.release_id)
        if release is None or release.last_event_id < event.event.id:
            release = _read(wiring, event.release_id)
        if release is None:
            continue
        figures = terminal_figures(release)
        if figures.deployed:
            _emit(wiring.coordinator, release.pipeline, figures)


def _read(wiring: Wiring, release_id: str) -> Release | None:
    """Metrics are worth no retry of the batch (which would publish its notifications again): a
    release that cannot be read is logged and its metrics are left out."""
    try:
        release = wiring.store.get_release(release_id)
    except Exception as problem:
        logger.warning(
            "a release's metrics are left out: it could not be read",
            extra={"release_id": release_id, "why": repr(problem)},
        )
        return None
    if release is None:
        logger.warning(
            "a release's metrics are left out: it is not in the table", extra={"release_id": release_id}
        )
    return release


def _emit(coordinator: str, pipeline: str, figures: TerminalFigures) -> None:
    from aws_lambda_powertools.metrics import MetricUnit

    metrics = new_metrics(coordinator)
    metrics.add_dimension(name="pipeline", value=pipeline)
    metrics.add_metric(name="DeploymentCount", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="DeploymentFailed", unit=MetricUnit.Count, value=1 if figures.failed else 0)
    if figures.lead_time is not None:
        metrics.add_metric(
            name="LeadTimeSeconds", unit=MetricUnit.Seconds, value=figures.lead_time.total_seconds()
        )
    if figures.restore is not None:
        metrics.add_metric(
            name="RestoreSeconds", unit=MetricUnit.Seconds, value=figures.restore.total_seconds()
        )
    write_metrics(metrics.serialize_metric_set())
