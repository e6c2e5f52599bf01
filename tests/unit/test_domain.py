"""The pure domain: transition table, run derivation, timing, ids, formats. No AWS here."""
from __future__ import annotations

import itertools

import pytest

from chalicelib.domain import ids
from chalicelib.domain.clock import format_iso, parse_iso, seconds_from_millis
from chalicelib.domain.errors import IllegalTransition
from chalicelib.domain.model import StageSpec, change_status, new_run, status_counts
from chalicelib.domain.retries import schedule_retry
from chalicelib.domain.status import (
    ACTIVE,
    FINAL,
    RUN_ONLY,
    STAGE_STATUSES,
    TRANSITIONS,
    StageStatus,
    derive_run_status,
)
from tests.fixtures.clock import FakeClock

S = StageStatus
ALL = list(StageStatus)
STAGES_ONLY = [status for status in ALL if status not in RUN_ONLY]  # what a stage can be in

LEGAL = {
    (S.IDLE, S.IN_PROGRESS), (S.IDLE, S.WAITING_FOR_APPROVAL), (S.IDLE, S.SKIPPED),
    (S.IDLE, S.CANCELLED),
    (S.WAITING_FOR_APPROVAL, S.IN_PROGRESS), (S.WAITING_FOR_APPROVAL, S.FAILURE),
    (S.WAITING_FOR_APPROVAL, S.CANCELLED), (S.WAITING_FOR_APPROVAL, S.TIMED_OUT),
    (S.WAITING_FOR_APPROVAL, S.SKIPPED),
    (S.IN_PROGRESS, S.SUCCESS), (S.IN_PROGRESS, S.FAILURE), (S.IN_PROGRESS, S.CANCELLED),
    (S.IN_PROGRESS, S.TIMED_OUT),
    # a pending automatic retry starts (by its timer, or reported running), or is cancelled
    (S.RETRY_PENDING, S.IN_PROGRESS), (S.RETRY_PENDING, S.WAITING_FOR_APPROVAL),
    (S.RETRY_PENDING, S.CANCELLED), (S.RETRY_PENDING, S.TIMED_OUT),  # the run deadline comes first
}


def test_transition_table_is_exactly_the_documented_one():
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == LEGAL
    assert set(TRANSITIONS) == set(ALL)
    for final in FINAL:
        assert TRANSITIONS[final] == frozenset()


def make_stage(status=S.IDLE, approval="AUTO", clock=None):
    clock = clock or FakeClock()
    aggregate = new_run("web", 1, [StageSpec("BUILD", "BUILD", approval=approval,
                                              retry_policy={"max": 1, "when": ["FAILURE"]})], clock.now())
    stage = aggregate.stages[0]
    if status == S.RETRY_PENDING:  # only the automatic retry rule puts a stage there
        for step in (S.IN_PROGRESS, S.FAILURE):
            change_status(stage, step, clock.now())
        assert schedule_retry(stage, clock.advance(1)) and stage.status == S.RETRY_PENDING
        return stage
    path = {
        S.IDLE: [], S.IN_PROGRESS: [S.IN_PROGRESS], S.WAITING_FOR_APPROVAL: [S.WAITING_FOR_APPROVAL],
        S.SUCCESS: [S.IN_PROGRESS, S.SUCCESS], S.FAILURE: [S.IN_PROGRESS, S.FAILURE],
        S.CANCELLED: [S.IN_PROGRESS, S.CANCELLED], S.TIMED_OUT: [S.IN_PROGRESS, S.TIMED_OUT],
        S.SKIPPED: [S.SKIPPED],
    }[status]
    for step in path:
        change_status(stage, step, clock.now())
        clock.advance(1)
    return stage


@pytest.mark.parametrize("current,target", [
    (a, b) for a, b in itertools.product(STAGES_ONLY, ALL) if a != b and (a, b) not in LEGAL
])
def test_every_illegal_transition_is_refused_and_changes_nothing(current, target):
    stage = make_stage(current)
    before = dict(vars(stage))
    with pytest.raises(IllegalTransition) as raised:
        change_status(stage, target, FakeClock().advance(99))
    assert raised.value.details == {"from": current.value, "to": target.value}
    assert vars(stage) == before


@pytest.mark.parametrize("current,target", sorted(LEGAL - {(S.WAITING_FOR_APPROVAL, S.IN_PROGRESS)}))
def test_every_legal_transition_is_applied(current, target):
    stage = make_stage(current)
    assert change_status(stage, target, FakeClock().advance(99)) is True
    assert stage.status == target


