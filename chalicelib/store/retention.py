"""Retention of finished runs (the ``RunRetention`` port): the table's TTL on the run item, and
its stages and ended attempts deleted after it.

A finished run's item gets ``expires_at`` = its end + the retention; DynamoDB's TTL deletes it
some time after that moment, and the stream's REMOVE of it (made by the TTL service, not by a
writer) has the retention consumer delete what is left of the run: its stage items and their
ended attempts (``ATTEMPTS#<stage id>``, keys computed from each stage's ``first_attempt`` ..
``attempt - 1``, as a run's deletion computes them). So a run and all its items go together,
a few seconds apart. Neither this nor any writer touches the run's ``version`` or ``seq``.
"""
from __future__ import annotations

from pynamodb.exceptions import UpdateError

from ..service.ports import RunRecord
from .models import RUN_SK, ItemModels, RunItem, attempt_sk, attempts_pk, run_pk
from .stream import run_record

__all__ = ["RunRetention"]


class RunRetention:
    """The DynamoDB ``RunRetention`` (service/ports.py) on the table of ``items``."""

    def __init__(self, items: ItemModels) -> None:
        self._items = items

    def run_record(self, record: dict) -> RunRecord | None:
        return run_record(record)

    def set_expiry(self, run_id: str, status: str, ended_at: str, expires_at: int) -> bool:
        """Set the run item's TTL if the run is still finished as read (same status and end):
        a run re-opened since has a later record of its own. False if it was not."""
        condition = (RunItem.status == status) & (RunItem.ended_at == ended_at)
        return self._update(run_id, [RunItem.expires_at.set(expires_at)], condition)

    def clear_expiry(self, run_id: str, status: str) -> bool:
        """Remove the TTL of a run that is no longer finished (still in ``status``)."""
        return self._update(run_id, [RunItem.expires_at.remove()], RunItem.status == status)

    def _update(self, run_id: str, actions: list, condition) -> bool:
        try:
            self._items.run._get_connection().update_item(
                run_pk(run_id), RUN_SK, actions=actions, condition=condition & RunItem.pk.exists())
        except UpdateError as error:
            if getattr(error, "cause_response_code", None) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def delete_remains(self, run_id: str) -> int:
        """Delete the stage items and ended attempts of a run whose item is gone; nothing while
        the run item is there (a live run is never cut). Idempotent. Returns how many items."""
        connection = self._items.run._get_connection()
        stages, start = [], None
        while True:
            page = connection.query(run_pk(run_id), consistent_read=True, exclusive_start_key=start)
            for item in page.get("Items", []):
                if item["sk"]["S"] == RUN_SK:
                    return 0
                stages.append(item)
            start = page.get("LastEvaluatedKey")
            if not start:
                break
        deleted = 0
        for item in stages:
            stage_id = item.get("stage_id", {}).get("S")
            if stage_id and "attempt" in item:
                first = int(item.get("first_attempt", item["attempt"])["N"])
                for number in range(first, int(item["attempt"]["N"])):
                    deleted += self._delete(attempts_pk(stage_id), attempt_sk(number))
            deleted += self._delete(item["pk"]["S"], item["sk"]["S"])
        return deleted

    def _delete(self, pk: str, sk: str) -> int:
        self._items.run._get_connection().delete_item(pk, sk)
        return 1
