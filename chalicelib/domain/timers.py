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

The run driver (``drive``) is the rule that makes an ``autoAdvance`` run go on by itself: once a
stage succeeds, the next IDLE stage is started in the same transaction (a MANUAL stage goes to
its approval gate instead). ``service.runs.mutate_run`` applies it after every change, so PATCH,
approve, retry and the timers all advance a run the same way.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from .approvals import expire_waiting, reminder_due
from .model import RunAggregate, Stage, change_status
from .retries import retry_due, start_due_retry
from .status import FINAL, StageStatus

S = StageStatus
_FAILED = FINAL - {S.SUCCESS, S.SKIPPED}


def expected_end(stage: Stage) -> datetime | None:
    """When a self-driven running stage is expected to finish, if it declared a duration."""
    if stage.status != S.IN_PROGRESS or stage.started_at is None:
        return None
    if stage.expected_seconds is None:
        return None
    return stage.started_at + timedelta(seconds=stage.expected_seconds)


def next_due(stage: Stage) -> datetime | None:
    """The moment this stage's timer must fire (None: no timer while in this state)."""
    moments = [m for m in (stage.deadline(), expected_end(stage), reminder_due(stage), retry_due(stage))
               if m is not None]
    return min(moments) if moments else None


def due_outcome(stage: Stage, now: datetime) -> tuple[StageStatus, datetime] | None:
    """What the timer does to ``stage`` at ``now``: (new status, moment it became due), or None.

    If both moments have passed (a late timer), the one that came first wins; on a tie the
    timeout wins, since a stage must finish *before* its deadline.
    """
    if not stage.is_active:
        return None
    deadline = stage.deadline()
    if deadline is not None and deadline <= now:
        finish = expected_end(stage)
        if finish is not None and finish < deadline:
            return S.SUCCESS, finish
        return S.TIMED_OUT, deadline
    finish = expected_end(stage)
    if finish is not None and finish <= now:
        return S.SUCCESS, finish
    return None


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
        remind = reminder_due(stage)
        if remind is None or remind > now:
            return False
        stage.reminded_at = remind  # the change stream carries the reminder out (an event)
        stage.updated_at = now
        return True
    status, moment = outcome
    if stage.status == S.WAITING_FOR_APPROVAL and status == S.TIMED_OUT:
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
    """
    if not aggregate.run.auto_advance:
        return False
    stages = sorted(aggregate.stages, key=lambda s: s.position)
    if any(s.is_active or s.status in _FAILED for s in stages):
        return False
    succeeded = False
    for stage in stages:
        if stage.status == S.SUCCESS:
            succeeded = True
        elif stage.status == S.SKIPPED:
            continue
        elif stage.status == S.IDLE:
            return succeeded and change_status(stage, S.IN_PROGRESS, now)
    return False
