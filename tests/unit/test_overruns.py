"""Overruns and ETA (domain/overruns.py, service/overruns.py; docs/insights.md "Overruns and
ETA"): the expectation read from the day aggregates against a brute force over the raw
durations, the ETA's arithmetic with an injected clock, and on the in-memory store with the
fake clock (no sleeps): the overrun timer fires once per attempt, never after the stage ended,
was retried or its run cancelled, never without history, never past the hard timeout; the
``stage.overrunning`` event's body, decoded from the timer's write as the stream carries it."""
from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.domain import insights as aggregates
from chalicelib.domain import overruns as rules
from chalicelib.domain.clock import format_iso
from chalicelib.domain.events import STAGE_OVERRUNNING
from chalicelib.domain.insights import DayItem, FinishedAttempt
from chalicelib.domain.model import StageSpec, change_status, new_run
from chalicelib.domain.overruns import Expectation, StageStarted
from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
from chalicelib.domain.status import StageStatus as S
from chalicelib.domain.timers import next_due
from chalicelib.domain.views import run_view
from chalicelib.service import commands, overruns, runs
from chalicelib.service import insights as consumer
from chalicelib.service.timers import expire_stage, sweep
from chalicelib.store.models import item_models
from chalicelib.store.repository import stage_to_item
from chalicelib.store.stream import started_stage, state_change
from tests.fixtures.clock import FakeClock

T0 = datetime(2026, 3, 20, 12, tzinfo=UTC)


