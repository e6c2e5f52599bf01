"""The pure rules of the operations (domain/operations.py): no storage, a fake clock."""
from __future__ import annotations

import hashlib
import hmac

import pytest

from chalicelib.domain import operations as ops
from chalicelib.domain.clock import format_iso
from chalicelib.domain.errors import Conflict, IllegalTransition, ValidationFailed
from chalicelib.domain.model import StageSpec, change_status, new_run
from chalicelib.domain.status import StageStatus as S
from chalicelib.domain.views import run_view, stage_view
from tests.fixtures.clock import FakeClock

PEPPER = "test-pepper"


def make_run(*approvals, clock=None):
    clock = clock or FakeClock("2026-03-20T17:17:13.760Z")
    specs = [
        StageSpec(type="OTHER", name=f"s{i}", approval=a) for i, a in enumerate(approvals or ("AUTO",) * 4)
    ]
    return new_run("web", 1, specs, clock.now()), clock


def set_statuses(aggregate, clock, *statuses):
    """Walk the first ``len(statuses)`` stages to the wanted status through legal transitions, one
    second apart; the stages after them stay as they are."""
    for stage, target in zip(aggregate.stages, statuses, strict=False):
        path = {
            S.IDLE: [], S.IN_PROGRESS: [S.IN_PROGRESS], S.WAITING_FOR_APPROVAL: [S.WAITING_FOR_APPROVAL],
            S.SUCCESS: [S.IN_PROGRESS, S.SUCCESS], S.FAILURE: [S.IN_PROGRESS, S.FAILURE],
            S.TIMED_OUT: [S.IN_PROGRESS, S.TIMED_OUT], S.CANCELLED: [S.IN_PROGRESS, S.CANCELLED],
            S.SKIPPED: [S.SKIPPED],
        }[target]
        for step in path:
            clock.advance(1)
            change_status(stage, step, clock.now())
    aggregate.refresh(clock.now())


def statuses(aggregate):
    return [s.status for s in aggregate.stages]


# ---- cancel ----------------------------------------------------------------------------------

def test_cancel_run_cancels_active_and_skips_not_started():
    aggregate, clock = make_run()
    set_statuses(aggregate, clock, S.SUCCESS, S.IN_PROGRESS, S.IDLE, S.IDLE)
    clock.advance(5)
    assert ops.cancel_run(aggregate, clock.now(), actor="alice", reason="wrong branch")
    aggregate.refresh(clock.now())
    assert statuses(aggregate) == [S.SUCCESS, S.CANCELLED, S.SKIPPED, S.SKIPPED]
    assert aggregate.run.status == S.CANCELLED
    running = aggregate.stages[1]
    assert running.ended_at == clock.now() and running.duration_ms == 5000
    assert aggregate.stages[2].started_at is None and aggregate.stages[2].duration_ms is None
    assert aggregate.run.cancellation == {"by": "alice", "at": "2026-03-20T17:17:21.760Z",
                                          "reason": "wrong branch", "stageId": None}


def test_cancel_run_cancels_a_stage_waiting_for_approval():
    aggregate, clock = make_run("AUTO", "MANUAL", "AUTO")
    set_statuses(aggregate, clock, S.SUCCESS, S.WAITING_FOR_APPROVAL, S.IDLE)
    assert ops.cancel_run(aggregate, clock.now(), actor="a")
    assert statuses(aggregate) == [S.SUCCESS, S.CANCELLED, S.SKIPPED]


def test_cancel_run_between_stages_cancels_the_next_stage():
    aggregate, clock = make_run()
    set_statuses(aggregate, clock, S.SUCCESS, S.SUCCESS, S.IDLE, S.IDLE)
    assert aggregate.run.status == S.IN_PROGRESS
    assert ops.cancel_run(aggregate, clock.now(), actor="a")
    aggregate.refresh(clock.now())
    assert statuses(aggregate) == [S.SUCCESS, S.SUCCESS, S.CANCELLED, S.SKIPPED]
    assert aggregate.run.status == S.CANCELLED


