"""Issue 15 item 3 on the DynamoDB store (moto): what a stop and the changes during its grace
period cost, the status the run item keeps for its index, the timers the stream arms, and the
events the stream carries."""
from __future__ import annotations

import json

from chalicelib.domain.events import RUN_CHANGED
from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
from chalicelib.domain.status import StageStatus as S
from chalicelib.service import commands, runs
from chalicelib.service.timers import expire_stage
from chalicelib.store.models import RUN_SK, run_pk
from chalicelib.store.stream import armed_timer, state_change
from tests.fixtures.backends import items_of


def create(ctx, stages, **options):
    body = {"pipeline": "web", "stages": stages, **options}
    return runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps(body)))


def patch(ctx, stage_id, status):
    return runs.patch_stage(ctx, stage_id, PatchStageIn(status=S(status)))


def stored_run(ctx, run_id):
    return items_of(ctx).run.get(run_pk(run_id), RUN_SK, consistent_read=True)


def running(ctx, count=3):
    aggregate = create(ctx, [{"type": "OTHER", "name": f"s{i}"} for i in range(count)])
    for stage in aggregate.stages[:-1]:
        patch(ctx, stage.id, "IN_PROGRESS")
    return aggregate


def test_a_stop_is_one_query_and_one_transaction_and_keeps_the_index_exact(ctx, ddb_calls):
    aggregate = running(ctx)
    ddb_calls.clear()
    commands.execute(ctx, commands.StopRun("web", 1, "superseded", 45), actor="ops")
    assert dict(ddb_calls) == {"Query": 1, "TransactWriteItems": 1}
    item = stored_run(ctx, aggregate.run.id)
    assert (item.status, item.pipeline_status) == ("CANCELLING", "web#CANCELLING")
    assert (item.n_in_progress, item.n_skipped, item.n_idle or 0) == (2, 1, 0)
    assert json.loads(item.stopping)["graceSeconds"] == 45


def test_a_stage_ending_during_the_grace_is_one_read_and_one_write_and_the_last_one_ends_it(ctx, ddb_calls):
    aggregate = running(ctx)
    first, second = aggregate.stages[0].id, aggregate.stages[1].id
    commands.execute(ctx, commands.StopRun("web", 1, None, 60), actor="ops")
    ddb_calls.clear()
    patch(ctx, first, "SUCCESS")  # the run stays busy: CANCELLING set in the same transaction
    assert dict(ddb_calls) == {"BatchGetItem": 1, "TransactWriteItems": 1}
    assert stored_run(ctx, aggregate.run.id).pipeline_status == "web#CANCELLING"
    patch(ctx, second, "FAILURE")  # the last one: the run is CANCELLED, whatever it ended as
    item = stored_run(ctx, aggregate.run.id)
    assert (item.status, item.pipeline_status) == ("CANCELLED", "web#CANCELLED")
    assert item.ended_at is not None and item.duration_ms is not None
    listed, _ = ctx.stores.runs.list_runs("web", S.CANCELLED, 10, None)
    assert [run.id for run in listed] == [aggregate.run.id]


def test_the_grace_timer_is_one_query_and_one_write(ctx, clock, ddb_calls):
    aggregate = running(ctx, 2)
    commands.execute(ctx, commands.StopRun("web", 1, None, 30), actor="ops")
    clock.advance(30)
    ddb_calls.clear()
    assert expire_stage(ctx, aggregate.stages[0].id, 1) == S.CANCELLED
    assert dict(ddb_calls) == {"Query": 1, "TransactWriteItems": 1}  # as every timer: its run, one write
    item = stored_run(ctx, aggregate.run.id)
    assert (item.status, item.pipeline_status) == ("CANCELLED", "web#CANCELLED")


def _record(name, old, new):
    return {"eventName": name, "dynamodb": {"OldImage": old, "NewImage": new}}


def test_the_stream_arms_the_grace_timer_and_carries_the_cancelling_run(ctx, clock):
    aggregate = running(ctx, 2)
    stage = aggregate.stages[0]
    before_stage = items_of(ctx).stage.get(run_pk(aggregate.run.id), "STAGE#0001", consistent_read=True)
    before_run = stored_run(ctx, aggregate.run.id)
    commands.execute(ctx, commands.StopRun("web", 1, None, 30), actor="ops")
    after_stage = items_of(ctx).stage.get(run_pk(aggregate.run.id), "STAGE#0001", consistent_read=True)
    after_run = stored_run(ctx, aggregate.run.id)
    image = lambda item: item.serialize()  # noqa: E731 - DynamoDB JSON, as the stream has it
    timer = armed_timer(_record("MODIFY", image(before_stage), image(after_stage)))
    assert timer is not None and timer.stage_id == stage.id and timer.attempt == 1
    assert timer.due_at == json.loads(after_run.stopping)["graceUntil"]
    change = state_change(_record("MODIFY", image(before_run), image(after_run)), clock.now())
    assert (change.type, change.old_status, change.new_status) == (RUN_CHANGED, "IN_PROGRESS", "CANCELLING")
