"""What people open every day: the pipelines, runs across pipelines, approvals waiting.

Reads only (no commands). ``reach`` is the pipelines the caller may see (``Principal.pipelines``;
None: every one): the store returns nothing of any other. Costs per page: store/finder.py.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..domain.clock import format_iso
from ..domain.model import Run
from ..domain.operations import Pipeline
from ..domain.schemas import ApprovalsQuery, PipelinesQuery, SearchRunsQuery
from . import ServiceContext
from .ports import RunFilter, WaitingStage


@dataclass(frozen=True)
class PipelineOverview:
    pipeline: Pipeline
    recent_runs: list[Run]


def list_pipelines(ctx: ServiceContext, reach: frozenset[str] | None,
                   query: PipelinesQuery) -> tuple[list[PipelineOverview], str | None]:
    """Most recently active first (the creation of its latest run), each with its ``runs``
    newest runs: 1 Query for the page, then 2 per pipeline on it (none with ``runs=0``)."""
    found, cursor = ctx.stores.finder.list_pipelines(reach, query.limit, query.cursor)
    return [PipelineOverview(p, ctx.stores.finder.recent_runs(p.name, query.runs)) for p in found], cursor


def search_runs(ctx: ServiceContext, reach: frozenset[str] | None,
                query: SearchRunsQuery) -> tuple[list[Run], str | None]:
    filters = RunFilter(
        pipeline=query.pipeline, status=query.status, branch=query.branch, actor=query.actor,
        commit=query.commit.lower() if query.commit else None, source=query.source,
        created_from=format_iso(query.created_from), created_to=format_iso(query.created_to),
    )
    return ctx.stores.finder.search_runs(filters, reach, query.limit, query.cursor)


def approvals(ctx: ServiceContext, reach: frozenset[str] | None, may_decide: bool,
              query: ApprovalsQuery) -> tuple[list[WaitingStage], str | None]:
    """Stages waiting for approval that the caller may decide, waiting longest first. A caller
    who may decide none (no operate scope) gets an empty list and costs no read."""
    if not may_decide:
        return [], None
    return ctx.stores.finder.waiting_approvals(reach, query.limit, query.cursor)
