"""Delivery attempts of a subscription: one item per attempt, newest first, kept 14 days.

Partition ``DELIV#<subscription id>``, sort key ``<ISO time>#<delivery id>#<attempt>``, so the
listing is 1 Query per page (newest first) and recording an attempt is 1 PutItem. DynamoDB's
TTL (``expires_at``) removes old attempts; nothing ever scans for them.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from ..domain.errors import BadRequest
from .models import DeliveryItem

RETENTION_SECONDS = 14 * 24 * 3600


@dataclass(frozen=True)
class DeliveryAttempt:
    subscription_id: str
    delivery_id: str
    event_id: str
    event_type: str
    attempt: int
    outcome: str  # delivered | retrying | dead-lettered
    at: str
    status_code: int | None = None
    error: str | None = None
    duration_ms: int | None = None
    next_attempt_at: str | None = None


def _pk(subscription_id: str) -> str:
    return f"DELIV#{subscription_id}"


def record(attempt: DeliveryAttempt, epoch_now: int) -> None:
    DeliveryItem(
        pk=_pk(attempt.subscription_id), sk=f"{attempt.at}#{attempt.delivery_id}#{attempt.attempt:03d}",
        delivery_id=attempt.delivery_id, event_id=attempt.event_id, event_type=attempt.event_type,
        attempt=attempt.attempt, outcome=attempt.outcome, status_code=attempt.status_code,
        error=None if attempt.error is None else attempt.error[:500], at=attempt.at,
        duration_ms=attempt.duration_ms, next_attempt_at=attempt.next_attempt_at,
        expires_at=epoch_now + RETENTION_SECONDS,
    ).save()


def _attempt(subscription_id: str, item: DeliveryItem) -> DeliveryAttempt:
    return DeliveryAttempt(
        subscription_id=subscription_id, delivery_id=item.delivery_id, event_id=item.event_id,
        event_type=item.event_type, attempt=int(item.attempt), outcome=item.outcome, at=item.at,
        status_code=None if item.status_code is None else int(item.status_code), error=item.error,
        duration_ms=None if item.duration_ms is None else int(item.duration_ms),
        next_attempt_at=item.next_attempt_at,
    )


def _encode(key: dict | None) -> str | None:
    if not key:
        return None
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode(cursor: str, subscription_id: str) -> dict:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadRequest("cursor is not valid") from None
    if (not isinstance(key, dict) or set(key) != {"pk", "sk"}
            or key.get("pk") != {"S": _pk(subscription_id)}
            or not isinstance(key.get("sk"), dict) or not isinstance(key["sk"].get("S"), str)):
        raise BadRequest("cursor is not valid for this listing")
    return key


def list_attempts(subscription_id: str, limit: int, cursor: str | None) -> tuple[list[DeliveryAttempt], str | None]:
    results = DeliveryItem.query(_pk(subscription_id), scan_index_forward=False, limit=limit, page_size=limit,
                                 consistent_read=True,
                                 last_evaluated_key=_decode(cursor, subscription_id) if cursor else None)
    items = [_attempt(subscription_id, item) for item in results]
    return items, _encode(results.last_evaluated_key)
