"""Lambda handlers of the timers: translate events into service.timers calls, nothing else.

- ``timer_armer``   DynamoDB stream of the table -> start one timer workflow per started stage
- ``timer_fired``   the timer queue (fed by the workflow's Task state) -> expire_stage
- ``timer_sweeper`` every minute -> sweep (the safety net for any timer lost on the way), then
  fire the due schedules (service/schedules.py ``fire_due``: those EventBridge Scheduler cannot
  express, and, two minutes late, those whose wake-up it missed; events/wakeups.py)

Resource names here are the defaults; the deployed ARNs are wired in by infra/ (the merged
template replaces the stream and queue sources with references to the resources it creates).
"""
from __future__ import annotations

import json
import logging
import os

from chalice import Blueprint, Rate

from .. import wiring

log = logging.getLogger(__name__)

TIMER_QUEUE = "stagetrack-timers"
# Placeholders: the packaged template replaces both with references to the table's stream and
# the timer queue it creates (infra/generate.py). Given as ARN strings so that the merge
# replaces them whole.
STREAM_ARN = os.environ.get(
    "STAGETRACK_TABLE_STREAM_ARN",
    "arn:aws:dynamodb:us-east-1:123456789012:table/stagetrack/stream/replaced-by-infra",
)
TIMER_QUEUE_ARN = os.environ.get(
    "STAGETRACK_TIMER_QUEUE_ARN", f"arn:aws:sqs:us-east-1:123456789012:{TIMER_QUEUE}",
)

handlers = Blueprint(__name__)


@handlers.on_dynamodb_record(stream_arn=STREAM_ARN, batch_size=100, starting_position="TRIM_HORIZON")
def timer_armer(event):
    """Records are armed in stream order; the first one that fails is reported in
    ``batchItemFailures`` (ReportBatchItemFailures on the event source mapping), so Lambda
    retries from that record on and the ones before it are not armed again. After its retries
    the batch goes to the stream failure bucket whole (infra/part_capture.py)."""
    from ..adapters import stepfunctions
    from ..service.timers import arm_timers

    ctx = wiring.context()
    scheduler = stepfunctions.scheduler()
    armed = 0
    for record in event:
        raw = record.to_dict()
        try:
            armed += arm_timers(ctx, [raw], scheduler)
        except Exception:  # noqa: BLE001 - this record and those after it are retried
            sequence = (raw.get("dynamodb") or {}).get("SequenceNumber", "")
            log.exception("arming the timer of stream record %s failed; Lambda retries from it", sequence)
            log.info("armed %d stage timer(s)", armed)
            return {"batchItemFailures": [{"itemIdentifier": sequence}]}
    log.info("armed %d stage timer(s)", armed)
    return {"batchItemFailures": []}


@handlers.on_sqs_message(queue_arn=TIMER_QUEUE_ARN, batch_size=10)
def timer_fired(event):
    """Malformed messages are dropped (logged); a message whose expiry fails (a lost write race,
    throttling) is reported alone in ``batchItemFailures`` so SQS redelivers only it, which is
    safe because expire_stage is idempotent."""
    from ..service.timers import expire_stage

    ctx = wiring.context()
    failures = []
    for record in event:
        message_id = record.to_dict().get("messageId", "")
        try:
            body = json.loads(record.body)
            stage_id, attempt = body["stageId"], body["attempt"]
            if not isinstance(stage_id, str) or type(attempt) is not int:
                raise TypeError("stageId must be a string and attempt an integer")
        except (ValueError, KeyError, TypeError, RecursionError) as error:  # nested too deep
            log.warning("dropping malformed timer message: %s", type(error).__name__)
            continue
        try:
            status = expire_stage(ctx, stage_id, attempt)
        except Exception:  # noqa: BLE001 - this message goes back to the queue, the others go on
            log.exception("timer message %s failed; SQS will redeliver it", message_id)
            failures.append({"itemIdentifier": message_id})
            continue
        log.info("timer of stage %s attempt %d: %s", stage_id, attempt,
                 status.value if status else "stale, nothing to do")
    return {"batchItemFailures": failures}


@handlers.schedule(Rate(1, unit=Rate.MINUTES))
def timer_sweeper(event):
    from ..service.schedules import fire_due
    from ..service.timers import sweep

    ctx = wiring.context()
    try:
        log.info("sweep: %s", sweep(ctx))
    finally:  # a failed sweep does not hold the schedules back
        log.info("schedules: %s", fire_due(ctx))
