"""Timer and run-driver rules pinned at their edges: what must NOT happen (starting past a
timed-out stage, a gate timing out at once, a late timer moving the end, a timer for a finished
stage), each checked against the pure domain (`make mutate` checks these tests catch it)."""
from __future__ import annotations

from datetime import timedelta

import pytest

from chalicelib.domain.model import StageSpec, change_status, new_run
from chalicelib.domain.status import StageStatus
from chalicelib.domain.timers import drive, due_outcome, expected_end, fire, next_due
from tests.fixtures.clock import FakeClock

S = StageStatus


def _run(clock, *specs, auto_advance=True):
    return new_run("web", 1, list(specs) or [StageSpec(type="OTHER", name=f"s{i}") for i in range(3)],
                   clock.now(), auto_advance=auto_advance)


# ---- the run driver stops at a failure of any kind --------------------------------------------

@pytest.mark.parametrize("failed", [S.TIMED_OUT, S.FAILURE, S.CANCELLED])
def test_auto_advance_starts_nothing_after_a_stage_that_did_not_pass(failed):
    clock = FakeClock()
    aggregate = _run(clock)
    first, second, third = aggregate.stages
    change_status(first, S.IN_PROGRESS, clock.now())
    change_status(first, S.SUCCESS, clock.advance(1))
    assert drive(aggregate, clock.now()) is True
    change_status(second, failed, clock.advance(1))
    assert drive(aggregate, clock.advance(1)) is False
    assert [s.status for s in aggregate.stages] == [S.SUCCESS, failed, S.IDLE]
    assert third.started_at is None


def test_a_timed_out_stage_stops_the_run_driver_even_when_the_timer_ends_it():
    clock = FakeClock()
    aggregate = _run(clock, StageSpec(type="BUILD", name="build", timeout_seconds=10),
                     StageSpec(type="DEPLOY", name="deploy"))
    build, deploy = aggregate.stages
    change_status(build, S.IN_PROGRESS, clock.now())
    assert fire(build, clock.advance(10)) is True
    assert build.status == S.TIMED_OUT
    assert drive(aggregate, clock.now()) is False
    assert deploy.status == S.IDLE


def test_auto_advance_skips_skipped_stages_and_starts_the_next_idle_one():
    clock = FakeClock()
    aggregate = _run(clock)
    first, second, third = aggregate.stages
    change_status(first, S.IN_PROGRESS, clock.now())
    change_status(first, S.SUCCESS, clock.now())
    change_status(second, S.SKIPPED, clock.now())
    assert drive(aggregate, clock.advance(5)) is True
    assert (third.status, third.started_at) == (S.IN_PROGRESS, clock.now())


def test_auto_advance_needs_a_success_before_the_first_idle_stage():
    clock = FakeClock()
    aggregate = _run(clock)
    first, second, third = aggregate.stages
    change_status(first, S.SKIPPED, clock.now())
    assert drive(aggregate, clock.now()) is False  # only skipped so far: nothing passed yet
    assert second.status == S.IDLE


def test_auto_advance_looks_at_stages_in_position_order():
    clock = FakeClock()
    aggregate = _run(clock)
    first, second, third = aggregate.stages
    change_status(first, S.IN_PROGRESS, clock.now())
    change_status(first, S.SUCCESS, clock.now())
    aggregate.stages.reverse()  # stored order is not position order
    assert drive(aggregate, clock.now()) is True
    assert (second.status, third.status) == (S.IN_PROGRESS, S.IDLE)


# ---- deadlines: counted forward from entering the state ----------------------------------------

def test_an_approval_gate_times_out_its_timeout_after_it_started_waiting():
    clock = FakeClock()
    spec = StageSpec(type="APPROVAL", name="gate", approval="MANUAL", timeout_seconds=60)
    gate = _run(clock, spec).stages[0]
    change_status(gate, S.IN_PROGRESS, clock.advance(5))
    assert gate.status == S.WAITING_FOR_APPROVAL
    waiting_since = clock.now()
    assert gate.deadline() == waiting_since + timedelta(seconds=60)
    assert next_due(gate) == waiting_since + timedelta(seconds=60)
    assert due_outcome(gate, clock.advance(59)) is None
    assert fire(gate, clock.now()) is False
    assert gate.status == S.WAITING_FOR_APPROVAL
    assert fire(gate, clock.advance(1)) is True
    assert (gate.status, gate.ended_at) == (S.TIMED_OUT, waiting_since + timedelta(seconds=60))


