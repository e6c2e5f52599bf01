"""Every port of service/ports.py in memory: the unit tier's stores (no moto, no network).

Production code (not a test fake) so that the layer rules apply to it and the contract suite
(tests/integration/test_store_contract.py) holds it to what the DynamoDB store does where callers
rely on it: conditional writes raise the same domain errors and write nothing; versions start at
1 and grow by one per write of an item; the Idempotency-Key claim held while a change is written
is committed with that change's first write, or the write fails with ``ClaimTakenOver``; listings
page newest first with the same signed cursor codec and scopes. One lock makes every write
atomic. Values are copied in and out, as a database would. Not modelled: round trips, the big-run
intent (a change of any size is one atomic write here) and TTL expiry of delivery attempts.
"""
from __future__ import annotations

import contextvars
import copy
import hmac
import threading
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta

from ..domain import dialect_ids, ids
from ..domain.clock import format_iso, parse_iso
from ..domain.concurrency import Group
from ..domain.cursors import INVALID, CursorCodec
from ..domain.errors import BadRequest, ConcurrentModification, Conflict, NotFound, PipelinePaused
from ..domain.events import StateChange
from ..domain.insights import (
    DayItem,
    DeploymentSignal,
    FinishedAttempt,
    FinishedRun,
    PipelineState,
    RetryRecorded,
    Tally,
    day_of,
    mark_of,
)
from ..domain.model import Run, RunAggregate, Stage, single_stage_change, stage_changes, stage_summary
from ..domain.operations import Pipeline
from ..domain.overruns import StageStarted
from ..domain.rebuilds import RUNNING, RebuildRecord
from ..domain.schedules import Schedule
from ..domain.status import StageStatus
from ..domain.timers import next_due
from ..service.ports import (
    COMMITTED,
    DONE,
    PENDING,
    Claimed,
    ClaimTakenOver,
    DaysRead,
    DeliveryAttempt,
    DueQuery,
    DueTimer,
    ExportTotals,
    Record,
    RunCounted,
    RunFilter,
    RunMarks,
    RunRecord,
    StoredSession,
    StoredSource,
    StoredSubscription,
    StoredToken,
    Stores,
    WaitingStage,
)
from ..settings import Settings
from .stream import (
    NO_DEADLINE,
    armed_timer,
    disarmed_timer,
    finished_work,
    run_record,
    started_stage,
    state_change,
)


@dataclass
class _Claim:
    key_hash: str
    token: str
    committed: bool = False


class MemoryDatabase:
    """The state every memory store shares (like one table), and the held claim."""

    def __init__(self, codec: CursorCodec) -> None:
        self.codec = codec
        self.lock = threading.RLock()
        self.runs: dict[str, RunAggregate] = {}
        self.attempts: dict[str, dict[int, dict]] = {}  # stage id -> number -> ended attempt
        self.pipelines: dict[str, Pipeline] = {}
        self.links: dict[tuple[str, str], str] = {}
        self.idempotency: dict[str, dict] = {}
        self.tokens: dict[str, dict] = {}  # by token hash or "AK:" + access key
        self.token_entries: dict[str, StoredToken] = {}
        self.sessions: dict[str, StoredSession] = {}  # by the session id's hash
        self.sources: dict[str, StoredSource] = {}
        self.subscriptions: dict[str, StoredSubscription] = {}
        self.deliveries: dict[str, dict[str, DeliveryAttempt]] = {}
        self.schedules: dict[tuple[str, str], Schedule] = {}  # (pipeline, id) -> schedule
        self.expiries: dict[str, int] = {}  # run id -> its TTL (epoch seconds), as the table keeps it
        # insights (store/insights.py): day items by (pipeline or None, day, stage or None),
        # pipeline states, and per run what the consumer applied
        self.insight_days: dict[tuple[str | None, str, str | None], dict[str, int]] = {}
        self.insight_states: dict[str, PipelineState] = {}
        self.insight_marks: dict[str, RunMarks] = {}
        self.export_totals: dict[str, ExportTotals] = {}  # the OTLP export's, per pipeline
        self.insight_signals: dict[str, dict[str, DeploymentSignal]] = {}  # pipeline -> key -> signal
        self.insight_rebuild: RebuildRecord | None = None
        self.held: contextvars.ContextVar[_Claim | None] = contextvars.ContextVar(
            f"stagetrack_memory_claim_{id(self)}", default=None)

    def commit_claim(self, effect: dict) -> Callable[[], None]:
        """Check (under the lock, before any write) that the held claim may commit; returns
        what commits it, to run together with the write."""
        held = self.held.get()
        if held is None or held.committed:
            return lambda: None
        record = self.idempotency.get(held.key_hash)
        if record is None or record["token"] != held.token or record["state"] != PENDING:
            raise ClaimTakenOver("the Idempotency-Key of this request was claimed by another request "
                                 "after this one outlived its lease; nothing was written")

        def commit() -> None:
            record.update(state=COMMITTED, effect=dict(effect))
            held.committed = True
        return commit


def _page(items: list, limit: int, key: Callable, codec: CursorCodec, scope: str,
          cursor: str | None) -> tuple[list, str | None]:
    """``items`` sorted newest first; the cursor holds the last key returned."""
    if cursor:
        payload = codec.open(scope, cursor)
        after = payload.get("after")
        if set(payload) != {"after"} or not isinstance(after, (str, int)) or isinstance(after, bool):
            raise BadRequest(INVALID)
        items = [item for item in items if _before(key(item), after)]
    page = items[:limit]
    more = len(items) > limit
    return page, codec.seal(scope, {"after": key(page[-1])}) if more and page else None


def _before(value, after) -> bool:
    try:
        return value < after
    except TypeError:
        raise BadRequest(INVALID) from None


