"""HTTP translation shared by every blueprint: body parsing, error shapes, one route helper."""
from __future__ import annotations

import contextvars
import functools
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote

from chalice import Blueprint, Chalice, Response
from pydantic import BaseModel, ValidationError

from ..domain import aksk, auth
from ..domain.auth import Forbidden, Principal, RateLimited, RateState, Unauthorized
from ..domain.errors import (
    BadRequest,
    Conflict,
    DomainError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)
from . import idempotency

log = logging.getLogger("stagetrack.api")

STATUS_BY_ERROR: list[tuple[type[DomainError], int]] = [
    (BadRequest, 400),
    (ValidationFailed, 422),
    (PayloadTooLarge, 413),
    (NotFound, 404),
    (MethodNotAllowed, 405),
    (Conflict, 409),
    (UnsupportedMediaType, 415),
    (Unauthorized, 401),
    (Forbidden, 403),
    (RateLimited, 429),
]

# The request body media types a route accepts unless it says otherwise (route(content_types=)).
# Chalice itself is told every route takes any type ("*/*"): its own 415 has its own shape
# ({"Code": ...}), so the list is checked by _check_content_type, in ours. A route reading JSON
# (parse_body) refuses anything but JSON with 415 as well.
ACCEPTED_CONTENT_TYPES = ["application/json"]  # a route taking more says so (GoCD forms, webhooks)

# Every method a path can be asked for; api/fallbacks.py answers the ones a path does not serve.
ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

M = TypeVar("M", bound=BaseModel)


def error_body(code: str, message: str, details: object | None = None) -> dict:
    error: dict = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def json_response(body: object, status: int = 200, headers: dict | None = None) -> Response:
    merged: dict[str, str | list[str]] = {"Content-Type": "application/json"}
    if headers:
        merged.update(headers)
    return Response(body=json.dumps(body, separators=(",", ":")), status_code=status, headers=merged)


def error_response(error: DomainError) -> Response:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return json_response(error_body(error.code, error.message, error.details), status,
                                 getattr(error, "headers", None))
    return json_response(error_body("internal_error", "internal error"), 500)


def status_of(error: DomainError) -> int:
    return next((status for cls, status in STATUS_BY_ERROR if isinstance(error, cls)), 500)


def route(blueprint: Blueprint, path: str, *, methods: list[str], scope: str | None = None,
          acts_on: auth.ActsOn | None = None, render_error: Callable | None = None,
          body: type[BaseModel] | None = None, query: type[BaseModel] | None = None,
          response: type[BaseModel] | dict | None = None, status: int | None = None,
          summary: str | None = None, max_body: int | Callable | None = None, idempotency_key: bool = True,
          dialect: str | None = None, openapi: dict | None = None,
          replay: Callable[..., Response] | None = None, **options) -> Callable:
    """Register a view whose domain errors become JSON errors and whose bugs never leak a trace.

    Every route is authenticated and authorized here, once (see ``_secure``):
    - ``scope``: "read" | "operate" | "admin" | "public"; by default GET/HEAD need read, other
      methods operate, /api/tokens and /api/subscriptions admin. "public" skips credentials
      (the OpenAPI document, the health check, signature-verified webhooks).
    - ``acts_on``: required on every route that is not public (a ValueError at import
      otherwise): where a request names the pipeline it acts on, for tokens limited to some
      pipelines (domain/auth.py ``ActsOn``). ``auth.acts_on(path={"run_id": auth.RUN})``,
      ``auth.acts_on(query={"pipeline": auth.PIPELINE})`` (a listing filtered by it),
      ``auth.acts_on(body={"pipelines": auth.PIPELINES})``; ``auth.ACTS_ON_NO_SINGLE_PIPELINE``
      (a limited token gets 403); ``auth.ACTS_ON_OWN_RECORDS`` (tokens, subscriptions: the
      service shows and changes only records within the caller); ``auth.resolved_by(fn)`` (a
      dialect's own ids). Only the declared places are read: any other query parameter or
      body field never counts for authorization.
    - ``render_error(error, status) -> Response``: a dialect's own error shape; ``dialect``
      names it ("gocd", "codearts", "buddy") and ``openapi`` gives the operation's documented
      responses/requestBody/parameters (api/openapi.py), since they are not the native ones.
    - ``max_body``: bytes, or ``callable(settings) -> bytes``; larger bodies are 413 before the
      view runs (default: the setting ``max_body_bytes``).
    - ``idempotency_key``: POSTs honour an Idempotency-Key header (api/idempotency.py); False for
      routes that give the header a meaning of their own (e.g. a webhook's delivery id).
    - ``replay(effect, **path_params) -> Response``: the answer to a repeated key whose first
      request committed its effect (``effect``, e.g. ``{"run": id}``) but died before its
      response was stored; re-rendered from current state, never by running the view again.
    - ``body``/``query``/``response``/``status``/``summary``: documentation for /openapi.json.
    - ``content_types``: the media types a request body may have (default ACCEPTED_CONTENT_TYPES);
      a body in any other is 415 ``unsupported_media_type`` (in the route's error shape).
    A GET route also answers HEAD: the same status and headers, no body (not documented apart).
    """
    accepts = tuple(t.lower() for t in options.pop("content_types", ACCEPTED_CONTENT_TYPES))
    spec = RouteSpec(path=path, methods=tuple(m.upper() for m in methods),
                     scope=auth.required_scope(methods[0], path, scope),
                     acts_on=_checked_declaration(path, auth.required_scope(methods[0], path, scope),
                                                  acts_on),
                     body=body, query=query, response=response, status=status, summary=summary,
                     max_body=max_body, dialect=dialect, openapi=openapi, accepts=accepts)
    served = list(spec.methods) + (["HEAD"] if "GET" in spec.methods and "HEAD" not in spec.methods else [])
    if len({auth.required_scope(m, path, scope) for m in methods}) > 1:
        raise ValueError(f"{path}: methods needing different scopes need separate routes")
    render = render_error or (lambda error, _status: error_response(error))

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def handler(*args, **kwargs):
            try:
                if "POST" in methods and idempotency_key:  # once for every POST (api/idempotency.py)
                    answer = None if replay is None else (lambda effect: replay(effect, *args, **kwargs))
                    return idempotency.guard(blueprint.current_request, path,
                                             lambda: view(*args, **kwargs), answer)
                return view(*args, **kwargs)
            except DomainError as error:
                return render(error, status_of(error))
            except Exception:  # a bug: log it with its trace, answer without one
                log.exception("unhandled error in %s %s", methods, path)
                return render(DomainError("internal error"), 500)

        blueprint.route(path, methods=served, content_types=["*/*"], **options)(
            _secure(handler, blueprint, spec, render))
        return view

    return decorator


