"""Approval policies of a MANUAL stage: who may decide, how many must approve, what its timer does.

A policy (``ApprovalPolicy``, kept on the stage as a dict: ``Stage.approval_policy``) says
- ``approvers``: token names, and ``group:<name>`` for a group of token names that the run's
  body defines (``approverGroups``; a run scheduled from a pipeline's layout keeps them). Empty:
  any token with the operate scope may decide, as without a policy.
- ``required``: how many distinct approvers must approve (N of M) before the gate opens;
- ``preventSelfApproval``: the run's ``actor`` (the token that created it) may not decide;
- ``onTimeout``: what the stage's timer does when ``timeoutSeconds`` pass while it waits:
  TIMED_OUT (as without a policy), FAILURE, APPROVE (the gate opens) or REJECT (recorded as a
  rejection by ``TIMER_ACTOR``);
- ``remindAfterSeconds``: the timer records a reminder once, that long after the stage began to
  wait (``Stage.reminded_at``), which the change stream carries out as an event.

Every decision of the current attempt is kept (``Stage.approvals``: decision, by, at, comment,
attempt); a rejection by any allowed approver ends the gate (FAILURE); a second decision by the
same approver is a 409; a caller who is not an allowed approver is a 403 that says why.
Pure: the service applies ``decide`` inside one conditional write, retried on a lost race.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .auth import Forbidden
from .clock import format_iso
from .errors import Conflict, IllegalTransition
from .model import Stage, change_status
from .status import StageStatus

S = StageStatus

APPROVED = "APPROVED"
REJECTED = "REJECTED"
GROUP_PREFIX = "group:"
ON_TIMEOUT = ("TIMED_OUT", "FAILURE", "APPROVE", "REJECT")
TIMER_ACTOR = "stagetrack:timeout"  # who a decision taken by the timer (onTimeout) is recorded as


class AlreadyDecided(Conflict):
    code = "already_decided"


class NotAnApprover(Forbidden):
    code = "not_an_approver"


@dataclass(frozen=True)
class ApprovalPolicy:
    approvers: tuple[str, ...] = ()
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (group name, its token names)
    required: int = 1
    prevent_self_approval: bool = False
    on_timeout: str = "TIMED_OUT"
    remind_after_seconds: int | None = None

    def as_dict(self) -> dict:
        return {"approvers": list(self.approvers),
                "groups": {name: list(members) for name, members in self.groups},
                "required": self.required, "preventSelfApproval": self.prevent_self_approval,
                "onTimeout": self.on_timeout, "remindAfterSeconds": self.remind_after_seconds}

    @classmethod
    def from_dict(cls, data: dict) -> ApprovalPolicy:
        return cls(approvers=tuple(data.get("approvers") or ()),
                   groups=tuple((name, tuple(members))
                                for name, members in (data.get("groups") or {}).items()),
                   required=int(data.get("required") or 1),
                   prevent_self_approval=bool(data.get("preventSelfApproval")),
                   on_timeout=data.get("onTimeout") or "TIMED_OUT",
                   remind_after_seconds=data.get("remindAfterSeconds"))

    def eligible(self) -> frozenset[str] | None:
        """Every token name that may decide; None: any operate token (no approvers listed)."""
        if not self.approvers:
            return None
        members = dict(self.groups)
        names: set[str] = set()
        for entry in self.approvers:
            if entry.startswith(GROUP_PREFIX):
                names.update(members.get(entry[len(GROUP_PREFIX):], ()))
            else:
                names.add(entry)
        return frozenset(names)


def policy_of(stage: Stage) -> ApprovalPolicy | None:
    return None if stage.approval_policy is None else ApprovalPolicy.from_dict(stage.approval_policy)


def check_policy(policy: ApprovalPolicy) -> list[str]:
    """What is wrong with a policy as declared (empty: nothing): groups named but not defined,
    or more approvals required than there are distinct approvers."""
    problems = []
    defined = dict(policy.groups)
    for entry in policy.approvers:
        if entry.startswith(GROUP_PREFIX) and entry[len(GROUP_PREFIX):] not in defined:
            problems.append(f"approver group {entry[len(GROUP_PREFIX):]!r} is not defined in approverGroups")
    eligible = policy.eligible()
    if not problems and eligible is not None and policy.required > len(eligible):
        problems.append(f"required is {policy.required} but only {len(eligible)} distinct approver(s) "
                        "are allowed")
    return problems


def policy_from_spec(approvers: list[str] | None, required: int | None, prevent_self_approval: bool | None,
                     on_timeout: str | None, remind_after_seconds: int | None,
                     groups: dict[str, list[str]] | None) -> ApprovalPolicy:
    """The policy a stage spec declares, with the groups its approvers name (and only those);
    raises ValidationFailed (422) naming the stage's fields when it cannot be met."""
    named = {ref[len(GROUP_PREFIX):] for ref in approvers or () if ref.startswith(GROUP_PREFIX)}
    policy = ApprovalPolicy(
        approvers=tuple(dict.fromkeys(approvers or ())),
        groups=tuple((name, tuple(dict.fromkeys(members))) for name, members in (groups or {}).items()
                     if name in named),
        required=required or 1, prevent_self_approval=bool(prevent_self_approval),
        on_timeout=on_timeout or "TIMED_OUT", remind_after_seconds=remind_after_seconds)
    return policy


