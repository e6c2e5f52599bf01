"""The timer Lambda handlers' translation and the local ticker's thread, on the in-memory
stores (the DynamoDB side of timers is tests/integration/test_timers.py)."""
from __future__ import annotations

import json
import threading

from chalice.test import Client

from chalicelib.domain.model import change_status
from chalicelib.domain.schemas import CreateRunIn
from chalicelib.domain.status import StageStatus
from chalicelib.service import runs
from chalicelib.ticker import Ticker

S = StageStatus


def running_stage_past_its_time(ctx, clock, timing: str) -> str:
    """A one-stage run started now, its clock then moved to its ``timing`` (e.g.
    ``"timeoutSeconds": 5``) deadline; the stage's id."""
    seconds = timing.split(":")[1]
    aggregate = runs.create_run(ctx, CreateRunIn.model_validate_json(
        '{"pipeline": "web", "stages": [{"type": "BUILD", ' + timing + "}]}"))
    stage_id = aggregate.stages[0].id
    runs.mutate_run(ctx, aggregate.run.id,
                    lambda agg: change_status(agg.stage(stage_id), S.IN_PROGRESS, clock.now()))
    clock.advance(int(seconds))
    return stage_id


def test_timer_fired_handler_drops_malformed_messages_and_fires_good_ones(memory_ctx, clock):
    from app import app

    ctx = memory_ctx
    stage_id = running_stage_past_its_time(ctx, clock, '"timeoutSeconds":5')
    bodies = ["not json", "[]", '{"stageId": 1, "attempt": 1}', '{"stageId": "x", "attempt": true}',
              "[" * 50_000 + "]" * 50_000,  # nested too deep for json: dropped, not a poison batch
              json.dumps({"stageId": stage_id, "attempt": 1})]
    with Client(app) as lambdas:
        event = lambdas.events.generate_sqs_event(message_bodies=bodies, queue_name="stagetrack-timers")
        lambdas.lambda_.invoke("timer_fired", event)
        assert ctx.stores.runs.get_stage(stage_id).status == S.TIMED_OUT
        lambdas.lambda_.invoke("timer_fired", event)  # redelivered: harmless
        assert ctx.stores.runs.get_stage(stage_id).status == S.TIMED_OUT


def test_timer_sweeper_handler_sweeps(memory_ctx, clock):
    from app import app

    ctx = memory_ctx
    stage_id = running_stage_past_its_time(ctx, clock, '"timeoutSeconds":5')
    with Client(app) as lambdas:
        lambdas.lambda_.invoke("timer_sweeper", lambdas.events.generate_cw_event(
            source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]))
    assert ctx.stores.runs.get_stage(stage_id).status == S.TIMED_OUT


def test_ticker_thread_runs_the_sweep_until_stopped(memory_ctx, clock):
    from chalicelib.service.timers import sweep

    ctx = memory_ctx
    stage_id = running_stage_past_its_time(ctx, clock, '"expectedSeconds":3')
    swept = threading.Event()

    def tick():
        sweep(ctx)
        swept.set()

    ticker = Ticker(tick, interval=0.01).start()
    try:
        assert swept.wait(5)
    finally:
        ticker.stop(5)
    assert not ticker.alive
    assert ctx.stores.runs.get_stage(stage_id).status == S.SUCCESS
