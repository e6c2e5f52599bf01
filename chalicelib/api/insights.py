"""``GET /api/insights``: translation only (service/insights.py answers from the day aggregates).

A token limited to some pipelines names one of them in ``pipeline`` (another is 404, as every
route answers for an invisible pipeline) or omits it: then the figures are of all its pipelines
together (one Query each). An unlimited token without ``pipeline`` reads the every-pipeline
items (one Query). Definitions: docs/insights.md.
"""
from __future__ import annotations

from chalice import Blueprint
from pydantic import Field

from .. import wiring
from ..domain import auth
from ..domain.schemas import InsightsQuery
from ..service import insights
from .openapi import Out
from .parsing import parse_query
from .responses import json_response
from .routing import route
from .security import authenticated_principal

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
