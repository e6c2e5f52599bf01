"""Buddy.works' "Cancel, Retry or Approve" an execution, for Buddy clients: translation only.

``PATCH /workspaces/{domain}/projects/{project_name}/pipelines/{pipeline_id}/executions/{execution_id}``
with ``{"operation": "RETRY" | "CANCEL" | "APPLY" | "APPLY_VARIABLES", "variables": [...]}``:
- ``pipeline_id`` is the pipeline's Buddy id (52 bits of SHA-256 of its name, shown by the
  native pipeline status; domain/dialect_ids.py), ``execution_id`` its run number. ``domain`` and
  ``project_name`` are Buddy's workspace and project: stagetrack has neither, so any value is
  taken and echoed back in the answer's URLs.
- RETRY is the native retry of the failed stages, CANCEL the native run cancel, APPLY the
  native approve of the stage waiting for approval, APPLY_VARIABLES the native variables
  merge (``encrypted`` variables are kept like native secret ones, as a keyed hash only). Each
  variable may be Buddy's whole Variable object (``type``, ``settable``, ``description``, ...):
  only ``key``, ``value`` and ``encrypted`` are used. ``comment`` is the approval's comment with
  APPLY and the cancellation's reason with CANCEL.
- The answer is Buddy's execution object (buddy_wire.buddy_execution), 200.
- Credentials: ``Authorization: Bearer <token>`` (any stagetrack credential works). Buddy's
  required scopes WORKSPACE and EXECUTION_RUN are stagetrack's operate scope: a read-only
  token gets 403. Every answer carries ``X-Rate-Limit-Limit``/``X-Rate-Limit-Remaining`` for
  the token (added by the route helper).
- Errors are Buddy's shape ``{"errors": [{"message": ...}]}``; a body that fails validation
  (e.g. APPLY_VARIABLES without ``variables``) is 400, as Buddy answers.
"""
from __future__ import annotations

from urllib.parse import quote

from chalice import Blueprint, Response

from .. import wiring
from ..domain.auth import PipelineRef, resolved_by
from ..domain.dialect_ids import buddy_pipeline_id
from ..domain.errors import DomainError, NotFound, ValidationFailed
from ..domain.model import RunAggregate
from ..domain.operations import SCOPE_FAILED, VariableChange
from ..service import commands, operations, pipelines
from . import buddy_wire
from .openapi import RATE_HEADERS
from .parsing import base_url, parse_body
from .routing import route
from .security import authenticated_principal, current_actor, current_token_name

routes = Blueprint(__name__)

PATH = "/workspaces/{domain}/projects/{project_name}/pipelines/{pipeline_id}/executions/{execution_id}"


def render_error(error: DomainError, status: int) -> Response:
    if isinstance(error, ValidationFailed):
        status = 400
    return Response(body=buddy_wire.buddy_error(error.message), status_code=status,
                    headers={"Content-Type": "application/json"})


def _pipeline_of(request) -> PipelineRef | None:
    """For tokens limited to some pipelines: the one whose Buddy id the path names, decided by
    comparing ids (no read). A path whose pipeline_id is not a Buddy id names none (403)."""
    pipeline_id = buddy_wire.parse_buddy_id((request.uri_params or {}).get("pipeline_id") or "")
    if pipeline_id is None:
        return None
    principal = authenticated_principal()
    for name in sorted(principal.pipelines or ()):
        if buddy_pipeline_id(name) == pipeline_id:
            return PipelineRef(name, f"pipeline {pipeline_id} not found")
    return PipelineRef(None, f"pipeline {pipeline_id} not found")


# Buddy's Variable object fields that are accepted and ignored (buddy_wire.BuddyVariableIn)
_IGNORED_VARIABLE_FIELDS = {
    **{name: {"type": ["string", "null"], "maxLength": 4096} for name in (
        "url", "html_url", "type", "description", "init_path", "defaults", "file_place", "file_name",
        "file_path", "file_chmod", "password", "passphrase", "key_identifier", "checksum",
        "key_fingerprint", "public_value", "comment")},
    **{name: {"type": ["boolean", "null"]} for name in ("settable", "run_only_settable", "ssh_key")},
    **{name: {"type": ["object", "null"]} for name in ("project", "pipeline", "action", "environment")},
    "id": {"type": ["integer", "null"]},
}
_ERROR_SCHEMA = {"type": "object", "required": ["errors"], "properties": {"errors": {
    "type": "array", "items": {"type": "object", "required": ["message"],
                               "properties": {"message": {"type": "string"}}}}}}