class MemoryRunStore:
    def __init__(self, db: MemoryDatabase) -> None:
        self.db = db

    def insert_run(self, aggregate: RunAggregate, layout: dict | None = None) -> None:
        with self.db.lock:
            self._insert(aggregate, layout, {"run": aggregate.run.id})

    def _insert(self, aggregate: RunAggregate, layout: dict | None, effect: dict,
                before_write: Callable[[], None] = lambda: None) -> None:
        if aggregate.run.id in self.db.runs:
            raise Conflict(f"run {aggregate.run.id!r} exists already")
        commit = self.db.commit_claim(effect)
        before_write()
        commit()
        if layout is not None:
            pipeline = self.db.pipelines.setdefault(
                aggregate.run.pipeline, Pipeline(name=aggregate.run.pipeline)
            )
            pipeline.layout = copy.deepcopy(layout)
        _bump(aggregate.run, aggregate.stages)
        for stage in aggregate.stages:
            self._store_attempts(stage)
        self.db.runs[aggregate.run.id] = copy.deepcopy(aggregate)

    def _store_attempts(self, stage: Stage) -> None:
        """Its ended attempts become records of their own (the stage keeps none inline)."""
        for entry in stage.attempts:
            self.db.attempts.setdefault(stage.id, {})[int(entry["attempt"])] = copy.deepcopy(entry)
        stage.attempts = []

    def load_run(self, run_id: str) -> RunAggregate | None:
        with self.db.lock:
            found = self.db.runs.get(run_id)
            if found is None:
                return None
            aggregate = copy.deepcopy(found)
        aggregate.stages.sort(key=lambda s: s.position)
        return aggregate

    def load_stage(self, stage_id: str, following: StageStatus | None = None) -> RunAggregate | None:
        parsed = ids.parse_stage_id(stage_id)
        aggregate = self.load_run(parsed[0]) if parsed else None
        if aggregate is None:
            return None
        stage = next((s for s in aggregate.stages if s.id == stage_id), None)
        after = (following is not None and stage is not None
                 and any(s.status == following for s in aggregate.stages))
        aggregate.stages = [s for s in aggregate.stages
                            if s is stage or (after and stage is not None and s.position > stage.position)]
        aggregate.partial = True
        return aggregate

    def get_stage(self, stage_id: str) -> Stage | None:
        parsed = ids.parse_stage_id(stage_id)
        if parsed is None:
            return None
        with self.db.lock:
            found = self.db.runs.get(parsed[0])
            stage = next((s for s in found.stages if s.id == stage_id), None) if found else None
            return copy.deepcopy(stage)

    def record_expectations(self, stage: Stage) -> bool:
        with self.db.lock:
            found = self.db.runs.get(stage.run_id)
            current = next((s for s in found.stages if s.id == stage.id), None) if found else None
            if current is None or current.version != stage.version:
                return False
            current.expectations = copy.deepcopy(stage.expectations)
            current.overrun_at = stage.overrun_at
            current.version = (current.version or 0) + 1
            stage.version = current.version
            return True

    def save(self, before: RunAggregate, after: RunAggregate, *, local: bool = False,
             claim: bool = True) -> None:
        """``claim`` False (the group store's write of one step of a create): the held
        Idempotency-Key claim is left for the create's own last write, as in DynamoDB."""
        single = single_stage_change(before, after) if local else None
        if single is not None:
            self._save_stage(after, single[1])
            return
        several = stage_changes(before, after) if local and after.partial else None
        if several:
            self._save_stages(after, [new for _, new in several])
            return
        if after.partial:
            raise ValueError("a run read in part (load_stage) is written only as a change of its stages")
        old = {stage.id: stage for stage in before.stages}
        new_ids = {stage.id for stage in after.stages}
        changed = [s for s in after.stages if s.id not in old or asdict(s) != asdict(old[s.id])]
        removed = [s for s in before.stages if s.id not in new_ids]
        with self.db.lock:
            stored = self.db.runs.get(after.run.id)
            current = {s.id: s for s in stored.stages} if stored else {}
            # as the DynamoDB store's change counter: no stage changed since ``before`` was read
            if (stored is None or stored.run.version != after.run.version
                    or {s.id: s.version for s in stored.stages} != {s.id: s.version for s in before.stages}):
                raise ConcurrentModification(f"run {after.run.id!r} was changed by someone else; retry")
            if claim:
                self.db.commit_claim({"run": after.run.id})()
            _bump(after.run, changed)
            for stage in changed:
                self._store_attempts(stage)
            for stage in removed:
                self.db.attempts.pop(stage.id, None)
            written = {s.id: s for s in changed}
            stages = [written[s.id] if s.id in written else current[s.id] for s in after.stages]
            self.db.runs[after.run.id] = copy.deepcopy(RunAggregate(run=after.run, stages=stages))

    def _save_stages(self, after: RunAggregate, stages: list[Stage]) -> None:
        """Several stages read in part (a stage retry with the SKIPPED stages after it): each
        conditioned on its version and the run's, all or none."""
        with self.db.lock:
            stored = self.db.runs.get(after.run.id)
            current = {s.id: s.version for s in stored.stages} if stored else {}
            if stored is None or stored.run.version != after.run.version or any(
                    s.id not in current or current[s.id] != s.version for s in stages):
                raise ConcurrentModification(f"run {after.run.id!r} was changed by someone else; retry")
            self.db.commit_claim({"run": after.run.id})()
            for stage in stages:
                stage.version = (stage.version or 0) + 1
                self._store_attempts(stage)
            written = {s.id: copy.deepcopy(s) for s in stages}
            kept = copy.deepcopy(stored)
            kept.stages = [written.get(s.id, s) for s in kept.stages]
            now = max(s.updated_at for s in stages)
            kept.rederive(now)
            kept.run.updated_at = max(kept.run.updated_at, now)
            kept.run.stage_summary = [stage_summary(s) for s in sorted(kept.stages, key=lambda s: s.position)]
            self.db.runs[after.run.id] = kept

    def _save_stage(self, after: RunAggregate, stage: Stage) -> None:
        """A change of one stage alone: conditioned on its version and the run's (not on its
        siblings'); the run's derived fields follow from the stages as stored."""
        with self.db.lock:
            stored = self.db.runs.get(after.run.id)
            current = next((s for s in stored.stages if s.id == stage.id), None) if stored else None
            if stored is None or current is None or stored.run.version != after.run.version \
                    or current.version != stage.version:
                raise ConcurrentModification(f"run {after.run.id!r} was changed by someone else; retry")
            self.db.commit_claim({"run": after.run.id})()
            stage.version = (stage.version or 0) + 1
            self._store_attempts(stage)
            kept = copy.deepcopy(stored)
            kept.stages = [copy.deepcopy(stage) if s.id == stage.id else s for s in kept.stages]
            kept.rederive(stage.updated_at)
            kept.run.updated_at = max(kept.run.updated_at, stage.updated_at)
            kept.run.stage_summary = [stage_summary(s) for s in sorted(kept.stages, key=lambda s: s.position)]
            self.db.runs[after.run.id] = kept

    def delete_run(self, aggregate: RunAggregate) -> None:
        with self.db.lock:
            stored = self.db.runs.get(aggregate.run.id)
            if stored is None or stored.run.version != aggregate.run.version:
                raise ConcurrentModification(f"run {aggregate.run.id!r} was changed by someone else; retry")
            self.db.commit_claim({"run": aggregate.run.id, "deleted": True})()
            for stage in self.db.runs.pop(aggregate.run.id).stages:
                self.db.attempts.pop(stage.id, None)

    def list_runs(self, pipeline: str, status: StageStatus | None, limit: int,
                  cursor: str | None) -> tuple[list[Run], str | None]:
        scope = f"runs/{pipeline}/{status.value if status else '*'}"
        with self.db.lock:
            runs = [copy.deepcopy(a.run) for a in self.db.runs.values()
                    if a.run.pipeline == pipeline and (status is None or a.run.status == status)]
        runs.sort(key=lambda r: r.counter, reverse=True)
        return _page(runs, limit, lambda r: r.counter, self.db.codec, scope, cursor)

    def _attempts(self, stage: Stage) -> dict[int, dict]:
        with self.db.lock:
            found = copy.deepcopy(self.db.attempts.get(stage.id, {}))
        found.update({int(entry["attempt"]): copy.deepcopy(entry) for entry in stage.attempts})
        # only the ended attempts of the stage as it was read (a newer retry is not its history)
        return {number: entry for number, entry in found.items() if number < stage.attempt}

    def list_attempts(self, stage: Stage, limit: int,
                      cursor: str | None) -> tuple[list[dict], str | None]:
        found = self._attempts(stage)
        entries = [found[number] for number in sorted(found, reverse=True)]
        return _page(entries, limit, lambda entry: int(entry["attempt"]), self.db.codec,
                     f"attempts/{stage.id}", cursor)

    def get_attempt(self, stage: Stage, number: int) -> dict | None:
        return self._attempts(stage).get(number)

    def attempts_of(self, stages: list[Stage]) -> dict[str, list[dict]]:
        result = {}
        for stage in stages:
            found = self._attempts(stage) if stage.attempt_count > 1 or stage.attempts else {}
            result[stage.id] = [found[number] for number in sorted(found)]
        return result


