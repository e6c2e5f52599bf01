"""Pipeline items: run counter, pause state and the stage layout of the latest run.

Round trips: status 1 GetItem; pause/unpause 1 conditional UpdateItem (plus 1 GetItem only when
refused, to say why; with an Idempotency-Key: 1 TransactWrite carrying the key's commit, then
1 GetItem for the answer); claiming the next run number 1 UpdateItem that also returns the stored
layout, so ``schedule`` needs no extra read.
"""
from __future__ import annotations

import json

from pynamodb.exceptions import TransactWriteError, UpdateError

from ..domain import dialect_ids
from ..domain.clock import format_iso, parse_iso
from ..domain.errors import ConcurrentModification, Conflict, NotFound, PipelinePaused
from ..domain.operations import Pipeline
from ..service.ports import Claimed
from . import models
from .models import ItemModels, PipelineItem, pipeline_pk
from .repository import Writer, _is_condition_failure, _only_transaction_conflicts

# A plain UpdateItem that meets a transaction in flight on the same item is refused with
# TransactionConflictException (botocore does not retry it); the update is safe to repeat.
CONFLICT_RETRIES = 3


def pipeline_from_item(item: PipelineItem) -> Pipeline:
    return Pipeline(
        name=item.name, paused=bool(item.paused), pause_cause=item.pause_cause,
        paused_by=item.paused_by, paused_at=parse_iso(item.paused_at),
        layout=None if item.layout is None else json.loads(item.layout),
        counter=int(item.counter or 0), last_activity=parse_iso(item.last_activity),
        concurrency=None if item.concurrency is None else json.loads(item.concurrency),
    )


def _not_paused():
    return PipelineItem.paused.does_not_exist() | (PipelineItem.paused == False)  # noqa: E712


def _is_transaction_conflict(error: Exception) -> bool:
    return getattr(error, "cause_response_code", None) == "TransactionConflictException"


