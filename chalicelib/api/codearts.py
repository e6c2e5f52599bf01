"""Huawei CodeArts Build's "stop a build task", for CodeArts clients, in its three forms:
``POST /v3/jobs/stop`` with ``{"job_id", "build_no"}`` (answers ``{"result": true}``),
``POST /v1/job/{job_id}/stop?build_no=N`` (``{"status": "success"}``) and
``POST /v3/jobs/{job_id}/{build_no}/stop`` (``{"success": true, "result": ""}``); the last two
are what the official SDK (huaweicloudsdkcodeartsbuild) calls.

Translation only. ``X-Auth-Token`` carries a stagetrack token, or the SDK signs the request
with an access key pair (``SDK-HMAC-SHA256``, api/aksk.py); any stagetrack credential works.
``job_id`` names a pipeline by its CodeArts job id (the MD5 of its name, shown by the native
pipeline status; domain/dialect_ids.py) and ``build_no`` a run by its number. Stopping is the
native stop: the run is cancelled where it stands, and stopping a finished build is a
successful no-op. Every error is CodeArts' shape ``{"error_code", "error_msg"}`` with a
CB.000004xx/5xx code (codearts_wire.CODEARTS_ERROR_CODES). A request that fails validation is 400,
as the CodeArts reference lists no 422.
"""
from __future__ import annotations

import re

from chalice import Blueprint, Response

from .. import wiring
from ..domain.auth import PipelineRef, resolved_by
from ..domain.dialect_ids import codearts_job_id
from ..domain.errors import DomainError, ValidationFailed
from ..service import commands, pipelines
from . import codearts_wire
from .openapi import RATE_HEADERS
from .parsing import json_body_fields, parse_body
from .routing import route
from .security import authenticated_principal, current_actor

routes = Blueprint(__name__)

_JOB_ID = re.compile(codearts_wire.JOB_ID_PATTERN)


def render_error(error: DomainError, status: int) -> Response:
    if isinstance(error, ValidationFailed):
        status = 400
    return Response(body=codearts_wire.codearts_error(status, error.message), status_code=status,
                    headers={"Content-Type": "application/json"})


def _pipeline_of(request) -> list[PipelineRef] | None:
    """For tokens limited to some pipelines: the one whose job id the body names, decided by
    comparing ids (no read). A body without a well-formed job_id names none (403). Every
    job_id of a body that repeats the field is checked, whichever one the parser keeps."""
    fields = json_body_fields(request)
    return _job_refs([value for name, value in fields or () if name == "job_id"])


def _pipeline_of_path(request) -> list[PipelineRef] | None:
    """As ``_pipeline_of``, for the routes that carry the job id in their path."""
    return _job_refs([(request.uri_params or {}).get("job_id")])


def _job_refs(job_ids: list[object]) -> list[PipelineRef] | None:
    well_formed = [j for j in job_ids if isinstance(j, str) and _JOB_ID.fullmatch(j)]
    if not job_ids or len(well_formed) != len(job_ids):
        return None
    principal = authenticated_principal()
    by_job = {codearts_job_id(name): name for name in sorted(principal.pipelines or ())}
    return [PipelineRef(by_job.get(job_id), f"build task {job_id!r} not found") for job_id in well_formed]


_ERROR_SCHEMA = {"type": "object", "required": ["error_code", "error_msg"],
                 "properties": {"error_code": {"type": "string"}, "error_msg": {"type": "string"}}}
_ERRORS = {400: "malformed JSON or a body that fails validation", 401: "missing or bad X-Auth-Token",
           403: "the token lacks the operate scope", 404: "unknown job_id or build_no",
           409: "concurrent change", 413: "body too large", 429: "rate limit exceeded",
           500: "internal error"}
OPENAPI = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["job_id", "build_no"], "additionalProperties": False,
        "properties": {"job_id": {"type": "string", "pattern": codearts_wire.JOB_ID_PATTERN},
                       "build_no": {"type": "string", "pattern": r"^[1-9][0-9]{0,11}$"}}}}}},
    "responses": {
        "200": {"description": "stopped (also: the build had already finished)", "headers": RATE_HEADERS,
                "content": {"application/json": {"schema": {
                    "type": "object", "required": ["result"],
                    "properties": {"result": {"type": "boolean"}}}}}},
        **{str(code): {"description": text, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
           for code, text in _ERRORS.items()},
    },
}


def _stopped(effect: dict | None = None) -> Response:
    """Also the answer to a repeated Idempotency-Key whose stop was written but whose response
    was lost: CodeArts answers a stop with this constant."""
    return Response(body={"result": True}, status_code=200, headers={"Content-Type": "application/json"})


@route(routes, "/v3/jobs/stop", methods=["POST"], dialect="codearts", render_error=render_error,
       acts_on=resolved_by(_pipeline_of), replay=_stopped, openapi=OPENAPI,
       summary="CodeArts: stop a build (a run)")
def stop_build():
    ctx = wiring.context()
    body = parse_body(routes.current_request, codearts_wire.CodeArtsStopIn, ctx.settings.max_body_bytes)
    _stop_build(ctx, body.job_id, body.build_no)
    return _stopped()