def _bump(run: Run, stages: list[Stage]) -> None:
    run.version = (run.version or 0) + 1
    for stage in stages:
        stage.version = (stage.version or 0) + 1


class MemoryRunLinks:
    def __init__(self, db: MemoryDatabase, runs: MemoryRunStore) -> None:
        self.db, self.runs = db, runs

    def linked_run(self, namespace: str, key: str) -> str | None:
        with self.db.lock:
            return self.db.links.get((namespace, key))

    def insert_linked_run(self, aggregate: RunAggregate, namespace: str, key: str, created_at: str) -> bool:
        with self.db.lock:
            if (namespace, key) in self.db.links:
                return False

            def link() -> None:
                self.db.links[(namespace, key)] = aggregate.run.id
            self.runs._insert(aggregate, None, {"run": aggregate.run.id}, before_write=link)
            return True


class MemoryPipelineStore:
    def __init__(self, db: MemoryDatabase) -> None:
        self.db = db

    def get(self, pipeline: str) -> Pipeline | None:
        with self.db.lock:
            return copy.deepcopy(self.db.pipelines.get(pipeline))

    def claim_counter(self, pipeline: str, *, require_layout: bool = False,
                      at: datetime | None = None) -> tuple[int, dict | None]:
        claimed = self.claim(pipeline, require_layout=require_layout, at=at)
        return claimed.counter, claimed.layout

    def set_concurrency(self, pipeline: str, setting: dict) -> Pipeline:
        with self.db.lock:
            found = self.db.pipelines.get(pipeline)
            if found is None:
                raise NotFound(f"pipeline {pipeline!r} not found")
            self.db.commit_claim({"pipeline": pipeline})()
            found.concurrency = dict(setting)
            return copy.deepcopy(found)

    def claim(self, pipeline: str, *, require_layout: bool = False,
              at: datetime | None = None) -> Claimed:
        with self.db.lock:
            found = self.db.pipelines.get(pipeline)
            if require_layout and (found is None or found.layout is None):
                raise NotFound(f"pipeline {pipeline!r} has never run; nothing to schedule from")
            if found is not None and found.paused:
                raise PipelinePaused(f"pipeline {pipeline!r} is paused; it accepts no new runs")
            if found is None:
                found = self.db.pipelines[pipeline] = Pipeline(name=pipeline)
            found.counter += 1
            if at is not None:
                found.last_activity = _millis(at)
            return Claimed(found.counter, copy.deepcopy(found.layout), copy.deepcopy(found.concurrency))

    def set_paused(self, pipeline: str, paused: bool, *, cause: str | None = None,
                   by: str | None = None, at=None) -> Pipeline:
        with self.db.lock:
            found = self.db.pipelines.get(pipeline)
            if found is None:
                raise NotFound(f"pipeline {pipeline!r} not found")
            if found.paused == paused:
                state = "already paused" if paused else "not paused"
                raise Conflict(f"pipeline {pipeline!r} is {state}")
            self.db.commit_claim({"pipeline": pipeline})()
            found.paused = paused
            found.pause_cause, found.paused_by = (cause or None, by or None) if paused else (None, None)
            found.paused_at = _millis(at) if paused else None
            return copy.deepcopy(found)


