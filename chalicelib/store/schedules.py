"""Schedule items (domain/schedules.py): one per schedule, in its pipeline's partition.

Round trips: create 1 conditional PutItem; get 1 GetItem (strongly consistent); a pipeline's list
1 Query; change 1 PutItem conditioned on the version read; delete 1 GetItem + 1 DeleteItem; the
due schedules 1 Query of the sparse activeStages index on its ``SCHEDULES`` partition
(``due_at <= now``), which holds enabled schedules only: its reads grow with the schedules due,
never with the stages or runs of the table.
"""
from __future__ import annotations

import json

from pynamodb.exceptions import DeleteError, PutError

from ..domain.clock import format_iso, parse_iso
from ..domain.errors import ConcurrentModification, Conflict, NotFound
from ..domain.schedules import Schedule
from .models import SCHEDULES_SHARD, ItemModels, ScheduleItem, StageItem, schedule_sk, schedules_pk
from .repository import _is_condition_failure

__all__ = ["ScheduleStore"]

_SK_PREFIX = schedule_sk("")


def _from_item(item: ScheduleItem) -> Schedule:
    return Schedule(
        id=item.schedule_id, pipeline=item.pipeline, cron=item.cron, time_zone=item.time_zone,
        enabled=bool(item.enabled), created_at=parse_iso(item.created_at), created_by=item.created_by,
        updated_at=parse_iso(item.updated_at),
        variables=json.loads(item.variables) if item.variables else {}, description=item.description,
        next_fire_at=parse_iso(item.due_at), last_fired_at=parse_iso(item.last_fired_at),
        last_run_id=item.last_run_id,
        last_skipped=json.loads(item.last_skipped) if item.last_skipped else None,
        version=int(item.version or 0),
    )


class ScheduleStore:
    """The DynamoDB ``ScheduleStore`` (service/ports.py) on the table of ``items``."""

    def __init__(self, items: ItemModels) -> None:
        self._model = items.schedule

    def _item(self, schedule: Schedule, version: int | None) -> ScheduleItem:
        due = schedule.next_fire_at if schedule.enabled else None
        item = self._model(
            pk=schedules_pk(schedule.pipeline), sk=schedule_sk(schedule.id), schedule_id=schedule.id,
            pipeline=schedule.pipeline, cron=schedule.cron, time_zone=schedule.time_zone,
            enabled=schedule.enabled,
            variables=json.dumps(schedule.variables) if schedule.variables else None,
            description=schedule.description, created_at=format_iso(schedule.created_at),
            created_by=schedule.created_by, updated_at=format_iso(schedule.updated_at),
            last_fired_at=format_iso(schedule.last_fired_at), last_run_id=schedule.last_run_id,
            last_skipped=json.dumps(schedule.last_skipped) if schedule.last_skipped else None,
            active_shard=SCHEDULES_SHARD if due is not None else None, due_at=format_iso(due),
        )
        if version is not None:  # None: a new item (PynamoDB conditions the save on its absence)
            item.version = version
        return item

    def insert(self, schedule: Schedule) -> None:
        item = self._item(schedule, None)
        try:
            item.save()  # version None: conditioned on the item not existing
        except PutError as error:
            if _is_condition_failure(error):
                raise Conflict(f"schedule {schedule.id!r} exists already") from None
            raise
        schedule.version = int(item.version)

    def get(self, pipeline: str, schedule_id: str) -> Schedule | None:
        try:
            return _from_item(self._model.get(schedules_pk(pipeline), schedule_sk(schedule_id),
                                              consistent_read=True))
        except self._model.DoesNotExist:
            return None

    def list_for(self, pipeline: str) -> list[Schedule]:
        found = [_from_item(item) for item in self._model.query(
            schedules_pk(pipeline), ScheduleItem.sk.startswith(_SK_PREFIX), consistent_read=True)]
        return sorted(found, key=lambda s: (s.created_at, s.id))

    def replace(self, schedule: Schedule) -> Schedule:
        item = self._item(schedule, schedule.version)
        try:
            item.save()  # conditioned on the stored version being the one read
        except PutError as error:
            if not _is_condition_failure(error):
                raise
            if self.get(schedule.pipeline, schedule.id) is None:
                raise NotFound(f"schedule {schedule.id!r} not found") from None
            raise ConcurrentModification(f"schedule {schedule.id!r} was changed meanwhile; read it again") \
                from None
        schedule.version = int(item.version)
        return schedule

    def delete(self, pipeline: str, schedule_id: str) -> Schedule | None:
        """1 GetItem (the answer) + 1 DeleteItem conditioned on the item existing."""
        found = self.get(pipeline, schedule_id)
        if found is None:
            return None
        try:
            self._model(pk=schedules_pk(pipeline), sk=schedule_sk(schedule_id)).delete(
                condition=ScheduleItem.pk.exists(), add_version_condition=False)
        except DeleteError as error:
            if _is_condition_failure(error):
                return None  # deleted meanwhile by another request
            raise
        return found

    def due(self, now_iso: str, limit: int) -> list[tuple[str, str]]:
        """Reads through the low-level connection: the index projects its keys and a few stage
        attributes, not the ``kind`` a model Query filters on."""
        connection = self._model._get_connection()
        page = connection.query(SCHEDULES_SHARD, StageItem.due_at <= now_iso,
                                index_name=StageItem.active.Meta.index_name, limit=limit)
        found = []
        for raw in page.get("Items", []):
            pk, sk = raw["pk"]["S"], raw["sk"]["S"]
            found.append((pk[len(schedules_pk("")):], sk[len(_SK_PREFIX):]))
        return found
