"""The operations' refusals and records, exactly as a client sees them: which stages a retry,
cancel or decision touches, and the 409 message and details when it is refused (nothing changed)."""
from __future__ import annotations

import hashlib
import hmac

import pytest

from chalicelib.domain.errors import IllegalTransition
from chalicelib.domain.model import StageSpec, change_status, new_run
from chalicelib.domain.operations import (
    AlreadyDecided,
    NothingToRetry,
    cancel_stage,
    decide,
    retry_run,
    retry_stage,
    seal_secret,
)
from chalicelib.domain.status import StageStatus
from tests.fixtures.clock import FakeClock

S = StageStatus


def _run(clock, *approvals):
    approvals = approvals or ("AUTO",) * 4
    specs = [StageSpec(type="OTHER", name=f"s{i}", approval=a) for i, a in enumerate(approvals)]
    return new_run("web", 3, specs, clock.now())


def _finish(stage, status, clock):
    if status != S.SKIPPED:
        change_status(stage, S.IN_PROGRESS, clock.now())
    change_status(stage, status, clock.now())


# ---- retry -------------------------------------------------------------------------------------

def test_retrying_failed_takes_the_failures_and_the_skipped_stages_after_the_first_one():
    clock = FakeClock()
    aggregate = _run(clock, "AUTO", "AUTO", "AUTO", "AUTO", "AUTO")
    a, b, c, d, e = aggregate.stages
    _finish(a, S.SKIPPED, clock)   # skipped before the first failure: stays
    _finish(b, S.SUCCESS, clock)
    _finish(c, S.TIMED_OUT, clock)
    _finish(d, S.SKIPPED, clock)
    _finish(e, S.CANCELLED, clock)
    aggregate.stages.reverse()
    targets = retry_run(aggregate, "FAILED", clock.advance(1))
    assert [t.id for t in targets] == [c.id, d.id, e.id]
    assert [s.status for s in (a, b, c, d, e)] == [S.SKIPPED, S.SUCCESS, S.IDLE, S.IDLE, S.IDLE]
    assert [s.attempt for s in (a, b, c, d, e)] == [1, 1, 2, 2, 2]


def test_retrying_all_takes_every_finished_stage_and_leaves_never_started_ones():
    clock = FakeClock()
    aggregate = _run(clock)
    a, b, c, d = aggregate.stages
    _finish(a, S.SUCCESS, clock)
    _finish(b, S.FAILURE, clock)
    assert [t.id for t in retry_run(aggregate, "ALL", clock.now())] == [a.id, b.id]
    assert [s.attempt for s in (a, b, c, d)] == [2, 2, 1, 1]


@pytest.mark.parametrize("scope, wanted", [("FAILED", "failed, timed-out or cancelled"), ("ALL", "finished")])
def test_nothing_to_retry_says_what_was_looked_for(scope, wanted):
    clock = FakeClock()
    aggregate = _run(clock)
    if scope == "FAILED":
        _finish(aggregate.stages[0], S.SUCCESS, clock)
    with pytest.raises(NothingToRetry) as raised:
        retry_run(aggregate, scope, clock.now())
    status = "IN_PROGRESS" if scope == "FAILED" else "IDLE"
    assert raised.value.message == (
        f"nothing to retry: run 'web:3' has no {wanted} stage (run status {status})")
    assert raised.value.code == "nothing_to_retry"


def test_a_retry_is_refused_while_a_stage_is_active_and_changes_nothing():
    clock = FakeClock()
    aggregate = _run(clock)
    a, b, c, d = aggregate.stages
    _finish(a, S.FAILURE, clock)
    change_status(c, S.IN_PROGRESS, clock.now())
    before = aggregate.snapshot()
    for attempt in (lambda: retry_run(aggregate, "FAILED", clock.now()),
                    lambda: retry_run(aggregate, "ALL", clock.now())):
        with pytest.raises(IllegalTransition) as raised:
            attempt()
        assert raised.value.message == (
            "cannot retry run 'web:3': stage 'web:3:3' is IN_PROGRESS; cancel it or let it finish first")
        assert raised.value.details == {"stageId": "web:3:3", "from": "IN_PROGRESS", "to": "IDLE"}
    with pytest.raises(IllegalTransition) as raised:
        retry_stage(aggregate, c.id, clock.now())
    assert raised.value.message == (
        "cannot retry stage 'web:3:3': stage 'web:3:3' is IN_PROGRESS; cancel it or let it finish first")
    assert aggregate == before


def test_retrying_a_stage_takes_it_and_the_skipped_stages_after_it():
    clock = FakeClock()
    aggregate = _run(clock)
    a, b, c, d = aggregate.stages
    _finish(a, S.SKIPPED, clock)
    _finish(b, S.FAILURE, clock)
    _finish(c, S.SKIPPED, clock)
    _finish(d, S.SKIPPED, clock)
    aggregate.stages.reverse()
    assert [t.id for t in retry_stage(aggregate, b.id, clock.now())] == [b.id, c.id, d.id]
    assert a.status == S.SKIPPED
    with pytest.raises(NothingToRetry, match=r"nothing to retry: stage 'web:3:2' has not run yet \(IDLE\)"):
        retry_stage(aggregate, b.id, clock.now())


