"""The repository: every DynamoDB call stagetrack makes goes through here.

Round trips per use (asserted by tests, printed by bench/):
- load a run with its stages: 1 strongly consistent Query on the run's partition
- get a stage: 1 strongly consistent GetItem
- save a changed run: 1 TransactWrite, every item conditioned on the version it was read at
  (a change of more items than one transaction holds: see "Big runs" below)
- next run number of a pipeline: 1 UpdateItem (ADD), conditioned on the pipeline not paused
- list runs of a pipeline: 1 Query on a GSI per page
- a stage's ended attempts (``list_attempts``): 1 strongly consistent Query per page of the stage's
  own partition ``ATTEMPTS#<stage id>`` (none for a stage never retried); one ended attempt
  (``get_attempt``): 1 GetItem; every stage's (``attempts_of``): 1 Query per retried stage. Loading a
  run never reads them: they are not in its partition.

Attempt items are written once, with the change that ends the attempt (``_Change.attempt_puts``: the
ended attempts its stages carry, including the inline history of a stage item of the previous
layout, which its next write moves out), and deleted with their stage or run by computed keys
(``first_attempt`` .. ``attempt - 1``: no read). A big change carries them in its intent.

Big runs (more stages than one TransactWriteItems holds, 100 items). A change whose items do not
fit in one transaction is written with a write-ahead intent:
1. one transaction writes the run item, conditioned on the version read, carrying the intent
   (every stage item to put, with its new content, and every one to delete; compressed), plus
   the change's other items (link, layout, an extra item such as an idempotency record);
2. the stage items are written in chunks of 99, each chunk a transaction with a ConditionCheck
   that the same intent is still on the run item (so a late or duplicate chunk can never
   overwrite a newer change);
3. the intent is removed (UpdateItem conditioned on its id; the run's version stays).
The change is visible whole from step 1: ``load_run`` and ``get_stage`` apply a pending intent
to what they read, and ``load_run`` (so every writer, which loads first) completes it (roll
forward), as does the sweeper, which finds a pending intent on the activeStages index. Writers
condition their run item on carrying no intent, so a pending one is never overwritten. A crash
at any point leaves either nothing (step 1 failed) or a committed intent that the next reader,
writer or sweep finishes. Stage items of big runs carry ``big_run`` so that ``get_stage``
knows to read the run item with them (one TransactGetItems; small runs keep one GetItem).
Every transaction, whatever its size, is built and sent by ``Writer.transact_write`` (one place
for items that must join a change's first transaction, e.g. an idempotency record: ``extra``).

The classes here hold what they need as instance state, passed in by ``store/dynamo.py``: the item
classes bound to their table (``models.ItemModels``), the ``Writer`` that sends their
transactions, the cursor codec. Nothing here reaches a table through module state.

Idempotency-Key (api/idempotency.py): while the request being handled holds a claim
(``Writer.holding``), the first transaction of its change carries one more item, the key's record
set COMMITTED with what was written (``effect``, e.g. ``{"run": "web:7"}``), on condition the
claim is still this request's. The effect and "this key took effect" are one atomic write, so a
retry after a crash finds the record committed and never writes the effect a second time. For a
big run that item joins transaction 1, the one that commits the change.
"""
from __future__ import annotations

import base64
import contextvars
import json
import logging
import random
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from pynamodb.attributes import NumberAttribute
from pynamodb.constants import ITEM, RESPONSES
from pynamodb.exceptions import DeleteError, TransactWriteError, UpdateError
from pynamodb.expressions.update import Action

from ..domain import cursors, ids
from ..domain.clock import format_iso, millis_between, parse_iso
from ..domain.errors import BadRequest, ConcurrentModification, ValidationFailed
from ..domain.model import (
    Run,
    RunAggregate,
    Stage,
    counted_status,
    single_stage_change,
    stage_changes,
    stage_summary,
    status_counts,
)
from ..domain.status import FINAL, STAGE_STATUSES, StageStatus, run_status_from_counts
from ..domain.timers import next_due
from ..service.ports import ClaimTakenOver
from . import models
from .models import (
    ACTIVE_SHARDS,
    IDEM_COMMITTED,
    IDEM_PENDING,
    IDEMPOTENCY_SK,
    AttemptItem,
    BaseItem,
    IdempotencyItem,
    ItemModels,
    PipelineItem,
    RunItem,
    StageItem,
    attempt_sk,
    attempts_pk,
    idempotency_pk,
    pipeline_pk,
    run_pk,
    stage_sk,
)
from .stream import NO_DEADLINE

log = logging.getLogger(__name__)

INSERT_ATTEMPTS = 3
MAX_TRANSACTION_ITEMS = 100  # DynamoDB's limit of one TransactWriteItems
BIG_RUN_STAGES = 64  # above this many stages, stage items carry big_run (see the module docstring)
# DynamoDB's item limit is 400 KB; the run item (stage summaries + intent) must stay under it.
MAX_RUN_ITEM_BYTES = 390_000
INTENT_GRACE_SECONDS = 60  # a pending intent is due for the sweeper this long after its change
LOAD_ATTEMPTS = 5
CONTENDED_RUNS = 256  # runs this process remembers as contended (``Repository._contended``)
CONTENDED_SKIPS = 8  # changes of such a run sent without first trying the exact derived fields
CONFLICT_ATTEMPTS = 10  # sends of one stage's change cancelled only by DynamoDB's item locking
SETTLE_ATTEMPTS = 8  # reads of the run's summary by one writer settling its status
CONFLICT_PAUSE_SECONDS = 0.005
# stages read after the one changed (``load_stage(following=...)``): each is written with one
# ended attempt, so this many, the stage, the run and an extra item or claim fit one transaction
MAX_FOLLOWING = (MAX_TRANSACTION_ITEMS - 4) // 2 - 1
STAGE_SK_END = models.STAGE_SK_PREFIX + "~"  # after every stage_sk ("~" sorts after the digits)


def jittered_pause(attempt: int) -> None:
    """Full jitter, doubling per attempt (5 ms .. 1.28 s): writers bunched on one run item spread
    out instead of colliding again."""
    time.sleep(random.uniform(0, CONFLICT_PAUSE_SECONDS * (2 ** min(attempt, 8))))


class RunTooLarge(ValidationFailed):
    """A change whose run item would outgrow DynamoDB's 400 KB item limit: refused (422), and
    nothing is written. Not retryable: the same change is as large the next time."""

    code = "run_too_large"


