"""Automatic retry policies through the native API on moto (domain/retries.py): declared at
create (422 out of bounds, nothing created), a failure answered RETRY_PENDING with its moment,
the run's status and index, the stage timer starting the attempt (FakeClock), the retry events
on the change stream, a cancel winning and a manual retry taking the pending one, and how the
dialects show a pending retry."""
from __future__ import annotations

import pytest

from chalicelib.domain.events import RETRY_SCHEDULED, RETRY_STARTED, STAGE_CHANGED
from chalicelib.service.timers import expire_stage, sweep
from chalicelib.store.stream import armed_timer, state_change

BUILD = {"type": "BUILD", "timeoutSeconds": 60, "retry": {"max": 2, "when": ["FAILURE", "TIMED_OUT"],
                                                         "backoffSeconds": 30}}


def create(client, *stages, pipeline="web"):
    body = {"pipeline": pipeline, "stages": list(stages or (BUILD, "DEPLOY_PROD"))}
    created = client.post("/api/runs", body)
    assert created.status_code == 201, created.json
    return created.json["id"], [s["id"] for s in created.json["stages"]]


def status(client, stage, value):
    response = client.patch(f"/api/stages/{stage}", {"status": value})
    assert response.status_code == 200, response.json
    return response.json


def test_the_policy_is_declared_at_create_and_shown_on_the_stage(client):
    run, (build, prod) = create(client, {"type": "BUILD", "retry": 3}, "DEPLOY_PROD")
    shown = client.get(f"/api/stages/{build}").json
    assert (shown["retry"], shown["autoRetries"], shown["nextRetryAt"], shown["retryReason"]) == (
        {"max": 3, "when": ["FAILURE", "TIMED_OUT"], "backoffSeconds": 0}, 0, None, None)
    assert client.get(f"/api/stages/{prod}").json["retry"] is None


@pytest.mark.parametrize("retry, field", [
    ({"max": 11}, "].retry.max"),
    ({"max": 2, "when": ["CANCELLED"]}, "].retry.when.0"),
    ({"max": 2, "when": ["FAILURE", "FAILURE"]}, "].retry.when"),
    ({"max": 2, "backoffSeconds": 7200}, "].retry.backoffSeconds"),
    (0, "].retry.max"),
])
def test_a_policy_out_of_bounds_is_a_422_and_creates_nothing(client, retry, field):
    response = client.post("/api/runs", {"pipeline": "bounds", "stages": [{"type": "BUILD", "retry": retry}]})
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "validation_failed"
    fields = [d["field"] for d in response.json["error"]["details"]]
    assert any(f.startswith("stages.0.") and f.endswith(field) for f in fields), fields
    assert client.get("/api/runs?pipeline=bounds").json["items"] == []


def test_a_failure_is_retried_after_the_backoff_by_the_stage_timer(client, ctx, clock):
    from tests.fixtures import StreamReader

    stream = StreamReader(ctx.settings.table_name)
    run, (build, _) = create(client)
    status(client, build, "IN_PROGRESS")
    stream.read()
    clock.advance(4)
    failed = status(client, build, "FAILURE")
    assert (failed["status"], failed["attempt"], failed["autoRetries"], failed["retryReason"],
            failed["startedAt"], failed["nextRetryAt"]) == (
        "RETRY_PENDING", 2, 1, "FAILURE", None, "2026-03-20T17:17:47.760Z")
    shown = client.get(f"/api/runs/{run}?include=attempts").json
    assert (shown["status"], shown["endedAt"]) == ("RETRY_PENDING", None)
    assert [(a["attempt"], a["status"], a["duration"]) for a in shown["stages"][0]["attempts"]] == [
        (1, "FAILURE", 4)]
    listed = client.get("/api/runs?pipeline=web&status=RETRY_PENDING").json["items"]
    assert [r["id"] for r in listed] == [run]  # the byPipelineStatus index follows

    records = stream.read()
    assert [t.due_at for t in (armed_timer(r) for r in records) if t is not None] == [
        "2026-03-20T17:17:47.760Z"]  # the timer the armer starts (Step Functions on AWS)
    changes = [c for c in (state_change(r, clock.now()) for r in records) if c is not None]
    scheduled = [c for c in changes if c.stage_id == build]
    assert [(c.type, c.old_status, c.new_status, c.attempt) for c in scheduled] == [
        (RETRY_SCHEDULED, "IN_PROGRESS", "RETRY_PENDING", 2)]
    assert scheduled[0].as_dict()["retry"] == {"number": 1, "max": 2, "at": "2026-03-20T17:17:47.760Z",
                                               "reason": "FAILURE"}

    clock.advance(29)
    assert expire_stage(ctx, build, 2) is None  # not yet
    clock.advance(1)
    assert sweep(ctx).fired == {"IN_PROGRESS": 1}
    started = client.get(f"/api/stages/{build}").json
    assert (started["status"], started["attempt"], started["startedAt"], started["nextRetryAt"],
            started["timesOutAt"]) == ("IN_PROGRESS", 2, "2026-03-20T17:17:47.760Z", None,
                                       "2026-03-20T17:18:47.760Z")
    records = stream.read()
    changes = [c for c in (state_change(r, clock.now()) for r in records) if c is not None]
    assert [(c.type, c.old_status, c.new_status, c.attempt, c.retry) for c in changes if c.stage_id] == [
        (RETRY_STARTED, "RETRY_PENDING", "IN_PROGRESS", 2, {"number": 1, "max": 2})]
    assert [t.due_at for t in (armed_timer(r) for r in records) if t is not None] == [
        "2026-03-20T17:18:47.760Z"]  # its timeout

    clock.advance(60)  # the second attempt times out: retry 2 of 2 after 60 s
    assert sweep(ctx).fired == {"TIMED_OUT": 1}
    pending = client.get(f"/api/stages/{build}").json
    assert (pending["status"], pending["attempt"], pending["retryReason"], pending["nextRetryAt"]) == (
        "RETRY_PENDING", 3, "TIMED_OUT", "2026-03-20T17:19:47.760Z")
    clock.advance(60)
    sweep(ctx)
    status(client, build, "FAILURE")  # no retry left: the run fails
    assert client.get(f"/api/runs/{run}").json["status"] == "FAILURE"
    history = client.get(f"/api/stages/{build}/attempts").json["items"]
    assert [(a["attempt"], a["status"]) for a in history] == [(2, "TIMED_OUT"), (1, "FAILURE")]


