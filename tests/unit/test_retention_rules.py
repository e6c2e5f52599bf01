"""Retention decisions on the in-memory stores (the DynamoDB side: tests/integration/test_retention.py)."""
from __future__ import annotations

import json

import pytest

from chalicelib.domain.clock import format_iso
from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
from chalicelib.domain.status import StageStatus
from chalicelib.service import operations, runs
from chalicelib.service.retention import apply_retention, expiry_of
from chalicelib.store.stream import run_record

S = StageStatus


def _image(run, **extra):
    image = {"kind": {"S": "run"}, "run_id": {"S": run.id}, "status": {"S": run.status.value}}
    if run.ended_at is not None:
        image["ended_at"] = {"S": format_iso(run.ended_at)}
    return image | extra


RUN = {"kind": {"S": "run"}, "run_id": {"S": "web:1"}}
BY_TTL = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}


@pytest.mark.parametrize("record, expected", [
    ({"eventName": "MODIFY", "dynamodb": {"NewImage": {**RUN, "kind": {"S": "stage"}}}}, None),
    ({"eventName": "REMOVE", "dynamodb": {"OldImage": RUN}}, None),  # a writer deleted it
    ({"eventName": "REMOVE", "userIdentity": BY_TTL, "dynamodb": {"OldImage": RUN}}, "expired"),
    ({"eventName": "REMOVE", "userIdentity": {**BY_TTL, "principalId": "someone.else"},
      "dynamodb": {"OldImage": RUN}}, None),
    ({"eventName": "INSERT", "dynamodb": {"NewImage": {**RUN, "status": {"S": "IDLE"}}}}, "IDLE"),
])
def test_which_records_speak_of_a_run(record, expected):
    found = run_record(record)
    if expected is None:
        assert found is None
    elif expected == "expired":
        assert found.expired and found.run_id == "web:1"
    else:
        assert found.status == expected and not found.expired


def test_finished_runs_get_an_expiry_reopened_ones_lose_it(memory_ctx, clock):
    ctx = memory_ctx
    aggregate = runs.create_run(ctx, CreateRunIn.model_validate_json(
        json.dumps({"pipeline": "web", "stages": ["BUILD"]})))
    stage = aggregate.stages[0].id
    idle = runs.get_run(ctx, aggregate.run.id).run
    inserted = {"eventName": "INSERT", "dynamodb": {"NewImage": _image(idle)}}
    assert apply_retention(ctx, [inserted]).expiring == 0
    runs.patch_stage(ctx, stage, PatchStageIn(status=S.IN_PROGRESS))
    runs.patch_stage(ctx, stage, PatchStageIn(status=S.SUCCESS))
    done = runs.get_run(ctx, aggregate.run.id).run
    report = apply_retention(ctx, [{"eventName": "MODIFY", "dynamodb": {"NewImage": _image(done)}}])
    assert report.expiring == 1
    assert ctx.stores.retention.db.expiries == {done.id: expiry_of(format_iso(done.ended_at), 400)}

    operations.retry_stage(ctx, stage)  # the run runs again
    running = runs.get_run(ctx, aggregate.run.id).run
    record = {"eventName": "MODIFY", "dynamodb": {"NewImage": _image(running, expires_at={"N": "1"})}}
    assert apply_retention(ctx, [record]).kept == 1
    assert ctx.stores.retention.db.expiries == {}
