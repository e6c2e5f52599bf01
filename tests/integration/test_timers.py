"""Timers with the FakeClock: live durations, timeouts, stale timers, the run driver,
expectedSeconds, and the sweeper reading only active items."""
from __future__ import annotations

import json

import pytest

from chalicelib.domain.clock import format_iso
from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
from chalicelib.domain.status import StageStatus
from chalicelib.service import runs
from chalicelib.service.timers import expire_stage, sweep
from chalicelib.store.models import ACTIVE_SHARDS
from tests.fixtures.backends import items_of
from tests.fixtures.history import write_finished_history

S = StageStatus


def create(ctx, **body):
    body.setdefault("pipeline", "web")
    return runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps(body)))


def patch(ctx, stage_id, **fields):
    return runs.patch_stage(ctx, stage_id, PatchStageIn.model_validate_json(json.dumps(fields)))


def statuses(ctx, run_id):
    aggregate = runs.get_run(ctx, run_id)
    return aggregate.run.status.value, [s.status.value for s in aggregate.stages]


# ---- live durations ----------------------------------------------------------------------------

def test_running_stage_and_run_show_live_duration_then_freeze(client, clock):
    run = client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD", "UNIT_TEST"]}).json
    build = run["stages"][0]["id"]
    assert client.get(f"/api/stages/{build}").json["duration"] is None

    assert client.patch(f"/api/stages/{build}", {"status": "IN_PROGRESS"}).status_code == 200
    clock.advance(12.5)
    stage = client.get(f"/api/stages/{build}").json
    assert (stage["status"], stage["duration"]) == ("IN_PROGRESS", 12.5)
    assert client.get(f"/api/runs/{run['id']}").json["duration"] == 12.5
    assert client.get(f"/api/stages?runId={run['id']}").json[0]["duration"] == 12.5
    clock.advance(7.5)
    assert client.get(f"/api/stages/{build}").json["duration"] == 20

    client.patch(f"/api/stages/{build}", {"status": "SUCCESS"})
    clock.advance(100)
    assert client.get(f"/api/stages/{build}").json["duration"] == 20
    body = client.get(f"/api/runs/{run['id']}").json
    assert (body["status"], body["duration"]) == ("IN_PROGRESS", 120)  # the run is still going


# ---- timeouts ---------------------------------------------------------------------------------

def test_stage_times_out_exactly_at_its_deadline_and_the_run_follows(ctx, clock, ddb_calls):
    aggregate = create(ctx, stages=[{"type": "BUILD", "timeoutSeconds": 60}, "DEPLOY_PROD"])
    build = aggregate.stages[0].id
    started = patch(ctx, build, status="IN_PROGRESS").started_at

    clock.advance(59.999)
    ddb_calls.clear()
    assert expire_stage(ctx, build, 1) is None
    assert ddb_calls.get("TransactWriteItems", 0) == 0  # too early: read, no write

    clock.advance(30)  # the timer runs late
    assert expire_stage(ctx, build, 1) == S.TIMED_OUT
    stage = ctx.stores.runs.get_stage(build)
    assert stage.status == S.TIMED_OUT
    assert stage.ended_at == started.replace(minute=started.minute + 1)  # at the deadline...
    assert stage.duration_ms == 60_000                                  # ...so exactly 60 s
    assert stage.updated_at == clock.now()                               # written now
    assert statuses(ctx, aggregate.run.id) == ("TIMED_OUT", ["TIMED_OUT", "IDLE"])
    assert ddb_calls["TransactWriteItems"] == 1


def test_run_default_timeout_applies_to_every_stage(ctx, clock):
    aggregate = create(ctx, stages=["BUILD", {"type": "DEPLOY_PROD", "timeoutSeconds": 600}],
                       timeoutSeconds=30)
    build, prod = (s.id for s in aggregate.stages)
    assert [s.timeout_seconds for s in aggregate.stages] == [30, 600]
    patch(ctx, build, status="IN_PROGRESS")
    clock.advance(30)
    assert expire_stage(ctx, build, 1) == S.TIMED_OUT


def test_waiting_for_approval_times_out_too(ctx, clock):
    aggregate = create(ctx, stages=[{"type": "DEPLOY_PROD", "approval": "MANUAL", "timeoutSeconds": 300}])
    prod = aggregate.stages[0].id
    assert patch(ctx, prod, status="IN_PROGRESS").status == S.WAITING_FOR_APPROVAL
    clock.advance(300)
    assert expire_stage(ctx, prod, 1) == S.TIMED_OUT
    assert statuses(ctx, aggregate.run.id) == ("TIMED_OUT", ["TIMED_OUT"])
    assert ctx.stores.runs.get_stage(prod).duration_ms is None  # it never ran


