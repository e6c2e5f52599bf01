"""The outbox: committed changes -> events -> EventBridge and subscriber deliveries.

Outbox style without an outbox table: the table's DynamoDB stream (NEW_AND_OLD_IMAGES) is the
outbox. A change is in the stream if and only if its transaction committed, so an API call that
committed never loses its event, even if its Lambda died right after; and no event is ever sent
for a change that did not commit. The stream handler (events/outbound.py) calls ``publish``;
if publishing fails it raises, and Lambda retries the batch from the stream (which keeps
records 24 h). Delivery is therefore at-least-once: every event has a stable ``id`` (and
every delivery a stable ``X-Stagetrack-Delivery`` id) for consumers to de-duplicate on.

Subscriber deliveries are not made here: ``publish`` puts one message per (event, matching
subscription) on the delivery queue, and ``deliver`` (the queue's consumer) makes one attempt,
records it, and either is done, queues the next attempt with an exponential delay (SQS
DelaySeconds), or after the last attempt moves the message to the dead-letter queue.

A subscription's ``format`` decides the body: our event JSON, or (``cdevents``) the CDEvent of
the change (integrations/cdevents.py), sent with the CloudEvents binary-mode ``ce-*`` headers; a
change CDEvents has no word for is not delivered to such a subscription at all.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from ..domain.clock import format_iso
from ..domain.events import (
    FORMAT_CDEVENTS,
    FORMAT_STAGETRACK,
    RUN_CHANGED,
    SUBSCRIPTION_FORMATS,
    StateChange,
    backoff_seconds,
    delivery_id,
)
from ..domain.status import FINAL
from ..integrations import cdevents, signed_delivery
from . import ServiceContext, subscriptions
from .ports import DeliveryAttempt, StoredSubscription

log = logging.getLogger(__name__)

MESSAGE_VERSION = 1
FINAL_VALUES = frozenset(status.value for status in FINAL)


class EventPublisher(Protocol):
    def publish(self, changes: list[StateChange]) -> int: ...


class Queue(Protocol):
    def send(self, body: str, delay_seconds: int = 0, attributes: dict[str, str] | None = None) -> str: ...

    def send_batch(self, bodies: list[str]) -> int: ...


class DeliverySender(Protocol):
    def post(self, url: str, body: bytes, headers: dict[str, str]): ...


class BadDeliveryMessage(ValueError):
    """A delivery queue message we did not write (or a format we no longer read)."""


@dataclass
class PublishReport:
    records: int = 0
    changes: int = 0
    published: int = 0
    deliveries: int = 0


def changes_of(records: Iterable[dict], ctx: ServiceContext) -> list[StateChange]:
    now = ctx.clock.now()
    decode = ctx.stores.changes.state_change
    return [change for change in (decode(record, now) for record in records) if change is not None]


def publish(ctx: ServiceContext, records: Iterable[dict], *, bus: EventPublisher | None,
            deliveries: Queue | None) -> PublishReport:
    """Stream records -> one event per state change -> the bus, and the delivery queue for each
    subscription whose filter matches. Reads the subscriptions (1 Query) only when there is an
    event to send."""
    records = list(records)
    changes = changes_of(records, ctx)
    report = PublishReport(records=len(records), changes=len(changes))
    count_finished_runs(ctx, changes)
    if not changes:
        return report
    if bus is not None:
        report.published = bus.publish(changes)
    messages = delivery_messages(changes, subscriptions.list_all(ctx), base_url=ctx.settings.public_url)
    if messages:
        if deliveries is None:
            log.error("%d delivery(ies) not queued: STAGETRACK_DELIVERY_QUEUE_URL is not set", len(messages))
        else:
            report.deliveries = deliveries.send_batch(messages)
    return report


def count_finished_runs(ctx: ServiceContext, changes: list[StateChange]) -> None:
    """``RunsFinished`` by final status, once per committed change that ends a run (a retried
    run that ends again counts again). Counted here, from the stream, so every writer (API,
    dialects, webhooks, timers) is counted alike and an aborted write never is; a batch Lambda
    retries is counted again (rare: metrics are not a ledger)."""
    for change in changes:
        if change.type != RUN_CHANGED or change.new_status is None:
            continue
        if change.new_status in FINAL_VALUES and change.old_status not in FINAL_VALUES:
            ctx.metrics.count("RunsFinished", dimensions={"Status": change.new_status})


def delivery_messages(changes: list[StateChange], subscribed: list[StoredSubscription], *,
                      base_url: str | None = None) -> list[str]:
    """One message per change and subscription whose filter matches it, unless the
    subscription's format has nothing for that change (a CDEvents subscriber and a stage
    waiting for approval). ``base_url``: the public URL CDEvents link runs and stages to."""
    messages = []
    for change in changes:
        for subscription in subscribed:
            if not subscriptions.filter_of(subscription).matches(change):
                continue
            message = delivery_message(change, subscription.subscription_id, fmt=subscription.format,
                                       base_url=base_url)
            if message is not None:
                messages.append(message)
    return messages


def event_payload(change: StateChange, fmt: str, base_url: str | None = None) -> tuple[str, str] | None:
    """(event type, body) a subscriber in format ``fmt`` receives for a change; None: nothing."""
    if fmt == FORMAT_CDEVENTS:
        event = cdevents.to_cdevent(change, base_url)
        return None if event is None else (event["context"]["type"], cdevents.body(event))
    return change.type, change.body()


def delivery_message(change: StateChange, subscription_id: str, attempt: int = 1, *,
                     fmt: str = FORMAT_STAGETRACK, base_url: str | None = None) -> str | None:
    """The queue message of one delivery, or None when the subscriber's format has nothing
    for this change."""
    payload = event_payload(change, fmt, base_url)
    if payload is None:
        return None
    event_type, body = payload
    return json.dumps({
        "v": MESSAGE_VERSION, "deliveryId": delivery_id(change.id, subscription_id),
        "subscriptionId": subscription_id, "eventId": change.id, "eventType": event_type,
        "attempt": attempt, "format": fmt, "payload": body,
    }, separators=(",", ":"))


def parse_delivery(body: str) -> dict:
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
        raise BadDeliveryMessage("delivery message is not JSON") from None
    expected = {"v": int, "deliveryId": str, "subscriptionId": str, "eventId": str, "eventType": str,
                "attempt": int, "payload": str}
    if not isinstance(message, dict) or any(type(message.get(k)) is not t for k, t in expected.items()):
        raise BadDeliveryMessage("delivery message lacks fields or has wrong types")
    if message["v"] != MESSAGE_VERSION or message["attempt"] < 1:
        raise BadDeliveryMessage(f"delivery message version {message['v']} / attempt {message['attempt']}")
    fmt = message.setdefault("format", FORMAT_STAGETRACK)  # messages queued before formats existed
    if fmt not in SUBSCRIPTION_FORMATS:
        raise BadDeliveryMessage(f"delivery message format {fmt!r}")
    if fmt == FORMAT_CDEVENTS:
        try:
            cdevents.cloudevent_headers(message["payload"])
        except ValueError as error:
            raise BadDeliveryMessage(f"cdevents delivery payload: {error}") from None
    return message


@dataclass(frozen=True)
class DeliveryOutcome:
    outcome: str  # delivered | retrying | dead-lettered | dropped
    attempt: int
    status_code: int | None = None
    error: str | None = None
    retry_in_seconds: int | None = None


def signed_headers(secret: str, message: dict, timestamp: int) -> dict[str, str]:
    """Our headers (the signature covers the exact body bytes) and, for a CDEvent, the
    CloudEvents binary-mode ``ce-*`` attributes taken from its context."""
    headers = signed_delivery.signed_headers(
        secret, event_type=message["eventType"], delivery_id=message["deliveryId"],
        attempt=message["attempt"], timestamp=timestamp, body=message["payload"].encode())
    if message.get("format") == FORMAT_CDEVENTS:
        headers.update(cdevents.cloudevent_headers(message["payload"]))
    return headers


def deliver(ctx: ServiceContext, body: str, *, sender: DeliverySender, retries: Queue,
            dead_letters: Queue | None, max_attempts: int) -> DeliveryOutcome:
    """One attempt: POST the signed event, record the attempt (1 PutItem), then queue what
    comes next. Recorded before queueing, so a failure to queue (the handler then fails and SQS
    redelivers this same attempt) can repeat an attempt but never fork the retries."""
    message = parse_delivery(body)
    subscription = ctx.stores.subscriptions.get(message["subscriptionId"])
    if subscription is None:
        log.info("delivery %s dropped: subscription deleted", message["deliveryId"])
        return DeliveryOutcome("dropped", message["attempt"])
    now = ctx.clock.now()
    secret = subscriptions.secret_of(ctx, subscription)
    result = sender.post(subscription.url, message["payload"].encode(),
                         signed_headers(secret, message, int(now.timestamp())))
    attempt = message["attempt"]
    retry_in = None
    if result.ok:
        outcome = "delivered"
    elif attempt < max_attempts:
        outcome, retry_in = "retrying", backoff_seconds(attempt, message["deliveryId"])
    else:
        outcome = "dead-lettered"
    if outcome != "delivered":
        ctx.metrics.count("DeliveriesFailed")  # this attempt; DeliveriesDeadLettered: the last one
        if outcome == "dead-lettered":
            ctx.metrics.count("DeliveriesDeadLettered")
    ctx.stores.deliveries.record(DeliveryAttempt(
        subscription_id=subscription.subscription_id, delivery_id=message["deliveryId"],
        event_id=message["eventId"], event_type=message["eventType"], attempt=attempt, outcome=outcome,
        at=format_iso(now), status_code=result.status, error=result.error, duration_ms=result.duration_ms,
        next_attempt_at=format_iso(now + timedelta(seconds=retry_in)) if retry_in is not None else None,
    ), int(now.timestamp()))
    if retry_in is not None:  # retrying
        retries.send(
            json.dumps({**message, "attempt": attempt + 1}, separators=(",", ":")), delay_seconds=retry_in
        )
    elif outcome == "dead-lettered":
        dead = json.dumps({**message, "lastStatus": result.status, "lastError": result.error,
                           "deadLetteredAt": format_iso(now)}, separators=(",", ":"))
        if dead_letters is None:
            log.error("delivery %s failed %d times and no dead-letter queue is set: %s",
                      message["deliveryId"], attempt, dead)
        else:
            dead_letters.send(dead, attributes={"reason": result.error or f"HTTP {result.status}"})
    return DeliveryOutcome(outcome, attempt, result.status, result.error, retry_in)