_BUILD_NO = re.compile(r"^[1-9][0-9]{0,11}$")


def _stop(job_id: str, build_no: str) -> None:
    """The stop all three forms share, once their job_id and build_no are read."""
    if not _JOB_ID.fullmatch(job_id):
        raise ValidationFailed(f"job_id must be 32 letters and digits, not {job_id!r}")
    if not _BUILD_NO.fullmatch(build_no):
        raise ValidationFailed(f"build_no must be a build number (1, 2, ...), not {build_no!r}")
    _stop_build(wiring.context(), job_id, build_no)


def _stop_build(ctx, job_id: str, build_no: str) -> None:
    pipeline = pipelines.by_codearts_job(ctx, job_id)
    commands.execute(ctx, commands.StopRun(pipeline.name, build_no), actor=current_actor() or "anonymous")


def _v1_build_no(request) -> str:
    """The SDK sends build_no in the query; the v1 reference puts ``{"build_no": N}`` in the
    body. Either is read; both must then agree."""
    values = request.query_params.getlist("build_no") if request.query_params else []
    if len(values) > 1:
        raise ValidationFailed("send build_no once")
    from_query = values[0] if values else None
    from_body = None
    if request.raw_body:
        body = parse_body(request, codearts_wire.CodeArtsStopV1In, wiring.context().settings.max_body_bytes)
        from_body = None if body.build_no is None else str(body.build_no)
    if from_query is not None and from_body is not None and from_query != from_body:
        raise ValidationFailed("build_no in the query and in the body disagree")
    build_no = from_query if from_query is not None else from_body
    if build_no is None:
        raise ValidationFailed("build_no is required (query parameter build_no)")
    return build_no


_PATH_PARAMS = {
    "job_id": {"name": "job_id", "in": "path", "required": True,
               "schema": {"type": "string", "pattern": codearts_wire.JOB_ID_PATTERN}},
    "build_no": {"name": "build_no", "in": "path", "required": True,
                 "schema": {"type": "string", "pattern": _BUILD_NO.pattern}},
}
_PATH_RESPONSES = {
    str(code): {"description": text, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
    for code, text in _ERRORS.items()
}
OPENAPI_V1 = {
    "parameters": [_PATH_PARAMS["job_id"],
                   {"name": "build_no", "in": "query", "required": False,
                    "description": "the build number; or {\"build_no\": N} in the body",
                    "schema": {"type": "string", "pattern": _BUILD_NO.pattern}}],
    "requestBody": {"required": False, "content": {"application/json": {"schema": {
        "type": "object", "additionalProperties": False,
        "properties": {"build_no": {"type": "integer", "minimum": 1, "maximum": 999999999999}}}}}},
    "responses": {
        "200": {"description": "stopped (also: the build had already finished)", "headers": RATE_HEADERS,
                "content": {"application/json": {"schema": {
                    "type": "object", "required": ["status"],
                    "properties": {"status": {"type": "string", "enum": ["success"]}}}}}},
        **_PATH_RESPONSES,
    },
}
OPENAPI_V3_PATH = {
    "parameters": [_PATH_PARAMS["job_id"], _PATH_PARAMS["build_no"]],
    "requestBody": {"required": False, "content": {"application/json": {"schema": {
        "type": "object", "maxProperties": 0}}}},
    "responses": {
        "200": {"description": "stopped (also: the build had already finished)", "headers": RATE_HEADERS,
                "content": {"application/json": {"schema": {
                    "type": "object", "required": ["success", "result"],
                    "properties": {"success": {"type": "boolean"}, "result": {"type": "string"}}}}}},
        **_PATH_RESPONSES,
    },
}


@route(routes, "/v1/job/{job_id}/stop", methods=["POST"], dialect="codearts", render_error=render_error,
       acts_on=resolved_by(_pipeline_of_path), replay=lambda effect, **_: _stopped_v1(), openapi=OPENAPI_V1,
       summary="CodeArts (v1): stop a build (a run)")
def stop_build_v1(job_id):
    _stop(job_id, _v1_build_no(routes.current_request))
    return _stopped_v1()


def _stopped_v1() -> Response:
    return Response(body={"status": "success"}, status_code=200, headers={"Content-Type": "application/json"})


@route(routes, "/v3/jobs/{job_id}/{build_no}/stop", methods=["POST"], dialect="codearts",
       render_error=render_error, acts_on=resolved_by(_pipeline_of_path),
       replay=lambda effect, **_: _stopped_in_path(), openapi=OPENAPI_V3_PATH,
       summary="CodeArts: stop a build (a run) named in the path")
def stop_build_in_path(job_id, build_no):
    request = routes.current_request
    if request.raw_body:  # the SDK sends none; anything sent must at least be an empty object
        parse_body(request, codearts_wire.CodeArtsEmptyIn, wiring.context().settings.max_body_bytes)
    _stop(job_id, build_no)
    return _stopped_in_path()


def _stopped_in_path() -> Response:
    return Response(body={"success": True, "result": ""}, status_code=200,
                    headers={"Content-Type": "application/json"})
