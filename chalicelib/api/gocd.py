"""GoCD's API under /go/api, for GoCD clients and scripts: translation only.

Stage cancel, stage instance and history; pipeline instance, history and status; pause,
unpause, releaseLock, schedule; version. Shapes and status names are in api/gocd_wire.py;
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

GoCD's current API (api.gocd.org) is served next to those 17.1 forms: pause/unpause/schedule
with a JSON body (``pause_cause``; ``environment_variables``, ``materials``,
``update_materials_before_scheduling``) when Accept names ``application/vnd.go.cd.v1+json``,
``unlock`` (v1), the stage instance and cancel by pipeline and stage counters (v3) and run stage
(v2). Their answers are ``{"message"}`` JSON in the version's media type; a POST needs a JSON body
or ``X-GoCD-Confirm``; a missing permission is 403, as GoCD's current controllers answer; an
Accept naming only GoCD versions not served here is GoCD's 404 (see ``_current_api``).
"""
from __future__ import annotations

import re
from urllib.parse import parse_qsl

from chalice import Blueprint, Response

from .. import wiring
from ..domain import auth
from ..domain.auth import REALM, Forbidden
from ..domain.errors import BadRequest, Conflict, DomainError, NotFound
from ..domain.model import Stage, stage_summary
from ..domain.operations import specs_of
from ..service import ServiceContext, commands, operations, pipelines, runs
from . import gocd_wire
from .openapi import RATE_HEADERS
from .parsing import base_url, parse_body, parse_query
from .routing import route
from .security import current_actor, current_principal, current_token_name

routes = Blueprint(__name__)
# GoCD's clients send form data (17.1, e.g. `curl -d`) or JSON (the current API); nothing else.
BODY_TYPES = ["application/json", "application/x-www-form-urlencoded"]

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


class UnsupportedMediaType(BadRequest):
    code = "unsupported_media_type"


# GoCD's current API (api.gocd.org): each operation has one Accept version; the 17.1 forms above
# took none. A request that names a GoCD JSON type (application/vnd.go.cd.vN+json, or
# application/vnd.go.cd+json for "the latest") gets the current form; one naming only versions
# this server does not serve gets GoCD's 404. Without a GoCD type a path GoCD 17.1 had keeps its
# 17.1 form, and a path only the current API has serves its current version.
PIPELINE_OPERATIONS, STAGE_OPERATIONS, STAGE_INSTANCE = 1, 2, 3  # the versions GoCD documents
_GOCD_JSON = re.compile(r"^application/vnd\.go\.cd(?:\.v([0-9]{1,3}))?\+json$")
WRONG_URL = "The url you are trying to reach appears to be incorrect."
MISSING_X_CONFIRM = "Missing required header 'X-GoCD-Confirm' with value 'true'"
JSON_EXPECTED = "You must specify a 'Content-Type' of 'application/json'"


CURRENT_ONLY = frozenset({  # paths only the current API has: no 17.1 form, no 401 for a permission
    "/go/api/pipelines/{pipeline}/unlock",
    "/go/api/stages/{pipeline}/{stage}/{stage_name}/{stage_counter}",
    "/go/api/stages/{pipeline}/{stage}/{stage_name}/{stage_counter}/cancel",
    "/go/api/stages/{pipeline}/{stage}/{stage_name}/run",
})


def vendor_json(version: int) -> str:
    return f"application/vnd.go.cd.v{version}+json; charset=utf-8"


# ---- errors: GoCD's shapes, GoCD's statuses ---------------------------------------------------

def _status(error: DomainError, status: int, *, forbidden: int = 401) -> int:
    if isinstance(error, NotAcceptable):
        return 406
    if isinstance(error, UnsupportedMediaType):
        return 415
    if isinstance(error, Forbidden):  # GoCD 17.1 documents 401 for a missing permission
        return forbidden
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


def json_error(content_type: str = JSON, *, forbidden: int = 401):
    def render(error: DomainError, status: int) -> Response:
        status = _status(error, status, forbidden=forbidden)
        return Response(body=gocd_wire.gocd_error(error.message), status_code=status,
                        headers=_headers(error, status, content_type))

    return render