def test_cancel_run_that_never_started():
    aggregate, clock = make_run()
    assert ops.cancel_run(aggregate, clock.now(), actor="a")
    aggregate.refresh(clock.now())
    assert statuses(aggregate) == [S.CANCELLED, S.SKIPPED, S.SKIPPED, S.SKIPPED]
    assert aggregate.run.status == S.CANCELLED
    assert aggregate.run.started_at is None and aggregate.run.duration_ms is None


@pytest.mark.parametrize("final", [
    (S.SUCCESS, S.SUCCESS, S.SUCCESS, S.SUCCESS),
    (S.SUCCESS, S.FAILURE, S.IDLE, S.IDLE),       # failed: finished even with stages left
    (S.CANCELLED, S.SKIPPED, S.SKIPPED, S.SKIPPED),
    (S.SKIPPED, S.SKIPPED, S.SKIPPED, S.SKIPPED),
])
def test_cancelling_a_finished_run_changes_nothing(final):
    aggregate, clock = make_run()
    set_statuses(aggregate, clock, *final)
    before = aggregate.snapshot()
    assert ops.cancel_run(aggregate, clock.now(), actor="a") is False
    assert aggregate == before


def test_cancel_stage_cancels_it_and_skips_later_idle_stages():
    aggregate, clock = make_run()
    set_statuses(aggregate, clock, S.IN_PROGRESS, S.IN_PROGRESS, S.IDLE, S.IDLE)
    target = aggregate.stages[1]
    assert ops.cancel_stage(aggregate, target.id, clock.now(), actor="bob", reason="stuck")
    aggregate.refresh(clock.now())
    # the earlier running stage is not this cancel's business
    assert statuses(aggregate) == [S.IN_PROGRESS, S.CANCELLED, S.SKIPPED, S.SKIPPED]
    assert aggregate.run.status == S.IN_PROGRESS
    assert aggregate.run.cancellation["stageId"] == target.id
    assert aggregate.run.cancellation["by"] == "bob"


@pytest.mark.parametrize("status", [S.IDLE, S.SUCCESS, S.FAILURE, S.CANCELLED, S.SKIPPED])
def test_cancelling_a_stage_that_is_not_active_changes_nothing(status):
    aggregate, clock = make_run()
    set_statuses(aggregate, clock, status)
    before = aggregate.snapshot()
    assert ops.cancel_stage(aggregate, aggregate.stages[0].id, clock.now(), actor="a") is False
    assert aggregate == before


# ---- retry -----------------------------------------------------------------------------------

def test_retry_failed_scope_restarts_failed_and_later_skipped_stages():
    aggregate, clock = make_run()
    set_statuses(aggregate, clock, S.SUCCESS, S.FAILURE, S.SKIPPED, S.SKIPPED)
    failed = aggregate.stages[1]
    started, ended = failed.started_at, failed.ended_at
    clock.advance(60)
    retried = ops.retry_run(aggregate, "FAILED", clock.now())
    aggregate.refresh(clock.now())
    assert [s.name for s in retried] == ["s1", "s2", "s3"]
    assert statuses(aggregate) == [S.SUCCESS, S.IDLE, S.IDLE, S.IDLE]
    assert aggregate.run.status == S.IN_PROGRESS
    assert failed.attempt == 2 and failed.started_at is None and failed.ended_at is None
    assert failed.duration_ms is None
    assert failed.attempts == [{"attempt": 1, "status": "FAILURE", "startedAt": "2026-03-20T17:17:16.760Z",
                                "endedAt": "2026-03-20T17:17:17.760Z", "duration": 1}]
    assert failed.attempts[0]["startedAt"] == format_iso(started)
    assert failed.attempts[0]["endedAt"] == format_iso(ended)
    skipped = aggregate.stages[2]
    assert skipped.attempt == 2 and skipped.attempts[0]["status"] == "SKIPPED"
    assert skipped.attempts[0]["startedAt"] is None and skipped.attempts[0]["duration"] is None
    assert aggregate.stages[0].attempt == 1 and aggregate.stages[0].attempts == []
    # the run keeps its first start: its history did not go away
    assert aggregate.run.started_at == aggregate.stages[0].started_at


