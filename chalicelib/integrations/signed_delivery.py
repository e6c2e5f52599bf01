"""Our own outbound wire format: how a delivery to a subscriber is signed, and how the
subscriber checks it (docs/integrations.md shows the same in a few lines).

``X-Stagetrack-Signature: v1=<hex HMAC-SHA256 over "<timestamp>.<body>">`` with the
subscription's secret, ``X-Stagetrack-Timestamp`` the Unix time of the attempt; the subscriber
recomputes it over the exact bytes received and refuses timestamps older than five minutes.
No pydantic here: the delivery Lambda imports it on every cold start.
"""
from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

SIGNATURE_VERSION = "v1"
SIGNATURE_TOLERANCE_SECONDS = 300
SIGNATURE_HEADER = "X-Stagetrack-Signature"
TIMESTAMP_HEADER = "X-Stagetrack-Timestamp"


def delivery_signature(secret: str, timestamp: int, body: bytes) -> str:
    """``X-Stagetrack-Signature``: ``v1=`` + hex HMAC-SHA256 over ``<timestamp>.<body>``."""
    message = str(timestamp).encode() + b"." + body
    return f"{SIGNATURE_VERSION}=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def verify_delivery(secret: str, body: bytes, timestamp_header: str | None, signature_header: str | None,
                    now: datetime, tolerance: int = SIGNATURE_TOLERANCE_SECONDS) -> bool:
    """What a subscriber does: recompute the signature over the exact bytes received, compare
    in constant time, refuse stale timestamps. Several comma-separated signatures (a secret
    being rotated) pass when one matches."""
    if not timestamp_header or not signature_header or not timestamp_header.isdigit():
        return False
    timestamp = int(timestamp_header)
    if abs(now.timestamp() - timestamp) > tolerance:
        return False
    expected = delivery_signature(secret, timestamp, body).encode()
    return any(hmac.compare_digest(expected, part.strip().encode("utf-8", "replace"))
               for part in signature_header.split(","))


def signed_headers(secret: str, *, event_type: str, delivery_id: str, attempt: int, timestamp: int,
                   body: bytes) -> dict[str, str]:
    """The headers of one delivery attempt; the signature covers the exact body bytes."""
    return {
        "Content-Type": "application/json",
        "X-Stagetrack-Event": event_type,
        "X-Stagetrack-Delivery": delivery_id,
        "X-Stagetrack-Attempt": str(attempt),
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: delivery_signature(secret, timestamp, body),
    }
