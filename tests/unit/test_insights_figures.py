"""The insights rules (domain/insights.py) pinned value by value, beside test_insights_rules.py:
the histogram arithmetic, what an attempt and a run add to their days, the reconstruction of a
stored run's finishes, flakiness across runs of a commit, and ``figures`` over a few hand-made
day items. Each case states the documented rule (docs/insights.md) with numbers worked out by
hand, so a change of a comparison, a constant or a default is caught here in milliseconds, not
only by the property test's brute force."""
from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from chalicelib.domain.insights import (
    GAMMA,
    MAX_COMMIT_FAILURES,
    AttemptMark,
    DayItem,
    Deploy,
    FinishedAttempt,
    FinishedRun,
    PastAttempt,
    PipelineState,
    add_sample,
    advance,
    attempt_tally,
    bucket_of,
    bucket_value,
    commit_flakiness,
    day_of,
    days_between,
    deploys_of,
    difference,
    figures,
    is_flaky,
    mark_of,
    mean,
    merge,
    percentile,
    period_start,
    ready_at,
    run_finishes,
    run_tallies,
    runs_view,
    seconds,
    success_rate,
)
from chalicelib.domain.status import StageStatus as S

T0 = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)


def at(seconds_after: float) -> datetime:
    return T0 + timedelta(seconds=seconds_after)


def read_back(millis: int) -> float:
    """A duration as the histogram gives it back, in seconds (the documented read-back point)."""
    return seconds(bucket_value(bucket_of(millis)))


# ---- the histogram -----------------------------------------------------------------------------------

def test_buckets_are_floor_log_gamma_and_read_back_at_their_least_error_point():
    assert bucket_of(1) == "0"  # [1, 1.02) ms
    assert bucket_of(2) == "35"  # ln 2 / ln 1.02 = 35.003
    assert bucket_of(1000) == "348"  # ln 1000 / ln 1.02 = 348.83
    assert bucket_of(0) == bucket_of(-1) == "Z"
    assert bucket_value("0") == pytest.approx(2 * GAMMA / (1 + GAMMA), rel=1e-12)
    assert bucket_value("348") == pytest.approx(2 * GAMMA ** 349 / (1 + GAMMA), rel=1e-12)
    assert bucket_value("Z") == 0.0


def test_a_sample_adds_its_bucket_its_count_and_its_whole_milliseconds():
    tally: dict[str, int] = {}
    add_sample(tally, "d", 1500)
    add_sample(tally, "d", 1500.9)  # type: ignore[arg-type]  # whole milliseconds
    add_sample(tally, "d", -20)  # a clock gone backwards: 0 ms
    assert tally == {"d" + bucket_of(1500): 2, "dZ": 1, "dN": 3, "dS": 3000}
    add_sample(tally, "q", 7)
    assert (tally["qN"], tally["qS"], tally["q" + bucket_of(7)]) == (1, 7, 1)


def test_percentiles_take_the_nearest_rank_of_their_own_histogram_only():
    tally = {"d" + bucket_of(1000): 2, "d" + bucket_of(5000): 1, "dZ": 1, "dN": 4, "dS": 7000,
             "q" + bucket_of(90_000): 7, "deploys": 9, "d" + bucket_of(60_000): 0}
    assert percentile(tally, "d", 0) == 0.0  # rank 1 at least: the 0 ms sample
    assert percentile(tally, "d", 25) == 0.0  # rank 1 of 4
    assert percentile(tally, "d", 26) == read_back(1000)  # rank 2
    assert percentile(tally, "d", 75) == read_back(1000)  # rank 3
    assert percentile(tally, "d", 76) == read_back(5000)  # rank 4 (a zero bucket is no sample)
    assert percentile(tally, "d", 100) == read_back(5000)
    assert percentile(tally, "q", 50) == read_back(90_000)
    assert percentile({"dN": 3, "dS": 10}, "d", 50) is None  # counters without buckets
    assert percentile({}, "d", 50) is None
    assert percentile({"d-2": 1}, "d", 50) == seconds(bucket_value("-2"))  # below 1 ms: still a bucket
    one_ms = {"dZ": 1, "d" + bucket_of(1): 1}  # 0 ms is the smallest of all, below the 1 ms bucket
    assert (percentile(one_ms, "d", 50), percentile(one_ms, "d", 51)) == (0.0, read_back(1))
    assert percentile({"d" + bucket_of(100): 1, "d" + bucket_of(20): 1}, "d", 50) == read_back(20)  # ordered