def test_retry_failed_scope_includes_timed_out_and_cancelled():
    aggregate, clock = make_run()
    set_statuses(aggregate, clock, S.TIMED_OUT, S.SUCCESS, S.CANCELLED, S.SKIPPED)
    retried = ops.retry_run(aggregate, "FAILED", clock.now())
    assert [s.name for s in retried] == ["s0", "s2", "s3"]
    assert statuses(aggregate) == [S.IDLE, S.SUCCESS, S.IDLE, S.IDLE]


def test_retry_all_restarts_every_finished_stage():
    aggregate, clock = make_run()
    set_statuses(aggregate, clock, S.SUCCESS, S.SUCCESS, S.SUCCESS, S.IDLE)
    retried = ops.retry_run(aggregate, "ALL", clock.now())
    aggregate.refresh(clock.now())
    assert [s.name for s in retried] == ["s0", "s1", "s2"]
    assert statuses(aggregate) == [S.IDLE] * 4
    assert [s.attempt for s in aggregate.stages] == [2, 2, 2, 1]
    # every stage reset: the run is queued again (IDLE) but keeps when it first started
    assert aggregate.run.status == S.IDLE and aggregate.run.started_at is not None


@pytest.mark.parametrize("final,scope", [
    ((S.SUCCESS,) * 4, "FAILED"),
    ((S.IDLE,) * 4, "FAILED"),
    ((S.IDLE,) * 4, "ALL"),
    ((S.SUCCESS, S.SKIPPED, S.SKIPPED, S.SKIPPED), "FAILED"),
])
def test_retry_with_nothing_to_retry_is_a_conflict(final, scope):
    aggregate, clock = make_run()
    set_statuses(aggregate, clock, *final)
    before = aggregate.snapshot()
    with pytest.raises(ops.NothingToRetry, match="nothing to retry"):
        ops.retry_run(aggregate, scope, clock.now())
    assert aggregate == before


@pytest.mark.parametrize("active", [S.IN_PROGRESS, S.WAITING_FOR_APPROVAL])
def test_retry_run_while_a_stage_is_active_is_refused(active):
    aggregate, clock = make_run("AUTO", "MANUAL")
    set_statuses(aggregate, clock, S.FAILURE, active)
    before = aggregate.snapshot()
    with pytest.raises(IllegalTransition, match="cancel it or let it finish"):
        ops.retry_run(aggregate, "FAILED", clock.now())
    assert aggregate == before


def test_retry_stage_restarts_it_and_the_skipped_stages_after_it():
    aggregate, clock = make_run()
    set_statuses(aggregate, clock, S.SUCCESS, S.CANCELLED, S.SKIPPED, S.SKIPPED)
    retried = ops.retry_stage(aggregate, aggregate.stages[0].id, clock.now())
    assert [s.name for s in retried] == ["s0", "s2", "s3"]  # the cancelled one is not "skipped"
    assert statuses(aggregate) == [S.IDLE, S.CANCELLED, S.IDLE, S.IDLE]


@pytest.mark.parametrize("status,error", [
    (S.IN_PROGRESS, IllegalTransition), (S.WAITING_FOR_APPROVAL, IllegalTransition),
    (S.IDLE, ops.NothingToRetry),
])
def test_retry_stage_that_is_not_finished_is_refused(status, error):
    aggregate, clock = make_run("MANUAL")
    set_statuses(aggregate, clock, status)
    before = aggregate.snapshot()
    with pytest.raises(error):
        ops.retry_stage(aggregate, aggregate.stages[0].id, clock.now())
    assert aggregate == before


