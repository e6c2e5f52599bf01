"""Stage statuses, the one table of legal transitions, and the run status derived from stages."""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from enum import Enum


class StageStatus(str, Enum):
    IDLE = "IDLE"
    IN_PROGRESS = "IN_PROGRESS"
    WAITING_FOR_APPROVAL = "WAITING_FOR_APPROVAL"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"
    SKIPPED = "SKIPPED"
    # A run's status only, never a stage's: the run waits in its concurrency group
    # (domain/concurrency.py); its stages are all IDLE and none may start until it is promoted.
    QUEUED = "QUEUED"
    # An attempt ended FAILURE or TIMED_OUT and the stage's retry policy starts the next one by
    # itself after a backoff (domain/retries.py): not final, and its timer starts the attempt.
    RETRY_PENDING = "RETRY_PENDING"
    # A run's status only, never a stage's: the run was stopped or cancelled and some of its
    # stages are still running (a stop's grace period, or ``always`` stages: operations.py).
    CANCELLING = "CANCELLING"


class StageType(str, Enum):
    PREPARE = "PREPARE"
    CODE_QUALITY = "CODE_QUALITY"
    UNIT_TEST = "UNIT_TEST"
    BUILD = "BUILD"
    INTEGRATION_TEST = "INTEGRATION_TEST"
    DEPLOY_STAGING = "DEPLOY_STAGING"
    DEPLOY_PROD = "DEPLOY_PROD"
    OTHER = "OTHER"


DEFAULT_STAGE_TYPES = (
    StageType.PREPARE,
    StageType.CODE_QUALITY,
    StageType.UNIT_TEST,
    StageType.BUILD,
    StageType.DEPLOY_STAGING,
    StageType.DEPLOY_PROD,
)

S = StageStatus
ACTIVE = frozenset({S.IN_PROGRESS, S.WAITING_FOR_APPROVAL, S.RETRY_PENDING})
RUN_ONLY = frozenset({S.QUEUED, S.CANCELLING})  # statuses a run may have and a stage never has
STAGE_STATUSES = tuple(s for s in StageStatus if s not in RUN_ONLY)
FINAL = frozenset({S.SUCCESS, S.FAILURE, S.CANCELLED, S.TIMED_OUT, S.SKIPPED})
# Statuses only a run has; the statuses a stage may have (and the store counts) are the others.

# Every legal change of a stage's status. Anything not listed is refused (409).
# Final statuses have no way out here: only the retry operation starts a new attempt at IDLE.
# WAITING_FOR_APPROVAL -> IN_PROGRESS is listed but reserved to the approve operation, so that
# every approval has an approver on record; a plain PATCH cannot skip the gate.
TRANSITIONS: dict[StageStatus, frozenset[StageStatus]] = {
    S.IDLE: frozenset({S.IN_PROGRESS, S.WAITING_FOR_APPROVAL, S.SKIPPED, S.CANCELLED}),
    S.WAITING_FOR_APPROVAL: frozenset({S.IN_PROGRESS, S.FAILURE, S.CANCELLED, S.TIMED_OUT, S.SKIPPED}),
    S.IN_PROGRESS: frozenset({S.SUCCESS, S.FAILURE, S.CANCELLED, S.TIMED_OUT}),
    S.SUCCESS: frozenset(),
    S.FAILURE: frozenset(),
    S.CANCELLED: frozenset(),
    S.TIMED_OUT: frozenset(),
    S.SKIPPED: frozenset(),
    S.QUEUED: frozenset(),  # no stage is ever QUEUED, and none can be made so
    # The pending attempt starts (its timer, or a sender reporting it running: either way the
    # automatic retry is used), or a person cancels it (a cancel wins over a pending retry).
    # The run's own deadline (timeoutSeconds, domain/timers.py) may come first: TIMED_OUT.
    S.RETRY_PENDING: frozenset({S.IN_PROGRESS, S.WAITING_FOR_APPROVAL, S.CANCELLED, S.TIMED_OUT}),
    S.CANCELLING: frozenset(),  # RUN_ONLY: no stage is ever in it, no change leads there
}

APPROVAL_ONLY = frozenset({(S.WAITING_FOR_APPROVAL, S.IN_PROGRESS)})


def is_legal(current: StageStatus, target: StageStatus) -> bool:
    return target in TRANSITIONS[current]


def derive_run_status(statuses: list[StageStatus], *, stopping: bool = False) -> StageStatus:
    """The run status of these stage statuses (``run_status_from_counts`` of their multiset)."""
    return run_status_from_counts(Counter(statuses), stopping=stopping)


def run_status_from_counts(counts: Mapping[StageStatus, int], *, stopping: bool = False) -> StageStatus:
    """A run is as busy as its busiest stage and as failed as its worst finished one.

    Takes how many stages are in each status (a multiset: absent or zero means none), so the
    store can keep the run's status exact from per-status counters that concurrent writers
    update atomically, and the read path derives it the same way from the stages it read.

    Order of precedence: anything running, then anything waiting for approval, then a retry
    pending (the run is not over while a stage will start again by itself), then the worst
    failure (CANCELLED over TIMED_OUT over FAILURE: a cancel is the operator's last word), then
    IDLE if nothing started, IN_PROGRESS while some stages are done and others still idle,
    SKIPPED if every stage was skipped, else SUCCESS. A run without stages is IDLE.

    ``stopping``: the run was stopped or cancelled (``Run.stopping``, set by a change of the
    whole run, so every writer of one stage knows it from the run's version it read). It is then
    CANCELLING while a stage is still active (running out its grace period, or an ``always``
    stage cleaning up) and CANCELLED once none is, whatever its stages ended as: a stop is the
    operator's last word, as a cancel is.
    """
    present = {status for status, count in counts.items() if count > 0}
    if stopping:
        return S.CANCELLING if present & ACTIVE else S.CANCELLED
    if not present:
        return S.IDLE
    for status in (S.IN_PROGRESS, S.WAITING_FOR_APPROVAL, S.RETRY_PENDING, S.CANCELLED, S.TIMED_OUT,
                   S.FAILURE):
        if status in present:
            return status
    if present == {S.IDLE}:
        return S.IDLE
    if S.IDLE in present:
        return S.IN_PROGRESS
    if present == {S.SKIPPED}:
        return S.SKIPPED
    return S.SUCCESS