def test_a_mean_is_exact_and_seconds_keep_three_decimals():
    assert mean({"dN": 4, "dS": 10_001}, "d") == 2.5
    assert mean({"dN": 3, "dS": 1000, "qN": 1, "qS": 9}, "q") == 0.009
    assert mean({"dS": 10}, "d") is None and mean({"dN": 0, "dS": 0}, "d") is None
    assert seconds(1234.5678) == 1.235 and seconds(0) == 0.0


def test_merge_adds_and_difference_is_what_turns_old_into_new():
    assert merge([{"n": 1, "SUCCESS": 1}, {"n": 2, "FAILURE": 2}, {}]) == {"n": 3, "SUCCESS": 1, "FAILURE": 2}
    assert merge([]) == {}
    assert difference({"n": 2, "SUCCESS": 1, "dS": 5}, {"n": 1, "FAILURE": 1, "dS": 5}) == {
        "n": 1, "SUCCESS": 1, "FAILURE": -1}
    assert difference({"a": 0}, {}) == {} and difference({}, {"a": 0}) == {}  # zero entries left out
    assert difference({"a": 3}, {"a": 3}) == {}
    assert difference({}, {"b": 2}) == {"b": -2} and difference({"b": 2}, {}) == {"b": 2}


def test_a_day_is_the_utc_date_of_the_moment():
    assert day_of(datetime(2026, 3, 20, 23, 59, 59, tzinfo=UTC)) == "2026-03-20"
    assert day_of(datetime(2026, 3, 21, 0, 0, tzinfo=UTC)) == "2026-03-21"


# ---- what an attempt adds ------------------------------------------------------------------------------

UNSET = object()


def attempt(position=1, number=1, status=S.SUCCESS, started=UNSET, ended=UNSET, first=1,
            **kw) -> FinishedAttempt:
    return FinishedAttempt(pipeline="web", run_id="web:1", position=position, name="test", status=status,
                           attempt=number, first_attempt=first, created_at=at(-60),
                           started_at=at(0) if started is UNSET else started,
                           ended_at=at(5) if ended is UNSET else ended, **kw)


def test_the_marker_keeps_what_later_records_need():
    mark = mark_of(attempt(environment="production", status=S.FAILURE))
    assert mark == AttemptMark(position=1, attempt=1, status=S.FAILURE, ended_at=at(5),
                               environment="production", name="test")


def test_ready_looks_only_at_the_previous_position_up_to_the_start():
    marks = [AttemptMark(0, 1, S.SUCCESS, at(-40)), AttemptMark(0, 2, S.SUCCESS, at(0)),  # ends as it starts
             AttemptMark(1, 1, S.FAILURE, at(-5)),  # its own position: not a predecessor
             AttemptMark(-1, 1, S.SUCCESS, at(-1))]  # two positions back: not a predecessor
    assert ready_at(attempt(), marks) == at(0)
    assert ready_at(attempt(), marks[:1]) == at(-40)
    assert ready_at(attempt(started=None), marks) is None  # never started: no queue time
    assert ready_at(attempt(number=3, first=3), []) == at(-60)  # the first attempt of its run
    assert ready_at(attempt(started=None, queued_at=at(-3)), []) == at(-3)  # as recorded


def test_flaky_needs_an_earlier_failed_attempt_of_the_same_stage():
    failed_before = AttemptMark(1, 1, S.FAILURE, at(-5))
    assert is_flaky(attempt(number=2), [failed_before])
    assert is_flaky(attempt(number=2), [AttemptMark(1, 1, S.TIMED_OUT, at(-5))])
    assert not is_flaky(attempt(number=1), [failed_before])  # not earlier
    assert not is_flaky(attempt(number=2), [AttemptMark(1, 2, S.FAILURE, at(-5))])  # the same attempt
    assert not is_flaky(attempt(number=2), [AttemptMark(2, 1, S.FAILURE, at(-5))])  # another stage
    assert not is_flaky(attempt(number=2, status=S.CANCELLED), [failed_before])
    assert not is_flaky(attempt(number=2), [])


