"""GoCD's API under /go/api, for GoCD clients and scripts: translation only.

Stage cancel, stage instance and history; pipeline instance, history and status; pause,
unpause, releaseLock, schedule; version. Shapes and status names are in domain/dialects.py;
every change is a call to the same service functions the native API uses.

What the GoCD references say, and what these endpoints do (README "Compatibility endpoints"):
- Credentials: Basic auth as GoCD clients send it (any user name, a stagetrack token as the
  password; the user is recorded as who cancelled, paused or scheduled), or any other
  stagetrack credential. None or a bad one: 401. A token without the operate scope on an
  operation: also 401, because both GoCD documents give 401 for "not authorized to perform this
  action" (the stage cancel page: "User does not have operate permission"; 403 is for
  administrator-only resources there).
- Operations (the POSTs) need ``Confirm: true`` (or ``X-GoCD-Confirm: true``, any case), as
  the GoCD reference's examples send and as GoCD's API safe mode requires; without it they
  answer 400 "Missing required header 'Confirm' with value 'true'" and change nothing. So the
  older cancel page's example (``curl -u jez:badger -d "" .../cancel``, no Confirm) gets 400.
- Operations answer ``text/html; charset=utf-8`` text as in the reference; reads answer JSON,
  ``application/json; charset=utf-8`` as the reference shows for pipelines and stages, and
  ``application/vnd.go.cd.v1+json; charset=utf-8`` for the version, the one endpoint here the
  reference versions. An Accept header that asks for another version gets that default
  representation (as GoCD does); one that rules JSON out gets 406.
- Errors: the message as text on text endpoints, ``{"message": ...}`` on JSON ones.
"""
from __future__ import annotations

import re
from urllib.parse import parse_qsl

from chalice import Blueprint, Response

from .. import wiring
from ..domain import auth, dialects
from ..domain.auth import REALM, Forbidden
from ..domain.errors import BadRequest, DomainError, NotFound
from ..domain.model import stage_summary
from ..domain.operations import specs_of
from ..service import operations, pipelines, runs
from . import base_url, current_actor, current_principal, parse_query, route
from .openapi import RATE_HEADERS

gocd = Blueprint(__name__)

_PIPELINE = auth.acts_on(path={"pipeline": auth.PIPELINE})  # every GoCD route names its pipeline

TEXT = "text/html; charset=utf-8"
ERROR_TEXT = "text/plain; charset=utf-8"
JSON = "application/json; charset=utf-8"
V1_JSON = "application/vnd.go.cd.v1+json; charset=utf-8"
CONFIRM_HEADERS = ("confirm", "x-gocd-confirm")
MISSING_CONFIRM = "Missing required header 'Confirm' with value 'true'"
_FORM_LIST = re.compile(r"^(variables|secure_variables|materials)\[(.*)\]$")
_COUNTER = re.compile(r"^[0-9]{1,12}$")
MAX_FORM_FIELDS = 400


class NotAcceptable(BadRequest):
    code = "not_acceptable"


# ---- errors: GoCD's shapes, GoCD's statuses ---------------------------------------------------

def _status(error: DomainError, status: int) -> int:
    if isinstance(error, NotAcceptable):
        return 406
    if isinstance(error, Forbidden):  # GoCD documents 401 for a missing permission
        return 401
    return status


def _headers(error: DomainError, status: int, content_type: str) -> dict:
    headers = {"Content-Type": content_type}
    if status == 401:
        headers["WWW-Authenticate"] = REALM
    return headers


def text_error(error: DomainError, status: int) -> Response:
    status = _status(error, status)
    return Response(body=error.message, status_code=status,
                    headers=_headers(error, status, ERROR_TEXT))


def json_error(content_type: str = JSON):
    def render(error: DomainError, status: int) -> Response:
        status = _status(error, status)
        return Response(body=dialects.gocd_error(error.message), status_code=status,
                        headers=_headers(error, status, content_type))

    return render


# ---- OpenAPI: the wire format as GoCD documents it --------------------------------------------

