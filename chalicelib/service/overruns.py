"""Expectations of started stages, for overruns and the ETA (domain/overruns.py; docs/insights.md
"Overruns and ETA").

``expect`` is a step of the stream consumer that already feeds the insights (the outbox
publisher, events/outbound.py, and `make run`'s local outbox): never of a request. For every
record of a stage attempt entering IN_PROGRESS it reads the pipeline's day aggregates of the
recent window (1 Query; nothing else when the stage's own name has too little history), then the
stage (1 GetItem) and writes the expectations on it (1 UpdateItem conditioned on the stage's
version as read). The write moves the stage's ``due_at``, so the existing timer machinery (Step
Functions within the horizon, the sweeper, `make run`'s ticker) fires the overrun like any
other stage timer (service/timers.py ``expire_stage``). Idempotent: a redelivered record
finds the same history and either writes the same values again or loses its condition to a
newer change; the timer marks the attempt overrunning at most once.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from ..domain import overruns as rules
from ..domain.overruns import StageStarted
from ..domain.status import StageStatus
from . import ServiceContext

log = logging.getLogger(__name__)

WRITE_ATTEMPTS = 2  # the stage changed between the read and the write (not to a new start): read again


@dataclass
class ExpectReport:
    starts: int = 0
    written: int = 0
    no_history: int = 0
    stale: int = 0  # ended, retried or changed for good before the consumer got to it

    def __str__(self) -> str:
        return (f"{self.starts} starts: {self.written} expectations written, {self.no_history} without "
                f"enough history, {self.stale} stale")


def expect(ctx: ServiceContext, records: Iterable[dict]) -> ExpectReport:
    """Store the expectations of every stage start in ``records`` (see the module)."""
    report = ExpectReport()
    histories: dict[tuple, dict] = {}  # one Query per pipeline and window per batch
    for record in records:
        started = ctx.stores.changes.started_stage(record)
        if started is None:
            continue
        report.starts += 1
        outcome = expect_start(ctx, started, histories)
        if outcome == WRITTEN:
            report.written += 1
        elif outcome == NO_HISTORY:
            report.no_history += 1
        else:
            report.stale += 1
    return report


WRITTEN, NO_HISTORY, STALE = "written", "no history", "stale"


def expect_start(ctx: ServiceContext, started: StageStarted,
                 histories: dict[tuple, dict] | None = None) -> str:
    """One start: 1 Query of the window's day items; with history, 1 GetItem (the stage) + 1
    UpdateItem (once more when the stage changed meanwhile and is still this start; a big run's
    stage is never written: its newest version may wait in an intent).

    ``histories``: the expectations already read in this batch, by pipeline and window. The
    starts of one stream batch share them (a run's stages, a busy pipeline's runs), so a batch
    costs one Query per pipeline and window, not one per start; the window is whole days, so a
    batch's few seconds change nothing a fresh read would see but the same day's latest finishes."""
    first, last = rules.window(started.started_at)
    key = (started.pipeline, first, last)
    known = histories.get(key) if histories is not None else None
    if known is None:
        days = ctx.stores.insights.read_days(started.pipeline, first, last)
        known = rules.expectations(days.items, first, last)
        if histories is not None:
            histories[key] = known
    if started.name not in known:
        return NO_HISTORY
    for _ in range(WRITE_ATTEMPTS):
        stage = ctx.stores.runs.get_stage(started.stage_id)
        if (stage is None or stage.status != StageStatus.IN_PROGRESS or stage.attempt != started.attempt
                or stage.started_at != started.started_at):
            return STALE  # ended, retried, restarted or gone: this start's expectation is moot
        if not rules.set_expectations(stage, rules.to_store(known, started.name)):
            return WRITTEN  # already there (a redelivered record)
        if ctx.stores.runs.record_expectations(stage):
            return WRITTEN
    log.warning("expectations of stage %s not written: it kept changing, or is a big run's", started.stage_id)
    return STALE
