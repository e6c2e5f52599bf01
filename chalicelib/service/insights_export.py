"""The stack's scheduled OpenTelemetry export of the insights (events/insights_export.py, every
hour): for each pipeline, its figures as cumulative counts that never go back and never count a
run twice, whatever export failed before (docs/otel.md "In the stack").

Counts (runs by result, a stage's runs and retries) are CUMULATIVE from a fixed start: the
``since`` day of the pipeline's ``ExportTotals``, set by its first export (the first day of that
export's window), and moved only by a rebuild of the aggregates (which drops the totals: the
next export starts a new series, a reset to the backend). Each export sends, stamped now,

    totals (the days since .. through, folded) + the window's counts (the last WINDOW_DAYS days)

so it reads one Query of the window's days per pipeline, never history. A day leaving the
window is folded into the totals once (one more Query of those days, then a conditional put),
after it had WINDOW_DAYS days to receive late runs: a run reported later than that lands in its
day's aggregates (the API answers it) but no export counts it. A failed POST changes nothing
stored that the next export depends on: that one sends the same totals plus what finished since,
so nothing is lost and nothing counted twice. (A run retried after it finished moves from its
old result to its new one, as in the answer, so a per-result count may fall by one; one retried
after its first day left the window counts again on its new day: docs/otel.md.)

Gauges (percentiles, rates, time to recover, DORA) are those of the window: the last
WINDOW_DAYS days, today so far included.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta

from ..domain import insights as rules
from ..domain.errors import ConcurrentModification
from ..domain.schemas import InsightsQuery
from . import ServiceContext
from .insights import _pipelines, answer
from .ports import ExportTotals, InsightsExporter

log = logging.getLogger(__name__)

WINDOW_DAYS = 7  # the days each export reads; also how late a run may land and still be exported
RUN_COUNTS = ("total", "success", "failure", "cancelled", "timedOut")
STAGE_COUNTS = ("runs", "retries")


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def fold(totals: ExportTotals, body: dict, through: str) -> ExportTotals:
    """``totals`` with the counts of an answer over the days after ``totals.through`` up to
    ``through`` added."""
    runs = {key: totals.runs.get(key, 0) + _count((body.get("runs") or {}).get(key)) for key in RUN_COUNTS}
    stages = {name: dict(counts) for name, counts in totals.stages.items()}
    for stage in body.get("stages") or []:
        kept = stages.setdefault(stage["name"], dict.fromkeys(STAGE_COUNTS, 0))
        for key in STAGE_COUNTS:
            kept[key] = kept.get(key, 0) + _count(stage.get(key))
    return replace(totals, through=through, runs=runs, stages=stages)


def cumulative(totals: ExportTotals, window: dict) -> dict:
    """The window's answer with its counts replaced by ``totals`` + the window's: a stage found
    only in the totals is listed with its counts alone (no gauge of the window describes it)."""
    body = fold(totals, window, window["to"])
    stages = []
    for stage in window.get("stages") or []:
        stages.append({**stage, **body.stages[stage["name"]]})
    listed = {stage["name"] for stage in stages}
    stages += [{"name": name, **counts} for name, counts in sorted(body.stages.items()) if name not in listed]
    return {**window, "from": totals.since, "runs": body.runs, "stages": stages}


def _midnight(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day), time(), tzinfo=UTC)


def _read(ctx: ServiceContext, pipeline: str, start: date, end: date) -> dict:
    query = InsightsQuery.model_validate({"pipeline": pipeline, "from": start.isoformat(),
                                          "to": end.isoformat()})
    return answer(ctx, None, query).body


@dataclass
class ExportReport:
    pipelines: int = 0
    sent: int = 0
    failed: list[str] = field(default_factory=list)
    saved: int = 0  # pipelines whose totals were started or took in the days that left the window

    def __str__(self) -> str:
        return (f"{self.pipelines} pipelines: {self.sent} exported, {len(self.failed)} failed; "
                f"{self.saved} totals saved")


def export_pipeline(ctx: ServiceContext, exporter: InsightsExporter, pipeline: str,
                    report: ExportReport) -> bool:
    """Export one pipeline; False when the endpoint did not answer at all."""
    today = ctx.clock.now().astimezone(UTC).date()
    start = today - timedelta(days=WINDOW_DAYS - 1)
    fold_end = start - timedelta(days=1)
    store = ctx.stores.insights
    stored = store.export_totals(pipeline)
    totals = stored or ExportTotals(since=start.isoformat(), through=fold_end.isoformat())
    if totals.through < fold_end.isoformat():  # days left the window since the last export: fold them
        first = max(date.fromisoformat(totals.through) + timedelta(days=1),
                    fold_end - timedelta(days=rules.MAX_DAYS - 1))  # an export a year late: the last year
        totals = fold(totals, _read(ctx, pipeline, first, fold_end), fold_end.isoformat())
    if totals is not stored:  # the first export (it fixes ``since``) or a fold: kept for the next
        try:
            store.save_export_totals(pipeline, totals)
            report.saved += 1
        except ConcurrentModification:  # another export did the same from the same days
            log.info("the export totals of %s were saved by another export", pipeline)
    body = cumulative(totals, _read(ctx, pipeline, start, today))
    outcome = exporter.export(body, pipeline, _midnight(totals.since))
    if outcome.ok:
        report.sent += 1
    else:
        report.failed.append(pipeline)
    return outcome.reached


def export_insights(ctx: ServiceContext, exporter: InsightsExporter) -> ExportReport:
    """One export of every pipeline; a pipeline whose POST fails (the exporter logged why) is
    counted in ``ExportsFailed`` and sent again, whole, by the next export. Once the endpoint
    does not answer at all (down, unreachable, timing out), the pipelines left are counted failed
    without trying: each would wait out the same timeout, and together outlive the function's."""
    report = ExportReport()
    reachable = True
    for pipeline in _pipelines(ctx):
        report.pipelines += 1
        if not reachable:
            report.failed.append(pipeline)
            continue
        try:
            reachable = export_pipeline(ctx, exporter, pipeline, report)
        except Exception:  # noqa: BLE001 - a store error on one pipeline: the others are still sent
            log.exception("the insights export of %s failed before its POST", pipeline)
            report.failed.append(pipeline)
    if report.sent:
        ctx.metrics.count("ExportsSent", report.sent)
    if report.failed:
        ctx.metrics.count("ExportsFailed", len(report.failed))
    log.info("insights export: %s", report)
    return report
