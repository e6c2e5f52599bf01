"""Schedules: a pipeline's runs started by a cron expression in a time zone (issue 15 item 4).

Pure rules: what a schedule holds, when it fires next, and the key that makes each firing
create at most one run (``firing_key``: the schedule id and the fire time, written as a link in
the run's own transaction; service/schedules.py).
"""
from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from . import cron as cron_rules
from .clock import format_iso

ID_PATTERN = re.compile(r"^sch_[0-9a-f]{20}$")
LINK_NAMESPACE = "schedule"
SOURCE = "schedule"
MAX_PER_PIPELINE = 50
# With EventBridge Scheduler waking the firing function at each fire time (AWS), the minute
# sweeper fires a schedule EventBridge can express only once it is this late: EventBridge is the
# normal path (fires within seconds), the sweeper the backstop for a missed or failed wake-up.
BACKSTOP_GRACE = timedelta(minutes=2)
# A wake-up may reach the firing function this much before its fire time by our clock (clock
# skew between EventBridge and Lambda) and still fire it.
WAKE_TOLERANCE = timedelta(seconds=5)
WAKEUP_SLOTS = 2  # at most two EventBridge schedules per schedule (domain/cron.py)
_WAKEUP_NAME_MAX = 64  # EventBridge Scheduler's limit on a schedule's name ([0-9A-Za-z_.-]+)


def new_id() -> str:
    return "sch_" + secrets.token_hex(10)


def is_id(value: str) -> bool:
    return bool(ID_PATTERN.fullmatch(value))


@dataclass
class Schedule:
    id: str
    pipeline: str
    cron: str
    time_zone: str
    enabled: bool
    created_at: datetime
    created_by: str
    updated_at: datetime
    variables: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    next_fire_at: datetime | None = None  # None while disabled
    last_fired_at: datetime | None = None
    last_run_id: str | None = None
    last_skipped: dict | None = None  # {"at", "reason", "message"}
    version: int = 0

    def parsed(self) -> cron_rules.Cron:
        return cron_rules.parse(self.cron)

    def following(self, after: datetime) -> datetime | None:
        """The next fire time after ``after``, or None while disabled."""
        if not self.enabled:
            return None
        return cron_rules.next_fire(self.parsed(), cron_rules.zone(self.time_zone), after)

    def rescheduled(self, now: datetime) -> Schedule:
        """With ``next_fire_at`` computed from now (after a create or a change)."""
        return replace(self, next_fire_at=self.following(now))


@dataclass(frozen=True)
class WakeUp:
    """One EventBridge Scheduler schedule that wakes the firing function at a schedule's fire
    times (infra/part_schedules.py, adapters/scheduler.py)."""

    name: str
    expression: str  # cron(min hour dom month dow year)
    time_zone: str
    enabled: bool
    pipeline: str
    schedule_id: str


def wakeup_names(pipeline: str, schedule_id: str) -> tuple[str, ...]:
    """The names of a schedule's possible wake-ups, deterministic from pipeline and schedule id
    (so a change or delete finds them without storing them): ``<id>-<slot>.<pipeline>``, with
    the pipeline's SHA-256 (20 hex) instead when the name would pass EventBridge's 64 characters
    (pipeline names use only characters EventBridge names accept)."""
    hashed = "h" + hashlib.sha256(pipeline.encode()).hexdigest()[:20]
    names = []
    for slot in range(WAKEUP_SLOTS):
        name = f"{schedule_id}-{slot}.{pipeline}"
        names.append(name if len(name) <= _WAKEUP_NAME_MAX else f"{schedule_id}-{slot}.{hashed}")
    return tuple(names)


def wakeups_of(schedule: Schedule) -> list[WakeUp]:
    """The wake-ups a schedule should have: one per EventBridge expression of its cron (none
    when EventBridge cannot say it: the sweeper fires it), disabled with it."""
    expressions = cron_rules.eventbridge_expressions(schedule.parsed())
    names = wakeup_names(schedule.pipeline, schedule.id)
    return [WakeUp(name=name, expression=expression, time_zone=schedule.time_zone, enabled=schedule.enabled,
                   pipeline=schedule.pipeline, schedule_id=schedule.id)
            for name, expression in zip(names, expressions, strict=False)]


def woken_by_eventbridge(schedule: Schedule) -> bool:
    """Whether EventBridge can wake this schedule (else only the sweeper fires it)."""
    return bool(cron_rules.eventbridge_expressions(schedule.parsed()))


def firing_key(schedule_id: str, fire_at: datetime) -> str:
    """One run per schedule and fire time: the key of the link written with the run."""
    return f"{schedule_id}@{format_iso(fire_at)}"


def trigger_of(schedule: Schedule) -> str:
    return f"schedule {schedule.id} ({schedule.cron} {schedule.time_zone})"[:100]