def nearest_rank(values: list[int], p: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def day_items(durations: dict[str, list[tuple[str, int]]]) -> list[DayItem]:
    """Day items as the consumer adds them: one sample per (day, duration ms) of each name."""
    tallies: dict[tuple[str, str], dict] = {}
    for name, samples in durations.items():
        for day, millis in samples:
            aggregates.add_sample(tallies.setdefault((day, name), {"n": 0}), "d", millis)
    return [DayItem(day=day, stage=name, tally=tally) for (day, name), tally in tallies.items()]


# ---- the expectation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(20))
def test_the_expectation_from_the_buckets_is_the_nearest_rank_within_the_stated_error(seed):
    generator = random.Random(seed)
    count = generator.randint(rules.MIN_SAMPLES, 400)
    values = [int(generator.lognormvariate(11, 1.2)) for _ in range(count)]
    days = [f"2026-03-{generator.randint(7, 20):02d}" for _ in values]
    found = rules.expectations(day_items({"test": list(zip(days, values, strict=True))}), "2026-03-07",
                               "2026-03-20")["test"]
    assert found.samples == count
    for p, got in ((50, found.p50_ms), (95, found.p95_ms)):
        exact = nearest_rank(values, p)
        assert abs(got - exact) <= exact * aggregates.RELATIVE_ERROR + 1, (p, got, exact)


def test_too_little_history_or_history_outside_the_window_gives_no_expectation():
    inside = [("2026-03-20", 60_000)] * (rules.MIN_SAMPLES - 1)
    items = day_items({"short": inside, "old": [("2026-03-06", 60_000)] * 10,
                       "enough": inside + [("2026-03-07", 90_000)]})
    assert rules.window(T0) == ("2026-03-07", "2026-03-20")
    found = rules.expectations(items + [DayItem("2026-03-20", None, {"dN": 50})], *rules.window(T0))
    assert set(found) == {"enough"}  # the runs' own item is no stage
    assert found["enough"].samples == rules.MIN_SAMPLES


def test_a_starting_stage_stores_its_own_name_first_and_at_most_max_names():
    known = {f"s{n:02d}": Expectation(n, n, 5) for n in range(rules.MAX_NAMES + 5)}
    stored = rules.to_store(known, "s36")
    assert len(stored) == rules.MAX_NAMES and list(stored)[0] == "s36" and stored["s36"] == [36, 36, 5]
    assert rules.to_store({}, "s1") == {}


# ---- the ETA ---------------------------------------------------------------------------------------

def pipeline_run(clock, *names, timeout=None):
    specs = [StageSpec(type="OTHER", name=name, timeout_seconds=timeout) for name in names]
    return new_run("web", 1, specs, clock.now())


def test_the_eta_adds_what_is_left_of_running_stages_and_the_p50_of_the_others():
    clock = FakeClock("2026-03-20T12:00:00.000Z")
    aggregate = pipeline_run(clock, "build", "test", "deploy")
    build, test, deploy = aggregate.stages
    change_status(build, S.IN_PROGRESS, clock.now())
    build.expectations = {"build": [100_000, 200_000, 9], "test": [300_000, 400_000, 9],
                          "deploy": [50_000, 60_000, 9]}
    aggregate.rederive(clock.now())
    now = clock.advance(40)
    assert rules.eta(aggregate, now) == now + timedelta(seconds=60 + 300 + 50)
    now = clock.advance(100)  # build is past its p50: nothing more of it is counted
    assert rules.eta(aggregate, now) == now + timedelta(seconds=300 + 50)
    view = run_view(aggregate, now)
    assert view["eta"] == format_iso(now + timedelta(seconds=350))
    assert [s["typicalSeconds"] for s in view["stages"]] == [100.0, 300.0, 50.0]


def test_the_latest_start_gives_the_table_and_a_stage_without_history_leaves_no_eta():
    clock = FakeClock("2026-03-20T12:00:00.000Z")
    aggregate = pipeline_run(clock, "build", "test", "deploy")
    build, test, deploy = aggregate.stages
    change_status(build, S.IN_PROGRESS, clock.now())
    build.expectations = {"build": [10_000, 20_000, 5], "test": [1_000, 2_000, 5]}
    change_status(build, S.SUCCESS, clock.advance(10))
    change_status(test, S.IN_PROGRESS, clock.now())
    test.expectations = {"test": [30_000, 40_000, 5], "deploy": [5_000, 6_000, 5]}
    aggregate.rederive(clock.now())
    assert rules.eta(aggregate, clock.now()) == clock.now() + timedelta(seconds=35)
    assert rules.stage_expectations(aggregate.stages)[build.id].p50_ms == 10_000  # its own
    test.expectations = {"test": [30_000, 40_000, 5]}  # deploy unknown: an ETA would be early
    assert rules.eta(aggregate, clock.now()) is None


def test_a_final_or_stopping_run_or_one_with_no_expectation_has_no_eta():
    clock = FakeClock("2026-03-20T12:00:00.000Z")
    aggregate = pipeline_run(clock, "build")
    assert rules.eta(aggregate, clock.now()) is None  # nothing started: nothing stored yet
    build = aggregate.stages[0]
    change_status(build, S.IN_PROGRESS, clock.now())
    build.expectations = {"build": [10_000, 20_000, 5]}
    aggregate.rederive(clock.now())
    assert rules.eta(aggregate, clock.now()) is not None
    aggregate.run.stopping = {"by": "ops"}
    assert rules.eta(aggregate, clock.now()) is None
    aggregate.run.stopping = None
    change_status(build, S.SUCCESS, clock.advance(5))
    aggregate.rederive(clock.now())
    assert rules.eta(aggregate, clock.now()) is None


def test_the_overrun_comes_only_before_the_hard_deadline():
    clock = FakeClock("2026-03-20T12:00:00.000Z")
    aggregate = pipeline_run(clock, "build", timeout=120)
    build = aggregate.stages[0]
    change_status(build, S.IN_PROGRESS, clock.now())
    assert rules.set_expectations(build, {"build": [60_000, 90_000, 5]})
    assert build.overrun_at == clock.now() + timedelta(seconds=90)
    assert next_due(build) == build.overrun_at  # earlier than the timeout: the stage's timer
    assert not rules.set_expectations(build, {"build": [60_000, 90_000, 5]})  # the same again
    assert rules.set_expectations(build, {"build": [60_000, 120_000, 5]})
    assert build.overrun_at is None and next_due(build) == clock.now() + timedelta(seconds=120)
    assert not rules.set_expectations(build, {"other": [1, 1, 5]})  # nothing of its own


# ---- the service, on the in-memory store ------------------------------------------------------------

def history(ctx, name="build", seconds=(50, 55, 60, 65, 90), pipeline="web", day=None):
    """Finished attempts of ``name`` added to the aggregates as the stream consumer adds them."""
    end = day or ctx.clock.now()
    base = 1000 * (1 + sum(map(ord, name)))  # one past run per attempt (a marker each)
    for n, duration in enumerate(seconds):
        started = end - timedelta(seconds=duration)
        consumer.add_attempt(ctx, FinishedAttempt(
            pipeline=pipeline, run_id=f"{pipeline}:{base + n}", position=1, name=name, status=S.SUCCESS,
            attempt=1, first_attempt=1, created_at=started, started_at=started, ended_at=end))


def create(ctx, *stages, **options):
    body = {"pipeline": "web", "stages": [{"type": "OTHER", "name": s, **options} for s in stages]}
    return runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps(body)))


