"""Reads only the dialect endpoints need (GoCD, CodeArts, Buddy): one Query each.

- A pipeline by a dialect's id of it: the pipeline item carries ``#codearts:<job_id>`` and
  ``#buddy:<pipeline_id>`` in the attributes the byPipeline and byPipelineStatus indexes are
  keyed on (store/models.py), so one Query on the index finds it. Index reads are eventually
  consistent: a pipeline whose first run number was claimed a moment ago may not be found yet.
- Runs of a pipeline by a range of counters, newest first: GoCD's offset pagination. Offsets
  count run numbers, so a page is the key range [newest - offset - 9, newest - offset]: one
  Query, never a Scan, and pages never overlap even where runs were deleted. With their stage
  summaries: one more Query, on the stagesByPipeline index over the same range of counters
  (a run item no longer carries a copy of them, which every stage change would rewrite).
"""
from __future__ import annotations

from ..domain.errors import Conflict
from ..domain.model import Run
from ..domain.operations import Pipeline
from .models import STAGE_SLOTS, ItemModels, RunItem, StageItem
from .pipelines import pipeline_from_item
from .repository import run_from_item, summary_from_item


def _single(results, what: str) -> Pipeline | None:
    found = [pipeline_from_item(item) for item in results]
    if len(found) > 1:  # two names with the same id: refuse rather than guess
        names = ", ".join(sorted(p.name for p in found))
        raise Conflict(f"{what} is shared by pipelines {names}; address them by name")
    return found[0] if found else None


class DialectLookups:
    """The DynamoDB ``DialectLookups`` (service/ports.py) on the table of ``items``."""

    def __init__(self, items: ItemModels) -> None:
        self._pipeline = items.pipeline
        self._run = items.run
        self._stage = items.stage

    def pipeline_by_codearts_key(self, key: str) -> Pipeline | None:
        return _single(self._pipeline.by_codearts_job.query(key, limit=2), "this CodeArts job_id")

    def pipeline_by_buddy_key(self, key: str) -> Pipeline | None:
        return _single(self._pipeline.by_buddy_id.query(key, limit=2), "this Buddy pipeline_id")

    def runs_between(self, pipeline: str, low: int, high: int, *, with_stages: bool = False) -> list[Run]:
        """Runs numbered low..high (inclusive), newest first: one Query on byPipeline; with their
        stage summaries, one more on stagesByPipeline (a run stored in the previous layout
        carries its own)."""
        if high < 1 or high < low:
            return []
        results = self._run.by_pipeline.query(
            pipeline, RunItem.counter.between(max(low, 1), high), scan_index_forward=False,
        )
        runs = [run_from_item(item) for item in results]
        return with_summaries(self._stage, pipeline, runs) if with_stages else runs


def with_summaries(stage_model: type[StageItem], pipeline: str, runs: list[Run]) -> list[Run]:
    """``runs`` (of ``pipeline``) each with its stage summary: one Query on stagesByPipeline over
    their range of counters (none when every run carries its own: the previous layout)."""
    missing = [run for run in runs if run.stage_summary is None]
    if missing:
        summaries: dict[str, list[dict]] = {run.id: [] for run in missing}
        counters = [run.counter for run in missing]
        for item in stage_model.by_pipeline.query(pipeline, StageItem.listed_at.between(
                min(counters) * STAGE_SLOTS, max(counters) * STAGE_SLOTS + STAGE_SLOTS - 1)):
            if item.run_id in summaries:
                summaries[item.run_id].append(summary_from_item(item))
        for run in missing:
            run.stage_summary = sorted(summaries[run.id], key=lambda entry: entry["position"])
    return runs
