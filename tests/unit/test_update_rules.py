"""How a sender's update (GitHub, GitLab, CodePipeline, CDEvents: one ``ExternalUpdate``) moves a
run, on the pure domain: stages found by name or added, statuses only forward at the sender's
times (never in our future, never before the start), newer attempts archived, old ones ignored,
skipped stages reopened, and a final run status closing whatever is still open."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.domain import events
from chalicelib.domain.events import ExternalUpdate, StageUpdate, apply_update, status_path
from chalicelib.domain.model import new_run
from chalicelib.domain.status import StageStatus
from chalicelib.integrations import common, github, signed_delivery
from tests.fixtures.clock import FakeClock

S = StageStatus
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _empty(clock):
    return new_run("web", 1, [], clock.now())


def _update(*stages, run_status=None, time=None):
    return ExternalUpdate(
        namespace="github:x",
        run_key="1",
        pipeline="web",
        stages=tuple(stages),
        run_status=run_status,
        time=time,
    )


def _apply(aggregate, clock, *stages, run_status=None, time=None):
    return apply_update(
        aggregate, _update(*stages, run_status=run_status, time=time), clock.now(), actor="gh"
    )


def _sec(n):
    return T0 + timedelta(seconds=n)


# ---- status paths --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "current, target, path",
    [
        (S.IDLE, S.IDLE, []),
        (S.IDLE, S.IN_PROGRESS, [S.IN_PROGRESS]),
        (S.IDLE, S.SUCCESS, [S.IN_PROGRESS, S.SUCCESS]),
        (S.IDLE, S.FAILURE, [S.IN_PROGRESS, S.FAILURE]),
        (S.IDLE, S.TIMED_OUT, [S.IN_PROGRESS, S.TIMED_OUT]),
        (S.IDLE, S.CANCELLED, [S.CANCELLED]),
        (S.WAITING_FOR_APPROVAL, S.SUCCESS, [S.IN_PROGRESS, S.SUCCESS]),
        (S.WAITING_FOR_APPROVAL, S.TIMED_OUT, [S.TIMED_OUT]),
        (S.WAITING_FOR_APPROVAL, S.FAILURE, [S.FAILURE]),
        (S.SUCCESS, S.IN_PROGRESS, None),
        (S.IN_PROGRESS, S.IDLE, None),
        (S.IN_PROGRESS, S.WAITING_FOR_APPROVAL, None),
        (S.FAILURE, S.SUCCESS, None),
    ],
)
def test_status_paths_fill_in_skipped_steps_and_never_go_back(current, target, path):
    assert status_path(current, target) == path


# ---- stages found, added and moved -------------------------------------------------------------


def test_a_job_seen_only_when_it_completed_runs_at_its_own_times():
    clock = FakeClock(T0 + timedelta(minutes=10))
    aggregate = _empty(clock)
    result = _apply(
        aggregate, clock, StageUpdate("build", "BUILD", S.SUCCESS, started_at=_sec(5), ended_at=_sec(65))
    )
    stage = aggregate.stages[0]
    assert (stage.id, stage.position, stage.name, stage.type, stage.attempt) == (
        "web:1:1",
        1,
        "build",
        "BUILD",
        1,
    )
    assert (stage.status, stage.started_at, stage.ended_at, stage.duration_ms) == (
        S.SUCCESS,
        _sec(5),
        _sec(65),
        60_000,
    )
    assert (stage.created_at, stage.updated_at) == (clock.now(), clock.now())
    assert (result.changed, result.stages, result.notes) == (True, [("web:1:1", "SUCCESS")], [])


def test_a_sender_time_in_our_future_is_clamped_to_now_and_an_end_before_the_start_to_the_start():
    clock = FakeClock(T0)
    aggregate = _empty(clock)
    _apply(aggregate, clock, StageUpdate("build", status=S.IN_PROGRESS, started_at=_sec(3600)))
    stage = aggregate.stages[0]
    assert stage.started_at == clock.now()
    clock.advance(30)
    _apply(aggregate, clock, StageUpdate("build", status=S.FAILURE, ended_at=T0 - timedelta(hours=1)))
    assert (stage.ended_at, stage.duration_ms) == (T0, 0)


def test_without_its_own_times_a_step_takes_the_update_time_clamped():
    clock = FakeClock(T0 + timedelta(minutes=1))
    aggregate = _empty(clock)
    _apply(aggregate, clock, StageUpdate("build", status=S.SUCCESS), time=_sec(20))
    stage = aggregate.stages[0]
    assert (stage.started_at, stage.ended_at) == (_sec(20), _sec(20))
    _apply(aggregate, clock, StageUpdate("test", status=S.SUCCESS), time=_sec(3600))
    assert aggregate.stages[1].started_at == clock.now()
    _apply(aggregate, clock, StageUpdate("lint", status=S.IN_PROGRESS))  # no time at all: now
    assert aggregate.stages[2].started_at == clock.now()


def test_new_stages_get_the_next_positions_and_known_names_are_found():
    clock = FakeClock(T0)
    aggregate = _empty(clock)
    _apply(aggregate, clock, StageUpdate("a"), StageUpdate("b"), StageUpdate("a", status=S.IN_PROGRESS))
    assert [(s.position, s.name, s.status) for s in aggregate.stages] == [
        (1, "a", S.IN_PROGRESS),
        (2, "b", S.IDLE),
    ]
    aggregate.remove_stage("web:1:1")
    _apply(aggregate, clock, StageUpdate("c"))
    assert [(s.position, s.name) for s in aggregate.stages] == [(2, "b"), (3, "c")]


def test_an_update_that_changes_nothing_says_so():
    clock = FakeClock(T0)
    aggregate = _empty(clock)
    _apply(aggregate, clock, StageUpdate("a", status=S.IN_PROGRESS))
    result = _apply(aggregate, clock, StageUpdate("a", status=S.IN_PROGRESS), StageUpdate("a"))
    assert (result.changed, result.stages, result.notes) == (False, [("web:1:1", "IN_PROGRESS")] * 2, [])


def test_a_late_update_that_would_go_backwards_is_ignored_with_a_note():
    clock = FakeClock(T0)
    aggregate = _empty(clock)
    _apply(aggregate, clock, StageUpdate("a", status=S.SUCCESS))
    result = _apply(aggregate, clock, StageUpdate("a", status=S.IN_PROGRESS))
    assert aggregate.stages[0].status == S.SUCCESS
    assert (result.changed, result.notes) == (
        False,
        ["stage a: SUCCESS -> IN_PROGRESS would go backwards; ignored"],
    )


def test_the_senders_gate_opening_counts_as_an_approval_unless_it_says_otherwise():
    clock = FakeClock(T0)
    aggregate = _empty(clock)
    _apply(aggregate, clock, StageUpdate("gate", status=S.WAITING_FOR_APPROVAL))
    assert aggregate.stages[0].waiting_since == T0
    _apply(aggregate, clock, StageUpdate("gate", status=S.IN_PROGRESS))
    assert aggregate.stages[0].status == S.IN_PROGRESS
    _apply(aggregate, clock, StageUpdate("gate2", status=S.WAITING_FOR_APPROVAL))
    with pytest.raises(Exception, match="waiting for approval"):
        _apply(aggregate, clock, StageUpdate("gate2", status=S.IN_PROGRESS, via_approval=False))


def test_allow_failure_is_taken_when_said_and_kept_when_not():
    clock = FakeClock(T0)
    aggregate = _empty(clock)
    result = _apply(aggregate, clock, StageUpdate("a", allow_failure=True))
    assert aggregate.stages[0].allow_failure is True and result.changed
    result = _apply(aggregate, clock, StageUpdate("a", status=S.FAILURE))
    assert aggregate.stages[0].allow_failure is True
    result = _apply(aggregate, clock, StageUpdate("a", allow_failure=True))
    assert result.changed is False
    result = _apply(aggregate, clock, StageUpdate("a", allow_failure=False))
    assert aggregate.stages[0].allow_failure is False and result.changed


# ---- attempts ------------------------------------------------------------------------------------


def test_a_newer_attempt_archives_the_old_one_cancelling_it_if_it_never_ended():
    clock = FakeClock(T0)
    aggregate = _empty(clock)
    _apply(aggregate, clock, StageUpdate("a", status=S.IN_PROGRESS, attempt=1))
    clock.advance(10)
    result = _apply(aggregate, clock, StageUpdate("a", status=S.IN_PROGRESS, attempt=3), time=_sec(5))
    stage = aggregate.stages[0]
    assert (stage.attempt, stage.status, stage.started_at) == (3, S.IN_PROGRESS, _sec(5))
    assert [(a["attempt"], a["status"], a["endedAt"]) for a in stage.attempts] == [
        (1, "CANCELLED", "2026-01-01T00:00:05.000Z"),
        (2, "CANCELLED", "2026-01-01T00:00:05.000Z"),
    ]
    assert result.changed
    result = _apply(aggregate, clock, StageUpdate("a", status=S.SUCCESS, attempt=2))
    assert (stage.attempt, stage.status) == (3, S.IN_PROGRESS)
    assert result.notes == ["stage a: attempt 2 is older than attempt 3; ignored"]
    assert result.stages == []


def test_a_stage_first_seen_at_a_later_attempt_starts_at_that_attempt():
    clock = FakeClock(T0)
    aggregate = _empty(clock)
    _apply(aggregate, clock, StageUpdate("a", status=S.IN_PROGRESS, attempt=4))
    assert (aggregate.stages[0].attempt, aggregate.stages[0].attempts) == (4, [])
    _apply(aggregate, clock, StageUpdate("b", attempt=0))
    assert aggregate.stages[1].attempt == 1


def test_a_restart_without_an_attempt_number_starts_the_next_attempt_of_a_finished_stage_only():
    clock = FakeClock(T0)
    aggregate = _empty(clock)
    _apply(aggregate, clock, StageUpdate("a", status=S.IN_PROGRESS))
    _apply(aggregate, clock, StageUpdate("a", status=S.IN_PROGRESS, restart=True))
    assert aggregate.stages[0].attempt == 1  # still running: nothing to restart
    _apply(aggregate, clock, StageUpdate("a", status=S.FAILURE))
    _apply(aggregate, clock, StageUpdate("a", status=S.IN_PROGRESS, restart=True))
    assert (aggregate.stages[0].attempt, aggregate.stages[0].status) == (2, S.IN_PROGRESS)
    _apply(aggregate, clock, StageUpdate("a", status=S.SUCCESS, restart=True, attempt=2))
    assert (aggregate.stages[0].attempt, aggregate.stages[0].status) == (2, S.SUCCESS)


# ---- reopening a skipped stage ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "reported, reopened",
    [
        (S.IN_PROGRESS, S.IN_PROGRESS),
        (S.SUCCESS, S.SUCCESS),
        (S.FAILURE, S.FAILURE),
        (S.WAITING_FOR_APPROVAL, None),
        (S.SKIPPED, None),
        (S.IDLE, None),
    ],
)
def test_a_stage_skipped_before_it_started_reopens_when_reported_running_or_finished(reported, reopened):
    clock = FakeClock(T0)
    aggregate = _empty(clock)
    _apply(aggregate, clock, StageUpdate("deploy"), run_status=S.SUCCESS)
    stage = aggregate.stages[0]
    assert stage.status == S.SKIPPED
    clock.advance(60)
    result = _apply(aggregate, clock, StageUpdate("deploy", status=reported))
    if reopened is None:
        assert stage.status == S.SKIPPED
        assert not any("reopened" in note for note in result.notes)
    else:
        assert (stage.status, stage.started_at) == (reopened, clock.now())
        assert result.notes == [f"stage deploy: skipped before, reported {reported.value} now; reopened"]


def test_a_stage_skipped_after_it_started_is_not_reopened():
    clock = FakeClock(T0)
    aggregate = _empty(clock)
    _apply(aggregate, clock, StageUpdate("gate", status=S.WAITING_FOR_APPROVAL))
    _apply(aggregate, clock, StageUpdate("gate", status=S.SKIPPED))
    aggregate.stages[0].started_at = T0  # as if it had run before the skip
    result = _apply(aggregate, clock, StageUpdate("gate", status=S.SUCCESS))
    assert aggregate.stages[0].status == S.SKIPPED
    assert result.notes == ["stage gate: SKIPPED -> SUCCESS would go backwards; ignored"]


# ---- the stage cap -------------------------------------------------------------------------------


def test_a_run_holds_at_most_the_maximum_external_stages_and_says_which_were_ignored(monkeypatch):
    monkeypatch.setattr(events, "MAX_EXTERNAL_STAGES", 3)
    clock = FakeClock(T0)
    aggregate = _empty(clock)
    result = _apply(aggregate, clock, *[StageUpdate(f"s{i}") for i in range(3)])
    assert result.notes == [] and len(aggregate.stages) == 3
    result = _apply(
        aggregate, clock, *[StageUpdate(f"x{i}") for i in range(6)], StageUpdate("s0", status=S.SUCCESS)
    )
    assert len(aggregate.stages) == 3 and aggregate.stages[0].status == S.SUCCESS
    assert result.notes == ["6 stage(s) ignored: a run holds at most 3 stages (x0, x1, x2, x3, x4, ...)"]
    result = _apply(aggregate, clock, *[StageUpdate(f"y{i}") for i in range(5)])
    assert result.notes == ["5 stage(s) ignored: a run holds at most 3 stages (y0, y1, y2, y3, y4)"]


# ---- a final run status closes what is open ------------------------------------------------------


@pytest.mark.parametrize(
    "final, running, waiting, idle",
    [
        (S.SUCCESS, S.SUCCESS, S.SKIPPED, S.SKIPPED),
        (S.FAILURE, S.FAILURE, S.CANCELLED, S.SKIPPED),
        (S.TIMED_OUT, S.TIMED_OUT, S.CANCELLED, S.SKIPPED),
        (S.SKIPPED, S.CANCELLED, S.SKIPPED, S.SKIPPED),
    ],
)
def test_a_final_run_status_closes_each_open_stage(final, running, waiting, idle):
    clock = FakeClock(T0)
    aggregate = _empty(clock)
    _apply(
        aggregate,
        clock,
        StageUpdate("done", status=S.FAILURE),
        StageUpdate("run", status=S.IN_PROGRESS),
        StageUpdate("gate", status=S.WAITING_FOR_APPROVAL),
        StageUpdate("later"),
    )
    clock.advance(30)
    result = _apply(aggregate, clock, run_status=final, time=_sec(20))
    assert [s.status for s in aggregate.stages] == [S.FAILURE, running, waiting, idle]
    assert [s.ended_at for s in aggregate.stages[1:]] == [_sec(20)] * 3
    assert [s.updated_at for s in aggregate.stages[1:]] == [clock.now()] * 3
    assert result.changed and result.stages == [(s.id, s.status.value) for s in aggregate.stages[1:]]


def test_a_cancelled_run_cancels_active_stages_and_skips_the_rest_even_when_it_reads_finished():
    clock = FakeClock(T0)
    aggregate = _empty(clock)
    _apply(aggregate, clock, StageUpdate("a", status=S.CANCELLED), StageUpdate("b"))
    result = _apply(aggregate, clock, run_status=S.CANCELLED)
    assert [s.status for s in aggregate.stages] == [S.CANCELLED, S.SKIPPED]
    assert aggregate.run.cancellation == {
        "by": "gh",
        "at": "2026-01-01T00:00:00.000Z",
        "reason": "cancelled in the sending system",
        "stageId": None,
    }
    assert result.changed


def test_a_cancelled_run_that_is_already_closed_records_nothing():
    clock = FakeClock(T0)
    aggregate = _empty(clock)
    _apply(aggregate, clock, StageUpdate("a", status=S.SUCCESS))
    result = _apply(aggregate, clock, run_status=S.CANCELLED)
    assert (aggregate.run.cancellation, result.changed) == (None, False)


def test_a_run_finished_without_stages_gets_one_summary_stage():
    clock = FakeClock(T0 + timedelta(minutes=5))
    aggregate = _empty(clock)
    result = _apply(aggregate, clock, run_status=S.FAILURE, time=_sec(100))
    stage = aggregate.stages[0]
    assert (stage.name, stage.type, stage.status, stage.started_at, stage.ended_at) == (
        "pipeline",
        "OTHER",
        S.FAILURE,
        _sec(100),
        _sec(100),
    )
    assert (result.changed, result.stages) == (True, [("web:1:1", "FAILURE")])


def test_a_non_final_run_status_closes_nothing():
    clock = FakeClock(T0)
    aggregate = _empty(clock)
    _apply(aggregate, clock, StageUpdate("a", status=S.IN_PROGRESS))
    result = _apply(aggregate, clock, run_status=S.IN_PROGRESS)
    assert aggregate.stages[0].status == S.IN_PROGRESS and result.changed is False
    assert _apply(_empty(clock), clock, run_status=S.IN_PROGRESS).stages == []


# ---- names, times, commits ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, name",
    [
        ("octo-org/hello-world", "octo-org.hello-world"),
        ("  Build & Test!! ", "Build-Test"),
        ("--.x", "x"),
        ("a---b", "a-b"),
        ("***", "unnamed"),
        ("", "unnamed"),
        ("a" * 100, "a" * 100),
    ],
)
def test_sender_names_become_safe_names(text, name):
    assert events.sanitize_name(text) == name


def test_a_long_name_is_cut_and_keeps_a_hash_of_the_whole():
    long = "a" * 101
    digest = hashlib.sha256(long.encode()).hexdigest()[:8]
    assert events.sanitize_name(long) == "a" * 91 + "-" + digest
    assert (
        events.sanitize_name("b" * 90 + "." + "c" * 20)
        == "b" * 90 + "-" + hashlib.sha256(("b" * 90 + "." + "c" * 20).encode()).hexdigest()[:8]
    )
    assert events.sanitize_name("?", fallback="job") == "job"


@pytest.mark.parametrize(
    "name, stage_type",
    [("build", "BUILD"), ("deploy-prod", "DEPLOY_PROD"), ("unit.test", "UNIT_TEST"), ("lint", "OTHER")],
)
def test_a_stage_named_like_a_type_gets_it(name, stage_type):
    assert events.stage_type_for(name) == stage_type
    if stage_type == "OTHER":
        assert events.stage_type_for(name, events.StageType.BUILD) == "BUILD"  # the default given


@pytest.mark.parametrize(
    "value, moment",
    [
        ("2016-08-12 15:23:28 UTC", datetime(2016, 8, 12, 15, 23, 28, tzinfo=UTC)),
        ("2016-08-12 15:23:28.123 UTC", datetime(2016, 8, 12, 15, 23, 28, 123_000, tzinfo=UTC)),
        ("2016-08-12T17:23:28+02:00", datetime(2016, 8, 12, 15, 23, 28, tzinfo=UTC)),
        ("2016-08-12T15:23:28Z", datetime(2016, 8, 12, 15, 23, 28, tzinfo=UTC)),
        ("yesterday", None),
        ("", None),
        (None, None),
        (1471015408, None),
        ("2016-08-12 15:23:28 CET", None),
    ],
)
def test_sender_times_are_read_or_none(value, moment):
    assert events.parse_time(value) == moment


def test_a_commit_needs_a_hex_sha_and_keeps_bounded_text():
    assert events.commit_of("abc1234") == {"hash": "abc1234"}
    assert events.commit_of("abc123") is None and events.commit_of("xyz1234") is None
    assert events.commit_of(None) is None and events.commit_of("a" * 65) is None
    assert events.commit_of("a" * 64, "m" * 5000, "c" * 300) == {
        "hash": "a" * 64,
        "message": "m" * 4000,
        "committer": "c" * 200,
    }
    assert events.commit_of("abc1234", "", 5) == {"hash": "abc1234"}


# ---- signatures and backoff ----------------------------------------------------------------------


def test_github_signatures_are_hmac_sha256_of_the_raw_body():
    expected = "sha256=" + hmac.new(b"s3", b"{}", hashlib.sha256).hexdigest()
    assert github.signature("s3", b"{}") == expected
    assert github.verify_signature("s3", b"{}", expected + " ")
    assert not github.verify_signature("s3", b"{ }", expected)
    assert not github.verify_signature("s3", b"{}", None)
    assert not github.verify_signature("s3", b"{}", "")


def test_same_token_is_exact():
    assert common.same_token("abc", "abc")
    assert (
        not common.same_token("abc", "abcd")
        and not common.same_token(None, "")
        and not common.same_token("", "")
    )


def test_delivery_signatures_verify_within_the_tolerance_only():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    ts = int(now.timestamp())
    signature = signed_delivery.delivery_signature("k", ts, b"body")
    assert signature == "v1=" + hmac.new(b"k", f"{ts}.body".encode(), hashlib.sha256).hexdigest()
    assert signed_delivery.verify_delivery("k", b"body", str(ts), "v1=old, " + signature, now)
    assert signed_delivery.verify_delivery("k", b"body", str(ts), signature, now + timedelta(seconds=300))
    assert not signed_delivery.verify_delivery("k", b"body", str(ts), signature, now + timedelta(seconds=301))
    assert not signed_delivery.verify_delivery("k", b"body", str(ts), signature, now - timedelta(seconds=301))
    assert not signed_delivery.verify_delivery("k", b"bodY", str(ts), signature, now)
    assert not signed_delivery.verify_delivery("k", b"body", "-1", signature, now)
    assert not signed_delivery.verify_delivery("k", b"body", None, signature, now)
    assert not signed_delivery.verify_delivery("k", b"body", str(ts), None, now)


@pytest.mark.parametrize(
    "attempt, base", [(0, 30), (1, 30), (2, 60), (3, 120), (5, 480), (6, 900), (20, 900)]
)
def test_backoff_doubles_to_the_cap_with_at_most_ten_percent_jitter(attempt, base):
    delays = {events.backoff_seconds(attempt, f"d{i}") for i in range(50)}
    assert all(base <= d <= min(900, base + base // 10) for d in delays)
    assert events.backoff_seconds(attempt, "d1") == events.backoff_seconds(attempt, "d1")
    if base < 900:
        assert len(delays) > 1


def test_new_source_secrets_are_prefixed_and_random():
    first, second = events.new_secret(), events.new_secret()
    assert first.startswith("whsec_") and len(first) == 6 + 43 and first != second


def test_a_sender_re_running_a_cancelled_run_takes_it_up_again():
    """A cancel (the sender's or ours) marks the run stopping; the sender's next attempt clears it,
    so the run's status follows its stages again instead of staying CANCELLED."""
    clock = FakeClock(T0)
    aggregate = _empty(clock)
    _apply(aggregate, clock, StageUpdate("a", status=S.IN_PROGRESS, attempt=1))
    _apply(aggregate, clock, run_status=S.CANCELLED)
    aggregate.refresh(clock.now())
    assert aggregate.run.stopping["mode"] == "CANCEL" and aggregate.run.status == S.CANCELLED
    _apply(aggregate, clock, StageUpdate("a", status=S.IN_PROGRESS, attempt=2))
    aggregate.refresh(clock.now())
    assert aggregate.run.stopping is None and aggregate.run.status == S.IN_PROGRESS
    assert aggregate.run.cancellation["reason"] == "cancelled in the sending system"  # kept on record
