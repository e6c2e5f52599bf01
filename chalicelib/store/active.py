"""The sparse ``activeStages`` index: which stage timers are due, and which ones a change armed.

Only IN_PROGRESS / WAITING_FOR_APPROVAL / RETRY_PENDING stages carry ``active_shard``/``due_at``
(see ``repository.stage_to_item``), so a Query on this index reads active stages only, however
much finished history the table holds. ``due_at`` is the ISO moment the stage's timer fires
(``domain.timers.next_due``: its timeout, expected end, reminder or pending retry, the earliest)
or ``NO_DEADLINE`` (sorted last, never due).
Stages are spread over ``ACTIVE_SHARDS`` partitions so one hot key never throttles the sweep.
"""
from __future__ import annotations

from ..service.ports import DueQuery, DueTimer
from .models import ACTIVE_SHARDS, ItemModels, StageItem
from .stream import armed_timer, disarmed_timer

__all__ = ["ActiveTimers", "DueQuery", "DueTimer", "shard_keys"]


def shard_keys() -> list[str]:
    return [f"ACTIVE#{n}" for n in range(ACTIVE_SHARDS)]


class ActiveTimers:
    """The DynamoDB ``ActiveTimers`` (service/ports.py) on the table of ``items``."""

    def __init__(self, items: ItemModels) -> None:
        self._stage = items.stage

    def due_timers(self, now_iso: str, limit: int = 1000) -> DueQuery:
        """One Query per shard (more only when a shard has more than a page of due stages):
        ``active_shard = :shard AND due_at <= :now`` on the sparse index, never a Scan.

        Reads through the low-level connection: the index projects only status/attempt/stage_id,
        not the ``kind`` discriminator PynamoDB's model queries filter on.
        """
        connection = self._stage._get_connection()
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

    def armed_timer(self, record: dict) -> DueTimer | None:
        """The timer a stream record asks for (store/stream.py decodes it)."""
        return armed_timer(record)

    def disarmed_timer(self, record: dict) -> DueTimer | None:
        """The timer a stream record makes stale (store/stream.py decodes it)."""
        return disarmed_timer(record)
