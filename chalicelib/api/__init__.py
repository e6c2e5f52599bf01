"""HTTP translation shared by every blueprint: body parsing, error shapes, one route helper."""
from __future__ import annotations

import contextvars
import functools
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Callable, TypeVar
from urllib.parse import unquote

from chalice import Blueprint, Response
from pydantic import BaseModel, ValidationError

from ..domain.errors import (
    BadRequest,
    Conflict,
    DomainError,
    NotFound,
    PayloadTooLarge,
    ValidationFailed,
)
from ..domain import auth
from ..domain.auth import Forbidden, Principal, RateLimited, RateState, Unauthorized
from . import idempotency

log = logging.getLogger("stagetrack.api")

STATUS_BY_ERROR: list[tuple[type[DomainError], int]] = [
    (BadRequest, 400),
    (ValidationFailed, 422),
    (PayloadTooLarge, 413),
    (NotFound, 404),
    (Conflict, 409),
    (Unauthorized, 401),
    (Forbidden, 403),
    (RateLimited, 429),
]

# Chalice answers 415 in its own shape for types not listed; these reach our code, which
# refuses anything but JSON in our error shape.
ACCEPTED_CONTENT_TYPES = [
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "application/octet-stream",
]

M = TypeVar("M", bound=BaseModel)


def error_body(code: str, message: str, details: object | None = None) -> dict:
    error: dict = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def json_response(body: object, status: int = 200, headers: dict | None = None) -> Response:
    merged = {"Content-Type": "application/json"}
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
          pipeline: str | Callable = "derive", render_error: Callable | None = None,
          body: type[BaseModel] | None = None, query: type[BaseModel] | None = None,
          response: type[BaseModel] | dict | None = None, status: int | None = None,
          summary: str | None = None, max_body: int | Callable | None = None, idempotency_key: bool = True,
          dialect: str | None = None, openapi: dict | None = None, **options) -> Callable:
    """Register a view whose domain errors become JSON errors and whose bugs never leak a trace.

    Every route is authenticated and authorized here, once (see ``_secure``):
    - ``scope``: "read" | "operate" | "admin" | "public"; by default GET/HEAD need read, other
      methods operate, /api/tokens and /api/subscriptions admin. "public" skips credentials
      (the OpenAPI document, the health check, signature-verified webhooks).
    - ``pipeline``: how to find the pipeline a request concerns, for tokens limited to some
      pipelines. "derive" (default) reads path/query parameters and top-level JSON body fields
      named pipeline, pipeline_name, run_id/runId, stage_id/stageId; "global" says the route
      reveals nothing about any pipeline; or ``callable(request) -> name | [names] | None``
      (names may be ``auth.PipelineRef``s, to say how to answer 404 for them).
    - ``render_error(error, status) -> Response``: a dialect's own error shape; ``dialect``
      names it ("gocd", "codearts", "buddy") and ``openapi`` gives the operation's documented
      responses/requestBody/parameters (api/openapi.py), since they are not the native ones.
    - ``max_body``: bytes, or ``callable(settings) -> bytes``; larger bodies are 413 before the
      view runs (default: the setting ``max_body_bytes``).
    - ``idempotency_key``: POSTs honour an Idempotency-Key header (api/idempotency.py); False for
      routes that give the header a meaning of their own (e.g. a webhook's delivery id).
    - ``body``/``query``/``response``/``status``/``summary``: documentation for /openapi.json.
    """
    spec = RouteSpec(path=path, methods=tuple(m.upper() for m in methods),
                     scope=auth.required_scope(methods[0], path, scope), pipeline=pipeline,
                     body=body, query=query, response=response, status=status, summary=summary,
                     max_body=max_body, dialect=dialect, openapi=openapi)
    if len({auth.required_scope(m, path, scope) for m in methods}) > 1:
        raise ValueError(f"{path}: methods needing different scopes need separate routes")
    render = render_error or (lambda error, _status: error_response(error))

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def handler(*args, **kwargs):
            try:
                if "POST" in methods and idempotency_key:  # once for every POST (api/idempotency.py)
                    return idempotency.guard(blueprint.current_request, path,
                                             lambda: view(*args, **kwargs))
                return view(*args, **kwargs)
            except DomainError as error:
                return render(error, status_of(error))
            except Exception:  # a bug: log it with its trace, answer without one
                log.exception("unhandled error in %s %s", methods, path)
                return render(DomainError("internal error"), 500)

        options.setdefault("content_types", ACCEPTED_CONTENT_TYPES)
        blueprint.route(path, methods=methods, **options)(_secure(handler, blueprint, spec, render))
        return view

    return decorator


