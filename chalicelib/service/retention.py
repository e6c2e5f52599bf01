"""Retention of finished runs: a run is kept ``Settings.run_retention_days`` after it ended,
then it goes, with its stages and ended attempts.

Driven by the table's stream, never by the writers: a record of a finished run whose expiry is
not its end + the retention sets it (conditioned on the run being still finished as read); a
record of a run that is not finished (re-opened by a retry) but carries one clears it; the
table's TTL then removes the run item, and that removal's record has the rest deleted. So the
write path pays nothing, a run being changed never loses an item, and a change of the setting
applies to each run at its next change (0: no run expires; a run's expiry is cleared then).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from ..domain.clock import parse_iso
from ..domain.status import FINAL
from . import ServiceContext

log = logging.getLogger(__name__)

DAY = 86400
_FINAL = frozenset(status.value for status in FINAL)


@dataclass
class RetentionReport:
    expiring: int = 0  # runs given their expiry
    kept: int = 0  # runs whose expiry was cleared (re-opened, or retention turned off)
    purged: int = 0  # stage and attempt items deleted after their run expired


def expiry_of(ended_at: str, days: int) -> int:
    """Epoch seconds at which a run that ended at ``ended_at`` expires."""
    return int(parse_iso(ended_at).timestamp()) + days * DAY


def apply_retention(ctx: ServiceContext, records: Iterable[dict]) -> RetentionReport:
    """Idempotent per record, so a retried batch does no harm."""
    days = ctx.settings.run_retention_days
    store = ctx.stores.retention
    report = RetentionReport()
    for record in records:
        run = store.run_record(record)
        if run is None:
            continue
        if run.expired:
            report.purged += store.delete_remains(run.run_id)
            continue
        finished = run.status in _FINAL and run.ended_at is not None
        if days > 0 and finished and run.status is not None and run.ended_at is not None:
            wanted = expiry_of(run.ended_at, days)
            if run.expires_at != wanted and store.set_expiry(run.run_id, run.status, run.ended_at, wanted):
                report.expiring += 1
        elif run.expires_at is not None and run.status is not None:
            if store.clear_expiry(run.run_id, run.status):
                report.kept += 1
    return report
