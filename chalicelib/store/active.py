"""The sparse ``activeStages`` index: which stage timers are due, and which ones a change armed.

Only IN_PROGRESS / WAITING_FOR_APPROVAL stages carry ``active_shard``/``due_at`` (see
``repository.stage_to_item``), so a Query on this index reads active stages only, however much
finished history the table holds. ``due_at`` is the ISO moment the stage's timer fires (the
earlier of its timeout and its expected end) or ``NO_DEADLINE`` (sorted last, never due).
Stages are spread over ``ACTIVE_SHARDS`` partitions so one hot key never throttles the sweep.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .models import ACTIVE_SHARDS, StageItem
from .repository import NO_DEADLINE


@dataclass(frozen=True)
class DueTimer:
    """One stage attempt whose timer should fire at ``due_at`` (ISO-8601 UTC)."""

    stage_id: str
    attempt: int
    due_at: str


@dataclass
class DueQuery:
    timers: list[DueTimer] = field(default_factory=list)
    queries: int = 0
    items_read: int = 0  # ScannedCount summed over every page: what DynamoDB actually read
    capacity_units: float = 0.0
    truncated: bool = False
    # Runs with a change still pending past its grace time (a big run whose writer died
    # between its chunks: store/repository.py); loading such a run completes it.
    pending_runs: list[str] = field(default_factory=list)


def shard_keys() -> list[str]:
    return [f"ACTIVE#{n}" for n in range(ACTIVE_SHARDS)]


def due_timers(now_iso: str, limit: int = 1000) -> DueQuery:
    """One Query per shard (more only when a shard has more than a page of due stages):
    ``active_shard = :shard AND due_at <= :now`` on the sparse index, never a Scan.

    Reads through the low-level connection: the index projects only status/attempt/stage_id,
    not the ``kind`` discriminator PynamoDB's model queries filter on.
    """
    connection = StageItem._get_connection()
    result = DueQuery()
    for shard in shard_keys():
        start = None
        while True:
            if len(result.timers) >= limit:
                result.truncated = True  # the rest waits for the next sweep
                return result
            page = connection.query(
                shard, StageItem.due_at <= now_iso, index_name=StageItem.active.Meta.index_name,
                exclusive_start_key=start, limit=limit - len(result.timers),
                return_consumed_capacity="TOTAL",
            )
            result.queries += 1
            result.items_read += int(page.get("ScannedCount", len(page.get("Items", []))))
            result.capacity_units += float(page.get("ConsumedCapacity", {}).get("CapacityUnits", 0))
            for raw in page.get("Items", []):
                if "stage_id" not in raw:  # a run item: it carries an intent (repository.py)
                    result.pending_runs.append(raw["pk"]["S"][len("RUN#"):])
                    continue
                result.timers.append(DueTimer(
                    stage_id=raw["stage_id"]["S"], attempt=int(raw["attempt"]["N"]),
                    due_at=raw["due_at"]["S"],
                ))
            start = page.get("LastEvaluatedKey")
            if not start:
                break
    return result


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
