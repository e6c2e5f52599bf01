"""Lambda handlers of the inbound side: AWS events and queued updates -> service.ingest.

- ``aws_ci_events``  EventBridge rule: CodePipeline pipeline/stage/action execution state
  changes and CodeBuild build state changes
- ``ingest_queue``   SQS queue of update messages (the API's own operations, one JSON message
  each: {"action": "create_run"|"patch_stage"|"cancel_run"|..., ...}, events/messages.py)
- ``ingest_topic``   SNS topic of the same messages

Every message is applied once (idempotent on the event id / message id / idempotencyKey) and
never half-applied (each is one service call, one transaction). A message that can never apply
(malformed, unknown action, unknown run, illegal transition) goes to the ingest dead-letter
queue with the error, and is not retried; a transient failure (a lost write race, DynamoDB
throttling) is retried: for SQS by reporting that message alone in ``batchItemFailures`` (the
rest of the batch is done and deleted), for SNS and EventBridge by raising so Lambda's
asynchronous retries (then the function's own dead-letter queue) take over. Without
STAGETRACK_INGEST_DLQ_URL, permanent failures are retried like transient ones and end in the
queue's or function's dead-letter queue.
"""
from __future__ import annotations

import json
import logging
import os

from chalice import Blueprint

from .. import integrations, wiring
from ..domain.clock import format_iso

log = logging.getLogger(__name__)

INGEST_QUEUE = "stagetrack-ingest"
INGEST_QUEUE_ARN = os.environ.get(
    "STAGETRACK_INGEST_QUEUE_ARN", f"arn:aws:sqs:us-east-1:123456789012:{INGEST_QUEUE}",
)
INGEST_TOPIC = "stagetrack-ingest"
REPLAY_OF = "stagetrackReplayOf"  # SQS message attribute set by tools/replay.py
# Placeholders, as ARN strings so that the packaged template (infra/part_events.py) replaces
# them whole with references to the queue and topic it creates.
INGEST_TOPIC_ARN = os.environ.get(
    "STAGETRACK_INGEST_TOPIC_ARN", f"arn:aws:sns:us-east-1:123456789012:{INGEST_TOPIC}",
)
# The rule's pattern: what every event integration (chalicelib/integrations/) parses.
AWS_CI_PATTERN = integrations.event_pattern()

handlers = Blueprint(__name__)


def _dead_letter(ctx, origin: str, payload: str, error: Exception) -> bool:
    """Send an unusable message to the ingest DLQ with why; False if there is no DLQ."""
    from ..adapters import clients

    queue = clients.queue(ctx.settings.ingest_dlq_url)
    if queue is None:
        return False
    code = getattr(error, "code", type(error).__name__)
    message = getattr(error, "message", str(error))
    queue.send(json.dumps({"origin": origin, "error": {"code": code, "message": message,
                                                       "details": getattr(error, "details", None)},
                           "failedAt": format_iso(ctx.clock.now()), "message": payload},
                          separators=(",", ":"), default=str),
               attributes={"origin": origin, "errorCode": str(code)})
    log.warning("dead-lettered a message from %s: %s: %s", origin, code, message)
    return True


@handlers.on_cw_event(AWS_CI_PATTERN, name="aws_ci_events")
def aws_ci_events(event):
    from ..service import ingest

    ctx = wiring.context()
    raw = event.to_dict()
    try:
        outcome, replayed = ingest.ingest_aws_event(ctx, raw)
    except Exception as error:
        if ingest.is_permanent(error) and _dead_letter(
            ctx, "eventbridge", json.dumps(raw, default=str), error
        ):
            return {"result": "dead-lettered"}
        raise
    log.info("%s %s: %s", raw.get("detail-type"), raw.get("id"), outcome.as_dict())
    return {**outcome.as_dict(), "replayed": replayed}


@handlers.on_sqs_message(queue_arn=INGEST_QUEUE_ARN, batch_size=10, name="ingest_queue")
def ingest_queue(event):
    from ..service import ingest
    from . import messages

    ctx = wiring.context()
    failures = []
    for record in event:
        raw = record.to_dict()
        message_id = raw.get("messageId", "")
        queue_name = raw.get("eventSourceARN", "").rsplit(":", 1)[-1] or INGEST_QUEUE
        # a message replayed from the DLQ (tools/replay.py) keeps the id it was first delivered
        # with, so one that was applied before its failure is not applied again
        first_id = ((raw.get("messageAttributes") or {}).get(REPLAY_OF) or {}).get("stringValue")
        transport_id = f"sqs:{first_id or message_id}"
        try:
            answer, replayed = messages.ingest_message(ctx, record.body, transport_id=transport_id,
                                                       actor=f"sqs:{queue_name}")
            log.info("sqs message %s: %s%s", message_id, answer, " (replayed)" if replayed else "")
        except Exception as error:  # noqa: BLE001 - one message's failure stays its own
            if ingest.is_permanent(error) and _dead_letter(ctx, f"sqs:{queue_name}",
                                                           messages.redacted(record.body), error):
                continue
            if not ingest.is_permanent(error):
                log.warning("sqs message %s will be retried: %s", message_id, error)
            failures.append({"itemIdentifier": message_id})
    return {"batchItemFailures": failures}


@handlers.on_sns_message(topic=INGEST_TOPIC_ARN, name="ingest_topic")
def ingest_topic(event):
    from ..service import ingest
    from . import messages

    ctx = wiring.context()
    results = []
    for record in event.to_dict().get("Records", []):
        sns = record.get("Sns") or {}
        topic = str(sns.get("TopicArn", INGEST_TOPIC)).rsplit(":", 1)[-1]
        body = sns.get("Message") or ""
        try:
            answer, replayed = messages.ingest_message(ctx, body, transport_id=f"sns:{sns.get('MessageId')}",
                                                       actor=f"sns:{topic}")
        except Exception as error:
            if ingest.is_permanent(error) and _dead_letter(ctx, f"sns:{topic}", messages.redacted(body),
                                                           error):
                results.append({"result": "dead-lettered"})
                continue
            raise
        results.append({**answer, "replayed": replayed})
    return {"results": results}