def _record(decision: str, who: str, now: datetime, comment: str | None, attempt: int) -> dict:
    return {"decision": decision, "by": who, "at": format_iso(now), "comment": comment, "attempt": attempt}


def approved_by(stage: Stage) -> list[str]:
    """Who approved the current attempt, in order."""
    return [d["by"] for d in stage.approvals if d.get("decision") == APPROVED]


def check_approver(stage: Stage, policy: ApprovalPolicy, who: str, run_actor: str | None) -> None:
    """403 with the reason when ``who`` may not decide this gate."""
    eligible = policy.eligible()
    if eligible is not None and who not in eligible:
        raise NotAnApprover(
            f"{who!r} is not an allowed approver of stage {stage.id!r} (approvers: "
            f"{', '.join(policy.approvers)})", details={"approvers": list(policy.approvers)})
    if policy.prevent_self_approval and run_actor is not None and who == run_actor:
        raise NotAnApprover(
            f"{who!r} started this run and stage {stage.id!r} prevents self-approval",
            details={"preventSelfApproval": True, "runActor": run_actor})


def decide_with_policy(stage: Stage, policy: ApprovalPolicy, decision: str, now: datetime, *,
                       who: str, run_actor: str | None, comment: str | None) -> bool:
    """Record ``who``'s decision on a stage waiting for approval under ``policy``; open the gate
    (IN_PROGRESS) once ``required`` distinct approvers approved, fail it (FAILURE) on a rejection.
    A stage that does not wait (any more) is a 409, as is a second decision by the same approver."""
    check_approver(stage, policy, who, run_actor)
    earlier = next((d for d in stage.approvals
                    if d.get("by") == who and d.get("attempt") == stage.attempt), None)
    if earlier is not None:
        raise AlreadyDecided(
            f"{who!r} already {earlier['decision'].lower()} stage {stage.id!r} at {earlier['at']}",
            details={"decision": dict(earlier)})
    if stage.status != S.WAITING_FOR_APPROVAL:
        verb = "approve" if decision == APPROVED else "reject"
        raise IllegalTransition(
            f"cannot {verb} stage {stage.id!r}: it is {stage.status.value}, not waiting for approval",
            details={"from": stage.status.value, "to": S.IN_PROGRESS.value if decision == APPROVED
                     else S.FAILURE.value})
    record = _record(decision, who, now, comment, stage.attempt)
    stage.approvals = [*stage.approvals, record]
    stage.updated_at = now
    if decision == REJECTED:
        change_status(stage, S.FAILURE, now)
        stage.approval_decision = record
    elif len(approved_by(stage)) >= policy.required:
        change_status(stage, S.IN_PROGRESS, now, via_approval=True)
        stage.approval_decision = record
    return True


# ---- the timer -----------------------------------------------------------------------------------

def reminder_due(stage: Stage) -> datetime | None:
    """When a waiting stage's reminder is due (None: none, or already sent for this wait)."""
    if stage.status != S.WAITING_FOR_APPROVAL or stage.waiting_since is None or stage.reminded_at is not None:
        return None
    policy = policy_of(stage)
    if policy is None or policy.remind_after_seconds is None:
        return None
    return stage.waiting_since + timedelta(seconds=policy.remind_after_seconds)


def expire_waiting(stage: Stage, moment: datetime) -> None:
    """A waiting stage's timeout, by its policy's ``onTimeout`` (TIMED_OUT without one)."""
    policy = policy_of(stage)
    action = policy.on_timeout if policy is not None else "TIMED_OUT"
    if action == "APPROVE":
        change_status(stage, S.IN_PROGRESS, moment, via_approval=True)
        stage.approval_decision = _record(APPROVED, TIMER_ACTOR, moment, "approved on timeout", stage.attempt)
        stage.approvals = [*stage.approvals, stage.approval_decision]
    elif action == "REJECT":
        change_status(stage, S.FAILURE, moment)
        stage.approval_decision = _record(REJECTED, TIMER_ACTOR, moment, "rejected on timeout", stage.attempt)
        stage.approvals = [*stage.approvals, stage.approval_decision]
    elif action == "FAILURE":
        change_status(stage, S.FAILURE, moment)
    else:
        change_status(stage, S.TIMED_OUT, moment)
