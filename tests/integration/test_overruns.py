"""Overruns and ETA on moto, as Lambda runs them (docs/insights.md "Overruns and ETA"): the
outbox publisher (the stream's second and last reader) writes a started stage's expectations
from the day aggregates within its policy; the run view shows the ETA reading nothing more; the
timer armer sees the overrun on the stream; the timer marks it once and the publisher sends one
``stage.overrunning`` to its subscriber; the write routes and the run view make no extra call."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from chalicelib.domain.clock import format_iso, parse_iso
from chalicelib.settings import Settings
from tests.fixtures import assert_items_allowed, iam_actions, outbox_lambda, receive

DELIVERIES = "https://sqs.us-east-1.amazonaws.com/123456789012/stagetrack-deliveries"


@pytest.fixture
def settings():
    return Settings(table_name="stagetrack-test", region="us-east-1", delivery_queue_url=DELIVERIES)


@pytest.fixture
def lam(ctx):
    with outbox_lambda(ctx.settings.table_name) as client:
        yield client


def consume(lam, records=None):
    return lam.lambda_.invoke("outbox_publisher", {"Records": records} if records is not None
                              else lam.stream.event()).payload


def history(lam, client, clock, seconds=(60, 70, 80, 90, 100)):
    """Five finished BUILD attempts of pipeline web, added to the aggregates by the consumer."""
    for n, duration in enumerate(seconds, start=1):
        client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
        client.patch(f"/api/stages/web:{n}:1", {"status": "IN_PROGRESS"})
        clock.advance(duration)
        client.patch(f"/api/stages/web:{n}:1", {"status": "SUCCESS"})
    return consume(lam)


def test_an_overrun_goes_out_once_and_the_run_view_carries_the_eta(lam, client, clock, ctx, ddb_calls,
                                                                   monkeypatch):
    from chalicelib.domain.events import STAGE_OVERRUNNING
    from chalicelib.service.timers import expire_stage
    from chalicelib.store.stream import armed_timer, state_change

    first = history(lam, client, clock)
    assert first["expectations"]["starts"] == 5 and first["expectations"]["written"] == 0  # all ended
    subscription = client.post("/api/subscriptions", {"url": "https://hooks.example.com/o",
                                                      "events": ["stage.overrunning"]}).json
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    ddb_calls.clear()
    client.patch("/api/stages/web:6:1", {"status": "IN_PROGRESS"})
    patched = dict(ddb_calls)
    started = parse_iso(client.get("/api/stages/web:6:1").json["startedAt"])
    with iam_actions(monkeypatch) as actions:
        report = consume(lam)
    assert report["expectations"] == {"starts": 1, "written": 1, "noHistory": 0, "stale": 0}
    assert_items_allowed(actions, "outbox_publisher")

    clock.advance(30)
    ddb_calls.clear()
    run = client.get("/api/runs/web:6").json
    assert dict(ddb_calls) == {"Query": 1}  # the ETA is computed from what the run's Query read
    (build,) = run["stages"]
    assert build["typicalSeconds"] == pytest.approx(80, rel=0.01) and build["overrunningAt"] is None
    assert run["eta"] == format_iso(clock.now() + timedelta(seconds=build["typicalSeconds"] - 30))

    armed = [t for t in (armed_timer(r) for r in lam.stream.read()) if t is not None]
    assert [t.stage_id for t in armed] == ["web:6:1"]
    overrun = parse_iso(armed[0].due_at)
    assert (overrun - started).total_seconds() == pytest.approx(100, rel=0.01)  # p95 of 5: the 5th
    clock.advance((overrun - clock.now()).total_seconds() - 1)
    assert expire_stage(ctx, "web:6:1", 1) is None
    clock.advance(2)
    assert expire_stage(ctx, "web:6:1", 1).value == "IN_PROGRESS"
    assert expire_stage(ctx, "web:6:1", 1) is None  # a duplicate timer does nothing
    records = lam.stream.read()
    changes = [c for c in (state_change(r, clock.now()) for r in records) if c is not None]
    assert [(c.type, c.stage_id) for c in changes] == [(STAGE_OVERRUNNING, "web:6:1")]
    published = consume(lam, records)
    assert (published["events"], published["deliveries"]) == (1, 1)
    (message,) = [json.loads(m["Body"]) for m in receive(DELIVERIES)
                  if json.loads(m["Body"])["subscriptionId"] == subscription["id"]]
    body = json.loads(message["payload"])
    assert body["type"] == "stage.overrunning" and body["overrun"]["startedAt"] == format_iso(started)
    assert body["overrun"]["samples"] == 5 and body["overrun"]["timeoutAt"] is None  # BUILD: no timeout
    assert body["overrun"]["expectedSeconds"]["p95"] == pytest.approx(100, rel=0.01)
    assert consume(lam, records)["events"] == 1  # redelivered: the same event id again, nothing new
    assert client.get("/api/runs/web:6").json["stages"][0]["overrunningAt"] == format_iso(overrun)
    assert patched == {"BatchGetItem": 1, "TransactWriteItems": 1}  # the start: as without history


def test_a_stage_ended_before_the_consumer_got_to_it_gets_nothing(lam, client, clock):
    history(lam, client, clock)
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    client.patch("/api/stages/web:6:1", {"status": "IN_PROGRESS"})
    client.patch("/api/stages/web:6:1", {"status": "SUCCESS"})
    assert consume(lam)["expectations"] == {"starts": 1, "written": 0, "noHistory": 0, "stale": 1}
    stage = client.get("/api/stages/web:6:1").json
    assert stage["typicalSeconds"] is None and stage["overrunningAt"] is None


@pytest.mark.ddb_local
def test_make_runs_local_outbox_writes_the_expectations_and_the_ticker_fires_the_overrun(local_ctx, clock):
    """`make run`'s path on DynamoDB Local (which checks the update's syntax and condition as
    DynamoDB does): the local outbox tick writes the start's expectations, the sweep (the local
    ticker's step) marks the overrun once, and the next tick publishes it."""
    from chalicelib.adapters.local import MemoryQueue, StreamTail
    from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
    from chalicelib.events.outbound import LocalOutbox
    from chalicelib.service import runs
    from chalicelib.service.timers import sweep

    settings = local_ctx.settings
    tail = StreamTail(settings.table_name, settings.region, settings.dynamodb_endpoint)
    local = LocalOutbox(local_ctx, tail, queue=MemoryQueue(now=lambda: clock.now().timestamp()))

    def run_build(finish: bool) -> str:
        body = CreateRunIn.model_validate_json('{"pipeline": "web", "stages": ["BUILD"]}')
        run = runs.create_run(local_ctx, body)
        stage_id = run.stages[0].id
        runs.patch_stage(local_ctx, stage_id, PatchStageIn.model_validate_json('{"status": "IN_PROGRESS"}'))
        if finish:
            clock.advance(60)
            runs.patch_stage(local_ctx, stage_id, PatchStageIn.model_validate_json('{"status": "SUCCESS"}'))
        return stage_id

    for _ in range(5):
        run_build(True)
    local.tick()
    stage_id = run_build(False)
    local.tick()
    stage = local_ctx.stores.runs.get_stage(stage_id)
    assert stage.expectations["BUILD"][2] == 5 and stage.overrun_at is not None
    clock.advance(61)
    assert sweep(local_ctx).fired == {"IN_PROGRESS": 1}
    assert sweep(local_ctx).fired == {}
    assert local_ctx.stores.runs.get_stage(stage_id).overrunning_at == stage.overrun_at


