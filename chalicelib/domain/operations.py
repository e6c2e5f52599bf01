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
from datetime import datetime, timedelta

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


class RunDeadlinePassed(Conflict):
    code = "run_deadline_passed"


# A stop lets running stages finish for this long unless the stop or the run says otherwise
# (CodePipeline's "stop and wait" waits without bound; a bound keeps a stuck sender from holding
# a run CANCELLING for ever, and the timer ends it). At most MAX_STOP_GRACE_SECONDS.
DEFAULT_STOP_GRACE_SECONDS = 600
MAX_STOP_GRACE_SECONDS = 24 * 3600
STOP, CANCEL = "STOP", "CANCEL"


# ---- cancel and stop -------------------------------------------------------------------------

def record_cancellation(aggregate: RunAggregate, now: datetime, actor: str, reason: str | None,
                         stage_id: str | None, *, force: bool = False) -> None:
    """The run's latest cancel or stop; a force-cancel says so (``"force": true``), a plain one
    keeps the record's shape as it always was."""
    record: dict[str, object] = {
        "by": actor, "at": format_iso(now), "reason": reason, "stageId": stage_id,
    }
    if force:
        record["force"] = True
    aggregate.run.cancellation = record


def _run_status(aggregate: RunAggregate) -> StageStatus:
    return run_status_of(aggregate.stages, stopping=aggregate.run.stopping is not None)


def cancel_run(aggregate: RunAggregate, now: datetime, *, actor: str,
               reason: str | None = None, force: bool = False) -> bool:
    """Stop a run where it stands, at once (Argo's stop, CodePipeline's stop and abandon,
    GitHub's cancel, Tekton's CancelledRunFinally).

    Active stages become CANCELLED, ``always`` ones too (cancel is immediate), and stages not
    yet started become SKIPPED, except ``always`` ones, which still run after it (cleanup). A
    run caught between stages (none active, some not started) has its next stage CANCELLED, the
    point where it was stopped, and the rest SKIPPED. The run is marked stopping (mode CANCEL),
    so its status is CANCELLED, or CANCELLING while an ``always`` stage runs after it. A run
    that is already finished (derived status final, including a FAILURE run that still has
    never-started stages) is left alone: cancelling it is a successful no-op, as in GoCD. A run
    being stopped (CANCELLING) is cancelled: its stages still running end now.

    ``force`` (GitHub's force-cancel, Argo's terminate, Tekton's ``Cancelled``): ``always``
    stages get no exception -- those not started are SKIPPED too -- so nothing runs after it and
    the run is CANCELLED at once, never CANCELLING. It also ends what a plain cancel leaves: a
    CANCELLING run's finally stage, and the finally stages not started yet of a run already
    finished (failed or cancelled: the driver or a sender would start them next): every stage
    not started is SKIPPED and the run recorded as force-cancelled (CANCELLED). A finished run
    with no such stage is left alone, as by a plain cancel.
    """
    stages = aggregate.stages
    if _run_status(aggregate) in FINAL:
        if not force or not any(s.status == S.IDLE and s.always for s in stages):
            return False
        for stage in stages:
            if stage.status == S.IDLE:  # nothing is left to start, finally stage or not
                change_status(stage, S.SKIPPED, now)
    else:
        active = [s for s in stages if s.is_active]
        for stage in active:
            change_status(stage, S.CANCELLED, now)
        _close_not_started(stages, now, between=not active, finally_too=force)
    record_cancellation(aggregate, now, actor, reason, None, force=force)
    _mark_stopping(aggregate, CANCEL, now, actor, reason, force=force)
    return True