_ERRORS = {400: "malformed JSON, or a body that fails validation (APPLY_VARIABLES without variables)",
           401: "missing or bad token", 403: "the token lacks the operate scope (WORKSPACE, EXECUTION_RUN)",
           404: "unknown pipeline or execution", 409: "the operation does not apply to the execution now",
           413: "body too large", 429: "rate limit exceeded"}
OPENAPI = {
    "parameters": [{"name": "pipeline_id", "in": "path", "required": True,
                    "schema": {"type": "string", "pattern": r"^[1-9][0-9]{0,15}$"}},
                   {"name": "execution_id", "in": "path", "required": True,
                    "schema": {"type": "string", "pattern": r"^[1-9][0-9]{0,11}$"}}],
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["operation"], "additionalProperties": False,
        "properties": {
            "operation": {"type": "string", "enum": list(buddy_wire.BUDDY_OPERATIONS)},
            "comment": {"type": "string", "maxLength": 1000},
            "variables": {"type": "array", "minItems": 1, "maxItems": buddy_wire.MAX_VARIABLES, "items": {
                "type": "object", "required": ["key", "value"], "additionalProperties": False,
                "properties": {"key": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$"},
                               "value": {"type": "string", "maxLength": 4096},
                               "encrypted": {"type": "boolean"},
                               **_IGNORED_VARIABLE_FIELDS}}}}}}}},
    "responses": {
        "200": {"description": "the execution object", "headers": RATE_HEADERS,
                "content": {"application/json": {"schema": {"type": "object", "required": [
                    "url", "html_url", "id", "start_date", "finish_date", "status", "pipeline",
                    "action_executions"]}}}},
        **{str(code): {"description": text, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
           for code, text in _ERRORS.items()},
    },
}


def _command(body: buddy_wire.BuddyOperationIn, run_id: str) -> commands.Command[RunAggregate]:
    """Buddy's operation on an execution, as the native command it is."""
    if body.operation == "CANCEL":
        return commands.CancelRun(run_id, body.comment or None)
    if body.operation == "RETRY":
        return commands.RetryRun(run_id, SCOPE_FAILED)
    if body.operation == "APPLY":
        return commands.ApproveWaiting(run_id, body.comment or None, approver=current_token_name())
    return commands.ApplyVariables(run_id, tuple(
        VariableChange(key=v.key, value=v.value, secret=v.encrypted) for v in body.variables or ()))


@route(routes, PATH, methods=["PATCH"], dialect="buddy", render_error=render_error,
       acts_on=resolved_by(_pipeline_of), openapi=OPENAPI,
       summary="Buddy: cancel, retry or approve an execution")
def operate_execution(domain, project_name, pipeline_id, execution_id):
    ctx = wiring.context()
    request = routes.current_request
    body = parse_body(request, buddy_wire.BuddyOperationIn, ctx.settings.max_body_bytes)
    number = buddy_wire.parse_buddy_id(pipeline_id)
    if number is None:
        raise NotFound(f"pipeline {pipeline_id[:40]!r} not found")
    found = pipelines.by_buddy_id(ctx, number)
    pipeline = found.name
    run_id = operations.run_id_by_counter(pipeline, execution_id)
    aggregate = commands.execute(ctx, _command(body, run_id), actor=current_actor() or "anonymous")
    # pipeline.last_execution_*: this run, unless the pipeline has claimed a newer number
    latest = None if aggregate.run.counter >= found.counter else pipelines.latest_run(ctx, pipeline)
    base = base_url(request)
    execution = buddy_wire.buddy_execution(
        aggregate, api_base=base, native_base=base, domain=quote(domain, safe=""),
        project=quote(project_name, safe=""), latest=latest, now=ctx.clock.now())
    return Response(body=execution, status_code=200, headers={"Content-Type": "application/json"})