_MESSAGE = {"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}}
_ERRORS = {
    400: "malformed request; for operations also: no Confirm: true header",
    401: "missing or bad credentials, or no operate permission (as GoCD documents)",
    403: "not answered: GoCD answers 401 for a missing permission",
    404: "unknown pipeline, run or stage (also: a pipeline the token is not limited to)",
    406: "the Accept header rules JSON out",
    409: "conflict: already paused, not paused, paused pipeline, concurrent change",
    413: "request body too large",
    422: "form data fails validation",
    429: "rate limit exceeded (Retry-After)",
}
_CONFIRM = {"name": "Confirm", "in": "header", "required": True,
            "description": "must be true (X-GoCD-Confirm: true also works)",
            "schema": {"type": "string", "enum": ["true"]}}


_NUMBER = {"type": "string", "pattern": r"^[0-9]{1,12}$"}


def _path(*names: str) -> list[dict]:
    """Path parameters that are numbers (counters, offsets), documented as such."""
    return [{"name": name, "in": "path", "required": True, "schema": _NUMBER} for name in names]


def _text_doc(success: int, form: dict | None = None) -> dict:
    errors = {str(code): {"description": text, "content": {"text/plain": {"schema": {"type": "string"}}}}
              for code, text in _ERRORS.items() if code != 406}
    body_schema = {"type": "object", "properties": form or {}, "additionalProperties": False}
    return {
        "parameters": [_CONFIRM],
        "requestBody": {"required": False,
                        "content": {"application/x-www-form-urlencoded": {"schema": body_schema}}},
        "responses": {str(success): {"description": "text confirmation", "headers": RATE_HEADERS,
                                     "content": {"text/html": {"schema": {"type": "string"}}}},
                      **errors},
    }


def _json_doc(media: str = "application/json", *, public: bool = False, numbers: tuple = ()) -> dict:
    codes = (400, 406) if public else (400, 401, 403, 404, 406, 429)
    errors = {str(code): {"description": _ERRORS[code], "content": {media: {"schema": _MESSAGE}}}
              for code in codes}
    return {"parameters": _path(*numbers),
            "responses": {"200": {"description": "GoCD's JSON", "headers": RATE_HEADERS,
                                  "content": {media: {"schema": {"type": "object"}}}}, **errors}}


# ---- request helpers --------------------------------------------------------------------------

def _request():
    return gocd.current_request


def _require_confirm() -> None:
    headers = _request().headers
    if not any((headers.get(name) or "").strip().lower() == "true" for name in CONFIRM_HEADERS):
        raise BadRequest(MISSING_CONFIRM)


def _accept_json() -> None:
    """406 only when every media range of Accept rules JSON out (q=0 or another type)."""
    accept = _request().headers.get("accept")
    if not accept or not accept.strip():
        return
    for part in accept.split(","):
        media, *params = [p.strip().lower() for p in part.split(";")]
        if any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params):
            continue
        if media in ("*/*", "application/*", "application/json") or (
                media.startswith("application/vnd.go.cd") and media.endswith("+json")):
            return
    raise NotAcceptable("You requested a format that isn't json: this resource is JSON "
                        "(application/json or application/vnd.go.cd.v1+json)")


def _form_pairs() -> list[tuple[str, str]]:
    """Form data as GoCD takes it (curl -d): application/x-www-form-urlencoded, UTF-8."""
    request = _request()
    raw = request.raw_body or b""
    if not raw.strip():
        return []
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise BadRequest("send the parameters as form data (application/x-www-form-urlencoded)")
    try:
        return parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict",
                         max_num_fields=MAX_FORM_FIELDS)
    except ValueError:  # bad UTF-8, bad %-escapes, too many fields
        raise BadRequest("form data is not valid application/x-www-form-urlencoded UTF-8") from None


def _form(model, pairs: list[tuple[str, str]], *, lists: bool = False):
    data: dict = {}
    for name, value in pairs:
        match = _FORM_LIST.match(name) if lists else None
        target, key = (data.setdefault(match.group(1), {}), match.group(2)) if match else (data, name)
        if key in target:
            raise BadRequest(f"form field {name!r} is repeated", details=[{"field": name}])
        target[key] = value
    return parse_query(data, model)


def _operate() -> bool:
    principal = current_principal()
    return principal is not None and principal.has("operate")


def _actor() -> str:
    return current_actor() or "anonymous"


def _offset(value: str | None) -> int:
    if value is None:
        return 0
    if not _COUNTER.match(value):
        raise BadRequest(f"offset must be a whole number, not {value[:40]!r}")
    return int(value)


def _counter(value: str, what: str) -> int:
    if not _COUNTER.match(value) or int(value) < 1:
        raise NotFound(f"{what} {value[:40]!r} not found")
    return int(value)


def _text(body: str, status: int = 200) -> Response:
    return Response(body=body, status_code=status, headers={"Content-Type": TEXT})


