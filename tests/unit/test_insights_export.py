"""The stack's hourly OTLP export of the insights (service/insights_export.py), on the in-memory
stores with the injected clock: counts cumulative from a fixed start, never counted twice or
lost when an export fails, a day folded into the stored totals once when it leaves the 7-day
window, a rebuild starting a new series; and nothing sent without an endpoint."""
from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib import wiring
from chalicelib.domain.errors import ConcurrentModification
from chalicelib.domain.insights import FinishedAttempt, FinishedRun
from chalicelib.domain.schemas import CreateRunIn
from chalicelib.domain.status import StageStatus as S
from chalicelib.events import insights_export as handler
from chalicelib.service import insights, runs
from chalicelib.service.insights_export import WINDOW_DAYS, cumulative, export_insights, fold
from chalicelib.service.ports import ExportTotals
from chalicelib.settings import Settings
from tests.fixtures.clock import FakeClock

NOW = "2026-03-20T17:00:00.000Z"


@dataclass
class Outcome:
    ok: bool
    reached: bool = True


@dataclass
class Recorder:
    """The exporter port: keeps what it was given; ``ok`` says how the POST went, ``reached``
    whether the endpoint answered at all."""
    ok: bool = True
    reached: bool = True
    sent: list[tuple[str | None, dict, datetime | None]] = field(default_factory=list)

    def export(self, answer, pipeline=None, since=None):
        self.sent.append((pipeline, copy.deepcopy(answer), since))
        return Outcome(self.ok, self.reached)


@dataclass
class Counts:
    counted: list[tuple[str, int]] = field(default_factory=list)

    def count(self, name, value=1, dimensions=None):
        self.counted.append((name, value))


@pytest.fixture
def ctx():
    settings = Settings(table_name="stagetrack-test", region="us-east-1")
    context = wiring.memory_context(settings, FakeClock(NOW))
    context.metrics = Counts()
    for pipeline in ("api", "web"):  # the pipelines the export lists
        runs.create_run(context, CreateRunIn.model_validate_json(json.dumps({"pipeline": pipeline})))
    return context


_runs = itertools.count()


def finish(ctx, pipeline: str, status: S, ended: str, stage: str = "build", retries: int = 0) -> None:
    """A run of one stage that finished at ``ended`` (its attempts first, as the consumer applies a
    batch), through the consumer's own steps."""
    end = datetime.fromisoformat(ended.replace("Z", "+00:00"))
    run_id = f"{pipeline}-{next(_runs)}"
    for attempt in range(1, retries + 2):
        insights.add_attempt(ctx, FinishedAttempt(
            pipeline=pipeline, run_id=run_id, position=0, name=stage,
            status=status if attempt == retries + 1 else S.FAILURE, attempt=attempt, first_attempt=1,
            created_at=end - timedelta(minutes=10), started_at=end - timedelta(minutes=9 - attempt),
            ended_at=end - timedelta(minutes=retries + 1 - attempt)))
    insights.add_run(ctx, FinishedRun(pipeline=pipeline, run_id=run_id, status=status,
                                      created_at=end - timedelta(minutes=10),
                                      started_at=end - timedelta(minutes=9), ended_at=end, order=1))


def sent_of(recorder: Recorder, pipeline: str) -> tuple[dict, datetime | None]:
    [(body, since)] = [(body, since) for name, body, since in recorder.sent if name == pipeline]
    return body, since


def test_the_first_export_counts_from_the_first_day_of_its_window(ctx):
    finish(ctx, "web", S.SUCCESS, "2026-03-20T10:00:00Z")
    finish(ctx, "web", S.FAILURE, "2026-03-15T10:00:00Z", stage="test", retries=1)
    finish(ctx, "web", S.SUCCESS, "2026-03-13T10:00:00Z")  # before the window: not in any export
    recorder = Recorder()
    report = export_insights(ctx, recorder)
    assert (report.pipelines, report.sent, report.failed, report.saved) == (2, 2, [], 2)
    body, since = sent_of(recorder, "web")
    assert since == datetime(2026, 3, 14, tzinfo=UTC)  # 7 days, today included
    assert body["from"] == "2026-03-14" and body["to"] == "2026-03-20"
    assert body["runs"] == {"total": 2, "success": 1, "failure": 1, "cancelled": 0, "timedOut": 0}
    assert {s["name"]: (s["runs"], s["retries"]) for s in body["stages"]} == {"build": (1, 0), "test": (2, 1)}
    assert body["successRate"] == 0.5  # the gauges are the window's
    assert ctx.stores.insights.export_totals("web") == ExportTotals(
        since="2026-03-14", through="2026-03-13", runs={}, stages={}, version=1)
    assert sent_of(recorder, "api")[0]["runs"]["total"] == 0
    assert ctx.metrics.counted == [("ExportsSent", 2)]


