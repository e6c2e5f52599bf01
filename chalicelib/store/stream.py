"""Decoding the table's stream records (DynamoDB JSON images): no PynamoDB, so the in-memory
store (store/memory.py) reads the same records the same way."""
from __future__ import annotations

from ..service.ports import DueTimer

NO_DEADLINE = "9999-12-31T23:59:59.999Z"  # an active stage's due_at when no timer ever fires


def armed_timer(record: dict) -> DueTimer | None:
    """The timer a DynamoDB stream record asks for, if any.

    A stage needs a new timer when its new image is active with a real due moment that the old
    image did not have (it just started, entered approval, began a new attempt, or its timeout
    or expected duration changed). Everything else (runs, pipelines, removals, finished stages,
    unrelated edits) arms nothing. ``record`` is the Lambda event record (``dynamodb`` key with
    ``NewImage``/``OldImage`` in DynamoDB JSON).
    """
    if record.get("eventName") not in ("INSERT", "MODIFY"):
        return None
    images = record.get("dynamodb") or {}
    new = images.get("NewImage") or {}
    if _text(new, "kind") != "stage":
        return None
    due_at = _text(new, "due_at")
    stage_id = _text(new, "stage_id")
    attempt = _number(new, "attempt")
    if due_at is None or due_at == NO_DEADLINE or stage_id is None or attempt is None:
        return None
    old = images.get("OldImage") or {}
    if _text(old, "due_at") == due_at and _number(old, "attempt") == attempt:
        return None
    return DueTimer(stage_id=stage_id, attempt=attempt, due_at=due_at)


def _text(image: dict, name: str) -> str | None:
    value = image.get(name)
    return value.get("S") if isinstance(value, dict) else None


def _number(image: dict, name: str) -> int | None:
    value = image.get(name)
    if not isinstance(value, dict) or "N" not in value:
        return None
    try:
        return int(value["N"])
    except ValueError:
        return None