def _millis(moment):
    """Stored as ISO text with milliseconds, as DynamoDB keeps it."""
    return None if moment is None else parse_iso(format_iso(moment))


class MemoryDialectLookups:
    def __init__(self, db: MemoryDatabase) -> None:
        self.db = db

    def _single(self, key: Callable[[str], str], wanted: str, what: str) -> Pipeline | None:
        with self.db.lock:
            found = [
                copy.deepcopy(p) for p in self.db.pipelines.values() if p.counter and key(p.name) == wanted
            ]
        if len(found) > 1:
            names = ", ".join(sorted(p.name for p in found))
            raise Conflict(f"{what} is shared by pipelines {names}; address them by name")
        return found[0] if found else None

    def pipeline_by_codearts_key(self, key: str) -> Pipeline | None:
        return self._single(dialect_ids.codearts_key, key, "this CodeArts job_id")

    def pipeline_by_buddy_key(self, key: str) -> Pipeline | None:
        return self._single(dialect_ids.buddy_key, key, "this Buddy pipeline_id")

    def runs_between(self, pipeline: str, low: int, high: int, *, with_stages: bool = False) -> list[Run]:
        # a run kept here carries its stage summary (RunAggregate.refresh) either way
        if high < 1 or high < low:
            return []
        with self.db.lock:
            runs = [copy.deepcopy(a.run) for a in self.db.runs.values()
                    if a.run.pipeline == pipeline and max(low, 1) <= a.run.counter <= high]
        return sorted(runs, key=lambda r: r.counter, reverse=True)


def _after_key(items: list, limit: int, key: Callable[[object], str], codec: CursorCodec, scope: str,
               cursor: str | None) -> tuple[list, str | None]:
    """``items`` sorted oldest first (ascending ``key``); the cursor holds the last key returned."""
    if cursor:
        payload = codec.open(scope, cursor)
        after = payload.get("after")
        if set(payload) != {"after"} or not isinstance(after, str):
            raise BadRequest(INVALID)
        items = [item for item in items if key(item) > after]
    page = items[:limit]
    more = len(items) > limit
    return page, codec.seal(scope, {"after": key(page[-1])}) if more and page else None


class MemoryFinder:
    """``Finder`` over the memory database: the same orders, filters, reach and cursor scopes."""

    def __init__(self, db: MemoryDatabase) -> None:
        self.db = db

    def list_pipelines(self, reach: frozenset[str] | None, limit: int,
                       cursor: str | None) -> tuple[list[Pipeline], str | None]:
        with self.db.lock:
            found = [copy.deepcopy(p) for p in self.db.pipelines.values()
                     if p.last_activity is not None and (reach is None or p.name in reach)]

        def key(pipeline) -> str:
            return f"{format_iso(pipeline.last_activity)}#{pipeline.name}"
        found.sort(key=key, reverse=True)
        scope = "pipelines" if reach is None else "pipelines/within"
        return _page(found, limit, key, self.db.codec, scope, cursor)

    def recent_runs(self, pipeline: str, count: int) -> list[Run]:
        with self.db.lock:
            runs = [copy.deepcopy(a.run) for a in self.db.runs.values() if a.run.pipeline == pipeline]
        return sorted(runs, key=lambda r: r.counter, reverse=True)[:count]

    def waiting_approvals(self, reach: frozenset[str] | None, limit: int,
                          cursor: str | None) -> tuple[list[WaitingStage], str | None]:
        with self.db.lock:
            found = [WaitingStage(copy.deepcopy(stage), copy.deepcopy(a.run))
                     for a in self.db.runs.values() if reach is None or a.run.pipeline in reach
                     for stage in a.stages if stage.status == StageStatus.WAITING_FOR_APPROVAL]

        def key(entry) -> str:
            return f"{format_iso(entry.stage.waiting_since)}#{entry.stage.id}"
        found.sort(key=key)
        scope = "approvals" if reach is None else "approvals/within"
        return _after_key(found, limit, key, self.db.codec, scope, cursor)

    def search_runs(self, filters: RunFilter, reach: frozenset[str] | None, limit: int,
                    cursor: str | None) -> tuple[list[Run], str | None]:
        with self.db.lock:
            found = [copy.deepcopy(a.run) for a in self.db.runs.values()
                     if (reach is None or a.run.pipeline in reach) and filters.matches(a.run)]

        def key(run) -> str:
            return f"{format_iso(run.created_at)}#{run.id}"
        found.sort(key=key, reverse=True)
        scope = f"{filters.scope()}/{'all' if reach is None else 'within'}"
        return _page(found, limit, key, self.db.codec, scope, cursor)