class PipelineStore:
    """The DynamoDB ``PipelineStore`` (service/ports.py) on the table of ``items``."""

    def __init__(self, items: ItemModels, writer: Writer) -> None:
        self._model = items.pipeline
        self._writer = writer

    def get(self, pipeline: str) -> Pipeline | None:
        try:
            item = self._model.get(pipeline_pk(pipeline), models.PIPELINE_SK, consistent_read=True)
        except self._model.DoesNotExist:
            return None
        return pipeline_from_item(item)

    def _key(self, pipeline: str) -> PipelineItem:
        return self._model(pk=pipeline_pk(pipeline), sk=models.PIPELINE_SK)

    def _update(self, item: PipelineItem, actions: list, condition, effect: dict | None = None) -> bool:
        """True when ``item`` now holds the updated attributes. With ``effect``, the update is
        the request's effect and carries its Idempotency-Key claim if it holds one (then it is
        a transaction, which returns nothing: False). A counter claim never carries it: a
        number claimed by a request that then died is a gap, not a second run."""
        for _attempt in range(CONFLICT_RETRIES):
            try:
                if effect is None:
                    item.update(actions=actions, condition=condition)
                    return True
                return self._writer.update_item(item, actions, condition, effect)
            except UpdateError as error:
                if not _is_transaction_conflict(error):
                    raise
            except TransactWriteError as error:
                if not _only_transaction_conflicts(error):
                    raise
        raise ConcurrentModification(f"pipeline {item.name or item.pk!r} is busy; retry")

    def claim_counter(self, pipeline: str, *, require_layout: bool = False,
                      at=None) -> tuple[int, dict | None]:
        """The next run number and the stored layout (``claim``)."""
        claimed = self.claim(pipeline, require_layout=require_layout, at=at)
        return claimed.counter, claimed.layout

    def claim(self, pipeline: str, *, require_layout: bool = False, at=None) -> Claimed:
        """The next run number (one atomic ADD, refused while paused), the stored layout and the
        concurrency setting (the same UpdateItem returns them: no extra read).

        With ``require_layout`` the pipeline must already have run: a pipeline without a layout
        is left untouched (no item created, no number used) and reported as unknown.
        """
        item = self._key(pipeline)
        condition = _not_paused()
        if require_layout:
            condition = condition & PipelineItem.layout.exists()
        actions = [
            PipelineItem.counter.add(1),
            PipelineItem.name.set(pipeline),
            self._model.kind.set(self._model),
            # the dialects' ids of this pipeline (store/dialects.py): set with every number
            # claimed, so a pipeline has them from its first run on, at no extra round trip
            PipelineItem.codearts_key.set(dialect_ids.codearts_key(pipeline)),
            PipelineItem.buddy_key.set(dialect_ids.buddy_key(pipeline)),
        ]
        if at is not None:  # its place in pipelinesByActivity (GET /api/pipelines), same write
            actions += [PipelineItem.pipe_feed.set(models.PIPELINE_FEED),
                        PipelineItem.last_activity.set(format_iso(at))]
        try:
            self._update(item, actions, condition)
        except UpdateError as error:
            if not _is_condition_failure(error):
                raise
            if require_layout:
                current = self.get(pipeline)
                if current is None or current.layout is None:
                    raise NotFound(f"pipeline {pipeline!r} has never run; nothing to schedule from") from None
            raise PipelinePaused(f"pipeline {pipeline!r} is paused; it accepts no new runs") from None
        return Claimed(int(item.counter), None if item.layout is None else json.loads(item.layout),
                       None if item.concurrency is None else json.loads(item.concurrency))

    def set_concurrency(self, pipeline: str, setting: dict) -> Pipeline:
        """Store the pipeline's concurrency setting: one conditional UpdateItem (the pipeline
        must exist: 404), carrying an Idempotency-Key's commit when one is held."""
        item = self._key(pipeline)
        actions = [PipelineItem.concurrency.set(json.dumps(setting, separators=(",", ":")))]
        try:
            updated = self._update(item, actions, PipelineItem.pk.exists(), effect={"pipeline": pipeline})
        except (UpdateError, TransactWriteError) as error:
            if not _is_condition_failure(error):
                raise
            raise NotFound(f"pipeline {pipeline!r} not found") from None
        if updated:
            return pipeline_from_item(item)
        current = self.get(pipeline)
        if current is None:
            raise NotFound(f"pipeline {pipeline!r} not found")
        return current

    def set_paused(self, pipeline: str, paused: bool, *, cause: str | None = None,
                   by: str | None = None, at=None) -> Pipeline:
        """Pause (with cause, who and when) or unpause; refused when already in that state (409,
        as GoCD) or when the pipeline is unknown (404). Pausing does not touch running runs."""
        item = self._key(pipeline)
        if paused:
            condition = PipelineItem.pk.exists() & _not_paused()
            actions = [PipelineItem.paused.set(True), PipelineItem.paused_at.set(format_iso(at))]
            actions.append(PipelineItem.paused_by.set(by) if by else PipelineItem.paused_by.remove())
            actions.append(
                PipelineItem.pause_cause.set(cause) if cause else PipelineItem.pause_cause.remove()
            )
        else:
            condition = PipelineItem.pk.exists() & (PipelineItem.paused == True)  # noqa: E712
            actions = [PipelineItem.paused.set(False), PipelineItem.paused_at.remove(),
                       PipelineItem.paused_by.remove(), PipelineItem.pause_cause.remove()]
        try:
            updated = self._update(item, actions, condition, effect={"pipeline": pipeline})
        except (UpdateError, TransactWriteError) as error:
            if not _is_condition_failure(error):
                raise
            if self.get(pipeline) is None:
                raise NotFound(f"pipeline {pipeline!r} not found") from None
            state = "already paused" if paused else "not paused"
            raise Conflict(f"pipeline {pipeline!r} is {state}") from None
        if updated:
            return pipeline_from_item(item)
        current = self.get(pipeline)
        if current is None:  # deleted right after this change
            raise NotFound(f"pipeline {pipeline!r} not found")
        return current