def test_an_attempt_adds_its_status_duration_queue_retry_and_flakiness():
    tally = attempt_tally(attempt(number=2), [AttemptMark(1, 1, S.FAILURE, at(-5))])
    assert tally == {"n": 1, "SUCCESS": 1, "d" + bucket_of(5000): 1, "dN": 1, "dS": 5000,
                     "retries": 1, "flaky": 1}  # a retry nobody recorded: no queue sample
    first = attempt_tally(attempt(status=S.TIMED_OUT), [AttemptMark(0, 1, S.SUCCESS, at(-20))])
    assert first == {"n": 1, "TIMED_OUT": 1, "d" + bucket_of(5000): 1, "dN": 1, "dS": 5000,
                     "q" + bucket_of(20_000): 1, "qN": 1, "qS": 20_000}
    assert attempt_tally(attempt(status=S.CANCELLED, started=None), []) == {"n": 1, "CANCELLED": 1}
    assert attempt_tally(attempt(status=S.FAILURE, number=4, first=4), []) == {
        "n": 1, "FAILURE": 1, "d" + bucket_of(5000): 1, "dN": 1, "dS": 5000,
        "q" + bucket_of(60_000): 1, "qN": 1, "qS": 60_000}  # the run's first attempt: no retry
    for status in (S.SKIPPED, S.IN_PROGRESS, S.IDLE):
        assert attempt_tally(attempt(status=status), []) == {}


# ---- what a run adds ---------------------------------------------------------------------------------------

def run(status=S.SUCCESS, ended=T0, run_id="web:1", environment=None, committed=None, started=UNSET,
        commit=None) -> FinishedRun:
    return FinishedRun(pipeline="web", run_id=run_id, status=status, created_at=at(-3600),
                       started_at=at(-600) if started is UNSET else started, ended_at=ended, order=1,
                       environment=environment, committed_at=committed, commit=commit)


def test_deployments_are_the_latest_attempts_of_production_stages_in_order():
    marks = [AttemptMark(5, 2, S.SUCCESS, at(-1), "production"),
             AttemptMark(5, 1, S.FAILURE, at(-9), "production"),  # an older attempt, read after
             AttemptMark(4, 1, S.SUCCESS, at(-30), "production"),
             AttemptMark(6, 1, S.SUCCESS, at(-2), "production"),
             AttemptMark(6, 2, S.FAILURE, at(-1), "production"),
             AttemptMark(3, 1, S.SUCCESS, at(-3), None)]
    found = deploys_of(run(committed=at(-90)), marks)
    assert found == [Deploy(at(-30), 60_000), Deploy(at(-1), 89_000)]
    assert deploys_of(run(committed=at(-1)), marks[:1]) == [Deploy(at(-1), 0)]  # committed as it ended
    # a commit time after the deployment: no lead time
    assert deploys_of(run(committed=at(5)), marks[:1]) == [Deploy(at(-1), None)]
    # the run itself only when no stage deployed
    assert deploys_of(run(environment="production", committed=at(-10)), []) == [Deploy(at(0), 10_000)]
    assert deploys_of(run(environment="production"), marks[:1]) == [Deploy(at(-1), None)]
    assert deploys_of(run(environment="staging"), []) == []
    assert deploys_of(run(environment="production", status=S.CANCELLED), []) == []


def test_a_run_adds_its_counts_and_duration_on_its_day_and_each_deployment_on_its_own():
    ended = datetime(2026, 3, 21, 0, 0, 30, tzinfo=UTC)
    late = run(ended=ended, started=ended - timedelta(seconds=45), committed=ended - timedelta(hours=1))
    deploy_mark = AttemptMark(2, 1, S.SUCCESS, datetime(2026, 3, 20, 23, 59, tzinfo=UTC), "production")
    assert run_tallies(late, [deploy_mark]) == {
        "2026-03-21": {"n": 1, "SUCCESS": 1, "d" + bucket_of(45_000): 1, "dN": 1, "dS": 45_000},
        "2026-03-20": {"deploys": 1, "l" + bucket_of(3_510_000): 1, "lN": 1, "lS": 3_510_000}}  # 58.5 min
    assert run_tallies(run(S.FAILURE, started=None), []) == {"2026-03-20": {"n": 1, "FAILURE": 1}}
    two = [deploy_mark, replace(deploy_mark, position=3)]
    assert run_tallies(run(S.SKIPPED), two) == {"2026-03-20": {"deploys": 2}}  # not a counted run
    assert run_tallies(run(S.IN_PROGRESS), []) == {}