def test_a_failed_export_loses_nothing_and_the_next_counts_each_run_once(ctx):
    finish(ctx, "web", S.SUCCESS, "2026-03-20T10:00:00Z")
    failing = Recorder(ok=False)
    report = export_insights(ctx, failing)
    assert report.failed == ["api", "web"] and report.sent == 0
    assert ctx.metrics.counted == [("ExportsFailed", 2)]
    assert sent_of(failing, "web")[0]["runs"]["total"] == 1
    finish(ctx, "web", S.FAILURE, "2026-03-20T17:30:00Z")
    ctx.clock.advance(3600)
    recorder = Recorder()
    export_insights(ctx, recorder)
    body, since = sent_of(recorder, "web")
    assert body["runs"]["total"] == 2 and body["runs"]["failure"] == 1  # the totals, not a delta
    assert since == datetime(2026, 3, 14, tzinfo=UTC)  # the same series


def test_days_leaving_the_window_are_folded_once_and_the_counts_only_grow(ctx):
    finish(ctx, "web", S.SUCCESS, "2026-03-20T10:00:00Z", retries=2)
    finish(ctx, "web", S.TIMED_OUT, "2026-03-19T10:00:00Z", stage="deploy")
    export_insights(ctx, Recorder())
    totals = []
    for days in range(1, 12):  # the runs' days leave the window on the 26th and the 27th
        ctx.clock.set(datetime(2026, 3, 20, 17, tzinfo=UTC) + timedelta(days=days))
        if days == 4:  # a run late by 3 days, on a day still in the window
            finish(ctx, "web", S.CANCELLED, "2026-03-21T09:00:00Z")
        if days == 9:  # a run late by 8 days: its day was folded the day before (documented)
            finish(ctx, "web", S.FAILURE, "2026-03-21T09:00:00Z")
        recorder = Recorder()
        export_insights(ctx, recorder)
        body, since = sent_of(recorder, "web")
        assert since == datetime(2026, 3, 14, tzinfo=UTC)
        totals.append((body["runs"]["total"], body["runs"]["timedOut"],
                       {s["name"]: (s["runs"], s["retries"]) for s in body["stages"]}))
    before = {"build": (3, 2), "deploy": (1, 0)}  # a stage's runs are its attempts
    after = {"build": (4, 2), "deploy": (1, 0)}  # and the cancelled run's
    assert totals == [(2, 1, before)] * 3 + [(3, 1, after)] * 8
    stored = ctx.stores.insights.export_totals("web")
    assert (stored.through, stored.runs["total"], stored.stages) == (
        "2026-03-24", 3, {"build": {"runs": 4, "retries": 2}, "deploy": {"runs": 1, "retries": 0}})
    # a stage seen only before the window is sent with its counts alone (no gauge describes it)
    assert {"name": "deploy", "runs": 1, "retries": 0} in body["stages"]


def test_an_export_after_a_long_pause_folds_every_day_it_missed(ctx):
    finish(ctx, "web", S.SUCCESS, "2026-03-20T10:00:00Z")
    export_insights(ctx, Recorder())
    finish(ctx, "web", S.FAILURE, "2026-03-25T10:00:00Z")
    ctx.clock.set("2026-05-01T12:00:00.000Z")  # five weeks without an export
    recorder = Recorder()
    export_insights(ctx, recorder)
    body, since = sent_of(recorder, "web")
    assert body["runs"]["total"] == 2 and since == datetime(2026, 3, 14, tzinfo=UTC)
    assert body["successRate"] is None  # nothing in the last 7 days
    assert ctx.stores.insights.export_totals("web").through == "2026-04-24"


def test_a_rebuild_drops_the_totals_so_the_next_export_starts_a_new_series(ctx):
    finish(ctx, "web", S.SUCCESS, "2026-03-20T10:00:00Z")
    export_insights(ctx, Recorder())
    assert ctx.stores.insights.export_totals("web") is not None
    insights.rebuild(ctx)
    assert ctx.stores.insights.export_totals("web") is None
    ctx.clock.set("2026-03-30T12:00:00.000Z")
    recorder = Recorder()
    export_insights(ctx, recorder)
    assert sent_of(recorder, "web")[1] == datetime(2026, 3, 24, tzinfo=UTC)