class MemoryIdempotencyStore:
    def __init__(self, db: MemoryDatabase) -> None:
        self.db = db

    def claim(self, key_hash: str, fingerprint: str, now: int, *, lease_seconds: int,
              ttl_seconds: int) -> str | Record:
        with self.db.lock:
            held = self.db.idempotency.get(key_hash)
            taken = (held is not None and held["expires_at"] > now
                     and not (held["state"] == PENDING and held["lease_until"] <= now))
            if held is not None and taken:
                return Record(state=held["state"], fingerprint=held["fingerprint"],
                              status_code=held.get("status_code"), headers=copy.deepcopy(held.get("headers")),
                              body=None if held.get("body") is None else zlib.decompress(held["body"]),
                              effect=copy.deepcopy(held.get("effect")))
            token = uuid.uuid4().hex
            self.db.idempotency[key_hash] = {
                "state": PENDING,
                "fingerprint": fingerprint,
                "token": token,
                "lease_until": now + lease_seconds,
                "expires_at": now + ttl_seconds,
            }
            return token

    def complete(self, key_hash: str, token: str, status_code: int, headers: dict,
                 body: bytes | None, *, max_stored: int) -> str:
        packed = None if body is None else zlib.compress(body)
        if packed is not None and len(packed) > max_stored:
            self.release(key_hash, token)
            return "too_large"
        with self.db.lock:
            held = self.db.idempotency.get(key_hash)
            if (
                held is None
                or not hmac.compare_digest(held["token"], token)
                or held["state"] not in (PENDING, COMMITTED)
            ):
                return "lost"
            held.update(state=DONE, status_code=status_code, headers=copy.deepcopy(headers), body=packed)
            return "stored"

    def release(self, key_hash: str, token: str) -> None:
        with self.db.lock:
            held = self.db.idempotency.get(key_hash)
            if held is not None and held["token"] == token and held["state"] == PENDING:
                del self.db.idempotency[key_hash]

    @contextmanager
    def holding(self, key_hash: str, token: str) -> Iterator[_Claim]:
        held = _Claim(key_hash, token)
        reset = self.db.held.set(held)
        try:
            yield held
        finally:
            self.db.held.reset(reset)


class MemoryTokenStore:
    def __init__(self, db: MemoryDatabase) -> None:
        self.db = db

    @staticmethod
    def _key(token_hash: str | None, access_key: str | None) -> str:
        return f"AK:{access_key}" if access_key else f"TOKEN:{token_hash}"

    def insert(self, token: StoredToken, token_hash: str | None, window: int) -> None:
        key = self._key(token_hash, token.access_key)
        with self.db.lock:
            if key in self.db.tokens or token.token_id in self.db.token_entries:
                raise Conflict("a token with this key exists already")
            self.db.commit_claim({"token": token.token_id})()
            self.db.tokens[key] = {"token": token, "window": window, "hits": 0, "hash": token_hash}
            self.db.token_entries[token.token_id] = replace(
                token, window=0, hits=0, sealed_secret_key=None)

    def list_all(self) -> list[StoredToken]:
        with self.db.lock:
            entries = list(self.db.token_entries.values())
        return sorted(entries, key=lambda t: (t.created_at, t.token_id))

    def delete(self, token_id: str,
               allowed: Callable[[StoredToken], bool] = lambda _t: True) -> StoredToken | None:
        with self.db.lock:
            entry = self.db.token_entries.get(token_id)
            if entry is None or not allowed(entry):
                return None
            key = next(k for k, v in self.db.tokens.items() if v["token"].token_id == token_id)
            self.db.commit_claim({"token": token_id, "deleted": True})()
            del self.db.token_entries[token_id]
            del self.db.tokens[key]
            return entry

    def get_access_key(self, access_key: str) -> StoredToken | None:
        with self.db.lock:
            item = self.db.tokens.get(self._key(None, access_key))
            return None if item is None else self._view(item, access_key=access_key)

    def hit(self, token_hash: str, window: int) -> StoredToken | None:
        return self._hit(self._key(token_hash, None), window)

    def known(self, token_hash: str) -> bool:
        with self.db.lock:
            return self._key(token_hash, None) in self.db.tokens

    def hit_access_key(self, access_key: str, window: int) -> StoredToken | None:
        return self._hit(self._key(None, access_key), window)

    def _hit(self, key: str, window: int) -> StoredToken | None:
        with self.db.lock:
            item = self.db.tokens.get(key)
            if item is None:
                return None
            if item["window"] >= window:
                item["hits"] += 1
            else:
                item["window"], item["hits"] = window, 1
            return self._view(item)

    def put_session(self, session: StoredSession) -> None:
        with self.db.lock:
            if session.session_hash in self.db.sessions:
                raise Conflict("a session with this id exists already")
            self.db.sessions[session.session_hash] = session

    def get_session(self, session_hash: str) -> StoredSession | None:
        with self.db.lock:
            return self.db.sessions.get(session_hash)

    def delete_session(self, session_hash: str) -> None:
        with self.db.lock:
            self.db.sessions.pop(session_hash, None)

    @staticmethod
    def _view(item: dict, access_key: str | None = None) -> StoredToken:
        token: StoredToken = item["token"]
        return StoredToken(token_id=token.token_id, name=token.name, scopes=list(token.scopes),
                           pipelines=None if token.pipelines is None else list(token.pipelines),
                           created_at=token.created_at, window=item["window"], hits=item["hits"],
                           access_key=access_key, sealed_secret_key=token.sealed_secret_key)


class MemorySourceStore:
    def __init__(self, db: MemoryDatabase) -> None:
        self.db = db

    def insert_source(self, source: StoredSource) -> bool:
        with self.db.lock:
            if source.name in self.db.sources:
                return False
            self.db.commit_claim({"source": source.name})()
            self.db.sources[source.name] = source
            return True

    def get_source(self, name: str) -> StoredSource | None:
        with self.db.lock:
            return self.db.sources.get(name)

    def list_sources(self) -> list[StoredSource]:
        with self.db.lock:
            return [self.db.sources[name] for name in sorted(self.db.sources)]

    def delete_source(self, name: str) -> StoredSource | None:
        with self.db.lock:
            return self.db.sources.pop(name, None)


