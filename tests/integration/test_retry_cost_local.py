"""Issue 12, a stage retry: it costs what it changes (on a real DynamoDB Local).

- with no SKIPPED stage in the run, a one-stage retry on a 256-stage run reads and writes
  exactly what it does on a 6-stage run (one BatchGetItem of the stage and the run's summary,
  one transaction), as DynamoDB's ``ReturnConsumedCapacity`` reports it;
- with SKIPPED stages after it, it reads only the stages after it (one Query bounded by its
  position) and restarts exactly those SKIPPED ones;
- a retry racing a PATCH of another stage: both land, and the run's status (as read and as
  stored for the status index) is what its stages make.
"""
from __future__ import annotations

import json

import pytest

from chalicelib.domain.model import StageSpec, new_run, run_status_of
from chalicelib.domain.schemas import MAX_STAGES, CreateRunIn, PatchStageIn
from chalicelib.domain.status import STAGE_STATUSES
from chalicelib.domain.status import StageStatus as S
from chalicelib.service import operations, runs
from chalicelib.store.models import RUN_SK, run_pk
from tests.fixtures.backends import items_of
from tests.fixtures.capacity import measure


def create(ctx, pipeline: str, stages: int):
    """A run of ``stages`` stages: through the API's create up to its 50, else as a sender's run
    of the hardening issue (256) is inserted."""
    if stages <= MAX_STAGES:
        body = {"pipeline": pipeline, "stages": [{"type": "OTHER", "name": f"s{i}"} for i in range(stages)]}
        return runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps(body)))
    counter, _ = ctx.stores.pipelines.claim_counter(pipeline)
    specs = [StageSpec(type="OTHER", name=f"s{i}") for i in range(stages)]
    aggregate = new_run(pipeline, counter, specs, ctx.clock.now())
    ctx.stores.runs.insert_run(aggregate)
    return aggregate


def patch(ctx, stage_id: str, **fields):
    return runs.patch_stage(ctx, stage_id, PatchStageIn.model_validate_json(json.dumps(fields)))


def failed_at(ctx, pipeline: str, stages: int, index: int, skipped: int = 0):
    """A run whose stage ``index`` (0-based) failed, with ``skipped`` SKIPPED stages right after it."""
    aggregate = create(ctx, pipeline, stages)
    target = aggregate.stages[index]
    patch(ctx, target.id, status="IN_PROGRESS")
    patch(ctx, target.id, status="FAILURE")
    for stage in aggregate.stages[index + 1:index + 1 + skipped]:
        patch(ctx, stage.id, status="SKIPPED")
    return aggregate


def _stored_run(ctx, run_id):
    return items_of(ctx).run.get(run_pk(run_id), RUN_SK, consistent_read=True)


def _exact(ctx, run_id, pipeline):
    """The run's status as read is what its stages make, and the stored copy (status index) too."""
    final = ctx.stores.runs.load_run(run_id)
    status = run_status_of(final.stages)
    assert final.run.status == status
    stored = _stored_run(ctx, run_id)
    assert (stored.status, stored.pipeline_status) == (status.value, f"{pipeline}#{status.value}")
    counts = {s: 0 for s in STAGE_STATUSES}
    for stage in final.stages:
        counts[stage.status] += 1
    assert {s: int(getattr(stored, f"n_{s.value.lower()}") or 0) for s in STAGE_STATUSES} == counts
    return final


@pytest.mark.ddb_local
def test_a_one_stage_retry_costs_the_same_on_a_256_stage_run_as_on_a_6_stage_run(local_ctx):
    ctx = local_ctx
    costs = {}
    for stages in (6, 256):
        aggregate = failed_at(ctx, f"retry{stages}", stages, 1)
        with measure() as capacity:
            retried = operations.retry_stage(ctx, aggregate.stages[1].id)
        assert (retried.status, retried.attempt) == (S.IDLE, 2)
        costs[stages] = capacity
        _exact(ctx, aggregate.run.id, f"retry{stages}")
    small, big = costs[6], costs[256]
    assert dict(small.calls) == dict(big.calls) == {"BatchGetItem": 1, "TransactWriteItems": 1}
    assert small.items_read == big.items_read == 2  # the stage and the run item (was 7 and 257)
    assert big.read == small.read
    assert big.write == small.write, (dict(small.write), dict(big.write))


@pytest.mark.ddb_local
def test_a_retry_with_skipped_stages_after_it_reads_only_the_stages_after_it(local_ctx):
    ctx = local_ctx
    aggregate = failed_at(ctx, "skips", 256, 249, skipped=3)  # positions 251-253 SKIPPED
    stage = aggregate.stages[249]
    with measure() as capacity:
        operations.retry_stage(ctx, stage.id)
    assert dict(capacity.calls) == {"BatchGetItem": 1, "Query": 1, "TransactWriteItems": 1}
    assert capacity.items_read == 2 + (256 - 250)  # stage + run item, then the 6 stages after it
    final = _exact(ctx, aggregate.run.id, "skips")
    assert [(s.status, s.attempt) for s in final.stages[248:]] == [
        (S.IDLE, 1), (S.IDLE, 2), (S.IDLE, 2), (S.IDLE, 2), (S.IDLE, 2), (S.IDLE, 1), (S.IDLE, 1),
        (S.IDLE, 1)]
    pages = [runs.stage_attempts(ctx, s.id, 20, None)[0] for s in final.stages[249:253]]
    assert [[(a["attempt"], a["status"]) for a in page] for page in pages] == [
        [(1, "FAILURE")], [(1, "SKIPPED")], [(1, "SKIPPED")], [(1, "SKIPPED")]]


