"""The ports the use cases need: what they store and read, as ``typing.Protocol``s, and the plain
values those ports exchange.

The services see only these. ``chalicelib/store/`` implements them on DynamoDB (``store/dynamo.py``
assembles them; the only code that knows item keys, indexes, conditions and stream images) and in
memory (``store/memory.py``, for the unit tier). One contract suite
(``tests/integration/test_store_contract.py``) runs against both, so what a caller relies on
(the domain errors a conditional write raises, versions, the Idempotency-Key claim carried by
the change it guards, paging with the signed cursor codec, ordering) holds for either.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from ..domain.clock import format_iso
from ..domain.concurrency import Group
from ..domain.errors import Conflict
from ..domain.events import FORMAT_STAGETRACK, StateChange
from ..domain.insights import (
    AttemptMark,
    DayItem,
    DeploymentSignal,
    FinishedAttempt,
    FinishedRun,
    PipelineState,
    RetryRecorded,
    Tally,
)
from ..domain.model import Run, RunAggregate, Stage
from ..domain.operations import Pipeline
from ..domain.overruns import StageStarted
from ..domain.rebuilds import RebuildRecord
from ..domain.schedules import Schedule, WakeUp
from ..domain.status import StageStatus

# ---- values the ports exchange -----------------------------------------------------------------


@dataclass(frozen=True)
class StoredToken:
    token_id: str
    name: str
    scopes: list[str]
    pipelines: list[str] | None
    created_at: str
    created_by: str | None = None
    window: int = 0
    hits: int = 0
    access_key: str | None = None  # set for an access key pair
    sealed_secret_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class StoredSession:
    """A browser session (service/tokens.py sign_in): found by the SHA-256 of its id, holding
    the SHA-256 of the token it stands for (never the token), its CSRF token and its end."""

    session_hash: str
    token_hash: str = field(repr=False)
    csrf_token: str = field(repr=False)
    expires_at: int  # epoch seconds; DynamoDB's TTL removes the item some time after
    created_at: str


@dataclass(frozen=True)
class StoredSource:
    name: str
    type: str
    sealed_secret: str  # AES-GCM ciphertext; opened only to verify a request
    created_at: str
    created_by: str | None = None

    def __repr__(self) -> str:  # the sealed value stays out of logs too
        return f"StoredSource(name={self.name!r}, type={self.type!r})"


@dataclass(frozen=True)
class StoredSubscription:
    subscription_id: str
    url: str
    events: tuple[str, ...]
    pipelines: tuple[str, ...] | None
    statuses: tuple[str, ...] | None
    sealed_secret: str
    created_at: str
    created_by: str | None = None
    description: str | None = None
    format: str = FORMAT_STAGETRACK  # what its deliveries carry: "stagetrack" or "cdevents"

    def __repr__(self) -> str:
        return f"StoredSubscription(id={self.subscription_id!r})"


@dataclass(frozen=True)
class DeliveryAttempt:
    subscription_id: str
    delivery_id: str
    event_id: str
    event_type: str
    attempt: int
    outcome: str  # delivered | retrying | dead-lettered
    at: str
    status_code: int | None = None
    error: str | None = None
    duration_ms: int | None = None
    next_attempt_at: str | None = None


DELIVERY_RETENTION_SECONDS = 14 * 24 * 3600  # attempts are kept this long, then expire


@dataclass(frozen=True)
class DueTimer:
    """One stage attempt whose timer should fire at ``due_at`` (ISO-8601 UTC).

    ``set_at``: when the item carrying this due moment was written (ISO), if the source knows
    it (a stream image's ``updatedAt``); the timers' horizon rule measures from it
    (service/timers.py: ``waits_on_workflow``). Not part of the timer's identity.
    """

    stage_id: str
    attempt: int
    due_at: str
    set_at: str | None = field(default=None, compare=False)


@dataclass
class DueQuery:
    timers: list[DueTimer] = field(default_factory=list)
    queries: int = 0
    items_read: int = 0  # what the store actually read (DynamoDB: ScannedCount over every page)
    capacity_units: float = 0.0
    truncated: bool = False
    # Runs with a change still pending past its grace time (a big run whose writer died
    # between its chunks: store/repository.py); loading such a run completes it.
    pending_runs: list[str] = field(default_factory=list)


# Idempotency-Key records go PENDING -> COMMITTED -> DONE (store/idempotency.py).
PENDING, COMMITTED, DONE = "PENDING", "COMMITTED", "DONE"


@dataclass(frozen=True)
class Record:
    """What a repeated key finds: the first request still running (PENDING), its effect
    committed without a stored response (COMMITTED, ``effect`` says what it wrote), or its
    stored response (DONE)."""

    state: str
    fingerprint: str
    status_code: int | None = None
    headers: dict | None = None
    body: bytes | None = None
    effect: dict | None = None


class ClaimTakenOver(Conflict):
    """The claim's lease ran out and another request claimed the key: this one must not commit."""

    code = "idempotency_key_in_use"


class SecretUnreadable(Exception):
    """A sealed value that no configured key opens (key changed, or the value was tampered)."""


# ---- the ports ---------------------------------------------------------------------------------


class RunStore(Protocol):
    """Runs and their stages. Every write is conditional on the versions read: a lost race
    raises ``ConcurrentModification`` and writes nothing; a successful write bumps the
    ``version`` of every stage it wrote, in the objects passed in, and that of the run unless
    it was a change of one stage alone (``save(local=True)``).

    Attempt history: a stage's ended attempts (``Stage.attempts`` of a stage written) are stored
    with the change that wrote the stage, one record each, and the list is emptied in the objects
    passed in. They are never read with the run or the stage (``load_run`` and ``get_stage``
    leave ``Stage.attempts`` empty), only by ``list_attempts``, ``get_attempt`` and
    ``attempts_of``; deleting a stage or a run deletes its attempts in the same change. An
    attempt record is the dict ``operations.new_attempt`` made (``attempt``, ``status``,
    ``startedAt``, ``endedAt``, ``duration``, and ``approvalDecision`` if its gate was decided).
    """

    def insert_run(self, aggregate: RunAggregate, layout: dict | None = None) -> None:
        """Run and stages appear together or not at all; ``layout`` (when given) is stored on
        the pipeline in the same write."""

    def load_run(self, run_id: str) -> RunAggregate | None:
        """The run with its stages in position order (strongly consistent); None if unknown."""

    def load_stage(self, stage_id: str, following: StageStatus | None = None) -> RunAggregate | None:
        """The run with only this stage (``partial``; no stages if the run has no such stage),
        strongly consistent, for a change of that stage alone; None if the run is unknown. Its
        run's derived fields are as stored. A store may return the whole run instead.

        With ``following``: also every stage after this one when the run has any stage in that
        status (a stage retry restarts the SKIPPED stages after it), read in one bounded read."""

    def get_stage(self, stage_id: str) -> Stage | None: ...

    def record_expectations(self, stage: Stage) -> bool:
        """Write ``stage``'s ``expectations`` and ``overrun_at`` (its timer follows) and nothing
        else, conditioned on its version as read; bumps it. False (nothing written): the stage
        changed since, or belongs to a big run (domain/overruns.py, the stream consumer's step)."""

    def save(self, before: RunAggregate, after: RunAggregate, *, local: bool = False) -> None:
        """Write what changed between ``before`` and ``after`` (stages added, changed, removed)
        and the run, conditioned on the versions read and on no stage having changed since.

        With ``local`` (the change was decided from the one stage it changes) a change of
        exactly one stage and nothing of the run's own is written as that stage, conditioned
        on its version and on the run's version (which only changes of the whole run bump), and
        the run's summary: changes of different stages of one run then never conflict. A run
        read in part (``load_stage``) whose change touched several of the stages read is
        written the same way, each stage conditioned on its own version, all or none."""

    def delete_run(self, aggregate: RunAggregate) -> None: ...

    def list_runs(self, pipeline: str, status: StageStatus | None, limit: int,
                  cursor: str | None) -> tuple[list[Run], str | None]:
        """Newest first (by counter), ``limit`` per page; the next page's signed cursor, valid
        only for the same (pipeline, status) listing, or None after the last page. A cursor
        that does not open raises ``BadRequest``."""

    def list_attempts(self, stage: Stage, limit: int,
                      cursor: str | None) -> tuple[list[dict], str | None]:
        """The ended attempts of ``stage`` (as ``get_stage`` or ``load_run`` returned it), newest
        first, ``limit`` per page; the next page's signed cursor, valid for this stage only, or
        None after the last page. A cursor that does not open raises ``BadRequest``."""

    def get_attempt(self, stage: Stage, number: int) -> dict | None:
        """One ended attempt of ``stage`` by its number (one read by key), or None."""

    def attempts_of(self, stages: list[Stage]) -> dict[str, list[dict]]:
        """The ended attempts of each stage (stage id -> oldest first); a stage that was never
        retried costs no read."""


class RunLinks(Protocol):
    """A sender's run (namespace, key) -> our run, made together with the run."""

    def linked_run(self, namespace: str, key: str) -> str | None: ...

    def insert_linked_run(self, aggregate: RunAggregate, namespace: str, key: str, created_at: str) -> bool:
        """Run + stages + link, all or nothing. False: the link exists already (another
        delivery made the run first); nothing was written."""


class PipelineStore(Protocol):
    def get(self, pipeline: str) -> Pipeline | None: ...

    def claim_counter(self, pipeline: str, *, require_layout: bool = False,
                      at: datetime | None = None) -> tuple[int, dict | None]:
        """The next run number (1, 2, ...; atomic) and the stored layout. A paused pipeline
        raises ``PipelinePaused``; with ``require_layout`` a pipeline that never ran raises
        ``NotFound`` and nothing is claimed. ``at`` (the new run's creation time) becomes the
        pipeline's ``last_activity``, which orders ``Finder.list_pipelines``."""

    def set_paused(self, pipeline: str, paused: bool, *, cause: str | None = None,
                   by: str | None = None, at: datetime | None = None) -> Pipeline:
        """Unknown pipeline: ``NotFound``; already in that state: ``Conflict``. The change
        carries the held Idempotency-Key claim's commit (see ``IdempotencyStore.holding``)."""

    def claim(self, pipeline: str, *, require_layout: bool = False,
              at: datetime | None = None) -> Claimed:
        """As ``claim_counter``, with the pipeline's concurrency setting read by the same write."""

    def set_concurrency(self, pipeline: str, setting: dict) -> Pipeline:
        """Store ``setting`` ({mode, group}); unknown pipeline: ``NotFound``. Carries the held
        Idempotency-Key claim's commit."""


@dataclass(frozen=True)
class Claimed:
    """A run number just claimed, with what the pipeline item holds that a create needs."""

    counter: int
    layout: dict | None
    concurrency: dict | None


class GroupStore(Protocol):
    """Concurrency groups (domain/concurrency.Group) and the writes that change one together with
    runs. Every write is one atomic write conditioned on the group's version as read (and on the
    runs' versions as read): a lost race raises ``ConcurrentModification`` and writes nothing."""

    def get(self, pipeline: str, name: str) -> Group | None:
        """The group (strongly consistent), or None if it was never written."""

    def insert_run(self, aggregate: RunAggregate, layout: dict | None, group: Group,
                   cancelled: tuple[RunAggregate, RunAggregate] | None = None,
                   link: tuple[str, str, str] | None = None) -> None:
        """The new run with its stages (as ``RunStore.insert_run``), ``group`` written as it is
        to be (conditioned on the version it carries), ``cancelled``: the change (before, after:
        its cancel, conditioned on the version read) of the run it replaces -- the holder it
        supersedes (SUPERSEDED) or the run waiting that a NEWEST queue replaces -- and ``link``
        (namespace, key, created at: as ``RunLinks.insert_linked_run``, on condition it does not
        exist), all in one write (DynamoDB, too big for one: the cancel first, conditioned on
        the group as read)."""

    def save_run(self, before: RunAggregate, after: RunAggregate, group: Group,
                 promoted: tuple[RunAggregate, RunAggregate] | None = None,
                 effect: dict | None = None, *, claim: bool = True) -> None:
        """A change of the whole run ``after`` (as ``RunStore.save``) with ``group`` written as it
        is to be, and the promotion of a queued run (before, after), all in one write. ``claim``
        False: the write does not carry the request's Idempotency-Key commit (a step of a create
        that commits it with its own last write)."""

    def write(self, group: Group, promoted: tuple[RunAggregate, RunAggregate] | None = None,
              checked: Run | None = None, *, now: datetime) -> None:
        """``group`` as it is to be, the promotion of a queued run, and a check that ``checked``
        (a run read) is unchanged since it was read (absent if it was read absent), in one write."""

    def due_groups(self, now_iso: str, limit: int = 100) -> list[tuple[str, str]]:
        """(pipeline, name) of the groups with waiting runs whose latest change is older than a
        grace time: one Query of a sparse index (the sweeper repairs them)."""


@dataclass(frozen=True)
class RunFilter:
    """What ``Finder.search_runs`` selects by; None: any. Instants as ISO-8601 UTC text with
    milliseconds (``clock.format_iso``), both bounds inclusive."""

    pipeline: str | None = None
    status: StageStatus | None = None
    branch: str | None = None
    actor: str | None = None
    commit: str | None = None  # a commit sha, lower case
    source: str | None = None
    created_from: str | None = None
    created_to: str | None = None

    def scope(self) -> str:
        """What a search cursor is bound to: these very filters."""
        values = [self.pipeline, self.status.value if self.status else None, self.branch, self.actor,
                  self.commit, self.source, self.created_from, self.created_to]
        return "search/" + json.dumps(values, separators=(",", ":"))

    def matches(self, run: Run) -> bool:
        created = format_iso(run.created_at)
        commit = (run.commit or {}).get("hash")
        return ((self.pipeline is None or run.pipeline == self.pipeline)
                and (self.status is None or run.status == self.status)
                and (self.branch is None or run.branch == self.branch)
                and (self.actor is None or run.actor == self.actor)
                and (self.commit is None or (commit or "").lower() == self.commit)
                and (self.source is None or run.source == self.source)
                and (self.created_from is None or created >= self.created_from)
                and (self.created_to is None or created <= self.created_to))


@dataclass(frozen=True)
class WaitingStage:
    """A stage waiting for approval, with its run (``Finder.waiting_approvals``)."""

    stage: Stage
    run: Run


class Finder(Protocol):
    """What people browse by: pipelines, runs across pipelines, approvals waiting. Each is a
    Query on an index of its own (store/finder.py; no Scan). ``reach`` is the pipelines the
    caller may see (None: every one): nothing of another pipeline is returned. Cursors are
    signed and valid only for the listing (and filters) that issued them; one that does not
    open raises ``BadRequest``."""

    def list_pipelines(self, reach: frozenset[str] | None, limit: int,
                       cursor: str | None) -> tuple[list[Pipeline], str | None]:
        """Pipelines that have had a run, most recently active first."""

    def recent_runs(self, pipeline: str, count: int) -> list[Run]:
        """The ``count`` newest runs of ``pipeline``, newest first, each with its
        ``stage_summary``."""

    def waiting_approvals(self, reach: frozenset[str] | None, limit: int,
                          cursor: str | None) -> tuple[list[WaitingStage], str | None]:
        """Stages in WAITING_FOR_APPROVAL, waiting longest first."""

    def search_runs(self, filters: RunFilter, reach: frozenset[str] | None, limit: int,
                    cursor: str | None) -> tuple[list[Run], str | None]:
        """Runs matching every filter, newest first. A page may hold fewer than ``limit`` runs
        (even none) with a next cursor when the filters left out many of the runs read."""


class DialectLookups(Protocol):
    """Reads only the dialect endpoints need."""

    def pipeline_by_codearts_key(self, key: str) -> Pipeline | None: ...

    def pipeline_by_buddy_key(self, key: str) -> Pipeline | None: ...

    def runs_between(self, pipeline: str, low: int, high: int, *, with_stages: bool = False) -> list[Run]:
        """Runs numbered low..high (inclusive), newest first; ``with_stages``: each with its
        ``stage_summary`` (one more read for all of them)."""


class IdempotencyStore(Protocol):
    def claim(self, key_hash: str, fingerprint: str, now: int, *, lease_seconds: int,
              ttl_seconds: int) -> str | Record:
        """A claim token (go ahead) or the ``Record`` that holds the key. A key is free when
        new, expired, or PENDING past its lease."""

    def complete(self, key_hash: str, token: str, status_code: int, headers: dict,
                 body: bytes | None, *, max_stored: int) -> str:
        """"stored", "lost" (claim taken over) or "too_large" (claim released)."""

    def release(self, key_hash: str, token: str) -> None:
        """Drop a PENDING claim still held by ``token``; a COMMITTED record stays."""

    def holding(self, key_hash: str, token: str) -> AbstractContextManager:
        """While the block runs, the first write of each change (a run's, a pipeline's, a
        token's, ...) also sets the record COMMITTED with what it wrote, atomically, on
        condition the claim is still ``token``'s; if it is not, that write raises
        ``Conflict`` (code ``idempotency_key_in_use``) and nothing is written."""


class TokenStore(Protocol):
    def insert(self, token: StoredToken, token_hash: str | None, window: int) -> None: ...

    def list_all(self) -> list[StoredToken]:
        """Oldest first."""

    def delete(self, token_id: str,
               allowed: Callable[[StoredToken], bool] = ...) -> StoredToken | None: ...

    def get_access_key(self, access_key: str) -> StoredToken | None: ...

    def hit(self, token_hash: str, window: int) -> StoredToken | None:
        """Look up and count one request in ``window`` (a newer stored window wins)."""

    def known(self, token_hash: str) -> bool:
        """Whether a token with this hash exists: one read, nothing written."""

    def hit_access_key(self, access_key: str, window: int) -> StoredToken | None: ...

    def put_session(self, session: StoredSession) -> None:
        """A new browser session (its id is random: a collision is refused)."""

    def get_session(self, session_hash: str) -> StoredSession | None:
        """The session with this id's hash, expired or not (the caller checks ``expires_at``)."""

    def delete_session(self, session_hash: str) -> None:
        """Sign-out: the session stops working at once (nothing happens if there is none)."""


class SourceStore(Protocol):
    def insert_source(self, source: StoredSource) -> bool:
        """False if a source of that name exists already."""

    def get_source(self, name: str) -> StoredSource | None: ...

    def list_sources(self) -> list[StoredSource]: ...

    def delete_source(self, name: str) -> StoredSource | None: ...


class SubscriptionStore(Protocol):
    def insert(self, subscription: StoredSubscription) -> None: ...

    def get(self, subscription_id: str) -> StoredSubscription | None: ...

    def list_all(self) -> list[StoredSubscription]:
        """Oldest first."""

    def delete(self, subscription_id: str,
               allowed: Callable[[StoredSubscription], bool] = ...) -> StoredSubscription | None: ...


class DeliveryLog(Protocol):
    def record(self, attempt: DeliveryAttempt, epoch_now: int) -> None: ...

    def list_attempts(self, subscription_id: str, limit: int,
                      cursor: str | None) -> tuple[list[DeliveryAttempt], str | None]:
        """Newest first, paged with a signed cursor valid for this subscription only."""


class ActiveTimers(Protocol):
    """The stages whose timers are armed."""

    def due_timers(self, now_iso: str, limit: int = 1000) -> DueQuery: ...

    def armed_timer(self, record: dict) -> DueTimer | None:
        """The timer a change record of the store's stream asks for, if any."""

    def disarmed_timer(self, record: dict) -> DueTimer | None:
        """The timer a change record of the store's stream makes stale, if any: the one its old
        image was due by, when the new image no longer is (ended, removed, deadline moved)."""


@dataclass(frozen=True)
class RunRecord:
    """What one change record of the store's stream says of a run item, for retention."""

    run_id: str
    status: str | None  # as written (None when removed)
    ended_at: str | None
    expires_at: int | None  # the item's TTL (epoch seconds), if it has one
    expired: bool = False  # removed by the table's TTL, not by a writer


class RunRetention(Protocol):
    """Finished runs expire (service/retention.py): a TTL on the run item, the rest after it."""

    def run_record(self, record: dict) -> RunRecord | None: ...

    def set_expiry(self, run_id: str, status: str, ended_at: str, expires_at: int) -> bool:
        """Only while the run is still ``status`` and ended at ``ended_at``; False otherwise."""

    def clear_expiry(self, run_id: str, status: str) -> bool:
        """Only while the run is still ``status``; False otherwise."""

    def delete_remains(self, run_id: str) -> int:
        """Delete the stages and ended attempts of a run whose item is gone; how many."""


class ScheduleStore(Protocol):
    """A pipeline's schedules (domain/schedules.py). Every change is conditional on the version
    read: a lost race raises ``ConcurrentModification`` and writes nothing."""

    def insert(self, schedule: Schedule) -> None:
        """A new schedule (its id is fresh); its ``version`` becomes 1."""

    def get(self, pipeline: str, schedule_id: str) -> Schedule | None:
        """Strongly consistent; None if unknown."""

    def list_for(self, pipeline: str) -> list[Schedule]:
        """Every schedule of the pipeline, oldest first (one Query)."""

    def replace(self, schedule: Schedule) -> Schedule:
        """Write ``schedule`` if its stored version is still ``schedule.version`` (then bumped);
        ``NotFound`` if it was deleted, ``ConcurrentModification`` if it changed."""

    def delete(self, pipeline: str, schedule_id: str) -> Schedule | None:
        """The deleted schedule, or None if there was none."""

    def due(self, now_iso: str, limit: int) -> list[tuple[str, str]]:
        """(pipeline, schedule id) of enabled schedules whose next fire time is at or before
        ``now_iso``, soonest first, at most ``limit``: a Query of a sparse index, never a Scan."""


class ChangeStream(Protocol):
    """The store's change records (the table's stream), read as domain events."""

    def state_change(self, record: dict, now: datetime) -> StateChange | None:
        """The state change a record stands for, or None (not a run or stage, or no change)."""

    def started_stage(self, record: dict) -> StageStarted | None:
        """A stage attempt that just entered IN_PROGRESS (domain/overruns.py), or None."""

    def finished_work(self, record: dict) -> FinishedAttempt | FinishedRun | RetryRecorded | None:
        """What a record adds to the insights (a stage attempt or a run that finished, a
        retry), or None."""


class InsightsStore(Protocol):
    """The aggregates of finished work (store/insights.py): day items of counters per pipeline
    (and of every pipeline together, ``pipeline=None``) that the stream consumer adds to with
    atomic ADDs, each record's marker written in the same transaction (a record applied twice
    counts once), and a pipeline's state (domain/insights.py ``PipelineState``)."""

    def run_marks(self, run_id: str) -> RunMarks:
        """What was recorded of a run's finished attempts, retries and last finish (1 Query)."""

    def add_attempt(self, attempt: FinishedAttempt, tally: Tally) -> bool:
        """Record the attempt's marker and add ``tally`` to its stage's day, in one transaction;
        False (nothing written) if its marker exists: the record was applied already."""

    def record_retry(self, retry: RetryRecorded) -> None:
        """Keep when a stage's new attempt became ready (a put: applying it twice is harmless)."""

    def pipeline_state(self, pipeline: str) -> PipelineState: ...

    def add_run(self, run: FinishedRun, counted_before: RunCounted | None, counted: dict[str, Tally],
                added: dict[tuple[str, str | None], Tally], before: PipelineState,
                after: PipelineState) -> bool:
        """In one transaction: the run's marker (``counted``: what it adds now, at ``run.order``),
        conditioned on being still ``counted_before``; ``added`` (by day and stage, None: the
        runs) into those day items;
        the pipeline's state, conditioned on its version. False if the marker's order is already
        ``run.order`` or later (applied already); ``ConcurrentModification`` if the marker or the
        state changed since read (read them again)."""

    def add_signal(self, signal: DeploymentSignal, added: dict[str, Tally], before: PipelineState,
                   after: PipelineState) -> bool:
        """In one transaction: the signal's item (conditioned on not existing: False, nothing
        written, if it was applied already), ``added`` (by day) into the pipeline's runs' day
        items and every pipeline's, and the state, conditioned on its version
        (``ConcurrentModification`` if it changed since read)."""

    def signals_of(self, pipeline: str) -> list[DeploymentSignal]:
        """Every signal kept for the pipeline, in the order they happened (for the rebuild)."""

    def read_days(self, pipeline: str | None, start: str, end: str) -> DaysRead:
        """The day items of [start, end] (ISO dates), of one pipeline or of all (``None``): one
        Query (paged by DynamoDB's 1 MB), never a Scan."""

    def replace_pipeline(self, pipeline: str, days: dict[tuple[str, str | None], Tally],
                         state: PipelineState, marks: dict[str, RunMarks]) -> int:
        """Rebuild: make the pipeline's day items exactly ``days`` ((day, stage or None) -> tally),
        its state ``state`` and the runs' markers ``marks``; returns the items written."""

    def replace_all_pipelines(self, days: dict[tuple[str, str | None], Tally]) -> int:
        """Rebuild the every-pipeline day items from the sum of every pipeline's."""

    def export_totals(self, pipeline: str) -> ExportTotals | None:
        """The OTLP export's folded counts of the pipeline (1 GetItem); None before its first
        export, or after a rebuild (``replace_pipeline`` drops them: the figures may have changed)."""

    def save_export_totals(self, pipeline: str, totals: ExportTotals) -> None:
        """Store ``totals`` as version ``totals.version + 1``, conditioned on the stored version
        still being ``totals.version`` (0: none stored); ``ConcurrentModification`` otherwise."""

    def rebuild_record(self) -> RebuildRecord | None:
        """The latest rebuild asked for through the API (strongly consistent), or None."""

    def claim_rebuild(self, record: RebuildRecord, stale_before: datetime) -> bool:
        """Write ``record`` (a new running rebuild) unless the current one is running with
        progress after ``stale_before``: False then, nothing written."""

    def save_rebuild(self, record: RebuildRecord) -> bool:
        """Write the rebuild's progress or end, only while the record is still this running
        rebuild's (same id): False if another took it over (this one was taken for dead)."""


@dataclass(frozen=True)
class RunCounted:
    """A run's marker: the finish (``order``) whose tallies (by day) the aggregates hold."""

    order: int
    tallies: dict[str, Tally]
    ended_at: datetime | None = None  # that finish's end: deployments up to it were taken then


@dataclass
class RunMarks:
    attempts: list[AttemptMark] = field(default_factory=list)
    retries: dict[tuple[int, int], datetime] = field(default_factory=dict)  # (position, attempt) -> ready
    counted: RunCounted | None = None


@dataclass(frozen=True)
class ExportTotals:
    """The OTLP export's counts of one pipeline for the days ``since`` .. ``through`` (ISO dates,
    both included; ``through`` before ``since``: none yet), kept so that each export reads only
    its recent days (service/insights_export.py). ``runs``: the answer's ``runs`` counts;
    ``stages``: stage name -> its ``runs`` and ``retries``."""

    since: str
    through: str
    runs: dict[str, int] = field(default_factory=dict)
    stages: dict[str, dict[str, int]] = field(default_factory=dict)
    version: int = 0


class ExportOutcome(Protocol):
    @property
    def ok(self) -> bool:
        """Accepted (2xx)."""

    @property
    def reached(self) -> bool:
        """The endpoint answered at all (an HTTP status, even a refusal)."""


class InsightsExporter(Protocol):
    """Sends one pipeline's figures somewhere (adapters/otlp.py ``OtlpExporter``: OTLP/HTTP);
    a failed send is an outcome that is not ``ok``, never an exception."""

    def export(self, answer: dict, pipeline: str | None = None, since: datetime | None = None
               ) -> ExportOutcome:
        """``since``: the start time of the cumulative counts (None: the answer's ``from``)."""


@dataclass
class DaysRead:
    items: list[DayItem] = field(default_factory=list)
    queries: int = 0
    items_read: int = 0
    capacity_units: float = 0.0


@dataclass
class Stores:
    runs: RunStore
    links: RunLinks
    pipelines: PipelineStore
    dialects: DialectLookups
    idempotency: IdempotencyStore
    tokens: TokenStore
    sources: SourceStore
    subscriptions: SubscriptionStore
    deliveries: DeliveryLog
    timers: ActiveTimers
    changes: ChangeStream
    finder: Finder
    schedules: ScheduleStore
    retention: RunRetention
    insights: InsightsStore
    groups: GroupStore


class SecretBox(Protocol):
    """Seals the secrets stagetrack must read back (adapters/secretbox.py)."""

    def seal(self, plaintext: str, context: str) -> str: ...

    def open(self, sealed: str, context: str) -> str:
        """Raises ``SecretUnreadable``."""


# ---- schedule wake-ups ---------------------------------------------------------------------------

class ScheduleWakeUps(Protocol):
    """The EventBridge Scheduler schedules that wake the firing function at a stagetrack
    schedule's fire times (adapters/scheduler.py). The stored schedule stays the truth: these
    follow it after each write, and a firing checks it (service/schedules.py)."""

    @property
    def fires(self) -> bool:
        """True when these wake-ups fire schedules (AWS): the sweeper then fires a schedule they
        cover only once it is ``BACKSTOP_GRACE`` late."""

    def put(self, wakeup: WakeUp, *, new: bool) -> None:
        """Create or replace the wake-up of that name (``new``: try creating first)."""

    def remove(self, name: str) -> None:
        """Delete the wake-up of that name; none by that name is not an error."""


class NoWakeUps:
    """No EventBridge (unit tests, `make run`): the minute tick fires every schedule on time."""

    fires = False

    def put(self, wakeup: WakeUp, *, new: bool) -> None:
        return None

    def remove(self, name: str) -> None:
        return None


# ---- metrics ------------------------------------------------------------------------------------

class Metrics(Protocol):
    """Counts of what happened, for dashboards and alarms (adapters/metrics.py writes them as
    CloudWatch embedded metric format lines). ``dimensions`` split one metric (e.g. by status);
    keep their values few: each combination is one metric CloudWatch bills for."""

    def count(self, name: str, value: int = 1, dimensions: dict[str, str] | None = None) -> None: ...


class NoMetrics:
    """The default: counts go nowhere (unit tests, `make run`, a deployment without a namespace)."""

    def count(self, name: str, value: int = 1, dimensions: dict[str, str] | None = None) -> None:
        return None
