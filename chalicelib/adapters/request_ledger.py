"""The API's ``Idempotency-Key`` answers, kept by Powertools' idempotency utility
(``idempotent_function`` with ``DynamoDBPersistenceLayer``) in the releases table.

Imported on the first request that needs it (``DynamoReleaseStore.request_ledger``), never at cold
start: Powertools' idempotency brings jmespath and its own modules, which most invocations do not
use (DESIGN.md section 8's cold-start budget).

A record: ``pk=IDEMPOTENCY``, ``sk=api#<sha256 of the key>``, Powertools' ``status`` (INPROGRESS,
COMPLETED), ``validation`` (a hash of the request: the same key with another request is refused),
``data`` (the answer, JSON), ``in_progress_expiration`` (milliseconds: when the request holding the
key must be dead) and ``expires_at`` (seconds: when the answer is forgotten; the table's TTL).
Powertools' composite key puts one static value in the partition key, so every record shares a
partition: the API's reserved concurrency (5, infra/sizing.py) is far below the 1,000 writes per
second one partition takes. The records carry no ``kind``, so the table's stream consumer
(chalicelib/adapters/release_stream.py) passes over them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyInconsistentStateError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from chalicelib.log import logger
from chalicelib.service.ports import IdempotencyKeyBusy, IdempotencyKeyReused

PARTITION = "IDEMPOTENCY"
KEY_PREFIX = "api"
# The releases table's TTL attribute (infra/stack.py TTL_ATTRIBUTE).
EXPIRY_ATTRIBUTE = "expires_at"
# How long an answer is given again for its key; then the key may be used afresh.
ANSWER_KEPT_FOR = timedelta(hours=24)


class _TimeLeft(LambdaContext):
    """What Powertools reads of the registered Lambda context: how long the request can still run,
    which dates the in-progress claim's expiry."""

    def __init__(self, time_left: timedelta) -> None:
        self._milliseconds = int(time_left.total_seconds() * 1000)

    def get_remaining_time_in_millis(self) -> int:  # type: ignore[override]
        return self._milliseconds


class PowertoolsRequestLedger:
    def __init__(self, client: Any, table_name: str) -> None:
        self._persistence = DynamoDBPersistenceLayer(
            table_name=table_name,
            key_attr="pk",
            sort_key_attr="sk",
            static_pk_value=PARTITION,
            expiry_attr=EXPIRY_ATTRIBUTE,
            boto3_client=client,
        )

    def answer_once(
        self, key: str, request_hash: str, answer: Callable[[], dict[str, Any]], time_left: timedelta
    ) -> tuple[dict[str, Any], bool]:
        replayed = False
        failure: Exception | None = None

        # Powertools' response hook (its parameter names are its protocol's): called only for an
        # answer read from the table.
        def kept_answer(response: Any, idempotent_data: DataRecord) -> Any:  # noqa: ARG001
            nonlocal replayed
            replayed = True
            return response

        # Powertools reads the key and the request's hash from this keyword argument; the answer
        # does not need them.
        def run(request: dict[str, str]) -> dict[str, Any]:  # noqa: ARG001
            nonlocal failure
            try:
                return answer()
            except Exception as error:
                failure = error
                raise

        config = IdempotencyConfig(
            event_key_jmespath="key",
            payload_validation_jmespath="request",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=int(ANSWER_KEPT_FOR.total_seconds()),
            hash_function="sha256",
            response_hook=kept_answer,
        )
        config.register_lambda_context(_TimeLeft(time_left))
        once = idempotent_function(
            run,
            data_keyword_argument="request",
            persistence_store=self._persistence,
            config=config,
            key_prefix=KEY_PREFIX,
        )
        try:
            result: dict[str, Any] = once(request={"key": key, "request": request_hash})
        except IdempotencyValidationError:
            raise IdempotencyKeyReused(key) from None
        except (IdempotencyAlreadyInProgressError, IdempotencyInconsistentStateError):
            # Inconsistent: the key's record changed hands between Powertools' write and read
            # (another request claiming or finishing it) three times over; like a busy key, a
            # retry in a moment finds it settled.
            raise IdempotencyKeyBusy(key) from None
        except IdempotencyPersistenceLayerError as broken:
            if failure is not None:
                # The request failed and its claim could not be deleted: the claim lapses when
                # the request's time is up. The caller hears why the request failed.
                logger.exception("could not drop an idempotency claim; it lapses by itself")
                raise failure from None
            # The table refused or failed a call: the AWS error answers the caller.
            raise (broken.__cause__ or broken) from None
        return result, replayed