def test_timed_out_stage_shows_its_deadline_on_the_wire(client, clock):
    run = client.post(
        "/api/runs", {"pipeline": "web", "stages": [{"type": "BUILD", "timeoutSeconds": 90}]}
    ).json
    stage_id = run["stages"][0]["id"]
    assert run["stages"][0]["timesOutAt"] is None  # not started: no deadline yet
    started = client.patch(f"/api/stages/{stage_id}", {"status": "IN_PROGRESS"}).json
    assert started["timesOutAt"] == format_iso(clock.advance(90))


# ---- stale timers: no write at all ------------------------------------------------------------

def test_timer_of_a_stage_already_final_does_nothing(ctx, clock, ddb_calls):
    aggregate = create(ctx, stages=[{"type": "BUILD", "timeoutSeconds": 60}])
    build = aggregate.stages[0].id
    patch(ctx, build, status="IN_PROGRESS")
    clock.advance(10)
    done = patch(ctx, build, status="SUCCESS")
    clock.advance(3600)
    ddb_calls.clear()
    assert expire_stage(ctx, build, 1) is None
    assert ddb_calls.get("TransactWriteItems", 0) == 0
    assert ctx.stores.runs.get_stage(build) == done


def test_timer_of_an_older_attempt_does_nothing(ctx, clock, ddb_calls):
    aggregate = create(ctx, stages=[{"type": "BUILD", "timeoutSeconds": 60}])
    build = aggregate.stages[0].id
    patch(ctx, build, status="IN_PROGRESS")
    clock.advance(61)

    def second_attempt(agg):  # what a retry does: a new attempt of the same stage, running now
        stage = agg.stage(build)
        stage.attempt = 2
        stage.started_at = clock.now()
        return True

    runs.mutate_run(ctx, aggregate.run.id, second_attempt)
    ddb_calls.clear()
    assert expire_stage(ctx, build, 1) is None   # the first attempt's timer, late
    assert ddb_calls.get("TransactWriteItems", 0) == 0
    assert ctx.stores.runs.get_stage(build).status == S.IN_PROGRESS
    clock.advance(60)
    assert expire_stage(ctx, build, 2) == S.TIMED_OUT  # the second attempt's own timer


def test_timer_whose_deadline_moved_later_does_nothing_until_the_new_deadline(ctx, clock, ddb_calls):
    aggregate = create(ctx, stages=[{"type": "BUILD", "timeoutSeconds": 60}])
    build = aggregate.stages[0].id
    patch(ctx, build, status="IN_PROGRESS")
    clock.advance(30)
    patch(ctx, build, timeoutSeconds=600)
    clock.advance(31)
    ddb_calls.clear()
    assert expire_stage(ctx, build, 1) is None
    assert ddb_calls.get("TransactWriteItems", 0) == 0
    clock.advance(600 - 61)
    assert expire_stage(ctx, build, 1) == S.TIMED_OUT


def test_timer_of_a_deleted_run_or_stage_or_a_garbage_id_does_nothing(ctx, clock):
    aggregate = create(
        ctx, stages=[{"type": "BUILD", "timeoutSeconds": 1}, {"type": "OTHER", "timeoutSeconds": 1}]
    )
    build, other = (s.id for s in aggregate.stages)
    patch(ctx, build, status="IN_PROGRESS")
    clock.advance(5)
    runs.delete_stage(ctx, other)
    assert expire_stage(ctx, other, 1) is None
    runs.delete_run(ctx, aggregate.run.id)
    assert expire_stage(ctx, build, 1) is None
    assert expire_stage(ctx, "not a stage id", 1) is None


# ---- the run driver (autoAdvance) -------------------------------------------------------------