_PATH_PARAM = re.compile(r"{([^{}]+)}")


def _checked_declaration(path: str, scope: str, declared: auth.ActsOn | None) -> auth.ActsOn | None:
    """Refuse, at registration, a route that could be authorized from what it did not declare:
    a non-public route without ``acts_on``, a public one with it (it takes no token, so the
    declaration would mislead), or one naming a path parameter its path does not have."""
    if scope == auth.PUBLIC:
        if declared is not None:
            raise ValueError(f"{path}: a public route takes no token; it declares no acts_on")
        return None
    if not isinstance(declared, auth.ActsOn):
        raise ValueError(f"{path}: declare what the route acts on: acts_on=auth.acts_on(...), "
                         "auth.ACTS_ON_NO_SINGLE_PIPELINE, auth.ACTS_ON_OWN_RECORDS or "
                         "auth.resolved_by(...)")
    params = set(_PATH_PARAM.findall(path))
    unknown = [name for name, _kind in declared.path if name not in params]
    if unknown:
        raise ValueError(f"{path}: acts_on names path parameters it does not have: {unknown}")
    return declared


# ---- authentication, authorization, rate limit and access log: once for every route ---------

access_log = logging.getLogger("stagetrack.access")
_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


@dataclass(frozen=True)
class RouteSpec:
    """What a route needs and documents; kept on its handler as ``route_spec``."""

    path: str
    methods: tuple[str, ...]
    scope: str
    acts_on: auth.ActsOn | None  # None only on public routes
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | dict | None = None
    status: int | None = None
    summary: str | None = None
    max_body: int | Callable | None = None
    dialect: str | None = None
    openapi: dict | None = None
    accepts: tuple[str, ...] = ()  # request body media types; () = any (api/fallbacks.py)


def current_principal() -> Principal | None:
    """The caller of the request being handled (None on public routes)."""
    return _principal.get()


def authenticated_principal() -> Principal:
    """The caller of a request being handled on an authenticated route (an acts_on resolver's);
    401 where there is none."""
    principal = _principal.get()
    if principal is None:
        raise Unauthorized("authentication required")
    return principal


def current_actor() -> str | None:
    """The name to record as who did something: the Basic auth user, else the token's name."""
    principal = _principal.get()
    return None if principal is None else principal.actor


class SecuredView:
    """A route's view as chalice calls it: the handler behind authentication, carrying what the
    route declares (``route_spec``) and how it renders errors (``render_error``)."""

    def __init__(self, secured: Callable[..., Any], spec: RouteSpec, render: Callable[..., Response]) -> None:
        functools.update_wrapper(self, secured)
        self._secured = secured
        self.route_spec = spec
        self.render_error = render  # api/fallbacks.py answers the path's other methods in its shape

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._secured(*args, **kwargs)


