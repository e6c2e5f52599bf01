"""Approval policies on the pure domain (domain/approvals.py): who may decide, N of M, self-approval,
one decision per approver, onTimeout and the reminder by the stage timer."""
from __future__ import annotations

import pytest

from chalicelib.domain import operations as ops
from chalicelib.domain.approvals import (
    TIMER_ACTOR,
    AlreadyDecided,
    ApprovalPolicy,
    NotAnApprover,
    check_policy,
    policy_from_spec,
)
from chalicelib.domain.auth import Forbidden
from chalicelib.domain.errors import IllegalTransition
from chalicelib.domain.model import RunMetadata, StageSpec, change_status, new_run
from chalicelib.domain.status import StageStatus as S
from chalicelib.domain.timers import fire, next_due
from tests.fixtures.clock import FakeClock

GROUPS = {"release": ["alice", "bob"]}


def gate(clock=None, *, creator="ci-bot", timeout=None, **policy):
    """A run whose one stage is a MANUAL gate with ``policy``, already waiting for approval."""
    clock = clock or FakeClock("2026-03-20T17:00:00.000Z")
    declared = policy_from_spec(policy.get("approvers"), policy.get("required"), policy.get("prevent"),
                                policy.get("on_timeout"), policy.get("remind"), policy.get("groups", GROUPS))
    spec = StageSpec(type="DEPLOY_PROD", name="ship", approval="MANUAL", timeout_seconds=timeout,
                     approval_policy=declared.as_dict())
    aggregate = new_run("web", 1, [spec], clock.now(), metadata=RunMetadata(actor=creator))
    change_status(aggregate.stages[0], S.IN_PROGRESS, clock.now())  # to its gate
    assert aggregate.stages[0].status == S.WAITING_FOR_APPROVAL
    return aggregate, clock


def decide(aggregate, clock, who, decision=ops.APPROVED, comment=None):
    clock.advance(1)
    return ops.decide(aggregate, aggregate.stages[0].id, decision, clock.now(), actor=f"basic-user-{who}",
                      approver=who, comment=comment)


def test_two_of_three_approvals_open_the_gate_and_each_is_recorded():
    aggregate, clock = gate(approvers=["group:release", "carol"], required=2)
    stage = aggregate.stages[0]
    assert decide(aggregate, clock, "alice", comment="looks fine") is True
    assert stage.status == S.WAITING_FOR_APPROVAL  # 1 of 2
    assert stage.approvals == [{"decision": "APPROVED", "by": "alice", "at": "2026-03-20T17:00:01.000Z",
                                "comment": "looks fine", "attempt": 1}]
    assert stage.approval_decision is None
    assert decide(aggregate, clock, "carol") is True
    assert stage.status == S.IN_PROGRESS
    assert [d["by"] for d in stage.approvals] == ["alice", "carol"]
    assert stage.approval_decision == {"decision": "APPROVED", "by": "carol",
                                       "at": "2026-03-20T17:00:02.000Z",
                                       "comment": None, "attempt": 1}


def test_a_rejection_by_any_allowed_approver_ends_the_gate():
    aggregate, clock = gate(approvers=["group:release", "carol"], required=2)
    decide(aggregate, clock, "alice")
    decide(aggregate, clock, "bob", ops.REJECTED, comment="not today")
    stage = aggregate.stages[0]
    assert stage.status == S.FAILURE
    assert stage.approval_decision["decision"] == "REJECTED" and stage.approval_decision["by"] == "bob"
    with pytest.raises(IllegalTransition):
        decide(aggregate, clock, "carol")


def test_a_token_that_is_not_an_approver_is_refused_with_the_reason_and_nothing_changes():
    aggregate, clock = gate(approvers=["group:release"], required=1)
    before = aggregate.snapshot()
    with pytest.raises(NotAnApprover) as caught:
        decide(aggregate, clock, "mallory")
    assert isinstance(caught.value, Forbidden)
    assert caught.value.message == (
        "'mallory' is not an allowed approver of stage 'web:1:1' (approvers: group:release)")
    assert aggregate == before


def test_the_approver_is_the_token_not_the_basic_user_name_the_client_chose():
    aggregate, clock = gate(approvers=["alice"])
    with pytest.raises(NotAnApprover):
        ops.decide(aggregate, aggregate.stages[0].id, ops.APPROVED, clock.now(), actor="alice",
                   approver="mallory")