def past(status, started, ended, retried=None) -> PastAttempt:
    return PastAttempt(status=status, retried_at=retried, started_at=started, ended_at=ended)


def test_a_stored_runs_finishes_are_reconstructed_as_the_stream_showed_them():
    stored = replace(run(S.SUCCESS, ended=at(100), started=at(0)), order=7)
    build = [past(S.SUCCESS, at(0), at(10))]
    tests = [past(S.FAILURE, at(10), at(30)), past(S.SUCCESS, at(60), at(100), retried=at(50))]
    finishes = run_finishes(stored, [(build, False), (tests, False)], final=False)
    assert finishes == [
        (at(30), replace(stored, status=S.FAILURE, started_at=at(0), ended_at=at(30), order=0)),
        (at(100), replace(stored, status=S.SUCCESS, started_at=at(0), ended_at=at(100), order=1))]
    # stored final: the last finish is the run as stored
    assert run_finishes(stored, [(build, False), (tests, False)]) == [finishes[0], (at(100), stored)]
    # a stage that may fail counts as passed; the run ends with its latest stage
    allowed = run_finishes(stored, [(build, False), (tests[:1], True)], final=False)
    assert allowed == [(at(30), replace(stored, status=S.SUCCESS, started_at=at(0), ended_at=at(30),
                                        order=0))]
    # a retry with no recorded moment happens at its start; the first failure ends the run
    unrecorded = [past(S.FAILURE, at(10), at(30)), past(S.FAILURE, at(40), at(70))]
    again = run_finishes(stored, [(build, False), (unrecorded, False)], final=False)
    assert [(moment, f.status, f.ended_at, f.order) for moment, f in again] == [
        (at(30), S.FAILURE, at(30), 0), (at(70), S.FAILURE, at(70), 1)]  # failed again, later: a finish
    assert run_finishes(stored, [], final=True) == [(at(100), stored)]  # nothing to replay
    assert run_finishes(stored, [], final=False) == []


def test_a_retried_stage_is_not_failed_from_its_retry_on():
    """Retried at 50 (recorded), started at 60: when the other stage ends at 55 the run is busy
    again, not failed a second time."""
    stored = replace(run(S.SUCCESS, ended=at(100), started=at(0)), order=7)
    retried = [past(S.FAILURE, at(0), at(30)), past(S.SUCCESS, at(60), at(100), retried=at(50))]
    other = [past(S.SUCCESS, at(40), at(55))]
    finishes = run_finishes(stored, [(retried, False), (other, False)], final=False)
    assert [(moment, f.status, f.ended_at) for moment, f in finishes] == [
        (at(30), S.FAILURE, at(30)), (at(100), S.SUCCESS, at(100))]


def test_a_retry_without_start_is_ready_at_its_end_and_runs_never_finish_while_busy():
    stored = run(S.FAILURE, ended=at(20), started=at(0))
    never_started = [past(S.CANCELLED, None, at(5)), past(S.FAILURE, None, at(20))]
    finishes = run_finishes(stored, [(never_started, False)], final=False)
    assert [(moment, f.status, f.started_at, f.ended_at) for moment, f in finishes] == [
        (at(5), S.CANCELLED, None, at(5)), (at(20), S.FAILURE, None, at(20))]
    running = [past(S.SUCCESS, at(0), at(10))]
    busy = [past(S.SUCCESS, at(5), at(50))]  # in progress while the other ended
    ends = run_finishes(stored, [(running, False), (busy, False)], final=False)
    assert [(moment, f.status, f.started_at) for moment, f in ends] == [(at(50), S.SUCCESS, at(0))]


# ---- the order of runs -------------------------------------------------------------------------------