def start(ctx, stage_id):
    started = runs.patch_stage(ctx, stage_id, PatchStageIn(status=S.IN_PROGRESS))
    return StageStarted("web", started.run_id, started.id, started.name, started.attempt, started.started_at)


def stage(ctx, stage_id):
    return ctx.stores.runs.get_stage(stage_id)


def test_an_overrun_fires_once_for_the_attempt_still_running(memory_ctx, clock):
    ctx = memory_ctx
    history(ctx)  # p50 60 s, p95 90 s over 5 attempts
    run = create(ctx, "build", "deploy")
    started = start(ctx, "web:1:1")
    assert overruns.expect_start(ctx, started) == overruns.WRITTEN
    assert overruns.expect_start(ctx, started) == overruns.WRITTEN  # redelivered: nothing new
    expected = stage(ctx, "web:1:1")
    assert expected.overrun_at == started.started_at + timedelta(seconds=rules.Expectation.of(
        expected.expectations["build"]).p95_ms / 1000)
    clock.advance(89)
    assert sweep(ctx).fired == {}
    assert expire_stage(ctx, "web:1:1", 1) is None  # not yet
    clock.advance(2)
    assert sweep(ctx).fired == {"IN_PROGRESS": 1}
    assert stage(ctx, "web:1:1").overrunning_at == expected.overrun_at
    assert expire_stage(ctx, "web:1:1", 1) is None  # a duplicate timer: once per attempt
    assert sweep(ctx).fired == {}
    view = run_view(runs.get_run(ctx, run.run.id), clock.now())
    assert view["stages"][0]["overrunningAt"] == format_iso(expected.overrun_at)
    assert view["eta"] is None  # deploy has no history


def test_no_overrun_after_the_end_a_retry_or_a_cancel(memory_ctx, clock):
    ctx = memory_ctx
    history(ctx)
    create(ctx, "build")
    overruns.expect_start(ctx, start(ctx, "web:1:1"))
    clock.advance(30)
    runs.patch_stage(ctx, "web:1:1", PatchStageIn(status=S.FAILURE))
    clock.advance(120)
    assert expire_stage(ctx, "web:1:1", 1) is None and stage(ctx, "web:1:1").overrunning_at is None

    create(ctx, "build")
    first = start(ctx, "web:2:1")
    overruns.expect_start(ctx, first)
    runs.patch_stage(ctx, "web:2:1", PatchStageIn(status=S.FAILURE))
    commands.execute(ctx, commands.RetryStage("web:2:1"), actor="ops")
    retried = stage(ctx, "web:2:1")
    assert (retried.attempt, retried.overrun_at, retried.overrunning_at) == (2, None, None)
    assert overruns.expect_start(ctx, first) == overruns.STALE  # the old attempt's record, late
    clock.advance(200)
    assert expire_stage(ctx, "web:2:1", 1) is None and expire_stage(ctx, "web:2:1", 2) is None

    create(ctx, "build")
    overruns.expect_start(ctx, start(ctx, "web:3:1"))
    commands.execute(ctx, commands.CancelRun("web:3"), actor="ops")
    clock.advance(200)
    assert expire_stage(ctx, "web:3:1", 1) is None and stage(ctx, "web:3:1").overrunning_at is None


def test_no_overrun_without_history_or_past_the_hard_timeout(memory_ctx, clock):
    ctx = memory_ctx
    history(ctx, seconds=(50, 55, 60, 65))  # 4 attempts: too few
    create(ctx, "build")
    assert overruns.expect_start(ctx, start(ctx, "web:1:1")) == overruns.NO_HISTORY
    assert stage(ctx, "web:1:1").expectations is None
    history(ctx, name="slow", seconds=(100, 110, 120, 130, 140))
    create(ctx, "slow", timeoutSeconds=120)
    assert overruns.expect_start(ctx, start(ctx, "web:2:1")) == overruns.WRITTEN
    slow = stage(ctx, "web:2:1")
    assert slow.expectations["slow"][0] > 0 and slow.overrun_at is None  # p95 140 s > timeout 120 s
    clock.advance(121)
    assert expire_stage(ctx, "web:2:1", 1) == S.TIMED_OUT
    assert stage(ctx, "web:2:1").overrunning_at is None