class MemorySubscriptionStore:
    def __init__(self, db: MemoryDatabase) -> None:
        self.db = db

    def insert(self, subscription: StoredSubscription) -> None:
        with self.db.lock:
            if subscription.subscription_id in self.db.subscriptions:
                raise Conflict(f"subscription {subscription.subscription_id!r} exists already")
            self.db.commit_claim({"subscription": subscription.subscription_id})()
            self.db.subscriptions[subscription.subscription_id] = subscription

    def get(self, subscription_id: str) -> StoredSubscription | None:
        with self.db.lock:
            return self.db.subscriptions.get(subscription_id)

    def list_all(self) -> list[StoredSubscription]:
        with self.db.lock:
            items = list(self.db.subscriptions.values())
        return sorted(items, key=lambda s: (s.created_at, s.subscription_id))

    def delete(self, subscription_id: str,
               allowed: Callable[[StoredSubscription], bool] = lambda _s: True) -> StoredSubscription | None:
        with self.db.lock:
            found = self.db.subscriptions.get(subscription_id)
            if found is None or not allowed(found):
                return None
            return self.db.subscriptions.pop(subscription_id)


class MemoryDeliveryLog:
    def __init__(self, db: MemoryDatabase) -> None:
        self.db = db

    def record(self, attempt: DeliveryAttempt, epoch_now: int) -> None:
        sort_key = f"{attempt.at}#{attempt.delivery_id}#{attempt.attempt:03d}"
        error = None if attempt.error is None else attempt.error[:500]
        with self.db.lock:
            self.db.deliveries.setdefault(attempt.subscription_id, {})[sort_key] = replace(
                attempt, error=error
            )

    def list_attempts(self, subscription_id: str, limit: int,
                      cursor: str | None) -> tuple[list[DeliveryAttempt], str | None]:
        with self.db.lock:
            attempts = sorted(self.db.deliveries.get(subscription_id, {}).items(), reverse=True)
        page, next_cursor = _page(attempts, limit, lambda pair: pair[0], self.db.codec,
                                  f"deliveries/{subscription_id}", cursor)
        return [attempt for _, attempt in page], next_cursor


class MemoryActiveTimers:
    def __init__(self, db: MemoryDatabase) -> None:
        self.db = db

    def due_timers(self, now_iso: str, limit: int = 1000) -> DueQuery:
        with self.db.lock:
            active = [(format_iso(next_due(s)) or NO_DEADLINE, s) for a in self.db.runs.values()
                      for s in a.stages if s.is_active]
        due = sorted((d, s.id, s.attempt) for d, s in active if d <= now_iso)
        timers = [DueTimer(stage_id=i, attempt=n, due_at=d) for d, i, n in due[:limit]]
        return DueQuery(timers=timers, queries=1, items_read=len(timers), truncated=len(due) > limit)

    def armed_timer(self, record: dict) -> DueTimer | None:
        return armed_timer(record)

    def disarmed_timer(self, record: dict) -> DueTimer | None:
        return disarmed_timer(record)


class MemoryRunRetention:
    """The retention twin: expiries kept beside the runs; no TTL ever removes one here, so
    ``delete_remains`` only finds ended attempts of a run that is gone."""

    def __init__(self, db: MemoryDatabase) -> None:
        self.db = db

    def run_record(self, record: dict) -> RunRecord | None:
        return run_record(record)

    def _is(self, run_id: str, status: str, ended_at: str | None = None, check_end: bool = False) -> bool:
        aggregate = self.db.runs.get(run_id)
        if aggregate is None or aggregate.run.status.value != status:
            return False
        return not check_end or format_iso(aggregate.run.ended_at) == ended_at

    def set_expiry(self, run_id: str, status: str, ended_at: str, expires_at: int) -> bool:
        with self.db.lock:
            if not self._is(run_id, status, ended_at, check_end=True):
                return False
            self.db.expiries[run_id] = expires_at
            return True

    def clear_expiry(self, run_id: str, status: str) -> bool:
        with self.db.lock:
            if not self._is(run_id, status):
                return False
            self.db.expiries.pop(run_id, None)
            return True

    def delete_remains(self, run_id: str) -> int:
        with self.db.lock:
            if run_id in self.db.runs:
                return 0
            stages = [stage_id for stage_id in self.db.attempts if stage_id.startswith(run_id + ":")]
            return sum(len(self.db.attempts.pop(stage_id)) for stage_id in stages)


class MemoryChangeStream:
    """Reads change records shaped as the table's stream delivers them, as the DynamoDB store does."""

    def state_change(self, record: dict, now: datetime) -> StateChange | None:
        return state_change(record, now)

    def finished_work(self, record: dict) -> FinishedAttempt | FinishedRun | RetryRecorded | None:
        return finished_work(record)

    def started_stage(self, record: dict) -> StageStarted | None:
        return started_stage(record)