def current_error(version: int):
    """Errors of the current API: ``{"message"}`` in the version's media type; a missing
    permission is 403, as GoCD's current controllers answer (their ``...And403`` checks)."""
    return json_error(vendor_json(version), forbidden=403)


def text_or_current_error(version: int):
    """A path both API generations have: errors in the form the request asked for."""
    current = current_error(version)

    def render(error: DomainError, status: int) -> Response:
        return current(error, status) if _asks_for_gocd_json() else text_error(error, status)

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


_X_CONFIRM = {"name": "X-GoCD-Confirm", "in": "header", "required": False,
              "description": "true; required when there is no JSON body (Confirm: true also works)",
              "schema": {"type": "string", "enum": ["true"]}}
_CURRENT_ERRORS = {
    400: "malformed JSON; no body and no X-GoCD-Confirm: true",
    401: "missing or bad credentials",
    403: "no operate permission (as GoCD's current API answers)",
    404: "unknown pipeline, run or stage; or Accept asks only for GoCD versions not served here",
    409: "conflict: already paused, already unpaused, paused pipeline, stage active",
    413: "request body too large",
    415: "a body that is not application/json",
    422: "a JSON body that fails validation",
    429: "rate limit exceeded (Retry-After)",
}


def _current_doc(version: int, success: int = 200, body: dict | None = None, *, numbers: tuple = (),
                 read: bool = False) -> dict:
    """A current-API operation: Accept application/vnd.go.cd.v<version>+json, {"message"} answers."""
    media = f"application/vnd.go.cd.v{version}+json"
    codes = (400, 401, 403, 404, 429) if read else tuple(_CURRENT_ERRORS)
    doc = {
        "parameters": _path(*numbers) + ([] if read else [_X_CONFIRM]),
        "responses": {
            str(success): {
                "description": "GoCD's JSON",
                "headers": RATE_HEADERS,
                "content": {media: {"schema": {"type": "object"} if read else _MESSAGE}},
            },
            **{
                str(code): {"description": _CURRENT_ERRORS[code], "content": {media: {"schema": _MESSAGE}}}
                for code in codes
            },
        },
    }
    if body is not None:
        doc["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
    return doc


def _both_doc(success: int, form: dict | None, body: dict | None, version: int) -> dict:
    """A path both generations serve: 17.1 form data and text, or (Accept: GoCD JSON) JSON."""
    doc = _text_doc(success, form)
    current = _current_doc(version, success, body)
    doc["parameters"] = [{**_CONFIRM, "required": False,
                          "description": "true (X-GoCD-Confirm: true also works); the current API "
                                         "needs it only without a JSON body"}]
    if body is not None:
        doc["requestBody"]["content"].update(current["requestBody"]["content"])
    for code, answer in current["responses"].items():
        if code in doc["responses"]:
            doc["responses"][code]["content"].update(answer["content"])
        else:
            doc["responses"][code] = answer
    return doc


_PAUSE_JSON = {"type": "object", "additionalProperties": False,
               "properties": {"pause_cause": {"type": "string", "maxLength": 1000}}}
_SCHEDULE_JSON = {"type": "object", "additionalProperties": False, "properties": {
    "environment_variables": {"type": "array", "maxItems": gocd_wire.MAX_VARIABLES, "items": {
        "type": "object", "required": ["name"], "additionalProperties": False, "properties": {
            "name": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$"},
            "value": {"type": "string", "maxLength": 4096},
            "encrypted_value": {"type": "string", "maxLength": 4096},
            "secure": {"type": "boolean"}}}},
    "materials": {"type": "array", "maxItems": gocd_wire.MAX_VARIABLES, "items": {
        "type": "object", "required": ["fingerprint", "revision"], "additionalProperties": False,
        "properties": {"fingerprint": {"type": "string", "pattern": gocd_wire.GOCD_FINGERPRINT},
                       "revision": {"type": "string", "minLength": 1, "maxLength": 1024}}}},
    "update_materials_before_scheduling": {"type": "boolean"}}}


# ---- request helpers --------------------------------------------------------------------------

def _request():
    return routes.current_request


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


def _gocd_versions() -> list[int | None]:
    """The GoCD JSON versions the Accept header asks for (None: "the latest"), q=0 left out."""
    found: list[int | None] = []
    for part in (_request().headers.get("accept") or "").split(","):
        media, *params = [p.strip().lower() for p in part.split(";")]
        if any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params):
            continue
        match = _GOCD_JSON.match(media)
        if match:
            found.append(int(match.group(1)) if match.group(1) else None)
    return found


