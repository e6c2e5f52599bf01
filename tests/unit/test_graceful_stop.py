"""Issue 15 item 3 on the service and the in-memory store: a graceful stop and its grace timer,
finally (``always``) stages after a failure, a stop or a cancel, and the whole-run deadline --
the run's status (as read and as stored for listings) exact at every step."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from chalicelib.domain.clock import format_iso
from chalicelib.domain.errors import IllegalTransition
from chalicelib.domain.operations import DEFAULT_STOP_GRACE_SECONDS, RunDeadlinePassed
from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
from chalicelib.domain.status import StageStatus as S
from chalicelib.service import commands, operations, runs
from chalicelib.service.timers import expire_stage, sweep


def create(ctx, stages, **options):
    body = {"pipeline": "web", "stages": stages, **options}
    return runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps(body)))


def patch(ctx, stage_id, status):
    return runs.patch_stage(ctx, stage_id, PatchStageIn(status=S(status)))


def state(ctx, run_id):
    aggregate = runs.get_run(ctx, run_id)
    return aggregate.run.status.value, [s.status.value for s in aggregate.stages]


def listed(ctx, status):
    found, _ = ctx.stores.runs.list_runs("web", S(status), 10, None)
    return [run.id for run in found]


def stop(ctx, counter, grace=None, reason=None):
    return commands.execute(ctx, commands.StopRun("web", counter, reason, grace), actor="ops")


def parallel(ctx, *always, **options):
    """Stages a, b running, c not started (``always``: names of finally stages)."""
    stages = [{"type": "OTHER", "name": n, **({"always": True} if n in always else {})} for n in "abcd"]
    aggregate = create(ctx, stages, **options)
    for stage in aggregate.stages[:2]:
        patch(ctx, stage.id, "IN_PROGRESS")
    return aggregate


# ---- stop: CANCELLING, running stages finish, the grace timer ends the rest ------------------------

def test_a_stop_lets_running_stages_finish_and_starts_nothing_new(memory_ctx, clock):
    ctx = memory_ctx
    aggregate = parallel(ctx)
    run_id, (a, b, c, d) = aggregate.run.id, (s.id for s in aggregate.stages)
    stopped = stop(ctx, 1, grace=60, reason="superseded")
    assert (stopped.run.status, [s.status for s in stopped.stages]) == (
        S.CANCELLING, [S.IN_PROGRESS, S.IN_PROGRESS, S.SKIPPED, S.SKIPPED])
    assert stopped.run.stopping == {"mode": "STOP", "by": "ops", "at": format_iso(clock.now()),
                                    "reason": "superseded", "graceSeconds": 60,
                                    "graceUntil": format_iso(clock.now() + timedelta(seconds=60))}
    assert listed(ctx, "CANCELLING") == [run_id]
    with pytest.raises(IllegalTransition):  # nothing new starts: the skipped stage is final
        patch(ctx, c, "IN_PROGRESS")
    clock.advance(10)
    patch(ctx, a, "SUCCESS")  # a running stage finishes within its grace: kept as it ended
    assert state(ctx, run_id) == ("CANCELLING", ["SUCCESS", "IN_PROGRESS", "SKIPPED", "SKIPPED"])
    patch(ctx, b, "FAILURE")
    assert state(ctx, run_id) == ("CANCELLED", ["SUCCESS", "FAILURE", "SKIPPED", "SKIPPED"])
    assert listed(ctx, "CANCELLED") == [run_id] and listed(ctx, "CANCELLING") == []
    assert d  # four stages


def _seconds(n):
    return timedelta(seconds=n)


def test_the_grace_timer_cancels_what_still_runs_at_the_grace_end_exactly(memory_ctx, clock):
    ctx = memory_ctx
    aggregate = parallel(ctx)
    run_id, a, b = aggregate.run.id, aggregate.stages[0].id, aggregate.stages[1].id
    started = clock.now()
    stop(ctx, 1, grace=30)
    until = started + _seconds(30)
    assert runs.get_stage(ctx, a).cancel_at == until
    clock.advance(29)
    assert sweep(ctx).fired == {}  # not yet
    patch(ctx, a, "SUCCESS")
    clock.advance(45)  # the sweep runs late: the stage ends at the grace end all the same
    report = sweep(ctx)
    assert report.fired == {"CANCELLED": 1}
    assert state(ctx, run_id) == ("CANCELLED", ["SUCCESS", "CANCELLED", "SKIPPED", "SKIPPED"])
    ended = runs.get_stage(ctx, b)
    assert ended.ended_at == until and ended.duration_ms == 30_000 and ended.cancel_at is None
    assert expire_stage(ctx, b, 1) is None  # a repeated timer finds nothing to do


def test_the_grace_period_comes_from_the_stop_else_the_run_else_the_default(memory_ctx, clock):
    ctx = memory_ctx
    parallel(ctx, stopGraceSeconds=120)
    parallel(ctx)
    parallel(ctx, stopGraceSeconds=120)
    assert stop(ctx, 1).run.stopping["graceSeconds"] == 120
    assert stop(ctx, 2).run.stopping["graceSeconds"] == DEFAULT_STOP_GRACE_SECONDS == 600
    assert stop(ctx, 3, grace=0).run.stopping["graceSeconds"] == 0
    assert sweep(ctx).fired == {"CANCELLED": 2}  # grace 0: the next timer cancels at once
    assert state(ctx, "web:3")[0] == "CANCELLED" and state(ctx, "web:1")[0] == "CANCELLING"


def test_a_second_stop_keeps_the_first_grace_and_a_cancel_ends_it_now(memory_ctx, clock):
    ctx = memory_ctx
    aggregate = parallel(ctx)
    first = stop(ctx, 1, grace=300).run.stopping
    clock.advance(5)
    again = stop(ctx, 1, grace=1)
    assert again.run.stopping == first and again.run.version == 2  # nothing written the second time
    cancelled = operations.cancel_run(ctx, aggregate.run.id, actor="ops", reason="now")
    assert [s.status for s in cancelled.stages] == [S.CANCELLED, S.CANCELLED, S.SKIPPED, S.SKIPPED]
    assert cancelled.run.status == S.CANCELLED
    assert cancelled.run.stopping["mode"] == "CANCEL" and cancelled.run.stopping["after"] == first


def test_stopping_a_finished_run_or_one_between_stages(memory_ctx):
    ctx = memory_ctx
    done = create(ctx, ["BUILD"])
    patch(ctx, done.stages[0].id, "IN_PROGRESS")
    patch(ctx, done.stages[0].id, "SUCCESS")
    assert stop(ctx, 1).run.stopping is None  # finished: a successful no-op, nothing written
    assert state(ctx, done.run.id) == ("SUCCESS", ["SUCCESS"])
    between = create(ctx, ["BUILD", "UNIT_TEST"])
    patch(ctx, between.stages[0].id, "IN_PROGRESS")
    patch(ctx, between.stages[0].id, "SUCCESS")
    # nothing running: the next stage is CANCELLED, the point where it was stopped, as a cancel
    # marks it, so a retry (Buddy's RETRY after CodeArts' stop, say) has a stage to take up
    assert state(ctx, stop(ctx, 2).run.id) == ("CANCELLED", ["SUCCESS", "CANCELLED"])
    operations.retry_run(ctx, between.run.id)
    assert state(ctx, between.run.id) == ("IN_PROGRESS", ["SUCCESS", "IDLE"])


def test_a_stop_cancels_a_waiting_gate_at_once(memory_ctx):
    ctx = memory_ctx
    aggregate = create(ctx, [{"type": "BUILD"}, {"type": "DEPLOY_PROD", "approval": "MANUAL"}])
    patch(ctx, aggregate.stages[0].id, "IN_PROGRESS")
    patch(ctx, aggregate.stages[1].id, "IN_PROGRESS")  # to its gate
    assert state(ctx, stop(ctx, 1).run.id) == ("CANCELLING", ["IN_PROGRESS", "CANCELLED"])


def test_a_retry_takes_a_stopped_run_up_again(memory_ctx):
    ctx = memory_ctx
    aggregate = parallel(ctx)
    a, b = aggregate.stages[0].id, aggregate.stages[1].id
    stop(ctx, 1, grace=60)
    with pytest.raises(IllegalTransition):  # not while its stages are still being stopped
        operations.retry_stage(ctx, aggregate.stages[2].id)
    patch(ctx, a, "SUCCESS")
    patch(ctx, b, "FAILURE")
    retried = operations.retry_stage(ctx, b)
    assert retried.attempt == 2 and retried.status == S.IDLE
    after = runs.get_run(ctx, aggregate.run.id)
    assert after.run.stopping is None and after.run.cancellation["by"] == "ops"
    assert (after.run.status, [s.status for s in after.stages]) == (
        S.IN_PROGRESS, [S.SUCCESS, S.IDLE, S.IDLE, S.IDLE])  # the skipped ones after it too


# ---- finally stages (always: true) --------------------------------------------------------------

def test_a_stop_spares_finally_stages_and_the_run_stays_cancelled_after_them(memory_ctx, clock):
    ctx = memory_ctx
    aggregate = parallel(ctx, "d")
    run_id, a, b, d = aggregate.run.id, aggregate.stages[0].id, aggregate.stages[1].id, aggregate.stages[3].id
    stop(ctx, 1, grace=30)
    assert state(ctx, run_id) == ("CANCELLING", ["IN_PROGRESS", "IN_PROGRESS", "SKIPPED", "IDLE"])
    clock.advance(31)
    sweep(ctx)
    assert state(ctx, run_id) == ("CANCELLED", ["CANCELLED", "CANCELLED", "SKIPPED", "IDLE"])
    patch(ctx, d, "IN_PROGRESS")  # the sender runs its cleanup
    assert state(ctx, run_id)[0] == "CANCELLING" and listed(ctx, "CANCELLING") == [run_id]
    clock.advance(3600)
    assert sweep(ctx).fired == {}  # neither the grace nor anything else ends a finally stage
    patch(ctx, d, "SUCCESS")
    assert state(ctx, run_id) == ("CANCELLED", ["CANCELLED", "CANCELLED", "SKIPPED", "SUCCESS"])
    assert a and b


def test_the_driver_runs_finally_stages_after_a_failure_and_the_run_stays_failed(memory_ctx):
    ctx = memory_ctx
    stages = [{"type": "BUILD", "expectedSeconds": 5}, {"type": "UNIT_TEST"},
              {"type": "OTHER", "name": "notify", "always": True},
              {"type": "OTHER", "name": "cleanup", "always": True}]
    aggregate = create(ctx, stages, autoAdvance=True)
    build, tests, notify, cleanup = (s.id for s in aggregate.stages)
    patch(ctx, build, "IN_PROGRESS")
    patch(ctx, build, "SUCCESS")
    assert state(ctx, aggregate.run.id)[1] == ["SUCCESS", "IN_PROGRESS", "IDLE", "IDLE"]
    patch(ctx, tests, "FAILURE")  # the driver starts the first finally stage in the same write
    assert state(ctx, aggregate.run.id) == ("IN_PROGRESS", ["SUCCESS", "FAILURE", "IN_PROGRESS", "IDLE"])
    patch(ctx, notify, "SUCCESS")
    assert state(ctx, aggregate.run.id) == ("IN_PROGRESS", ["SUCCESS", "FAILURE", "SUCCESS", "IN_PROGRESS"])
    patch(ctx, cleanup, "SUCCESS")
    assert state(ctx, aggregate.run.id) == ("FAILURE", ["SUCCESS", "FAILURE", "SUCCESS", "SUCCESS"])
    assert listed(ctx, "FAILURE") == [aggregate.run.id]


def test_a_cancel_is_immediate_but_finally_stages_still_run_after_it(memory_ctx):
    ctx = memory_ctx
    stages = [{"type": "BUILD"}, {"type": "UNIT_TEST"}, {"type": "OTHER", "name": "cleanup", "always": True}]
    aggregate = create(ctx, stages, autoAdvance=True)
    patch(ctx, aggregate.stages[0].id, "IN_PROGRESS")
    cancelled = operations.cancel_run(ctx, aggregate.run.id, actor="ops")
    assert (cancelled.run.status, [s.status for s in cancelled.stages]) == (
        S.CANCELLING, [S.CANCELLED, S.SKIPPED, S.IN_PROGRESS])  # the driver started the cleanup
    patch(ctx, aggregate.stages[2].id, "SUCCESS")
    assert state(ctx, aggregate.run.id) == ("CANCELLED", ["CANCELLED", "SKIPPED", "SUCCESS"])
    # cancelling again while a finally stage runs ends it too (cancel is immediate)
    again = create(ctx, stages, autoAdvance=True)
    patch(ctx, again.stages[0].id, "IN_PROGRESS")
    operations.cancel_run(ctx, again.run.id, actor="ops")
    twice = operations.cancel_run(ctx, again.run.id, actor="ops")
    assert (twice.run.status, [s.status for s in twice.stages]) == (
        S.CANCELLED, [S.CANCELLED, S.SKIPPED, S.CANCELLED])


# ---- the whole-run deadline (timeoutSeconds bounds the run) ---------------------------------------

def test_the_run_deadline_times_out_the_run_not_only_each_stage(memory_ctx, clock):
    ctx = memory_ctx
    stages = [{"type": "BUILD", "timeoutSeconds": 1000}, {"type": "UNIT_TEST", "timeoutSeconds": 1000},
              {"type": "OTHER", "name": "cleanup", "always": True}]
    aggregate = create(ctx, stages, timeoutSeconds=100)
    build, tests, cleanup = (s.id for s in aggregate.stages)
    start = clock.now()
    patch(ctx, build, "IN_PROGRESS")
    assert runs.get_stage(ctx, build).run_deadline == start + _seconds(100)
    clock.advance(60)
    patch(ctx, build, "SUCCESS")
    patch(ctx, tests, "IN_PROGRESS")  # its own timeout is far: the run's deadline comes first
    assert runs.get_stage(ctx, tests).deadline() == start + _seconds(100)
    clock.advance(39)
    assert sweep(ctx).fired == {}
    clock.advance(5)
    assert sweep(ctx).fired == {"TIMED_OUT": 1}
    assert state(ctx, aggregate.run.id) == ("TIMED_OUT", ["SUCCESS", "TIMED_OUT", "IDLE"])
    assert listed(ctx, "TIMED_OUT") == [aggregate.run.id]
    ended = runs.get_stage(ctx, tests)
    assert ended.ended_at == start + _seconds(100) and ended.duration_ms == 40_000
    patch(ctx, cleanup, "IN_PROGRESS")  # a finally stage may still run past the deadline
    assert runs.get_stage(ctx, cleanup).run_deadline is None
    patch(ctx, cleanup, "SUCCESS")
    assert state(ctx, aggregate.run.id)[0] == "TIMED_OUT"
    with pytest.raises(RunDeadlinePassed):  # a retry would only time out again
        operations.retry_run(ctx, aggregate.run.id)


def test_the_run_deadline_ends_parallel_stages_and_a_waiting_gate_regardless_of_on_timeout(memory_ctx, clock):
    ctx = memory_ctx
    stages = [{"type": "BUILD"}, {"type": "DEPLOY_PROD", "approval": "MANUAL", "approvers": ["alice"],
                                  "onTimeout": "APPROVE", "timeoutSeconds": 5000}]
    aggregate = create(ctx, stages, timeoutSeconds=50)
    patch(ctx, aggregate.stages[0].id, "IN_PROGRESS")
    patch(ctx, aggregate.stages[1].id, "IN_PROGRESS")  # at its gate
    clock.advance(50)
    assert sweep(ctx).fired == {"TIMED_OUT": 2}
    assert state(ctx, aggregate.run.id) == ("TIMED_OUT", ["TIMED_OUT", "TIMED_OUT"])


def test_a_scheduled_run_repeats_the_grace_period_and_the_finally_stages(memory_ctx):
    ctx = memory_ctx
    create(ctx, ["BUILD", {"type": "OTHER", "name": "cleanup", "always": True}], stopGraceSeconds=45)
    again = commands.execute(ctx, commands.SchedulePipeline("web"), actor="ops")
    assert again.run.stop_grace_seconds == 45
    assert [s.always for s in again.stages] == [False, True]
    # a layout without finally stages is stored as before they existed (no "always" key)
    create(ctx, ["BUILD"])
    layout = ctx.stores.pipelines.claim_counter("web", at=ctx.clock.now())[1]
    assert all("always" not in entry for entry in layout["stages"])


# ---- the rules at their edges (pure domain) ---------------------------------------------------------

def _domain_run(clock, *specs, **options):
    from chalicelib.domain.model import StageSpec, new_run

    specs_ = [StageSpec(type="OTHER", name=n, **kw) for n, kw in specs]
    return new_run("web", 1, specs_, clock.now(), **options)


def test_a_cancel_records_who_when_and_why_as_the_runs_stopping(clock):
    from chalicelib.domain import operations as rules
    from chalicelib.domain.model import change_status

    aggregate = _domain_run(clock, ("a", {}), ("b", {}))
    change_status(aggregate.stages[0], S.IN_PROGRESS, clock.now())
    clock.advance(3)
    assert rules.cancel_run(aggregate, clock.now(), actor="ops", reason="why")
    assert aggregate.run.stopping == {"mode": "CANCEL", "by": "ops", "at": format_iso(clock.now()),
                                      "reason": "why"}


def test_a_retry_is_refused_from_the_deadline_on_and_allowed_before_it(clock):
    from chalicelib.domain import operations as rules
    from chalicelib.domain.model import change_status

    aggregate = _domain_run(clock, ("a", {}), timeout_seconds=100)
    stage = aggregate.stages[0]
    change_status(stage, S.IN_PROGRESS, clock.now())
    change_status(stage, S.FAILURE, clock.advance(10))
    aggregate.refresh(clock.now())
    start = aggregate.run.started_at
    assert rules.run_deadline(aggregate) == start + timedelta(seconds=100)
    before = aggregate.snapshot()
    assert rules.retry_stage(before, stage.id, start + timedelta(seconds=99.999))  # before it: allowed
    with pytest.raises(RunDeadlinePassed) as refused:  # at it exactly: refused
        rules.retry_run(aggregate, "FAILED", start + timedelta(seconds=100))
    assert refused.value.details == {"runDeadline": format_iso(start + timedelta(seconds=100))}
    assert "timeoutSeconds (100)" in refused.value.message


def test_a_stage_retry_while_the_run_is_being_stopped_says_so(clock):
    from chalicelib.domain import operations as rules
    from chalicelib.domain.model import change_status

    aggregate = _domain_run(clock, ("a", {}), ("b", {}))
    change_status(aggregate.stages[0], S.IN_PROGRESS, clock.now())
    rules.stop_run(aggregate, clock.now(), actor="ops", grace_seconds=60)
    with pytest.raises(IllegalTransition, match="being stopped") as refused:
        rules.retry_stage(aggregate, aggregate.stages[1].id, clock.now())
    assert refused.value.details["stageId"] == aggregate.stages[0].id


def test_a_gate_whose_own_timeout_falls_with_the_run_deadline_is_timed_out_by_the_run(clock):
    from chalicelib.domain.approvals import policy_from_spec
    from chalicelib.domain.model import change_status
    from chalicelib.domain.timers import fire, stamp_run_deadline

    policy = policy_from_spec(["alice"], 1, False, "APPROVE", None, None).as_dict()
    aggregate = _domain_run(clock, ("gate", {"approval": "MANUAL", "timeout_seconds": 30,
                                             "approval_policy": policy}), timeout_seconds=30)
    gate = aggregate.stages[0]
    change_status(gate, S.IN_PROGRESS, clock.now())  # to its gate
    stamp_run_deadline(aggregate, clock.now())
    assert gate.run_deadline == gate.own_deadline()
    assert fire(gate, clock.advance(30)) and gate.status == S.TIMED_OUT  # not approved by onTimeout
