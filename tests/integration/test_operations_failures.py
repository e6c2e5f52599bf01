"""Failure injection: an operation whose transaction fails leaves no half-done run.

Each test makes exactly one item of a multi-item transaction fail (a condition broken by a
concurrent writer, an item DynamoDB refuses) and checks that nothing at all was written. They run
on moto and on a real DynamoDB Local (``any_ctx``), whose transactions are the real thing.
"""
from __future__ import annotations

import json

import botocore.client
import botocore.exceptions
import pytest
from pynamodb.exceptions import TransactWriteError

from chalicelib.domain.errors import ConcurrentModification
from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
from chalicelib.domain.status import StageStatus as S
from chalicelib.service import operations, runs
from chalicelib.store import repository
from chalicelib.store.models import StageItem, run_pk, stage_sk
from tests.fixtures.backends import items_of


def new_run(ctx, stages, pipeline="web"):
    return runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps({"pipeline": pipeline,
                                                                             "stages": stages})))


def started_run(ctx, pipeline="web"):
    aggregate = new_run(ctx, ["PREPARE", "BUILD", "UNIT_TEST", "DEPLOY_PROD"], pipeline)
    runs.patch_stage(ctx, aggregate.stages[0].id, PatchStageIn(status=S.IN_PROGRESS))
    return ctx.stores.runs.load_run(aggregate.run.id)


def comparable(aggregate, skip_version_of=None):
    """Everything stored about a run, minus the version a saboteur bumped."""
    stages = []
    for stage in aggregate.stages:
        fields = vars(stage).copy()
        if stage.id == skip_version_of:
            fields.pop("version")
        stages.append(fields)
    return vars(aggregate.run), stages


def test_cancel_whose_last_item_loses_its_condition_writes_nothing(any_ctx, monkeypatch):
    ctx = any_ctx
    before = started_run(ctx)
    last = before.stages[-1]
    real_save = ctx.stores.runs.save
    attempts = []

    def concurrent_writer_first(old, new, **options):
        # someone bumps the last stage between our read and our write, every time
        # (PynamoDB adds "version + 1" to any update of a read item; the value set is unchanged)
        item = items_of(ctx).stage.get(run_pk(last.run_id), stage_sk(last.position), consistent_read=True)
        item.update(actions=[StageItem.name.set(last.name)])
        attempts.append(len(new.stages))
        return real_save(old, new, **options)

    monkeypatch.setattr(ctx.stores.runs, "save", concurrent_writer_first)
    monkeypatch.setattr(runs, "backoff", lambda attempt: None, raising=False)  # no sleeping in tests
    with pytest.raises(ConcurrentModification):
        operations.cancel_run(ctx, before.run.id, actor="alice", reason="x")
    assert len(attempts) == runs.MAX_WRITE_ATTEMPTS
    after = ctx.stores.runs.load_run(before.run.id)
    assert [s.status for s in after.stages] == [S.IN_PROGRESS, S.IDLE, S.IDLE, S.IDLE]
    assert after.run.status == S.IN_PROGRESS and after.run.cancellation is None
    assert comparable(after, last.id) == comparable(before, last.id)


def test_cancel_with_one_item_refused_by_dynamodb_writes_nothing(any_ctx, monkeypatch):
    ctx = any_ctx
    before = started_run(ctx)
    real = repository.stage_to_item

    def oversized_last_stage(model, stage, **kwargs):
        item = real(model, stage, **kwargs)
        if stage.position == len(before.stages):
            item.name = "x" * 410_000  # over DynamoDB's 400 KB item limit: the whole transaction fails
        return item

    monkeypatch.setattr(repository, "stage_to_item", oversized_last_stage)
    with pytest.raises(Exception) as raised:
        operations.cancel_run(ctx, before.run.id, actor="alice")
    assert not isinstance(raised.value, ConcurrentModification)
    monkeypatch.setattr(repository, "stage_to_item", real)
    after = ctx.stores.runs.load_run(before.run.id)
    assert comparable(after) == comparable(before)


def test_api_answers_500_without_trace_and_nothing_changes(client, ctx, monkeypatch):
    before = started_run(ctx)
    original = botocore.client.BaseClient._make_api_call

    def failing(self, operation, params):
        if operation == "TransactWriteItems":
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": "InternalServerError", "Message": "injected"}}, operation)
        return original(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", failing)
    response = client.post(f"/api/runs/{before.run.id}/cancel", {"reason": "x"})
    assert response.status_code == 500
    assert response.json == {"error": {"code": "internal_error", "message": "internal error"}}
    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", original)
    assert comparable(ctx.stores.runs.load_run(before.run.id)) == comparable(before)


@pytest.mark.parametrize("operation", ["retry", "approve"])
def test_other_operations_are_all_or_nothing_too(any_ctx, monkeypatch, operation):
    ctx = any_ctx
    aggregate = new_run(ctx, ["BUILD", {"type": "DEPLOY_PROD", "approval": "MANUAL"}, "OTHER"])
    build, prod, other = (s.id for s in aggregate.stages)
    runs.patch_stage(ctx, build, PatchStageIn(status=S.IN_PROGRESS))
    runs.patch_stage(ctx, build, PatchStageIn(status=S.FAILURE))
    runs.patch_stage(ctx, prod, PatchStageIn(status=S.SKIPPED))
    runs.patch_stage(ctx, other, PatchStageIn(status=S.SKIPPED))
    if operation == "approve":
        operations.retry_run(ctx, aggregate.run.id)
        runs.patch_stage(ctx, build, PatchStageIn(status=S.IN_PROGRESS))
        runs.patch_stage(ctx, build, PatchStageIn(status=S.SUCCESS))
        runs.patch_stage(ctx, prod, PatchStageIn(status=S.IN_PROGRESS))  # waits at its gate
    before = ctx.stores.runs.load_run(aggregate.run.id)
    real = repository.run_to_item

    def oversized_run(model, run, stages=()):
        item = real(model, run, stages)
        item.trigger = "x" * 410_000
        return item

    real_stage = repository.stage_to_item

    def oversized_gate(model, stage, **kwargs):
        item = real_stage(model, stage, **kwargs)
        if stage.id == prod:
            item.name = "x" * 410_000
        return item

    # an approval writes the gate and the run's summary only (no run item rewrite): the gate's
    # item is the one made too big there; a retry rewrites the run item
    monkeypatch.setattr(repository, "run_to_item", oversized_run)
    monkeypatch.setattr(repository, "stage_to_item", oversized_gate)
    # an item over DynamoDB's 400 KB limit fails the whole transaction (moto and DynamoDB Local)
    with pytest.raises(TransactWriteError):
        if operation == "retry":
            operations.retry_run(ctx, aggregate.run.id)
        else:
            operations.approve_stage(ctx, prod, actor="carol")
    monkeypatch.setattr(repository, "run_to_item", real)
    monkeypatch.setattr(repository, "stage_to_item", real_stage)
    assert comparable(ctx.stores.runs.load_run(aggregate.run.id)) == comparable(before)
