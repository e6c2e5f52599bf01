"""Timer use cases: fire one stage's timer, sweep every due timer, arm timers for changed stages.

The same ``expire_stage`` runs behind every timer source: the Step Functions workflow (via the
timer queue), the scheduled sweeper (AWS safety net) and the local ticker thread (``make run``).
It decides by the injected clock and the stage as read now, never by what the timer carried,
so a late, duplicated or stale timer is harmless.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from ..domain import ids
from ..domain.clock import format_iso, parse_iso
from ..domain.errors import ConcurrentModification, NotFound
from ..domain.model import RunAggregate
from ..domain.status import StageStatus
from ..domain.timers import fire
from . import ServiceContext, concurrency
from .ports import DueTimer
from .runs import mutate_run

log = logging.getLogger(__name__)

SWEEP_LIMIT = 1000


def expire_stage(ctx: ServiceContext, stage_id: str, attempt: int) -> StageStatus | None:
    """Apply a stage's due timer: TIMED_OUT past its timeout, SUCCESS past its expected end, the
    pending attempt started past its ``nextRetryAt`` (an automatic retry: domain/retries.py).

    Writes (one transaction, via mutate_run, conditioned on the versions read) only if the stage
    still exists, is still active, is still ``attempt``, and its due moment has passed by the
    clock; otherwise it writes nothing and returns None (a stale timer: older attempt, already
    final, deadline moved later, run deleted). Counts ``TimersFired`` (by the status it set) or
    ``TimersStale``. The run's status follows by derivation, and the
    run driver may start the next stage in the same transaction.
    """
    parsed = ids.parse_stage_id(stage_id)
    if parsed is None:
        return None
    outcome: list[StageStatus] = []

    def change(aggregate: RunAggregate) -> bool:
        outcome.clear()
        stage = next((s for s in aggregate.stages if s.id == stage_id), None)
        if stage is None or stage.attempt != attempt:
            return False
        if not fire(stage, ctx.clock.now()):
            return False
        outcome.append(stage.status)
        return True

    try:
        mutate_run(ctx, parsed[0], change, local=True)  # the due stage's own timer
    except NotFound:
        outcome.clear()
    if not outcome:
        ctx.metrics.count("TimersStale")
        return None
    ctx.metrics.count("TimersFired", dimensions={"Status": outcome[0].value})
    return outcome[0]


@dataclass
class SweepReport:
    queries: int = 0
    items_read: int = 0
    due: int = 0
    fired: dict[str, int] = field(default_factory=dict)
    stale: int = 0
    failed: int = 0
    truncated: bool = False
    completed: int = 0  # big runs whose pending change the sweep finished
    groups_freed: int = 0  # concurrency groups held by an ended run, freed (service/concurrency.py)


def sweep(ctx: ServiceContext, now: datetime | None = None, *, limit: int = SWEEP_LIMIT) -> SweepReport:
    """Fire every timer due by ``now``: one Query per shard of the sparse active index.

    Its reads grow with the number of *due* stages only, never with finished history. A stage
    that keeps losing write races is left for the next sweep instead of failing the others.
    """
    now = now or ctx.clock.now()
    found = ctx.stores.timers.due_timers(format_iso(now), limit=limit)
    report = SweepReport(queries=found.queries, items_read=found.items_read,
                         due=len(found.timers), truncated=found.truncated)
    for run_id in found.pending_runs:  # loading a run completes the change pending on it
        try:
            ctx.stores.runs.load_run(run_id)
            report.completed += 1
        except ConcurrentModification:
            report.failed += 1
    for timer in found.timers:
        try:
            status = expire_stage(ctx, timer.stage_id, timer.attempt)
        except ConcurrentModification:
            report.failed += 1
            log.warning("timer of stage %s lost too many write races; next sweep", timer.stage_id)
            continue
        if status is None:
            report.stale += 1
        else:
            report.fired[status.value] = report.fired.get(status.value, 0) + 1
    # a run that ended and whose writer died before freeing its group: promote the next one
    report.groups_freed = concurrency.repair(ctx, now)
    return report


class TimerScheduler(Protocol):
    """Starts and stops durable timers (on AWS: Step Functions executions, named by the timer)."""

    def start(self, timer: DueTimer, wait_seconds: int) -> None: ...

    def stop(self, timer: DueTimer) -> None:
        """Stop the timer started for ``timer`` if it still waits; nothing if there is none."""


def wait_seconds(due_at: str, now: datetime) -> int:
    """Whole seconds to wait, rounded up so a timer never fires before its moment."""
    remaining = (parse_iso(due_at) - now).total_seconds()
    return max(0, math.ceil(remaining))


def waits_on_workflow(timer: DueTimer, horizon_seconds: int, now: datetime) -> bool:
    """Whether ``timer`` gets a workflow (due within the horizon of the write that set it) or is
    left to the minute sweeper (due later, or the horizon is 0).

    Measured from ``set_at`` (the write), not from when the armer runs, so the armer decides
    the same for the record that armed a timer and for the later one that makes it stale: a
    stage's ``updatedAt`` only grows, so every execution that was started is also stopped
    (``now`` stands in when the record does not say when it was written).
    """
    if horizon_seconds <= 0:
        return False
    written = parse_iso(timer.set_at) if timer.set_at else now
    return (parse_iso(timer.due_at) - written).total_seconds() <= horizon_seconds


def arm_timers(ctx: ServiceContext, records: Iterable[dict], scheduler: TimerScheduler) -> int:
    """Start a workflow for every stream record whose stage now needs a timer due within the
    horizon (``Settings.timer_horizon_seconds``), and stop the one a record made stale. Returns
    how many were started.

    Driven by the table's stream, so every committed change that starts a stage gets its timer
    even if the API call that made it died right after committing, and the API path never waits
    on Step Functions. A timer due later is left to the sweeper (``TimersLeftToSweeper``). A
    stale timer (the stage ended, was removed, or its deadline or attempt changed) is stopped
    while it still waits (``TimersStopped``): a stopped execution costs no further transition
    and frees its place under the open-executions quota; one already due is delivering and
    finds nothing to do (``expire_stage``). Starting and stopping are both idempotent, so a
    redelivered record does no harm.
    """
    horizon = ctx.settings.timer_horizon_seconds
    armed = 0
    for record in records:
        now = ctx.clock.now()
        timer = ctx.stores.timers.armed_timer(record)
        if timer is not None:
            if waits_on_workflow(timer, horizon, now):
                scheduler.start(timer, wait_seconds(timer.due_at, now))
                armed += 1
            else:
                ctx.metrics.count("TimersLeftToSweeper")
        stale = ctx.stores.timers.disarmed_timer(record)
        if stale is not None and parse_iso(stale.due_at) > now and waits_on_workflow(stale, horizon, now):
            scheduler.stop(stale)
            ctx.metrics.count("TimersStopped")
    return armed