def _dump(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _dumps(value) -> str | None:
    return None if value is None else _dump(value)


def _loads(text: str | None, default=None):
    return default if text is None else json.loads(text)


def active_shard(stage_id: str) -> str:
    return f"ACTIVE#{zlib.crc32(stage_id.encode()) % ACTIVE_SHARDS}"


# ---- mapping between domain objects and items ------------------------------------------------

def _version(version: int | None) -> dict:
    """A new item has no version yet; PynamoDB then writes 1 on condition it does not exist."""
    return {} if version is None else {"version": version}


def status_counter(status: StageStatus) -> NumberAttribute:
    """The run item's counter of the stages that count as ``status`` (model.counted_status)."""
    return getattr(RunItem, f"n_{status.value.lower()}")


def counts_of(item: RunItem) -> dict[StageStatus, int] | None:
    """The run item's per-status counters; None for a run stored in the previous layout."""
    if item.seq is None:
        return None
    return {status: int(getattr(item, f"n_{status.value.lower()}") or 0) for status in STAGE_STATUSES}


def run_to_item(model: type[RunItem], run: Run, stages: Sequence[Stage] = ()) -> RunItem:
    """``run`` as an item of ``model`` (the run class bound to a table: ``ItemModels.run``),
    with the summary of ``stages`` (its counters and latest end) and the next change number."""
    item = model(
        pk=run_pk(run.id), sk=models.RUN_SK, run_id=run.id, pipeline=run.pipeline,
        counter=run.counter, pipeline_status=f"{run.pipeline}#{run.status.value}",
        status=run.status.value, created_at=format_iso(run.created_at),
        updated_at=format_iso(run.updated_at), started_at=format_iso(run.started_at),
        ended_at=format_iso(run.ended_at), duration_ms=run.duration_ms,
        commit=_dumps(run.commit), trigger=run.trigger, variables=_dumps(run.variables),
        secrets=_dumps(run.secrets) if run.secrets else None, cancellation=_dumps(run.cancellation),
        stopping=_dumps(run.stopping), stop_grace_seconds=run.stop_grace_seconds,
        timeout_seconds=run.timeout_seconds, auto_advance=run.auto_advance or None,
        concurrency_group=run.concurrency_group, queued=run.queued or None,
        seq=(run.seq or 0) + 1,
        last_end=format_iso(max((s.ended_at for s in stages if s.ended_at is not None), default=None)),
        **_metadata(run), **_version(run.version),
    )
    for status, count in status_counts(list(stages)).items():
        setattr(item, f"n_{status.value.lower()}", count)
    return item


def _metadata(run: Run) -> dict:
    """The run's metadata and its keys in the search indexes (models.SEARCH_INDEXES). An empty
    text is no value: DynamoDB refuses an empty index key."""
    commit = (run.commit or {}).get("hash")
    return {
        "branch": run.branch or None, "actor": run.actor or None, "source_url": run.source_url or None,
        "source": run.source or None, "environment": run.environment or None,
        "commit_sha": commit.lower() if isinstance(commit, str) and commit else None,
        "run_feed": models.RUN_FEED, "created_key": created_key(run),
    }


def created_key(run: Run) -> str:
    """A run's range key in the search indexes: newest first, and unique."""
    return f"{format_iso(run.created_at)}#{run.id}"


def run_from_item(item: RunItem) -> Run:
    return Run(
        id=item.run_id, pipeline=item.pipeline, counter=int(item.counter),
        status=StageStatus(item.status), created_at=parse_iso(item.created_at),
        updated_at=parse_iso(item.updated_at), started_at=parse_iso(item.started_at),
        ended_at=parse_iso(item.ended_at),
        duration_ms=None if item.duration_ms is None else int(item.duration_ms),
        commit=_loads(item.commit), trigger=item.trigger, variables=_loads(item.variables, {}),
        secrets=_loads(item.secrets, {}), cancellation=_loads(item.cancellation),
        stopping=_loads(item.stopping),
        stop_grace_seconds=None if item.stop_grace_seconds is None else int(item.stop_grace_seconds),
        stage_summary=_loads(item.stage_summary),  # the previous layout's; now None
        timeout_seconds=None if item.timeout_seconds is None else int(item.timeout_seconds),
        auto_advance=bool(item.auto_advance), branch=item.branch, actor=item.actor,
        source_url=item.source_url, source=item.source, environment=item.environment,
        concurrency_group=item.concurrency_group, queued=bool(item.queued),
        version=None if item.version is None else int(item.version),
        seq=None if item.seq is None else int(item.seq), stored=_stored_derived(item),
    )


def _stored_derived(item: RunItem) -> dict:
    return {"counts": counts_of(item), "status": item.status, "pipeline_status": item.pipeline_status,
            "started_at": item.started_at, "ended_at": item.ended_at,
            "duration_ms": None if item.duration_ms is None else int(item.duration_ms),
            "last_end": item.last_end}


def stage_to_item(model: type[StageItem], stage: Stage, *, big_run: bool = False,
                  run_version: int | None = None) -> StageItem:
    item = model(
        pk=run_pk(stage.run_id), sk=stage_sk(stage.position), stage_id=stage.id,
        run_id=stage.run_id, position=stage.position, type=stage.type, name=stage.name,
        status=stage.status.value, created_at=format_iso(stage.created_at),
        updated_at=format_iso(stage.updated_at), started_at=format_iso(stage.started_at),
        ended_at=format_iso(stage.ended_at), duration_ms=stage.duration_ms,
        timeout_seconds=stage.timeout_seconds, expected_seconds=stage.expected_seconds,
        approval=stage.approval, attempt=stage.attempt, first_attempt=stage.first_attempt,
        approval_decision=_dumps(stage.approval_decision), allow_failure=stage.allow_failure or None,
        always=stage.always or None, cancel_at=format_iso(stage.cancel_at),
        run_deadline=format_iso(stage.run_deadline),
        expectations=_dumps(stage.expectations or None), overrun_at=format_iso(stage.overrun_at),
        overrunning_at=format_iso(stage.overrunning_at),
        approval_policy=_dumps(stage.approval_policy), approvals=_dumps(stage.approvals or None),
        reminded_at=format_iso(stage.reminded_at), retry_policy=_dumps(stage.retry_policy),
        auto_retries=stage.auto_retries or None, next_retry_at=format_iso(stage.next_retry_at),
        retry_reason=stage.retry_reason,
        waiting_since=format_iso(stage.waiting_since), big_run=big_run or None,
        run_version=run_version, environment=stage.environment, **_version(stage.version),
        **_listed(stage),
    )
    if stage.is_active:
        item.active_shard = active_shard(stage.id)
        item.due_at = format_iso(next_due(stage)) or NO_DEADLINE
    if stage.status == StageStatus.WAITING_FOR_APPROVAL:
        item.approval_feed = models.WAITING_FEED
        item.waiting_key = waiting_key(stage)
    return item


def waiting_key(stage: Stage) -> str:
    """A waiting stage's range key in the approvalsWaiting index: waiting longest first."""
    return f"{format_iso(stage.waiting_since or stage.updated_at)}#{stage.id}"


def _listed(stage: Stage) -> dict:
    """The stage's keys in the stagesByPipeline index (models.StagesByPipeline)."""
    parsed = ids.parse_run_id(stage.run_id)
    if parsed is None or stage.position >= models.STAGE_SLOTS:
        return {}
    return {"listed_pipeline": parsed[0], "listed_at": parsed[1] * models.STAGE_SLOTS + stage.position}


def summary_from_item(item: StageItem) -> dict:
    """A stage's summary (model.stage_summary) from its stagesByPipeline index entry, which
    holds only what the summary shows (models.SUMMARY_ATTRIBUTES)."""
    return stage_summary(Stage(
        id=ids.stage_id(item.run_id, int(item.position)), run_id=item.run_id,
        position=int(item.position), type=item.type, name=item.name,
        status=StageStatus(item.status), created_at=_UNLISTED, updated_at=_UNLISTED,
        started_at=parse_iso(item.started_at), ended_at=parse_iso(item.ended_at),
        approval=item.approval, attempt=int(item.attempt),
        approval_decision=_loads(item.approval_decision)))


_UNLISTED = datetime(1970, 1, 1, tzinfo=UTC)  # not in the index, and not in a summary either


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
        first_attempt=_first_attempt(item),
        approval_decision=_loads(item.approval_decision), allow_failure=bool(item.allow_failure),
        always=bool(item.always), cancel_at=parse_iso(item.cancel_at),
        run_deadline=parse_iso(item.run_deadline),
        expectations=_loads(item.expectations), overrun_at=parse_iso(item.overrun_at),
        overrunning_at=parse_iso(item.overrunning_at),
        approval_policy=_loads(item.approval_policy), approvals=_loads(item.approvals, []),
        reminded_at=parse_iso(item.reminded_at), retry_policy=_loads(item.retry_policy),
        auto_retries=int(item.auto_retries or 0), next_retry_at=parse_iso(item.next_retry_at),
        retry_reason=item.retry_reason,
        waiting_since=parse_iso(item.waiting_since), environment=item.environment,
        version=None if item.version is None else int(item.version),
    )


def _first_attempt(item: StageItem) -> int:
    """An item of the previous layout has no ``first_attempt``: its inline attempts say it."""
    if item.first_attempt is not None:
        return int(item.first_attempt)
    inline = _loads(item.attempts, [])
    return min([int(entry["attempt"]) for entry in inline] + [int(item.attempt)])


def attempt_to_item(model: type[AttemptItem], stage_id: str, entry: dict) -> AttemptItem:
    number = int(entry["attempt"])
    return model(pk=attempts_pk(stage_id), sk=attempt_sk(number), stage_id=stage_id, attempt=number,
                 record=_dump(entry))


def attempt_from_item(item: AttemptItem) -> dict:
    return json.loads(item.record)


def _ended_attempts(model: type[AttemptItem], stages: Sequence[Stage]) -> list[AttemptItem]:
    """The attempt items a change writes: the ended attempts its stages carry (new ones, or the
    inline history of a stage item of the previous layout, moved out with this write)."""
    return [attempt_to_item(model, stage.id, entry) for stage in stages for entry in stage.attempts]


def _history_of(stages: Sequence[Stage]) -> list[tuple[str, int, int]]:
    """(stage id, first, last): the attempt items a deletion of these stages deletes."""
    return [(stage.id, stage.first_attempt, stage.attempt - 1) for stage in stages
            if stage.attempt_count > 1]


def _stored(stages: Sequence[Stage]) -> None:
    for stage in stages:
        stage.attempts = []


# ---- transactions, and the Idempotency-Key claim they carry ----------------------------------

@dataclass
class HeldClaim:
    """The Idempotency-Key claim of the request being handled; ``committed`` once a transaction
    carried it (later transactions of the same request then leave it alone)."""

    key_hash: str
    token: str
    committed: bool = False


class _Collected:
    """The items of a ``transaction`` block, as PynamoDB's TransactWrite takes them."""

    def __init__(self) -> None:
        self.items: list[TxItem] = []

    def save(self, item: BaseItem, condition=None) -> None:
        self.items.append(tx_put(item, condition))

    def delete(self, item: BaseItem, condition=None) -> None:
        self.items.append(tx_delete(item, condition))

    def update(self, item: BaseItem, actions: list, condition=None) -> None:
        self.items.append(tx_update(type(item), item.pk, item.sk, actions, condition))


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