def _close_not_started(stages: list[Stage], now: datetime, *, between: bool,
                       finally_too: bool = False) -> None:
    """A cancel's or a stop's stages not started: SKIPPED (they never ran, so nothing was
    interrupted), ``always`` ones excepted (they still run) unless ``finally_too`` (a
    force-cancel). A run caught ``between`` stages (none active) has its next one CANCELLED
    instead, the point where it was stopped, so a retry has a stage to take up."""
    idle = [s for s in sorted(stages, key=lambda s: s.position)
            if s.status == S.IDLE and (finally_too or not s.always)]
    if between and idle:
        change_status(idle.pop(0), S.CANCELLED, now)
    for stage in idle:
        change_status(stage, S.SKIPPED, now)


def _mark_stopping(aggregate: RunAggregate, mode: str, now: datetime, actor: str,
                   reason: str | None, grace_seconds: int | None = None, *,
                   force: bool = False) -> None:
    """Record the stop (or cancel) on the run; an earlier stop's record is kept as ``after``."""
    record: dict[str, object] = {"mode": mode, "by": actor, "at": format_iso(now), "reason": reason}
    if force:
        record["force"] = True
    if grace_seconds is not None:
        record["graceSeconds"] = grace_seconds
        record["graceUntil"] = format_iso(now + timedelta(seconds=grace_seconds))
    earlier = aggregate.run.stopping
    if earlier is not None and earlier.get("mode") == STOP and mode == CANCEL:
        record["after"] = {k: v for k, v in earlier.items() if k != "after"}
    aggregate.run.stopping = record


def stop_grace(aggregate: RunAggregate, requested: int | None) -> int:
    """The grace period of a stop: the stop's own, else the run's (``stopGraceSeconds`` at
    create), else DEFAULT_STOP_GRACE_SECONDS."""
    for value in (requested, aggregate.run.stop_grace_seconds):
        if value is not None:
            return value
    return DEFAULT_STOP_GRACE_SECONDS


def stop_run(aggregate: RunAggregate, now: datetime, *, actor: str, reason: str | None = None,
             grace_seconds: int | None = None) -> bool:
    """Stop a run gracefully (CodePipeline's "stop and wait", Tekton's StoppedRunFinally, Argo's
    stop): no new stage starts, running stages may finish.

    - running stages (IN_PROGRESS) keep running; each gets ``cancel_at``, the end of the grace
      period, when its timer cancels it if it has not ended by then (``always`` stages excepted:
      their own timeout bounds them);
    - stages waiting for approval, or for an automatic retry (RETRY_PENDING), have no work under
      way: CANCELLED at once (``always`` ones keep waiting);
    - stages not started are SKIPPED, except ``always`` ones, which still run (cleanup);
    - the run is marked stopping (mode STOP, with ``graceSeconds`` and ``graceUntil``): its
      status is CANCELLING while a stage is active, then CANCELLED, whatever they ended as.
    A run that is finished, or already stopping, is left alone (a successful no-op: the first
    stop's grace period stands; ``cancel`` ends it at once). A run caught between stages, with
    nothing running, ends CANCELLED at once, as a cancel would leave it.
    """
    if aggregate.run.stopping is not None or _run_status(aggregate) in FINAL:
        return False
    grace = stop_grace(aggregate, grace_seconds)
    until = now + timedelta(seconds=grace)
    stages = aggregate.stages
    between = not any(s.is_active for s in stages)
    for stage in stages:
        if stage.always:
            continue
        if stage.status == S.IN_PROGRESS:
            stage.cancel_at = until
            stage.updated_at = now
        elif stage.status in (S.WAITING_FOR_APPROVAL, S.RETRY_PENDING):
            change_status(stage, S.CANCELLED, now)
    _close_not_started(stages, now, between=between)
    record_cancellation(aggregate, now, actor, reason, None)
    _mark_stopping(aggregate, STOP, now, actor, reason, grace)
    return True


