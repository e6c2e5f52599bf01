"""Insights: keep the day aggregates as work finishes, answer from them, rebuild them.

- ``aggregate``: the stream consumer's step (events/outbound.py runs it on the outbox
  publisher's batches, and `make run`'s local stream follower): every finished stage attempt and
  run is added once into its day's aggregate items (domain/insights.py says what it adds).
- ``answer``: ``GET /api/insights`` reads the day items of the range (one Query per pipeline, or
  one for every pipeline together) and computes the figures; history is never read.
- ``rebuild``: recompute every aggregate from the stored runs (``python -m
  tools.rebuild_insights`` / ``make insights-rebuild``), for an upgrade or after a
  bug; it replays the same rules in the order things finished, so it gives what the consumer
  gave when the records arrived in that order.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

from ..domain import insights as rules
from ..domain import rebuilds
from ..domain.clock import format_iso, parse_iso
from ..domain.errors import BadRequest, ConcurrentModification, Conflict, NotFound
from ..domain.insights import (
    DeploymentSignal,
    FinishedAttempt,
    FinishedRun,
    PipelineState,
    RetryRecorded,
    SignalReceived,
    Tally,
)
from ..domain.model import Run, RunAggregate
from ..domain.rebuilds import RebuildRecord
from ..domain.schemas import InsightsQuery
from ..domain.status import FINAL, StageStatus
from . import ServiceContext
from .ports import DaysRead, RunCounted, RunMarks

log = logging.getLogger(__name__)

RUN_RETRIES = 5  # a run's finish re-read and re-applied after a concurrent change of its pipeline
DEFAULT_DAYS = 30


# ---- the consumer ------------------------------------------------------------------------------------

@dataclass
class AggregateReport:
    records: int = 0
    attempts: int = 0
    runs: int = 0
    retries: int = 0
    duplicates: int = 0

    def __str__(self) -> str:
        return (f"{self.records} records: {self.attempts} attempts, {self.runs} runs, {self.retries} "
                f"retries added; {self.duplicates} applied before")


def aggregate(ctx: ServiceContext, records: Iterable[dict]) -> AggregateReport:
    """Add what the records finished. A batch's stage records go before its run records: a run
    that finishes with its last stage (one transaction) counts that stage's deployment."""
    report = AggregateReport()
    found = []
    for record in records:
        report.records += 1
        work = ctx.stores.changes.finished_work(record)
        if work is not None:
            found.append(work)
    for work in sorted(found, key=lambda w: isinstance(w, FinishedRun)):  # stable: runs last
        if isinstance(work, RetryRecorded):
            ctx.stores.insights.record_retry(work)
            report.retries += 1
        elif isinstance(work, FinishedAttempt):
            if add_attempt(ctx, work):
                report.attempts += 1
            else:
                report.duplicates += 1
        elif add_run(ctx, work):
            report.runs += 1
        else:
            report.duplicates += 1
    return report


def _with_ready(attempt: FinishedAttempt, marks: RunMarks) -> FinishedAttempt:
    recorded = marks.retries.get((attempt.position, attempt.attempt))
    if recorded is None or attempt.queued_at is not None:
        return attempt
    return replace(attempt, queued_at=recorded)


def add_attempt(ctx: ServiceContext, attempt: FinishedAttempt) -> bool:
    """1 Query (the run's markers) + 1 TransactWrite (marker, the pipeline's and every pipeline's
    stage day item); False if this attempt was applied before."""
    marks = ctx.stores.insights.run_marks(attempt.run_id)
    attempt = _with_ready(attempt, marks)
    return ctx.stores.insights.add_attempt(attempt, rules.attempt_tally(attempt, marks.attempts))


DayKey = tuple[str, str | None]  # (day, stage name or None: the runs' item)