def test_self_approval_is_refused_when_the_policy_prevents_it():
    aggregate, clock = gate(creator="alice", approvers=["group:release"], prevent=True)
    with pytest.raises(NotAnApprover) as caught:
        decide(aggregate, clock, "alice")
    assert caught.value.message == "'alice' started this run and stage 'web:1:1' prevents self-approval"
    assert decide(aggregate, clock, "bob") is True
    assert aggregate.stages[0].status == S.IN_PROGRESS


def test_self_approval_is_allowed_without_prevent():
    aggregate, clock = gate(creator="alice", approvers=["group:release"])
    assert decide(aggregate, clock, "alice") is True


@pytest.mark.parametrize("second", [ops.APPROVED, ops.REJECTED])
def test_a_second_decision_by_the_same_approver_is_a_conflict(second):
    aggregate, clock = gate(approvers=["group:release", "carol"], required=2)
    decide(aggregate, clock, "alice")
    before = aggregate.snapshot()
    with pytest.raises(AlreadyDecided) as caught:
        decide(aggregate, clock, "alice", second)
    assert caught.value.message == "'alice' already approved stage 'web:1:1' at 2026-03-20T17:00:01.000Z"
    assert aggregate == before


def test_no_approvers_listed_lets_any_operate_token_count():
    aggregate, clock = gate(required=2)
    decide(aggregate, clock, "x")
    decide(aggregate, clock, "y")
    assert aggregate.stages[0].status == S.IN_PROGRESS


def test_a_new_attempt_forgets_the_decisions_and_keeps_them_in_its_history():
    aggregate, clock = gate(approvers=["group:release"], required=1)
    decide(aggregate, clock, "alice", ops.REJECTED)
    ops.retry_stage(aggregate, aggregate.stages[0].id, clock.now())
    stage = aggregate.stages[0]
    assert stage.approvals == [] and stage.attempts[0]["approvals"][0]["by"] == "alice"
    change_status(stage, S.IN_PROGRESS, clock.now())
    assert decide(aggregate, clock, "alice") is True  # the new attempt is a new gate
    assert stage.status == S.IN_PROGRESS


def test_policies_that_cannot_be_met_are_named():
    assert check_policy(ApprovalPolicy(approvers=("group:ops",))) == [
        "approver group 'ops' is not defined in approverGroups"]
    assert check_policy(policy_from_spec(["group:release", "alice"], 3, None, None, None, GROUPS)) == [
        "required is 3 but only 2 distinct approver(s) are allowed"]
    assert check_policy(policy_from_spec(["group:release", "carol"], 3, None, None, None, GROUPS)) == []
    assert check_policy(policy_from_spec(None, 5, None, None, None, None)) == []


# ---- the timer: onTimeout and the reminder ----------------------------------------------------

@pytest.mark.parametrize(("on_timeout", "status", "decision"), [
    (None, S.TIMED_OUT, None), ("TIMED_OUT", S.TIMED_OUT, None), ("FAILURE", S.FAILURE, None),
    ("APPROVE", S.IN_PROGRESS, "APPROVED"), ("REJECT", S.FAILURE, "REJECTED"),
])
def test_on_timeout_is_what_the_timer_does_to_a_waiting_gate(on_timeout, status, decision):
    aggregate, clock = gate(approvers=["alice"], on_timeout=on_timeout, timeout=60)
    stage = aggregate.stages[0]
    clock.advance(59)
    assert fire(stage, clock.now()) is False
    clock.advance(5)
    assert fire(stage, clock.now()) is True
    assert stage.status == status
    recorded = stage.approval_decision
    assert (recorded and recorded["decision"]) == decision
    if decision:
        assert recorded["by"] == TIMER_ACTOR and recorded["at"] == "2026-03-20T17:01:00.000Z"


def test_the_reminder_fires_once_per_wait_before_the_timeout():
    aggregate, clock = gate(approvers=["alice"], remind=30, timeout=60)
    stage = aggregate.stages[0]
    assert next_due(stage).isoformat() == "2026-03-20T17:00:30+00:00"
    clock.advance(31)
    assert fire(stage, clock.now()) is True
    assert stage.status == S.WAITING_FOR_APPROVAL
    assert stage.reminded_at.isoformat() == "2026-03-20T17:00:30+00:00"
    assert next_due(stage).isoformat() == "2026-03-20T17:01:00+00:00"  # now only the timeout
    assert fire(stage, clock.now()) is False  # once
    clock.advance(30)
    assert fire(stage, clock.now()) is True and stage.status == S.TIMED_OUT


def test_no_reminder_without_remind_after_seconds():
    aggregate, clock = gate(approvers=["alice"])
    assert next_due(aggregate.stages[0]) is None