# ---- cancel ------------------------------------------------------------------------------------

def test_cancelling_a_stage_skips_only_the_idle_stages_after_it():
    clock = FakeClock()
    aggregate = _run(clock)
    a, b, c, d = aggregate.stages
    change_status(b, S.IN_PROGRESS, clock.now())
    assert cancel_stage(aggregate, b.id, clock.advance(2), actor="alice", reason="wrong") is True
    assert [s.status for s in (a, b, c, d)] == [S.IDLE, S.CANCELLED, S.SKIPPED, S.SKIPPED]
    assert aggregate.run.cancellation == {"by": "alice", "at": "2026-01-01T00:00:02.000Z", "reason": "wrong",
                                          "stageId": b.id}
    assert cancel_stage(aggregate, b.id, clock.now(), actor="bob") is False
    assert cancel_stage(aggregate, a.id, clock.now(), actor="bob") is False  # not started: no-op
    assert aggregate.run.cancellation["by"] == "alice"


# ---- approval gates ----------------------------------------------------------------------------

def _gate(clock):
    aggregate = _run(clock, "MANUAL", "AUTO")
    gate = aggregate.stages[0]
    change_status(gate, S.IN_PROGRESS, clock.now())
    assert gate.status == S.WAITING_FOR_APPROVAL
    return aggregate, gate


@pytest.mark.parametrize("decision, status", [("APPROVED", S.IN_PROGRESS), ("REJECTED", S.FAILURE)])
def test_a_decision_moves_the_gate_and_is_recorded_once(decision, status):
    clock = FakeClock()
    aggregate, gate = _gate(clock)
    assert decide(aggregate, gate.id, decision, clock.advance(3), actor="alice", comment="ok") is True
    record = {"decision": decision, "by": "alice", "at": "2026-01-01T00:00:03.000Z", "comment": "ok",
              "attempt": 1}
    assert (gate.status, gate.approval_decision) == (status, record)
    assert decide(aggregate, gate.id, decision, clock.advance(1), actor="bob") is False  # again: no-op
    assert gate.approval_decision == record
    other = "REJECTED" if decision == "APPROVED" else "APPROVED"
    with pytest.raises(AlreadyDecided) as raised:
        decide(aggregate, gate.id, other, clock.now(), actor="bob")
    assert raised.value.message == (
        f"stage 'web:3:1' was already {decision.lower()} by alice at 2026-01-01T00:00:03.000Z")
    assert raised.value.details == {"approvalDecision": record}
    assert raised.value.code == "already_decided"


@pytest.mark.parametrize("decision, verb, to", [("APPROVED", "approve", "IN_PROGRESS"),
                                                 ("REJECTED", "reject", "FAILURE")])
def test_deciding_a_stage_that_is_not_waiting_is_409(decision, verb, to):
    clock = FakeClock()
    aggregate = _run(clock)
    with pytest.raises(IllegalTransition) as raised:
        decide(aggregate, "web:3:1", decision, clock.now(), actor="alice")
    assert raised.value.message == f"cannot {verb} stage 'web:3:1': it is IDLE, not waiting for approval"
    assert raised.value.details == {"from": "IDLE", "to": to}
    assert aggregate.stages[0].approval_decision is None


def test_a_retried_gate_asks_for_a_new_decision():
    clock = FakeClock()
    aggregate, gate = _gate(clock)
    decide(aggregate, gate.id, "REJECTED", clock.now(), actor="alice")
    retry_stage(aggregate, gate.id, clock.now())
    assert gate.attempts[0]["approvalDecision"]["decision"] == "REJECTED"
    change_status(gate, S.IN_PROGRESS, clock.now())
    assert decide(aggregate, gate.id, "APPROVED", clock.now(), actor="bob") is True
    assert (gate.status, gate.approval_decision["attempt"]) == (S.IN_PROGRESS, 2)


# ---- secrets -----------------------------------------------------------------------------------

def test_a_secret_is_kept_as_its_keyed_hash():
    expected = hmac.new(b"pepper", b"hunter2", hashlib.sha256).hexdigest()
    assert seal_secret("hunter2", "pepper") == f"hmac-sha256:{expected}"
    assert seal_secret("hunter2", "other") != seal_secret("hunter2", "pepper")


def test_every_stage_an_operation_touches_is_stamped_with_its_time():
    clock = FakeClock()
    aggregate = _run(clock)
    a, b, c, d = aggregate.stages
    change_status(a, S.IN_PROGRESS, clock.now())
    cancel_stage(aggregate, a.id, clock.advance(2), actor="alice")
    assert [(s.status, s.ended_at) for s in (b, c, d)] == [(S.SKIPPED, clock.now())] * 3
    retry_run(aggregate, "FAILED", clock.advance(3))
    assert [s.updated_at for s in (a, b, c, d)] == [clock.now()] * 4
    gate_run, gate = _gate(clock)
    decide(gate_run, gate.id, "REJECTED", clock.advance(1), actor="bob")
    assert (gate.status, gate.ended_at, gate.updated_at) == (S.FAILURE, clock.now(), clock.now())
    retry_stage(gate_run, gate.id, clock.advance(1))
    assert (gate.updated_at, gate.attempt) == (clock.now(), 2)