def _json(body: object, content_type: str = JSON) -> Response:
    return Response(body=body, status_code=200, headers={"Content-Type": content_type})


# ---- stages -----------------------------------------------------------------------------------

@route(gocd, "/go/api/stages/{pipeline}/{stage}/cancel", methods=["POST"], dialect="gocd", acts_on=_PIPELINE,
       render_error=text_error, openapi=_text_doc(200), summary="GoCD: cancel a stage")
def cancel_stage(pipeline, stage):
    """The stage of that name in the pipeline's latest run; 200 also when it was not active."""
    _require_confirm()
    _form(dialects.GoCDEmptyForm, _form_pairs())
    operations.cancel_stage_by_name(wiring.context(), pipeline, stage, actor=_actor())
    return _text("Stage cancelled successfully.")


@route(gocd, "/go/api/stages/{pipeline}/{stage}/instance/{pipeline_counter}/{stage_counter}",
       methods=["GET"], dialect="gocd", acts_on=_PIPELINE, render_error=json_error(),
       openapi=_json_doc(numbers=("pipeline_counter", "stage_counter")),
       summary="GoCD: a stage instance (stage_counter: the stage's attempt)")
def stage_instance(pipeline, stage, pipeline_counter, stage_counter):
    _accept_json()
    counter = _counter(pipeline_counter, "pipeline counter")
    ctx = wiring.context()
    aggregate = runs.get_run(ctx, operations.run_id_by_counter(pipeline, counter))
    found = next((s for s in aggregate.stages if s.name == stage), None)
    attempt = dialects.attempt_of(found, _counter(stage_counter, "stage counter")) if found else None
    if attempt is None:
        raise NotFound(f"stage {stage!r} counter {stage_counter} of {pipeline}/{counter} not found")
    return _json(dialects.gocd_stage_instance(aggregate.run, found, int(stage_counter), attempt))


def _stage_history(pipeline: str, stage: str, offset: str | None) -> Response:
    _accept_json()
    start = _offset(offset)
    found, page = pipelines.history(wiring.context(), pipeline, start)
    entries = [dialects.gocd_stage_history_entry(run, entry)
               for run in page for entry in run.stage_summary or [] if entry["name"] == stage]
    known = {spec.name for spec in specs_of(found.layout)[0]} if found.layout else set()
    if not entries and stage not in known:
        raise NotFound(f"stage {stage!r} of pipeline {pipeline!r} not found")
    return _json({"stages": entries, "pagination": dialects.pagination(start, found.counter)})


@route(gocd, "/go/api/stages/{pipeline}/{stage}/history", methods=["GET"], dialect="gocd", acts_on=_PIPELINE,
       render_error=json_error(), openapi=_json_doc(), summary="GoCD: stage history, newest first")
def stage_history(pipeline, stage):
    return _stage_history(pipeline, stage, None)


@route(gocd, "/go/api/stages/{pipeline}/{stage}/history/{offset}", methods=["GET"], dialect="gocd",
       acts_on=_PIPELINE,
       render_error=json_error(), openapi=_json_doc(numbers=("offset",)),
       summary="GoCD: stage history from an offset")
def stage_history_page(pipeline, stage, offset):
    return _stage_history(pipeline, stage, offset)


# ---- pipelines --------------------------------------------------------------------------------

@route(gocd, "/go/api/pipelines/{pipeline}/instance/{counter}", methods=["GET"], dialect="gocd",
       acts_on=_PIPELINE,
       render_error=json_error(), openapi=_json_doc(numbers=("counter",)),
       summary="GoCD: a pipeline instance")
def pipeline_instance(pipeline, counter):
    _accept_json()
    run_id = operations.run_id_by_counter(pipeline, _counter(counter, "counter"))
    aggregate = runs.get_run(wiring.context(), run_id)
    summary = [stage_summary(s) for s in sorted(aggregate.stages, key=lambda s: s.position)]
    return _json(dialects.gocd_pipeline_instance(aggregate.run, summary, operate=_operate()))


def _pipeline_history(pipeline: str, offset: str | None) -> Response:
    _accept_json()
    start = _offset(offset)
    found, page = pipelines.history(wiring.context(), pipeline, start)
    operate = _operate()
    return _json({
        "pipelines": [dialects.gocd_pipeline_instance(run, run.stage_summary or [], operate=operate)
                      for run in page],
        "pagination": dialects.pagination(start, found.counter),
    })