def test_a_running_stage_times_out_its_timeout_after_it_started():
    clock = FakeClock()
    stage = _run(clock, StageSpec(type="BUILD", name="b", timeout_seconds=30)).stages[0]
    change_status(stage, S.IN_PROGRESS, clock.advance(7))
    assert stage.deadline() == clock.now() + timedelta(seconds=30)
    assert due_outcome(stage, clock.advance(29.999)) is None


def test_a_stage_without_a_timeout_has_no_deadline():
    clock = FakeClock()
    stage = _run(clock, StageSpec(type="BUILD", name="b")).stages[0]
    change_status(stage, S.IN_PROGRESS, clock.now())
    assert stage.deadline() is None
    assert next_due(stage) is None


# ---- a late timer: the end is the moment it became due, not the write --------------------------

def test_a_late_timeout_ends_the_stage_and_the_run_at_the_deadline():
    clock = FakeClock()
    aggregate = _run(clock, StageSpec(type="BUILD", name="b", timeout_seconds=10), auto_advance=False)
    stage = aggregate.stages[0]
    started = clock.now()
    change_status(stage, S.IN_PROGRESS, started)
    aggregate.refresh(started)
    written = clock.advance(3600)  # the timer ran an hour late
    assert fire(stage, written) is True
    aggregate.refresh(written)
    deadline = started + timedelta(seconds=10)
    assert (stage.ended_at, stage.duration_ms, stage.updated_at) == (deadline, 10_000, written)
    run = aggregate.run
    assert (run.status, run.ended_at, run.duration_ms, run.updated_at) == (
        S.TIMED_OUT, deadline, 10_000, written)


def test_a_late_expected_end_completes_the_stage_at_its_expected_moment():
    clock = FakeClock()
    aggregate = _run(clock, StageSpec(type="BUILD", name="b", expected_seconds=20), auto_advance=False)
    stage = aggregate.stages[0]
    started = clock.now()
    change_status(stage, S.IN_PROGRESS, started)
    assert fire(stage, clock.advance(19)) is False
    written = clock.advance(500)
    assert fire(stage, written) is True
    aggregate.refresh(written)
    assert (stage.status, stage.ended_at, stage.duration_ms) == (
        S.SUCCESS, started + timedelta(seconds=20), 20_000)
    assert aggregate.run.ended_at == started + timedelta(seconds=20)


# ---- no timer for a stage that is not running or waiting ---------------------------------------

@pytest.mark.parametrize("final", [S.SUCCESS, S.FAILURE, S.CANCELLED, S.TIMED_OUT, S.SKIPPED])
def test_a_finished_stage_schedules_no_timer_and_a_stale_one_does_nothing(final):
    clock = FakeClock()
    stage = _run(clock, StageSpec(type="BUILD", name="b", timeout_seconds=10, expected_seconds=5)).stages[0]
    if final != S.SKIPPED:  # a stage is skipped before it starts
        change_status(stage, S.IN_PROGRESS, clock.now())
    change_status(stage, final, clock.advance(1))
    ended = (stage.status, stage.ended_at, stage.updated_at)
    assert (stage.deadline(), expected_end(stage), next_due(stage)) == (None, None, None)
    assert due_outcome(stage, clock.advance(3600)) is None
    assert fire(stage, clock.now()) is False
    assert (stage.status, stage.ended_at, stage.updated_at) == ended


def test_an_idle_stage_schedules_no_timer():
    clock = FakeClock()
    stage = _run(clock, StageSpec(type="BUILD", name="b", timeout_seconds=10, expected_seconds=5)).stages[0]
    assert (stage.deadline(), expected_end(stage), next_due(stage)) == (None, None, None)
    assert due_outcome(stage, clock.advance(3600)) is None