def _run_change(run: FinishedRun, marks: RunMarks, state: PipelineState
                ) -> tuple[dict[str, Tally], dict[DayKey, Tally], PipelineState]:
    # only what had ended by the run's end: a batch applies its stage records before its run
    # records, so an earlier finish of a retried run must not see the attempts after it
    ended = [m for m in marks.attempts if m.ended_at <= run.ended_at]
    counted = rules.run_tallies(run, ended)
    before = marks.counted.tallies if marks.counted is not None else {}
    added: dict[DayKey, Tally] = {(day, None): rules.difference(counted.get(day, {}), before.get(day, {}))
                                  for day in set(counted) | set(before)}
    # a run finishing again (after a retry) brings only the deployments since its last finish
    seen = marks.counted.ended_at if marks.counted is not None else None
    deploys = [d for d in rules.deploys_of(run, ended) if seen is None or d.ended_at > seen]
    step = rules.advance(state, run, deploys)
    for day, tally in step.tallies.items():
        added[(day, None)] = rules.merge([added.get((day, None), {}), tally])
    after, flaky = rules.commit_flakiness(step.state, run, ended)
    for (day, stage), tally in flaky.items():
        added[(day, stage)] = rules.merge([added.get((day, stage), {}), tally])
    return counted, {key: tally for key, tally in added.items() if tally}, after


def add_run(ctx: ServiceContext, run: FinishedRun) -> bool:
    """1 Query (markers) + 1 GetItem (the pipeline's state) + 1 TransactWrite; a finish applied
    before (its order or a later one is on the marker) adds nothing."""
    store = ctx.stores.insights
    for _ in range(RUN_RETRIES):
        marks = store.run_marks(run.run_id)
        if marks.counted is not None and marks.counted.order >= run.order:
            return False
        state = store.pipeline_state(run.pipeline)
        counted, added, after = _run_change(run, marks, state)
        try:
            return store.add_run(run, marks.counted, counted, added, state, after)
        except ConcurrentModification:
            continue
    raise ConcurrentModification(f"insights of run {run.run_id!r}: the pipeline kept changing; retry")


# ---- outside signals: incidents and rollbacks (CDEvents, through the webhook) ----------------------

def add_signal(ctx: ServiceContext, signal: DeploymentSignal) -> rules.Advance | None:
    """1 GetItem (the pipeline's state) + 1 TransactWrite (the signal's item, the state, the
    ADDs): what it changed, or None if this signal (its key) was applied before. Applied when it
    is received, not from the stream: it changes no run, so no run record carries it; its kept
    item is what the rebuild reads."""
    store = ctx.stores.insights
    for _ in range(RUN_RETRIES):
        state = store.pipeline_state(signal.pipeline)
        step = rules.apply_signal(state, signal)
        try:
            return step if store.add_signal(signal, step.tallies, state, step.state) else None
        except ConcurrentModification:
            continue
    raise ConcurrentModification(f"insights of pipeline {signal.pipeline!r} kept changing; retry")


def receive_signal(ctx: ServiceContext, received: SignalReceived) -> dict:
    """A verified incident or rollback event: its pipeline found (domain ``signal_pipeline``),
    then applied once. One that finds no pipeline is accepted, counted nowhere and logged."""
    pipeline, why = rules.signal_pipeline(received, lambda name: ctx.stores.pipelines.get(name) is not None)
    if pipeline is None:
        log.info("insights: %s %s ignored: %s", received.kind, received.key, why)
        return {"result": "ignored", "event": received.summary, "notes": [why]}
    signal = DeploymentSignal(pipeline=pipeline, key=received.key, kind=received.kind, at=received.at,
                              incident=received.incident)
    step = add_signal(ctx, signal)
    answer: dict = {"result": "applied" if step is not None else "unchanged", "event": received.summary,
                    "pipeline": pipeline}
    failed = step is not None and any("failedChanges" in tally for tally in step.tallies.values())
    if step is not None and not failed and received.kind != rules.INCIDENT_RESOLVED:
        answer["notes"] = ["no deployment of the pipeline was pending: no change counted as failed"]
    return answer


# ---- the answer --------------------------------------------------------------------------------------

@dataclass
class Answer:
    body: dict
    read: DaysRead = field(default_factory=DaysRead)


