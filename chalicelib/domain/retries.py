"""Automatic retries: a stage's ``retry`` policy (GitLab's ``retry: {max, when}``, CodePipeline's
automatic retry on stage failure) and the rules that schedule and start them.

A stage may declare at create ``retry: {max, when, backoffSeconds}``. When one of its attempts
that ran (it was IN_PROGRESS) ends with a status listed in ``when``, and the stage has had fewer
than ``max`` automatic retries in this run, the same change
- records the ended attempt (an attempt item, as a retry does: ``operations.new_attempt``),
- puts the stage at RETRY_PENDING in its next attempt, with ``nextRetryAt`` = the ended
  attempt's end + the backoff, and counts the retry (``autoRetries``);
and the stage's timer (the same timers as timeouts: domain/timers.py) starts that attempt when
``nextRetryAt`` has come: IN_PROGRESS, or WAITING_FOR_APPROVAL for a MANUAL stage.

Decisions, with their reasons:
- ``when`` is a subset of FAILURE and TIMED_OUT, default both (GitLab's default ``always``);
  CANCELLED is never retried: a cancel is a person's (or the run's) last word.
- Only an attempt that ran is retried: a rejected approval or a gate that expired is a decision
  (or its absence) by people, which a machine must not overturn by asking again.
- Backoff: ``backoffSeconds`` (0 .. 3600, default 0: at once, through the timer) before the first
  retry, doubling for each next one, capped at ``MAX_BACKOFF_SECONDS`` (one hour): retry k waits
  min(backoffSeconds x 2^(k-1), 3600) s, counted from the end of the attempt that failed (so a
  late timer does not push the retry later).
- ``max`` (1 .. 10) counts the automatic retries of the stage in its run: a manual retry neither
  uses one nor gives one back, except that retrying by hand a stage whose automatic retry is
  pending takes that retry (it starts that attempt, at IDLE, and no second one is made:
  ``operations.take_pending_retry``).
  A stage that has reached ``operations.MAX_ATTEMPTS`` is not retried automatically.
- While a retry is pending, the stage counts as RETRY_PENDING for its run's status, which comes
  right after WAITING_FOR_APPROVAL (domain/status.py): the run is not finished, and shows why.
  A cancel (of the stage or the run) wins: the stage becomes CANCELLED and nothing starts.

Pure: applied by ``service.runs.mutate_run`` after every change (``schedule_retries``, as the
run driver is) and by the stage timer (``start_due_retry``).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .model import RunAggregate, Stage, change_status
from .operations import MAX_ATTEMPTS, new_attempt
from .schemas import MAX_BACKOFF_SECONDS, MAX_RETRIES, RETRY_WHEN
from .status import StageStatus

S = StageStatus

__all__ = ["MAX_BACKOFF_SECONDS", "MAX_RETRIES", "RETRY_WHEN", "RetryPolicy", "backoff_seconds", "retry_due",
           "schedule_retries", "start_due_retry"]


@dataclass(frozen=True)
class RetryPolicy:
    """A stage's policy as stored on it (``retry``: the request model's dump,
    ``schemas.StageSpecIn.retry_policy``)."""

    max: int
    when: tuple[str, ...] = RETRY_WHEN
    backoff_seconds: int = 0

    @classmethod
    def from_dict(cls, data: dict) -> RetryPolicy:
        return cls(max=int(data["max"]), when=tuple(data.get("when") or RETRY_WHEN),
                   backoff_seconds=int(data.get("backoffSeconds") or 0))


def policy_of(stage: Stage) -> RetryPolicy | None:
    return None if stage.retry_policy is None else RetryPolicy.from_dict(stage.retry_policy)


def backoff_seconds(policy: RetryPolicy, number: int) -> int:
    """How long automatic retry ``number`` (1 for the first) waits after the failed attempt."""
    return min(policy.backoff_seconds * 2 ** max(0, number - 1), MAX_BACKOFF_SECONDS)


def retry_due(stage: Stage) -> datetime | None:
    """When the stage's pending automatic retry starts (None: none pending)."""
    # pragma below: next_retry_at is set only while RETRY_PENDING (change_status and
    # take_pending_retry clear it on the way out), so the guard is equivalent when it holds
    return stage.next_retry_at if stage.status == S.RETRY_PENDING else None  # pragma: no mutate


def schedule_retry(stage: Stage, now: datetime) -> bool:
    """Schedule the automatic retry of ``stage``, whose attempt (which ran) has just ended, if its
    policy asks for one. True if it did (the stage is then RETRY_PENDING in its next attempt)."""
    policy = policy_of(stage)
    if policy is None or stage.status.value not in policy.when:
        return False
    if stage.auto_retries >= policy.max or stage.attempt >= MAX_ATTEMPTS:
        return False
    reason, ended = stage.status, stage.ended_at or now
    number = stage.auto_retries + 1
    new_attempt(stage, now)
    stage.status = S.RETRY_PENDING
    stage.auto_retries = number
    stage.retry_reason = reason.value
    stage.next_retry_at = ended + timedelta(seconds=backoff_seconds(policy, number))
    return True


def schedule_retries(before: RunAggregate, after: RunAggregate, now: datetime) -> list[Stage]:
    """After a change (``before`` -> ``after``): schedule the automatic retry of every stage
    whose attempt was running before it and ended by it (a status the policy names).

    None while the run is stopping or cancelled (a stop is the operator's last word: nothing
    starts again by itself), nor once the run's own ``timeoutSeconds`` has run out (the attempt
    would only time out at once; a stage timed out by that deadline is not retried)."""
    run = after.run
    if run.stopping is not None:
        return []
    if run.timeout_seconds is not None and run.started_at is not None and \
            run.started_at + timedelta(seconds=run.timeout_seconds) <= now:
        return []
    old = {stage.id: stage for stage in before.stages}
    scheduled = []
    for stage in after.stages:
        prior = old.get(stage.id)
        if prior is None or prior.status != S.IN_PROGRESS or prior.attempt != stage.attempt:
            continue
        if schedule_retry(stage, now):
            scheduled.append(stage)
    return scheduled


def start_due_retry(stage: Stage, now: datetime) -> bool:
    """The stage timer's part: start the pending attempt once ``nextRetryAt`` has come (at
    ``now``, the moment it really starts). False: nothing pending, or not yet."""
    due = retry_due(stage)
    if due is None or due > now:
        return False
    return change_status(stage, S.IN_PROGRESS, now)