def test_attempts_are_capped():
    aggregate, clock = make_run("AUTO")
    stage = aggregate.stages[0]
    for _ in range(ops.MAX_ATTEMPTS - 1):
        change_status(stage, S.SKIPPED, clock.now())
        ops.retry_stage(aggregate, stage.id, clock.now())
    assert stage.attempt == ops.MAX_ATTEMPTS and len(stage.attempts) == ops.MAX_ATTEMPTS - 1
    change_status(stage, S.SKIPPED, clock.now())
    with pytest.raises(Conflict, match="attempts"):
        ops.retry_stage(aggregate, stage.id, clock.now())


# ---- approval --------------------------------------------------------------------------------

def test_approve_opens_the_gate_and_records_who():
    aggregate, clock = make_run("MANUAL")
    set_statuses(aggregate, clock, S.WAITING_FOR_APPROVAL)
    stage = aggregate.stages[0]
    clock.advance(30)
    assert ops.decide(aggregate, stage.id, ops.APPROVED, clock.now(), actor="carol", comment="ship it")
    assert stage.status == S.IN_PROGRESS and stage.started_at == clock.now()
    assert stage.approval_decision == {
        "decision": "APPROVED",
        "by": "carol",
        "at": "2026-03-20T17:17:44.760Z",
        "comment": "ship it",
        "attempt": 1,
    }
    assert stage_view(stage, clock.now())["approvalDecision"]["by"] == "carol"


def test_approving_twice_is_a_no_op_even_after_the_stage_moved_on():
    aggregate, clock = make_run("MANUAL")
    set_statuses(aggregate, clock, S.WAITING_FOR_APPROVAL)
    stage = aggregate.stages[0]
    ops.decide(aggregate, stage.id, ops.APPROVED, clock.now(), actor="carol")
    change_status(stage, S.SUCCESS, clock.advance(5))
    before = aggregate.snapshot()
    assert ops.decide(aggregate, stage.id, ops.APPROVED, clock.now(), actor="dave") is False
    assert aggregate == before


def test_reject_fails_the_gate():
    aggregate, clock = make_run("MANUAL", "AUTO")
    set_statuses(aggregate, clock, S.WAITING_FOR_APPROVAL)
    stage = aggregate.stages[0]
    assert ops.decide(aggregate, stage.id, ops.REJECTED, clock.now(), actor="erin", comment="no")
    aggregate.refresh(clock.now())
    assert stage.status == S.FAILURE and stage.started_at is None and stage.duration_ms is None
    assert aggregate.run.status == S.FAILURE
    assert ops.decide(aggregate, stage.id, ops.REJECTED, clock.now(), actor="erin") is False
    with pytest.raises(ops.AlreadyDecided, match="already rejected by erin"):
        ops.decide(aggregate, stage.id, ops.APPROVED, clock.now(), actor="frank")


def test_approving_a_rejected_gate_after_a_retry_needs_a_new_wait():
    aggregate, clock = make_run("MANUAL")
    set_statuses(aggregate, clock, S.WAITING_FOR_APPROVAL)
    stage = aggregate.stages[0]
    ops.decide(aggregate, stage.id, ops.REJECTED, clock.now(), actor="erin")
    ops.retry_run(aggregate, "FAILED", clock.now())
    assert stage.approval_decision is None
    assert stage.attempts[0]["approvalDecision"]["decision"] == "REJECTED"
    with pytest.raises(IllegalTransition, match="IDLE, not waiting"):
        ops.decide(aggregate, stage.id, ops.APPROVED, clock.now(), actor="frank")
    change_status(stage, S.IN_PROGRESS, clock.now())  # asks to start: waits at its gate
    assert stage.status == S.WAITING_FOR_APPROVAL
    assert ops.decide(aggregate, stage.id, ops.APPROVED, clock.now(), actor="frank")
    assert stage.approval_decision["attempt"] == 2