def answer(ctx: ServiceContext, reach: frozenset[str] | None, query: InsightsQuery) -> Answer:
    """The figures of ``query``'s range from the day items alone: the one pipeline named, else
    every pipeline the caller may see (``reach``; None: all, read from the every-pipeline items)."""
    today = ctx.clock.now().date()
    end = date.fromisoformat(query.to) if query.to else today
    if query.from_:
        start = date.fromisoformat(query.from_)
    else:
        start = max(date.min, end - timedelta(days=min(DEFAULT_DAYS - 1, (end - date.min).days)))
    if start > end:
        raise BadRequest("from must not be after to", details=[{"field": "from", "message": "after to"}])
    if rules.days_between(start, end) > rules.MAX_DAYS:
        raise BadRequest(f"at most {rules.MAX_DAYS} days per answer",
                         details=[{"field": "from", "message": f"more than {rules.MAX_DAYS} days before to"}])
    scopes: list[str | None]
    if query.pipeline is not None:
        scopes = [query.pipeline]
    elif reach is None:
        scopes = [None]
    else:
        scopes = [*sorted(reach)]
    read = DaysRead()
    for scope in scopes:
        part = ctx.stores.insights.read_days(scope, start.isoformat(), end.isoformat())
        read.items += part.items
        read.queries += part.queries
        read.items_read += part.items_read
        read.capacity_units += part.capacity_units
    body = rules.figures(read.items, start, end, query.granularity, query.stage)
    return Answer(body=body, read=read)


# ---- rebuild -----------------------------------------------------------------------------------------

def _order(run: Run) -> int:
    return run.seq if run.seq is not None else (run.version or 0)


def finished_run(run: Run) -> FinishedRun:
    """The run's own fields as a ``FinishedRun`` (as stored: its status may not be final)."""
    committed = (run.commit or {}).get("committedAt")
    try:
        committed_at = parse_iso(committed) if isinstance(committed, str) else None
    except ValueError:
        committed_at = None
    sha = (run.commit or {}).get("hash")
    return FinishedRun(pipeline=run.pipeline, run_id=run.id, status=run.status, created_at=run.created_at,
                       started_at=run.started_at, ended_at=run.ended_at or run.updated_at, order=_order(run),
                       environment=run.environment, committed_at=committed_at,
                       commit=sha.lower() if isinstance(sha, str) and sha else None)


def run_finishes(aggregate: RunAggregate, attempts: list[FinishedAttempt],
                 marks: RunMarks) -> list[tuple[datetime, FinishedRun]]:
    """Every finish of a stored run (a retried run finished more than once), as the consumer saw
    them live (domain/insights.py ``run_finishes``)."""
    by_stage: dict[int, list[rules.PastAttempt]] = {}
    for attempt in sorted(attempts, key=lambda a: (a.position, a.attempt)):
        by_stage.setdefault(attempt.position, []).append(rules.PastAttempt(
            status=attempt.status, retried_at=marks.retries.get((attempt.position, attempt.attempt)),
            started_at=attempt.started_at, ended_at=attempt.ended_at))
    stages = [(by_stage.get(stage.position, []), stage.allow_failure) for stage in aggregate.stages]
    final = aggregate.run.status in FINAL and aggregate.run.ended_at is not None
    return rules.run_finishes(finished_run(aggregate.run), stages, final=final)


def finished_attempts(aggregate: RunAggregate, ended: dict[str, list[dict]]) -> list[FinishedAttempt]:
    """Every finished attempt of a stored run: each stage's ended attempts, then its current one."""
    found = []
    for stage in aggregate.stages:
        current = FinishedAttempt(
            pipeline=aggregate.run.pipeline, run_id=stage.run_id, position=stage.position, name=stage.name,
            status=stage.status, attempt=stage.attempt, first_attempt=stage.first_attempt,
            created_at=stage.created_at, started_at=stage.started_at,
            ended_at=stage.ended_at or stage.updated_at, environment=stage.environment)
        for entry in ended.get(stage.id, []):
            end = parse_iso(entry.get("endedAt"))
            status = entry.get("status")
            if end is None or status not in {s.value for s in FINAL}:
                continue
            found.append(replace(current, status=StageStatus(status), attempt=int(entry["attempt"]),
                                 started_at=parse_iso(entry.get("startedAt")), ended_at=end))
        if stage.status in FINAL and stage.ended_at is not None:
            found.append(current)
    return found


