"""When a stage's timer is due, what it does then, and the run driver.

A stage has at most one pending timer, due at the earlier of
- its timeout: ``timeoutSeconds`` after it entered IN_PROGRESS or WAITING_FOR_APPROVAL
  (``Stage.deadline()``), which moves it to TIMED_OUT; and
- its expected end: ``expectedSeconds`` after it started, for stages the tracker drives
  itself (a simulated pipeline), which completes it with SUCCESS;
- its approval reminder: ``remindAfterSeconds`` after it began to wait (domain/approvals.py),
  which records ``reminded_at`` once per wait. A waiting stage's timeout does what its approval
  policy's ``onTimeout`` says (TIMED_OUT without one);
- its pending automatic retry: ``nextRetryAt`` (domain/retries.py), which starts the attempt.
- the end of a stop's grace period (``cancel_at``, operations.stop_run), which cancels it;
- its overrun: ``startedAt`` + its recent p95 (domain/overruns.py), once per attempt, which
  records ``overrunning_at`` (a ``stage.overrunning`` event) and nothing else;
- its run's deadline (``run_deadline``: the run's ``timeoutSeconds`` from its first start,
  stamped when the stage becomes active by ``stamp_run_deadline``), which times it out
  (TIMED_OUT, whatever a waiting stage's ``onTimeout`` says: the run is out of time). Every
  active stage of the run carries the same moment, so each one's own timer ends it then and the
  run ends TIMED_OUT; stages that never started stay IDLE (a run with a TIMED_OUT stage is
  final), ``always`` ones excepted, which the driver still starts.

The run driver (``drive``) is the rule that makes an ``autoAdvance`` run go on by itself: once a
stage succeeds, the next IDLE stage is started in the same transaction (a MANUAL stage goes to
its approval gate instead); once the run failed, was stopped or cancelled, its next ``always``
stage instead. ``service.runs.mutate_run`` applies it after every change, so PATCH,
approve, retry and the timers all advance a run the same way.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from .approvals import expire_waiting, reminder_due
from .model import RunAggregate, Stage, change_status
from .overruns import notice_overrun, pending_overrun
from .retries import retry_due, start_due_retry
from .status import ACTIVE, FINAL, StageStatus

S = StageStatus
_FAILED = FINAL - {S.SUCCESS, S.SKIPPED}


def expected_end(stage: Stage) -> datetime | None:
    """When a self-driven running stage is expected to finish, if it declared a duration."""
    if stage.status != S.IN_PROGRESS or stage.started_at is None:
        return None
    if stage.expected_seconds is None:
        return None
    return stage.started_at + timedelta(seconds=stage.expected_seconds)


def grace_end(stage: Stage) -> datetime | None:
    """When a stop's grace period ends for this active stage (None: no stop pending on it)."""
    return stage.cancel_at if stage.is_active else None


def next_due(stage: Stage) -> datetime | None:
    """The moment this stage's timer must fire (None: no timer while in this state)."""
    moments = [m for m in (stage.deadline(), expected_end(stage), reminder_due(stage), retry_due(stage),
                           grace_end(stage), pending_overrun(stage))
               if m is not None]
    return min(moments) if moments else None


# What a due moment does, in the order that wins a tie: a stop's cancel is the operator's word,
# and a stage must finish *before* its deadline.
_CANCEL, _RUN_TIMEOUT, _TIMEOUT, _FINISH = range(4)


def _due(stage: Stage, now: datetime) -> tuple[datetime, int] | None:
    """The earliest moment that has passed for ``stage`` and what it does (a rank above)."""
    if not stage.is_active:
        return None
    candidates = []
    own = stage.own_deadline()
    if stage.run_deadline is not None and (own is None or stage.run_deadline <= own):
        candidates.append((stage.run_deadline, _RUN_TIMEOUT))
    elif own is not None:
        candidates.append((own, _TIMEOUT))
    for moment, kind in ((grace_end(stage), _CANCEL), (expected_end(stage), _FINISH)):
        if moment is not None:
            candidates.append((moment, kind))
    passed = [c for c in candidates if c[0] <= now]
    return min(passed) if passed else None


