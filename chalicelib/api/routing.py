"""The route decorator every blueprint uses: ``route()`` registers a view behind security
(api/security.py), the request checks every route shares (api/parsing.py), Idempotency-Key
handling for POSTs (api/idempotency.py) and one error rendering (api/responses.py, or the
dialect's own), and keeps what the route declares (``RouteSpec``) on the handler for
/openapi.json, the fallbacks and the tests (``declared_routes``).
"""
from __future__ import annotations

import functools
import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from chalice import Blueprint, Chalice, Response
from pydantic import BaseModel

from ..domain import auth
from ..domain.errors import DomainError
from . import idempotency, security
from .parsing import ACCEPTED_CONTENT_TYPES, check_body_size, check_content_type
from .responses import error_response, status_of

log = logging.getLogger("stagetrack.api")

# Every method a path can be asked for; api/fallbacks.py answers the ones a path does not serve.
ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def route(blueprint: Blueprint, path: str, *, methods: list[str], scope: str | None = None,
          acts_on: auth.ActsOn | None = None, render_error: Callable | None = None,
          body: type[BaseModel] | None = None, query: type[BaseModel] | None = None,
          response: type[BaseModel] | dict | None = None, status: int | None = None,
          summary: str | None = None, max_body: int | Callable | None = None, idempotency_key: bool = True,
          dialect: str | None = None, openapi: dict | None = None, etag: bool = False,
          replay: Callable[..., Response] | None = None, **options) -> Callable:
    """Register a view whose domain errors become JSON errors and whose bugs never leak a trace.

    Every route is authenticated and authorized here, once (see ``secure`` and api/security.py):
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
    - ``etag``: a 200 answer to GET carries an ``ETag`` (a hash of its body) and ``Cache-Control:
      private, no-cache``; a request whose ``If-None-Match`` names it gets 304 without a body
      (what the dashboard polls: an unchanged answer costs a few bytes, not the whole view).
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
                     max_body=max_body, dialect=dialect, openapi=openapi, accepts=accepts, etag=etag)
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
            secure(handler, blueprint, spec, render))
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
    etag: bool = False  # GET answers carry an ETag and honour If-None-Match (304)


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


def secure(handler: Callable, blueprint: Blueprint | Chalice, spec: RouteSpec,
           render: Callable[..., Response]) -> SecuredView:
    """``handler`` behind what every route does before and after its view: percent-decoded
    path parameters, admission (api/security.py), the body's size and media type, the request
    id and rate headers, HEAD without a body, and the access log line."""
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
        request_id = security.request_id(request)
        with security.calling() as caller:
            try:
                security.admit(request, spec.scope, spec.acts_on, caller)
                check_body_size(request, spec.max_body)
                check_content_type(request, spec.accepts)
            except DomainError as error:
                response = render(error, status_of(error))
                response.headers.update(getattr(error, "headers", None) or {})
            else:
                response = handler(*args, **kwargs)
                if not isinstance(response, Response):
                    response = Response(body=response)
        if spec.etag:
            conditional(request, response)
        security.stamp(response, caller, request_id)
        if request.method == "HEAD":  # GET's status and headers; no body (API Gateway would drop it)
            response.body = ""
        security.log_access(request, spec.path, response, caller, request_id, started)
        return response

    return SecuredView(secured, spec, render)


def conditional(request, response: Response) -> None:
    """ETag and 304 for a 200 answer to GET/HEAD: the tag is a hash of the body, so two answers
    share one exactly when their bytes do (a running stage's growing duration changes it)."""
    if request.method not in ("GET", "HEAD") or response.status_code != 200:
        return
    body = response.body if isinstance(response.body, bytes) else str(response.body or "").encode()
    tag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = response.headers if response.headers is not None else {}
    response.headers = headers
    headers["ETag"] = tag
    headers["Cache-Control"] = "private, no-cache"
    presented = (request.headers.get("if-none-match") or "")[:2048]
    tags = {t.strip().removeprefix("W/") for t in presented.split(",")}
    if tag in tags or "*" in tags:
        response.status_code = 304
        response.body = ""
        headers.pop("Content-Type", None)


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
