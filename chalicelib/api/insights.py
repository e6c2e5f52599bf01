"""``GET /api/insights``: translation only (service/insights.py answers from the day aggregates).

A token limited to some pipelines names one of them in ``pipeline`` (another is 404, as every
route answers for an invisible pipeline) or omits it: then the figures are of all its pipelines
together (one Query each). An unlimited token without ``pipeline`` reads the every-pipeline
items (one Query). Definitions: docs/insights.md.

``POST /api/insights/rebuild`` (admin, a token limited to no pipelines: it rewrites every
pipeline's aggregates) records a rebuild and starts it where it runs (wiring.rebuild_launcher):
202 with its record; 409 ``rebuild_running`` while one runs. ``GET /api/insights/rebuild``: the
latest one's record, its progress or its result (404 before the first).
"""
from __future__ import annotations

from chalice import Blueprint
from pydantic import Field

from .. import wiring
from ..domain import auth
from ..domain.clock import format_iso
from ..domain.rebuilds import RebuildRecord
from ..domain.schemas import InsightsQuery, StrictModel
from ..service import insights
from .openapi import Out, Timestamp
from .parsing import parse_body, parse_query
from .responses import json_response
from .routing import route
from .security import authenticated_principal, current_actor

routes = Blueprint(__name__)


class RunsOut(Out):
    total: int
    success: int
    failure: int
    cancelled: int
    timedOut: int


class DurationOut(Out):
    p50: float | None = Field(description="seconds, nearest rank, within 1 %")
    p90: float | None
    p95: float | None
    mean: float | None = Field(description="seconds, exact")


class PercentilesOut(Out):
    p50: float | None = Field(description="seconds, nearest rank, within 1 %")
    p95: float | None


class MedianOut(Out):
    p50: float | None = Field(description="seconds, nearest rank, within 1 %")


class StageInsightOut(Out):
    name: str
    runs: int = Field(description="finished attempts (skipped ones not counted)")
    successRate: float | None
    duration: PercentilesOut
    flakyRate: float | None = Field(description="successes after a failed attempt of the same run / runs")
    retries: int = Field(description="attempts after the first")


class SeriesPointOut(Out):
    start: str = Field(description="first day of the point (YYYY-MM-DD): the day, or its week's Monday")
    runs: int
    successRate: float | None
    p50: float | None
    p95: float | None


class DoraOut(Out):
    deploymentFrequency: float = Field(description="production deployments per day of the range")
    leadTimeSeconds: MedianOut
    changeFailureRate: float | None
    timeToRestoreSeconds: MedianOut


class InsightsOut(Out):
    from_: str = Field(alias="from", description="first day (YYYY-MM-DD, UTC)")
    to: str = Field(description="last day, included")
    granularity: str
    runs: RunsOut
    successRate: float | None = Field(description="success / (total - cancelled), null if none")
    duration: DurationOut
    queue: PercentilesOut
    mttrSeconds: float | None = Field(description="mean time from a failed run to the next success")
    stages: list[StageInsightOut]
    series: list[SeriesPointOut]
    dora: DoraOut


@route(routes, "/api/insights", methods=["GET"],
       acts_on=auth.acts_on(query={"pipeline": auth.PIPELINE}, optional=True), etag=True,
       query=InsightsQuery, response=InsightsOut,
       summary="Success rate, durations, queue, MTTR, stages, series and DORA figures (daily aggregates)")
def get_insights():
    ctx = wiring.context()
    query = parse_query(routes.current_request.query_params, InsightsQuery)
    found = insights.answer(ctx, authenticated_principal().pipelines, query)
    return json_response(found.body)


# ---- the rebuild (admin) -------------------------------------------------------------------------

class RebuildOut(Out):
    id: str
    status: str = Field(description="running, succeeded or failed")
    startedAt: Timestamp
    updatedAt: Timestamp = Field(description="its last progress; running with none for 20 minutes: "
                                             "taken for dead, a new rebuild may start")
    by: str | None = Field(description="who asked for it")
    finishedAt: Timestamp | None
    pipelinesRebuilt: int
    runsRead: int
    itemsWritten: int
    # not "error": every error answer of the API is {"error": {code, message}}, and this is a 2xx
    failure: str | None = Field(description="why it failed (its error's type and message)")


def rebuild_view(record: RebuildRecord) -> dict:
    return {"id": record.id, "status": record.status, "startedAt": format_iso(record.started_at),
            "updatedAt": format_iso(record.updated_at), "by": record.by,
            "finishedAt": format_iso(record.finished_at), "pipelinesRebuilt": record.pipelines,
            "runsRead": record.runs, "itemsWritten": record.items, "failure": record.error}


# It rewrites every pipeline's aggregates: an admin token limited to no pipelines only.
_EVERY_PIPELINE = auth.ACTS_ON_NO_SINGLE_PIPELINE


class RebuildIn(StrictModel):
    pass


@route(routes, "/api/insights/rebuild", methods=["POST"], scope="admin", acts_on=_EVERY_PIPELINE,
       body=RebuildIn, response=RebuildOut, status=202,
       summary="Rebuild the insights aggregates from the stored runs, in the background; 409 while one runs")
def start_rebuild():
    ctx = wiring.context()
    request = routes.current_request
    if request.raw_body:  # it takes no body; one sent must be the empty object
        parse_body(request, RebuildIn, ctx.settings.max_body_bytes)
    record = insights.start_rebuild(ctx, current_actor(), wiring.rebuild_launcher(ctx))
    return json_response(rebuild_view(record), 202, {"Location": "/api/insights/rebuild"})


@route(routes, "/api/insights/rebuild", methods=["GET"], scope="admin", acts_on=_EVERY_PIPELINE,
       response=RebuildOut, summary="The latest insights rebuild: its progress, or how it ended")
def get_rebuild():
    return json_response(rebuild_view(insights.rebuild_status(wiring.context())))