def due_outcome(stage: Stage, now: datetime) -> tuple[StageStatus, datetime] | None:
    """What the timer does to ``stage`` at ``now``: (new status, moment it became due), or None.

    If several moments have passed (a late timer), the one that came first wins; on a tie a
    stop's cancel wins, then the timeout, since a stage must finish *before* its deadline.
    """
    due = _due(stage, now)
    if due is None:
        return None
    moment, kind = due
    status = {_CANCEL: S.CANCELLED, _FINISH: S.SUCCESS}.get(kind, S.TIMED_OUT)
    return status, moment


def fire(stage: Stage, now: datetime) -> bool:
    """Apply a due timer to ``stage``. Returns False if nothing is due (a stale or early timer).

    The stage ends at the moment it became due, not when the timer happened to run, so its
    duration is exact whatever the timer's latency; ``updatedAt`` is the real time of the write.
    A pending automatic retry starts at ``now``, the moment its attempt really begins.
    """
    if start_due_retry(stage, now):
        return True
    outcome = due_outcome(stage, now)
    if outcome is None:
        if notice_overrun(stage, now):
            return True
        remind = reminder_due(stage)
        if remind is None or remind > now:
            return False
        stage.reminded_at = remind  # the change stream carries the reminder out (an event)
        stage.updated_at = now
        return True
    status, moment = outcome
    run_timeout = (_due(stage, now) or (moment, _TIMEOUT))[1] == _RUN_TIMEOUT
    if stage.status == S.WAITING_FOR_APPROVAL and status == S.TIMED_OUT and not run_timeout:
        expire_waiting(stage, moment)  # by the approval policy's onTimeout
    else:
        change_status(stage, status, moment)
    stage.updated_at = now
    return True


def drive(aggregate: RunAggregate, now: datetime) -> bool:
    """The run driver: start the next stage of an ``autoAdvance`` run. Returns True if it did.

    Convergent rather than event-driven: the first IDLE stage starts when every stage before it
    is SUCCESS or SKIPPED (at least one SUCCESS), and no stage of the run is active or failed.
    So it starts nothing at creation, never starts two stages, and stops at the first failure.
    Once the run failed, or was stopped or cancelled, it starts the first IDLE ``always`` stage
    instead (one at a time, in order: the finally stages), when nothing is active.
    """
    if not aggregate.run.auto_advance:
        return False
    stages = sorted(aggregate.stages, key=lambda s: s.position)
    if any(s.is_active for s in stages):
        return False
    if aggregate.run.stopping is not None or any(s.status in _FAILED for s in stages):
        finally_stage = next((s for s in stages if s.status == S.IDLE and s.always), None)
        return finally_stage is not None and change_status(finally_stage, S.IN_PROGRESS, now)
    succeeded = False
    for stage in stages:
        if stage.status == S.SUCCESS:
            succeeded = True
        elif stage.status == S.SKIPPED:
            continue
        elif stage.status == S.IDLE:
            return succeeded and change_status(stage, S.IN_PROGRESS, now)
    return False


def stamp_run_deadline(aggregate: RunAggregate, now: datetime) -> None:
    """Give every active stage that lacks it its run's deadline: ``timeoutSeconds`` from the
    run's first start (the stage's own start when the run has none yet: it is the first).
    ``always`` stages get none (a finally stage must be able to run after the deadline).
    Only stages in ``aggregate`` are stamped: a change of one stage stamps that stage."""
    run = aggregate.run
    if run.timeout_seconds is None:
        return
    for stage in aggregate.stages:
        if stage.status not in ACTIVE or stage.always or stage.run_deadline is not None:
            continue
        base = run.started_at or stage.started_at or stage.waiting_since or now
        stage.run_deadline = base + timedelta(seconds=run.timeout_seconds)
