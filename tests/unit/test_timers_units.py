"""Timer pieces in isolation: the domain rules, stream-record arming, execution names, the
Lambda handlers' translation, and the local ticker."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from chalicelib import wiring
from chalicelib.adapters.stepfunctions import (
    StepFunctionsScheduler,
    execution_arn,
    execution_input,
    execution_name,
)
from chalicelib.domain.clock import format_iso
from chalicelib.domain.model import StageSpec, change_status, new_run
from chalicelib.domain.status import StageStatus
from chalicelib.domain.timers import drive, due_outcome, expected_end, fire, next_due
from chalicelib.service.ports import DueTimer
from chalicelib.service.timers import arm_timers, wait_seconds, waits_on_workflow
from chalicelib.settings import Settings
from chalicelib.store.stream import NO_DEADLINE, armed_timer, disarmed_timer
from chalicelib.ticker import Ticker
from tests.fixtures.clock import FakeClock

S = StageStatus


def _stage(clock, **spec):
    aggregate = new_run("web", 1, [StageSpec(type="BUILD", name="BUILD", **spec)], clock.now())
    return aggregate.stages[0]


# ---- domain -----------------------------------------------------------------------------------

def test_next_due_is_the_earlier_of_timeout_and_expected_end():
    clock = FakeClock()
    stage = _stage(clock, timeout_seconds=60, expected_seconds=20)
    assert next_due(stage) is None  # IDLE: no timer
    change_status(stage, S.IN_PROGRESS, clock.now())
    assert expected_end(stage) == clock.now() + timedelta(seconds=20)
    assert next_due(stage) == clock.now() + timedelta(seconds=20)
    stage.expected_seconds = 90
    assert next_due(stage) == clock.now() + timedelta(seconds=60)


def test_expected_seconds_do_not_run_while_waiting_for_approval():
    clock = FakeClock()
    stage = _stage(clock, expected_seconds=5, approval="MANUAL")
    change_status(stage, S.IN_PROGRESS, clock.now())
    assert stage.status == S.WAITING_FOR_APPROVAL
    assert next_due(stage) is None
    assert due_outcome(stage, clock.advance(3600)) is None


@pytest.mark.parametrize("timeout, expected, elapsed, outcome", [
    (60, None, 59, None),
    (60, None, 60, (S.TIMED_OUT, 60)),
    (None, 20, 20, (S.SUCCESS, 20)),
    (60, 20, 500, (S.SUCCESS, 20)),      # late timer: the earlier moment wins
    (60, 90, 500, (S.TIMED_OUT, 60)),
    (60, 60, 60, (S.TIMED_OUT, 60)),     # a tie: a stage must finish before its deadline
    (None, None, 10**6, None),
])
def test_due_outcome(timeout, expected, elapsed, outcome):
    clock = FakeClock()
    stage = _stage(clock, timeout_seconds=timeout, expected_seconds=expected)
    start = clock.now()
    change_status(stage, S.IN_PROGRESS, start)
    result = due_outcome(stage, clock.advance(elapsed))
    assert result == (None if outcome is None else (outcome[0], start + timedelta(seconds=outcome[1])))


def test_fire_ends_the_stage_at_the_due_moment_but_stamps_the_write_now():
    clock = FakeClock()
    stage = _stage(clock, timeout_seconds=10)
    change_status(stage, S.IN_PROGRESS, clock.now())
    assert fire(stage, clock.advance(9)) is False
    assert fire(stage, clock.advance(50)) is True
    assert (stage.status, stage.duration_ms, stage.updated_at) == (S.TIMED_OUT, 10_000, clock.now())
    assert fire(stage, clock.advance(50)) is False  # final: nothing more to do


def test_drive_starts_at_most_one_stage_and_only_after_a_success():
    clock = FakeClock()
    specs = [StageSpec(type="OTHER", name=f"s{i}") for i in range(3)]
    aggregate = new_run("web", 1, specs, clock.now(), auto_advance=True)
    assert drive(aggregate, clock.now()) is False
    first, second, third = aggregate.stages
    change_status(first, S.IN_PROGRESS, clock.now())
    assert drive(aggregate, clock.now()) is False  # something is running
    change_status(first, S.SUCCESS, clock.now())
    assert drive(aggregate, clock.now()) is True
    assert [s.status for s in aggregate.stages] == [S.SUCCESS, S.IN_PROGRESS, S.IDLE]
    change_status(second, S.CANCELLED, clock.now())
    assert drive(aggregate, clock.now()) is False
    aggregate.run.auto_advance = False
    assert drive(aggregate, clock.now()) is False


# ---- arming timers from stream records --------------------------------------------------------

DUE = format_iso(FakeClock().now())


def _image(status="IN_PROGRESS", due=DUE, attempt=1, kind="stage", updated=None):
    image = {"kind": {"S": kind}, "stage_id": {"S": "web:1:1"}, "status": {"S": status},
             "attempt": {"N": str(attempt)}}
    if updated is not None:
        image["updated_at"] = {"S": updated}
    if due is not None:
        image["due_at"] = {"S": due}
        image["active_shard"] = {"S": "ACTIVE#0"}
    return image


def _record(name, new=None, old=None):
    images = {}
    if new is not None:
        images["NewImage"] = new
    if old is not None:
        images["OldImage"] = old
    return {"eventName": name, "dynamodb": images}


@pytest.mark.parametrize("record, armed", [
    (_record("INSERT", _image(status="IDLE", due=None)), False),
    (_record("MODIFY", _image(), _image(status="IDLE", due=None)), True),          # started
    (_record("MODIFY", _image(), _image()), False),                                # unrelated edit
    (_record("MODIFY", _image(due="2026-01-01T00:10:00.000Z"), _image()), True),   # timeout changed
    (_record("MODIFY", _image(attempt=2), _image()), True),                        # new attempt
    (_record("MODIFY", _image(due=NO_DEADLINE), _image(status="IDLE", due=None)), False),
    (_record("MODIFY", _image(status="SUCCESS", due=None), _image()), False),      # finished
    (_record("REMOVE", None, _image()), False),
    (_record("MODIFY", _image(kind="run")), False),
    (_record("INSERT", _image()), True),  # created already running (e.g. by an operation)
])
def test_which_stream_records_arm_a_timer(record, armed):
    timer = armed_timer(record)
    assert (timer is not None) == armed
    if armed:
        assert timer.stage_id == "web:1:1"


@pytest.mark.parametrize("record, stale", [
    (_record("MODIFY", _image(status="SUCCESS", due=None), _image()), True),       # ended in time
    (_record("MODIFY", _image(due="2026-01-01T00:10:00.000Z"), _image()), True),   # deadline moved
    (_record("MODIFY", _image(attempt=2), _image()), True),                        # new attempt
    (_record("REMOVE", None, _image()), True),                                     # stage or run deleted
    (_record("MODIFY", _image(due=NO_DEADLINE), _image()), True),                  # timeout removed
    (_record("MODIFY", _image(), _image()), False),                                # unrelated edit
    (_record("MODIFY", _image(), _image(status="IDLE", due=None)), False),         # started: none before
    (_record("MODIFY", _image(status="SUCCESS", due=None), _image(due=NO_DEADLINE)), False),
    (_record("INSERT", _image()), False),
    (_record("REMOVE", None, _image(kind="run")), False),
])
def test_which_stream_records_make_a_timer_stale(record, stale):
    timer = disarmed_timer(record)
    assert (timer is not None) == stale
    if stale:
        assert (timer.stage_id, timer.attempt, timer.due_at) == ("web:1:1", 1, DUE)


class Recorder:
    """A TimerScheduler that records what it was asked to start and stop."""

    def __init__(self):
        self.started, self.stopped = [], []

    def start(self, timer, wait):
        self.started.append((timer, wait))

    def stop(self, timer):
        self.stopped.append(timer)


def test_the_horizon_is_measured_from_the_write_that_set_the_deadline():
    now = FakeClock("2026-01-01T02:00:00.000Z").now()
    timer = DueTimer("web:1:1", 1, "2026-01-01T02:00:00.000Z", set_at="2026-01-01T01:00:00.000Z")
    assert waits_on_workflow(timer, 3600, now)
    assert not waits_on_workflow(timer, 3599, now)
    assert not waits_on_workflow(timer, 0, now)  # 0: the sweeper fires every timer
    unknown = DueTimer("web:1:1", 1, "2026-01-01T02:10:00.000Z")  # no write time: from now
    assert waits_on_workflow(unknown, 600, now) and not waits_on_workflow(unknown, 599, now)


def test_arming_starts_within_the_horizon_leaves_later_ones_to_the_sweeper_and_stops_stale_ones():
    clock = FakeClock("2026-01-01T00:00:00.000Z")
    ctx = wiring.memory_context(Settings(table_name="unused", region="us-east-1", timer_horizon_seconds=3600),
                                clock)
    written = format_iso(clock.now())
    soon = _image(due="2026-01-01T01:00:00.000Z", updated=written)     # due in exactly the horizon
    later = _image(due="2026-01-01T01:00:01.000Z", updated=written)    # one second past it
    idle = _image(status="IDLE", due=None, updated=written)
    done = _image(status="SUCCESS", due=None, updated=written)
    scheduler = Recorder()
    counted = []
    ctx.metrics = type("Counted", (), {"count": lambda self, name, *a, **k: counted.append(name)})()
    assert arm_timers(ctx, [_record("MODIFY", soon, idle), _record("MODIFY", later, idle)], scheduler) == 1
    assert scheduler.started == [(DueTimer("web:1:1", 1, "2026-01-01T01:00:00.000Z"), 3600)]
    assert counted == ["TimersLeftToSweeper"]

    clock.advance(60)
    assert arm_timers(ctx, [_record("MODIFY", done, soon), _record("MODIFY", done, later)], scheduler) == 0
    assert scheduler.stopped == [DueTimer("web:1:1", 1, "2026-01-01T01:00:00.000Z")]  # the sweeper's: none
    assert counted == ["TimersLeftToSweeper", "TimersStopped"]

    # a deadline moved: the new one is started, the old one stopped, in one record
    scheduler = Recorder()
    moved = _image(due="2026-01-01T00:30:00.000Z", updated=format_iso(clock.now()))
    assert arm_timers(ctx, [_record("MODIFY", moved, soon)], scheduler) == 1
    assert [t.due_at for t, _ in scheduler.started] == ["2026-01-01T00:30:00.000Z"]
    assert [t.due_at for t in scheduler.stopped] == ["2026-01-01T01:00:00.000Z"]

    # a timer already due is delivering (or delivered): nothing to stop
    scheduler = Recorder()
    clock.advance(3600)
    assert arm_timers(ctx, [_record("MODIFY", done, soon)], scheduler) == 0
    assert scheduler.stopped == []


def test_a_zero_horizon_leaves_every_timer_to_the_sweeper():
    clock = FakeClock("2026-01-01T00:00:00.000Z")
    settings = Settings(table_name="unused", region="us-east-1", timer_horizon_seconds=0)
    ctx = wiring.memory_context(settings, clock)
    scheduler = Recorder()
    soon = _image(due="2026-01-01T00:00:05.000Z", updated=format_iso(clock.now()))
    records = [_record("MODIFY", soon, _image(status="IDLE", due=None)),
               _record("MODIFY", _image(status="SUCCESS", due=None), soon)]
    assert arm_timers(ctx, records, scheduler) == 0
    assert scheduler.started == scheduler.stopped == []


def test_arm_timers_waits_whole_seconds_never_early():
    clock = FakeClock("2026-01-01T00:00:00.000Z")
    assert wait_seconds("2026-01-01T00:00:10.000Z", clock.now()) == 10
    assert wait_seconds("2026-01-01T00:00:10.001Z", clock.now()) == 11
    assert wait_seconds("2025-12-31T23:00:00.000Z", clock.now()) == 0

    started = []

    class Recorder:
        def start(self, timer, wait):
            started.append((timer, wait))

    ctx = wiring.memory_context(Settings(table_name="unused", region="us-east-1"), clock)
    records = [_record("MODIFY", _image(due="2026-01-01T00:00:30.000Z"), _image(status="IDLE", due=None)),
               _record("MODIFY", _image(), _image())]
    assert arm_timers(ctx, records, Recorder()) == 1
    assert started == [(DueTimer("web:1:1", 1, "2026-01-01T00:00:30.000Z"), 30)]


def test_execution_names_are_deterministic_valid_and_distinct():
    timer = DueTimer("a-very-long.pipeline_name-" + "x" * 70 + ":12345:3", 2, "2026-01-01T00:00:30.000Z")
    name = execution_name(timer)
    assert name == execution_name(timer) and len(name) <= 80
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
    assert execution_name(DueTimer(timer.stage_id, 3, timer.due_at)) != name
    assert execution_name(DueTimer(timer.stage_id, 2, "2026-01-01T00:00:31.000Z")) != name
    assert execution_input(timer, 7) == {"stageId": timer.stage_id, "attempt": 2,
                                         "dueAt": timer.due_at, "waitSeconds": 7}


def test_scheduler_stops_a_timer_by_its_execution_name_and_ignores_one_never_started():
    class DoesNotExist(Exception):
        pass

    class FakeClient:
        exceptions = type("E", (), {"ExecutionDoesNotExist": DoesNotExist})
        calls: list = []

        def stop_execution(self, **kw):
            self.calls.append(kw)
            raise DoesNotExist()

    machine = "arn:aws:states:us-east-1:123456789012:stateMachine:stagetrack-timers"
    timer = DueTimer("web:1:1", 1, "2026-01-01T00:00:30.000Z")
    client = FakeClient()
    StepFunctionsScheduler(machine, client).stop(timer)
    assert client.calls[0]["executionArn"] == execution_arn(machine, execution_name(timer)) == (
        f"arn:aws:states:us-east-1:123456789012:execution:stagetrack-timers:{execution_name(timer)}")


def test_scheduler_ignores_an_execution_that_already_exists():
    class AlreadyExists(Exception):
        pass

    class FakeClient:
        exceptions = type("E", (), {"ExecutionAlreadyExists": AlreadyExists})
        calls = []

        def start_execution(self, **kw):
            self.calls.append(kw)
            raise AlreadyExists()

    client = FakeClient()
    StepFunctionsScheduler("arn:aws:states:us-east-1:1:stateMachine:t", client).start(
        DueTimer("web:1:1", 1, "2026-01-01T00:00:30.000Z"), 3)
    assert json.loads(client.calls[0]["input"])["waitSeconds"] == 3


# ---- the local ticker -------------------------------------------------------------------------

def test_ticker_keeps_ticking_after_a_failing_tick():
    outcomes = iter([RuntimeError("DynamoDB Local restarting"), None])

    def tick():
        outcome = next(outcomes)
        if outcome:
            raise outcome

    ticker = Ticker(tick, interval=3600)
    ticker.tick_once()
    ticker.tick_once()
    assert ticker.ticks == 2