def test_auto_advance_starts_the_next_stage_in_the_same_transaction(ctx, clock, ddb_calls):
    aggregate = create(ctx, stages=["BUILD", "UNIT_TEST", {"type": "DEPLOY_PROD", "approval": "MANUAL"}],
                       autoAdvance=True)
    assert aggregate.run.auto_advance is True
    build, test, prod = (s.id for s in aggregate.stages)
    assert statuses(ctx, aggregate.run.id) == ("IDLE", ["IDLE", "IDLE", "IDLE"])  # not at creation

    patch(ctx, build, status="IN_PROGRESS")
    clock.advance(5)
    ddb_calls.clear()
    patch(ctx, build, status="SUCCESS")
    assert ddb_calls["TransactWriteItems"] == 1
    assert statuses(ctx, aggregate.run.id) == ("IN_PROGRESS", ["SUCCESS", "IN_PROGRESS", "IDLE"])
    assert ctx.stores.runs.get_stage(test).started_at == clock.now()

    patch(ctx, test, status="SUCCESS")  # a MANUAL stage goes to its gate, not further
    assert statuses(ctx, aggregate.run.id) == (
        "WAITING_FOR_APPROVAL",
        ["SUCCESS", "SUCCESS", "WAITING_FOR_APPROVAL"],
    )


def test_auto_advance_skips_skipped_stages_and_stops_at_a_failure(ctx, clock):
    aggregate = create(
        ctx, stages=["BUILD", "UNIT_TEST", "INTEGRATION_TEST", "DEPLOY_PROD"], autoAdvance=True
    )
    build, unit, integration, prod = (s.id for s in aggregate.stages)
    patch(ctx, unit, status="SKIPPED")
    assert statuses(ctx, aggregate.run.id)[1] == ["IDLE", "SKIPPED", "IDLE", "IDLE"]  # nothing succeeded yet
    patch(ctx, build, status="IN_PROGRESS")
    patch(ctx, build, status="SUCCESS")
    assert statuses(ctx, aggregate.run.id)[1] == ["SUCCESS", "SKIPPED", "IN_PROGRESS", "IDLE"]
    patch(ctx, integration, status="FAILURE")
    assert statuses(ctx, aggregate.run.id) == ("FAILURE", ["SUCCESS", "SKIPPED", "FAILURE", "IDLE"])


def test_without_auto_advance_nothing_starts_by_itself(ctx, clock):
    aggregate = create(ctx, stages=["BUILD", "UNIT_TEST"])
    assert aggregate.run.auto_advance is False
    patch(ctx, aggregate.stages[0].id, status="IN_PROGRESS")
    patch(ctx, aggregate.stages[0].id, status="SUCCESS")
    assert statuses(ctx, aggregate.run.id)[1] == ["SUCCESS", "IDLE"]


def test_auto_advance_is_on_the_wire_and_validated(client):
    body = client.post("/api/runs", {"pipeline": "web", "autoAdvance": True,
                                     "stages": [{"type": "BUILD", "expectedSeconds": 5}]}).json
    assert body["autoAdvance"] is True
    assert body["stages"][0]["expectedSeconds"] == 5
    assert client.get(f"/api/runs/{body['id']}").json["autoAdvance"] is True
    for bad in ({"autoAdvance": "true"}, {"autoAdvance": 1},
                {"stages": [{"type": "BUILD", "expectedSeconds": 0}]},
                {"stages": [{"type": "BUILD", "expectedSeconds": "5"}]}):
        response = client.post("/api/runs", {"pipeline": "web", **bad})
        assert response.status_code in (400, 422), bad
        assert response.json["error"]["code"]


# ---- expectedSeconds: a pipeline that runs by itself ------------------------------------------

def test_a_simulated_pipeline_runs_to_the_end_by_itself(ctx, clock):
    aggregate = create(ctx, autoAdvance=True, stages=[
        {"type": "BUILD", "expectedSeconds": 5},
        {"type": "UNIT_TEST", "expectedSeconds": 10},
        {"type": "DEPLOY_STAGING", "expectedSeconds": 3},
    ])
    run_id = aggregate.run.id
    patch(ctx, aggregate.stages[0].id, status="IN_PROGRESS")
    for _ in range(25):  # one sweep a second, as the local ticker does
        clock.advance(1)
        sweep(ctx)
    loaded = runs.get_run(ctx, run_id)
    assert loaded.run.status == S.SUCCESS
    assert [s.duration_ms for s in loaded.stages] == [5000, 10_000, 3000]
    assert loaded.run.duration_ms == 18_000  # each due moment fell on a tick: no gaps


