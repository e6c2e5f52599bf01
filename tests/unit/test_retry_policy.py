"""Automatic retry policies (domain/retries.py) on the pure domain and through the services on
the in-memory store: which endings are retried, the backoff and its cap, the budget, the timer
that starts the attempt (injected clock, no sleeps), a cancel winning, a manual retry taking the
pending one, the run's status while a retry is pending, and the request model."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from pydantic import ValidationError

from chalicelib import wiring
from chalicelib.domain import operations as ops
from chalicelib.domain.clock import format_iso
from chalicelib.domain.errors import IllegalTransition
from chalicelib.domain.model import StageSpec, change_status, new_run, run_status_of
from chalicelib.domain.retries import (
    MAX_BACKOFF_SECONDS,
    RetryPolicy,
    backoff_seconds,
    retry_due,
    schedule_retries,
    schedule_retry,
)
from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
from chalicelib.domain.status import StageStatus as S
from chalicelib.domain.timers import drive, fire, next_due
from chalicelib.service import operations, runs
from chalicelib.service.timers import expire_stage, sweep
from chalicelib.settings import Settings
from tests.fixtures.clock import FakeClock

POLICY = {"max": 2, "when": ["FAILURE", "TIMED_OUT"], "backoffSeconds": 10}


def run_of(clock, policy=POLICY, **spec):
    specs = [StageSpec(type="BUILD", name="build", retry_policy=policy, **spec),
             StageSpec(type="DEPLOY_PROD", name="ship")]
    return new_run("web", 1, specs, clock.now())


def step(aggregate, clock, status, i=0, seconds=1.0):
    """One change as the service makes it: the rule, then the automatic retries, then refresh."""
    before = aggregate.snapshot()
    now = clock.advance(seconds)
    change_status(aggregate.stages[i], status, now)
    schedule_retries(before, aggregate, now)
    aggregate.refresh(now)
    return aggregate.stages[i]


def timer(aggregate, clock, seconds, i=0):
    before = aggregate.snapshot()
    now = clock.advance(seconds)
    fired = fire(aggregate.stages[i], now)
    schedule_retries(before, aggregate, now)
    aggregate.refresh(now)
    return fired


# ---- the rule ----------------------------------------------------------------------------------

def test_a_failed_attempt_is_recorded_and_the_next_one_waits_for_its_backoff():
    clock = FakeClock("2026-03-20T17:00:00.000Z")
    aggregate = run_of(clock)
    step(aggregate, clock, S.IN_PROGRESS)
    stage = step(aggregate, clock, S.FAILURE, seconds=4)
    assert (stage.status, stage.attempt, stage.auto_retries, stage.retry_reason) == (
        S.RETRY_PENDING, 2, 1, "FAILURE")
    assert format_iso(stage.next_retry_at) == "2026-03-20T17:00:15.000Z"  # ended at :05, + 10 s
    assert (stage.started_at, stage.ended_at, stage.duration_ms) == (None, None, None)
    assert stage.attempts == [{"attempt": 1, "status": "FAILURE", "startedAt": "2026-03-20T17:00:01.000Z",
                               "endedAt": "2026-03-20T17:00:05.000Z", "duration": 4}]
    assert aggregate.run.status == S.RETRY_PENDING  # not over: it will start again by itself
    assert aggregate.run.ended_at is None
    assert next_due(stage) == stage.next_retry_at == retry_due(stage)


def test_the_timer_starts_the_attempt_at_its_moment_never_before():
    clock = FakeClock("2026-03-20T17:00:00.000Z")
    aggregate = run_of(clock)
    step(aggregate, clock, S.IN_PROGRESS)
    step(aggregate, clock, S.FAILURE)
    assert timer(aggregate, clock, 9.999) is False
    assert aggregate.stages[0].status == S.RETRY_PENDING
    assert timer(aggregate, clock, 5) is True  # late: it starts when it really does
    stage = aggregate.stages[0]
    assert (stage.status, stage.attempt, stage.started_at, stage.next_retry_at, stage.retry_reason) == (
        S.IN_PROGRESS, 2, clock.now(), None, None)
    assert aggregate.run.status == S.IN_PROGRESS
    assert timer(aggregate, clock, 100) is False  # nothing more to do


@pytest.mark.parametrize("initial, expected", [
    (10, [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600]),
    (0, [0] * 10),
    (3600, [3600] * 10),
    (1000, [1000, 2000, 3600, 3600, 3600, 3600, 3600, 3600, 3600, 3600]),
])
def test_the_backoff_doubles_from_the_initial_one_up_to_an_hour(initial, expected):
    policy = RetryPolicy(max=10, backoff_seconds=initial)
    assert [backoff_seconds(policy, n) for n in range(1, 11)] == expected
    assert MAX_BACKOFF_SECONDS == 3600


def test_max_retries_then_the_failure_stays_and_ends_the_run():
    clock = FakeClock()
    aggregate = run_of(clock, policy={"max": 2, "when": ["FAILURE"], "backoffSeconds": 5})
    waits = []
    for _ in range(2):
        step(aggregate, clock, S.IN_PROGRESS)
        stage = step(aggregate, clock, S.FAILURE)
        waits.append((stage.next_retry_at - clock.now()).total_seconds())
        assert timer(aggregate, clock, waits[-1])
        assert aggregate.stages[0].status == S.IN_PROGRESS
        aggregate.stages[0].attempts.clear()  # as the store does once written
    assert waits == [5, 10]
    stage = step(aggregate, clock, S.FAILURE)
    assert (stage.status, stage.attempt, stage.auto_retries) == (S.FAILURE, 3, 2)
    assert aggregate.run.status == S.FAILURE


def test_the_rule_answers_which_stages_it_scheduled_and_schedules_nothing_else():
    clock = FakeClock()
    aggregate = run_of(clock, policy={"max": 1, "when": ["TIMED_OUT"], "backoffSeconds": 0})
    for stage in aggregate.stages:
        change_status(stage, S.IN_PROGRESS, clock.now())
    before = aggregate.snapshot()
    for stage in aggregate.stages:
        change_status(stage, S.TIMED_OUT, clock.advance(1))
    assert schedule_retries(before, aggregate, clock.now()) == [aggregate.stages[0]]  # ship: no policy
    stage = aggregate.stages[0]
    change_status(stage, S.IN_PROGRESS, clock.now())
    change_status(stage, S.TIMED_OUT, clock.advance(1))
    assert schedule_retry(stage, clock.now()) is False  # budget spent
    assert (stage.status, stage.attempt) == (S.TIMED_OUT, 2)
    other = run_of(clock, policy={"max": 1, "when": ["TIMED_OUT"], "backoffSeconds": 0}).stages[0]
    change_status(other, S.IN_PROGRESS, clock.now())
    change_status(other, S.FAILURE, clock.advance(1))
    assert schedule_retry(other, clock.now()) is False  # FAILURE is not in when
    assert (other.status, other.attempt, other.attempts) == (S.FAILURE, 1, [])


@pytest.mark.parametrize("when, ending, retried", [
    (["FAILURE"], S.FAILURE, True),
    (["FAILURE"], S.TIMED_OUT, False),
    (["TIMED_OUT"], S.TIMED_OUT, True),
    (["TIMED_OUT"], S.FAILURE, False),
    (["FAILURE", "TIMED_OUT"], S.CANCELLED, False),  # a cancel is never retried
    (["FAILURE", "TIMED_OUT"], S.SUCCESS, False),
])
def test_only_the_endings_listed_in_when_are_retried(when, ending, retried):
    clock = FakeClock()
    aggregate = run_of(clock, policy={"max": 1, "when": when, "backoffSeconds": 0})
    step(aggregate, clock, S.IN_PROGRESS)
    stage = step(aggregate, clock, ending)
    assert stage.status == (S.RETRY_PENDING if retried else ending)


def test_a_timeout_by_the_timer_is_retried_from_the_deadline_not_from_a_late_timer():
    clock = FakeClock("2026-03-20T17:00:00.000Z")
    aggregate = run_of(clock, timeout_seconds=30)
    step(aggregate, clock, S.IN_PROGRESS, seconds=0)
    assert timer(aggregate, clock, 45)  # 15 s late
    stage = aggregate.stages[0]
    assert (stage.status, stage.retry_reason, stage.attempts[-1]["status"]) == (
        S.RETRY_PENDING, "TIMED_OUT", "TIMED_OUT")
    assert format_iso(stage.next_retry_at) == "2026-03-20T17:00:40.000Z"  # deadline :30 + 10 s
    assert timer(aggregate, clock, 0)  # already due: it starts now
    assert stage.status == S.IN_PROGRESS and stage.deadline() == clock.now() + timedelta(seconds=30)


def test_decisions_of_people_are_not_retried_by_a_machine():
    clock = FakeClock()
    specs = [StageSpec(type="DEPLOY_PROD", name="ship", approval="MANUAL", timeout_seconds=60,
                       retry_policy={"max": 3, "when": ["FAILURE", "TIMED_OUT"], "backoffSeconds": 0})]
    rejected = new_run("web", 1, specs, clock.now())
    step(rejected, clock, S.IN_PROGRESS)
    assert rejected.stages[0].status == S.WAITING_FOR_APPROVAL
    before = rejected.snapshot()
    ops.decide(rejected, rejected.stages[0].id, ops.REJECTED, clock.advance(1), actor="alice")
    assert schedule_retries(before, rejected, clock.now()) == []
    assert rejected.stages[0].status == S.FAILURE
    expired = new_run("web", 2, specs, clock.now())
    step(expired, clock, S.IN_PROGRESS)
    assert timer(expired, clock, 61)  # the gate expired: TIMED_OUT, nobody decided
    assert expired.stages[0].status == S.TIMED_OUT


def test_a_gated_stage_asks_for_approval_again_when_its_retry_starts():
    clock = FakeClock()
    specs = [StageSpec(type="DEPLOY_PROD", name="ship", approval="MANUAL",
                       retry_policy={"max": 1, "when": ["FAILURE"], "backoffSeconds": 0})]
    aggregate = new_run("web", 1, specs, clock.now())
    step(aggregate, clock, S.IN_PROGRESS)
    ops.decide(aggregate, aggregate.stages[0].id, ops.APPROVED, clock.advance(1), actor="alice")
    stage = step(aggregate, clock, S.FAILURE)
    assert stage.status == S.RETRY_PENDING and stage.approval_decision is None
    assert timer(aggregate, clock, 0)
    assert (stage.status, stage.waiting_since, stage.attempt) == (S.WAITING_FOR_APPROVAL, clock.now(), 2)


def test_a_stage_at_the_attempt_cap_is_not_retried():
    clock = FakeClock()
    aggregate = run_of(clock)
    aggregate.stages[0].attempt = ops.MAX_ATTEMPTS
    step(aggregate, clock, S.IN_PROGRESS)
    assert step(aggregate, clock, S.FAILURE).status == S.FAILURE


# ---- people and the pending retry ---------------------------------------------------------------

def pending(clock=None):
    clock = clock or FakeClock()
    aggregate = run_of(clock)
    step(aggregate, clock, S.IN_PROGRESS)
    step(aggregate, clock, S.FAILURE)
    aggregate.stages[0].attempts.clear()  # stored
    return aggregate, clock


def test_a_cancel_of_the_stage_wins_over_the_pending_retry():
    aggregate, clock = pending()
    assert ops.cancel_stage(aggregate, aggregate.stages[0].id, clock.advance(1), actor="alice") is True
    stage = aggregate.stages[0]
    assert (stage.status, stage.attempt, stage.next_retry_at) == (S.CANCELLED, 2, None)
    assert aggregate.stages[1].status == S.SKIPPED
    assert fire(stage, clock.advance(60)) is False  # the timer finds nothing to start
    aggregate.refresh(clock.now())
    assert aggregate.run.status == S.CANCELLED


def test_a_cancel_of_the_run_wins_over_the_pending_retry():
    aggregate, clock = pending()
    assert ops.cancel_run(aggregate, clock.advance(1), actor="alice") is True
    assert [s.status for s in aggregate.stages] == [S.CANCELLED, S.SKIPPED]
    aggregate.refresh(clock.now())
    assert aggregate.run.status == S.CANCELLED


@pytest.mark.parametrize("how", ["stage", "run FAILED", "run ALL"])
def test_a_manual_retry_takes_the_pending_retry_and_makes_no_second_attempt(how):
    aggregate, clock = pending()
    now = clock.advance(1)
    if how == "stage":
        ops.retry_stage(aggregate, aggregate.stages[0].id, now)
    else:
        ops.retry_run(aggregate, how.split()[1], now)
    stage = aggregate.stages[0]
    assert (stage.status, stage.attempt, stage.auto_retries, stage.next_retry_at, stage.retry_reason,
            stage.attempts, stage.updated_at) == (S.IDLE, 2, 1, None, None, [], now)
    assert fire(stage, clock.advance(60)) is False


def test_a_sender_reporting_the_attempt_running_uses_the_pending_retry():
    aggregate, clock = pending()
    stage = step(aggregate, clock, S.IN_PROGRESS)
    assert (stage.status, stage.attempt, stage.next_retry_at) == (S.IN_PROGRESS, 2, None)
    with pytest.raises(IllegalTransition):
        change_status(stage, S.RETRY_PENDING, clock.now())  # only the rule puts a stage there


def test_the_run_driver_waits_for_the_retry_then_goes_on():
    clock = FakeClock()
    specs = [StageSpec(type="BUILD", name="build", expected_seconds=5,
                       retry_policy={"max": 1, "when": ["FAILURE"], "backoffSeconds": 3}),
             StageSpec(type="UNIT_TEST", name="test", expected_seconds=5)]
    aggregate = new_run("web", 1, specs, clock.now(), auto_advance=True)
    step(aggregate, clock, S.IN_PROGRESS)
    step(aggregate, clock, S.FAILURE)
    assert drive(aggregate, clock.now()) is False  # RETRY_PENDING holds the run
    assert timer(aggregate, clock, 3)
    assert timer(aggregate, clock, 5)  # expected end: SUCCESS
    assert drive(aggregate, clock.now()) is True
    assert [s.status for s in aggregate.stages] == [S.SUCCESS, S.IN_PROGRESS]


@pytest.mark.parametrize("statuses, status", [
    ([S.RETRY_PENDING, S.IDLE], S.RETRY_PENDING),
    ([S.RETRY_PENDING, S.FAILURE], S.RETRY_PENDING),
    ([S.RETRY_PENDING, S.CANCELLED], S.RETRY_PENDING),
    ([S.RETRY_PENDING, S.IN_PROGRESS], S.IN_PROGRESS),
    ([S.RETRY_PENDING, S.WAITING_FOR_APPROVAL], S.WAITING_FOR_APPROVAL),
])
def test_a_pending_retry_comes_after_running_and_waiting_and_before_any_failure(statuses, status):
    specs = [StageSpec(type="OTHER", name=f"s{i}") for i in range(2)]
    aggregate = new_run("web", 1, specs, FakeClock().now())
    for stage, value in zip(aggregate.stages, statuses, strict=True):
        stage.status = value
    assert run_status_of(aggregate.stages) == status


# ---- the request model ----------------------------------------------------------------------------

def spec(**fields):
    body = {"pipeline": "web", "stages": [{"type": "BUILD", **fields}]}
    return CreateRunIn.model_validate_json(json.dumps(body)).stages[0]


def test_a_number_is_max_and_when_defaults_to_both_endings():
    assert spec(retry=3).retry_policy() == {"max": 3, "when": ["FAILURE", "TIMED_OUT"], "backoffSeconds": 0}
    assert spec(retry={"max": 1, "when": ["TIMED_OUT", "FAILURE"], "backoffSeconds": 30}).retry_policy() == {
        "max": 1, "when": ["FAILURE", "TIMED_OUT"], "backoffSeconds": 30}
    assert spec().retry_policy() is None


@pytest.mark.parametrize("retry", [
    0, 11, -1, "2", True, {"max": 0}, {"max": 11}, {"when": ["FAILURE"]},
    {"max": 1, "when": []}, {"max": 1, "when": ["CANCELLED"]}, {"max": 1, "when": ["FAILURE", "FAILURE"]},
    {"max": 1, "backoffSeconds": -1}, {"max": 1, "backoffSeconds": 3601}, {"max": 1, "backoffSeconds": 1.5},
    {"max": 1, "extra": 1},
])
def test_a_policy_out_of_bounds_is_refused(retry):
    with pytest.raises(ValidationError):
        spec(retry=retry)


# ---- through the services, on the in-memory store ---------------------------------------------------

@pytest.fixture
def ctx():
    return wiring.memory_context(Settings(table_name="unused", region="us-east-1"),
                                 FakeClock("2026-03-20T17:00:00.000Z"))


def create(ctx, **stage):
    body = {"pipeline": "web", "stages": [{"type": "BUILD", **stage}, "DEPLOY_PROD"]}
    return runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps(body)))


def patch(ctx, stage_id, status):
    return runs.patch_stage(ctx, stage_id, PatchStageIn(status=status))


def test_the_sweeper_starts_each_retry_when_due_and_the_history_holds_every_attempt(ctx):
    run = create(ctx, retry={"max": 2, "backoffSeconds": 10}, timeoutSeconds=60)
    build = run.stages[0].id
    patch(ctx, build, S.IN_PROGRESS)
    assert patch(ctx, build, S.FAILURE).status == S.RETRY_PENDING  # the PATCH answers the outcome
    assert runs.get_run(ctx, run.run.id).run.status == S.RETRY_PENDING
    ctx.clock.advance(9)
    assert sweep(ctx).fired == {}
    ctx.clock.advance(1)
    assert sweep(ctx).fired == {"IN_PROGRESS": 1}
    ctx.clock.advance(60)
    assert sweep(ctx).fired == {"TIMED_OUT": 1}  # attempt 2 timed out: retry 2 in 20 s
    stage = runs.get_stage(ctx, build)
    assert (stage.status, stage.attempt, stage.auto_retries, format_iso(stage.next_retry_at)) == (
        S.RETRY_PENDING, 3, 2, "2026-03-20T17:01:30.000Z")
    ctx.clock.advance(20)
    assert sweep(ctx).fired == {"IN_PROGRESS": 1}
    patch(ctx, build, S.FAILURE)  # no retry left
    assert runs.get_run(ctx, run.run.id).run.status == S.FAILURE
    history, _ = runs.stage_attempts(ctx, build, 10, None)
    assert [(a["attempt"], a["status"]) for a in history] == [(2, "TIMED_OUT"), (1, "FAILURE")]


def test_a_timer_of_a_retry_taken_by_hand_or_cancelled_is_stale(ctx):
    run = create(ctx, retry={"max": 3, "backoffSeconds": 30})
    build = run.stages[0].id
    patch(ctx, build, S.IN_PROGRESS)
    patch(ctx, build, S.FAILURE)
    assert operations.retry_stage(ctx, build).status == S.IDLE
    ctx.clock.advance(30)
    assert expire_stage(ctx, build, 2) is None
    assert runs.get_stage(ctx, build).status == S.IDLE
    patch(ctx, build, S.IN_PROGRESS)
    patch(ctx, build, S.FAILURE)
    assert operations.cancel_run(ctx, run.run.id, actor="alice").run.status == S.CANCELLED
    ctx.clock.advance(120)
    assert expire_stage(ctx, build, 3) is None
    stage = runs.get_stage(ctx, build)
    assert (stage.status, stage.attempt, stage.auto_retries) == (S.CANCELLED, 3, 2)


def test_the_policy_is_kept_in_the_pipeline_layout_for_the_next_scheduled_run(ctx):
    from chalicelib.service import pipelines

    create(ctx, retry={"max": 2, "when": ["TIMED_OUT"], "backoffSeconds": 5})
    again = pipelines.schedule(ctx, "web", actor="alice")
    assert again.stages[0].retry_policy == {"max": 2, "when": ["TIMED_OUT"], "backoffSeconds": 5}


# ---- with a graceful stop and the run's own deadline (domain/operations.stop_run, timers) --------

def test_a_stop_cancels_a_pending_retry_at_once_and_the_run_ends_cancelled():
    aggregate, clock = pending()
    assert ops.stop_run(aggregate, clock.advance(1), actor="alice") is True
    stage = aggregate.stages[0]
    assert (stage.status, stage.next_retry_at) == (S.CANCELLED, None)
    assert fire(stage, clock.advance(60)) is False  # the retry's timer finds nothing to start
    aggregate.refresh(clock.now())
    assert aggregate.run.status == S.CANCELLED


def test_an_attempt_failing_in_a_stops_grace_period_is_not_retried():
    clock = FakeClock("2026-03-20T17:00:00.000Z")
    aggregate = run_of(clock)
    step(aggregate, clock, S.IN_PROGRESS)
    assert ops.stop_run(aggregate, clock.advance(1), actor="alice", grace_seconds=300) is True
    aggregate.refresh(clock.now())
    assert aggregate.run.status == S.CANCELLING  # the running build may finish
    stage = step(aggregate, clock, S.FAILURE)
    assert (stage.status, stage.attempt, stage.auto_retries) == (S.FAILURE, 1, 0)
    assert aggregate.run.status == S.CANCELLED  # a stop is the operator's last word


def test_a_stage_timed_out_by_the_runs_deadline_is_not_retried():
    clock = FakeClock("2026-03-20T17:00:00.000Z")
    specs = [StageSpec(type="BUILD", name="build", retry_policy=POLICY)]
    aggregate = new_run("web", 1, specs, clock.now(), timeout_seconds=60)
    step(aggregate, clock, S.IN_PROGRESS)
    from chalicelib.domain.timers import stamp_run_deadline

    stamp_run_deadline(aggregate, clock.now())
    assert timer(aggregate, clock, 120) is True
    stage = aggregate.stages[0]
    assert (stage.status, stage.attempt, stage.auto_retries) == (S.TIMED_OUT, 1, 0)
    assert aggregate.run.status == S.TIMED_OUT


def test_a_retry_pending_when_the_runs_deadline_comes_times_out_then():
    clock = FakeClock("2026-03-20T17:00:00.000Z")
    policy = {"max": 2, "when": ["FAILURE"], "backoffSeconds": 600}
    specs = [StageSpec(type="BUILD", name="build", retry_policy=policy)]
    aggregate = new_run("web", 1, specs, clock.now(), timeout_seconds=300)
    step(aggregate, clock, S.IN_PROGRESS)
    stage = step(aggregate, clock, S.FAILURE)
    assert stage.status == S.RETRY_PENDING
    from chalicelib.domain.timers import stamp_run_deadline

    stamp_run_deadline(aggregate, clock.now())
    assert next_due(stage) == stage.run_deadline < stage.next_retry_at  # the deadline comes first
    assert timer(aggregate, clock, 400) is True
    assert (stage.status, stage.attempt) == (S.TIMED_OUT, 2)
    aggregate.refresh(clock.now())
    assert aggregate.run.status == S.TIMED_OUT
