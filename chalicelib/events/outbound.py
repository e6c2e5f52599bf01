"""Lambda handlers of the outbound side: translate events into service.outbox calls.

- ``outbox_publisher``  the table's DynamoDB stream -> events -> EventBridge + delivery queue
- ``deliver_webhooks``  the delivery queue -> one signed POST per message, retries re-queued

Why a second stream consumer instead of sharing the timer armer's: each event source mapping
keeps its own position in the stream and retries its own failures, so EventBridge or SQS
being down can never hold back stage timers (nor a Step Functions hiccup hold back events);
each function also gets only its own permissions. Two readers per shard is what DynamoDB
Streams supports without throttling, and these are the two. Both handlers stay a few lines.

The insights aggregates (issue 14) ride on the outbox publisher's reader rather than a third one:
its records (runs and stages) are exactly what they need, and every step on them is idempotent,
so a batch retried for either reason is safe for both (events keep their ids; a record's
aggregate marker makes it count once). So do the expectations of started stages (overruns and
the ETA: service/overruns.py), read from those aggregates and written on the started stage
under a condition on its version, so a retried batch writes nothing new.

Run retention (finished runs expire: service/retention.py) rides on it too, for the same reason
and because a third reader would be throttled: its records (a finished run, a run carrying an
expiry, a run removed by the table's TTL) are run records the reader already receives, and each
of its steps is conditioned on the item as read, so a retried batch does nothing twice. It runs
last: publishing and aggregating read nothing it changes, and its own writes come back through
the stream as ordinary run changes.

Resource names here are defaults; infra/ wires the deployed ARNs (like events/timers.py).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable

from chalice import Blueprint

from .. import wiring
from .timers import STREAM_ARN

log = logging.getLogger(__name__)

DELIVERY_QUEUE = "stagetrack-deliveries"
DELIVERY_QUEUE_ARN = os.environ.get(
    "STAGETRACK_DELIVERY_QUEUE_ARN", f"arn:aws:sqs:us-east-1:123456789012:{DELIVERY_QUEUE}",
)
DELIVERY_BATCH = 5  # sequential POSTs of at most 5 s each: well inside the 60 s function timeout

handlers = Blueprint(__name__)


@handlers.on_dynamodb_record(stream_arn=STREAM_ARN, batch_size=100, starting_position="TRIM_HORIZON",
                             name="outbox_publisher")
def outbox_publisher(event):
    """A failure raises: Lambda retries the batch (bisecting it), so no committed change is
    skipped; events already published are sent again with the same ids. Then the same records
    feed the insights aggregates (service/insights.py), idempotent per record, so a retried
    batch counts nothing twice; last, finished runs get their expiry and expired runs lose their
    stages and attempts (service/retention.py, idempotent too): one reader of the stream serves
    all three (see the module's note)."""
    from ..adapters import clients
    from ..service import insights, outbox, overruns
    from ..service.retention import apply_retention

    ctx = wiring.context()
    settings = ctx.settings
    records = [record.to_dict() for record in event]
    report = outbox.publish(ctx, records, bus=clients.event_bus(settings),
                            deliveries=clients.queue(settings.delivery_queue_url))
    log.info("outbox: %s", report)
    added = insights.aggregate(ctx, records)
    log.info("insights: %s", added)
    expected = overruns.expect(ctx, records)
    log.info("expectations: %s", expected)
    kept = apply_retention(ctx, records)
    log.info("retention: %s", kept)
    return {"records": report.records, "events": report.changes, "published": report.published,
            "deliveries": report.deliveries, "insights": {"attempts": added.attempts, "runs": added.runs,
                                                          "duplicates": added.duplicates},
            "expectations": {"starts": expected.starts, "written": expected.written,
                             "noHistory": expected.no_history, "stale": expected.stale},
            "retention": {"expiring": kept.expiring, "kept": kept.kept, "purged": kept.purged}}


@handlers.on_sqs_message(queue_arn=DELIVERY_QUEUE_ARN, batch_size=DELIVERY_BATCH, name="deliver_webhooks")
def deliver_webhooks(event):
    """Partial batch response: only messages whose attempt could not be recorded or re-queued
    are returned to the queue (ReportBatchItemFailures); a malformed one is dead-lettered."""
    from ..adapters import clients
    from ..service import outbox

    ctx = wiring.context()
    settings = ctx.settings
    retries = clients.queue(settings.delivery_queue_url)
    dead_letters = clients.queue(settings.delivery_dlq_url)
    failures = []
    for record in event:
        message_id = record.to_dict().get("messageId", "")
        try:
            result = outbox.deliver(
                ctx,
                record.body,
                sender=clients.webhook_sender(settings),
                retries=retries,
                dead_letters=dead_letters,
                max_attempts=settings.delivery_max_attempts,
            )
            log.info(
                "delivery attempt %d: %s (%s)",
                result.attempt,
                result.outcome,
                result.status_code or result.error,
            )
        except outbox.BadDeliveryMessage as error:
            log.error("malformed delivery message %s: %s", message_id, error)
            if dead_letters is None:
                failures.append({"itemIdentifier": message_id})
            else:
                dead_letters.send(record.body, attributes={"reason": str(error)})
        except Exception:  # noqa: BLE001 - this message goes back to the queue, the others go on
            log.exception("delivery message %s failed; SQS will redeliver it", message_id)
            failures.append({"itemIdentifier": message_id})
    return {"batchItemFailures": failures}


# ---- `make run`: the same two steps on a local thread ----------------------------------------------

class LocalOutbox:
    """What the stream trigger and the delivery queue do in AWS, for `make run`: follow DynamoDB
    Local's stream, publish (no bus locally unless STAGETRACK_EVENT_BUS is set), add to the
    insights aggregates, apply run retention, and make the deliveries whose delay has passed.
    Dead letters are logged (and kept in ``dead_letters``)."""

    RETRY_AFTER_ERROR_SECONDS = 5

    def __init__(self, ctx, tail, queue=None, dead_letters=None) -> None:
        """``tail``: a StreamTail, or a callable making one on the first tick (so the app
        imports even while DynamoDB Local is still starting)."""
        from ..adapters.local import MemoryQueue

        self.ctx = ctx
        self._tail = tail
        self.queue = queue if queue is not None else MemoryQueue()
        self.dead_letters = dead_letters if dead_letters is not None else MemoryQueue()

    def tick(self) -> None:
        from ..adapters import clients
        from ..service import insights, outbox, overruns
        from ..service.retention import apply_retention

        settings = self.ctx.settings
        if callable(self._tail):
            self._tail = self._tail()
        records = self._tail.read()
        if records:
            outbox.publish(self.ctx, records, bus=clients.event_bus(settings), deliveries=self.queue)
            insights.aggregate(self.ctx, records)
            overruns.expect(self.ctx, records)
            apply_retention(self.ctx, records)
        for body in self.queue.due():
            try:
                result = outbox.deliver(
                    self.ctx,
                    body,
                    sender=clients.webhook_sender(settings),
                    retries=self.queue,
                    dead_letters=self.dead_letters,
                    max_attempts=settings.delivery_max_attempts,
                )
                log.info("local delivery attempt %d: %s", result.attempt, result.outcome)
            except outbox.BadDeliveryMessage as error:
                log.error("malformed local delivery message dropped: %s", error)
            except Exception:  # noqa: BLE001 - DynamoDB Local restarting: try this one again soon
                log.exception("local delivery failed; retrying in %d s", self.RETRY_AFTER_ERROR_SECONDS)
                self.queue.send(body, self.RETRY_AFTER_ERROR_SECONDS)


_local = None


def start_local(interval: float):
    """Start the process's local outbox thread (idempotent); `make run` calls this from app.py."""
    global _local
    if _local is None or not _local.alive:
        from ..adapters.local import StreamTail
        from ..ticker import Ticker

        ctx = wiring.context()
        settings = ctx.settings

        def follow() -> StreamTail:
            return StreamTail(settings.table_name, settings.region, settings.dynamodb_endpoint)

        # "From now on" must mean from before the first request is served: a tail first made on
        # the first tick (a second later) missed the changes of a client that starts at once.
        # Only while DynamoDB Local is not answering yet is it left to the first tick.
        try:
            tail: StreamTail | Callable[[], StreamTail] = follow()
        except Exception:  # noqa: BLE001 - DynamoDB Local still starting: the first tick makes it
            log.warning("local outbox: the stream is not readable yet; following it from the first tick")
            tail = follow
        outbox_loop = LocalOutbox(ctx, tail)
        def tick() -> None:
            try:
                outbox_loop.tick()
            except Exception:  # noqa: BLE001 - DynamoDB Local restarting: the next tick goes on
                log.exception("local outbox: reading the stream failed; retrying next tick")

        _local = Ticker(tick, interval).start()
    return _local