@dataclass
class Rebuilt:
    """What the consumer would have made of a pipeline's runs, taken in the order they ended."""

    days: dict[tuple[str, str | None], Tally] = field(default_factory=dict)
    state: PipelineState = field(default_factory=PipelineState)
    marks: dict[str, RunMarks] = field(default_factory=dict)

    def add(self, day: str, stage: str | None, tally: Tally) -> None:
        merged = rules.merge([self.days.get((day, stage), {}), tally])
        merged = {key: value for key, value in merged.items() if value}
        if merged:
            self.days[(day, stage)] = merged
        else:
            self.days.pop((day, stage), None)


def replay(runs: list[StoredRun], signals: Iterable[DeploymentSignal] = ()) -> Rebuilt:
    """The aggregates of these runs (with their ended attempts and their recorded retries) and
    the pipeline's outside signals, taken in the order they happened (a signal after the runs'
    records of the same moment)."""
    rebuilt = Rebuilt()
    events: list[tuple[datetime, int, str, FinishedAttempt | FinishedRun | DeploymentSignal]] = []
    for signal in signals:
        events.append((signal.at, 2, signal.key, signal))
    for aggregate, ended, recorded in runs:
        rebuilt.marks[aggregate.run.id] = RunMarks(retries=dict(recorded.retries))
        attempts = finished_attempts(aggregate, ended)
        for attempt in attempts:
            events.append((attempt.ended_at, 0, aggregate.run.id, attempt))
        for moment, run in run_finishes(aggregate, attempts, recorded):
            events.append((moment, 1, aggregate.run.id, run))
    events.sort(key=lambda e: (e[0], e[1], e[2], getattr(e[3], "position", 0), getattr(e[3], "attempt", 0),
                               getattr(e[3], "order", 0)))
    for _, _, run_id, work in events:
        if isinstance(work, DeploymentSignal):
            step = rules.apply_signal(rebuilt.state, work)
            rebuilt.state = step.state
            for day, tally in step.tallies.items():
                rebuilt.add(day, None, tally)
            continue
        marks = rebuilt.marks[run_id]
        if isinstance(work, FinishedAttempt):
            attempt = _with_ready(work, marks)
            tally = rules.attempt_tally(attempt, marks.attempts)
            rebuilt.add(rules.day_of(attempt.ended_at), attempt.name, tally)
            marks.attempts.append(rules.mark_of(attempt))
        else:
            counted, added, rebuilt.state = _run_change(work, marks, rebuilt.state)
            for (day, stage), tally in added.items():
                rebuilt.add(day, stage, tally)
            marks.counted = RunCounted(work.order, counted, work.ended_at)
    return rebuilt


StoredRun = tuple[RunAggregate, dict[str, list[dict]], RunMarks]  # a run, its ended attempts, its markers


def _runs_of(ctx: ServiceContext, pipeline: str) -> list[StoredRun]:
    found, cursor = [], None
    while True:
        page, cursor = ctx.stores.runs.list_runs(pipeline, None, 100, cursor)
        for listed in page:
            aggregate = ctx.stores.runs.load_run(listed.id)
            if aggregate is None:
                continue
            retried = [s for s in aggregate.stages if s.attempt > s.first_attempt]
            ended = ctx.stores.runs.attempts_of(retried) if retried else {}
            found.append((aggregate, ended, ctx.stores.insights.run_marks(listed.id)))
        if not cursor:
            return found


def _pipelines(ctx: ServiceContext) -> list[str]:
    names, cursor = [], None
    while True:
        page, cursor = ctx.stores.finder.list_pipelines(None, 100, cursor)
        names += [p.name for p in page]
        if not cursor:
            return sorted(set(names))


@dataclass
class RebuildReport:
    pipelines: int = 0
    runs: int = 0
    items: int = 0


