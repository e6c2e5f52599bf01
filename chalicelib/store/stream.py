"""Decoding the table's stream records (DynamoDB JSON images): no PynamoDB, so the in-memory
store (store/memory.py) reads the same records the same way. Only the store knows the item
attributes (``kind``, ``pk``/``sk``, ``status``, ``version`` ...) these images carry.

- ``armed_timer`` / ``disarmed_timer``: the timer a record asks for, and the one it makes stale
  (service/timers.py, through ``ActiveTimers``);
- ``state_change``: the ``StateChange`` a record stands for (service/outbox.py, through
  ``ChangeStream``).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from ..domain import ids
from ..domain.clock import format_iso, millis_between, parse_iso
from ..domain.events import (
    APPROVAL_DECIDED,
    APPROVAL_REMINDER,
    RETRY_SCHEDULED,
    RETRY_STARTED,
    RUN_CHANGED,
    SCHEDULE_FIRED,
    SCHEDULE_SKIPPED,
    STAGE_CHANGED,
    STAGE_OVERRUNNING,
    StateChange,
)
from ..domain.insights import FinishedAttempt, FinishedRun, RetryRecorded
from ..domain.overruns import Expectation, StageStarted
from ..domain.status import FINAL, StageStatus
from ..service.ports import DueTimer, RunRecord

NO_DEADLINE = "9999-12-31T23:59:59.999Z"  # an active stage's due_at when no timer ever fires


def _image_timer(image: Mapping) -> DueTimer | None:
    """The timer a stage image is due by: its ``due_at``, unless it has none or NO_DEADLINE."""
    if _str_attr(image, "kind") != "stage":
        return None
    due_at = _str_attr(image, "due_at")
    stage_id = _str_attr(image, "stage_id")
    attempt = _int_attr(image, "attempt")
    if due_at is None or due_at == NO_DEADLINE or stage_id is None or attempt is None:
        return None
    return DueTimer(stage_id=stage_id, attempt=attempt, due_at=due_at,
                    set_at=_str_attr(image, "updated_at"))


def _same(a: DueTimer | None, b: DueTimer | None) -> bool:
    return a is not None and b is not None and (a.due_at, a.attempt) == (b.due_at, b.attempt)


def armed_timer(record: dict) -> DueTimer | None:
    """The timer a DynamoDB stream record asks for, if any.

    A stage needs a new timer when its new image is active with a real due moment that the old
    image did not have (it just started, entered approval, began a new attempt, or its timeout
    or expected duration changed). Everything else (runs, pipelines, removals, finished stages,
    unrelated edits) arms nothing. ``record`` is the Lambda event record (``dynamodb`` key with
    ``NewImage``/``OldImage`` in DynamoDB JSON).
    """
    if record.get("eventName") not in ("INSERT", "MODIFY"):
        return None
    images = record.get("dynamodb") or {}
    new = _image_timer(images.get("NewImage") or {})
    if new is None or _same(new, _image_timer(images.get("OldImage") or {})):
        return None
    return new


def disarmed_timer(record: dict) -> DueTimer | None:
    """The timer a DynamoDB stream record makes stale, if any: the old image's, when the stage
    was removed, or its new image is no longer due at that moment for that attempt (it ended,
    its deadline moved, a new attempt began). The armer stops its workflow (service/timers.py)."""
    if record.get("eventName") not in ("MODIFY", "REMOVE"):
        return None
    images = record.get("dynamodb") or {}
    old = _image_timer(images.get("OldImage") or {})
    if old is None or _same(old, _image_timer(images.get("NewImage") or {})):
        return None
    return old


TTL_PRINCIPAL = "dynamodb.amazonaws.com"  # a REMOVE made by the table's TTL names this service


def run_record(record: Mapping) -> RunRecord | None:
    """What a stream record says of a run item, for retention (store/retention.py): its status,
    end and expiry as written, or that the table's TTL removed it. None: not a run item, or a
    run removed by a writer (its deletion removed the rest with it)."""
    images = record.get("dynamodb") or {}
    event_name = record.get("eventName")
    image = images.get("OldImage" if event_name == "REMOVE" else "NewImage") or {}
    run_id = _str_attr(image, "run_id")
    if _str_attr(image, "kind") != "run" or run_id is None:
        return None
    if event_name == "REMOVE":
        identity = record.get("userIdentity") or {}
        if identity.get("type") != "Service" or identity.get("principalId") != TTL_PRINCIPAL:
            return None
        return RunRecord(run_id=run_id, status=None, ended_at=None, expires_at=None, expired=True)
    if event_name not in ("INSERT", "MODIFY"):
        return None
    return RunRecord(run_id=run_id, status=_str_attr(image, "status"), ended_at=_str_attr(image, "ended_at"),
                     expires_at=_int_attr(image, "expires_at"))


def _attr(image: Mapping, name: str) -> object:
    value = image.get(name)
    if not isinstance(value, dict):
        return None
    if "S" in value:
        return value["S"]
    if "N" in value:
        try:
            return int(value["N"])
        except ValueError:
            return None
    return None


def _str_attr(image: Mapping, name: str) -> str | None:
    value = _attr(image, name)
    return value if isinstance(value, str) else None


def _int_attr(image: Mapping, name: str) -> int | None:
    value = _attr(image, name)
    return value if isinstance(value, int) else None


def state_change(record: Mapping, now: datetime) -> StateChange | None:
    """The event one stream record stands for, or None (not a run/stage, or no status change).

    - run inserted: old status null; run removed: new status null; run modified: only when its
      status changed (every write rewrites the run item, usually with the same status);
    - stage modified: when its status or attempt changed; stage inserted: only when it is born
      already moving (a sender's stage seen running), since every new run's stages start IDLE
      and the run's own event says the run exists; stage removed: new status null;
    - stage modified with the same status and attempt but a reminder newly recorded
      (``reminded_at``, by the stage timer: domain/approvals.py): an approval reminder;
    - stage modified to RETRY_PENDING (an automatic retry scheduled: domain/retries.py) or from
      it to a start (the retry started): the retry events, with the retry's ``retry`` details;
    - stage modified with the same status and attempt but an overrun newly recorded
      (``overrunning_at``, by the stage timer: domain/overruns.py): ``stage.overrunning``, with
      its ``overrun`` details (``overrun_of``).
    - stage modified with a decision on its gate (``_decision``): one that leaves it waiting is an
      approval-decided event; one that opens or fails it is on its status change; both carry
      ``approval``.
    """
    event_name = record.get("eventName")
    images = record.get("dynamodb") or {}
    new = images.get("NewImage") or {}
    old = images.get("OldImage") or {}
    current = new or old
    kind = _attr(current, "kind")
    if kind == "schedule" and event_name == "MODIFY":
        return _schedule_event(old, new)
    if kind not in ("run", "stage") or event_name not in ("INSERT", "MODIFY", "REMOVE"):
        return None
    old_status = _attr(old, "status") if old else None
    new_status = _attr(new, "status") if new else None
    old_attempt = _int_attr(old, "attempt") if old else None
    new_attempt = _int_attr(new, "attempt") if new else None
    if kind == "run":
        if event_name == "MODIFY" and old_status == new_status:
            return None
    reminder = overrun = False
    approval = _decision(old, new) if kind == "stage" and event_name == "MODIFY" else None
    if kind == "stage" and event_name == "MODIFY" and (old_status, old_attempt) == (new_status, new_attempt):
        reminder = _str_attr(new, "reminded_at") is not None and _str_attr(old, "reminded_at") is None
        overrun = _str_attr(new, "overrunning_at") is not None and _str_attr(old, "overrunning_at") is None
        if not (reminder or overrun) and approval is None:
            return None
    elif kind == "stage":
        if event_name == "INSERT" and new_status == StageStatus.IDLE.value:
            return None
    run_id = _attr(current, "run_id")
    if not isinstance(run_id, str):
        return None
    stage_id = _str_attr(current, "stage_id") if kind == "stage" else None
    if kind == "stage" and stage_id is None:
        return None  # not one of our stage items: every stage event names its stage
    parsed = ids.parse_run_id(run_id)
    pipeline = _attr(current, "pipeline") or (parsed[0] if parsed else None)
    if new:
        moment = _attr(new, "updated_at")
    else:
        approximate = images.get("ApproximateCreationDateTime")
        moment = (format_iso(datetime.fromtimestamp(float(approximate), UTC))
                  if isinstance(approximate, (int, float)) else format_iso(now))
    identity = "|".join(
        str(x)
        for x in (
            _attr(current, "pk"),
            _attr(current, "sk"),
            _attr(current, "created_at"),
            _attr(old, "version") if old else None,
            _attr(new, "version") if new else None,
        )
    )
    if kind == "run" and (_attr(old, "seq") is not None or _attr(new, "seq") is not None):
        # a run's status now also changes without its version (a change of one stage moves it:
        # store/repository.py), at one change number each (``seq``) -- so the status names it
        identity += f"|{_attr(old, 'seq')}|{_attr(new, 'seq')}|{old_status}|{new_status}"
    event_type, retry = RUN_CHANGED, None
    if kind == "stage":
        event_type = APPROVAL_REMINDER if reminder else STAGE_OVERRUNNING if overrun else STAGE_CHANGED
        if approval is not None and (old_status, old_attempt) == (new_status, new_attempt):
            # the gate still waits; a decision that moved it rides on its status change
            event_type = APPROVAL_DECIDED
        if event_name == "MODIFY":
            event_type, retry = _retry_event(old, new) or (event_type, None)
    return StateChange(
        id="evt_" + hashlib.sha256(identity.encode()).hexdigest()[:32],
        type=event_type,
        time=moment if isinstance(moment, str) else format_iso(now),
        pipeline=str(pipeline), run_id=run_id,
        stage_id=stage_id,
        stage_name=_str_attr(current, "name") if kind == "stage" else None,
        old_status=old_status if isinstance(old_status, str) else None,
        new_status=new_status if isinstance(new_status, str) else None,
        attempt=(new_attempt if new else old_attempt) if kind == "stage" else None,
        retry=retry,
        cancellation=_cancellation(new) if kind == "run" and new_status in _CANCEL_STATUSES else None,
        overrun=overrun_of(new) if event_type == STAGE_OVERRUNNING else None,
        approval=approval,
    )


_CANCEL_STATUSES = (StageStatus.CANCELLING.value, StageStatus.CANCELLED.value)


def _cancellation(image: Mapping) -> dict | None:
    """The run's ``cancellation`` record as its new image holds it (JSON), or None."""
    raw = _str_attr(image, "cancellation")
    try:
        record = json.loads(raw) if raw else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def overrun_of(image: Mapping) -> dict:
    """An overrunning stage's ``overrun`` details, from its image (the timer's write): when the
    attempt started, how long it had run when the timer saw it (``updatedAt`` - ``startedAt``),
    its expectation (p50, p95 seconds, sample size) and its hard deadline if any."""
    started = _moment(image, "started_at")
    seen = _moment(image, "updated_at")
    try:
        table = json.loads(_str_attr(image, "expectations") or "{}")
    except ValueError:
        table = {}
    expected = Expectation.of(table.get(_str_attr(image, "name"))) if isinstance(table, dict) else None
    deadlines = []
    timeout = _int_attr(image, "timeout_seconds")
    if started is not None and timeout is not None:
        deadlines.append(started + timedelta(seconds=timeout))
    run_deadline = _moment(image, "run_deadline")
    if run_deadline is not None:
        deadlines.append(run_deadline)
    return {
        "startedAt": format_iso(started),
        "elapsedSeconds": (round(millis_between(started, seen) / 1000, 3)
                           if started is not None and seen is not None else None),
        "expectedSeconds": {"p50": expected.p50_ms / 1000 if expected else None,
                            "p95": expected.p95_ms / 1000 if expected else None},
        "samples": expected.samples if expected else None,
        "timeoutAt": format_iso(min(deadlines)) if deadlines else None,
    }


def started_stage(record: Mapping) -> StageStarted | None:
    """A stage attempt that just entered IN_PROGRESS (a new start: inserted running, from another
    status, or a new attempt), for the overrun and ETA expectations (service/overruns.py). The
    consumer's own write (same status and attempt) is not a start, so it never feeds itself."""
    if record.get("eventName") not in ("INSERT", "MODIFY"):
        return None
    images = record.get("dynamodb") or {}
    new = images.get("NewImage") or {}
    old = images.get("OldImage") or {}
    if _str_attr(new, "kind") != "stage" or _str_attr(new, "status") != StageStatus.IN_PROGRESS.value:
        return None
    attempt = _int_attr(new, "attempt") or 1
    running = StageStatus.IN_PROGRESS.value
    if old and (_str_attr(old, "status"), _int_attr(old, "attempt"), _str_attr(old, "started_at")) == (
            running, attempt, _str_attr(new, "started_at")):
        return None
    run_id, stage_id, name = _str_attr(new, "run_id"), _str_attr(new, "stage_id"), _str_attr(new, "name")
    started = _moment(new, "started_at")
    parsed = ids.parse_run_id(run_id) if run_id else None
    if run_id is None or stage_id is None or name is None or started is None or parsed is None:
        return None
    return StageStarted(pipeline=_str_attr(new, "pipeline") or parsed[0], run_id=run_id, stage_id=stage_id,
                        name=name, attempt=attempt, started_at=started)


def _schedule_event(old: Mapping, new: Mapping) -> StateChange | None:
    """A schedule's firing, from its item's change: a new ``last_skipped`` is a firing that
    created no run (``schedule.skipped``), a new ``last_fired_at`` with its ``last_run_id`` one
    that created a run (``schedule.fired``). Any other change of a schedule (enable, edit, the
    next fire time moving on) is no event."""
    skipped = _json_attr(new, "last_skipped")
    fired_at = _str_attr(new, "last_fired_at")
    schedule = {"id": _str_attr(new, "schedule_id"), "cron": _str_attr(new, "cron"),
                "timeZone": _str_attr(new, "time_zone")}
    run_id: str | None = None
    if isinstance(skipped, dict) and _str_attr(new, "last_skipped") != _str_attr(old, "last_skipped"):
        event_type = SCHEDULE_SKIPPED
        schedule.update({"at": skipped.get("at"), "reason": skipped.get("reason"),
                         "message": skipped.get("message")})
    elif fired_at and fired_at != _str_attr(old, "last_fired_at") and _str_attr(new, "last_run_id"):
        event_type, run_id = SCHEDULE_FIRED, _str_attr(new, "last_run_id")
        schedule["at"] = fired_at
    else:
        return None
    identity = "|".join(str(x) for x in (_attr(new, "pk"), _attr(new, "sk"), _attr(old, "version"),
                                         _attr(new, "version"), event_type))
    moment = _str_attr(new, "updated_at")
    return StateChange(
        id="evt_" + hashlib.sha256(identity.encode()).hexdigest()[:32], type=event_type,
        time=moment or str(schedule.get("at")), pipeline=str(_attr(new, "pipeline")), run_id=run_id,
        stage_id=None, stage_name=None, old_status=None, new_status=None, attempt=None, schedule=schedule)


def _json_attr(image: Mapping, name: str) -> object:
    try:
        return json.loads(_str_attr(image, name) or "null")
    except ValueError:
        return None


def _decision(old: Mapping, new: Mapping) -> dict | None:
    """The decision a stage's change recorded on its gate, or None: a decision of its approval
    policy appended to ``approvals`` (the list of this attempt: a retry empties it, which is no
    decision), else a plain gate's ``approval_decision`` newly set. With how many approvals the
    gate has now, of how many its policy requires (1 for a plain gate)."""
    before, after = _json_attr(old, "approvals"), _json_attr(new, "approvals")
    before = before if isinstance(before, list) else []
    after = after if isinstance(after, list) else []
    decision: object = None
    if len(after) > len(before) and after[:len(before)] == before:
        decision = after[-1]
    elif not after and _str_attr(new, "approval_decision") != _str_attr(old, "approval_decision"):
        decision = _json_attr(new, "approval_decision")
    if not isinstance(decision, dict):
        return None
    policy = _json_attr(new, "approval_policy")
    required = policy.get("required") if isinstance(policy, dict) else None
    approved = (sum(1 for d in after if isinstance(d, dict) and d.get("decision") == "APPROVED") if after
                else int(decision.get("decision") == "APPROVED"))
    return {"decision": decision.get("decision"), "by": decision.get("by"), "at": decision.get("at"),
            "comment": decision.get("comment"), "approved": approved,
            "required": required if isinstance(required, int) else 1}


_PENDING = StageStatus.RETRY_PENDING.value
_STARTS = (StageStatus.IN_PROGRESS.value, StageStatus.WAITING_FOR_APPROVAL.value)


def _retry_event(old: Mapping, new: Mapping) -> tuple[str, dict] | None:
    """(type, retry) when a stage's change schedules or starts an automatic retry, else None."""
    old_status, new_status = _attr(old, "status"), _attr(new, "status")
    if new_status == _PENDING and old_status != _PENDING:
        return RETRY_SCHEDULED, {**_retry_count(new), "at": _str_attr(new, "next_retry_at"),
                                 "reason": _str_attr(new, "retry_reason")}
    if old_status == _PENDING and new_status in _STARTS:
        return RETRY_STARTED, _retry_count(new)
    return None


def _retry_count(image: Mapping) -> dict:
    """Which automatic retry this is, of how many its policy allows."""
    try:
        policy = json.loads(_str_attr(image, "retry_policy") or "null")
    except ValueError:
        policy = None
    most = policy.get("max") if isinstance(policy, dict) else None
    return {"number": _int_attr(image, "auto_retries"), "max": most if isinstance(most, int) else None}


class StreamDecoder:
    """The ``ChangeStream`` port of the DynamoDB store: its records are the table's own stream."""

    def state_change(self, record: dict, now: datetime) -> StateChange | None:
        return state_change(record, now)

    def finished_work(self, record: dict) -> FinishedAttempt | FinishedRun | RetryRecorded | None:
        return finished_work(record)

    def started_stage(self, record: dict) -> StageStarted | None:
        return started_stage(record)


# ---- insights: what finished (service/insights.py) --------------------------------------------------

_FINAL = {s.value for s in FINAL}


def _moment(image: Mapping, name: str) -> datetime | None:
    text = _str_attr(image, name)
    if text is None:
        return None
    try:
        return parse_iso(text)
    except ValueError:
        return None


def finished_work(record: Mapping) -> FinishedAttempt | FinishedRun | RetryRecorded | None:
    """What a stream record adds to the insights, or None.

    - a stage whose attempt reached a final status (status newly final, or a new attempt born
      final, as a sender may report it): ``FinishedAttempt``;
    - a stage moved to a new attempt (a retry): ``RetryRecorded`` (its queue time starts there);
    - a run whose status became final: ``FinishedRun``, ordered by its change counter ``seq``
      (or its version, for a run item of the layout before counters).
    Removals add nothing: what finished stays counted until the aggregates are rebuilt.
    """
    if record.get("eventName") not in ("INSERT", "MODIFY"):
        return None
    images = record.get("dynamodb") or {}
    new = images.get("NewImage") or {}
    old = images.get("OldImage") or {}
    kind = _attr(new, "kind")
    status = _str_attr(new, "status")
    run_id = _str_attr(new, "run_id")
    if kind not in ("run", "stage") or status is None or run_id is None:
        return None
    parsed = ids.parse_run_id(run_id)
    if parsed is None:
        return None
    pipeline = _str_attr(new, "pipeline") or parsed[0]
    old_status = _str_attr(old, "status")
    if kind == "run":
        ended = _moment(new, "ended_at")
        created = _moment(new, "created_at")
        same = bool(old) and old_status == status and _str_attr(old, "ended_at") == _str_attr(new, "ended_at")
        if status not in _FINAL or same or ended is None or created is None:
            return None
        commit = _str_attr(new, "commit")
        committed_at = None
        if commit:
            try:
                value = json.loads(commit)
                committed_at = parse_iso(value.get("committedAt")) if isinstance(value, dict) else None
            except (ValueError, TypeError, AttributeError):
                committed_at = None
        order = _int_attr(new, "seq")
        return FinishedRun(pipeline=pipeline, run_id=run_id, status=StageStatus(status),
                           created_at=created, started_at=_moment(new, "started_at"), ended_at=ended,
                           order=order if order is not None else (_int_attr(new, "version") or 0),
                           environment=_str_attr(new, "environment"), committed_at=committed_at,
                           commit=_str_attr(new, "commit_sha"))
    position = _int_attr(new, "position")
    attempt = _int_attr(new, "attempt") or 1
    old_attempt = _int_attr(old, "attempt")
    if position is None:
        return None
    newly_final = status in _FINAL and (old_status not in _FINAL or old_attempt != attempt or not old)
    if not newly_final:
        if old and old_attempt is not None and attempt > old_attempt:
            at = _moment(new, "updated_at")
            return RetryRecorded(pipeline, run_id, position, attempt, at) if at is not None else None
        return None
    ended = _moment(new, "ended_at")
    created = _moment(new, "created_at")
    name = _str_attr(new, "name")
    if ended is None or created is None or name is None:
        return None
    return FinishedAttempt(
        pipeline=pipeline, run_id=run_id, position=position, name=name, status=StageStatus(status),
        attempt=attempt, first_attempt=_int_attr(new, "first_attempt") or 1, created_at=created,
        started_at=_moment(new, "started_at"), ended_at=ended, environment=_str_attr(new, "environment"))