@route(gocd, "/go/api/pipelines/{pipeline}/history", methods=["GET"], dialect="gocd", acts_on=_PIPELINE,
       render_error=json_error(), openapi=_json_doc(), summary="GoCD: pipeline history, newest first")
def pipeline_history(pipeline):
    return _pipeline_history(pipeline, None)


@route(gocd, "/go/api/pipelines/{pipeline}/history/{offset}", methods=["GET"], dialect="gocd",
       acts_on=_PIPELINE,
       render_error=json_error(), openapi=_json_doc(numbers=("offset",)),
       summary="GoCD: pipeline history from an offset")
def pipeline_history_page(pipeline, offset):
    return _pipeline_history(pipeline, offset)


@route(gocd, "/go/api/pipelines/{pipeline}/status", methods=["GET"], dialect="gocd", acts_on=_PIPELINE,
       render_error=json_error(), openapi=_json_doc(), summary="GoCD: paused, locked, schedulable")
def pipeline_status(pipeline):
    _accept_json()
    found = pipelines.status(wiring.context(), pipeline)
    return _json(dialects.gocd_pipeline_status(found.paused, found.locked, found.schedulable))


@route(gocd, "/go/api/pipelines/{pipeline}/pause", methods=["POST"], dialect="gocd", acts_on=_PIPELINE,
       render_error=text_error, openapi=_text_doc(200, {"pauseCause": {"type": "string", "maxLength": 1000}}),
       summary="GoCD: pause a pipeline (form data pauseCause)")
def pause_pipeline(pipeline):
    _require_confirm()
    form = _form(dialects.GoCDPauseForm, _form_pairs())
    pipelines.pause(wiring.context(), pipeline, actor=_actor(), cause=form.pauseCause or None)
    return _text("")


@route(gocd, "/go/api/pipelines/{pipeline}/unpause", methods=["POST"], dialect="gocd", acts_on=_PIPELINE,
       render_error=text_error, openapi=_text_doc(200), summary="GoCD: unpause a pipeline")
def unpause_pipeline(pipeline):
    _require_confirm()
    _form(dialects.GoCDEmptyForm, _form_pairs())
    pipelines.unpause(wiring.context(), pipeline)
    return _text("")


@route(gocd, "/go/api/pipelines/{pipeline}/releaseLock", methods=["POST"], dialect="gocd", acts_on=_PIPELINE,
       render_error=text_error, openapi=_text_doc(200), summary="GoCD: release a pipeline lock")
def release_lock(pipeline):
    """stagetrack never locks a pipeline (its runs may overlap), so there is never a lock to
    keep: a known pipeline always answers as GoCD does once its lock is released."""
    _require_confirm()
    _form(dialects.GoCDEmptyForm, _form_pairs())
    pipelines.status(wiring.context(), pipeline)
    return _text(f"pipeline lock released for {pipeline}")


_SCHEDULE_FORM = {name: {"type": "string"} for name in
                  ("variables[NAME]", "secure_variables[NAME]", "materials[NAME]")}


@route(gocd, "/go/api/pipelines/{pipeline}/schedule", methods=["POST"], dialect="gocd", acts_on=_PIPELINE,
       render_error=text_error, openapi=_text_doc(202, _SCHEDULE_FORM),
       summary="GoCD: schedule a run like the latest (form data variables[NAME]=value)")
def schedule_pipeline(pipeline):
    _require_confirm()
    form = _form(dialects.GoCDScheduleForm, _form_pairs(), lists=True)
    if len(form.variables) + len(form.secure_variables) > dialects.MAX_VARIABLES:
        raise BadRequest(f"at most {dialects.MAX_VARIABLES} variables and secure_variables together",
                         details=[{"field": "variables"}])
    pipelines.schedule(wiring.context(), pipeline, actor=_actor(), variables=form.variables or None,
                       secret_variables=form.secure_variables or None)
    return _text(f"Request to schedule pipeline {pipeline} accepted", 202)


# ---- server -----------------------------------------------------------------------------------

@route(gocd, "/go/api/version", methods=["GET"], scope="public", dialect="gocd",
       render_error=json_error(V1_JSON), openapi=_json_doc("application/vnd.go.cd.v1+json", public=True),
       summary="GoCD: the GoCD API version these endpoints implement (public, like /health)")
def version():
    """Public, as the reference's example calls it without credentials: it answers a constant
    (the API level implemented) and reveals nothing about any pipeline."""
    _accept_json()
    return _json(dialects.gocd_version(f"{base_url(_request())}/go/api/version"), V1_JSON)
