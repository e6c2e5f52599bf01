"""The repository: every DynamoDB call stagetrack makes goes through here.

Round trips per use (asserted by tests, printed by bench/):
- load a run with its stages: 1 strongly consistent Query on the run's partition
- get a stage: 1 strongly consistent GetItem
- save a changed run: 1 TransactWrite, every item conditioned on the version it was read at
- next run number of a pipeline: 1 UpdateItem (ADD), conditioned on the pipeline not paused
- list runs of a pipeline: 1 Query on a GSI per page

Every multi-item write is built by ``transaction()``. While the request being handled holds an
Idempotency-Key claim (``holding_claim``, entered by api/idempotency.py), the first transaction
of its change carries one more item: the key's record, set COMMITTED with what was written
(``effect``, e.g. ``{"run": "web:7"}``), on condition that the claim is still this request's.
So the effect and "this key took effect" are one atomic write: a retry after a crash finds the
record committed and never writes the effect a second time (see store/idempotency.py).
"""
from __future__ import annotations

import contextvars
import json
import zlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator

from pynamodb.connection import Connection
from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from ..domain import cursors, ids
from ..domain.clock import format_iso, parse_iso
from ..domain.errors import BadRequest, ConcurrentModification, Conflict
from ..domain.model import Run, RunAggregate, Stage
from ..domain.status import StageStatus
from ..domain.timers import next_due
from ..settings import Settings
from . import models
from .models import (
    ACTIVE_SHARDS,
    IDEM_COMMITTED,
    IDEM_PENDING,
    IDEMPOTENCY_SK,
    BaseItem,
    IdempotencyItem,
    PipelineItem,
    RunItem,
    StageItem,
    idempotency_pk,
    pipeline_pk,
    run_pk,
    stage_sk,
)

NO_DEADLINE = "9999-12-31T23:59:59.999Z"
INSERT_ATTEMPTS = 3


def _dumps(value) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)


def _loads(text: str | None, default=None):
    return default if text is None else json.loads(text)


def active_shard(stage_id: str) -> str:
    return f"ACTIVE#{zlib.crc32(stage_id.encode()) % ACTIVE_SHARDS}"


# ---- mapping between domain objects and items ------------------------------------------------

def _version(version: int | None) -> dict:
    """A new item has no version yet; PynamoDB then writes 1 on condition it does not exist."""
    return {} if version is None else {"version": version}


def run_to_item(run: Run) -> RunItem:
    return RunItem(
        pk=run_pk(run.id), sk=models.RUN_SK, run_id=run.id, pipeline=run.pipeline,
        counter=run.counter, pipeline_status=f"{run.pipeline}#{run.status.value}",
        status=run.status.value, created_at=format_iso(run.created_at),
        updated_at=format_iso(run.updated_at), started_at=format_iso(run.started_at),
        ended_at=format_iso(run.ended_at), duration_ms=run.duration_ms,
        commit=_dumps(run.commit), trigger=run.trigger, variables=_dumps(run.variables),
        secrets=_dumps(run.secrets) if run.secrets else None, cancellation=_dumps(run.cancellation),
        stage_summary=_dumps(run.stage_summary),
        timeout_seconds=run.timeout_seconds, auto_advance=run.auto_advance or None,
        **_version(run.version),
    )


def run_from_item(item: RunItem) -> Run:
    return Run(
        id=item.run_id, pipeline=item.pipeline, counter=int(item.counter),
        status=StageStatus(item.status), created_at=parse_iso(item.created_at),
        updated_at=parse_iso(item.updated_at), started_at=parse_iso(item.started_at),
        ended_at=parse_iso(item.ended_at),
        duration_ms=None if item.duration_ms is None else int(item.duration_ms),
        commit=_loads(item.commit), trigger=item.trigger, variables=_loads(item.variables, {}),
        secrets=_loads(item.secrets, {}), cancellation=_loads(item.cancellation),
        stage_summary=_loads(item.stage_summary),
        timeout_seconds=None if item.timeout_seconds is None else int(item.timeout_seconds),
        auto_advance=bool(item.auto_advance),
        version=None if item.version is None else int(item.version),
    )