def test_a_gate_approved_later_counts_its_timeout_from_the_start_not_the_wait():
    clock = FakeClock()
    gate = _run(clock, StageSpec(type="APPROVAL", name="g", approval="MANUAL", timeout_seconds=60)).stages[0]
    change_status(gate, S.IN_PROGRESS, clock.now())
    change_status(gate, S.IN_PROGRESS, clock.advance(50), via_approval=True)
    assert gate.status == S.IN_PROGRESS
    assert next_due(gate) == clock.now() + timedelta(seconds=60)


def test_the_run_driver_starts_nothing_once_every_stage_has_passed():
    clock = FakeClock()
    aggregate = _run(clock)
    for stage in aggregate.stages:
        change_status(stage, S.IN_PROGRESS, clock.now())
        change_status(stage, S.SUCCESS, clock.now())
    assert drive(aggregate, clock.now()) is False


# ---- a stop's grace end and the run's deadline (issue 15) ------------------------------------------

def _running(clock, **spec):
    aggregate = _run(clock, StageSpec(type="OTHER", name="s", **spec), auto_advance=False)
    stage = aggregate.stages[0]
    change_status(stage, S.IN_PROGRESS, clock.now())
    return stage


@pytest.mark.parametrize(("cancel", "timeout", "finish", "outcome"), [
    (10, 10, None, (S.CANCELLED, 10)),  # a tie: the stop's cancel wins
    (11, 10, None, (S.TIMED_OUT, 10)),
    (10, None, 10, (S.CANCELLED, 10)),  # a tie with the expected end: still the cancel
    (10, None, 9, (S.SUCCESS, 9)),       # it finished before the grace ended
    (10, 20, None, (S.CANCELLED, 10)),
])
def test_the_earliest_moment_that_passed_wins_a_cancel_first_on_a_tie(cancel, timeout, finish, outcome):
    clock = FakeClock()
    start = clock.now()
    stage = _running(clock, timeout_seconds=timeout, expected_seconds=finish)
    stage.cancel_at = start + timedelta(seconds=cancel)
    assert next_due(stage) == start + timedelta(seconds=min(m for m in (cancel, timeout, finish) if m))
    assert due_outcome(stage, start + timedelta(seconds=cancel - 0.001)) is None or outcome[1] < cancel
    status, moment = due_outcome(stage, start + timedelta(seconds=60))
    assert (status, moment) == (outcome[0], start + timedelta(seconds=outcome[1]))


def test_the_run_deadline_is_the_stage_deadline_when_earlier_and_not_once_it_ended():
    clock = FakeClock()
    start = clock.now()
    stage = _running(clock, timeout_seconds=100)
    stage.run_deadline = start + timedelta(seconds=40)
    assert stage.deadline() == start + timedelta(seconds=40)
    assert stage.own_deadline() == start + timedelta(seconds=100)
    stage.run_deadline = start + timedelta(seconds=400)
    assert stage.deadline() == start + timedelta(seconds=100)
    assert fire(stage, start + timedelta(seconds=500)) and stage.status == S.TIMED_OUT
    assert stage.deadline() is None  # finished: neither deadline applies


@pytest.mark.parametrize("on_timeout", ["APPROVE", "REJECT", "FAILURE"])
def test_the_run_deadline_times_out_a_gate_whatever_its_on_timeout_and_its_own_does_not(on_timeout):
    from chalicelib.domain.approvals import policy_from_spec

    clock = FakeClock()
    start = clock.now()
    policy = policy_from_spec(["alice"], 1, False, on_timeout, None, None).as_dict()
    for run_first in (True, False):
        aggregate = _run(clock, StageSpec(type="OTHER", name="gate", approval="MANUAL", timeout_seconds=50,
                                          approval_policy=policy), auto_advance=False)
        gate = aggregate.stages[0]
        change_status(gate, S.IN_PROGRESS, start)  # to its gate
        gate.run_deadline = start + timedelta(seconds=30 if run_first else 90)
        assert fire(gate, start + timedelta(seconds=100))
        expected = S.TIMED_OUT if run_first else {"APPROVE": S.IN_PROGRESS, "REJECT": S.FAILURE,
                                                   "FAILURE": S.FAILURE}[on_timeout]
        assert gate.status == expected, (run_first, on_timeout)
