"""Huawei CodeArts Build's "stop a build task" (POST /v3/jobs/stop), for CodeArts clients.

Translation only. ``X-Auth-Token`` carries a stagetrack token (any stagetrack credential works);
the body ``{"job_id", "build_no"}`` names a pipeline by its CodeArts job id (the MD5 of its name,
shown by the native pipeline status; domain/dialects.py) and a run by its number. Stopping is
the native stop: the run is cancelled where it stands, and stopping a finished build is a
successful no-op. Success is ``{"result": true}``; every error is CodeArts' shape
``{"error_code", "error_msg"}`` with a CB.000004xx/5xx code (dialects.CODEARTS_ERROR_CODES).
A body that fails validation is 400, as the CodeArts reference lists no 422.
"""
from __future__ import annotations

import re

from chalice import Blueprint, Response

from .. import wiring
from ..domain import dialects
from ..domain.auth import PipelineRef, resolved_by
from ..domain.errors import DomainError, ValidationFailed
from ..service import operations, pipelines
from . import current_actor, current_principal, json_body_fields, parse_body, route
from .openapi import RATE_HEADERS

codearts = Blueprint(__name__)

_JOB_ID = re.compile(dialects.JOB_ID_PATTERN)


def render_error(error: DomainError, status: int) -> Response:
    if isinstance(error, ValidationFailed):
        status = 400
    return Response(body=dialects.codearts_error(status, error.message), status_code=status,
                    headers={"Content-Type": "application/json"})


def _pipeline_of(request) -> list[PipelineRef] | None:
    """For tokens limited to some pipelines: the one whose job id the body names, decided by
    comparing ids (no read). A body without a well-formed job_id names none (403). Every
    job_id of a body that repeats the field is checked, whichever one the parser keeps."""
    fields = json_body_fields(request)
    job_ids = [value for name, value in fields or () if name == "job_id"]
    if not job_ids or not all(isinstance(j, str) and _JOB_ID.fullmatch(j) for j in job_ids):
        return None
    principal = current_principal()
    by_job = {dialects.codearts_job_id(name): name for name in sorted(principal.pipelines or ())}
    return [PipelineRef(by_job.get(job_id), f"build task {job_id!r} not found") for job_id in job_ids]


_ERROR_SCHEMA = {"type": "object", "required": ["error_code", "error_msg"],
                 "properties": {"error_code": {"type": "string"}, "error_msg": {"type": "string"}}}
_ERRORS = {400: "malformed JSON or a body that fails validation", 401: "missing or bad X-Auth-Token",
           403: "the token lacks the operate scope", 404: "unknown job_id or build_no",
           409: "concurrent change", 413: "body too large", 429: "rate limit exceeded",
           500: "internal error"}
OPENAPI = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["job_id", "build_no"], "additionalProperties": False,
        "properties": {"job_id": {"type": "string", "pattern": dialects.JOB_ID_PATTERN},
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


@route(codearts, "/v3/jobs/stop", methods=["POST"], dialect="codearts", render_error=render_error,
       acts_on=resolved_by(_pipeline_of), replay=_stopped, openapi=OPENAPI,
       summary="CodeArts: stop a build (a run)")
def stop_build():
    ctx = wiring.context()
    body = parse_body(codearts.current_request, dialects.CodeArtsStopIn, ctx.repo.settings.max_body_bytes)
    pipeline = pipelines.by_codearts_job(ctx, body.job_id)
    operations.stop_run(ctx, pipeline.name, body.build_no, actor=current_actor() or "anonymous")
    return _stopped()