def test_expected_seconds_beyond_the_timeout_simulates_a_timeout(ctx, clock):
    aggregate = create(ctx, stages=[{"type": "BUILD", "expectedSeconds": 120, "timeoutSeconds": 60}])
    build = aggregate.stages[0].id
    patch(ctx, build, status="IN_PROGRESS")
    clock.advance(500)  # a very late timer: the timeout came first
    assert expire_stage(ctx, build, 1) == S.TIMED_OUT
    assert ctx.stores.runs.get_stage(build).duration_ms == 60_000


def test_expected_end_before_the_timeout_succeeds_even_when_the_timer_is_late(ctx, clock):
    aggregate = create(ctx, stages=[{"type": "BUILD", "expectedSeconds": 20, "timeoutSeconds": 60}])
    build = aggregate.stages[0].id
    patch(ctx, build, status="IN_PROGRESS")
    clock.advance(19)
    assert expire_stage(ctx, build, 1) is None
    clock.advance(100)
    assert expire_stage(ctx, build, 1) == S.SUCCESS
    assert ctx.stores.runs.get_stage(build).duration_ms == 20_000


# ---- the sweeper ------------------------------------------------------------------------------

def test_sweep_fires_only_due_timers(any_ctx, clock):
    aggregate = create(any_ctx, stages=[
        {"type": "BUILD", "timeoutSeconds": 10},
        {"type": "UNIT_TEST", "timeoutSeconds": 100},
        {"type": "OTHER"},  # running without any timer
        {"type": "DEPLOY_PROD", "expectedSeconds": 10},
    ])
    ids = [s.id for s in aggregate.stages]
    for stage_id in ids:
        patch(any_ctx, stage_id, status="IN_PROGRESS")
    clock.advance(10)
    report = sweep(any_ctx)
    assert report.fired == {"TIMED_OUT": 1, "SUCCESS": 1}
    assert (report.due, report.items_read, report.stale, report.failed) == (2, 2, 0, 0)
    assert statuses(any_ctx, aggregate.run.id)[1] == ["TIMED_OUT", "IN_PROGRESS", "IN_PROGRESS", "SUCCESS"]
    again = sweep(any_ctx)
    assert (again.due, again.fired) == (0, {})


def test_sweep_stops_at_its_limit_and_the_next_sweep_does_the_rest(ctx, clock):
    aggregate = create(
        ctx, stages=[{"type": "OTHER", "name": f"s{i}", "timeoutSeconds": 5} for i in range(5)]
    )
    for stage in aggregate.stages:
        patch(ctx, stage.id, status="IN_PROGRESS")
    clock.advance(5)
    first = sweep(ctx, limit=3)
    assert (first.due, first.truncated) == (3, True)
    second = sweep(ctx, limit=3)
    assert (second.due, second.truncated) == (2, False)
    assert statuses(ctx, aggregate.run.id)[1] == ["TIMED_OUT"] * 5


def _sweep_reads(ctx, clock, ddb_calls) -> tuple:
    """Three running stages, two of them due; returns what one sweep read."""
    aggregate = create(ctx, stages=[{"type": "BUILD", "timeoutSeconds": 10},
                                    {"type": "UNIT_TEST", "timeoutSeconds": 10},
                                    {"type": "OTHER", "timeoutSeconds": 1000}])
    for stage in aggregate.stages:
        patch(ctx, stage.id, status="IN_PROGRESS")
    clock.advance(10)
    ddb_calls.clear()
    report = sweep(ctx)
    return report.queries, report.items_read, report.due, dict(ddb_calls)


@pytest.mark.ddb_local
@pytest.mark.parametrize("history", [10, 2_000])
def test_sweeper_reads_only_active_items_however_long_the_history(local_ctx, clock, ddb_calls, history):
    """On DynamoDB Local: its ScannedCount is a real engine's, and moto copies the whole table
    on every transaction, which makes 2,000 items too slow there (200 times the short history:
    the reads stay the same)."""
    ctx = local_ctx
    write_finished_history(items_of(ctx), clock, history, threads=8)
    queries, items_read, due, calls = _sweep_reads(ctx, clock, ddb_calls)
    assert (queries, items_read, due) == (ACTIVE_SHARDS, 2, 2)
    assert "Scan" not in calls
    # ACTIVE_SHARDS index Queries, then per due stage: 1 Query (its run) + 1 transaction; then
    # 1 Query of the concurrency groups with waiting runs (service/concurrency.py: none here).
    assert calls == {"Query": ACTIVE_SHARDS + 2 + 1, "TransactWriteItems": 2}