def test_a_deployment_restores_a_failed_change_and_becomes_the_pending_one():
    failing = PipelineState(failed_at=at(0), red_since=at(-10), pending_day="2026-03-19", pending_run="web:0")
    step = advance(failing, run(run_id="web:7", ended=at(120)), [Deploy(at(60), None), Deploy(at(120), None)])
    assert step.tallies == {"2026-03-20": {"t" + bucket_of(60_000): 1, "tN": 1, "tS": 60_000,
                                           "m" + bucket_of(130_000): 1, "mN": 1, "mS": 130_000}}
    assert step.state == PipelineState(pending_day="2026-03-20", pending_run="web:7")
    # a failure with nothing deployed: failing since, no failed change
    failed = advance(PipelineState(), run(S.FAILURE, ended=at(5)), [])
    assert failed.tallies == {} and failed.state == PipelineState(red_since=at(5))
    # a skipped run changes nothing
    assert advance(step.state, run(S.SKIPPED), []).state == step.state


def test_a_failure_after_a_deployment_is_a_failed_change_on_the_deployments_day():
    deployed = PipelineState(pending_day="2026-03-18", pending_run="web:3")
    step = advance(deployed, run(S.TIMED_OUT, ended=at(0), run_id="web:4"), [])
    assert step.tallies == {"2026-03-18": {"failedChanges": 1}}
    assert step.state == PipelineState(red_since=at(0), failed_at=at(0))
    # the deploying run's own success does not confirm its deployment; another's does
    own = advance(deployed, run(run_id="web:3"), [])
    assert own.state == deployed and own.tallies == {}
    assert advance(deployed, run(run_id="web:5"), []).state == PipelineState()


def mark(position, number, status, name="test") -> AttemptMark:
    return AttemptMark(position, number, status, at(position * 10 + number), name=name)


def test_a_stage_failing_on_a_commit_then_passing_in_another_run_is_flaky_once():
    first = run(S.FAILURE, run_id="web:1", commit="c0ffee")
    state, added = commit_flakiness(PipelineState(), first, [mark(1, 1, S.SUCCESS, "build"),
                                                            mark(2, 1, S.FAILURE)])
    assert added == {} and state.commit_failures == (("c0ffee", "test", "web:1"),)
    second = run(S.SUCCESS, run_id="web:2", commit="c0ffee")
    after, added = commit_flakiness(state, second, [mark(2, 1, S.SUCCESS)])
    assert added == {("2026-03-20", "test"): {"flaky": 1}} and after.commit_failures == ()
    # the same run's own failure does not make its success flaky across runs
    same, added = commit_flakiness(state, replace(second, run_id="web:1"), [mark(2, 2, S.SUCCESS)])
    assert added == {} and same.commit_failures == ()
    # another commit, or a failure already counted in the run (a retry), adds nothing
    other, added = commit_flakiness(state, replace(second, commit="beef"), [mark(2, 1, S.SUCCESS)])
    assert added == {} and other.commit_failures == state.commit_failures
    retried, added = commit_flakiness(state, second, [mark(2, 1, S.TIMED_OUT), mark(2, 2, S.SUCCESS)])
    assert added == {} and retried.commit_failures == ()
    # a run without a commit, or marks without a name, change nothing
    assert commit_flakiness(state, replace(second, commit=None), [mark(2, 1, S.SUCCESS)]) == (state, {})
    unnamed, added = commit_flakiness(state, second, [mark(2, 1, S.SUCCESS, name=None)])
    assert unnamed == state and added == {}


def test_commit_failures_are_kept_once_and_only_the_latest():
    failed = run(S.FAILURE, run_id="web:1", commit="c1")
    state, _ = commit_flakiness(PipelineState(), failed, [mark(2, 1, S.FAILURE)])
    again, _ = commit_flakiness(state, failed, [mark(2, 1, S.FAILURE)])  # the same finish again
    assert again.commit_failures == (("c1", "test", "web:1"),)
    kept = tuple((f"c{n}", "test", f"web:{n}") for n in range(MAX_COMMIT_FAILURES))
    many = PipelineState(commit_failures=kept)
    newest, _ = commit_flakiness(many, run(S.FAILURE, run_id="web:x", commit="cx"), [mark(2, 1, S.FAILURE)])
    assert len(newest.commit_failures) == MAX_COMMIT_FAILURES
    assert newest.commit_failures[0] == ("c1", "test", "web:1")  # the oldest went
    assert newest.commit_failures[-1] == ("cx", "test", "web:x")


# ---- figures -----------------------------------------------------------------------------------------