def stage_to_item(stage: Stage) -> StageItem:
    item = StageItem(
        pk=run_pk(stage.run_id), sk=stage_sk(stage.position), stage_id=stage.id,
        run_id=stage.run_id, position=stage.position, type=stage.type, name=stage.name,
        status=stage.status.value, created_at=format_iso(stage.created_at),
        updated_at=format_iso(stage.updated_at), started_at=format_iso(stage.started_at),
        ended_at=format_iso(stage.ended_at), duration_ms=stage.duration_ms,
        timeout_seconds=stage.timeout_seconds, expected_seconds=stage.expected_seconds,
        approval=stage.approval, attempt=stage.attempt,
        attempts=_dumps(stage.attempts) if stage.attempts else None,
        approval_decision=_dumps(stage.approval_decision), allow_failure=stage.allow_failure or None,
        waiting_since=format_iso(stage.waiting_since), **_version(stage.version),
    )
    if stage.is_active:
        item.active_shard = active_shard(stage.id)
        item.due_at = format_iso(next_due(stage)) or NO_DEADLINE
    return item


def stage_from_item(item: StageItem) -> Stage:
    return Stage(
        id=item.stage_id, run_id=item.run_id, position=int(item.position), type=item.type,
        name=item.name, status=StageStatus(item.status), created_at=parse_iso(item.created_at),
        updated_at=parse_iso(item.updated_at), started_at=parse_iso(item.started_at),
        ended_at=parse_iso(item.ended_at),
        duration_ms=None if item.duration_ms is None else int(item.duration_ms),
        timeout_seconds=None if item.timeout_seconds is None else int(item.timeout_seconds),
        expected_seconds=None if item.expected_seconds is None else int(item.expected_seconds),
        approval=item.approval, attempt=int(item.attempt), attempts=_loads(item.attempts, []),
        approval_decision=_loads(item.approval_decision), allow_failure=bool(item.allow_failure),
        waiting_since=parse_iso(item.waiting_since),
        version=None if item.version is None else int(item.version),
    )


# ---- transactions, and the Idempotency-Key claim they carry ----------------------------------

@dataclass
class HeldClaim:
    """The Idempotency-Key claim of the request being handled; ``committed`` once a transaction
    carried it (later transactions of the same request then leave it alone)."""

    key_hash: str
    token: str
    committed: bool = False


_held_claim: contextvars.ContextVar[HeldClaim | None] = contextvars.ContextVar(
    "stagetrack_idempotency_claim", default=None)


class ClaimTakenOver(Conflict):
    """The claim's lease ran out and another request claimed the key: this one must not commit."""

    code = "idempotency_key_in_use"


@contextmanager
def holding_claim(key_hash: str, token: str) -> Iterator[HeldClaim]:
    """While this block runs, transactions carry the commit of this claim (see ``transaction``)."""
    held = HeldClaim(key_hash, token)
    reset = _held_claim.set(held)
    try:
        yield held
    finally:
        _held_claim.reset(reset)


def carries_claim() -> bool:
    """Whether the next transaction would carry a claim's commit: single-item writes (PutItem,
    UpdateItem) become a transaction only then, so requests without a key cost what they did."""
    held = _held_claim.get()
    return held is not None and not held.committed


@contextmanager
def transaction(effect: dict) -> Iterator[TransactWrite]:
    """The one place a TransactWrite is built: fill it in the block, it commits on exit (nothing
    is written if the block raises). ``effect`` names what it writes (``{"run": id}``...), kept
    on the Idempotency-Key record it may carry. The record is the last item, an update whose
    condition is "still PENDING under this request's claim token"; if only that condition fails,
    the claim was taken over after its lease ran out and this raises ``ClaimTakenOver`` (409)."""
    held = _held_claim.get()
    carry = held is not None and not held.committed
    try:
        with TransactWrite(connection=BaseItem._get_connection().connection) as write:
            yield write
            if carry:
                write.update(
                    IdempotencyItem(pk=idempotency_pk(held.key_hash), sk=IDEMPOTENCY_SK),
                    actions=[IdempotencyItem.state.set(IDEM_COMMITTED),
                             IdempotencyItem.effect.set(json.dumps(effect, separators=(",", ":")))],
                    condition=(IdempotencyItem.token == held.token)
                    & (IdempotencyItem.state == IDEM_PENDING),
                )
    except TransactWriteError as error:
        if carry and _only_last_condition_failed(error):
            raise ClaimTakenOver(
                "the Idempotency-Key of this request was claimed by another request after this "
                "one outlived its lease; nothing was written") from None
        raise
    if carry:
        held.committed = True