def test_waiting_stage_starts_only_through_approval():
    stage = make_stage(S.WAITING_FOR_APPROVAL)
    with pytest.raises(IllegalTransition, match="approve"):
        change_status(stage, S.IN_PROGRESS, FakeClock().now())
    assert change_status(stage, S.IN_PROGRESS, FakeClock().now(), via_approval=True)
    assert stage.status == S.IN_PROGRESS


def test_manual_stage_asked_to_start_waits_at_its_gate():
    clock = FakeClock()
    stage = make_stage(S.IDLE, approval="MANUAL", clock=clock)
    change_status(stage, S.IN_PROGRESS, clock.now())
    assert stage.status == S.WAITING_FOR_APPROVAL
    assert stage.started_at is None and stage.waiting_since == clock.now()


def test_same_status_is_a_no_op():
    stage = make_stage(S.IN_PROGRESS)
    before = dict(vars(stage))
    assert change_status(stage, S.IN_PROGRESS, FakeClock().advance(5)) is False
    assert vars(stage) == before


def test_timing_is_exact_to_the_millisecond():
    clock = FakeClock("2026-03-20T17:17:13.740Z")
    stage = make_stage(S.IDLE, clock=clock)
    change_status(stage, S.IN_PROGRESS, clock.now())
    assert format_iso(stage.started_at) == "2026-03-20T17:17:13.740Z"
    clock.advance(61.255)
    change_status(stage, S.SUCCESS, clock.now())
    assert format_iso(stage.ended_at) == "2026-03-20T17:18:14.995Z"
    assert stage.duration_ms == 61255
    assert seconds_from_millis(stage.duration_ms) == 61.255


def test_skipping_a_stage_that_never_started_has_no_duration():
    clock = FakeClock()
    stage = make_stage(S.IDLE, clock=clock)
    clock.advance(3)
    change_status(stage, S.SKIPPED, clock.now())
    assert stage.ended_at == clock.now() and stage.started_at is None and stage.duration_ms is None


def test_live_duration_of_a_running_stage_follows_the_clock():
    clock = FakeClock()
    stage = make_stage(S.IDLE, clock=clock)
    change_status(stage, S.IN_PROGRESS, clock.now())
    clock.advance(42.5)
    assert stage.elapsed_ms(clock.now()) == 42500
    clock.advance(1)
    change_status(stage, S.FAILURE, clock.now())
    clock.advance(100)
    assert stage.elapsed_ms(clock.now()) == 43500


@pytest.mark.parametrize("statuses,expected", [
    ([], S.IDLE),
    ([S.IDLE, S.IDLE], S.IDLE),
    ([S.SUCCESS, S.IDLE], S.IN_PROGRESS),
    ([S.SUCCESS, S.IN_PROGRESS, S.IDLE], S.IN_PROGRESS),
    ([S.SUCCESS, S.WAITING_FOR_APPROVAL], S.WAITING_FOR_APPROVAL),
    ([S.IN_PROGRESS, S.WAITING_FOR_APPROVAL], S.IN_PROGRESS),
    ([S.FAILURE, S.IDLE], S.FAILURE),
    ([S.FAILURE, S.IN_PROGRESS], S.IN_PROGRESS),
    ([S.TIMED_OUT, S.FAILURE], S.TIMED_OUT),
    ([S.CANCELLED, S.TIMED_OUT, S.SKIPPED], S.CANCELLED),
    ([S.SKIPPED, S.SKIPPED], S.SKIPPED),
    ([S.SUCCESS, S.SKIPPED], S.SUCCESS),
    ([S.SUCCESS, S.SUCCESS], S.SUCCESS),
])
def test_run_status_is_derived_from_its_stages(statuses, expected):
    assert derive_run_status(statuses) == expected


def test_run_timing_follows_its_stages():
    clock = FakeClock("2026-01-01T00:00:00.000Z")
    aggregate = new_run("web", 7, [StageSpec("BUILD", "a"), StageSpec("DEPLOY_PROD", "b")], clock.now())
    first, second = aggregate.stages
    clock.advance(10)
    change_status(first, S.IN_PROGRESS, clock.now())
    aggregate.refresh(clock.now())
    assert aggregate.run.status == S.IN_PROGRESS
    assert format_iso(aggregate.run.started_at) == "2026-01-01T00:00:10.000Z"
    assert aggregate.run.ended_at is None and aggregate.run.duration_ms is None
    clock.advance(5)
    assert aggregate.run.elapsed_ms(clock.now()) == 5000
    change_status(first, S.SUCCESS, clock.now())
    change_status(second, S.IN_PROGRESS, clock.now())
    clock.advance(2.5)
    change_status(second, S.SUCCESS, clock.now())
    aggregate.refresh(clock.now())
    assert aggregate.run.status == S.SUCCESS
    assert format_iso(aggregate.run.ended_at) == "2026-01-01T00:00:17.500Z"
    assert aggregate.run.duration_ms == 7500