def test_the_expectation_is_never_written_over_a_newer_change(memory_ctx, clock):
    ctx = memory_ctx
    history(ctx)
    create(ctx, "build")
    started = start(ctx, "web:1:1")
    read = stage(ctx, "web:1:1")
    runs.patch_stage(ctx, "web:1:1", PatchStageIn(status=S.SUCCESS))  # ends between read and write
    read.expectations = {"build": [1, 2, 5]}
    assert ctx.stores.runs.record_expectations(read) is False
    assert stage(ctx, "web:1:1").expectations is None
    assert overruns.expect_start(ctx, started) == overruns.STALE


def test_the_eta_on_the_run_view_reads_nothing_more(memory_ctx, clock):
    ctx = memory_ctx
    history(ctx)
    history(ctx, name="deploy", seconds=(20, 20, 20, 20, 20))
    run = create(ctx, "build", "deploy")
    overruns.expect_start(ctx, start(ctx, "web:1:1"))
    clock.advance(10)
    view = run_view(runs.get_run(ctx, run.run.id), clock.now())
    p50 = {s["name"]: s["typicalSeconds"] for s in view["stages"]}
    assert p50["deploy"] == pytest.approx(20, rel=aggregates.RELATIVE_ERROR)
    assert view["eta"] == format_iso(clock.now() + timedelta(seconds=p50["build"] - 10 + p50["deploy"]))


# ---- the stream: the start's record, the timer's record and its event ------------------------------

def image(stage) -> dict:
    return stage_to_item(item_models("stagetrack-test", "us-east-1", None).stage, stage).serialize()


def record(event, new, old=None):
    images = {"NewImage": new, **({"OldImage": old} if old is not None else {})}
    return {"eventName": event, "dynamodb": images}


def test_only_a_new_start_is_a_start_and_the_overrun_is_one_event_with_its_body():
    clock = FakeClock("2026-03-20T12:00:00.000Z")
    aggregate = pipeline_run(clock, "build", timeout=600)
    build = aggregate.stages[0]
    build.version = 1
    idle = image(build)
    change_status(build, S.IN_PROGRESS, clock.now())
    build.version = 2
    running = image(build)
    assert started_stage(record("MODIFY", running, idle)) == StageStarted(
        "web", "web:1", "web:1:1", "build", 1, clock.now())
    born_running = started_stage(record("INSERT", running))  # a sender's stage seen running first
    assert born_running == started_stage(record("MODIFY", running, idle))
    assert started_stage(record("MODIFY", idle, running)) is None
    assert started_stage(record("REMOVE", running)) is None
    rules.set_expectations(build, {"build": [60_000, 90_000, 7]})
    build.version = 3
    expected = image(build)
    assert started_stage(record("MODIFY", expected, running)) is None  # the consumer's own write
    assert state_change(record("MODIFY", expected, running), clock.now()) is None  # no event either
    rules.notice_overrun(build, clock.advance(91))
    build.version = 4
    overran = image(build)
    change = state_change(record("MODIFY", overran, expected), clock.now())
    assert change.type == STAGE_OVERRUNNING and (change.old_status, change.new_status) == (
        "IN_PROGRESS", "IN_PROGRESS")
    assert change.as_dict() == {
        "id": change.id, "type": "stage.overrunning", "time": "2026-03-20T12:01:31.000Z",
        "pipeline": "web", "runId": "web:1", "stageId": "web:1:1", "stageName": "build",
        "oldStatus": "IN_PROGRESS", "newStatus": "IN_PROGRESS", "attempt": 1,
        "overrun": {"startedAt": "2026-03-20T12:00:00.000Z", "elapsedSeconds": 91.0,
                    "expectedSeconds": {"p50": 60.0, "p95": 90.0}, "samples": 7,
                    "timeoutAt": "2026-03-20T12:10:00.000Z"}}
    assert state_change(record("MODIFY", overran, overran), clock.now()) is None  # nothing newly noticed


# ---- edges ------------------------------------------------------------------------------------------