# ---- transactions: every TransactWriteItems is built and sent here -----------------------------

CHECK, DELETE, PUT, UPDATE = "ConditionCheck", "Delete", "Put", "Update"
_SENT_ORDER = (CHECK, DELETE, PUT, UPDATE)  # how PynamoDB groups a request's items


@dataclass(frozen=True)
class TxItem:
    """One item of a TransactWriteItems request (the low-level request PynamoDB builds).
    ``tag`` lets a caller find its item's cancellation reason (``failed_tags``)."""

    kind: str
    request: dict
    tag: str | None = None


def tx_put(item: BaseItem, condition=None, *, tag: str | None = None) -> TxItem:
    """A put; a versioned item is conditioned on its version and written with version + 1."""
    return TxItem(PUT, item.get_save_kwargs_from_instance(condition=condition), tag)


def tx_delete(item: BaseItem, condition=None, *, tag: str | None = None) -> TxItem:
    """A delete; a versioned item is conditioned on its version."""
    return TxItem(DELETE, item.get_delete_kwargs_from_instance(condition=condition), tag)


def tx_update(model: type[BaseItem], pk: str, sk: str, actions: list, condition=None, *,
              tag: str | None = None) -> TxItem:
    """An update of exactly ``actions`` (no version attribute is touched)."""
    return TxItem(UPDATE, model._get_connection().get_operation_kwargs(
        pk, range_key=sk, actions=actions, condition=condition), tag)


def tx_check(model: type[BaseItem], pk: str, sk: str, condition, *, tag: str | None = None) -> TxItem:
    return TxItem(CHECK, model.get_operation_kwargs_from_class(pk, range_key=sk, condition=condition), tag)


class Writer:
    """Sends the writes of one context's stores (one table) that may carry an Idempotency-Key
    claim's commit: every TransactWriteItems, and the single-item writes that become one while a
    claim is held. The held claim is this writer's (per request: a context variable), so a
    claim made on one table never rides on another table's writes."""

    def __init__(self, items: ItemModels) -> None:
        self._items = items
        self._held: contextvars.ContextVar[HeldClaim | None] = contextvars.ContextVar(
            f"stagetrack_idempotency_claim_{id(self)}", default=None)

    @contextmanager
    def holding(self, key_hash: str, token: str) -> Iterator[HeldClaim]:
        """While this block runs, this writer's first transaction of each change carries the
        commit of this claim (see ``transact_write``)."""
        held = HeldClaim(key_hash, token)
        reset = self._held.set(held)
        try:
            yield held
        finally:
            self._held.reset(reset)

    def carries_claim(self) -> bool:
        """Whether the next transaction would carry a claim's commit: single-item writes (PutItem,
        UpdateItem) become a transaction only then, so requests without a key cost what they did."""
        held = self._held.get()
        return held is not None and not held.committed

    @contextmanager
    def transaction(self, effect: dict) -> Iterator[_Collected]:
        """A transaction of a few items that are not a run's (tokens, sources, subscriptions...):
        fill it in the block (``save``/``update``/``delete``), it is sent on exit through
        ``transact_write`` (nothing is written if the block raises). ``effect`` names what it
        writes, for the Idempotency-Key record it may carry."""
        collected = _Collected()
        yield collected
        self.transact_write(collected.items, effect=effect)

    def put_item(self, item: BaseItem, condition, effect: dict) -> None:
        """One conditional PutItem, or, while a claim is carried, the same put in ``transaction``.
        A failed condition raises PutError or TransactWriteError; ``_is_condition_failure`` reads
        both."""
        if not self.carries_claim():
            item.save(condition=condition)
            return
        with self.transaction(effect) as write:
            write.save(item, condition=condition)

    def update_item(self, item: BaseItem, actions: list, condition, effect: dict) -> bool:
        """One conditional UpdateItem (the item's attributes come back, ALL_NEW), or, while a
        claim is carried, the same update in ``transaction`` (nothing comes back: returns False,
        and the caller reads the item if it needs it). Errors as ``put_item``."""
        if not self.carries_claim():
            item.update(actions=actions, condition=condition)
            return True
        with self.transaction(effect) as write:
            write.update(item, actions=actions, condition=condition)
        return False

    def transact_write(self, items: Sequence[TxItem], effect: dict | None = None) -> None:
        """Send one TransactWriteItems: the only place stagetrack does. With ``effect`` (the
        first transaction of a change) and an Idempotency-Key claim held and not yet committed,
        the key's record joins as the last item, set COMMITTED with ``effect`` on condition the
        claim is still this request's; if only that condition fails, the claim was taken over
        after its lease ran out and this raises ``ClaimTakenOver`` (409), nothing written."""
        held = self._held.get()
        carry = held if effect is not None and held is not None and not held.committed else None
        if carry is not None:
            items = [*items, self._claim_commit(carry, effect or {})]
        if len(items) > MAX_TRANSACTION_ITEMS:
            raise ValueError(f"{len(items)} items do not fit in one transaction")
        grouped = {kind: [item.request for item in items if item.kind == kind] for kind in _SENT_ORDER}
        try:
            self._items.connection().transact_write_items(
                condition_check_items=grouped[CHECK], delete_items=grouped[DELETE],
                put_items=grouped[PUT], update_items=grouped[UPDATE],
            )
        except TransactWriteError as error:
            failed = TransactionFailed(error, sorted(items, key=lambda item: _SENT_ORDER.index(item.kind)))
            if carry is not None and _only_claim_failed(failed):
                raise ClaimTakenOver(
                    "the Idempotency-Key of this request was claimed by another request after this "
                    "one outlived its lease; nothing was written") from None
            raise failed from error
        if carry is not None:
            carry.committed = True

    def _claim_commit(self, carry: HeldClaim, effect: dict) -> TxItem:
        return tx_update(
            self._items.idempotency, idempotency_pk(carry.key_hash), IDEMPOTENCY_SK,
            [IdempotencyItem.state.set(IDEM_COMMITTED),
             IdempotencyItem.effect.set(json.dumps(effect, separators=(",", ":")))],
            (IdempotencyItem.token == carry.token) & (IdempotencyItem.state == IDEM_PENDING),
            tag=CLAIM_TAG)


class TransactionFailed(TransactWriteError):
    """The ``TransactWriteError`` of a ``transact_write``, with the items as sent: their
    cancellation reasons come in that order."""

    def __init__(self, error: TransactWriteError, sent_items: list[TxItem]) -> None:
        super().__init__(error.msg, cause=error.cause)
        self.sent_items = sent_items


CLAIM_TAG = "idempotency-claim"


def _only_claim_failed(error: TransactionFailed) -> bool:
    failed = [item.tag for item, reason in zip(error.sent_items, error.cancellation_reasons, strict=False)
              if reason is not None and reason.code not in (None, "None")]
    return failed == [CLAIM_TAG]


def failed_tags(error: Exception) -> set[str]:
    """The tags of the items whose condition failed in a cancelled ``transact_write``."""
    if not isinstance(error, TransactionFailed):
        return set()
    return {item.tag for item, reason in zip(error.sent_items, error.cancellation_reasons, strict=False)
            if item.tag and reason is not None and reason.code == "ConditionalCheckFailed"}


# ---- big runs: the write-ahead intent ------------------------------------------------------------

@dataclass
class Intent:
    """A committed change not yet written to every stage item: the stage items to put (as
    written, version included), the sort keys to delete, and whether the run goes too."""

    id: str
    puts: list[dict] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    drop_run: bool = False
    # Attempt items (their own partitions: readers of the run never apply these): the items to
    # put, as written, and the (stage id, first, last) ranges to delete.
    attempt_puts: list[dict] = field(default_factory=list)
    attempt_deletes: list[list] = field(default_factory=list)

    def encode(self) -> bytes:
        body = {"puts": self.puts, "deletes": self.deletes, "dropRun": self.drop_run,
                "attemptPuts": self.attempt_puts, "attemptDeletes": self.attempt_deletes}
        return zlib.compress(json.dumps(body, separators=(",", ":")).encode(), 9)

    @classmethod
    def of(cls, item: RunItem) -> Intent | None:
        if not item.intent_id:
            return None
        body = json.loads(zlib.decompress(item.intent or b"").decode() or "{}")
        return cls(id=item.intent_id, puts=body.get("puts", []), deletes=body.get("deletes", []),
                   drop_run=bool(body.get("dropRun")), attempt_puts=body.get("attemptPuts", []),
                   attempt_deletes=body.get("attemptDeletes", []))

    def stage_items(self, model: type[StageItem]) -> dict[str, StageItem]:
        return {raw["sk"]["S"]: model.from_raw_data(raw) for raw in self.puts}

    def apply(self, stages: dict[str, StageItem], model: type[StageItem]) -> None:
        """What readers see: the stage items (of ``model``) as the intent leaves them."""
        for sk in self.deletes:
            stages.pop(sk, None)
        stages.update(self.stage_items(model))


