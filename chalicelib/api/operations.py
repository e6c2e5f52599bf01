"""Operations on the native API: cancel, stop, retry, approve/reject, variables, pipelines.

Translation only: parse the body, name the caller, run the command (service/commands.py),
answer with the run, stage or pipeline view. Every POST here also accepts
an Idempotency-Key (handled once, in ``route``).
"""
from __future__ import annotations

from chalice import Blueprint, Response

from .. import wiring
from ..domain import auth
from ..domain import operations as rules
from ..domain.operations import VariableChange
from ..domain.schemas import (
    ApplyVariablesIn,
    CancelIn,
    CancelRunIn,
    ConcurrencyIn,
    DecisionIn,
    EmptyIn,
    PauseIn,
    RetryRunIn,
    ScheduleIn,
    StopIn,
)
from ..domain.views import pipeline_status_view, run_view, stage_view
from ..service import commands, pipelines, runs
from .idempotency import actor
from .native import created_run
from .parsing import parse_body
from .responses import json_response
from .routing import route
from .security import current_token_name

routes = Blueprint(__name__)

_RUN = auth.acts_on(path={"run_id": auth.RUN})
_STAGE = auth.acts_on(path={"stage_id": auth.STAGE})
_PIPELINE = auth.acts_on(path={"pipeline": auth.PIPELINE})


def _request():
    return routes.current_request


def _actor() -> str:
    return actor(_request())


def _optional_body(model):
    """These bodies are all optional: no body (or only whitespace) means every default."""
    request = _request()
    if not (request.raw_body or b"").strip():
        return model()
    return parse_body(request, model, wiring.context().settings.max_body_bytes)


def _execute(command: commands.Command[commands.R]) -> commands.R:
    return commands.execute(wiring.context(), command, actor=_actor())


def _run(aggregate) -> dict:
    return run_view(aggregate, wiring.context().clock.now())


def _stage(stage) -> dict:
    return stage_view(stage, wiring.context().clock.now())


# answers to a repeated Idempotency-Key whose first request wrote its change but died before its
# response was stored (api/idempotency.py): the run, stage or pipeline as it is now

def _run_now(effect: dict, **_path) -> Response:
    return json_response(_run(runs.get_run(wiring.context(), effect["run"])))


def _stage_now(effect: dict, stage_id: str) -> Response:
    return json_response(_stage(runs.get_stage(wiring.context(), stage_id)))


def _pipeline_now(effect: dict, pipeline: str) -> Response:
    return json_response(pipeline_status_view(pipelines.status(wiring.context(), pipeline)))


def _scheduled_run(effect: dict, pipeline: str) -> Response:
    return created_run(effect, 202)


# ---- cancel / stop ---------------------------------------------------------------------------

@route(routes, "/api/runs/{run_id}/cancel", methods=["POST"], acts_on=_RUN, replay=_run_now)
def cancel_run(run_id):
    body = _optional_body(CancelRunIn)
    return json_response(_run(_execute(commands.CancelRun(run_id, body.reason, body.force))))


@route(routes, "/api/stages/{stage_id}/cancel", methods=["POST"], acts_on=_STAGE, replay=_stage_now)
def cancel_stage(stage_id):
    body = _optional_body(CancelIn)
    return json_response(_stage(_execute(commands.CancelStage(stage_id, body.reason))))


@route(routes, "/api/pipelines/{pipeline}/runs/{counter}/stop", methods=["POST"], acts_on=_PIPELINE,
       replay=_run_now)
def stop_run(pipeline, counter):
    body = _optional_body(StopIn)
    return json_response(_run(_execute(commands.StopRun(pipeline, counter, body.reason, body.grace_seconds))))


# ---- retry -----------------------------------------------------------------------------------

@route(routes, "/api/runs/{run_id}/retry", methods=["POST"], acts_on=_RUN, replay=_run_now)
def retry_run(run_id):
    body = _optional_body(RetryRunIn)
    return json_response(_run(_execute(commands.RetryRun(run_id, body.scope))))


@route(routes, "/api/stages/{stage_id}/retry", methods=["POST"], acts_on=_STAGE, replay=_stage_now)
def retry_stage(stage_id):
    _optional_body(EmptyIn)
    return json_response(_stage(_execute(commands.RetryStage(stage_id))))


# ---- approval gates --------------------------------------------------------------------------

@route(routes, "/api/stages/{stage_id}/approve", methods=["POST"], acts_on=_STAGE, replay=_stage_now)
def approve_stage(stage_id):
    body = _optional_body(DecisionIn)
    return json_response(_stage(_execute(commands.DecideStage(stage_id, rules.APPROVED, body.comment,
                                                                   approver=current_token_name()))))


@route(routes, "/api/stages/{stage_id}/reject", methods=["POST"], acts_on=_STAGE, replay=_stage_now)
def reject_stage(stage_id):
    body = _optional_body(DecisionIn)
    return json_response(_stage(_execute(commands.DecideStage(stage_id, rules.REJECTED, body.comment,
                                                                   approver=current_token_name()))))


# ---- variables -------------------------------------------------------------------------------

@route(routes, "/api/runs/{run_id}/variables", methods=["PUT"], acts_on=_RUN)
def apply_variables(run_id):
    ctx = wiring.context()
    body = parse_body(_request(), ApplyVariablesIn, ctx.settings.max_body_bytes)
    changes = tuple(VariableChange(key=v.key, value=v.value, secret=v.secret) for v in body.variables)
    return json_response(_run(_execute(commands.ApplyVariables(run_id, changes))))


# ---- pipelines -------------------------------------------------------------------------------

@route(routes, "/api/pipelines/{pipeline}/status", methods=["GET"], acts_on=_PIPELINE)
def pipeline_status(pipeline):
    return json_response(pipeline_status_view(pipelines.status(wiring.context(), pipeline)))


@route(routes, "/api/pipelines/{pipeline}/pause", methods=["POST"], acts_on=_PIPELINE, replay=_pipeline_now)
def pause_pipeline(pipeline):
    body = _optional_body(PauseIn)
    return json_response(pipeline_status_view(_execute(commands.PausePipeline(pipeline, body.cause))))


@route(routes, "/api/pipelines/{pipeline}/unpause", methods=["POST"], acts_on=_PIPELINE, replay=_pipeline_now)
def unpause_pipeline(pipeline):
    _optional_body(EmptyIn)
    return json_response(pipeline_status_view(_execute(commands.UnpausePipeline(pipeline))))


@route(routes, "/api/pipelines/{pipeline}/concurrency", methods=["PUT"], acts_on=_PIPELINE,
       replay=_pipeline_now)
def set_concurrency(pipeline):
    """The pipeline's concurrency mode and default group (docs/operations.md#concurrency-groups)."""
    body = parse_body(_request(), ConcurrencyIn, wiring.context().settings.max_body_bytes)
    return json_response(pipeline_status_view(_execute(commands.SetConcurrency(pipeline, body))))


@route(routes, "/api/pipelines/{pipeline}/schedule", methods=["POST"], acts_on=_PIPELINE,
       replay=_scheduled_run)
def schedule_pipeline(pipeline):
    body = _optional_body(ScheduleIn)
    aggregate = _execute(commands.SchedulePipeline(pipeline, variables=body.variables,
                                                           creator=current_token_name()))
    return json_response(_run(aggregate), 202, {"Location": f"/api/runs/{aggregate.run.id}"})