def test_the_totals_are_saved_only_over_the_version_read(ctx):
    store = ctx.stores.insights
    first = ExportTotals(since="2026-03-14", through="2026-03-13")
    store.save_export_totals("web", first)
    with pytest.raises(ConcurrentModification):
        store.save_export_totals("web", first)  # another export saved meanwhile
    saved = store.export_totals("web")
    store.save_export_totals("web", fold(saved, {"runs": {"total": 1, "success": 1}}, "2026-03-14"))
    assert store.export_totals("web").version == 2 and store.export_totals("web").runs["total"] == 1


def test_a_concurrent_export_folding_the_same_days_changes_nothing(ctx, monkeypatch):
    finish(ctx, "web", S.SUCCESS, "2026-03-20T10:00:00Z")
    export_insights(ctx, Recorder())
    ctx.clock.set("2026-03-28T12:00:00.000Z")
    store = ctx.stores.insights
    real = store.save_export_totals

    def racing(pipeline, totals):  # the other export saves the very same fold first
        real(pipeline, totals)
        real(pipeline, totals)

    monkeypatch.setattr(store, "save_export_totals", racing)
    recorder = Recorder()
    report = export_insights(ctx, recorder)
    assert report.failed == [] and sent_of(recorder, "web")[0]["runs"]["total"] == 1


def test_once_the_endpoint_does_not_answer_the_pipelines_left_wait_for_the_next_export(ctx):
    down = Recorder(ok=False, reached=False)
    report = export_insights(ctx, down)
    assert [name for name, _, _ in down.sent] == ["api"]  # one timeout, not one per pipeline
    assert report.failed == ["api", "web"] and ctx.metrics.counted == [("ExportsFailed", 2)]
    refused = Recorder(ok=False, reached=True)  # a refusal is an answer: the others are tried
    assert export_insights(ctx, refused).failed == ["api", "web"] and len(refused.sent) == 2


def test_a_pipeline_whose_figures_cannot_be_read_is_a_failure_and_the_others_are_sent(ctx, monkeypatch):
    store = ctx.stores.insights
    real = store.export_totals

    def broken(pipeline):
        if pipeline == "api":
            raise RuntimeError("throttled")
        return real(pipeline)

    monkeypatch.setattr(store, "export_totals", broken)
    recorder = Recorder()
    report = export_insights(ctx, recorder)
    assert report.failed == ["api"] and [name for name, _, _ in recorder.sent] == ["web"]
    assert ctx.metrics.counted == [("ExportsSent", 1), ("ExportsFailed", 1)]


def test_fold_adds_an_answers_counts_and_cumulative_keeps_the_windows_gauges():
    totals = ExportTotals(since="2026-03-01", through="2026-03-05",
                          runs={"total": 5, "success": 4, "failure": 1, "cancelled": 0, "timedOut": 0},
                          stages={"build": {"runs": 6, "retries": 1}, "old": {"runs": 2, "retries": 0}})
    window = {"from": "2026-03-06", "to": "2026-03-12", "successRate": 0.5,
              "runs": {"total": 2, "success": 1, "failure": 0, "cancelled": 0, "timedOut": 1},
              "stages": [{"name": "build", "runs": 3, "retries": 2, "successRate": 0.6667},
                         {"name": "new", "runs": 1, "retries": 0, "successRate": 1.0}]}
    body = cumulative(totals, window)
    assert body["from"] == "2026-03-01" and body["to"] == "2026-03-12" and body["successRate"] == 0.5
    assert body["runs"] == {"total": 7, "success": 5, "failure": 1, "cancelled": 0, "timedOut": 1}
    assert body["stages"] == [{"name": "build", "runs": 9, "retries": 3, "successRate": 0.6667},
                              {"name": "new", "runs": 1, "retries": 0, "successRate": 1.0},
                              {"name": "old", "runs": 2, "retries": 0}]
    assert window["runs"]["total"] == 2 and totals.runs["total"] == 5  # neither is changed
    folded = fold(totals, window, "2026-03-12")
    assert (folded.since, folded.through, folded.runs["timedOut"], folded.stages["new"]) == (
        "2026-03-01", "2026-03-12", 1, {"runs": 1, "retries": 0})
    assert fold(totals, {}, "2026-03-06").runs == totals.runs  # an empty answer adds nothing
    assert WINDOW_DAYS == 7


def test_without_an_endpoint_the_handler_sends_nothing(ctx, monkeypatch):
    from chalicelib.adapters import otlp

    def refuse(*args, **kwargs):
        raise AssertionError("no exporter without an endpoint")

    monkeypatch.setattr(otlp, "OtlpExporter", refuse)
    assert handler.run_export(ctx) is None
    assert ctx.stores.insights.export_totals("web") is None and ctx.metrics.counted == []