def _written_form(item: StageItem) -> dict:
    """The stage item exactly as a versioned put writes it (version + 1), for the intent."""
    item.big_run = True
    raw = item.serialize()
    raw["version"] = {"N": str((item.version or 0) + 1)}
    return raw


def item_bytes(raw: dict) -> int:
    """An item's size as DynamoDB counts it (attribute names + values), near enough to keep
    a margin under the 400 KB item limit."""
    total = 0
    for name, value in raw.items():
        total += len(name.encode())
        (kind, content), = value.items()
        if kind in ("S", "N"):
            total += len(str(content).encode())
        elif kind == "B":
            total += (
                len(content) if isinstance(content, (bytes, bytearray)) else len(base64.b64decode(content))
            )
        else:
            total += len(json.dumps(content))
    return total


@dataclass
class _Change:
    """The items of one change of a run, before deciding how many transactions it takes."""

    run: RunItem
    run_condition: object = None  # besides the version condition
    puts: list[StageItem] = field(default_factory=list)
    put_condition: object = None
    deletes: list[StageItem] = field(default_factory=list)
    unflagged: set[str] = field(default_factory=set)  # stored stage items that may lack big_run
    after_big: bool = False  # the run has more than BIG_RUN_STAGES stages after the change
    drop_run: bool = False
    extra: Sequence[TxItem] = ()
    effect: dict | None = None  # what an Idempotency-Key record carried by it records
    attempt_puts: list[AttemptItem] = field(default_factory=list)  # ended attempts, written once
    attempt_deletes: list[tuple[str, int, int]] = field(default_factory=list)  # (stage, first, last)


def _flag(model: type[StageItem], pk: str, sk: str) -> TxItem:
    return tx_update(model, pk, sk, [StageItem.big_run.set(True)], StageItem.pk.exists())


