"""Force-cancel (GitHub's force-cancel, Argo's terminate, Tekton's ``Cancelled``): a run cancel
that spares no finally (``always``) stage, so the run is CANCELLED at once, never CANCELLING.
The pure rule at its edges, then the service on the in-memory store through the command table
(every entry point's path): status as read and as listed, the record, the driver, a retry."""
from __future__ import annotations

import json

import pytest

from chalicelib.domain import operations as rules
from chalicelib.domain.clock import format_iso
from chalicelib.domain.errors import IllegalTransition
from chalicelib.domain.model import StageSpec, change_status, new_run
from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
from chalicelib.domain.status import StageStatus as S
from chalicelib.service import commands, operations, runs


def _domain_run(clock, *always):
    """Stages a, b, c, d; those named in ``always`` are finally stages."""
    specs = [StageSpec(type="OTHER", name=n, always=n in always) for n in "abcd"]
    return new_run("web", 1, specs, clock.now())


def _statuses(aggregate):
    aggregate.refresh(aggregate.run.updated_at)
    return aggregate.run.status, [s.status for s in aggregate.stages]


# ---- the pure rule ----------------------------------------------------------------------------------

def test_force_skips_the_finally_stages_a_plain_cancel_spares(clock):
    plain, forced = _domain_run(clock, "d"), _domain_run(clock, "d")
    for aggregate in (plain, forced):
        change_status(aggregate.stages[0], S.IN_PROGRESS, clock.now())
    assert rules.cancel_run(plain, clock.now(), actor="ops")
    assert rules.cancel_run(forced, clock.now(), actor="ops", reason="stuck", force=True)
    assert _statuses(plain) == (S.CANCELLED, [S.CANCELLED, S.SKIPPED, S.SKIPPED, S.IDLE])
    assert _statuses(forced) == (S.CANCELLED, [S.CANCELLED, S.SKIPPED, S.SKIPPED, S.SKIPPED])
    assert forced.run.cancellation == {"by": "ops", "at": format_iso(clock.now()), "reason": "stuck",
                                       "stageId": None, "force": True}
    assert forced.run.stopping == {"mode": "CANCEL", "by": "ops", "at": format_iso(clock.now()),
                                   "reason": "stuck", "force": True}
    assert "force" not in plain.run.cancellation and "force" not in plain.run.stopping


def test_force_cancels_a_running_finally_stage_and_ends_a_cancelling_run(clock):
    aggregate = _domain_run(clock, "c", "d")
    change_status(aggregate.stages[0], S.IN_PROGRESS, clock.now())
    rules.cancel_run(aggregate, clock.now(), actor="ops")
    change_status(aggregate.stages[2], S.IN_PROGRESS, clock.now())  # the cleanup runs
    assert _statuses(aggregate)[0] == S.CANCELLING
    clock.advance(5)
    assert rules.cancel_run(aggregate, clock.now(), actor="ops", force=True)
    assert _statuses(aggregate) == (S.CANCELLED, [S.CANCELLED, S.SKIPPED, S.CANCELLED, S.SKIPPED])
    assert aggregate.stages[2].ended_at == clock.now()


def test_force_ends_a_graceful_stop_now_and_keeps_the_stop_under_after(clock):
    aggregate = _domain_run(clock, "d")
    change_status(aggregate.stages[0], S.IN_PROGRESS, clock.now())
    rules.stop_run(aggregate, clock.now(), actor="ops", grace_seconds=300)
    assert _statuses(aggregate) == (S.CANCELLING, [S.IN_PROGRESS, S.SKIPPED, S.SKIPPED, S.IDLE])
    assert rules.cancel_run(aggregate, clock.now(), actor="sre", force=True)
    assert _statuses(aggregate) == (S.CANCELLED, [S.CANCELLED, S.SKIPPED, S.SKIPPED, S.SKIPPED])
    assert aggregate.run.stopping["force"] is True and aggregate.run.stopping["after"]["mode"] == "STOP"


def test_force_skips_the_finally_stages_a_finished_run_would_still_start(clock):
    # a plain cancel left the cleanup to run (the run is CANCELLED until it starts)
    cancelled = _domain_run(clock, "d")
    change_status(cancelled.stages[0], S.IN_PROGRESS, clock.now())
    rules.cancel_run(cancelled, clock.now(), actor="ops")
    assert not rules.cancel_run(cancelled, clock.now(), actor="ops")  # a plain one: nothing to do
    assert rules.cancel_run(cancelled, clock.now(), actor="ops", force=True)
    assert _statuses(cancelled) == (S.CANCELLED, [S.CANCELLED, S.SKIPPED, S.SKIPPED, S.SKIPPED])
    # a failed run whose finally stage has not started: force-cancelled, so CANCELLED, and
    # nothing not started is left to start
    failed = _domain_run(clock, "d")
    change_status(failed.stages[0], S.IN_PROGRESS, clock.now())
    change_status(failed.stages[0], S.FAILURE, clock.now())
    assert _statuses(failed)[0] == S.FAILURE
    assert rules.cancel_run(failed, clock.now(), actor="ops", force=True)
    assert _statuses(failed) == (S.CANCELLED, [S.FAILURE, S.SKIPPED, S.SKIPPED, S.SKIPPED])