def _secure(handler: Callable, blueprint: Blueprint | Chalice, spec: RouteSpec,
            render: Callable[..., Response]) -> SecuredView:
    @functools.wraps(handler)
    def secured(*args: Any, **kwargs: Any) -> Response:
        started = time.perf_counter()
        request = blueprint.current_request
        assert request is not None, "chalice sets current_request before it calls a view"
        if any(isinstance(v, str) and "%" in v for v in kwargs.values()):
            # chalice local passes path parameters still percent-encoded ("web%3A1" for a client
            # that encodes ':'); decode them once, for the view and for authorization alike.
            kwargs = {k: unquote(v) if isinstance(v, str) else v for k, v in kwargs.items()}
            request.uri_params = {**(request.uri_params or {}), **kwargs}
        context = request.context if isinstance(request.context, dict) else {}
        request_id = context.get("requestId") or uuid.uuid4().hex
        context["requestId"] = request_id
        principal: Principal | None = None
        rate: RateState | None = None
        token = _principal.set(None)
        try:
            try:
                if spec.scope != auth.PUBLIC:
                    principal, rate = _authenticate(request)
                    _principal.set(principal)
                    context["authorizer"] = {"principalId": principal.token_id, "actor": principal.actor}
                    auth.check_scope(principal, spec.scope)  # first: its 403 says nothing of pipelines
                    auth.authorize(principal, spec.scope, _pipeline_refs(request, spec, principal))
                _check_body_size(request, spec)
                _check_content_type(request, spec)
            except DomainError as error:
                response = render(error, status_of(error))
                response.headers.update(getattr(error, "headers", None) or {})
            else:
                response = handler(*args, **kwargs)
                if not isinstance(response, Response):
                    response = Response(body=response)
        finally:
            _principal.reset(token)
        headers = response.headers if response.headers is not None else {}
        response.headers = headers
        if rate is not None:
            headers.update(rate.headers())
        headers["X-Request-Id"] = request_id
        if request.method == "HEAD":  # GET's status and headers; no body (API Gateway would drop it)
            response.body = ""
        access_log.info("request", extra={"fields": {
            "requestId": request_id, "method": request.method, "path": context.get("path") or spec.path,
            "route": spec.path, "status": response.status_code,
            "latencyMs": round((time.perf_counter() - started) * 1000, 2),
            "tokenId": principal.token_id if principal else None,
            "actor": principal.actor if principal else None,
        }})
        return response

    return SecuredView(secured, spec, render)


def declared_routes(app) -> list[tuple[str, str]]:
    """(path, method) of every route as declared with route(): without the HEAD each GET also
    answers and the fallbacks (api/fallbacks.py) for the methods a path does not serve."""
    declared = []
    for path, entries in app.routes.items():
        for method, entry in entries.items():
            spec = getattr(entry.view_function, "route_spec", None)
            if spec is None or method in spec.methods:  # one without a spec is shown, to be refused
                declared.append((path, method))
    return sorted(declared)


_MEDIA_TYPE = re.compile(r"^[a-z0-9!#$&^_.+\-]{1,64}/[a-z0-9!#$&^_.+\-]{1,64}$")


def media_type(request) -> str:
    """The request body's media type, lower case, without parameters; JSON when none is given
    (as Chalice and API Gateway assume)."""
    return (request.headers.get("content-type") or "").split(";")[0].strip().lower() or "application/json"


def _check_content_type(request, spec: RouteSpec) -> None:
    """A body in a media type the route does not list is 415. Only a body has a media type:
    a request without one passes whatever Content-Type it names."""
    if not spec.accepts or not request.raw_body:
        return
    media = media_type(request)
    if media not in spec.accepts:
        named = repr(media) if _MEDIA_TYPE.match(media) else "this media type"  # echo nothing odd
        raise UnsupportedMediaType(f"a request body in {named} is not accepted here; send one of: "
                                   + ", ".join(spec.accepts))


def _check_body_size(request, spec: RouteSpec) -> None:
    """Every route, whatever its view does with the body: nothing larger gets in."""
    from .. import wiring

    settings = wiring.context().settings
    limit = spec.max_body(settings) if callable(spec.max_body) else spec.max_body or settings.max_body_bytes
    size = len(request.raw_body or b"")
    if size > limit:
        raise PayloadTooLarge(f"request body is {size} bytes; the limit is {limit}")


def _authenticate(request) -> tuple[Principal, RateState | None]:
    from .. import wiring
    from ..service import tokens

    credentials = auth.parse_credentials(request.headers)
    signed = (
        _signed_request(request) if credentials and credentials.scheme == auth.ACCESS_KEY_SCHEME else None
    )
    return tokens.authenticate(wiring.context(), credentials, signed)