def test_rates_views_days_and_weeks():
    assert success_rate({"n": 7, "SUCCESS": 4, "CANCELLED": 1}) == 0.6667  # 4 / 6, 4 decimals
    assert success_rate({"n": 2, "CANCELLED": 2}) is None and success_rate({}) is None
    assert runs_view({"n": 9, "SUCCESS": 1, "FAILURE": 2, "CANCELLED": 3, "TIMED_OUT": 3, "SKIPPED": 4}) == {
        "total": 9, "success": 1, "failure": 2, "cancelled": 3, "timedOut": 3}
    assert runs_view({}) == {"total": 0, "success": 0, "failure": 0, "cancelled": 0, "timedOut": 0}
    assert days_between(date(2026, 3, 1), date(2026, 3, 1)) == 1
    assert days_between(date(2026, 2, 27), date(2026, 3, 2)) == 4
    thursday = date(2026, 3, 19)
    assert period_start(thursday, "day", date(2026, 3, 1)) == thursday
    assert period_start(thursday, "week", date(2026, 3, 1)) == date(2026, 3, 16)  # its Monday
    assert period_start(thursday, "week", date(2026, 3, 18)) == date(2026, 3, 18)  # clipped to the range


def day(day_: str, stage: str | None = None, **tally: int) -> DayItem:
    return DayItem(day=day_, stage=stage, tally=tally)


def test_figures_answer_from_the_items_of_the_range_alone():
    d10, d20, d40, q5 = ("d" + bucket_of(10_000), "d" + bucket_of(20_000), "d" + bucket_of(40_000),
                         "q" + bucket_of(5000))
    items = [
        day("2026-03-15", n=50, SUCCESS=50),  # before the range
        day("2026-03-16", n=2, SUCCESS=1, FAILURE=1, dN=2, dS=30_000, deploys=2, failedChanges=1,
            mN=1, mS=60_000, **{d10: 1, d20: 1, "m" + bucket_of(60_000): 1, "lN": 1, "lS": 7000,
                               "l" + bucket_of(7000): 1}),
        day("2026-03-17", "build", n=3, SUCCESS=2, TIMED_OUT=1, dN=3, dS=70_000, retries=1, flaky=1, qN=1,
            qS=5000, **{d10: 1, d20: 1, d40: 1, q5: 1}),
        day("2026-03-17", n=2, SUCCESS=1, CANCELLED=1, dN=1, dS=40_000, tN=1, tS=9000,
            **{d40: 1, "t" + bucket_of(9000): 1}),
        day("2026-03-18", "deploy", n=1, FAILURE=1),
        day("2026-03-24", n=9, FAILURE=9),  # after the range
    ]
    body = figures(items, date(2026, 3, 16), date(2026, 3, 23), "week")
    assert body == {
        "from": "2026-03-16", "to": "2026-03-23", "granularity": "week",
        "runs": {"total": 4, "success": 2, "failure": 1, "cancelled": 1, "timedOut": 0},
        "successRate": 0.6667,
        "duration": {"p50": read_back(20_000), "p90": read_back(40_000), "p95": read_back(40_000),
                     "mean": 23.333},
        "queue": {"p50": read_back(5000), "p95": read_back(5000)},
        "mttrSeconds": 60.0,
        "stages": [
            {"name": "build", "runs": 3, "successRate": 0.6667,
             "duration": {"p50": read_back(20_000), "p95": read_back(40_000)}, "flakyRate": 0.3333,
             "retries": 1},
            {"name": "deploy", "runs": 1, "successRate": 0.0, "duration": {"p50": None, "p95": None},
             "flakyRate": 0.0, "retries": 0}],
        "series": [
            {"start": "2026-03-16", "runs": 4, "successRate": 0.6667, "p50": read_back(20_000),
             "p95": read_back(40_000)},
            {"start": "2026-03-23", "runs": 0, "successRate": None, "p50": None, "p95": None}],
        "dora": {"deploymentFrequency": 0.25, "leadTimeSeconds": {"p50": read_back(7000)},
                 "changeFailureRate": 0.5, "timeToRestoreSeconds": {"p50": read_back(9000)}},
    }
    daily = figures(items, date(2026, 3, 17), date(2026, 3, 18), "day", stage="build")
    assert daily["runs"] == {"total": 3, "success": 2, "failure": 0, "cancelled": 0, "timedOut": 1}
    assert daily["duration"]["mean"] == 23.333 and daily["duration"]["p50"] == read_back(20_000)
    assert [s["name"] for s in daily["stages"]] == ["build"]
    assert daily["series"] == [
        {"start": "2026-03-17", "runs": 3, "successRate": 0.6667, "p50": read_back(20_000),
         "p95": read_back(40_000)},
        {"start": "2026-03-18", "runs": 0, "successRate": None, "p50": None, "p95": None}]
    assert daily["mttrSeconds"] is None  # the pipeline's, from the runs' items of those days
    assert daily["dora"]["deploymentFrequency"] == 0.0 and daily["dora"]["changeFailureRate"] is None