class MemoryInsightsStore:
    """``InsightsStore`` in memory: the same markers, conditions and ADDs, under the one lock.
    ``read_days`` counts one query per call and the items it returns."""

    def __init__(self, db: MemoryDatabase) -> None:
        self.db = db

    def _add(self, pipeline: str | None, day: str, stage: str | None, tally: Tally) -> None:
        for key in (pipeline, None) if pipeline is not None else (None,):
            counters = self.db.insight_days.setdefault((key, day, stage), {})
            for name, value in tally.items():
                counters[name] = counters.get(name, 0) + value

    def run_marks(self, run_id: str) -> RunMarks:
        with self.db.lock:
            return copy.deepcopy(self.db.insight_marks.get(run_id, RunMarks()))

    def add_attempt(self, attempt: FinishedAttempt, tally: Tally) -> bool:
        with self.db.lock:
            marks = self.db.insight_marks.setdefault(attempt.run_id, RunMarks())
            key = (attempt.position, attempt.attempt)
            if any((m.position, m.attempt) == key for m in marks.attempts):
                return False
            marks.attempts.append(mark_of(attempt))
            self._add(attempt.pipeline, day_of(attempt.ended_at), attempt.name, tally)
            return True

    def record_retry(self, retry: RetryRecorded) -> None:
        with self.db.lock:
            marks = self.db.insight_marks.setdefault(retry.run_id, RunMarks())
            marks.retries[(retry.position, retry.attempt)] = retry.at

    def pipeline_state(self, pipeline: str) -> PipelineState:
        with self.db.lock:
            return self.db.insight_states.get(pipeline, PipelineState())

    def add_run(self, run: FinishedRun, counted_before: RunCounted | None, counted: dict[str, Tally],
                added: dict[tuple[str, str | None], Tally], before: PipelineState,
                after: PipelineState) -> bool:
        with self.db.lock:
            marks = self.db.insight_marks.setdefault(run.run_id, RunMarks())
            if marks.counted != counted_before:
                raise ConcurrentModification(f"insights of run {run.run_id!r} changed meanwhile")
            if after != before:
                if self.db.insight_states.get(run.pipeline, PipelineState()).version != before.version:
                    raise ConcurrentModification(f"insights of pipeline {run.pipeline!r} changed meanwhile")
                self.db.insight_states[run.pipeline] = replace(after, version=before.version + 1)
            marks.counted = RunCounted(run.order, copy.deepcopy(counted), run.ended_at)
            for (day, stage), tally in added.items():
                self._add(run.pipeline, day, stage, tally)
            return True

    def add_signal(self, signal: DeploymentSignal, added: dict[str, Tally], before: PipelineState,
                   after: PipelineState) -> bool:
        with self.db.lock:
            kept = self.db.insight_signals.setdefault(signal.pipeline, {})
            if signal.key in kept:
                return False
            if after != before:
                if self.db.insight_states.get(signal.pipeline, PipelineState()).version != before.version:
                    raise ConcurrentModification(
                        f"insights of pipeline {signal.pipeline!r} changed meanwhile")
                self.db.insight_states[signal.pipeline] = replace(after, version=before.version + 1)
            kept[signal.key] = signal
            for day, tally in added.items():
                self._add(signal.pipeline, day, None, tally)
            return True

    def signals_of(self, pipeline: str) -> list[DeploymentSignal]:
        with self.db.lock:
            return sorted(self.db.insight_signals.get(pipeline, {}).values(), key=lambda s: (s.at, s.key))

    def read_days(self, pipeline: str | None, start: str, end: str) -> DaysRead:
        with self.db.lock:
            items = [DayItem(day=day, stage=stage, tally=dict(tally))
                     for (key, day, stage), tally in sorted(self.db.insight_days.items(),
                                                            key=lambda kv: (kv[0][1], kv[0][2] or ""))
                     if key == pipeline and start <= day <= end]
        return DaysRead(items=items, queries=1, items_read=len(items))

    def replace_pipeline(self, pipeline: str, days: dict[tuple[str, str | None], Tally],
                         state: PipelineState, marks: dict[str, RunMarks]) -> int:
        with self.db.lock:
            for key in [k for k in self.db.insight_days if k[0] == pipeline]:
                del self.db.insight_days[key]
            for (day, stage), tally in days.items():
                self.db.insight_days[(pipeline, day, stage)] = {k: v for k, v in tally.items() if v}
            self.db.export_totals.pop(pipeline, None)
            version = self.db.insight_states.get(pipeline, PipelineState()).version + 1
            self.db.insight_states[pipeline] = replace(state, version=version)
            for run_id, run_marks in marks.items():
                self.db.insight_marks[run_id] = copy.deepcopy(run_marks)
            return len(days) + 1 + sum(len(m.attempts) + len(m.retries) + 1 for m in marks.values())

    def replace_all_pipelines(self, days: dict[tuple[str, str | None], Tally]) -> int:
        with self.db.lock:
            for key in [k for k in self.db.insight_days if k[0] is None]:
                del self.db.insight_days[key]
            for (day, stage), tally in days.items():
                self.db.insight_days[(None, day, stage)] = {k: v for k, v in tally.items() if v}
            return len(days)

    def rebuild_record(self) -> RebuildRecord | None:
        with self.db.lock:
            return self.db.insight_rebuild

    def claim_rebuild(self, record: RebuildRecord, stale_before: datetime) -> bool:
        with self.db.lock:
            current = self.db.insight_rebuild
            if current is not None and current.status == RUNNING and current.updated_at > stale_before:
                return False
            self.db.insight_rebuild = record
            return True

    def save_rebuild(self, record: RebuildRecord) -> bool:
        with self.db.lock:
            current = self.db.insight_rebuild
            if current is None or current.id != record.id or current.status != RUNNING:
                return False
            self.db.insight_rebuild = record
            return True


    def export_totals(self, pipeline: str) -> ExportTotals | None:
        with self.db.lock:
            return copy.deepcopy(self.db.export_totals.get(pipeline))

    def save_export_totals(self, pipeline: str, totals: ExportTotals) -> None:
        with self.db.lock:
            stored = self.db.export_totals.get(pipeline)
            if (stored.version if stored is not None else 0) != totals.version:
                raise ConcurrentModification(f"the export totals of {pipeline!r} changed meanwhile")
            self.db.export_totals[pipeline] = copy.deepcopy(replace(totals, version=totals.version + 1))