def test_a_stored_expectation_reads_back_only_when_well_formed():
    assert Expectation.of([0, 1, 5]) == Expectation(0, 1, 5)  # a 0 ms stage is a duration too
    for bad in ([-1, 2, 5], [1, -2, 5], ["1", 2, 5], [True, 2, 5], [1, 2], None, {"p50": 1}):
        assert Expectation.of(bad) is None, bad


def test_equal_durations_give_equal_percentiles_and_a_tally_without_counts_gives_none():
    same = rules.expectations(day_items({"build": [("2026-03-20", 60_000)] * 5}), "2026-03-20", "2026-03-20")
    build = same["build"]
    assert build.p50_ms == build.p95_ms == pytest.approx(60_000, rel=aggregates.RELATIVE_ERROR)
    bucket = "d" + aggregates.bucket_of(60_000)
    assert rules.expectations([DayItem("2026-03-20", "build", {bucket: 9})], "2026-03-20", "2026-03-20") == {}


def test_no_overrun_for_a_stage_not_running_or_without_a_start_and_one_exactly_at_its_moment():
    clock = FakeClock("2026-03-20T12:00:00.000Z")
    build = pipeline_run(clock, "build").stages[0]
    build.expectations = {"build": [1_000, 2_000, 5]}
    build.status = S.IN_PROGRESS  # a sender's running stage without a start time
    assert rules.overrun_due(build) is None
    build.started_at = clock.now()
    assert rules.overrun_due(build) == clock.now() + timedelta(seconds=2)
    build.overrun_at = rules.overrun_due(build)
    assert rules.notice_overrun(build, build.overrun_at)  # at its very moment
    change_status(build, S.SUCCESS, clock.advance(3))
    assert rules.overrun_due(build) is None and rules.pending_overrun(build) is None


def test_parallel_running_stages_add_up_and_a_later_start_without_expectations_keeps_the_table():
    clock = FakeClock("2026-03-20T12:00:00.000Z")
    aggregate = pipeline_run(clock, "a", "b", "c")
    a, b, c = aggregate.stages
    change_status(a, S.IN_PROGRESS, clock.now())
    a.expectations = {"a": [10_000, 20_000, 5], "b": [30_000, 40_000, 5], "c": [5_000, 6_000, 5]}
    change_status(b, S.IN_PROGRESS, clock.advance(1))  # the consumer has not got to b yet
    aggregate.rederive(clock.now())
    now = clock.advance(4)
    assert rules.eta(aggregate, now) == now + timedelta(seconds=(10 - 5) + (30 - 4) + 5)
    c.status, c.started_at = S.WAITING_FOR_APPROVAL, a.started_at  # not running: its whole p50
    assert rules.eta(aggregate, now) == now + timedelta(seconds=(10 - 5) + (30 - 4) + 5)


def test_a_batch_reads_each_pipelines_history_once(memory_ctx, clock, monkeypatch):
    """The starts of one stream batch share the window's read: three runs' starts of one pipeline
    cost one ``read_days``, a second pipeline's start one more."""
    ctx = memory_ctx
    history(ctx)
    history(ctx, pipeline="api")
    for _ in range(3):
        create(ctx, "build")
    ctx_api = runs.create_run(ctx, CreateRunIn.model_validate_json(
        json.dumps({"pipeline": "api", "stages": [{"type": "OTHER", "name": "build"}]})))
    records = []
    for stage_id in ("web:1:1", "web:2:1", "web:3:1"):
        before = image(stage(ctx, stage_id))
        start(ctx, stage_id)
        records.append(record("MODIFY", image(stage(ctx, stage_id)), before))
    before = image(stage(ctx, ctx_api.stages[0].id))
    runs.patch_stage(ctx, ctx_api.stages[0].id, PatchStageIn(status=S.IN_PROGRESS))
    records.append(record("MODIFY", image(stage(ctx, ctx_api.stages[0].id)), before))
    reads = []
    real = ctx.stores.insights.read_days
    monkeypatch.setattr(ctx.stores.insights, "read_days", lambda *a: reads.append(a[0]) or real(*a))
    report = overruns.expect(ctx, records)
    assert (report.starts, report.written) == (4, 4)
    assert reads == ["web", "api"]
    assert all(stage(ctx, s).overrun_at is not None for s in ("web:1:1", "web:2:1", "web:3:1"))
