"""Schedules: a pipeline's runs started by a cron expression in a time zone (issue 15 item 4).

Pure rules: what a schedule holds, when it fires next, and the key that makes each firing
create at most one run (``firing_key``: the schedule id and the fire time, written as a link in
the run's own transaction; service/schedules.py).
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime

from . import cron as cron_rules
from .clock import format_iso

ID_PATTERN = re.compile(r"^sch_[0-9a-f]{20}$")
LINK_NAMESPACE = "schedule"
SOURCE = "schedule"
MAX_PER_PIPELINE = 50


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


def firing_key(schedule_id: str, fire_at: datetime) -> str:
    """One run per schedule and fire time: the key of the link written with the run."""
    return f"{schedule_id}@{format_iso(fire_at)}"


def trigger_of(schedule: Schedule) -> str:
    return f"schedule {schedule.id} ({schedule.cron} {schedule.time_zone})"[:100]