@pytest.mark.ddb_local
def test_the_consumer_racing_the_stages_own_writers_never_clobbers_them(local_ctx, clock):
    """On DynamoDB Local, threads released at once: the consumer writing a start's expectations
    (twice: a redelivery) against a client's PATCH of that stage, ending it or raising its
    timeout. Every writer lands (a lost condition reads again; the consumer changes nothing a
    client's PATCH guards, so it never turns one into a 409), the PATCH's change stays, and
    a stage still running has its expectations."""
    from chalicelib.domain.insights import FinishedAttempt
    from chalicelib.domain.overruns import StageStarted
    from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
    from chalicelib.domain.status import StageStatus as S
    from chalicelib.service import insights, overruns, runs
    from tests.fixtures.threads import run_threads

    for n in range(5):  # history, as the consumer adds it
        end = clock.now() - timedelta(minutes=n + 1)
        began = end - timedelta(seconds=60)
        insights.add_attempt(local_ctx, FinishedAttempt(
            pipeline="web", run_id=f"web:{900 + n}", position=1, name="BUILD", status=S.SUCCESS, attempt=1,
            first_attempt=1, created_at=began, started_at=began, ended_at=end))
    def race(stage_id: str, started: StageStarted, change: str) -> tuple[dict, list[str]]:
        outcomes: list[str] = []
        results = run_threads({
            "consumer": lambda: outcomes.append(overruns.expect_start(local_ctx, started)),
            "redelivered": lambda: outcomes.append(overruns.expect_start(local_ctx, started)),
            "client": lambda: runs.patch_stage(local_ctx, stage_id, PatchStageIn.model_validate_json(change)),
        })
        return results, outcomes

    start = PatchStageIn.model_validate_json('{"status": "IN_PROGRESS"}')
    for round_, change in enumerate(['{"status": "SUCCESS"}', '{"timeoutSeconds": 3600}'] * 2):
        run = runs.create_run(local_ctx, CreateRunIn.model_validate_json(
            '{"pipeline": "web", "stages": ["BUILD"]}'))
        stage_id = run.stages[0].id
        stage = runs.patch_stage(local_ctx, stage_id, start)
        assert stage.started_at is not None
        started = StageStarted("web", stage.run_id, stage.id, stage.name, stage.attempt, stage.started_at)
        results, outcomes = race(stage_id, started, change)
        assert set(results.values()) == {"ok"}, (round_, results)
        final = local_ctx.stores.runs.get_stage(stage_id)
        if "SUCCESS" in change:
            assert final.status == S.SUCCESS and set(outcomes) <= {overruns.WRITTEN, overruns.STALE}
        else:
            assert final.status == S.IN_PROGRESS and final.timeout_seconds == 3600, round_
            assert overruns.WRITTEN in outcomes and final.expectations["BUILD"][2] == 5, outcomes
            assert final.overrun_at is not None
