"""One simulated clock for the handlers and the parts of moto whose timing the coordinator
depends on, so visibility timeouts, delays, leases, reconcile's schedule and retries happen at
their real relative times without the sweep waiting for them.

Where the time is read, and why each is driven:

- the use cases: ``Wiring.clock`` (``chalicelib/service/wiring.py``), built by
  ``chalicelib.bootstrap.wiring()`` from ``bootstrap.SystemClock``; the sweep puts its clock in
  that name, so the production wiring (boto3 clients, adapters) is otherwise unchanged.
- moto's SQS: ``moto/sqs/models.py`` imports ``unix_time`` and ``unix_time_millis`` from
  ``moto.core.utils`` by name and reads them for ``DelaySeconds`` (``Message.delay``), the
  visibility timeout (``Message.change_visibility``, ``Message.visible``), ``SentTimestamp`` and
  FIFO deduplication. Patching those two names in that module moves SQS alone; no other backend
  sees the simulated time through them.
- moto's CodeDeploy (``create_time``, which ``ListDeployments(createTimeRange=...)`` filters on:
  a retry looks for the deployment an earlier attempt created that way) and S3 (``LastModified``,
  which orders uploads) read ``moto.core.utils.utcnow``, imported by name into their models.
- Powertools' idempotency utility, which keeps the API's Idempotency-Key claims
  (``chalicelib/adapters/request_ledger.py``: when a dead request's claim lapses), reads
  ``dt.datetime.now()`` through the name ``dt`` in four modules (``idempotency.base`` and
  ``persistence.base``, ``.dynamodb``, ``.datarecord``); each gets a ``dt`` whose ``now()`` is the
  clock's.
- slack_sdk's ``SignatureVerifier``, which refuses a Slack request whose timestamp is more than
  five minutes from its ``Clock().now()`` (``slack_sdk/signature/__init__.py``; the verifier's
  default clock is made once, so the class's ``now`` is patched): the sweep's clicks are signed at
  the run's time.

Everything else keeps the wall clock: nothing the coordinator decides depends on it.
"""

from __future__ import annotations

import contextlib
import datetime as datetime_module
import types
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo

import pytest

# A fixed start, so two runs of one seed are the same run.
EPOCH = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)


class SimulatedClock:
    """What ``Wiring.clock`` needs (``now()``), moved only by the sweep."""

    def __init__(self) -> None:
        self._now = EPOCH

    def now(self) -> datetime:
        return self._now

    @property
    def seconds(self) -> float:
        """Seconds since the start of the run."""
        return (self._now - EPOCH).total_seconds()

    def advance_to(self, seconds: float) -> None:
        """Move to ``seconds`` after the start; time never runs backwards."""
        target = EPOCH + timedelta(seconds=seconds)
        if target > self._now:
            self._now = target

    def reset(self) -> None:
        self._now = EPOCH

    def _naive_utc(self) -> datetime:
        # moto keeps naive UTC datetimes (moto.core.utils.utcnow).
        return self._now.replace(tzinfo=None)

    def _datetime_module(self) -> types.SimpleNamespace:
        """The ``datetime`` module as Powertools' idempotency modules use it, its ``now()`` this
        clock's (aware: Powertools only takes its ``timestamp()`` and adds timedeltas)."""
        clock = self

        class SimulatedDatetime(datetime):
            @classmethod
            def now(cls, tz: tzinfo | None = None) -> SimulatedDatetime:
                moment = clock.now() if tz is None else clock.now().astimezone(tz)
                return cls.fromtimestamp(moment.timestamp(), moment.tzinfo)

        return types.SimpleNamespace(**{**vars(datetime_module), "datetime": SimulatedDatetime})

    def _unix_time(self, dt: datetime | None = None) -> float:
        moment = dt if dt is not None else self._naive_utc()
        return (moment - datetime(1970, 1, 1)).total_seconds()

    def _unix_time_millis(self, dt: datetime | None = None) -> float:
        return self._unix_time(dt) * 1000.0


@contextlib.contextmanager
def driving_time(clock: SimulatedClock) -> Iterator[None]:
    """Point the use cases, Powertools' idempotency, slack_sdk's signature check and moto's SQS,
    CodeDeploy and S3 at ``clock`` while inside."""
    from aws_lambda_powertools.utilities.idempotency import base as idempotency_base
    from aws_lambda_powertools.utilities.idempotency.persistence import base as persistence_base
    from aws_lambda_powertools.utilities.idempotency.persistence import datarecord, dynamodb
    from moto.codedeploy import models as codedeploy_models
    from moto.s3 import models as s3_models
    from moto.sqs import models as sqs_models
    from slack_sdk import signature

    from chalicelib import bootstrap

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bootstrap, "SystemClock", lambda: clock)
        patch.setattr(sqs_models, "unix_time", clock._unix_time)
        patch.setattr(sqs_models, "unix_time_millis", clock._unix_time_millis)
        patch.setattr(codedeploy_models, "utcnow", clock._naive_utc)
        patch.setattr(s3_models, "utcnow", clock._naive_utc)
        patch.setattr(signature.Clock, "now", lambda _self: clock.now().timestamp())
        simulated = clock._datetime_module()
        for module in (idempotency_base, persistence_base, datarecord, dynamodb):
            patch.setattr(module, "dt", simulated)
        yield
