"""What people browse by (``Finder``, service/ports.py): pipelines, runs across pipelines, and the
stages waiting for approval. Each is a Query on an index of its own, never a Scan.

- pipelines, every one: pipelinesByActivity (hash ``PIPELINES``, range the creation of the latest
  run; name, paused and counter projected): 1 Query per page;
- pipelines of a limited token (at most 50): read by key, 1 BatchGetItem;
- a pipeline's newest runs: byPipeline, then stagesByPipeline for their stages: 2 Queries (none
  for ``runs=0``);
- approvals: approvalsWaiting (hash ``WAITING``, range waiting since + stage id; sparse: only
  waiting stages) 1 Query, then 1 BatchGetItem of the stages and their runs;
- runs by commit / branch / actor / source: runsByCommit / runsByBranch / runsByActor /
  runsBySource (hash the value, range ``created_key``): 1 Query + 1 BatchGetItem of the runs;
- runs of one pipeline (by status): byPipeline (byPipelineStatus), runs projected: 1 Query;
- runs with no filter, or by status: runsByTime (hash ``RUNS``, range ``created_key``; status
  projected): 1 Query + 1 BatchGetItem.

The search indexes hold keys and ``kind`` only (and the status on runsByTime); a search reads the
runs it keeps by key. ``createdFrom``/``createdTo`` are a key condition on ``created_key``
("<createdAt>#<run id>") on every index but byPipeline, where they filter what is read. The most
selective filter picks the index (commit, then pipeline, then branch, actor, source, time); the
others filter what it returns. A token limited to some pipelines gets only runs of those: the run
id (in the index key) names its pipeline, so other pipelines' runs are dropped before any run is
read; a token limited to one pipeline searches byPipeline. A page reads at most
``MAX_EXAMINED`` index entries: when filters drop most of them the page is short (even empty)
and carries a cursor to go on from. Cursors are signed for the very listing and filters.

Index reads are eventually consistent: a run created a moment ago may not be found yet, and a
stage just decided may still be listed as waiting (its read then drops it).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import cast

from pynamodb.expressions.condition import Condition

from ..domain import cursors, ids
from ..domain.clock import format_iso
from ..domain.errors import BadRequest
from ..domain.model import Run
from ..domain.operations import Pipeline
from ..domain.status import StageStatus
from ..service.ports import RunFilter, WaitingStage
from . import models
from .dialects import with_summaries
from .models import ItemModels, RunItem, RunsByPipeline, RunsByPipelineStatus, StageItem, pipeline_pk
from .pipelines import pipeline_from_item
from .repository import key_from_cursor_payload, run_from_item, stage_from_item

MAX_EXAMINED = 500  # index entries one page reads at most (then it ends short, with a cursor)
_FACETS = ("commit", "branch", "actor", "source")


def _key(item, *names: str) -> dict:
    """The index key of ``item`` as a LastEvaluatedKey (table key + the index's keys)."""
    key = {"pk": {"S": item.pk}, "sk": {"S": item.sk}}
    for name in names:
        value = getattr(item, name)
        key[name] = {"N": str(value)} if isinstance(value, (int, float)) else {"S": value}
    return key


def _run_id(pk: str) -> str:
    return pk.removeprefix("RUN#")


def _pipeline_of(run_id: str) -> str | None:
    parsed = ids.parse_run_id(run_id)
    return parsed[0] if parsed else None


class Finder:
    """The DynamoDB ``Finder`` on the table of ``items``."""

    def __init__(self, items: ItemModels, codec: cursors.CursorCodec) -> None:
        self.items = items
        self.cursors = codec

    def _start(self, scope: str, cursor: str | None, allowed: set[str]) -> dict | None:
        return key_from_cursor_payload(self.cursors.open(scope, cursor), allowed) if cursor else None

    # -- pipelines --------------------------------------------------------------------------

    def list_pipelines(self, reach: frozenset[str] | None, limit: int,
                       cursor: str | None) -> tuple[list[Pipeline], str | None]:
        if reach is not None:
            return self._pipelines_within(reach, limit, cursor)
        start = self._start("pipelines", cursor, {"pk", "sk", "pipe_feed", "last_activity"})
        results = self.items.pipeline.by_activity.query(
            models.PIPELINE_FEED, scan_index_forward=False, limit=limit, page_size=limit,
            last_evaluated_key=start)
        found = [pipeline_from_item(item) for item in results]
        return found, self.cursors.seal("pipelines", results.last_evaluated_key)

    def _pipelines_within(self, reach: frozenset[str], limit: int,
                          cursor: str | None) -> tuple[list[Pipeline], str | None]:
        """A limited token's pipelines (at most 50: auth.MAX_TOKEN_PIPELINES), read by key."""
        scope = "pipelines/within"
        after = None
        if cursor:
            after = self.cursors.open(scope, cursor).get("after")
            if not isinstance(after, str):
                raise BadRequest(cursors.INVALID)
        model = self.items.pipeline
        found = [pipeline_from_item(item) for item in model.batch_get(
            [(pipeline_pk(name), models.PIPELINE_SK) for name in sorted(reach)])
            if item.last_activity is not None]
        order = sorted(((f"{format_iso(item.last_activity)}#{item.name}", item) for item in found
                        if item.last_activity is not None), key=lambda pair: pair[0], reverse=True)
        if after is not None:
            order = [pair for pair in order if pair[0] < after]
        page = order[:limit]
        more = len(order) > limit
        return [item for _, item in page], self.cursors.seal(scope, {"after": page[-1][0]}) if more else None

    def recent_runs(self, pipeline: str, count: int) -> list[Run]:
        if count <= 0:
            return []
        results = self.items.run.by_pipeline.query(pipeline, scan_index_forward=False, limit=count,
                                                   page_size=count)
        return with_summaries(self.items.stage, pipeline, [run_from_item(item) for item in results])

    # -- approvals --------------------------------------------------------------------------

    def waiting_approvals(self, reach: frozenset[str] | None, limit: int,
                          cursor: str | None) -> tuple[list[WaitingStage], str | None]:
        scope = "approvals" if reach is None else "approvals/within"
        start = self._start(scope, cursor, {"pk", "sk", "approval_feed", "waiting_key"})
        results = self.items.stage.waiting.query(
            models.WAITING_FEED, scan_index_forward=True, last_evaluated_key=start,
            page_size=min(MAX_EXAMINED, max(limit, 25)))
        kept: list = []

        def reachable(item) -> bool:
            return reach is None or _pipeline_of(_run_id(item.pk)) in reach
        last, more = self._walk(results, reachable, limit, kept, [MAX_EXAMINED])
        stages: dict[tuple[str, str], StageItem] = {}
        runs: dict[str, RunItem] = {}
        keys = [(item.pk, item.sk) for item in kept] + [(pk, models.RUN_SK) for pk in {i.pk for i in kept}]
        for found in self.items.base.batch_get(keys):
            if isinstance(found, StageItem):
                stages[(found.pk, found.sk)] = found
            elif isinstance(found, RunItem):
                runs[found.pk] = found
        page = []
        for item in kept:
            stage, run = stages.get((item.pk, item.sk)), runs.get(item.pk)
            if stage is None or run is None or stage.status != StageStatus.WAITING_FOR_APPROVAL.value:
                continue  # decided (or deleted) since the index was read
            page.append(WaitingStage(stage_from_item(stage), run_from_item(run)))
        cursor_key = _key(last, "approval_feed", "waiting_key") if more and last is not None else None
        return page, self.cursors.seal(scope, cursor_key)

    @staticmethod
    def _walk(results: Iterable, keep: Callable[[object], bool], limit: int, kept: list,
              budget: list[int]) -> tuple[object, bool]:
        """Read index entries until ``limit`` are kept or the page's ``budget`` of entries read
        (one counter shared by every call for a page) is spent: (the last entry read, whether
        more may follow)."""
        last = None
        for item in results:
            last = item
            budget[0] -= 1
            if keep(item):
                kept.append(item)
            if len(kept) >= limit or budget[0] <= 0:
                return last, True
        return last, False

    # -- runs across pipelines ----------------------------------------------------------------

    def search_runs(self, filters: RunFilter, reach: frozenset[str] | None, limit: int,
                    cursor: str | None) -> tuple[list[Run], str | None]:
        pipeline = filters.pipeline
        if pipeline is None and filters.commit is None and reach is not None and len(reach) == 1:
            pipeline = next(iter(reach))  # a token limited to one pipeline: its own index
        if filters.commit is None and pipeline is not None:
            return self._search_pipeline(pipeline, filters, reach, limit, cursor)
        facet = next((name for name in _FACETS if getattr(filters, name) is not None), None)
        index, value, hash_name = {
            "commit": (self.items.run.by_commit, filters.commit, "commit_sha"),
            "branch": (self.items.run.by_branch, filters.branch, "branch"),
            "actor": (self.items.run.by_actor, filters.actor, "actor"),
            "source": (self.items.run.by_source, filters.source, "source"),
            None: (self.items.run.by_time, models.RUN_FEED, "run_feed"),
        }[facet]
        scope = f"{filters.scope()}/{facet or 'time'}/{'all' if reach is None else 'within'}"
        start = self._start(scope, cursor, {"pk", "sk", hash_name, "created_key"})
        low = filters.created_from or ""
        high = f"{filters.created_to}#~" if filters.created_to else None  # '~' sorts after any run id
        condition: Condition | None
        if filters.created_from and high:
            condition = RunItem.created_key.between(low, high)
        elif filters.created_from:
            condition = RunItem.created_key >= low
        elif high:
            condition = RunItem.created_key <= high
        else:
            condition = None
        results = index.query(value, condition, scan_index_forward=False, last_evaluated_key=start,
                              page_size=min(MAX_EXAMINED, max(2 * limit, 25)))

        def keep(item) -> bool:
            if reach is not None and _pipeline_of(_run_id(item.pk)) not in reach:
                return False
            return facet is not None or filters.status is None or item.status == filters.status.value

        page: list[Run] = []
        last = None
        more = True
        budget = [MAX_EXAMINED]
        while len(page) < limit and more and budget[0] > 0:
            kept: list = []
            last, more = self._walk(results, keep, limit - len(page), kept, budget)
            keys = [(item.pk, models.RUN_SK) for item in kept]
            read = {found.pk: found for found in self.items.run.batch_get(keys)}
            for item in kept:
                stored = read.get(item.pk)
                if stored is not None and filters.matches(run := run_from_item(stored)) \
                        and (reach is None or run.pipeline in reach):
                    page.append(run)
            if not kept:
                break
        cursor_key = _key(last, hash_name, "created_key") if more and last is not None else None
        return page, self.cursors.seal(scope, cursor_key)

    def _search_pipeline(self, pipeline: str, filters: RunFilter, reach: frozenset[str] | None,
                         limit: int, cursor: str | None) -> tuple[list[Run], str | None]:
        """One pipeline's runs (by status): byPipeline(Status), runs projected, newest first."""
        if reach is not None and pipeline not in reach:
            return [], None
        scope = f"{filters.scope()}/pipeline/{pipeline}"
        index: RunsByPipeline | RunsByPipelineStatus
        if filters.status is None:
            index, value, hash_name = self.items.run.by_pipeline, pipeline, "pipeline"
        else:
            index = self.items.run.by_pipeline_status
            value, hash_name = f"{pipeline}#{filters.status.value}", "pipeline_status"
        start = self._start(scope, cursor, {"pk", "sk", hash_name, "counter"})
        narrowed = any(getattr(filters, name) is not None
                       for name in ("branch", "actor", "source", "created_from", "created_to"))
        # every run read is kept unless other filters narrow it: read a page of exactly ``limit``
        results = index.query(value, scan_index_forward=False, last_evaluated_key=start,
                              page_size=min(MAX_EXAMINED, max(2 * limit, 25)) if narrowed else limit)
        kept: list = []
        last, more = self._walk(results, lambda item: filters.matches(run_from_item(cast(RunItem, item))),
                                limit, kept, [MAX_EXAMINED])
        cursor_key = _key(last, hash_name, "counter") if more and last is not None else None
        return [run_from_item(item) for item in kept], self.cursors.seal(scope, cursor_key)