def _asks_for_gocd_json() -> bool:
    return bool(_gocd_versions())


def _current_api(version: int, *, only: bool = False) -> bool:
    """True: answer in the current API's form (``version``). False: the 17.1 form (only for
    paths GoCD 17.1 had: ``only`` says the path is current-only). Raises GoCD's 404 when Accept
    asks for GoCD JSON versions none of which is served here."""
    asked = _gocd_versions()
    if not asked:
        return only
    if None in asked or version in asked:
        return True
    raise NotFound(WRONG_URL)


def _current_body(model):
    """A current-API operation's body, by GoCD's rule for POSTs: a body must be JSON (else 415);
    without one, ``X-GoCD-Confirm`` (any non-empty value, as GoCD documents; or ``Confirm: true``)
    must say the call is meant (else 400). Either one forces a browser's CORS preflight.
    Malformed JSON: 400; a body that fails validation: 422 naming the field."""
    request = _request()
    raw = request.raw_body or b""
    if not raw.strip():
        headers = request.headers
        # GoCD documents "X-GoCD-Confirm with any random string"; 17.1's Confirm must say true
        confirmed = bool((headers.get("x-gocd-confirm") or "").strip()) or \
            (headers.get("confirm") or "").strip().lower() == "true"
        if not confirmed:
            raise BadRequest(MISSING_X_CONFIRM)
        return model()
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise UnsupportedMediaType(JSON_EXPECTED)
    return parse_body(request, model, wiring.context().settings.max_body_bytes)


def _message(text: str, version: int, status: int = 200) -> Response:
    return Response(body=gocd_wire.gocd_error(text), status_code=status,
                    headers={"Content-Type": vendor_json(version)})


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
        match = _FORM_LIST.fullmatch(name) if lists else None
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


def _execute(command: commands.Command) -> object:
    return commands.execute(wiring.context(), command, actor=_actor())


def _offset(value: str | None) -> int:
    if value is None:
        return 0
    if not _COUNTER.fullmatch(value):
        raise BadRequest(f"offset must be a whole number, not {value[:40]!r}")
    return int(value)


def _counter(value: str, what: str) -> int:
    if not _COUNTER.fullmatch(value) or int(value) < 1:
        raise NotFound(f"{what} {value[:40]!r} not found")
    return int(value)


def _text(body: str, status: int = 200) -> Response:
    return Response(body=body, status_code=status, headers={"Content-Type": TEXT})


def _json(body: object, content_type: str = JSON) -> Response:
    return Response(body=body, status_code=200, headers={"Content-Type": content_type})


# ---- stages -----------------------------------------------------------------------------------

@route(
    routes,
    "/go/api/stages/{pipeline}/{stage}/cancel",
    methods=["POST"],
    content_types=BODY_TYPES,
    dialect="gocd",
    acts_on=_PIPELINE,
    render_error=text_error,
    replay=lambda effect, **_: _cancelled(),
    openapi=_text_doc(200),
    summary="GoCD: cancel a stage",
)
def cancel_stage(pipeline, stage):
    """The stage of that name in the pipeline's latest run; 200 also when it was not active."""
    _require_confirm()
    _form(gocd_wire.GoCDEmptyForm, _form_pairs())
    _execute(commands.CancelStageByName(pipeline, stage))
    return _cancelled()


def _cancelled() -> Response:
    """GoCD's answer to a stage cancel, also when the stage was not active (and to a repeated
    Idempotency-Key whose cancel was written but whose response was lost)."""
    return _text("Stage cancelled successfully.")


@route(routes, "/go/api/stages/{pipeline}/{stage}/instance/{pipeline_counter}/{stage_counter}",
       methods=["GET"], dialect="gocd", acts_on=_PIPELINE, render_error=json_error(),
       openapi=_json_doc(numbers=("pipeline_counter", "stage_counter")),
       summary="GoCD: a stage instance (stage_counter: the stage's attempt)")
