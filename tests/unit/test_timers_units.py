"""Timer pieces in isolation: the domain rules, stream-record arming, execution names, the
Lambda handlers' translation, and the local ticker."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from chalicelib import wiring
from chalicelib.adapters.stepfunctions import StepFunctionsScheduler, execution_input, execution_name
from chalicelib.domain.clock import format_iso
from chalicelib.domain.model import StageSpec, change_status, new_run
from chalicelib.domain.status import StageStatus
from chalicelib.domain.timers import drive, due_outcome, expected_end, fire, next_due
from chalicelib.service.ports import DueTimer
from chalicelib.service.timers import arm_timers, wait_seconds
from chalicelib.settings import Settings
from chalicelib.store.stream import NO_DEADLINE, armed_timer
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


def _image(status="IN_PROGRESS", due=DUE, attempt=1, kind="stage"):
    image = {"kind": {"S": kind}, "stage_id": {"S": "web:1:1"}, "status": {"S": status},
             "attempt": {"N": str(attempt)}}
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


