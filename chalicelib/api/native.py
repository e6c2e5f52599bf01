"""The native API: runs and stages (the reference "Stages" API plus runs)."""
from __future__ import annotations

from chalice import Blueprint, Response

from .. import wiring
from ..domain import auth
from ..domain.errors import BadRequest
from ..domain.schemas import AttemptsQuery, CreateRunIn, IncludeQuery, PatchStageIn, SearchRunsQuery
from ..domain.views import attempt_view, run_summary_view, run_view, stage_view
from ..service import browse, commands, concurrency, runs
from .parsing import parse_body, parse_query
from .responses import json_response
from .routing import route
from .security import authenticated_principal, current_actor, current_token_name

routes = Blueprint(__name__)

_RUN = auth.acts_on(path={"run_id": auth.RUN})
_STAGE = auth.acts_on(path={"stage_id": auth.STAGE})


def _request():
    return routes.current_request


def _max_body() -> int:
    return wiring.context().settings.max_body_bytes


def created_run(effect: dict, status: int = 201) -> Response:
    """The answer to a create (or schedule) whose response was lost after its run was written:
    the run as it is now, with its Location (api/idempotency.py)."""
    ctx = wiring.context()
    aggregate = runs.get_run(ctx, effect["run"])
    return json_response(run_view(aggregate, ctx.clock.now()), status,
                         {"Location": f"/api/runs/{aggregate.run.id}"})


@route(routes, "/api/runs", methods=["POST"], acts_on=auth.acts_on(body={"pipeline": auth.PIPELINE}),
       replay=created_run)
def create_run():
    ctx = wiring.context()
    body = parse_body(_request(), CreateRunIn, _max_body())
    aggregate = commands.execute(ctx, commands.CreateRun(body, creator=current_token_name()),
                                 actor=current_actor() or "anonymous")
    return json_response(run_view(aggregate, ctx.clock.now()), 201,
                         {"Location": f"/api/runs/{aggregate.run.id}"})


@route(routes, "/api/runs", methods=["GET"],
       acts_on=auth.acts_on(query={"pipeline": auth.PIPELINE}, optional=True), etag=True)
def list_runs():
    """Runs newest first, by any of the filters; without ``pipeline``, across every pipeline the
    token may see (service/browse.py; which index serves which filter: store/finder.py)."""
    ctx = wiring.context()
    query = parse_query(_request().query_params, SearchRunsQuery)
    items, cursor = browse.search_runs(ctx, authenticated_principal().pipelines, query)
    now = ctx.clock.now()
    return json_response({"items": [run_summary_view(r, now) for r in items], "nextCursor": cursor})


def _include_attempts() -> bool:
    return parse_query(_request().query_params, IncludeQuery).include == "attempts"


@route(routes, "/api/runs/{run_id}", methods=["GET"], acts_on=_RUN, etag=True)
def get_run(run_id):
    """The run and its stages (one Query); ``?include=attempts`` reads each retried stage's
    attempt history too (one Query per such stage). A QUEUED run also shows its place in its
    group's queue (``queue``, present only then: one GetItem of the group)."""
    ctx = wiring.context()
    include = _include_attempts()
    aggregate = runs.get_run(ctx, run_id)
    attempts = runs.attempts_of_run(ctx, aggregate) if include else None
    body = run_view(aggregate, ctx.clock.now(), attempts)
    place = concurrency.queue_place_of(ctx, aggregate.run)
    if place is not None:  # only while it waits: every other answer with a run stays as it was
        body["queue"] = place
    return json_response(body)


@route(routes, "/api/runs/{run_id}", methods=["DELETE"], acts_on=_RUN)
def delete_run(run_id):
    ctx = wiring.context()
    return json_response(run_view(runs.delete_run(ctx, run_id), ctx.clock.now()))


@route(routes, "/api/stages", methods=["GET"], acts_on=auth.acts_on(query={"runId": auth.RUN}))
def list_stages():
    ctx = wiring.context()
    params = dict(_request().query_params or {})
    run_id = params.get("runId")
    if not run_id:
        raise BadRequest("query parameter runId is required", details=[{"field": "runId"}])
    aggregate = runs.get_run(ctx, run_id)
    now = ctx.clock.now()
    return json_response([stage_view(stage, now) for stage in aggregate.stages])


@route(routes, "/api/stages/{stage_id}", methods=["GET"], acts_on=_STAGE)
def get_stage(stage_id):
    ctx = wiring.context()
    include = _include_attempts()
    stage = runs.get_stage(ctx, stage_id)
    attempts = runs.attempts_of_stages(ctx, [stage])[stage.id] if include else None
    return json_response(stage_view(stage, ctx.clock.now(), attempts))


@route(routes, "/api/stages/{stage_id}/attempts", methods=["GET"], acts_on=_STAGE)
def list_attempts(stage_id):
    """The stage's ended attempts, newest first, paged with a signed cursor."""
    ctx = wiring.context()
    query = parse_query(_request().query_params, AttemptsQuery)
    items, cursor = runs.stage_attempts(ctx, stage_id, query.limit, query.cursor)
    return json_response({"items": [attempt_view(entry) for entry in items], "nextCursor": cursor})


@route(routes, "/api/stages/{stage_id}", methods=["PATCH"], acts_on=_STAGE)
def patch_stage(stage_id):
    ctx = wiring.context()
    patch = parse_body(_request(), PatchStageIn, _max_body())
    stage = commands.execute(ctx, commands.PatchStage(stage_id, patch), actor=current_actor() or "anonymous")
    return json_response(stage_view(stage, ctx.clock.now()))


@route(routes, "/api/stages/{stage_id}", methods=["DELETE"], acts_on=_STAGE)
def delete_stage(stage_id):
    ctx = wiring.context()
    return json_response(stage_view(runs.delete_stage(ctx, stage_id), ctx.clock.now()))