def stage_instance(pipeline, stage, pipeline_counter, stage_counter):
    _accept_json()
    counter = _counter(pipeline_counter, "pipeline counter")
    ctx = wiring.context()
    aggregate = runs.get_run(ctx, operations.run_id_by_counter(pipeline, counter))
    found = next((s for s in aggregate.stages if s.name == stage), None)
    attempt = _attempt(ctx, found, _counter(stage_counter, "stage counter"))
    if attempt is None:
        raise NotFound(f"stage {stage!r} counter {stage_counter} of {pipeline}/{counter} not found")
    return _json(gocd_wire.gocd_stage_instance(aggregate.run, found, int(stage_counter), attempt))


def _attempt(ctx: ServiceContext, stage: Stage | None, number: int) -> dict | None:
    """Attempt ``number`` of a stage of a loaded run: the current one is on the stage, an ended
    one is one attempt item read by key (the run's load reads no history)."""
    if stage is None:
        return None
    return gocd_wire.attempt_of(stage, number, runs.ended_attempt(ctx, stage, number))


def _stage_history(pipeline: str, stage: str, offset: str | None) -> Response:
    _accept_json()
    start = _offset(offset)
    found, page = pipelines.history(wiring.context(), pipeline, start, gocd_wire.GOCD_PAGE_SIZE)
    entries = [gocd_wire.gocd_stage_history_entry(run, entry)
               for run in page for entry in run.stage_summary or [] if entry["name"] == stage]
    known = {spec.name for spec in specs_of(found.layout)[0]} if found.layout else set()
    if not entries and stage not in known:
        raise NotFound(f"stage {stage!r} of pipeline {pipeline!r} not found")
    return _json({"stages": entries, "pagination": gocd_wire.pagination(start, found.counter)})


@route(routes, "/go/api/stages/{pipeline}/{stage}/history", methods=["GET"], dialect="gocd",
       acts_on=_PIPELINE, render_error=json_error(), openapi=_json_doc(),
       summary="GoCD: stage history, newest first")
def stage_history(pipeline, stage):
    return _stage_history(pipeline, stage, None)


@route(routes, "/go/api/stages/{pipeline}/{stage}/history/{offset}", methods=["GET"], dialect="gocd",
       acts_on=_PIPELINE,
       render_error=json_error(), openapi=_json_doc(numbers=("offset",)),
       summary="GoCD: stage history from an offset")
def stage_history_page(pipeline, stage, offset):
    return _stage_history(pipeline, stage, offset)


# The current API's stage paths name the run before the stage: /stages/:pipeline_name/
# :pipeline_counter/:stage_name[/:stage_counter]. They share their first segments with the 17.1
# paths above, so (API Gateway allows one variable name per path level) the pipeline counter is
# the path's {stage} segment and the stage name its {stage_name} segment.

def _run_counter(value: str) -> int:
    return _counter(value, "pipeline counter")


@route(routes, "/go/api/stages/{pipeline}/{stage}/{stage_name}/{stage_counter}", methods=["GET"],
       dialect="gocd", acts_on=_PIPELINE, render_error=current_error(STAGE_INSTANCE),
       openapi=_current_doc(STAGE_INSTANCE, numbers=("stage", "stage_counter"), read=True),
       summary="GoCD v3: a stage instance by pipeline counter ({stage}), stage name and stage counter")
def stage_instance_current(pipeline, stage, stage_name, stage_counter):
    _current_api(STAGE_INSTANCE, only=True)
    counter = _run_counter(stage)
    ctx = wiring.context()
    aggregate = runs.get_run(ctx, operations.run_id_by_counter(pipeline, counter))
    found = next((s for s in aggregate.stages if s.name == stage_name), None)
    attempt = _attempt(ctx, found, _counter(stage_counter, "stage counter"))
    if attempt is None:
        raise NotFound(f"Stage '{stage_name}' with counter '{stage_counter}' not found. Please make "
                       "sure specified stage or stage run with specified counter exists.")
    return _json(gocd_wire.gocd_stage_v3(aggregate.run, found, int(stage_counter), attempt),
                 vendor_json(STAGE_INSTANCE))