def test_active_and_final_partition_the_non_idle_statuses():
    assert ACTIVE | FINAL | {S.IDLE} == set(STAGES_ONLY) == set(STAGE_STATUSES)
    assert set(STAGE_STATUSES) | RUN_ONLY == set(ALL)  # QUEUED, CANCELLING: a run's status only
    assert RUN_ONLY == {S.QUEUED, S.CANCELLING}
    assert not TRANSITIONS[S.CANCELLING] and not TRANSITIONS[S.QUEUED]
    assert not ACTIVE & FINAL


def test_iso_format_matches_the_reference():
    moment = parse_iso("2023-03-20T17:17:13.760Z")
    assert format_iso(moment) == "2023-03-20T17:17:13.760Z"
    assert format_iso(parse_iso("2023-03-20T19:17:13.760123+02:00")) == "2023-03-20T17:17:13.760Z"
    assert format_iso(None) is None


@pytest.mark.parametrize("millis,expected", [(None, None), (0, 0), (60000, 60), (1500, 1.5), (1, 0.001)])
def test_durations_are_integers_when_whole(millis, expected):
    value = seconds_from_millis(millis)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("value,parsed", [
    ("web:1", ("web", 1)), ("a.b-c_d:42", ("a.b-c_d", 42)),
    ("web", None), ("web:0", None), ("web:01", None), ("web:x", None), (":1", None),
    ("we b:1", None), ("web:1:2", None), ("", None),
])
def test_run_ids(value, parsed):
    assert ids.parse_run_id(value) == parsed


@pytest.mark.parametrize("value,parsed", [
    ("web:1:3", ("web:1", 3)), ("web:1", None), ("web:1:0", None), ("web:x:1", None),
    ("web:1:3:4", None),
])
def test_stage_ids(value, parsed):
    assert ids.parse_stage_id(value) == parsed
    if parsed:
        assert ids.stage_id(*parsed) == value


def test_the_per_status_counters_count_every_stage_once():
    """What the store keeps on the run item: exact counts, a stage allowed to fail as SUCCESS."""
    clock = FakeClock("2026-01-01T00:00:00.000Z")
    specs = [StageSpec("BUILD", "a"), StageSpec("BUILD", "b"), StageSpec("BUILD", "c"),
             StageSpec("BUILD", "d"), StageSpec("BUILD", "e")]
    stages = new_run("web", 1, specs, clock.now()).stages
    stages[3].allow_failure = True
    for stage, target in zip(stages, [S.SUCCESS, S.SUCCESS, S.FAILURE, S.FAILURE], strict=False):
        change_status(stage, S.IN_PROGRESS, clock.now())
        change_status(stage, target, clock.now())
    assert status_counts(stages) == {S.SUCCESS: 3, S.FAILURE: 1, S.IDLE: 1}
    assert status_counts([]) == {}


def test_an_illegal_transition_names_both_statuses_in_its_details():
    clock = FakeClock("2026-01-01T00:00:00.000Z")
    stage = new_run("web", 1, [StageSpec("BUILD", "a")], clock.now()).stages[0]
    with pytest.raises(IllegalTransition) as refused:
        change_status(stage, S.SUCCESS, clock.now())
    assert refused.value.details == {"from": "IDLE", "to": "SUCCESS"}


def test_starting_a_stage_at_its_gate_without_approval_names_both_statuses_in_its_details():
    clock = FakeClock("2026-01-01T00:00:00.000Z")
    stage = new_run("web", 1, [StageSpec("BUILD", "a", approval="MANUAL")], clock.now()).stages[0]
    change_status(stage, S.IN_PROGRESS, clock.now())
    assert stage.status == S.WAITING_FOR_APPROVAL
    with pytest.raises(IllegalTransition, match="approve it to start it") as refused:
        change_status(stage, S.IN_PROGRESS, clock.now())
    assert refused.value.details == {"from": "WAITING_FOR_APPROVAL", "to": "IN_PROGRESS"}