def test_force_on_a_finished_run_with_no_finally_stage_left_changes_nothing(clock):
    done = _domain_run(clock, "d")
    for stage in done.stages:
        change_status(stage, S.IN_PROGRESS, clock.now())
        change_status(stage, S.SUCCESS, clock.now())
    before = done.snapshot()
    assert not rules.cancel_run(done, clock.now(), actor="ops", force=True)
    assert done == before
    forced = _domain_run(clock, "d")
    change_status(forced.stages[0], S.IN_PROGRESS, clock.now())
    rules.cancel_run(forced, clock.now(), actor="ops", force=True)
    again = forced.snapshot()
    assert not rules.cancel_run(forced, clock.now(), actor="ops", force=True)  # twice: a no-op
    assert forced == again


def test_force_between_stages_cancels_the_next_stage_even_a_finally_one(clock):
    aggregate = _domain_run(clock, "c", "d")
    for stage in aggregate.stages[:2]:
        change_status(stage, S.IN_PROGRESS, clock.now())
        change_status(stage, S.SUCCESS, clock.now())
    assert _statuses(aggregate)[0] == S.IN_PROGRESS  # between b and the finally stages
    assert rules.cancel_run(aggregate, clock.now(), actor="ops", force=True)
    assert _statuses(aggregate) == (S.CANCELLED, [S.SUCCESS, S.SUCCESS, S.CANCELLED, S.SKIPPED])


# ---- the service, through the command table ------------------------------------------------------

def create(ctx, stages, **options):
    body = {"pipeline": "web", "stages": stages, **options}
    return runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps(body)))


def patch(ctx, stage_id, status):
    return runs.patch_stage(ctx, stage_id, PatchStageIn(status=S(status)))


def listed(ctx, status):
    found, _ = ctx.stores.runs.list_runs("web", S(status), 10, None)
    return [run.id for run in found]


def force(ctx, run_id, reason=None):
    return commands.execute(ctx, commands.CancelRun(run_id, reason, force=True), actor="ops")


STAGES = [{"type": "BUILD"}, {"type": "UNIT_TEST"}, {"type": "OTHER", "name": "cleanup", "always": True}]


def test_a_force_cancel_of_an_auto_advance_run_starts_no_finally_stage(memory_ctx):
    ctx = memory_ctx
    plain = create(ctx, STAGES, autoAdvance=True)
    patch(ctx, plain.stages[0].id, "IN_PROGRESS")
    cancelled = operations.cancel_run(ctx, plain.run.id, actor="ops")
    assert cancelled.run.status == S.CANCELLING  # the driver started the cleanup
    forced = create(ctx, STAGES, autoAdvance=True)
    patch(ctx, forced.stages[0].id, "IN_PROGRESS")
    after = force(ctx, forced.run.id, reason="runner gone")
    assert (after.run.status, [s.status for s in after.stages]) == (
        S.CANCELLED, [S.CANCELLED, S.SKIPPED, S.SKIPPED])
    stored = runs.get_run(ctx, forced.run.id)
    assert stored.run.status == S.CANCELLED and stored.run.cancellation["force"] is True
    assert forced.run.id in listed(ctx, "CANCELLED") and forced.run.id not in listed(ctx, "CANCELLING")
    with pytest.raises(IllegalTransition):  # a sender cannot start the skipped cleanup either
        patch(ctx, forced.stages[2].id, "IN_PROGRESS")


def test_a_force_cancel_ends_a_cancelling_run_and_its_listing_follows(memory_ctx):
    ctx = memory_ctx
    aggregate = create(ctx, STAGES, autoAdvance=True)
    patch(ctx, aggregate.stages[0].id, "IN_PROGRESS")
    operations.cancel_run(ctx, aggregate.run.id, actor="ops")
    assert listed(ctx, "CANCELLING") == [aggregate.run.id]
    after = force(ctx, aggregate.run.id)
    assert (after.run.status, [s.status for s in after.stages]) == (
        S.CANCELLED, [S.CANCELLED, S.SKIPPED, S.CANCELLED])
    assert listed(ctx, "CANCELLING") == [] and listed(ctx, "CANCELLED") == [aggregate.run.id]


def test_a_force_cancel_with_nothing_to_end_writes_nothing(memory_ctx):
    ctx = memory_ctx
    aggregate = create(ctx, STAGES)
    patch(ctx, aggregate.stages[0].id, "IN_PROGRESS")
    first = force(ctx, aggregate.run.id)
    again = force(ctx, aggregate.run.id, reason="again")
    assert again.run.version == first.run.version and again.run.cancellation == first.run.cancellation


def test_a_retry_takes_a_force_cancelled_run_up_again_finally_stage_included(memory_ctx):
    ctx = memory_ctx
    aggregate = create(ctx, STAGES)
    patch(ctx, aggregate.stages[0].id, "IN_PROGRESS")
    force(ctx, aggregate.run.id)
    retried = operations.retry_run(ctx, aggregate.run.id)
    assert retried.run.stopping is None and retried.run.cancellation["force"] is True
    assert (retried.run.status, [s.status for s in retried.stages]) == (S.IDLE, [S.IDLE, S.IDLE, S.IDLE])