def put_item(item: BaseItem, condition, effect: dict) -> None:
    """One conditional PutItem, or, while a claim is carried, the same put in ``transaction``.
    A failed condition raises PutError or TransactWriteError; ``_is_condition_failure`` reads
    both."""
    if not carries_claim():
        item.save(condition=condition)
        return
    with transaction(effect) as write:
        write.save(item, condition=condition)


def update_item(item: BaseItem, actions: list, condition, effect: dict) -> bool:
    """One conditional UpdateItem (the item's attributes come back, ALL_NEW), or, while a claim
    is carried, the same update in ``transaction`` (nothing comes back: returns False, and the
    caller reads the item if it needs it). Errors as ``put_item``."""
    if not carries_claim():
        item.update(actions=actions, condition=condition)
        return True
    with transaction(effect) as write:
        write.update(item, actions=actions, condition=condition)
    return False


def _only_last_condition_failed(error: Exception) -> bool:
    reasons = getattr(error, "cancellation_reasons", None) or []
    codes = [None if r is None or r.code in (None, "None") else r.code for r in reasons]
    return bool(codes) and codes[-1] == "ConditionalCheckFailed" and not any(codes[:-1])


# ---- cursors ---------------------------------------------------------------------------------

_RUN_CURSOR_KEYS = {"pk", "sk", "pipeline", "counter", "pipeline_status"}


def key_from_cursor_payload(payload: dict, allowed: set[str]) -> dict:
    """A verified cursor holds a DynamoDB key we wrote; its shape is still checked so that
    even a cursor sealed with a leaked key cannot send DynamoDB anything but a plain key."""
    if not payload or not set(payload) <= allowed or not all(
        isinstance(value, dict) and len(value) == 1
        and next(iter(value)) in ("S", "N") and isinstance(next(iter(value.values())), str)
        and len(next(iter(value.values()))) <= 1024
        for value in payload.values()
    ):
        raise BadRequest(cursors.INVALID)
    return payload


def runs_cursor_scope(pipeline: str, status: StageStatus | None) -> str:
    """A runs cursor is valid only for the listing (pipeline, status filter) that issued it."""
    return f"runs/{pipeline}/{status.value if status else '*'}"