def rebuild(ctx: ServiceContext, progress: Callable[[RebuildReport], None] | None = None) -> RebuildReport:
    """Recompute every pipeline's aggregates, state and markers, and the every-pipeline items,
    from the stored runs (reads all history: an operator's command, not a request). Run it while
    the consumer is caught up; records it applies meanwhile may be replaced by the rebuild.
    ``progress`` is told the report after each pipeline (it may raise to stop the rebuild)."""
    report = RebuildReport()
    every: dict[tuple[str, str | None], Tally] = {}
    for pipeline in _pipelines(ctx):
        runs = _runs_of(ctx, pipeline)
        rebuilt = replay(runs, ctx.stores.insights.signals_of(pipeline))
        report.items += ctx.stores.insights.replace_pipeline(pipeline, rebuilt.days, rebuilt.state,
                                                             rebuilt.marks)
        for key, tally in rebuilt.days.items():
            every[key] = rules.merge([every.get(key, {}), tally])
        report.pipelines += 1
        report.runs += len(runs)
        if progress is not None:
            progress(report)
    report.items += ctx.stores.insights.replace_all_pipelines(every)
    log.info("insights rebuilt: %s", report)
    return report



# ---- the rebuild as an API operation (POST /api/insights/rebuild) -------------------------------

class RebuildRunning(Conflict):
    code = "rebuild_running"


class RebuildTakenOver(Exception):
    """This rebuild was taken for dead and another started: it stops."""


def start_rebuild(ctx: ServiceContext, by: str | None, launch: Callable[[str], None]) -> RebuildRecord:
    """Record a new running rebuild (``Conflict`` while another runs: domain/rebuilds.py) and
    ``launch`` it by its id (an asynchronous invoke of the rebuild function on AWS, a thread
    under `make run`): the request returns at once. A launch that fails fails the record."""
    now = ctx.clock.now()
    record = RebuildRecord(id=f"rb_{uuid.uuid4().hex}", status=rebuilds.RUNNING, started_at=now,
                           updated_at=now, by=by)
    store = ctx.stores.insights
    if not store.claim_rebuild(record, rebuilds.stale_before(now)):
        current = store.rebuild_record()
        since = format_iso(current.started_at) if current is not None else "just now"
        raise RebuildRunning(f"a rebuild is running (started {since}); see GET /api/insights/rebuild")
    try:
        launch(record.id)
    except Exception as error:
        log.exception("insights rebuild %s could not be started", record.id)
        failed = replace(record, status=rebuilds.FAILED, finished_at=ctx.clock.now(),
                         updated_at=ctx.clock.now(), error=rebuilds.failure(error))
        store.save_rebuild(failed)
        return failed
    return record


def run_rebuild(ctx: ServiceContext, rebuild_id: str) -> RebuildRecord | None:
    """The launched rebuild: replay everything, its progress on the record after each pipeline,
    then its end (succeeded, or failed with the error, which is raised again so the function's
    error is counted). Nothing if the record is not this running rebuild's (a retried invoke, a
    rebuild taken over)."""
    store = ctx.stores.insights
    record = store.rebuild_record()
    if record is None or record.id != rebuild_id or record.status != rebuilds.RUNNING:
        log.warning("insights rebuild %s is not the running one: nothing done", rebuild_id)
        return None
    current = [record]

    def progress(report: RebuildReport) -> None:
        step = replace(current[0], updated_at=ctx.clock.now(), pipelines=report.pipelines, runs=report.runs,
                       items=report.items)
        if not store.save_rebuild(step):
            raise RebuildTakenOver(f"insights rebuild {rebuild_id} was taken over by another")
        current[0] = step

    try:
        report = rebuild(ctx, progress)
    except RebuildTakenOver:
        log.warning("insights rebuild %s stopped: taken over", rebuild_id)
        return None
    except Exception as error:
        failed = replace(current[0], status=rebuilds.FAILED, updated_at=ctx.clock.now(),
                         finished_at=ctx.clock.now(), error=rebuilds.failure(error))
        store.save_rebuild(failed)
        raise
    done = replace(current[0], status=rebuilds.SUCCEEDED, updated_at=ctx.clock.now(),
                   finished_at=ctx.clock.now(), pipelines=report.pipelines, runs=report.runs,
                   items=report.items)
    store.save_rebuild(done)
    return done


def rebuild_status(ctx: ServiceContext) -> RebuildRecord:
    record = ctx.stores.insights.rebuild_record()
    if record is None:
        raise NotFound("no rebuild was asked for through the API")
    return record