@route(
    routes,
    "/go/api/stages/{pipeline}/{stage}/{stage_name}/{stage_counter}/cancel",
    methods=["POST"],
    content_types=BODY_TYPES,
    dialect="gocd",
    acts_on=_PIPELINE,
    render_error=current_error(STAGE_INSTANCE),
    replay=lambda effect, **_: _cancelled_current(),
    openapi=_current_doc(STAGE_INSTANCE, numbers=("stage", "stage_counter")),
    summary="GoCD v3: cancel a stage by pipeline counter ({stage}), stage name and stage counter",
)
def cancel_stage_current(pipeline, stage, stage_name, stage_counter):
    """200 also when that stage run is not active (finished, or an earlier counter), as the 17.1
    cancel; an unknown run, stage or stage counter is a 404."""
    _current_api(STAGE_INSTANCE, only=True)
    _current_body(gocd_wire.GoCDEmptyForm)
    _execute(commands.CancelStageAttempt(pipeline, _run_counter(stage), stage_name,
                                         _counter(stage_counter, "stage counter")))
    return _cancelled_current()


def _cancelled_current() -> Response:
    return _message("Stage cancelled successfully.", STAGE_INSTANCE)


@route(
    routes,
    "/go/api/stages/{pipeline}/{stage}/{stage_name}/run",
    methods=["POST"],
    content_types=BODY_TYPES,
    dialect="gocd",
    acts_on=_PIPELINE,
    render_error=current_error(STAGE_OPERATIONS),
    replay=lambda effect, pipeline, stage, stage_name: _stage_scheduled(pipeline, _run_counter(stage),
                                                                        stage_name),
    openapi=_current_doc(STAGE_OPERATIONS, 202, numbers=("stage",)),
    summary="GoCD v2: run a stage of a pipeline instance again ({stage}: the pipeline counter)",
)
def run_stage_current(pipeline, stage, stage_name):
    """The native stage retry: a new attempt of a stage that has run (409 while it is active or
    before it ran)."""
    _current_api(STAGE_OPERATIONS, only=True)
    _current_body(gocd_wire.GoCDEmptyForm)
    counter = _run_counter(stage)
    _execute(commands.RerunStageByName(pipeline, counter, stage_name, approver=current_token_name()))
    return _stage_scheduled(pipeline, counter, stage_name)


def _stage_scheduled(pipeline: str, counter: int, stage_name: str) -> Response:
    return _message(f"Request to schedule stage {pipeline}/{counter}/{stage_name} accepted",
                    STAGE_OPERATIONS, 202)


# ---- pipelines --------------------------------------------------------------------------------

@route(routes, "/go/api/pipelines/{pipeline}/instance/{counter}", methods=["GET"], dialect="gocd",
       acts_on=_PIPELINE,
       render_error=json_error(), openapi=_json_doc(numbers=("counter",)),
       summary="GoCD: a pipeline instance")
def pipeline_instance(pipeline, counter):
    _accept_json()
    run_id = operations.run_id_by_counter(pipeline, _counter(counter, "counter"))
    aggregate = runs.get_run(wiring.context(), run_id)
    summary = [stage_summary(s) for s in sorted(aggregate.stages, key=lambda s: s.position)]
    return _json(gocd_wire.gocd_pipeline_instance(aggregate.run, summary, operate=_operate()))


def _pipeline_history(pipeline: str, offset: str | None) -> Response:
    _accept_json()
    start = _offset(offset)
    found, page = pipelines.history(wiring.context(), pipeline, start, gocd_wire.GOCD_PAGE_SIZE)
    operate = _operate()
    return _json({
        "pipelines": [gocd_wire.gocd_pipeline_instance(run, run.stage_summary or [], operate=operate)
                      for run in page],
        "pagination": gocd_wire.pagination(start, found.counter),
    })


@route(routes, "/go/api/pipelines/{pipeline}/history", methods=["GET"], dialect="gocd", acts_on=_PIPELINE,
       render_error=json_error(), openapi=_json_doc(), summary="GoCD: pipeline history, newest first")
def pipeline_history(pipeline):
    return _pipeline_history(pipeline, None)


