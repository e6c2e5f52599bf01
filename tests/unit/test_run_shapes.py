"""What a run and its stages look like on the wire, field by field, and the rules that derive
them: a run's status from its stages, its times, and the clock's exact ISO/millisecond format."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from chalicelib.domain import clock as clock_module
from chalicelib.domain.clock import format_iso, millis_between, parse_iso, seconds_from_millis, to_millis
from chalicelib.domain.errors import DomainError, MethodNotAllowed, NotFound
from chalicelib.domain.model import StageSpec, change_status, new_run, run_status_of, stage_summary
from chalicelib.domain.operations import Pipeline, VariableChange, apply_variables
from chalicelib.domain.status import StageStatus, derive_run_status
from chalicelib.domain.views import pipeline_status_view, run_summary_view, run_view, stage_view
from tests.fixtures.clock import FakeClock

S = StageStatus
T0 = "2026-01-01T00:00:00.000Z"


def _run(clock, **options):
    specs = [StageSpec(type="BUILD", name="build", timeout_seconds=30, expected_seconds=10),
             StageSpec(type="DEPLOY_PROD", name="ship", approval="MANUAL")]
    return new_run("web", 7, specs, clock.now(), commit={"sha": "abc"}, trigger="push",
                   variables={"A": "1"}, **options)


# ---- views -------------------------------------------------------------------------------------

def test_a_new_run_and_its_stages_on_the_wire():
    clock = FakeClock()
    aggregate = _run(clock, timeout_seconds=600, auto_advance=True)
    view = run_view(aggregate, clock.advance(5))
    stages = view.pop("stages")
    assert view == {
        "id": "web:7", "pipeline": "web", "counter": 7, "status": "IDLE", "createdAt": T0, "updatedAt": T0,
        "startedAt": None, "endedAt": None, "duration": None, "commit": {"sha": "abc", "committedAt": None},
        "trigger": "push", "branch": None, "actor": None, "sourceUrl": None, "source": None,
        "environment": None,
        "variables": {"A": "1"}, "secretVariables": [], "timeoutSeconds": 600, "autoAdvance": True,
        "cancellation": None, "stopping": None, "stopGraceSeconds": None, "version": None,
        "concurrencyGroup": None, "eta": None,
    }
    assert stages == [
        {"id": "web:7:1", "createdAt": T0, "updatedAt": T0, "type": "BUILD", "startedAt": None,
         "endedAt": None, "duration": None, "status": "IDLE", "runId": "web:7", "name": "build",
         "position": 1,
         "approval": "AUTO", "timeoutSeconds": 30, "expectedSeconds": 10, "timesOutAt": None, "attempt": 1,
         "attemptCount": 1, "approvalDecision": None, "approvalPolicy": None, "approvals": [],
         "allowFailure": False, "environment": None, "retry": None, "autoRetries": 0, "nextRetryAt": None,
         "retryReason": None, "always": False, "cancelsAt": None, "runDeadline": None,
         "typicalSeconds": None, "overrunningAt": None, "version": None},
        {"id": "web:7:2", "createdAt": T0, "updatedAt": T0, "type": "DEPLOY_PROD", "startedAt": None,
         "endedAt": None, "duration": None, "status": "IDLE", "runId": "web:7", "name": "ship", "position": 2,
         "approval": "MANUAL", "timeoutSeconds": 600, "expectedSeconds": None, "timesOutAt": None,
         "attempt": 1, "attemptCount": 1, "approvalDecision": None, "approvalPolicy": None,
         "approvals": [], "allowFailure": False, "environment": "production", "retry": None,
         "autoRetries": 0, "nextRetryAt": None, "retryReason": None, "always": False,
         "cancelsAt": None, "runDeadline": None, "typicalSeconds": None, "overrunningAt": None,
         "version": None},
    ]


def test_a_running_stage_shows_its_live_duration_and_deadline_then_freezes_when_it_ends():
    clock = FakeClock()
    aggregate = _run(clock)
    build = aggregate.stages[0]
    change_status(build, S.IN_PROGRESS, clock.advance(1))
    aggregate.refresh(clock.now())
    live = stage_view(build, clock.advance(2.5))
    assert (live["startedAt"], live["duration"], live["timesOutAt"], live["status"]) == (
        "2026-01-01T00:00:01.000Z", 2.5, "2026-01-01T00:00:31.000Z", "IN_PROGRESS")
    assert run_summary_view(aggregate.run, clock.now())["duration"] == 2.5
    change_status(build, S.SUCCESS, clock.advance(0.5))
    aggregate.refresh(clock.now())
    done = stage_view(build, clock.advance(100))
    assert (done["endedAt"], done["duration"], done["timesOutAt"], done["updatedAt"]) == (
        "2026-01-01T00:00:04.000Z", 3, None, "2026-01-01T00:00:04.000Z")
    summary = run_summary_view(aggregate.run, clock.now())
    assert (summary["status"], summary["startedAt"], summary["endedAt"], summary["duration"]) == (
        "IN_PROGRESS", "2026-01-01T00:00:01.000Z", None, 103.0)


def test_secret_variables_are_listed_by_name_and_masked():
    clock = FakeClock()
    aggregate = _run(clock)
    apply_variables(aggregate, [VariableChange("TOKEN", "hunter2", secret=True),
                                VariableChange("B", "2")], "pep")
    view = run_summary_view(aggregate.run, clock.now())
    assert view["secretVariables"] == ["TOKEN"]
    assert view["variables"]["A"] == "1" and view["variables"]["B"] == "2"
    assert "hunter2" not in str(view)


def test_pipeline_status_view():
    paused_at = datetime(2026, 1, 2, tzinfo=UTC)
    view = pipeline_status_view(Pipeline(name="web", paused=True, pause_cause="freeze", paused_by="alice",
                                         paused_at=paused_at))
    assert {k: v for k, v in view.items() if k not in ("codeartsJobId", "buddyPipelineId")} == {
        "name": "web", "paused": True, "pausedCause": "freeze", "pausedBy": "alice",
        "pausedAt": "2026-01-02T00:00:00.000Z", "locked": False, "lockedBy": None, "schedulable": False,
        "concurrency": {"mode": "PARALLEL", "group": None, "queue": "ALL"},
    }
    assert isinstance(view["codeartsJobId"], str) and isinstance(view["buddyPipelineId"], int)
    locked = pipeline_status_view(Pipeline(name="web", layout={"stages": []}, lock_holder="web:3",
                                           concurrency={"mode": "QUEUED", "group": "deploy"}))
    assert (locked["locked"], locked["lockedBy"], locked["schedulable"], locked["concurrency"]) == (
        True, "web:3", False, {"mode": "QUEUED", "group": "deploy", "queue": "ALL"})  # stored before queue


# ---- the run's derived fields -----------------------------------------------------------------

@pytest.mark.parametrize("statuses, expected", [
    ([], S.IDLE),
    ([S.IDLE, S.IDLE], S.IDLE),
    ([S.SUCCESS, S.IDLE], S.IN_PROGRESS),
    ([S.SKIPPED, S.IDLE], S.IN_PROGRESS),
    ([S.SKIPPED, S.SKIPPED], S.SKIPPED),
    ([S.SKIPPED, S.SUCCESS], S.SUCCESS),
    ([S.SUCCESS], S.SUCCESS),
    ([S.FAILURE, S.IN_PROGRESS], S.IN_PROGRESS),
    ([S.FAILURE, S.WAITING_FOR_APPROVAL], S.WAITING_FOR_APPROVAL),
    ([S.IN_PROGRESS, S.WAITING_FOR_APPROVAL], S.IN_PROGRESS),
    ([S.FAILURE, S.TIMED_OUT, S.SUCCESS], S.TIMED_OUT),
    ([S.TIMED_OUT, S.CANCELLED], S.CANCELLED),
    ([S.FAILURE, S.IDLE], S.FAILURE),
])
def test_a_runs_status_from_its_stages(statuses, expected):
    assert derive_run_status(statuses) == expected


def test_a_stage_allowed_to_fail_counts_as_passed_for_the_run_only():
    clock = FakeClock()
    aggregate = _run(clock)
    build, ship = aggregate.stages
    build.allow_failure = True
    change_status(build, S.IN_PROGRESS, clock.now())
    change_status(build, S.FAILURE, clock.now())
    change_status(ship, S.SKIPPED, clock.now())
    assert run_status_of(aggregate.stages) == S.SUCCESS
    build.allow_failure = False
    assert run_status_of(aggregate.stages) == S.FAILURE


def test_the_run_ends_at_its_last_stage_end_and_starts_at_its_first_start_across_attempts():
    clock = FakeClock()
    aggregate = _run(clock)
    build, ship = aggregate.stages
    change_status(build, S.IN_PROGRESS, clock.advance(2))
    change_status(build, S.SUCCESS, clock.advance(3))
    change_status(ship, S.SKIPPED, clock.advance(4))  # skipped: its end is when it was skipped
    aggregate.refresh(clock.advance(10))
    run = aggregate.run
    assert (run.status, format_iso(run.started_at), format_iso(run.ended_at), run.duration_ms) == (
        S.SUCCESS, "2026-01-01T00:00:02.000Z", "2026-01-01T00:00:09.000Z", 7000)
    assert format_iso(run.updated_at) == "2026-01-01T00:00:19.000Z"
    build.attempts.append({"startedAt": "2026-01-01T00:00:01.000Z"})  # an earlier attempt
    build.started_at = None
    aggregate.refresh(clock.now())
    assert format_iso(aggregate.run.started_at) == "2026-01-01T00:00:01.000Z"


def test_a_run_that_ends_without_any_stage_end_ends_when_written():
    clock = FakeClock()
    aggregate = _run(clock)
    for stage in aggregate.stages:
        change_status(stage, S.SKIPPED, clock.now())
        stage.ended_at = None
    aggregate.refresh(clock.advance(3))
    run = aggregate.run
    assert (run.status, run.ended_at, run.duration_ms) == (S.SKIPPED, clock.now(), None)


def test_stage_summary_names_the_approver_only_of_an_approval():
    clock = FakeClock()
    stage = _run(clock).stages[1]
    stage.approval_decision = {"decision": "APPROVED", "by": "alice"}
    assert stage_summary(stage) == {
        "position": 2, "name": "ship", "type": "DEPLOY_PROD", "status": "IDLE", "attempt": 1,
        "approval": "MANUAL", "approvedBy": "alice", "startedAt": None, "endedAt": None}
    stage.approval_decision = {"decision": "REJECTED", "by": "bob"}
    assert stage_summary(stage)["approvedBy"] is None


def test_runs_and_stages_get_ids_from_pipeline_counter_and_position():
    clock = FakeClock()
    aggregate = _run(clock)
    assert [(s.id, s.run_id, s.position, s.status, s.created_at) for s in aggregate.stages] == [
        ("web:7:1", "web:7", 1, S.IDLE, clock.now()), ("web:7:2", "web:7", 2, S.IDLE, clock.now())]
    assert aggregate.stage("web:7:2").name == "ship"
    with pytest.raises(NotFound, match="stage 'web:7:9' not found"):
        aggregate.stage("web:7:9")
    copy = aggregate.snapshot()
    copy.stages[0].name = "changed"
    assert aggregate.stages[0].name == "build"
    assert aggregate.remove_stage("web:7:1").name == "build"
    assert [s.id for s in aggregate.stages] == ["web:7:2"]


def test_a_stage_timeout_falls_back_to_the_runs():
    clock = FakeClock()
    aggregate = _run(clock, timeout_seconds=120)
    assert [s.timeout_seconds for s in aggregate.stages] == [30, 120]
    assert [s.expected_seconds for s in aggregate.stages] == [10, None]
    assert [s.approval for s in aggregate.stages] == ["AUTO", "MANUAL"]


# ---- the clock's wire format ------------------------------------------------------------------

def test_iso_format_is_utc_with_milliseconds_and_z():
    moment = datetime(2026, 3, 4, 5, 6, 7, 891_234, tzinfo=timezone(timedelta(hours=2)))
    assert format_iso(moment) == "2026-03-04T03:06:07.891Z"
    assert format_iso(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000Z"
    assert format_iso(None) is None


@pytest.mark.parametrize("text, expected", [
    ("2026-03-04T03:06:07.891Z", datetime(2026, 3, 4, 3, 6, 7, 891_000, tzinfo=UTC)),
    ("2026-03-04T05:06:07.891999+02:00", datetime(2026, 3, 4, 3, 6, 7, 891_000, tzinfo=UTC)),
    ("2026-03-04T03:06:07", datetime(2026, 3, 4, 3, 6, 7, tzinfo=UTC)),  # naive: taken as UTC
])
def test_parse_iso_reads_utc_to_the_millisecond(text, expected):
    parsed = parse_iso(text)
    assert parsed == expected and parsed.tzinfo == UTC
    assert parse_iso(None) is None


def test_millis_and_seconds_are_exact():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert millis_between(start, start + timedelta(days=2, seconds=3, milliseconds=45, microseconds=999)) == (
        2 * 86_400_000 + 3045)
    assert millis_between(start, start - timedelta(milliseconds=5)) == -5
    assert (seconds_from_millis(None), seconds_from_millis(0), seconds_from_millis(3000),
            seconds_from_millis(3001)) == (None, 0, 3, 3.001)
    assert isinstance(seconds_from_millis(3000), int)
    assert to_millis(datetime(2026, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC)).microsecond == 999_000


def test_the_system_clock_is_utc_to_the_millisecond():
    now = clock_module.SystemClock().now()
    assert now.tzinfo == UTC and now.microsecond % 1000 == 0


# ---- errors -----------------------------------------------------------------------------------

def test_domain_errors_carry_a_safe_message_and_details():
    error = DomainError("bad thing", details={"field": "x"})
    assert (str(error), error.message, error.details, error.code) == (
        "bad thing", "bad thing", {"field": "x"}, "error")
    assert DomainError("plain").details is None
    not_allowed = MethodNotAllowed("no PUT here", allow="GET, POST")
    assert (not_allowed.message, not_allowed.headers, not_allowed.code) == (
        "no PUT here", {"Allow": "GET, POST"}, "method_not_allowed")


def test_a_finished_run_on_the_wire_and_a_live_one_counts_to_now():
    clock = FakeClock()
    aggregate = _run(clock)
    build, ship = aggregate.stages
    change_status(build, S.IN_PROGRESS, clock.now())
    aggregate.refresh(clock.now())
    live = run_view(aggregate, clock.advance(4))
    assert (live["duration"], live["stages"][0]["duration"]) == (4, 4)
    change_status(build, S.SUCCESS, clock.now())
    change_status(ship, S.SKIPPED, clock.now())
    aggregate.refresh(clock.now())
    done = run_summary_view(aggregate.run, clock.advance(60))
    assert (done["status"], done["endedAt"], done["duration"]) == ("SUCCESS", "2026-01-01T00:00:04.000Z", 4)


def test_a_finished_gate_has_no_deadline_and_a_stage_just_started_has_run_zero_ms():
    clock = FakeClock()
    aggregate = _run(clock)
    gate = aggregate.stages[1]
    gate.timeout_seconds = 60
    change_status(gate, S.IN_PROGRESS, clock.now())
    assert gate.status == S.WAITING_FOR_APPROVAL
    change_status(gate, S.FAILURE, clock.advance(5))
    assert gate.deadline() is None  # waiting_since is still set, but it no longer waits
    build = aggregate.stages[0]
    change_status(build, S.IN_PROGRESS, clock.now())
    aggregate.refresh(clock.now())
    assert (build.elapsed_ms(clock.now()), aggregate.run.elapsed_ms(clock.now())) == (0, 0)


def test_the_run_keeps_a_summary_of_every_stage_in_position_order():
    clock = FakeClock()
    aggregate = _run(clock)
    build, ship = aggregate.stages
    change_status(build, S.IN_PROGRESS, clock.advance(1))
    change_status(build, S.SUCCESS, clock.advance(1))
    aggregate.stages.reverse()
    aggregate.refresh(clock.now())
    assert aggregate.run.stage_summary == [
        {"position": 1, "name": "build", "type": "BUILD", "status": "SUCCESS", "attempt": 1,
         "approval": "AUTO",
         "approvedBy": None, "startedAt": "2026-01-01T00:00:01.000Z", "endedAt": "2026-01-01T00:00:02.000Z"},
        stage_summary(ship)]


def test_a_new_run_does_not_advance_by_itself_unless_asked():
    clock = FakeClock()
    assert new_run("web", 1, [], clock.now()).run.auto_advance is False


def test_an_illegal_change_says_from_where_to_where():
    from chalicelib.domain.errors import IllegalTransition

    clock = FakeClock()
    stage = _run(clock).stages[0]
    change_status(stage, S.SKIPPED, clock.now())
    with pytest.raises(IllegalTransition) as raised:
        change_status(stage, S.IN_PROGRESS, clock.now())
    assert raised.value.message == "stage 'web:7:1' cannot go from SKIPPED to IN_PROGRESS"
    assert raised.value.details == {"from": "SKIPPED", "to": "IN_PROGRESS"}


def test_times_are_utc_whatever_the_machines_time_zone(monkeypatch):
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        moment = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=2)))
        assert format_iso(moment) == "2026-03-04T03:06:07.000Z"
        assert parse_iso("2026-03-04T05:06:07+02:00") == datetime(2026, 3, 4, 3, 6, 7, tzinfo=UTC)
        assert parse_iso("2026-03-04T03:06:07").utcoffset() == timedelta(0)
        assert parse_iso("2026-03-04T03:06:07") == datetime(2026, 3, 4, 3, 6, 7, tzinfo=UTC)
    finally:
        monkeypatch.undo()
        time.tzset()