def _signed_request(request) -> aksk.SignedRequest:
    """The request as an AK/SK signature covers it: the path as the client sent it (API Gateway's
    and chalice local's ``requestContext.path``), every query value, the headers, the raw body."""
    context = request.context if isinstance(request.context, dict) else {}
    query = request.query_params
    pairs = tuple((name, value) for name in query for value in query.getlist(name)) if query else ()
    return aksk.SignedRequest(method=request.method, path=context.get("path") or request.path,
                              query=pairs, headers=request.headers, body=request.raw_body or b"")


def _pipeline_refs(request, spec: RouteSpec, principal: Principal) -> list[auth.PipelineRef] | None:
    """The pipelines this request acts on, read only from the places its route declared; only
    worked out for tokens limited to some. None: the service checks the records itself."""
    declared = spec.acts_on
    assert declared is not None, "route() refuses a non-public route without acts_on"
    if principal.pipelines is None or declared.rule == auth.OWN_RECORDS:
        return None
    if declared.rule == auth.NO_SINGLE_PIPELINE:
        raise Forbidden("this token is limited to some pipelines; this route acts on no single "
                        "pipeline and needs a token that is not")
    if declared.rule == auth.RESOLVED:
        assert declared.resolver is not None, "resolved_by() always sets a callable"
        named = declared.resolver(request)
        single = isinstance(named, (str, auth.PipelineRef))
        names = [] if named is None else [named] if single else list(named)
        return [n if isinstance(n, auth.PipelineRef) else auth.PipelineRef(n, f"pipeline {n!r} not found")
                for n in names]
    query = request.query_params
    values = {name: list(query.getlist(name)) if query else [] for name, _kind in declared.query}
    body = json_body_fields(request) if declared.body else None
    return auth.named_refs(declared, request.uri_params or {}, values, body)


class _JsonObject:
    """A JSON object as its (key, value) pairs, every one of a repeated key kept."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, object]]) -> None:
        self.pairs = pairs


def json_body_fields(request) -> list[tuple[str, object]] | None:
    """The top-level fields of a JSON object body, in order, duplicates included: whichever
    value of a repeated field the view's parser keeps, authorization has seen it. None for
    anything else (the view answers 400 for it; a limited token gets 403 first)."""
    from .. import wiring

    raw = request.raw_body or b""
    if not raw or len(raw) > wiring.context().settings.max_body_bytes:
        return None
    try:
        body = json.loads(raw, object_pairs_hook=_JsonObject)
    except (ValueError, RecursionError):
        return None
    return body.pairs if isinstance(body, _JsonObject) else None


def _field_errors(error: ValidationError) -> list[dict]:
    return [
        {
            "field": ".".join(str(part) for part in item["loc"]) or "(body)",
            "message": item["msg"],
            "type": item["type"],
        }
        for item in error.errors(include_url=False, include_input=False)
    ]


def parse_body(request, model: type[M], max_bytes: int) -> M:
    """Malformed JSON or a non-object body is 400; a body that fails the schema is 422; a body
    that is not application/json is 415."""
    raw = request.raw_body or b""
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"request body is {len(raw)} bytes; the limit is {max_bytes}")
    if raw and media_type(request) != "application/json":
        raise UnsupportedMediaType("send the body as application/json")
    try:
        return model.model_validate_json(raw or b"")
    except ValidationError as error:
        fields = _field_errors(error)
        if any(f["type"] == "json_invalid" for f in fields):
            raise BadRequest("request body is not valid JSON") from None
        if any(f["field"] == "(body)" and f["type"] == "model_type" for f in fields):
            raise BadRequest("request body must be a JSON object") from None
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        raise ValidationFailed(summary, details=fields) from None


_HOST = re.compile(r"^[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?$")


def base_url(request) -> str:
    """Scheme, host and API Gateway stage the client called, for the absolute URLs some
    dialects answer with (Buddy's ``url``, GoCD's ``_links``). A Host header that is not a plain
    host[:port] is not echoed."""
    headers = request.headers
    host = (headers.get("host") or "").strip()
    if not _HOST.fullmatch(host):
        host = "localhost"
    scheme = (headers.get("x-forwarded-proto") or "http").split(",")[0].strip().lower()
    if scheme not in ("http", "https"):
        scheme = "http"
    context = request.context if isinstance(request.context, dict) else {}
    stage, path = context.get("stage"), context.get("path") or ""
    prefix = f"/{stage}" if stage and path.startswith(f"/{stage}/") else ""
    return f"{scheme}://{host}{prefix}"


def parse_query(params: dict | None, model: type[M]) -> M:
    """Query strings are text; numbers in them are parsed here, so this is lax, not strict."""
    try:
        return model.model_validate(dict(params or {}), strict=False)
    except ValidationError as error:
        fields = _field_errors(error)
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        raise BadRequest(summary, details=fields) from None