@pytest.mark.parametrize("status", [S.IDLE, S.IN_PROGRESS, S.SUCCESS, S.CANCELLED])
@pytest.mark.parametrize("decision", [ops.APPROVED, ops.REJECTED])
def test_deciding_on_a_stage_that_is_not_waiting_is_refused(status, decision):
    aggregate, clock = make_run("AUTO")
    set_statuses(aggregate, clock, status)
    before = aggregate.snapshot()
    with pytest.raises(IllegalTransition, match="not waiting for approval"):
        ops.decide(aggregate, aggregate.stages[0].id, decision, clock.now(), actor="x")
    assert aggregate == before


# ---- variables -------------------------------------------------------------------------------

def test_variables_merge_and_secrets_are_kept_only_as_a_keyed_hash():
    aggregate, clock = make_run()
    aggregate.run.variables = {"ENV": "staging", "KEEP": "1"}
    changes = [ops.VariableChange("ENV", "prod"), ops.VariableChange("TOKEN", "s3cr3t", secret=True)]
    assert ops.apply_variables(aggregate, changes, PEPPER)
    expected = "hmac-sha256:" + hmac.new(PEPPER.encode(), b"s3cr3t", hashlib.sha256).hexdigest()
    assert aggregate.run.variables == {"ENV": "prod", "KEEP": "1"}
    assert aggregate.run.secrets == {"TOKEN": expected}
    view = run_view(aggregate, clock.now())
    assert view["variables"] == {"ENV": "prod", "KEEP": "1", "TOKEN": "******"}
    assert view["secretVariables"] == ["TOKEN"]
    assert "s3cr3t" not in repr(aggregate) and "s3cr3t" not in repr(view)


def test_setting_the_same_variables_again_changes_nothing():
    aggregate, _ = make_run()
    changes = [ops.VariableChange("A", "1"), ops.VariableChange("B", "2", secret=True)]
    assert ops.apply_variables(aggregate, changes, PEPPER)
    assert ops.apply_variables(aggregate, changes, PEPPER) is False


def test_a_key_switches_between_plain_and_secret():
    aggregate, _ = make_run()
    ops.apply_variables(aggregate, [ops.VariableChange("A", "1", secret=True)], PEPPER)
    ops.apply_variables(aggregate, [ops.VariableChange("A", "2")], PEPPER)
    assert aggregate.run.variables == {"A": "2"} and aggregate.run.secrets == {}
    ops.apply_variables(aggregate, [ops.VariableChange("A", "3", secret=True)], PEPPER)
    assert aggregate.run.variables == {} and list(aggregate.run.secrets) == ["A"]


def test_at_most_100_variables_per_run_after_the_merge():
    aggregate, _ = make_run()
    aggregate.run.variables = {f"V{i}": "x" for i in range(99)}
    assert ops.apply_variables(
        aggregate, [ops.VariableChange("V0", "y"), ops.VariableChange("N", "1")], PEPPER
    )
    before = aggregate.snapshot()
    with pytest.raises(ValidationFailed, match="at most 100 variables"):
        ops.apply_variables(aggregate, [ops.VariableChange("S", "1", secret=True)], PEPPER)
    assert aggregate == before


def test_total_size_of_variables_is_bounded():
    aggregate, _ = make_run()
    big = "x" * 4096
    ops.apply_variables(aggregate, [ops.VariableChange(f"V{i}", big) for i in range(15)], PEPPER)
    with pytest.raises(ValidationFailed, match="bytes"):
        ops.apply_variables(aggregate, [ops.VariableChange(f"W{i}", big) for i in range(2)], PEPPER)


# ---- layouts ---------------------------------------------------------------------------------

def test_layout_round_trip_ignores_unknown_fields_and_options():
    specs = [StageSpec(type="BUILD", name="b", timeout_seconds=60, approval="MANUAL")]
    layout = ops.layout_of(specs, timeout_seconds=600)
    layout["stages"][0]["from_the_future"] = 1
    layout["run"]["unknown_option"] = True
    assert ops.specs_of(layout) == (specs, {"timeout_seconds": 600})
