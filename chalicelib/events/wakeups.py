"""Lambda handler of the schedule wake-ups: translates EventBridge Scheduler's invocation into
``service.schedules.fire_woken``, nothing else.

- ``schedule_fired``  invoked by EventBridge Scheduler (through the stack's scheduler role,
  infra/part_schedules.py) at a schedule's fire time, with the input its wake-up carries:
  ``{"pipeline", "scheduleId", "scheduledTime"}`` (adapters/scheduler.py).

A malformed input is logged and dropped (retrying it cannot help). A firing that fails (DynamoDB
throttled) raises: Lambda retries the asynchronous invocation, then sends it to the scheduler
dead-letter queue; the sweeper fires the schedule anyway once it is two minutes late.
"""
from __future__ import annotations

import logging
from datetime import datetime

from chalice import Blueprint

from .. import wiring
from ..domain.clock import parse_iso

log = logging.getLogger(__name__)

handlers = Blueprint(__name__)


def _wakeup(event) -> tuple[str, str, datetime | None]:
    """(pipeline, schedule id, scheduled time or None), or ValueError/TypeError."""
    if not isinstance(event, dict):
        raise TypeError("the input is not a JSON object")
    pipeline, schedule_id = event.get("pipeline"), event.get("scheduleId")
    scheduled = event.get("scheduledTime")
    if not isinstance(pipeline, str) or not isinstance(schedule_id, str):
        raise TypeError("pipeline and scheduleId must be strings")
    if scheduled is not None and not isinstance(scheduled, str):
        raise TypeError("scheduledTime must be a string")
    return pipeline, schedule_id, parse_iso(scheduled) if scheduled else None


@handlers.lambda_function(name="schedule_fired")
def schedule_fired(event, context):
    from ..service.schedules import fire_woken

    try:
        pipeline, schedule_id, scheduled_at = _wakeup(event)
    except (ValueError, TypeError) as error:
        log.warning("dropping a malformed schedule wake-up: %s", error)
        return {"outcome": "malformed"}
    outcome = fire_woken(wiring.context(), pipeline, schedule_id, scheduled_at)
    log.info("wake-up of schedule %s of pipeline %s: %s", schedule_id[:40], pipeline[:100], outcome)
    return {"outcome": outcome}