@route(routes, "/go/api/pipelines/{pipeline}/history/{offset}", methods=["GET"], dialect="gocd",
       acts_on=_PIPELINE,
       render_error=json_error(), openapi=_json_doc(numbers=("offset",)),
       summary="GoCD: pipeline history from an offset")
def pipeline_history_page(pipeline, offset):
    return _pipeline_history(pipeline, offset)


@route(routes, "/go/api/pipelines/{pipeline}/status", methods=["GET"], dialect="gocd", acts_on=_PIPELINE,
       render_error=json_error(), openapi=_json_doc(), summary="GoCD: paused, locked, schedulable")
def pipeline_status(pipeline):
    _accept_json()
    found = pipelines.status(wiring.context(), pipeline)
    return _json(gocd_wire.gocd_pipeline_status(found.paused, found.locked, found.schedulable))


@route(
    routes,
    "/go/api/pipelines/{pipeline}/pause",
    methods=["POST"],
    content_types=BODY_TYPES,
    dialect="gocd",
    acts_on=_PIPELINE,
    render_error=text_or_current_error(PIPELINE_OPERATIONS),
    replay=lambda effect, pipeline: _paused(pipeline),
    openapi=_both_doc(
        200, {"pauseCause": {"type": "string", "maxLength": 1000}}, _PAUSE_JSON, PIPELINE_OPERATIONS
    ),
    summary="GoCD: pause a pipeline (17.1: form data pauseCause; v1: JSON pause_cause)",
)
def pause_pipeline(pipeline):
    if _current_api(PIPELINE_OPERATIONS):
        body = _current_body(gocd_wire.GoCDPauseIn)
        try:
            _execute(commands.PausePipeline(pipeline, body.pause_cause or None))
        except Conflict:
            raise Conflict(f"Failed to pause pipeline '{pipeline}'. "
                           f"Pipeline '{pipeline}' is already paused.") from None
        return _paused(pipeline)
    _require_confirm()
    form = _form(gocd_wire.GoCDPauseForm, _form_pairs())
    _execute(commands.PausePipeline(pipeline, form.pauseCause or None))
    return _paused(pipeline)


@route(
    routes,
    "/go/api/pipelines/{pipeline}/unpause",
    methods=["POST"],
    content_types=BODY_TYPES,
    dialect="gocd",
    acts_on=_PIPELINE,
    render_error=text_or_current_error(PIPELINE_OPERATIONS),
    replay=lambda effect, pipeline: _unpaused(pipeline),
    openapi=_both_doc(200, None, None, PIPELINE_OPERATIONS),
    summary="GoCD: unpause a pipeline",
)
def unpause_pipeline(pipeline):
    if _current_api(PIPELINE_OPERATIONS):
        _current_body(gocd_wire.GoCDEmptyForm)
        try:
            _execute(commands.UnpausePipeline(pipeline))
        except Conflict:
            raise Conflict(f"Failed to unpause pipeline '{pipeline}'. "
                           f"Pipeline '{pipeline}' is already unpaused.") from None
        return _unpaused(pipeline)
    _require_confirm()
    _form(gocd_wire.GoCDEmptyForm, _form_pairs())
    _execute(commands.UnpausePipeline(pipeline))
    return _unpaused(pipeline)


@route(
    routes,
    "/go/api/pipelines/{pipeline}/releaseLock",
    methods=["POST"],
    content_types=BODY_TYPES,
    dialect="gocd",
    acts_on=_PIPELINE,
    render_error=text_error,
    openapi=_text_doc(200),
    summary="GoCD: release a pipeline lock",
)
def release_lock(pipeline):
    """The run holding the pipeline's default concurrency group (QUEUED or SUPERSEDED pipelines:
    GoCD's lock) lets it go while it keeps running, and the oldest queued run starts, as GoCD
    lets a new instance start without waiting for the locked one. A pipeline not locked answers
    the same text (nothing to release)."""
    _require_confirm()
    _form(gocd_wire.GoCDEmptyForm, _form_pairs())
    _execute(commands.ReleaseLock(pipeline))
    return _text(f"pipeline lock released for {pipeline}")


_SCHEDULE_FORM = {name: {"type": "string"} for name in
                  ("variables[NAME]", "secure_variables[NAME]", "materials[NAME]")}


