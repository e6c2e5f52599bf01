"""Concurrency group items, and the transactions that change a group together with runs.

A group item (``GROUP#<pipeline>`` / ``GROUP#<name>``) holds the run that holds the group and the
runs queued for it. Every write of it is in one TransactWriteItems with the runs it concerns,
conditioned on the group's version as read (absent: never written), so two writers that read the
same group can never both take it: the second one's transaction is cancelled, writes nothing,
and it reads the group again (``ConcurrentModification``).

Round trips: ``get`` 1 GetItem (strongly consistent); every write 1 TransactWriteItems, whose
items are those of the run changes it joins (the new run and its stages, the superseded run's
change, a promoted run's item and stages) plus the group item (and a ConditionCheck on a run
read). The sweeper's ``due_groups`` is 1 Query of the sparse activeStages index on its own
``GROUPS`` partition: only groups with waiting runs carry its keys.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta

from pynamodb.exceptions import TransactWriteError

from ..domain.clock import format_iso, parse_iso
from ..domain.concurrency import Group
from ..domain.errors import ConcurrentModification, ValidationFailed
from ..domain.model import Run, RunAggregate
from . import models
from .models import (
    GROUPS_SHARD,
    GroupItem,
    ItemModels,
    PipelineItem,
    RunItem,
    StageItem,
    group_pk,
    group_sk,
    pipeline_pk,
)
from .repository import (
    BIG_RUN_STAGES,
    MAX_TRANSACTION_ITEMS,
    Repository,
    TxItem,
    _bump_versions,
    _dump,
    _is_condition_failure,
    _only_transaction_conflicts,
    _seq_is,
    _stored,
    run_to_item,
    stage_to_item,
    tx_check,
    tx_put,
    tx_update,
)
from .sources import link_put

# A group with waiting runs is due for the sweeper this long after its latest change: the holder
# that ended normally released it within its own request long before.
GROUP_GRACE_SECONDS = 60
SEND_ATTEMPTS = 5  # sends cancelled only by another transaction in flight on one of the items


def group_from_item(item: GroupItem) -> Group:
    return Group(pipeline=item.pipeline, name=item.name, active=item.active,
                 queue=tuple(json.loads(item.queue)) if item.queue else (),
                 version=None if item.version is None else int(item.version))


class GroupStore:
    """The DynamoDB ``GroupStore`` (service/ports.py) on the table of ``items``."""

    def __init__(self, items: ItemModels, runs: Repository) -> None:
        self._items = items
        self._runs = runs

    def get(self, pipeline: str, name: str) -> Group | None:
        model = self._items.group
        try:
            item = model.get(group_pk(pipeline), group_sk(name), consistent_read=True)
        except model.DoesNotExist:
            return None
        return group_from_item(item)

    def _group_op(self, group: Group, now_iso: str) -> TxItem:
        """The group as it is to be, conditioned on its version as read (absent: not written)."""
        model = self._items.group
        waiting = bool(group.queue)
        due = format_iso(parse_iso(now_iso) + timedelta(seconds=GROUP_GRACE_SECONDS)) if waiting else None
        item = model(pk=group_pk(group.pipeline), sk=group_sk(group.name), pipeline=group.pipeline,
                     name=group.name, active=group.active,
                     queue=json.dumps(list(group.queue)) if group.queue else None, updated_at=now_iso,
                     active_shard=GROUPS_SHARD if waiting else None, due_at=due)
        if group.version is not None:
            item.version = group.version
        return tx_put(item, tag="group")

    def _send(self, items: list[TxItem], effect: dict | None) -> None:
        for attempt in range(SEND_ATTEMPTS):
            try:
                self._runs.writer.transact_write(items, effect=effect)
                return
            except TransactWriteError as error:
                if attempt + 1 < SEND_ATTEMPTS and _only_transaction_conflicts(error):
                    self._runs.pause(attempt)
                    continue
                if _is_condition_failure(error):
                    raise ConcurrentModification("the concurrency group or its runs changed "
                                                 "since they were read; retry") from None
                raise

    def _new_run_items(self, aggregate: RunAggregate, layout: dict | None) -> list[TxItem]:
        run = aggregate.run
        if len(aggregate.stages) > BIG_RUN_STAGES:
            raise ValidationFailed(
                f"a run of a concurrency group has at most {BIG_RUN_STAGES} stages (its creation is "
                f"one transaction with its group); this one has {len(aggregate.stages)}",
                details=[{"field": "stages", "message": f"at most {BIG_RUN_STAGES} in a group"}])
        run_version = (run.version or 0) + 1
        items = [tx_put(run_to_item(self._items.run, run, aggregate.stages), RunItem.pk.does_not_exist())]
        items += [tx_put(stage_to_item(self._items.stage, stage, run_version=run_version),
                         StageItem.pk.does_not_exist()) for stage in aggregate.stages]
        if layout is not None:
            items.append(tx_update(self._items.pipeline, pipeline_pk(run.pipeline), models.PIPELINE_SK,
                                   [PipelineItem.layout.set(_dump(layout))]))
        return items

    def insert_run(self, aggregate: RunAggregate, layout: dict | None, group: Group,
                   cancelled: tuple[RunAggregate, RunAggregate] | None = None,
                   link: tuple[str, str, str] | None = None) -> None:
        new_items = self._new_run_items(aggregate, layout)
        if link is not None:
            new_items.append(link_put(self._items.link, aggregate.run.id, *link))
        group_op = self._group_op(group, format_iso(aggregate.run.created_at))
        effect = {"run": aggregate.run.id}
        if cancelled is None:
            self._send([*new_items, group_op], effect)
        else:
            self._supersede(cancelled, new_items, group, group_op, effect)
        _bump_versions(aggregate.run, aggregate.stages)
        aggregate.run.seq = (aggregate.run.seq or 0) + 1
        _stored(aggregate.stages)

    def _supersede(self, cancelled: tuple[RunAggregate, RunAggregate], new_items: list[TxItem],
                   group: Group, group_op: TxItem, effect: dict) -> None:
        """The cancelled run's change (the holder superseded, or the waiting run a NEWEST queue
        replaces) and the new run in one transaction -- or, when their items do not fit in one
        (two runs of about 50 stages), the cancel first, conditioned on the group being as read,
        then the new run with the group. Never two active (or, NEWEST, two waiting) runs at once
        either way: between the two writes the group is held (or waited for) by a run that has
        ended, and a writer dying there leaves a group the next create takes (nothing to cancel;
        its claimed run number is a gap, as after any failed create)."""
        before, after = cancelled
        claim = 1 if self._runs.writer.carries_claim() else 0
        needed = len(new_items) + 1 + 1 + sum(1 + len(s.attempts) for s in after.stages) + claim
        try:
            if needed <= MAX_TRANSACTION_ITEMS:
                self._runs._save_run(before, after, [*new_items, group_op], effect=effect)
                return
            unchanged = tx_check(self._items.group, group_pk(group.pipeline), group_sk(group.name),
                                 GroupItem.version == group.version)
            self._runs._save_run(before, after, [unchanged], claim=False)
        except TransactWriteError as error:
            if _only_transaction_conflicts(error):
                raise ConcurrentModification("the concurrency group is busy; retry") from None
            raise
        self._send([*new_items, group_op], effect)

    def save_run(self, before: RunAggregate, after: RunAggregate, group: Group,
                 promoted: tuple[RunAggregate, RunAggregate] | None = None,
                 effect: dict | None = None, *, claim: bool = True) -> None:
        extra = [self._group_op(group, format_iso(after.run.updated_at))]
        if promoted is not None:
            extra += self._promotion(*promoted)
        try:
            self._runs._save_run(before, after, extra, effect=effect, claim=claim)
        except TransactWriteError as error:
            if _only_transaction_conflicts(error):
                raise ConcurrentModification(f"run {after.run.id!r} is busy; retry") from None
            raise
        if promoted is not None:
            self._promoted(promoted[1])

    def write(self, group: Group, promoted: tuple[RunAggregate, RunAggregate] | None = None,
              checked: Run | None = None, *, now: datetime) -> None:
        items = [self._group_op(group, format_iso(now))]
        if checked is not None:
            items.append(tx_check(self._items.run, models.run_pk(checked.id), models.RUN_SK,
                                  (RunItem.version == checked.version) & _seq_is(checked.seq)))
        if promoted is not None:
            items += self._promotion(*promoted)
        self._send(items, effect=None)
        if promoted is not None:
            self._promoted(promoted[1])

    def _promotion(self, before: RunAggregate, after: RunAggregate) -> list[TxItem]:
        """A queued run's promotion: its run item rewritten (no longer queued, status and index
        key re-derived) conditioned on the version and change counter read. Its stages are all
        IDLE and unchanged (the driver starts nothing at promotion), so only the run item is
        written: one item whatever the run's size."""
        run = after.run
        item = run_to_item(self._items.run, run, after.stages)
        condition = RunItem.intent_id.does_not_exist() & _seq_is(before.run.seq)
        return [tx_put(item, condition, tag="promoted")]

    @staticmethod
    def _promoted(after: RunAggregate) -> None:
        after.run.version = (after.run.version or 0) + 1
        after.run.seq = (after.run.seq or 0) + 1

    def due_groups(self, now_iso: str, limit: int = 100) -> list[tuple[str, str]]:
        connection = self._items.group._get_connection()
        page = connection.query(GROUPS_SHARD, GroupItem.due_at <= now_iso,
                                index_name=StageItem.active.Meta.index_name, limit=limit)
        found = []
        for raw in page.get("Items", []):
            pk, sk = raw["pk"]["S"], raw["sk"]["S"]
            found.append((pk[len("GROUP#"):], sk[len("GROUP#"):]))
        return found