class Repository:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cursors = cursors.CursorCodec(settings.secret_key)
        models.bind(settings.table_name, settings.region, settings.dynamodb_endpoint)
        from .idempotency import IdempotencyStore
        from .pipelines import PipelineStore

        self.pipelines = PipelineStore()
        self.idempotency = IdempotencyStore()

    # -- pipelines --------------------------------------------------------------------------

    def next_counter(self, pipeline: str) -> int:
        """One atomic ADD; refused while the pipeline is paused (see store/pipelines.py)."""
        return self.pipelines.claim_counter(pipeline)[0]

    # -- runs -------------------------------------------------------------------------------

    def insert_run(self, aggregate: RunAggregate, layout: dict | None = None) -> None:
        """Run and stages appear together or not at all. ``layout``, when given (it changed),
        is stored on the pipeline in the same transaction, for ``schedule``. A transaction that
        collides with a pipeline counter update in flight wrote nothing and is sent again."""
        for attempt in range(INSERT_ATTEMPTS):
            try:
                with transaction({"run": aggregate.run.id}) as write:
                    write.save(run_to_item(aggregate.run), condition=RunItem.pk.does_not_exist())
                    for stage in aggregate.stages:
                        write.save(stage_to_item(stage), condition=StageItem.pk.does_not_exist())
                    if layout is not None:
                        write.update(
                            PipelineItem(pk=pipeline_pk(aggregate.run.pipeline), sk=models.PIPELINE_SK),
                            actions=[PipelineItem.layout.set(_dumps(layout))],
                        )
                break
            except TransactWriteError as error:
                if attempt + 1 < INSERT_ATTEMPTS and _only_transaction_conflicts(error):
                    continue
                raise
        _bump_versions(aggregate.run, aggregate.stages)

    def load_run(self, run_id: str) -> RunAggregate | None:
        run = None
        stages: list[Stage] = []
        for item in BaseItem.query(run_pk(run_id), consistent_read=True):
            if isinstance(item, RunItem):
                run = run_from_item(item)
            elif isinstance(item, StageItem):
                stages.append(stage_from_item(item))
        if run is None:
            return None
        return RunAggregate(run=run, stages=stages)

    def get_stage(self, stage_id: str) -> Stage | None:
        parsed = ids.parse_stage_id(stage_id)
        if parsed is None:
            return None
        run_id, position = parsed
        try:
            item = StageItem.get(run_pk(run_id), stage_sk(position), consistent_read=True)
        except StageItem.DoesNotExist:
            return None
        return stage_from_item(item)

    def save(self, before: RunAggregate, after: RunAggregate) -> None:
        """Write what changed in one transaction; the run is always written so that concurrent
        changes to sibling stages serialize on its version and its derived status stays true."""
        old = {stage.id: stage for stage in before.stages}
        new_ids = {stage.id for stage in after.stages}
        changed = [s for s in after.stages if s.id not in old or asdict(s) != asdict(old[s.id])]
        removed = [s for s in before.stages if s.id not in new_ids]
        try:
            with transaction({"run": after.run.id}) as write:
                write.save(run_to_item(after.run))
                for stage in changed:
                    write.save(stage_to_item(stage))
                for stage in removed:
                    write.delete(stage_to_item(stage))
        except TransactWriteError as error:
            if _is_condition_failure(error):
                raise ConcurrentModification(
                    f"run {after.run.id!r} was changed by someone else; retry"
                ) from None
            raise
        _bump_versions(after.run, changed)

    def delete_run(self, aggregate: RunAggregate) -> None:
        try:
            with transaction({"run": aggregate.run.id, "deleted": True}) as write:
                write.delete(run_to_item(aggregate.run))
                for stage in aggregate.stages:
                    write.delete(stage_to_item(stage))
        except TransactWriteError as error:
            if _is_condition_failure(error):
                raise ConcurrentModification(
                    f"run {aggregate.run.id!r} was changed by someone else; retry"
                ) from None
            raise

    def list_runs(self, pipeline: str, status: StageStatus | None, limit: int,
                  cursor: str | None) -> tuple[list[Run], str | None]:
        scope = runs_cursor_scope(pipeline, status)
        start = key_from_cursor_payload(self.cursors.open(scope, cursor), _RUN_CURSOR_KEYS) if cursor else None
        if status is None:
            results = RunItem.by_pipeline.query(
                pipeline, scan_index_forward=False, limit=limit, last_evaluated_key=start,
                page_size=limit,
            )
        else:
            results = RunItem.by_pipeline_status.query(
                f"{pipeline}#{status.value}", scan_index_forward=False, limit=limit,
                last_evaluated_key=start, page_size=limit,
            )
        runs = [run_from_item(item) for item in results]
        return runs, self.cursors.seal(scope, results.last_evaluated_key)

    # -- plumbing ---------------------------------------------------------------------------

    def _connection(self) -> Connection:
        return BaseItem._get_connection().connection


def _bump_versions(run: Run, stages: list[Stage]) -> None:
    run.version = (run.version or 0) + 1
    for stage in stages:
        stage.version = (stage.version or 0) + 1


def _only_transaction_conflicts(error: Exception) -> bool:
    """Cancelled only because another write was in flight on one of its items (no condition
    of ours failed): sending the same transaction again is safe."""
    reasons = getattr(error, "cancellation_reasons", None) or []
    codes = {r.code for r in reasons if r is not None and r.code not in (None, "None")}
    return codes == {"TransactionConflict"}


def _is_condition_failure(error: Exception) -> bool:
    """A failed condition or a transaction colliding with another one: both mean 'reload'."""
    code = getattr(error, "cause_response_code", None)
    if code in ("ConditionalCheckFailedException", "TransactionConflictException"):
        return True
    if code == "TransactionCanceledException":
        reasons = getattr(error, "cancellation_reasons", None) or []
        return any(
            r is not None and r.code in ("ConditionalCheckFailed", "TransactionConflict")
            for r in reasons
        )
    return False