@route(
    routes,
    "/go/api/pipelines/{pipeline}/unlock",
    methods=["POST"],
    content_types=BODY_TYPES,
    dialect="gocd",
    acts_on=_PIPELINE,
    render_error=current_error(PIPELINE_OPERATIONS),
    openapi=_current_doc(PIPELINE_OPERATIONS),
    summary="GoCD v1: release a pipeline lock (the current form of releaseLock)",
)
def unlock_pipeline(pipeline):
    """As releaseLock (its current form)."""
    _current_api(PIPELINE_OPERATIONS, only=True)
    _current_body(gocd_wire.GoCDEmptyForm)
    _execute(commands.ReleaseLock(pipeline))
    return _message(f"Pipeline lock released for {pipeline}", PIPELINE_OPERATIONS)


def _schedule_current(pipeline: str) -> Response:
    body = _current_body(gocd_wire.GoCDScheduleIn)
    variables = {v.name: v.text for v in body.environment_variables if not v.is_secret}
    secrets = {v.name: v.text for v in body.environment_variables if v.is_secret}
    _execute(commands.SchedulePipeline(
        pipeline, source="gocd", creator=current_token_name(), variables=variables or None,
        secret_variables=secrets or None, commit=body.commit_for(pipeline)))
    return _scheduled(pipeline)


@route(
    routes,
    "/go/api/pipelines/{pipeline}/schedule",
    methods=["POST"],
    content_types=BODY_TYPES,
    dialect="gocd",
    acts_on=_PIPELINE,
    render_error=text_or_current_error(PIPELINE_OPERATIONS),
    replay=lambda effect, pipeline: _scheduled(pipeline),
    openapi=_both_doc(202, _SCHEDULE_FORM, _SCHEDULE_JSON, PIPELINE_OPERATIONS),
    summary="GoCD: schedule a run like the latest (17.1: form data variables[NAME]=value; "
    "v1: JSON environment_variables, materials)",
)
def schedule_pipeline(pipeline):
    if _current_api(PIPELINE_OPERATIONS):
        return _schedule_current(pipeline)
    _require_confirm()
    form = _form(gocd_wire.GoCDScheduleForm, _form_pairs(), lists=True)
    if len(form.variables) + len(form.secure_variables) > gocd_wire.MAX_VARIABLES:
        raise BadRequest(f"at most {gocd_wire.MAX_VARIABLES} variables and secure_variables together",
                         details=[{"field": "variables"}])
    _execute(commands.SchedulePipeline(
        pipeline, source="gocd", creator=current_token_name(), variables=form.variables or None,
        secret_variables=form.secure_variables or None))
    return _scheduled(pipeline)


# The answers to schedule, pause and unpause, in the form (17.1 text or current JSON) the request
# asks for: also to a repeated Idempotency-Key whose change was written but whose response was
# lost, since GoCD's answers to these POSTs do not depend on what was written.

def _scheduled(pipeline: str) -> Response:
    if _current_api(PIPELINE_OPERATIONS):
        return _message(f"Request to schedule pipeline {pipeline} accepted", PIPELINE_OPERATIONS, 202)
    return _text(f"Request to schedule pipeline {pipeline} accepted", 202)


def _paused(pipeline: str) -> Response:
    if _current_api(PIPELINE_OPERATIONS):
        return _message(f"Pipeline '{pipeline}' paused successfully.", PIPELINE_OPERATIONS)
    return _text("")


def _unpaused(pipeline: str) -> Response:
    if _current_api(PIPELINE_OPERATIONS):
        return _message(f"Pipeline '{pipeline}' unpaused successfully.", PIPELINE_OPERATIONS)
    return _text("")


# ---- server -----------------------------------------------------------------------------------

@route(routes, "/go/api/version", methods=["GET"], scope="public", dialect="gocd",
       render_error=json_error(V1_JSON), openapi=_json_doc("application/vnd.go.cd.v1+json", public=True),
       summary="GoCD: the GoCD API version these endpoints implement (public, like /health)")
def version():
    """Public, as the reference's example calls it without credentials: it answers a constant
    (the API level implemented) and reveals nothing about any pipeline."""
    _accept_json()
    return _json(gocd_wire.gocd_version(f"{base_url(_request())}/go/api/version"), V1_JSON)
