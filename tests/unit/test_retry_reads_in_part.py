"""A stage retry reads what it restarts (issue 12), on the in-memory store: the stage alone when
the run has no SKIPPED stage, and the stages after it otherwise; several stages read in part are
written all or none, each conditioned on its own version."""
from __future__ import annotations

import json

import pytest

from chalicelib import wiring
from chalicelib.domain.errors import ConcurrentModification
from chalicelib.domain.model import change_status, stage_changes
from chalicelib.domain.operations import new_attempt
from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
from chalicelib.domain.status import StageStatus as S
from chalicelib.service import operations, runs
from chalicelib.settings import Settings
from tests.fixtures.clock import FakeClock


@pytest.fixture
def ctx():
    return wiring.memory_context(Settings(table_name="unused", region="us-east-1"), FakeClock())


def create(ctx, stages=5):
    body = {"pipeline": "web", "stages": [{"type": "OTHER", "name": f"s{i}"} for i in range(stages)]}
    return runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps(body)))


def patch(ctx, stage_id, **fields):
    return runs.patch_stage(ctx, stage_id, PatchStageIn.model_validate_json(json.dumps(fields)))


def _reads(ctx):
    """Record every load of the run store: ("run", id) or ("stage", id, following)."""
    store, seen = ctx.stores.runs, []
    load_run, load_stage = store.load_run, store.load_stage

    inside: list[bool] = []  # the memory store's load_stage reads through load_run itself

    def run(run_id):
        if not inside:
            seen.append(("run", run_id))
        return load_run(run_id)

    def stage(stage_id, following=None):
        seen.append(("stage", stage_id, following))
        inside.append(True)
        try:
            return load_stage(stage_id, following)
        finally:
            inside.pop()

    store.load_run, store.load_stage = run, stage
    return seen


def _failed(ctx, index=1, skipped=0):
    aggregate = create(ctx)
    target = aggregate.stages[index]
    patch(ctx, target.id, status="IN_PROGRESS")
    patch(ctx, target.id, status="FAILURE")
    for stage in aggregate.stages[index + 1:index + 1 + skipped]:
        patch(ctx, stage.id, status="SKIPPED")
    return aggregate


def test_a_retry_reads_the_stage_in_part_and_never_the_whole_run(ctx):
    aggregate = _failed(ctx)
    seen = _reads(ctx)
    stage = operations.retry_stage(ctx, aggregate.stages[1].id)
    assert seen == [("stage", aggregate.stages[1].id, S.SKIPPED)]
    assert (stage.status, stage.attempt) == (S.IDLE, 2)
    final = ctx.stores.runs.load_run(aggregate.run.id)
    assert [(s.status, s.attempt) for s in final.stages] == [(S.IDLE, 1), (S.IDLE, 2)] + [(S.IDLE, 1)] * 3
    assert final.run.version == aggregate.run.version  # a change of stages: the run is not rewritten


def test_the_stage_read_with_skipped_stages_after_it_are_exactly_the_later_ones(ctx):
    aggregate = _failed(ctx, skipped=2)
    read = ctx.stores.runs.load_stage(aggregate.stages[1].id, S.SKIPPED)
    assert read.partial and [s.position for s in read.stages] == [2, 3, 4, 5]
    none = ctx.stores.runs.load_stage(aggregate.stages[1].id, S.CANCELLED)  # no stage CANCELLED
    assert [s.position for s in none.stages] == [2]
    operations.retry_stage(ctx, aggregate.stages[1].id)
    final = ctx.stores.runs.load_run(aggregate.run.id)
    assert [(s.status, s.attempt) for s in final.stages] == [
        (S.IDLE, 1), (S.IDLE, 2), (S.IDLE, 2), (S.IDLE, 2), (S.IDLE, 1)]
    assert final.run.status == S.IDLE


def _restart_three(ctx, aggregate):
    """Read stage 2 with the stages after it, and restart 2, 3 and 4 in memory."""
    read = ctx.stores.runs.load_stage(aggregate.stages[1].id, S.SKIPPED)
    before = read.snapshot()
    for stage in read.stages[:3]:
        new_attempt(stage, ctx.clock.now())
    assert [new.position for _, new in stage_changes(before, read)] == [2, 3, 4]
    return before, read


def test_several_stages_read_in_part_are_written_all_or_none(ctx):
    aggregate = _failed(ctx, skipped=2)
    before, read = _restart_three(ctx, aggregate)
    patch(ctx, aggregate.stages[2].id, timeoutSeconds=60)  # one of them changed since the read
    stored = ctx.stores.runs.load_run(aggregate.run.id)
    with pytest.raises(ConcurrentModification):
        ctx.stores.runs.save(before, read, local=True)
    assert ctx.stores.runs.load_run(aggregate.run.id) == stored  # nothing written


def test_a_change_of_a_stage_read_but_not_written_does_not_conflict(ctx):
    aggregate = _failed(ctx, skipped=2)
    before, read = _restart_three(ctx, aggregate)
    patch(ctx, aggregate.stages[4].id, status="IN_PROGRESS")  # read (after it), not restarted
    ctx.stores.runs.save(before, read, local=True)
    final = ctx.stores.runs.load_run(aggregate.run.id)
    assert [(s.status, s.attempt) for s in final.stages] == [
        (S.IDLE, 1), (S.IDLE, 2), (S.IDLE, 2), (S.IDLE, 2), (S.IN_PROGRESS, 1)]
    assert final.run.status == S.IN_PROGRESS


def test_stage_changes_lists_every_changed_stage_and_refuses_a_change_of_the_run(ctx):
    aggregate = create(ctx)
    now = ctx.clock.now()
    two = aggregate.snapshot()
    change_status(two.stages[0], S.IN_PROGRESS, now)
    change_status(two.stages[3], S.SKIPPED, now)
    assert [(old.status, new.status, new.position) for old, new in stage_changes(aggregate, two)] == [
        (S.IDLE, S.IN_PROGRESS, 1), (S.IDLE, S.SKIPPED, 4)]
    assert stage_changes(aggregate, aggregate.snapshot()) == []
    run_too = two.snapshot()
    run_too.run.variables = {"A": "1"}
    assert stage_changes(aggregate, run_too) is None
    fewer = two.snapshot()
    fewer.remove_stage(fewer.stages[4].id)
    assert stage_changes(aggregate, fewer) is None
