"""Operations people perform on runs and stages: cancel, retry, approve/reject, variables.

Pure rules on a loaded RunAggregate. The service applies each one inside ``mutate_run``, so an
operation is one conditional transaction over the run and every stage it touches. Every status
change goes through ``change_status`` (the transition table) except retry, whose documented rule
is the only way out of a final status: it archives the attempt and starts a new one at IDLE.
Each function returns False when there is nothing to change, so the service writes nothing.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import inspect
from dataclasses import dataclass
from datetime import datetime

from .approvals import APPROVED as APPROVED  # the decisions and their 409, named here as before
from .approvals import REJECTED as REJECTED
from .approvals import AlreadyDecided as AlreadyDecided
from .approvals import decide_with_policy, policy_of
from .clock import format_iso, seconds_from_millis
from .errors import Conflict, IllegalTransition, ValidationFailed
from .model import RunAggregate, Stage, StageSpec, change_status, new_run, run_status_of
from .schemas import MAX_VARIABLES
from .status import FINAL, StageStatus

S = StageStatus

# Statuses a FAILED-scope retry starts again (CodePipeline's FAILED_ACTIONS).
RETRYABLE_FAILURES = frozenset({S.FAILURE, S.TIMED_OUT, S.CANCELLED})
SCOPE_FAILED = "FAILED"
SCOPE_ALL = "ALL"
# A stage keeps every earlier attempt, one attempt item each (read only when asked for); the
# cap bounds how many a stage has and what deleting its run must delete.
MAX_ATTEMPTS = 100
# Keys and values of a run's variables together (a run item must stay far below 400 KB).
MAX_VARIABLES_BYTES = 64 * 1024
SECRET_MASK = "******"


class NothingToRetry(Conflict):
    code = "nothing_to_retry"


# ---- cancel ----------------------------------------------------------------------------------

def record_cancellation(aggregate: RunAggregate, now: datetime, actor: str, reason: str | None,
                         stage_id: str | None) -> None:
    aggregate.run.cancellation = {
        "by": actor, "at": format_iso(now), "reason": reason, "stageId": stage_id,
    }


def cancel_run(aggregate: RunAggregate, now: datetime, *, actor: str,
               reason: str | None = None) -> bool:
    """Stop a run where it stands.

    Active stages become CANCELLED and stages not yet started become SKIPPED. A run caught
    between stages (none active, some not started) has its next stage CANCELLED, the point
    where it was stopped, and the rest SKIPPED; either way the derived run status is CANCELLED.
    A run that is already finished (derived status final, including a FAILURE run that still
    has never-started stages) is left alone: cancelling it is a successful no-op, as in GoCD.
    """
    stages = aggregate.stages
    if run_status_of(stages) in FINAL:
        return False
    active = [s for s in stages if s.is_active]
    idle = [s for s in stages if s.status == S.IDLE]
    for stage in active:
        change_status(stage, S.CANCELLED, now)
    if not active and idle:
        change_status(idle.pop(0), S.CANCELLED, now)
    for stage in idle:
        change_status(stage, S.SKIPPED, now)
    record_cancellation(aggregate, now, actor, reason, None)
    return True


def cancel_stage(aggregate: RunAggregate, stage_id: str, now: datetime, *, actor: str,
                 reason: str | None = None) -> bool:
    """Cancel one active stage and skip the run's later stages that have not started.

    A stage that is not active (not started yet, or finished) is left alone: a successful no-op.
    """
    stage = aggregate.stage(stage_id)
    if not stage.is_active:
        return False
    change_status(stage, S.CANCELLED, now)
    for later in aggregate.stages:
        if later.position > stage.position and later.status == S.IDLE:
            change_status(later, S.SKIPPED, now)
    record_cancellation(aggregate, now, actor, reason, stage_id)
    return True


# ---- retry -----------------------------------------------------------------------------------

def new_attempt(stage: Stage, now: datetime) -> None:
    """Archive the finished attempt (``stage.attempts``: the store writes it as an attempt item
    with this change) and start the next one at IDLE."""
    if stage.attempt >= MAX_ATTEMPTS:
        raise Conflict(f"stage {stage.id!r} has reached {MAX_ATTEMPTS} attempts; start a new run")
    entry: dict[str, object] = {
        "attempt": stage.attempt,
        "status": stage.status.value,
        "startedAt": format_iso(stage.started_at),
        "endedAt": format_iso(stage.ended_at),
        "duration": seconds_from_millis(stage.duration_ms),
    }
    if stage.approval_decision is not None:
        entry["approvalDecision"] = dict(stage.approval_decision)
    if stage.approvals:
        entry["approvals"] = [dict(d) for d in stage.approvals]
    stage.attempts.append(entry)
    stage.attempt += 1
    stage.status = S.IDLE
    stage.started_at = None
    stage.ended_at = None
    stage.duration_ms = None
    stage.waiting_since = None
    stage.approval_decision = None
    stage.approvals = []
    stage.reminded_at = None
    stage.updated_at = now


def take_pending_retry(stage: Stage, now: datetime) -> None:
    """A manual retry of a stage whose automatic retry is pending (RETRY_PENDING, see
    domain/retries.py) takes that retry: the pending attempt goes to IDLE now (already counted,
    the attempt before it already recorded), so no second attempt is made and its timer later
    finds nothing to start."""
    stage.status = S.IDLE
    stage.next_retry_at = None
    stage.retry_reason = None
    stage.updated_at = now


def _restart(stage: Stage, now: datetime) -> None:
    if stage.status == S.RETRY_PENDING:
        take_pending_retry(stage, now)
    else:
        new_attempt(stage, now)


def _refuse_active(stages: list[Stage], what: str) -> None:
    active = [s for s in stages if s.is_active and s.status != S.RETRY_PENDING]
    if active:
        raise IllegalTransition(
            f"cannot retry {what}: stage {active[0].id!r} is {active[0].status.value}; "
            "cancel it or let it finish first",
            details={"stageId": active[0].id, "from": active[0].status.value, "to": S.IDLE.value},
        )


def retry_run(aggregate: RunAggregate, scope: str, now: datetime) -> list[Stage]:
    """Start new attempts. FAILED: stages that failed, timed out or were cancelled, plus the
    SKIPPED stages after the first of them. ALL: every stage that has finished (stages that never
    started have no attempt to archive and simply stay IDLE). Refused while any stage is active;
    a stage whose automatic retry is pending is retried in both scopes by taking that retry
    (``take_pending_retry``).
    """
    stages = sorted(aggregate.stages, key=lambda s: s.position)
    _refuse_active(stages, f"run {aggregate.run.id!r}")
    if scope == SCOPE_ALL:
        targets = [s for s in stages if s.status in FINAL or s.status == S.RETRY_PENDING]
    else:
        failed = [s for s in stages if s.status in RETRYABLE_FAILURES or s.status == S.RETRY_PENDING]
        first = failed[0].position if failed else None
        targets = [s for s in stages if s.status in RETRYABLE_FAILURES or s.status == S.RETRY_PENDING
                   or (first is not None and s.status == S.SKIPPED and s.position > first)]
    if not targets:
        wanted = "finished" if scope == SCOPE_ALL else "failed, timed-out or cancelled"
        raise NothingToRetry(
            f"nothing to retry: run {aggregate.run.id!r} has no {wanted} stage "
            f"(run status {run_status_of(stages).value})"
        )
    for stage in targets:
        _restart(stage, now)
    return targets


def retry_stage(aggregate: RunAggregate, stage_id: str, now: datetime) -> list[Stage]:
    """Start a new attempt of one finished stage, and of the SKIPPED stages after it (of a stage
    whose automatic retry is pending: take that retry, ``take_pending_retry``)."""
    stage = aggregate.stage(stage_id)
    _refuse_active([stage], f"stage {stage_id!r}")
    if stage.status == S.IDLE:
        raise NothingToRetry(f"nothing to retry: stage {stage_id!r} has not run yet (IDLE)")
    targets = [stage] + [s for s in sorted(aggregate.stages, key=lambda s: s.position)
                         if s.position > stage.position and s.status == S.SKIPPED]
    for target in targets:
        _restart(target, now)
    return targets


# ---- approval gates --------------------------------------------------------------------------

def decide(aggregate: RunAggregate, stage_id: str, decision: str, now: datetime, *, actor: str,
           comment: str | None = None, approver: str | None = None) -> bool:
    """Approve (gate opens: IN_PROGRESS) or reject (FAILURE) a stage waiting for approval.

    A rejected gate is a failed gate, as in CodePipeline: the run fails and a FAILED-scope retry
    asks for a new approval. Without a policy, repeating the decision already taken on this
    attempt is a no-op; the opposite decision, or a decision on a stage that is not waiting, is
    a 409. With one (domain/approvals.py), each allowed approver decides once (again: 409),
    ``approver`` -- the authenticated token's name, never a name the client chose (a Basic auth
    user) -- is who decides, and the gate opens when enough distinct approvers approved.
    """
    stage = aggregate.stage(stage_id)
    policy = policy_of(stage)
    if policy is not None:
        return decide_with_policy(stage, policy, decision, now, who=approver or actor,
                                  run_actor=aggregate.run.actor, comment=comment)
    record = stage.approval_decision
    if record is not None and record.get("attempt") == stage.attempt:
        if record["decision"] == decision:
            return False
        raise AlreadyDecided(
            f"stage {stage_id!r} was already {record['decision'].lower()} by {record['by']} "
            f"at {record['at']}",
            details={"approvalDecision": dict(record)},
        )
    if stage.status != S.WAITING_FOR_APPROVAL:
        verb = "approve" if decision == APPROVED else "reject"
        raise IllegalTransition(
            f"cannot {verb} stage {stage_id!r}: it is {stage.status.value}, not waiting for approval",
            details={"from": stage.status.value, "to": S.IN_PROGRESS.value if decision == APPROVED
                     else S.FAILURE.value},
        )
    if decision == APPROVED:
        change_status(stage, S.IN_PROGRESS, now, via_approval=True)
    else:
        change_status(stage, S.FAILURE, now)
    stage.approval_decision = {
        "decision": decision, "by": actor, "at": format_iso(now), "comment": comment,
        "attempt": stage.attempt,
    }
    return True


# ---- variables -------------------------------------------------------------------------------

def seal_secret(value: str, pepper: str) -> str:
    """A keyed hash (HMAC-SHA256 with the deployment's pepper): lets an operator who holds the
    pepper check a value against the record, but gives nobody the value back."""
    digest = hmac.new(pepper.encode(), value.encode(), hashlib.sha256).hexdigest()
    return f"hmac-sha256:{digest}"


@dataclass(frozen=True)
class VariableChange:
    key: str
    value: str
    secret: bool = False


def apply_variables(aggregate: RunAggregate, changes: list[VariableChange], pepper: str) -> bool:
    """Merge variables into the run (Buddy's APPLY_VARIABLES). A key set as secret replaces a
    plain one of the same name and vice versa. Secret values are kept only as a keyed hash."""
    run = aggregate.run
    plain = dict(run.variables)
    secrets = dict(run.secrets)
    for change in changes:
        if change.secret:
            plain.pop(change.key, None)
            secrets[change.key] = seal_secret(change.value, pepper)
        else:
            secrets.pop(change.key, None)
            plain[change.key] = change.value
    count = len(plain) + len(secrets)
    if count > MAX_VARIABLES:
        raise ValidationFailed(
            f"a run can hold at most {MAX_VARIABLES} variables; this would make {count}",
            details=[{"field": "variables", "message": f"at most {MAX_VARIABLES} variables per run"}],
        )
    size = sum(len(k.encode()) + len(v.encode()) for k, v in (*plain.items(), *secrets.items()))
    if size > MAX_VARIABLES_BYTES:
        raise ValidationFailed(
            f"a run's variables can total at most {MAX_VARIABLES_BYTES} bytes; this would make {size}",
            details=[{"field": "variables", "message": f"at most {MAX_VARIABLES_BYTES} bytes per run"}],
        )
    if plain == run.variables and secrets == run.secrets:
        return False
    run.variables = plain
    run.secrets = secrets
    return True


def masked_variables(run) -> dict:
    """What any view shows: plain values, and a mask in place of every secret."""
    shown = dict(run.variables)
    shown.update({key: SECRET_MASK for key in run.secrets})
    return shown


# ---- pipelines -------------------------------------------------------------------------------

@dataclass
class Pipeline:
    name: str
    paused: bool = False
    pause_cause: str | None = None
    paused_by: str | None = None
    paused_at: datetime | None = None
    layout: dict | None = None
    counter: int = 0  # the latest run number claimed (GoCD's history total)
    last_activity: datetime | None = None  # when its latest run was created (GET /api/pipelines)
    # Its concurrency setting as stored ({mode, group}: domain/concurrency.Setting; None:
    # PARALLEL), and the run holding its default group when the service looked (GoCD's lock).
    concurrency: dict | None = None
    lock_holder: str | None = None

    @property
    def locked(self) -> bool:
        """GoCD's lock: a run holds the pipeline's default concurrency group (QUEUED or
        SUPERSEDED pipelines only; a PARALLEL pipeline is never locked)."""
        return self.lock_holder is not None

    @property
    def schedulable(self) -> bool:
        return not self.paused and not self.locked and self.layout is not None


def layout_of(specs: list[StageSpec], **run_options) -> dict:
    """The stage layout of a run (stage specs plus run-level options such as timeoutSeconds),
    kept on its pipeline so ``schedule`` can start the next run like the last one."""
    return {"stages": [dataclasses.asdict(spec) for spec in specs], "run": dict(run_options)}


def specs_of(layout: dict) -> tuple[list[StageSpec], dict]:
    """Stage specs and ``new_run`` options back from a stored layout. Fields unknown to this
    version are ignored; fields added since the layout was stored take their defaults."""
    known = {f.name for f in dataclasses.fields(StageSpec)}
    specs = [StageSpec(**{k: v for k, v in entry.items() if k in known}) for entry in layout["stages"]]
    accepted = inspect.signature(new_run).parameters
    options = {k: v for k, v in (layout.get("run") or {}).items()
               if k in accepted and accepted[k].kind is inspect.Parameter.KEYWORD_ONLY}
    return specs, options