class MemoryScheduleStore:
    """``ScheduleStore`` in memory: the same version conditions and due order."""

    def __init__(self, db: MemoryDatabase) -> None:
        self.db = db

    def insert(self, schedule: Schedule) -> None:
        with self.db.lock:
            key = (schedule.pipeline, schedule.id)
            if key in self.db.schedules:
                raise Conflict(f"schedule {schedule.id!r} exists already")
            schedule.version = 1
            self.db.schedules[key] = copy.deepcopy(schedule)

    def get(self, pipeline: str, schedule_id: str) -> Schedule | None:
        with self.db.lock:
            return copy.deepcopy(self.db.schedules.get((pipeline, schedule_id)))

    def list_for(self, pipeline: str) -> list[Schedule]:
        with self.db.lock:
            found = [copy.deepcopy(s) for (p, _), s in self.db.schedules.items() if p == pipeline]
        return sorted(found, key=lambda s: (s.created_at, s.id))

    def replace(self, schedule: Schedule) -> Schedule:
        with self.db.lock:
            key = (schedule.pipeline, schedule.id)
            current = self.db.schedules.get(key)
            if current is None:
                raise NotFound(f"schedule {schedule.id!r} not found")
            if current.version != schedule.version:
                raise ConcurrentModification(f"schedule {schedule.id!r} was changed meanwhile; read it again")
            schedule.version += 1
            self.db.schedules[key] = copy.deepcopy(schedule)
            return copy.deepcopy(schedule)

    def delete(self, pipeline: str, schedule_id: str) -> Schedule | None:
        with self.db.lock:
            return self.db.schedules.pop((pipeline, schedule_id), None)

    def due(self, now_iso: str, limit: int) -> list[tuple[str, str]]:
        with self.db.lock:
            due = sorted((format_iso(s.next_fire_at), s.pipeline, s.id) for s in self.db.schedules.values()
                         if s.enabled and s.next_fire_at is not None
                         and format_iso(s.next_fire_at) <= now_iso)
        return [(pipeline, schedule_id) for _, pipeline, schedule_id in due[:limit]]


class MemoryGroupStore:
    """``GroupStore`` in memory: each write checks the group's version and the runs' as read,
    all under the one lock, before writing anything."""

    def __init__(self, db: MemoryDatabase, runs: MemoryRunStore) -> None:
        self.db = db
        self.runs = runs
        self.groups: dict[tuple[str, str], tuple[Group, str]] = {}  # -> (group, changed at)

    def get(self, pipeline: str, name: str) -> Group | None:
        with self.db.lock:
            found = self.groups.get((pipeline, name))
            return None if found is None else found[0]

    def _check_group(self, group: Group) -> None:
        found = self.groups.get((group.pipeline, group.name))
        stored = None if found is None else found[0].version
        if stored != group.version:
            raise ConcurrentModification(f"concurrency group {group.name!r} changed since it was read; retry")

    def _check_run(self, before: RunAggregate) -> None:
        stored = self.db.runs.get(before.run.id)
        if (stored is None or stored.run.version != before.run.version
                or {s.id: s.version for s in stored.stages} != {s.id: s.version for s in before.stages}):
            raise ConcurrentModification(f"run {before.run.id!r} was changed by someone else; retry")

    def _put_group(self, group: Group, now: datetime) -> None:
        self.groups[(group.pipeline, group.name)] = (replace(group, version=(group.version or 0) + 1),
                                                     format_iso(now) or "")

    def insert_run(self, aggregate: RunAggregate, layout: dict | None, group: Group,
                   cancelled: tuple[RunAggregate, RunAggregate] | None = None,
                   link: tuple[str, str, str] | None = None) -> None:
        with self.db.lock:
            self._check_group(group)
            if cancelled is not None:
                self._check_run(cancelled[0])
            if link is not None:
                if (link[0], link[1]) in self.db.links:
                    raise ConcurrentModification("the link exists already; nothing was written")
                self.db.links[(link[0], link[1])] = aggregate.run.id
            self.runs._insert(aggregate, layout, {"run": aggregate.run.id})
            if cancelled is not None:
                self.runs.save(*cancelled)
            self._put_group(group, aggregate.run.created_at)

    def save_run(self, before: RunAggregate, after: RunAggregate, group: Group,
                 promoted: tuple[RunAggregate, RunAggregate] | None = None,
                 effect: dict | None = None, *, claim: bool = True) -> None:
        with self.db.lock:
            self._check_group(group)
            self._check_run(before)
            if promoted is not None:
                self._check_run(promoted[0])
            if claim:
                self.db.commit_claim(effect or {"run": after.run.id})()
            self.runs.save(before, after, claim=claim)
            if promoted is not None:
                self.runs.save(*promoted)
            self._put_group(group, after.run.updated_at)

    def write(self, group: Group, promoted: tuple[RunAggregate, RunAggregate] | None = None,
              checked: Run | None = None, *, now: datetime) -> None:
        with self.db.lock:
            self._check_group(group)
            if checked is not None:
                stored = self.db.runs.get(checked.id)
                if stored is None or stored.run.version != checked.version:
                    raise ConcurrentModification(f"run {checked.id!r} changed since it was read; retry")
            if promoted is not None:
                self._check_run(promoted[0])
                self.runs.save(*promoted)
            self._put_group(group, now)

    def due_groups(self, now_iso: str, limit: int = 100) -> list[tuple[str, str]]:
        with self.db.lock:
            due = sorted((at, key) for key, (group, at) in self.groups.items() if group.queue)
        # the DynamoDB store's grace time: a group is due a minute after its latest change
        grace = [key for at, key in due if format_iso(parse_iso(at) + timedelta(seconds=60)) <= now_iso]
        return grace[:limit]


def build_stores(settings: Settings) -> Stores:
    db = MemoryDatabase(CursorCodec(settings.secret_key))
    runs = MemoryRunStore(db)
    return Stores(
        runs=runs, links=MemoryRunLinks(db, runs), pipelines=MemoryPipelineStore(db),
        dialects=MemoryDialectLookups(db), idempotency=MemoryIdempotencyStore(db),
        tokens=MemoryTokenStore(db), sources=MemorySourceStore(db),
        subscriptions=MemorySubscriptionStore(db), deliveries=MemoryDeliveryLog(db),
        timers=MemoryActiveTimers(db), changes=MemoryChangeStream(), finder=MemoryFinder(db),
        schedules=MemoryScheduleStore(db), retention=MemoryRunRetention(db),
        insights=MemoryInsightsStore(db), groups=MemoryGroupStore(db, runs),
    )