class Repository:
    """The DynamoDB ``RunStore`` (service/ports.py) on the table of ``items``."""

    def __init__(self, items: ItemModels, writer: Writer, codec: cursors.CursorCodec,
                 pause: Callable[[int], None] = jittered_pause) -> None:
        self.items = items
        self.writer = writer
        self.cursors = codec
        self.pause = pause  # between sends of a transaction cancelled by a conflict (tests: none)
        self.conflicts = 0  # how many were (bench/ and tests read it)
        self._contended: dict[str, int] = {}  # run id -> changes left to send without exact fields
        self._contention = threading.Lock()  # writers of one process share the repository

    # -- runs -------------------------------------------------------------------------------

    def insert_run(self, aggregate: RunAggregate, layout: dict | None = None,
                   extra: Sequence[TxItem] = ()) -> None:
        """Run and stages appear together or not at all. ``layout``, when given (it changed),
        is stored on the pipeline in the same transaction, for ``schedule``. A transaction that
        collides with a pipeline counter update in flight wrote nothing and is sent again."""
        items = list(extra)
        if layout is not None:
            items.append(tx_update(self.items.pipeline, pipeline_pk(aggregate.run.pipeline),
                                   models.PIPELINE_SK, [PipelineItem.layout.set(_dump(layout))]))
        for attempt in range(INSERT_ATTEMPTS):
            try:
                self.write_new_run(aggregate, items)
                break
            except TransactWriteError as error:
                if attempt + 1 < INSERT_ATTEMPTS and _only_transaction_conflicts(error):
                    continue
                raise
        _bump_versions(aggregate.run, aggregate.stages)
        aggregate.run.seq = (aggregate.run.seq or 0) + 1  # as run_to_item wrote it: a later save holds

    def write_new_run(self, aggregate: RunAggregate, extra: Sequence[TxItem]) -> None:
        """Run + stages + ``extra``, each conditioned on not existing yet (raises
        TransactWriteError; the caller reads the reasons). Versions are not bumped here."""
        run_version = (aggregate.run.version or 0) + 1
        big = len(aggregate.stages) > BIG_RUN_STAGES
        self._commit(_Change(
            run=run_to_item(self.items.run, aggregate.run, aggregate.stages),
            run_condition=RunItem.pk.does_not_exist(),
            puts=[stage_to_item(self.items.stage, s, big_run=big, run_version=run_version)
                  for s in aggregate.stages],
            put_condition=StageItem.pk.does_not_exist(), after_big=big, extra=extra,
            effect={"run": aggregate.run.id},
            attempt_puts=_ended_attempts(self.items.attempt, aggregate.stages),
        ))
        _stored(aggregate.stages)

    def load_run(self, run_id: str) -> RunAggregate | None:
        """One Query (more pages only for a partition over 1 MB). A pending intent is applied and
        then completed; a stage newer than the run item read before it (a writer raced the
        Query) makes it read again."""
        for _ in range(LOAD_ATTEMPTS):
            run_item: RunItem | None = None
            stage_items: dict[str, StageItem] = {}
            for item in self.items.base.query(run_pk(run_id), consistent_read=True):
                if isinstance(item, RunItem):
                    run_item = item
                elif isinstance(item, StageItem):
                    stage_items[item.sk] = item
            if run_item is None:
                return None
            read_at = int(run_item.version or 0)
            if any(int(s.run_version or 0) > read_at for s in stage_items.values()):
                continue
            intent = Intent.of(run_item)
            if intent is not None:
                self._roll_forward(run_id, intent)
                if intent.drop_run:
                    return None
                intent.apply(stage_items, self.items.stage)
            stages = [stage_from_item(stage_items[sk]) for sk in sorted(stage_items)]
            aggregate = RunAggregate(run=run_from_item(run_item), stages=stages)
            # Status and bounds as the stages read make them (the stored ones may lag a change of
            # one stage by its settle step); updatedAt is the latest change of the run or a stage.
            aggregate.rederive()
            aggregate.run.updated_at = max([aggregate.run.updated_at, *(s.updated_at for s in stages)])
            return aggregate
        raise ConcurrentModification(f"run {run_id!r} is changing too fast to be read; retry")

    def load_stage(self, stage_id: str, following: StageStatus | None = None) -> RunAggregate | None:
        """The run with only this stage (``partial``), for a change of that stage alone: one
        strongly consistent BatchGetItem of the run item and the stage item, whatever the run's
        size (the stage's own version guards the write, so the two need not be read at one
        instant; the run's derived fields are written only on condition nothing changed). A run with
        a pending intent, or stored in the previous layout, is loaded whole (``load_run``).

        ``following`` (a stage retry: SKIPPED): when the run's counter of that status is not
        zero, the stages after this one are read too, with one strongly consistent Query bounded
        by the sort key from its position (each is then guarded by its own version, and the
        run's derived fields by the change counter read). More of them than one transaction of
        a change of each (stage + ended attempt) holds: the run is loaded whole, whose write
        goes through the big-run intent."""
        parsed = ids.parse_stage_id(stage_id)
        if parsed is None:
            return None
        run_id, position = parsed
        pk = run_pk(run_id)
        found = list(self.items.base.batch_get([(pk, models.RUN_SK), (pk, stage_sk(position))],
                                               consistent_read=True))
        run_item = next((item for item in found if isinstance(item, RunItem)), None)
        stage_item = next((item for item in found if isinstance(item, StageItem)), None)
        if run_item is None:
            return None
        if run_item.intent_id or run_item.seq is None:
            return self.load_run(run_id)
        stages = [stage_from_item(stage_item)] if stage_item is not None else []
        counts = counts_of(run_item) or {}
        counted = 0 if following is None or stage_item is None else counts.get(following, 0)
        if counted > MAX_FOLLOWING:
            return self.load_run(run_id)
        if counted:
            stages += [stage_from_item(item) for item in self.items.stage.query(
                pk, self.items.stage.sk.between(stage_sk(position + 1), STAGE_SK_END),
                consistent_read=True)]
        return RunAggregate(run=run_from_item(run_item), stages=stages, partial=True)

    def get_stage(self, stage_id: str) -> Stage | None:
        """One GetItem; for a stage of a big run (or none at all) the run item is read with it
        (one TransactGetItems), since a pending intent there may hold its newest version."""
        parsed = ids.parse_stage_id(stage_id)
        if parsed is None:
            return None
        run_id, position = parsed
        pk, sk = run_pk(run_id), stage_sk(position)
        stage_model, run_model = self.items.stage, self.items.run
        try:
            item = stage_model.get(pk, sk, consistent_read=True)
        except stage_model.DoesNotExist:
            item = None
        if item is not None and not item.big_run:
            return stage_from_item(item)
        response = self.items.connection().transact_get_items(get_items=[
            run_model.get_operation_kwargs_from_class(pk, range_key=models.RUN_SK),
            stage_model.get_operation_kwargs_from_class(pk, range_key=sk),
        ])
        raw_run, raw_stage = (entry.get(ITEM) for entry in response[RESPONSES])
        item = stage_model.from_raw_data(raw_stage) if raw_stage else None
        intent = Intent.of(run_model.from_raw_data(raw_run)) if raw_run else None
        if intent is not None:
            if intent.drop_run:
                return None
            stages = {sk: item} if item is not None else {}
            intent.apply(stages, stage_model)
            item = stages.get(sk)
        return None if item is None else stage_from_item(item)

    def record_expectations(self, stage: Stage) -> bool:
        """The stream consumer's write of a started stage's expectations and overrun moment
        (service/overruns.py): one UpdateItem of that stage alone, conditioned on its version as
        read (a change since is never clobbered: False) and on not being a big run's stage (its
        newest version may wait in an intent); it bumps the version, so a writer that read the
        stage before retries on its own condition and keeps these attributes. ``due_at`` follows
        (the timer armer sees the overrun on the stream)."""
        names = {"#v": "version", "#e": "expectations", "#o": "overrun_at", "#b": "big_run"}
        values: dict = {":v": {"N": str(stage.version or 0)}, ":one": {"N": "1"},
                        ":e": {"S": _dump(stage.expectations or {})}}
        sets, removes = ["#e = :e"], []
        if stage.overrun_at is not None:
            sets.append("#o = :o")
            values[":o"] = {"S": format_iso(stage.overrun_at)}
        else:
            removes.append("#o")
        if stage.is_active:
            names["#d"] = "due_at"
            sets.append("#d = :d")
            values[":d"] = {"S": format_iso(next_due(stage)) or NO_DEADLINE}
        expression = "SET " + ", ".join(sets) + " ADD #v :one" + (" REMOVE " + ", ".join(removes)
                                                                     if removes else "")
        try:
            self.items.connection().client.update_item(
                TableName=self.items.table_name,
                Key={"pk": {"S": run_pk(stage.run_id)}, "sk": {"S": stage_sk(stage.position)}},
                UpdateExpression=expression, ConditionExpression="#v = :v AND attribute_not_exists(#b)",
                ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        except Exception as error:
            if _client_error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        stage.version = (stage.version or 0) + 1
        return True

    def save(self, before: RunAggregate, after: RunAggregate, extra: Sequence[TxItem] = (), *,
             local: bool = False) -> None:
        """Write what changed. With ``local`` (the caller's change read nothing of the run but
        the stage it changed) a change of one stage is written as that stage and the run's
        summary only (``_save_stage``); any other change rewrites the run (``_save_run``)."""
        if local and after.run.seq is not None:
            single = single_stage_change(before, after)
            if single is not None and self._fits_one_transaction(single[1], extra):
                self._save_stage(after, *single, extra=extra)
                return
            several = stage_changes(before, after) if single is None and after.partial else None
            if several and self._fits_one_transaction_all([new for _, new in several], extra):
                self._save_stages(after, several, extra=extra)
                return
        if after.partial:
            raise ValueError("a run read in part (load_stage) is written only as a change of one stage")
        self._save_run(before, after, extra)

    def _fits_one_transaction(self, stage: Stage, extra: Sequence[TxItem]) -> bool:
        """The stage, its ended attempts, the run's update, ``extra`` and a held claim fit in one
        TransactWriteItems (a sender that jumps many attempts at once may not: whole-run path)."""
        claim = 1 if self.writer.carries_claim() else 0
        return len(extra) + 2 + len(stage.attempts) + claim <= MAX_TRANSACTION_ITEMS

    def _fits_one_transaction_all(self, stages: Sequence[Stage], extra: Sequence[TxItem]) -> bool:
        claim = 1 if self.writer.carries_claim() else 0
        return (len(extra) + 1 + sum(1 + len(s.attempts) for s in stages) + claim
                <= MAX_TRANSACTION_ITEMS)

    def _save_stages(self, after: RunAggregate, changes: list[tuple[Stage, Stage]],
                     extra: Sequence[TxItem]) -> None:
        """A change of several stages read in part (a stage retry that restarts the SKIPPED
        stages after it): one transaction of each stage item, conditioned on its own version,
        their ended attempts, and an update of the run's summary by atomic actions (counters
        ADD, change counter + 1, bounds), conditioned on the run's version and no intent
        pending, as ``_save_stage`` writes one stage. The derived fields are set in the same
        transaction when nothing changed since the read (condition: the change counter read),
        else by ``_settle`` after the commit, so a writer of another stage never fails it."""
        run = after.run
        pk = run_pk(run.id)
        counts = dict((run.stored or {}).get("counts") or {})
        big = sum(counts.values()) > BIG_RUN_STAGES
        items = list(extra)
        for _, new in changes:
            items.append(tx_put(stage_to_item(self.items.stage, new, big_run=big, run_version=run.version),
                                StageItem.pk.exists()))
            items += [tx_put(a) for a in _ended_attempts(self.items.attempt, [new])]
        actions, bounds, started, ended = _summary_change(changes)
        condition = _summary_condition(run)
        effect = {"run": run.id}
        now = max(new.updated_at for _, new in changes)
        derived = _updates(run.stored or {}, _derived_after(run, changes))
        if derived:
            derived.append(RunItem.updated_at.set(format_iso(now)))
        exact = tx_update(self.items.run, pk, models.RUN_SK, [*actions, *derived],
                          condition & (RunItem.seq == run.seq))
        try:
            self._send([*items, exact], effect=effect, run_id=run.id)
            run.seq, run.stored = (run.seq or 0) + 1, None
        except ConcurrentModification:  # the run changed since the read (or one of the stages did)
            plain = tx_update(self.items.run, pk, models.RUN_SK, actions + bounds, condition)
            self._send([*items, plain], effect=effect, run_id=run.id)
            run.seq = run.stored = None  # no longer known exactly
            self._settle(run.id, now, started, ended)
        for _, new in changes:
            new.version = (new.version or 0) + 1
        _stored([new for _, new in changes])

    def _save_stage(self, after: RunAggregate, old: Stage, new: Stage, extra: Sequence[TxItem]) -> None:
        """One transaction: the stage item, conditioned on its own version, and an update of the
        run's summary by atomic actions only (per-status counters ADD, change counter + 1, the
        first start set if absent, the latest end), conditioned on the run's version (bumped
        only by changes of the whole run) and on no intent pending. Writers of other stages
        touch neither condition, so they never fail each other; DynamoDB's own item lock may
        cancel overlapping transactions (TransactionConflict), sent again after a jittered pause.

        The run's derived fields (status and its ``pipeline#status`` index key, end, duration)
        are set where they change:
        - in the same transaction, conditioned on the counters rather than on the change
          counter, when the run stays busy after the change (``_busy_guard``: still running,
          waiting for approval or for an automatic retry, which the counters alone decide) --
          so that many writers ending stages of one running run (a matrix) each land in one
          round trip, whatever order they commit in; the bounds are kept exact by conditions (``_send_busy``);
        - in the same transaction when nothing changed since the read (condition: the change
          counter read) -- the common case, one round trip; after such a condition failed on a
          run, this process skips that attempt for its next few changes (``_contended``);
        - in the same transaction, without condition, when this stage alone decides them (it is
          now IN_PROGRESS, which a run's status puts first);
        - else by ``_settle`` after the commit.
        A change that moves no counter and no bound (a new timeout, say) sets none of them."""
        run = after.run
        pk = run_pk(run.id)
        counts = (run.stored or {}).get("counts")  # the run's stage count, also when read in part
        big = (sum(counts.values()) if counts else len(after.stages)) > BIG_RUN_STAGES
        stage_op = tx_put(stage_to_item(self.items.stage, new, big_run=big, run_version=run.version),
                          StageItem.pk.exists())
        extra = [*extra, *(tx_put(a) for a in _ended_attempts(self.items.attempt, [new]))]
        actions, bounds, started, ended = _summary_change([(old, new)])
        was, counted = counted_status(old), counted_status(new)
        condition = _summary_condition(run)
        effect = {"run": run.id}
        moves = was != counted or started is not None or ended is not None
        wanted = _derived_after(run, [(old, new)])
        derived = _updates(run.stored or {}, wanted) if moves else []
        decided = counted == StageStatus.IN_PROGRESS
        busy = _busy_guard(run, was, counted) if moves and not decided else None
        if busy is not None:
            if self._send_busy([*extra, stage_op], actions, condition, busy, run, new.updated_at,
                               started, ended):
                new.version = (new.version or 0) + 1
                _stored([new])
                return
        elif moves and not decided and self._contended.get(run.id, 0) <= 0:
            if derived:
                derived.append(RunItem.updated_at.set(format_iso(new.updated_at)))
            exact = tx_update(self.items.run, pk, models.RUN_SK, [*actions, *derived],
                              condition & (RunItem.seq == run.seq))
            try:
                self._send([*extra, stage_op, exact], effect=effect, run_id=run.id)
                run.seq, run.stored = (run.seq or 0) + 1, None
                new.version = (new.version or 0) + 1
                _stored([new])
                return
            except ConcurrentModification:  # the run changed since the read (or this stage did)
                self._mark_contended(run.id)
        elif moves and not decided and busy is None:
            with self._contention:
                self._contended[run.id] = self._contended.get(run.id, 1) - 1
        actions += bounds
        if decided:
            value = _busy_status(run, StageStatus.IN_PROGRESS).value
            actions += [RunItem.status.set(value), RunItem.pipeline_status.set(f"{run.pipeline}#{value}"),
                        RunItem.ended_at.remove(), RunItem.duration_ms.remove()]
        plain = tx_update(self.items.run, pk, models.RUN_SK, actions, condition)
        self._send([*extra, stage_op, plain], effect=effect, run_id=run.id)
        run.seq = run.stored = None  # no longer known exactly
        new.version = (new.version or 0) + 1
        _stored([new])
        if moves and not decided:
            self._settle(run.id, new.updated_at, started, ended)

    def _send_busy(self, items: list[TxItem], actions: list[Action], condition, busy: tuple,
                   run: Run, now: datetime, started: datetime | None, ended: datetime | None) -> bool:
        """Send a change that leaves the run busy (``_busy_guard``) with its derived fields and
        bounds exact, conditioned on the counters that decide the status instead of on the
        change counter. The latest end is set where this end is later than the stored one
        (condition: still later or absent) and else only checked (still not earlier): writers
        commit in another order than their clocks read, so a failed first try is sent once
        more with the other form. False when the counters no longer keep the run busy (the
        caller then writes it the plain way and settles)."""
        status, guard = busy
        stored = run.stored or {}
        wanted = {"status": status.value, "pipeline_status": f"{run.pipeline}#{status.value}",
                  "ended_at": None, "duration_ms": None}
        derived = _updates(stored, wanted)
        kept = [name for name in wanted if stored.get(name) == wanted[name]]
        base = condition & guard
        for name in kept:  # fields left as read must still be so
            base &= _equals(getattr(RunItem, name), stored.get(name))
        fixed = list(actions) + derived
        if derived:
            fixed.append(RunItem.updated_at.set(format_iso(now)))
        if started is not None:
            mine = format_iso(started)
            fixed.append(RunItem.started_at.set(RunItem.started_at | mine))
            base &= RunItem.started_at.does_not_exist() | (RunItem.started_at <= mine)
        forms: list[tuple[bool, object] | None] = [None]
        if ended is not None:
            end = format_iso(ended)
            later = RunItem.last_end.does_not_exist() | (RunItem.last_end <= end)
            forms = [(True, later), (False, RunItem.last_end >= end)]
            if stored.get("last_end") is not None and stored["last_end"] > end:
                forms.reverse()
        for form in forms:
            update, check = list(fixed), base
            if form is not None:
                moves_end, bound = form
                if moves_end:
                    update.append(RunItem.last_end.set(end))
                check &= bound
            op = tx_update(self.items.run, run_pk(run.id), models.RUN_SK, update, check)
            try:
                self._send([*items, op], effect={"run": run.id}, run_id=run.id)
            except ConcurrentModification:
                continue
            run.seq = run.stored = None  # no longer known exactly
            return True
        return False

    def _mark_contended(self, run_id: str) -> None:
        with self._contention:
            if len(self._contended) >= CONTENDED_RUNS:
                self._contended.pop(next(iter(self._contended)), None)  # the oldest
            self._contended[run_id] = CONTENDED_SKIPS

    def _send(self, items: list[TxItem], effect: dict, run_id: str) -> None:
        """One transaction, sent again (bounded, jittered) while DynamoDB cancels it only for
        another transaction in flight on one of its items; a failed condition is the caller's
        ``ConcurrentModification`` (reload)."""
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                self.writer.transact_write(items, effect=effect)
                return
            except TransactWriteError as error:
                if attempt + 1 < CONFLICT_ATTEMPTS and _only_transaction_conflicts(error):
                    self.conflicts += 1
                    self.pause(attempt)
                    continue
                if _is_condition_failure(error):
                    raise ConcurrentModification(
                        f"run {run_id!r} was changed by someone else; retry") from None
                raise

    def _settle(self, run_id: str, now: datetime, started: datetime | None, ended: datetime | None) -> None:
        """After a change of one stage whose derived fields were not set with it: read the run's
        summary (one GetItem) and set what derives from it -- status, the ``pipeline#status``
        index key, end and duration once final -- where it differs, conditioned on the change
        counter read and on the bounds read. Every writer that moved a counter or a bound
        settles after its own commit (or set the fields in it), so the last one to commit
        reads every change and its condition holds: the stored status ends equal to what the
        counters, and so the stages, imply. A writer whose condition failed because another
        change committed leaves it to that one; only bounds moved meanwhile make it read again.

        Bounds: the first start is set in the transaction if absent and the latest end is the
        last committed one's; a writer whose own start is earlier (or end later) than the
        stored one, which clock skew between writers can cause, moves it by a monotone
        conditional update (min/max) that no other writer can make wrong. Between a commit and
        its settle only the stored copy (so the status index) can lag: the run view derives
        status from the stages it reads."""
        model, pk = self.items.run, run_pk(run_id)
        connection = model._get_connection()
        for _ in range(SETTLE_ATTEMPTS):
            try:
                item = model.get(pk, models.RUN_SK, consistent_read=True)
            except model.DoesNotExist:
                return
            counts = counts_of(item)
            if counts is None or item.intent_id:
                return  # a change of the whole run is under way: it writes all of these
            if _monotone(connection, pk, item, started, ended):
                continue  # a bound moved: read it back
            actions = _settle_actions(item, run_status_from_counts(
                counts, stopping=item.stopping is not None))
            if not actions:
                return
            actions.append(RunItem.updated_at.set(format_iso(now)))
            try:
                connection.update_item(pk, models.RUN_SK, actions=actions, condition=(
                    (RunItem.seq == int(item.seq)) & _equals(RunItem.started_at, item.started_at)
                    & _equals(RunItem.last_end, item.last_end)))
                return
            except UpdateError as error:
                if not _is_condition_failure(error):
                    raise
            try:
                again = model.get(pk, models.RUN_SK, consistent_read=True)
            except model.DoesNotExist:
                return
            if again.seq != item.seq:
                return  # a later change committed: its writer settles
        log.info("run %s: its bounds kept moving; a later writer settles it", run_id)

    def _save_run(self, before: RunAggregate, after: RunAggregate, extra: Sequence[TxItem],
                  effect: dict | None = None, *, claim: bool = True) -> None:
        """Write what changed in one transaction with the whole run item, conditioned on the
        run's version and change counter as read, so that it fails if any stage changed since
        (a change of the whole run is decided on all of them); the run item is written in the
        current layout (an item of the previous layout is upgraded here). A change too big for
        one transaction goes through an intent (module docstring)."""
        old = {stage.id: stage for stage in before.stages}
        new_ids = {stage.id for stage in after.stages}
        changed = [s for s in after.stages if s.id not in old or asdict(s) != asdict(old[s.id])
                   or after.run.seq is None]  # upgrading a run of the previous layout: every stage
        removed = [s for s in before.stages if s.id not in new_ids]
        run_version = (after.run.version or 0) + 1
        big = len(after.stages) > BIG_RUN_STAGES
        unflagged = ({stage_sk(s.position) for s in before.stages}
                     if len(before.stages) <= BIG_RUN_STAGES else set())
        try:
            self._commit(_Change(
                run=run_to_item(self.items.run, after.run, after.stages),
                run_condition=RunItem.intent_id.does_not_exist() & _seq_is(after.run.seq),
                puts=[stage_to_item(self.items.stage, s, big_run=big, run_version=run_version)
                      for s in changed],
                deletes=[stage_to_item(self.items.stage, s) for s in removed], unflagged=unflagged,
                after_big=big, extra=extra, effect=(effect or {"run": after.run.id}) if claim else None,
                attempt_puts=_ended_attempts(self.items.attempt, changed),
                attempt_deletes=_history_of(removed),
            ))
        except TransactWriteError as error:
            if _is_condition_failure(error):
                raise ConcurrentModification(
                    f"run {after.run.id!r} was changed by someone else; retry"
                ) from None
            raise
        _bump_versions(after.run, changed)
        after.run.seq = (after.run.seq or 0) + 1
        _stored(changed)

    def delete_run(self, aggregate: RunAggregate, extra: Sequence[TxItem] = ()) -> None:
        try:
            self._commit(_Change(
                run=run_to_item(self.items.run, aggregate.run, aggregate.stages),
                run_condition=RunItem.intent_id.does_not_exist(),
                deletes=[stage_to_item(self.items.stage, s) for s in aggregate.stages], drop_run=True,
                extra=extra,
                effect={"run": aggregate.run.id, "deleted": True},
                unflagged=({stage_sk(s.position) for s in aggregate.stages}
                           if len(aggregate.stages) <= BIG_RUN_STAGES else set()),
                attempt_deletes=_history_of(aggregate.stages),
            ))
        except TransactWriteError as error:
            if _is_condition_failure(error):
                raise ConcurrentModification(
                    f"run {aggregate.run.id!r} was changed by someone else; retry"
                ) from None
            raise

    def list_runs(self, pipeline: str, status: StageStatus | None, limit: int,
                  cursor: str | None) -> tuple[list[Run], str | None]:
        scope = runs_cursor_scope(pipeline, status)
        start = (
            key_from_cursor_payload(self.cursors.open(scope, cursor), _RUN_CURSOR_KEYS) if cursor else None
        )
        if status is None:
            results = self.items.run.by_pipeline.query(
                pipeline, scan_index_forward=False, limit=limit, last_evaluated_key=start,
                page_size=limit,
            )
        else:
            results = self.items.run.by_pipeline_status.query(
                f"{pipeline}#{status.value}", scan_index_forward=False, limit=limit,
                last_evaluated_key=start, page_size=limit,
            )
        runs = [run_from_item(item) for item in results]
        return runs, self.cursors.seal(scope, results.last_evaluated_key)

    # -- attempt history: read only when asked for -----------------------------------------

    def list_attempts(self, stage: Stage, limit: int,
                      cursor: str | None) -> tuple[list[dict], str | None]:
        """Newest first: one strongly consistent Query of the stage's attempt partition per page
        (none for a stage never retried). The cursor holds the last attempt number returned."""
        scope = f"attempts/{stage.id}"
        below = stage.attempt  # only the ended attempts of the stage as it was read
        if cursor:
            below = min(below, _attempt_cursor(self.cursors.open(scope, cursor)))
        if stage.attempts:  # an item of the previous layout: its history is inline
            entries = sorted((e for e in stage.attempts if int(e["attempt"]) < below),
                             key=lambda e: int(e["attempt"]), reverse=True)
        elif stage.attempt_count <= 1 or below <= stage.first_attempt:
            entries = []
        else:
            entries = self._query_attempts(stage, below, limit + 1)
            if cursor is None and int(entries[0]["attempt"] if entries else 0) != stage.attempt - 1:
                # A big run's change still pending (its intent holds the newest attempt item):
                # loading the run completes it, then the history is whole.
                self.load_run(stage.run_id)
                entries = self._query_attempts(stage, below, limit + 1)
        page = entries[:limit]
        more = len(entries) > limit
        return page, self.cursors.seal(scope, {"after": int(page[-1]["attempt"])}) if more and page else None

    def _query_attempts(self, stage: Stage, below: int, limit: int) -> list[dict]:
        model = self.items.attempt
        results = model.query(attempts_pk(stage.id), model.sk.between(
            attempt_sk(stage.first_attempt), attempt_sk(below - 1)), scan_index_forward=False,
            consistent_read=True, limit=limit, page_size=limit)
        return [attempt_from_item(item) for item in results]

    def get_attempt(self, stage: Stage, number: int) -> dict | None:
        """One GetItem by key (none for a number the stage never had ended)."""
        if not stage.first_attempt <= number < stage.attempt:
            return None
        if stage.attempts:
            return next((dict(e) for e in stage.attempts if int(e["attempt"]) == number), None)
        for _ in range(2):
            try:
                item = self.items.attempt.get(attempts_pk(stage.id), attempt_sk(number), consistent_read=True)
                return attempt_from_item(item)
            except self.items.attempt.DoesNotExist:
                self.load_run(stage.run_id)  # a pending big-run change may hold it: complete it
        return None

    def attempts_of(self, stages: list[Stage]) -> dict[str, list[dict]]:
        """One Query per stage that has ended attempts (at most 99 items each: MAX_ATTEMPTS)."""
        result: dict[str, list[dict]] = {}
        for stage in stages:
            if stage.attempts:
                found = [dict(e) for e in stage.attempts]
            elif stage.attempt_count > 1:
                found = self._query_attempts(stage, stage.attempt, stage.attempt_count)
            else:
                found = []
            result[stage.id] = sorted(found, key=lambda e: int(e["attempt"]))
        return result

    # -- one change, in one transaction or through an intent ----------------------------------

    def _commit(self, change: _Change) -> None:
        """Raises TransactWriteError if the change (its first transaction) was not committed."""
        run, pk = change.run, change.run.pk
        run_op = (tx_delete(run, change.run_condition) if change.drop_run
                  else tx_put(run, change.run_condition))
        stage_ops = [tx_put(s, change.put_condition) for s in change.puts]
        stage_ops += [tx_delete(s) for s in change.deletes]
        stage_ops += [tx_put(a) for a in change.attempt_puts]
        stage_ops += [self._attempt_delete(*key) for key in _attempt_keys(change.attempt_deletes)]
        written = {s.sk for s in change.puts} | {s.sk for s in change.deletes}
        flags = ([_flag(self.items.stage, pk, sk) for sk in sorted(change.unflagged - written)]
                 if change.after_big else [])
        items = [*change.extra, run_op, *stage_ops, *flags]
        claim = 1 if change.effect is not None and self.writer.carries_claim() else 0  # the key's record
        if len(items) + claim <= MAX_TRANSACTION_ITEMS:
            self.writer.transact_write(items, effect=change.effect)
            return
        intent = Intent(id=uuid.uuid4().hex, puts=[_written_form(s) for s in change.puts],
                        deletes=sorted(s.sk for s in change.deletes), drop_run=change.drop_run,
                        attempt_puts=[a.serialize() for a in change.attempt_puts],
                        attempt_deletes=[list(key) for key in change.attempt_deletes])
        blob = intent.encode()
        due = format_iso(parse_iso(run.updated_at) + timedelta(seconds=INTENT_GRACE_SECONDS))
        marks = [RunItem.intent_id.set(intent.id), RunItem.intent.set(blob),
                 RunItem.active_shard.set(active_shard(run.run_id)), RunItem.due_at.set(due)]
        if change.drop_run:  # the run item stays (with the intent) until its stages are gone
            version = int(run.version or 0)
            run_op = tx_update(self.items.run, pk, models.RUN_SK, [*marks, RunItem.version.set(version + 1)],
                               (RunItem.version == version) & change.run_condition)
            size = item_bytes(run.serialize()) + len(blob) + 200
        else:
            run.intent_id, run.intent = intent.id, blob
            run.active_shard, run.due_at = active_shard(run.run_id), due
            run_op = tx_put(run, change.run_condition)
            size = item_bytes(run.serialize())
        if size > MAX_RUN_ITEM_BYTES:
            raise RunTooLarge(f"run {run.run_id!r}: this change of {len(written)} stages does not fit "
                              f"in one DynamoDB item ({size} bytes); nothing was changed")
        # Stored stage items that may lack big_run are marked in the first transaction, so that
        # get_stage knows to look at the intent for them while it is pending.
        flags = [_flag(self.items.stage, pk, sk) for sk in sorted(change.unflagged)]
        first = [*change.extra, run_op, *flags]
        self.writer.transact_write(first, effect=change.effect)
        try:
            self._complete(run.run_id, intent)
        except Exception:  # noqa: BLE001 - committed already: the next reader, writer or sweep completes it
            log.warning("run %s: change committed, its stage items not all written yet; "
                        "the next read or sweep completes it", run.run_id, exc_info=True)

    def _complete(self, run_id: str, intent: Intent) -> None:
        """Write the intent's stage items in chunks, each guarded by the intent still being
        there, then remove the intent (or the run). Idempotent: run it as often as you like."""
        pk = run_pk(run_id)
        guard = tx_check(self.items.run, pk, models.RUN_SK, RunItem.intent_id == intent.id)
        table = self.items.table_name
        ops = [TxItem(PUT, {"TableName": table, "Item": raw}) for raw in intent.puts]
        ops += [TxItem(DELETE, self.items.stage.get_operation_kwargs_from_class(pk, range_key=sk))
                for sk in intent.deletes]
        ops += [TxItem(PUT, {"TableName": table, "Item": raw}) for raw in intent.attempt_puts]
        ops += [self._attempt_delete(*key) for key in _attempt_keys(intent.attempt_deletes)]
        size = MAX_TRANSACTION_ITEMS - 1
        for start in range(0, len(ops), size):
            self.writer.transact_write([guard, *ops[start:start + size]])
        connection = self.items.run._get_connection()
        done = RunItem.intent_id == intent.id
        try:
            if intent.drop_run:
                connection.delete_item(pk, models.RUN_SK, condition=done)
            else:
                connection.update_item(pk, models.RUN_SK, condition=done, actions=[
                    RunItem.intent_id.remove(), RunItem.intent.remove(), RunItem.active_shard.remove(),
                    RunItem.due_at.remove()])
        except (UpdateError, DeleteError) as error:
            if not _is_condition_failure(error):
                raise

    def _attempt_delete(self, stage_id: str, number: int) -> TxItem:
        return TxItem(DELETE, self.items.attempt.get_operation_kwargs_from_class(
            attempts_pk(stage_id), range_key=attempt_sk(number)))

    def _roll_forward(self, run_id: str, intent: Intent) -> bool:
        """Complete a pending intent found by a reader. Best effort: False if that failed for
        now (another process is completing it, it is already done, or this function may not
        write); the reader still sees the change applied, and writers wait for it to be gone."""
        try:
            self._complete(run_id, intent)
            return True
        except TransactWriteError as error:
            if not _is_condition_failure(error):
                log.warning("run %s: completing its pending change failed (%s); will be retried",
                            run_id, getattr(error, "cause_response_code", None))
            return False
        except Exception:  # noqa: BLE001 - reading must not fail because healing did
            log.warning("run %s: completing its pending change failed; will be retried", run_id,
                        exc_info=True)
            return False


def _seq_is(seq: int | None):
    """The run item's change counter is still ``seq`` (absent: a run of the previous layout)."""
    return RunItem.seq.does_not_exist() if seq is None else RunItem.seq == seq


def _earliest(stored: str | None, candidate: datetime | None) -> str | None:
    values = [v for v in (stored, format_iso(candidate)) if v is not None]
    return min(values) if values else None  # ISO-8601 UTC with a fixed width sorts as time


def _latest(stored: str | None, candidate: datetime | None) -> str | None:
    values = [v for v in (stored, format_iso(candidate)) if v is not None]
    return max(values) if values else None


def _summary_change(changes: Sequence[tuple[Stage, Stage]]
                    ) -> tuple[list[Action], list[Action], datetime | None, datetime | None]:
    """The run summary's atomic actions for stages changed from old to new (per-status counters
    ADD, change counter + 1), apart from the bounds (first start if absent, latest end: for a
    write without the exact derived fields, which hold them); and the earliest start and
    latest end the change sets (None where it sets none)."""
    delta: dict[StageStatus, int] = {}
    for old, new in changes:
        delta[counted_status(old)] = delta.get(counted_status(old), 0) - 1
        delta[counted_status(new)] = delta.get(counted_status(new), 0) + 1
    actions: list[Action] = [RunItem.seq.set(RunItem.seq + 1)]
    actions += [status_counter(status).add(n) for status, n in delta.items() if n]
    started = min((new.started_at for old, new in changes
                   if new.started_at is not None and new.started_at != old.started_at), default=None)
    ended = max((new.ended_at for old, new in changes
                 if new.ended_at is not None and new.ended_at != old.ended_at), default=None)
    bounds: list[Action] = []
    if started is not None:
        bounds.append(RunItem.started_at.set(RunItem.started_at | format_iso(started)))
    if ended is not None:
        bounds.append(RunItem.last_end.set(format_iso(ended)))
    return actions, bounds, started, ended


def _summary_condition(run: Run):
    """What every write of stages read in part holds the run item to: the run's version (bumped
    only by changes of the whole run), the current layout, no intent pending."""
    return ((RunItem.version == run.version) & RunItem.seq.exists()
            & RunItem.intent_id.does_not_exist())


def _derived_after(run: Run, changes: Sequence[tuple[Stage, Stage]]) -> dict:
    """The run item's derived fields after each ``old`` became its ``new``, from the stored
    counters and bounds (``run.stored``, as read) -- exact when nothing else changed since the
    read, which the transaction that writes them is conditioned on. Needs no other stage."""
    stored = run.stored or {}
    counts = dict(stored.get("counts") or {})
    for old, new in changes:
        counts[counted_status(old)] = counts.get(counted_status(old), 0) - 1
        counts[counted_status(new)] = counts.get(counted_status(new), 0) + 1
    status = run_status_from_counts(counts, stopping=run.stopping is not None)
    start = stored.get("started_at")
    last_end = stored.get("last_end")
    for _, new in changes:
        start, last_end = _earliest(start, new.started_at), _latest(last_end, new.ended_at)
    end = last_end if status in FINAL else None
    duration = (millis_between(parse_iso(start), parse_iso(end))
                if start is not None and end is not None else None)
    return {"status": status.value, "pipeline_status": f"{run.pipeline}#{status.value}",
            "started_at": start, "ended_at": end, "duration_ms": duration, "last_end": last_end}


# a run's status by precedence, not final (status.run_status_from_counts)
BUSY = (StageStatus.IN_PROGRESS, StageStatus.WAITING_FOR_APPROVAL, StageStatus.RETRY_PENDING)


def _busy_guard(run: Run, was: StageStatus, counted: StageStatus) -> tuple | None:
    """(status, condition) when, by the counters read, the run stays busy after a stage counted
    as ``was`` counts as ``counted``: it still has a stage running (or, with none running, one
    waiting for approval). The condition states that on the live counters, so any writer whose
    condition holds at its commit knows the run's status without knowing the other changes;
    None when the run may end or go idle (the exact or settle path decides then)."""
    counts = dict((run.stored or {}).get("counts") or {})
    if not counts:
        return None
    after = dict(counts)
    after[was] = after.get(was, 0) - 1
    after[counted] = after.get(counted, 0) + 1
    status = run_status_from_counts(after)
    if status not in BUSY or after.get(status, 0) < 1:
        return None

    def delta(s: StageStatus) -> int:
        return int(s == counted) - int(s == was)

    need = 1 - delta(status)
    condition = status_counter(status) >= need if need > 0 else RunItem.seq.exists()
    for higher in BUSY[:BUSY.index(status)]:  # none of those after the change
        left = -delta(higher)
        counter = status_counter(higher)
        condition &= (counter.does_not_exist() | (counter == 0)) if left == 0 else (counter == left)
    return _busy_status(run, status), condition


def _busy_status(run: Run, status: StageStatus) -> StageStatus:
    """The status of a busy run (``status``: its busiest stage's): CANCELLING while it is being
    stopped (``Run.stopping``, fixed by the run's version every such write is conditioned on)."""
    return StageStatus.CANCELLING if run.stopping is not None else status


def _updates(stored: dict, wanted: dict) -> list:
    """SET (or REMOVE) each attribute whose wanted value differs from the stored one."""
    actions = []
    for name, value in wanted.items():
        if stored.get(name) == value:
            continue
        attribute = getattr(RunItem, name)
        actions.append(attribute.remove() if value is None else attribute.set(value))
    return actions


def _settle_actions(item: RunItem, status: StageStatus) -> list:
    """The updates that bring the run item's derived fields in line with its counters and bounds."""
    end = (item.last_end or item.ended_at) if status in FINAL else None
    duration = (millis_between(parse_iso(item.started_at), parse_iso(end))
                if item.started_at is not None and end is not None else None)
    return _updates(_stored_derived(item), {
        "status": status.value, "pipeline_status": f"{item.pipeline}#{status.value}",
        "ended_at": end, "duration_ms": duration})


def _equals(attribute, value):
    return attribute.does_not_exist() if value is None else attribute == value


def _monotone(connection, pk: str, item: RunItem, started: datetime | None, ended: datetime | None) -> bool:
    """Move the run's first start earlier / latest end later to this writer's own, where they
    are (min/max by a conditional update: cannot make a bound wrong). True if one moved."""
    moved = False
    for attribute, mine, better in ((RunItem.started_at, format_iso(started), lambda a, b: a < b),
                                    (RunItem.last_end, format_iso(ended), lambda a, b: a > b)):
        stored = getattr(item, attribute.attr_name)
        if mine is None or (stored is not None and not better(mine, stored)):
            continue
        condition = attribute.does_not_exist() | (attribute > mine if attribute is RunItem.started_at
                                                   else attribute < mine)
        try:
            connection.update_item(pk, models.RUN_SK, actions=[attribute.set(mine)], condition=condition)
            moved = True
        except UpdateError as error:
            if not _is_condition_failure(error):
                raise
    return moved


def _attempt_cursor(payload: dict) -> int:
    after = payload.get("after") if isinstance(payload, dict) else None
    if set(payload) != {"after"} or type(after) is not int or not 1 <= after <= 9999:
        raise BadRequest(cursors.INVALID)
    return after


def _attempt_keys(ranges: Sequence[Sequence]) -> list[tuple[str, int]]:
    """Every (stage id, attempt number) of the (stage id, first, last) ranges."""
    return [(str(stage_id), number) for stage_id, first, last in ranges
            for number in range(int(first), int(last) + 1)]


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


def _client_error_code(error: Exception) -> str | None:
    """The error code of a botocore ClientError (None for anything else)."""
    response = getattr(error, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


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