def test_the_last_day_of_the_calendar_is_a_range_too():
    body = figures([day("9999-12-31", n=1, SUCCESS=1)], date(9999, 12, 31), date(9999, 12, 31), "week")
    assert body["runs"]["total"] == 1 and [p["start"] for p in body["series"]] == ["9999-12-31"]
    assert math.isclose(body["dora"]["deploymentFrequency"], 0.0)


def test_events_of_one_moment_go_retry_start_end_then_by_stage():
    """At one moment a start goes before an end (the run is busy, not failed), and two ends go
    in stage order: each status the run passes through is a finish when it is final."""
    stored = replace(run(S.FAILURE, ended=at(50), started=at(0)), order=7)
    failed = [past(S.FAILURE, at(0), at(30))]
    starts_then = [past(S.SUCCESS, at(30), at(50))]  # starts as the other fails
    finishes = run_finishes(stored, [(failed, False), (starts_then, False)], final=False)
    assert [(moment, f.status, f.ended_at) for moment, f in finishes] == [(at(50), S.FAILURE, at(50))]
    # two ends at 30: the retried first stage (its second attempt) fails, then the second is cancelled
    retried = [past(S.FAILURE, at(0), at(10)), past(S.FAILURE, at(20), at(30), retried=at(15))]
    cancelled = [past(S.CANCELLED, None, at(30))]
    both = run_finishes(stored, [(retried, False), (cancelled, False)], final=False)
    assert [(moment, f.status, f.ended_at) for moment, f in both] == [
        (at(10), S.FAILURE, at(10)), (at(30), S.FAILURE, at(30)), (at(30), S.CANCELLED, at(30))]
    # an end that leaves the run as failed as it was, with the same end: no second finish
    same = run_finishes(stored, [(failed, False), ([past(S.SUCCESS, None, at(30))], False)], final=False)
    assert [(moment, f.status, f.ended_at) for moment, f in same] == [(at(30), S.FAILURE, at(30))]


def test_an_unnamed_mark_is_skipped_not_the_ones_after_it():
    state, _ = commit_flakiness(PipelineState(), run(S.FAILURE, commit="c1"),
                                [mark(1, 1, S.SUCCESS, name=None), mark(2, 1, S.FAILURE)])
    assert state.commit_failures == (("c1", "test", "web:1"),)


def test_percentiles_of_twenty_runs_are_their_ranks_everywhere():
    """1..20 s: p50 is the 10th, p90 the 18th, p95 the 19th (not the 20th), in the runs' figures,
    a stage's and the series."""
    tally: dict[str, int] = {}
    for n in range(1, 21):
        add_sample(tally, "d", n * 1000)
    items = [day("2026-03-16", n=20, SUCCESS=20, **tally),
             day("2026-03-16", "build", n=20, SUCCESS=20, **tally)]
    body = figures(items, date(2026, 3, 16), date(2026, 3, 16), "day")
    p50, p90, p95 = read_back(10_000), read_back(18_000), read_back(19_000)
    assert body["duration"] == {"p50": p50, "p90": p90, "p95": p95, "mean": 10.5}
    assert body["stages"][0]["duration"] == {"p50": p50, "p95": p95}
    assert (body["series"][0]["p50"], body["series"][0]["p95"]) == (p50, p95)


def test_a_stage_day_holding_only_a_flaky_mark_counts_no_run():
    body = figures([day("2026-03-16", "build", flaky=1)], date(2026, 3, 16), date(2026, 3, 16), "day")
    assert body["stages"] == [{"name": "build", "runs": 0, "successRate": None,
                               "duration": {"p50": None, "p95": None}, "flakyRate": None, "retries": 0}]