def test_a_cancel_wins_over_a_pending_retry(client, ctx, clock):
    from tests.fixtures import StreamReader

    stream = StreamReader(ctx.settings.table_name)
    run, (build, prod) = create(client)
    status(client, build, "IN_PROGRESS")
    status(client, build, "FAILURE")
    stream.read()
    cancelled = client.post(f"/api/stages/{build}/cancel", {"reason": "not today"})
    assert cancelled.status_code == 200, cancelled.json
    assert (cancelled.json["status"], cancelled.json["attempt"], cancelled.json["nextRetryAt"]) == (
        "CANCELLED", 2, None)
    changes = [c for c in (state_change(r, clock.now()) for r in stream.read()) if c is not None]
    assert (STAGE_CHANGED, build, "RETRY_PENDING", "CANCELLED") in [
        (c.type, c.stage_id, c.old_status, c.new_status) for c in changes]
    clock.advance(3600)
    assert expire_stage(ctx, build, 2) is None
    shown = client.get(f"/api/runs/{run}").json
    assert (shown["status"], [s["status"] for s in shown["stages"]]) == (
        "CANCELLED", ["CANCELLED", "SKIPPED"])


def test_a_manual_retry_takes_the_pending_retry(client, ctx, clock):
    run, (build, _) = create(client)
    status(client, build, "IN_PROGRESS")
    status(client, build, "FAILURE")
    retried = client.post(f"/api/stages/{build}/retry")
    assert retried.status_code == 200, retried.json
    assert (retried.json["status"], retried.json["attempt"], retried.json["autoRetries"],
            retried.json["nextRetryAt"]) == ("IDLE", 2, 1, None)
    clock.advance(30)
    assert expire_stage(ctx, build, 2) is None  # its timer finds nothing to start
    assert client.get(f"/api/stages/{build}").json["attempt"] == 2
    assert client.post(f"/api/runs/{run}/retry").json["error"]["code"] == "nothing_to_retry"


def test_the_dialects_show_a_pending_retry_as_scheduled(client):
    run, (build, _) = create(client, BUILD, "DEPLOY_PROD", pipeline="myPipeline")
    status(client, build, "IN_PROGRESS")
    status(client, build, "FAILURE")
    history = client.get("/go/api/pipelines/myPipeline/history").json
    stage = history["pipelines"][0]["stages"][0]
    assert (stage["result"], stage["jobs"][0]["state"], stage["counter"], stage["can_run"]) == (
        "Unknown", "Scheduled", "2", True)


def test_scheduling_and_starting_a_retry_cost_what_a_stage_change_costs(client, ctx, clock, ddb_calls):
    """The failure that schedules the retry is the PATCH's own change of one stage (the ended
    attempt's item joins its transaction); the timer's start costs what any timer does (the
    run's Query, one transaction)."""
    _, (build, _) = create(client)
    status(client, build, "IN_PROGRESS")
    ddb_calls.clear()
    assert status(client, build, "FAILURE")["status"] == "RETRY_PENDING"
    assert dict(ddb_calls) == {"BatchGetItem": 1, "TransactWriteItems": 1}
    clock.advance(30)
    ddb_calls.clear()
    assert expire_stage(ctx, build, 2).value == "IN_PROGRESS"
    assert dict(ddb_calls) == {"Query": 1, "TransactWriteItems": 1}