@pytest.mark.ddb_local
def test_a_retry_with_skipped_stages_only_before_it_writes_the_stage_alone(local_ctx):
    ctx = local_ctx
    aggregate = create(ctx, "before", 6)
    patch(ctx, aggregate.stages[0].id, status="SKIPPED")
    patch(ctx, aggregate.stages[1].id, status="IN_PROGRESS")
    patch(ctx, aggregate.stages[1].id, status="FAILURE")
    version = _stored_run(ctx, aggregate.run.id).version
    with measure() as capacity:
        operations.retry_stage(ctx, aggregate.stages[1].id)
    assert dict(capacity.calls) == {"BatchGetItem": 1, "Query": 1, "TransactWriteItems": 1}
    assert capacity.items_read == 2 + 4
    assert _stored_run(ctx, aggregate.run.id).version == version  # the run item was not rewritten
    final = _exact(ctx, aggregate.run.id, "before")
    assert [(s.status, s.attempt) for s in final.stages[:3]] == [(S.SKIPPED, 1), (S.IDLE, 2), (S.IDLE, 1)]


def _patch_during_save(ctx, stage_id: str, **fields):
    """Make the next write of the run store land a PATCH of ``stage_id`` first: between the
    retry's read and its write, deterministically (no threads, no sleeps)."""
    store = ctx.stores.runs
    save = store.save
    fired: list[bool] = []

    def racing(before, after, *args, **kwargs):
        if not fired:
            fired.append(True)
            patch(ctx, stage_id, **fields)
        return save(before, after, *args, **kwargs)

    store.save = racing
    return fired


@pytest.mark.parametrize("skipped", [0, 2], ids=["no-skipped", "skipped-after"])
def test_a_retry_racing_a_patch_of_another_stage_both_land_and_the_status_is_exact(any_ctx, skipped):
    ctx = any_ctx
    aggregate = failed_at(ctx, "race", 6, 1, skipped=skipped)
    other = aggregate.stages[0]  # IDLE: the PATCH starts it while the retry is between read and write
    fired = _patch_during_save(ctx, other.id, status="IN_PROGRESS")
    try:
        retried = operations.retry_stage(ctx, aggregate.stages[1].id)
    finally:
        del ctx.stores.runs.save
    assert fired == [True]
    assert (retried.status, retried.attempt) == (S.IDLE, 2)
    final = _exact(ctx, aggregate.run.id, "race")
    assert [(s.status, s.attempt) for s in final.stages[:2 + skipped]] == (
        [(S.IN_PROGRESS, 1), (S.IDLE, 2)] + [(S.IDLE, 2)] * skipped)
    assert final.run.status == S.IN_PROGRESS


@pytest.mark.parametrize("skipped", [0, 2], ids=["no-skipped", "skipped-after"])
def test_a_patch_racing_the_retry_of_a_skipped_stage_after_it_both_land(any_ctx, skipped):
    """The PATCH ends a stage after the retried one (read by the retry's Query when the run has
    SKIPPED stages): the stage it changed is not one the retry writes, so both land."""
    ctx = any_ctx
    aggregate = failed_at(ctx, "late", 6, 1, skipped=skipped)
    last = aggregate.stages[5]
    fired = _patch_during_save(ctx, last.id, status="SKIPPED")
    try:
        operations.retry_stage(ctx, aggregate.stages[1].id)
    finally:
        del ctx.stores.runs.save
    assert fired == [True]
    final = _exact(ctx, aggregate.run.id, "late")
    assert [(s.status, s.attempt) for s in final.stages] == (
        [(S.IDLE, 1), (S.IDLE, 2)] + [(S.IDLE, 2)] * skipped + [(S.IDLE, 1)] * (3 - skipped)
        + [(S.SKIPPED, 1)])


@pytest.mark.ddb_local
def test_a_retry_of_more_skipped_stages_than_one_transaction_holds_is_all_or_nothing(local_ctx):
    """60 SKIPPED stages after it: 61 stages and 61 attempt items to write, more than one
    transaction holds, so the run is read whole and written through the big-run intent."""
    ctx = local_ctx
    aggregate = failed_at(ctx, "many", 100, 0, skipped=60)
    with measure() as capacity:
        operations.retry_stage(ctx, aggregate.stages[0].id)
    assert capacity.calls["Query"] == 1 and capacity.calls["TransactWriteItems"] >= 2
    final = _exact(ctx, aggregate.run.id, "many")
    assert [(s.status, s.attempt) for s in final.stages] == [(S.IDLE, 2)] * 61 + [(S.IDLE, 1)] * 39
    assert final.run.status == S.IDLE
