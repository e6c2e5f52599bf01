"""The insights rebuild as an operation of the API (``POST /api/insights/rebuild``): its one
record, and when a running one blocks another.

One rebuild at a time: two would both rewrite every pipeline's items. A rebuild records its
progress after each pipeline (``updated_at``); one that has shown no progress for
``STALE_AFTER`` is taken for dead (its process crashed or timed out: the function's timeout is
15 minutes, Lambda's longest, and one pipeline's replay takes far less), so a new one may start
instead of being refused for ever. A dead one that wakes up finds the record taken over and
stops (its next progress write is conditioned on its own id).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"
STALE_AFTER = timedelta(minutes=20)
MAX_ERROR = 500  # characters of a failure's message kept on the record


@dataclass(frozen=True)
class RebuildRecord:
    id: str
    status: str
    started_at: datetime
    updated_at: datetime  # the last progress (or the start)
    by: str | None = None  # the actor who asked for it
    finished_at: datetime | None = None
    pipelines: int = 0  # pipelines rebuilt so far
    runs: int = 0  # runs read so far
    items: int = 0  # items written so far
    error: str | None = None


def stale_before(now: datetime) -> datetime:
    """A running rebuild whose last progress is at or before this is taken for dead."""
    return now - STALE_AFTER


def failure(error: BaseException) -> str:
    """What a failed rebuild's record says of its error: its type and message, cut."""
    return f"{type(error).__name__}: {error}"[:MAX_ERROR]
