"""Delivery attempts of a subscription: one item per attempt, newest first, kept 14 days.

Partition ``DELIV#<subscription id>``, sort key ``<ISO time>#<delivery id>#<attempt>``, so the
listing is 1 Query per page (newest first) and recording an attempt is 1 PutItem. DynamoDB's
TTL (``expires_at``) removes old attempts; nothing ever scans for them.
"""
from __future__ import annotations

from ..domain.cursors import CursorCodec
from ..service.ports import DELIVERY_RETENTION_SECONDS, DeliveryAttempt
from .models import DeliveryItem, ItemModels
from .repository import key_from_cursor_payload

RETENTION_SECONDS = DELIVERY_RETENTION_SECONDS
__all__ = ["DeliveryAttempt", "DeliveryLog", "cursor_scope", "RETENTION_SECONDS"]


def _pk(subscription_id: str) -> str:
    return f"DELIV#{subscription_id}"


def _attempt(subscription_id: str, item: DeliveryItem) -> DeliveryAttempt:
    return DeliveryAttempt(
        subscription_id=subscription_id, delivery_id=item.delivery_id, event_id=item.event_id,
        event_type=item.event_type, attempt=int(item.attempt), outcome=item.outcome, at=item.at,
        status_code=None if item.status_code is None else int(item.status_code), error=item.error,
        duration_ms=None if item.duration_ms is None else int(item.duration_ms),
        next_attempt_at=item.next_attempt_at,
    )


def cursor_scope(subscription_id: str) -> str:
    """A deliveries cursor is valid only for the subscription whose listing issued it."""
    return f"deliveries/{subscription_id}"


class DeliveryLog:
    """The DynamoDB ``DeliveryLog`` (service/ports.py) on the table of ``items``; its cursors are
    sealed with ``codec``."""

    def __init__(self, items: ItemModels, codec: CursorCodec) -> None:
        self._model = items.delivery
        self._codec = codec

    def record(self, attempt: DeliveryAttempt, epoch_now: int) -> None:
        self._model(
            pk=_pk(attempt.subscription_id), sk=f"{attempt.at}#{attempt.delivery_id}#{attempt.attempt:03d}",
            delivery_id=attempt.delivery_id, event_id=attempt.event_id, event_type=attempt.event_type,
            attempt=attempt.attempt, outcome=attempt.outcome, status_code=attempt.status_code,
            error=None if attempt.error is None else attempt.error[:500], at=attempt.at,
            duration_ms=attempt.duration_ms, next_attempt_at=attempt.next_attempt_at,
            expires_at=epoch_now + RETENTION_SECONDS,
        ).save()

    def list_attempts(self, subscription_id: str, limit: int,
                      cursor: str | None) -> tuple[list[DeliveryAttempt], str | None]:
        scope = cursor_scope(subscription_id)
        start = key_from_cursor_payload(self._codec.open(scope, cursor), {"pk", "sk"}) if cursor else None
        results = self._model.query(_pk(subscription_id), scan_index_forward=False, limit=limit,
                                    page_size=limit, consistent_read=True, last_evaluated_key=start)
        items = [_attempt(subscription_id, item) for item in results]
        return items, self._codec.seal(scope, results.last_evaluated_key)
