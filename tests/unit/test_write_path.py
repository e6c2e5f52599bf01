"""Issue 12 in the domain and on the in-memory store: the run's status from a multiset of stage
statuses, what counts as a change of one stage, and who conflicts with whom."""
from __future__ import annotations

import itertools
import json

import pytest

from chalicelib import wiring
from chalicelib.domain.errors import ConcurrentModification
from chalicelib.domain.model import change_status, run_status_of, single_stage_change
from chalicelib.domain.schemas import CreateRunIn
from chalicelib.domain.status import STAGE_STATUSES, derive_run_status, run_status_from_counts
from chalicelib.domain.status import StageStatus as S
from chalicelib.service import runs
from chalicelib.settings import Settings
from tests.fixtures.clock import FakeClock


@pytest.mark.parametrize("size", [0, 1, 2, 3])
def test_the_run_status_of_counters_is_that_of_the_statuses_they_count(size):
    for statuses in itertools.product(STAGE_STATUSES, repeat=size):
        counts = {status: statuses.count(status) for status in STAGE_STATUSES}
        counts[S.SKIPPED] += 0  # zero counters (a status no stage has any more) count as absent
        assert run_status_from_counts(counts) == derive_run_status(list(statuses)), statuses


def test_a_counter_that_went_back_to_zero_is_absent():
    assert run_status_from_counts({S.IN_PROGRESS: 0, S.SUCCESS: 2, S.IDLE: 0}) == S.SUCCESS


@pytest.fixture
def ctx():
    return wiring.memory_context(Settings(table_name="unused", region="us-east-1"), FakeClock())


def create(ctx, stages=3):
    body = {"pipeline": "web", "stages": [{"type": "OTHER", "name": f"s{i}"} for i in range(stages)]}
    return runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps(body)))


def test_a_change_of_one_stage_is_told_apart_from_changes_of_the_run(ctx):
    aggregate = create(ctx)
    now = ctx.clock.now()
    one = aggregate.snapshot()
    change_status(one.stages[1], S.IN_PROGRESS, now)
    one.refresh(now)  # the run's derived fields move too: still one stage's change
    old, new = single_stage_change(aggregate, one)
    assert (old.status, new.status, new.id) == (S.IDLE, S.IN_PROGRESS, aggregate.stages[1].id)

    two = one.snapshot()
    change_status(two.stages[2], S.IN_PROGRESS, now)
    assert single_stage_change(aggregate, two) is None

    run_too = one.snapshot()
    run_too.run.variables = {"A": "1"}
    assert single_stage_change(aggregate, run_too) is None

    fewer = aggregate.snapshot()
    fewer.stages.pop()
    assert single_stage_change(aggregate, fewer) is None


def _change(ctx, aggregate, position, status, *, local):
    before = aggregate.snapshot()
    change_status(aggregate.stages[position], status, ctx.clock.now())
    aggregate.refresh(ctx.clock.now())
    ctx.stores.runs.save(before, aggregate, local=local)


def test_changes_of_different_stages_read_at_once_both_land(ctx):
    run_id = create(ctx).run.id
    mine, theirs = ctx.stores.runs.load_run(run_id), ctx.stores.runs.load_run(run_id)
    _change(ctx, theirs, 1, S.IN_PROGRESS, local=True)
    _change(ctx, mine, 0, S.IN_PROGRESS, local=True)  # no reload needed: a sibling changed
    final = ctx.stores.runs.load_run(run_id)
    assert [s.status for s in final.stages] == [S.IN_PROGRESS, S.IN_PROGRESS, S.IDLE]
    assert final.run.status == run_status_of(final.stages) == S.IN_PROGRESS
    assert final.run.version == 1, "changes of one stage leave the run's version"


def test_a_change_of_the_whole_run_fails_when_any_stage_changed_since_its_read(ctx):
    """No write skew: a run-wide decision (cancel, retry, the driver...) read every stage."""
    run_id = create(ctx).run.id
    whole, theirs = ctx.stores.runs.load_run(run_id), ctx.stores.runs.load_run(run_id)
    _change(ctx, theirs, 2, S.IN_PROGRESS, local=True)
    with pytest.raises(ConcurrentModification):
        _change(ctx, whole, 0, S.SKIPPED, local=False)


def test_a_run_read_in_part_is_written_only_as_a_change_of_its_stage(ctx):
    aggregate = create(ctx)
    partial = ctx.stores.runs.load_stage(aggregate.stages[1].id)
    assert partial.partial and [s.id for s in partial.stages] == [aggregate.stages[1].id]
    before = partial.snapshot()
    partial.run.variables = {"A": "1"}
    with pytest.raises(ValueError):
        ctx.stores.runs.save(before, partial, local=True)