# ---- authentication, authorization, rate limit and access log: once for every route ---------

access_log = logging.getLogger("stagetrack.access")
_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


@dataclass(frozen=True)
class RouteSpec:
    """What a route needs and documents; kept on its handler as ``route_spec``."""

    path: str
    methods: tuple[str, ...]
    scope: str
    pipeline: str | Callable
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | dict | None = None
    status: int | None = None
    summary: str | None = None
    max_body: int | Callable | None = None
    dialect: str | None = None
    openapi: dict | None = None


def current_principal(request=None) -> Principal | None:
    """The caller of the request being handled (None on public routes)."""
    return _principal.get()


def current_actor(request=None) -> str | None:
    """The name to record as who did something: the Basic auth user, else the token's name."""
    principal = _principal.get()
    return None if principal is None else principal.actor


def _secure(handler: Callable, blueprint: Blueprint, spec: RouteSpec, render: Callable) -> Callable:
    @functools.wraps(handler)
    def secured(*args, **kwargs):
        started = time.perf_counter()
        request = blueprint.current_request
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
                    auth.authorize(principal, spec.scope, _pipeline_refs(request, spec, principal))
                _check_body_size(request, spec)
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
        access_log.info("request", extra={"fields": {
            "requestId": request_id, "method": request.method, "path": context.get("path") or spec.path,
            "route": spec.path, "status": response.status_code,
            "latencyMs": round((time.perf_counter() - started) * 1000, 2),
            "tokenId": principal.token_id if principal else None,
            "actor": principal.actor if principal else None,
        }})
        return response

    secured.route_spec = spec
    return secured


def _check_body_size(request, spec: RouteSpec) -> None:
    """Every route, whatever its view does with the body: nothing larger gets in."""
    from .. import wiring

    settings = wiring.context().repo.settings
    limit = spec.max_body(settings) if callable(spec.max_body) else spec.max_body or settings.max_body_bytes
    size = len(request.raw_body or b"")
    if size > limit:
        raise PayloadTooLarge(f"request body is {size} bytes; the limit is {limit}")


def _authenticate(request) -> tuple[Principal, RateState | None]:
    from .. import wiring
    from ..service import tokens

    return tokens.authenticate(wiring.context(), auth.parse_credentials(request.headers))


def _pipeline_refs(request, spec: RouteSpec, principal: Principal) -> list[auth.PipelineRef] | None:
    """The pipelines this request names; only worked out for tokens limited to some."""
    if principal.pipelines is None or spec.pipeline == "global":
        return None
    if callable(spec.pipeline):
        named = spec.pipeline(request)
        single = isinstance(named, (str, auth.PipelineRef))
        names = [] if named is None else [named] if single else list(named)
        return [n if isinstance(n, auth.PipelineRef) else auth.PipelineRef(n, f"pipeline {n!r} not found")
                for n in names]
    from .. import wiring

    body = None
    raw = request.raw_body or b""
    if raw and len(raw) <= wiring.context().repo.settings.max_body_bytes:
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            body = None  # the view answers 400 for it
    pairs: list[tuple[str, object]] = list((request.uri_params or {}).items())
    query = request.query_params
    if query:
        pairs += [(name, value) for name in query for value in query.getlist(name)]
    if isinstance(body, dict):
        pairs += list(body.items())
    return auth.pipeline_refs(pairs)


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
    """Malformed JSON or a non-object body is 400; a body that fails the schema is 422."""
    raw = request.raw_body or b""
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"request body is {len(raw)} bytes; the limit is {max_bytes}")
    content_type = (request.headers.get("content-type") or "application/json").split(";")[0].strip()
    if raw and content_type.lower() != "application/json":
        raise BadRequest(f"send the body as application/json, not {content_type}")
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
    if not _HOST.match(host):
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