def cancel_stage(aggregate: RunAggregate, stage_id: str, now: datetime, *, actor: str,
                 reason: str | None = None) -> bool:
    """Cancel one active stage and skip the run's later stages that have not started.

    A stage that is not active (not started yet, or finished) is left alone: a successful no-op.
    Later ``always`` stages are not skipped: they still run after it.
    """
    stage = aggregate.stage(stage_id)
    if not stage.is_active:
        return False
    change_status(stage, S.CANCELLED, now)
    for later in aggregate.stages:
        if later.position > stage.position and later.status == S.IDLE and not later.always:
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
    stage.cancel_at = None
    stage.run_deadline = None  # stamped again when the new attempt becomes active
    stage.overrun_at = None  # the new attempt's overrun is set when it starts (domain/overruns.py)
    stage.overrunning_at = None
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
def run_deadline(aggregate: RunAggregate) -> datetime | None:
    """When the run's ``timeoutSeconds`` runs out: counted from its first start (None: no
    whole-run timeout, or not started yet)."""
    run = aggregate.run
    if run.timeout_seconds is None or run.started_at is None:
        return None
    return run.started_at + timedelta(seconds=run.timeout_seconds)


def _refuse_past_deadline(aggregate: RunAggregate, now: datetime) -> None:
    """A retry after the run's deadline would only time out again at once: refused (409)."""
    deadline = run_deadline(aggregate)
    if deadline is not None and deadline <= now:
        raise RunDeadlinePassed(
            f"run {aggregate.run.id!r} ran out of its timeoutSeconds ({aggregate.run.timeout_seconds}) "
            f"at {format_iso(deadline)}; start a new run",
            details={"runDeadline": format_iso(deadline)})


def resume(aggregate: RunAggregate) -> None:
    """A retry (or a sender's new attempt: events.py) takes the run up again: it is no longer
    stopping (its stop stays on record in ``cancellation``)."""
    aggregate.run.stopping = None


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
    _refuse_past_deadline(aggregate, now)
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
            f"(run status {_run_status(aggregate).value})"
        )
    for stage in targets:
        _restart(stage, now)
    resume(aggregate)
    return targets


def retry_stage(aggregate: RunAggregate, stage_id: str, now: datetime) -> list[Stage]:
    """Start a new attempt of one finished stage, and of the SKIPPED stages after it (of a stage
    whose automatic retry is pending: take that retry, ``take_pending_retry``)."""
    stage = aggregate.stage(stage_id)
    _refuse_active([stage], f"stage {stage_id!r}")
    if stage.status == S.IDLE:
        raise NothingToRetry(f"nothing to retry: stage {stage_id!r} has not run yet (IDLE)")
    if aggregate.run.stopping is not None:  # read whole (service.operations.retry_stage)
        _refuse_active(aggregate.stages,
                       f"stage {stage_id!r} while run {aggregate.run.id!r} is being stopped")
    _refuse_past_deadline(aggregate, now)
    targets = [stage] + [s for s in sorted(aggregate.stages, key=lambda s: s.position)
                         if s.position > stage.position and s.status == S.SKIPPED]
    for target in targets:
        _restart(target, now)
    resume(aggregate)
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
    return {"stages": [_spec_entry(spec) for spec in specs], "run": dict(run_options)}


def _spec_entry(spec: StageSpec) -> dict:
    """A spec in a layout; ``always`` only when set, so that layouts stored before it existed
    still equal the same layout now (create writes a layout only when it changed)."""
    entry = dataclasses.asdict(spec)
    if not entry["always"]:
        del entry["always"]
    return entry


def specs_of(layout: dict) -> tuple[list[StageSpec], dict]:
    """Stage specs and ``new_run`` options back from a stored layout. Fields unknown to this
    version are ignored; fields added since the layout was stored take their defaults."""
    known = {f.name for f in dataclasses.fields(StageSpec)}
    specs = [StageSpec(**{k: v for k, v in entry.items() if k in known}) for entry in layout["stages"]]
    accepted = inspect.signature(new_run).parameters
    options = {k: v for k, v in (layout.get("run") or {}).items()
               if k in accepted and accepted[k].kind is inspect.Parameter.KEYWORD_ONLY}
    return specs, options
