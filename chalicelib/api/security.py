"""Security, once for every route (api/routing.py calls it): who is calling (the credentials in
the headers, api/credentials.py, checked by service/tokens.py), whether they may (scope, and the
pipelines the route declared it acts on, domain/auth.py), their rate budget, the request id and
the access log line.

The caller of the request being handled is kept in a context variable: views read it with
``current_principal()``/``current_actor()``, never from the request.
"""
from __future__ import annotations

import contextvars
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from chalice import Response

from .. import wiring
from ..domain import auth
from ..domain.auth import Forbidden, Principal, RateState, Unauthorized
from ..service import tokens
from . import aksk
from .credentials import parse_credentials, session_cookie
from .parsing import json_body_fields

access_log = logging.getLogger("stagetrack.access")
_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


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


def current_token_name() -> str | None:
    """The name of the token that authenticated this request (never the Basic auth user name,
    which the client chooses): whose the runs it creates are."""
    principal = _principal.get()
    return None if principal is None else principal.name


def current_actor() -> str | None:
    """The name to record as who did something: the Basic auth user, else the token's name."""
    principal = _principal.get()
    return None if principal is None else principal.actor


@dataclass
class Caller:
    """Who a request is from, as far as admission got (the access log names a caller refused
    for its scope), and what is left of their rate budget."""

    principal: Principal | None = None
    rate: RateState | None = None


@contextmanager
def calling() -> Iterator[Caller]:
    """The span of one request: its caller is current inside, and no one's outside."""
    token = _principal.set(None)
    try:
        yield Caller()
    finally:
        _principal.reset(token)


def admit(request, scope: str, declared: auth.ActsOn | None, caller: Caller) -> None:
    """401 without valid credentials, 429 past the rate limit, 403 without the scope (checked
    first: its 403 says nothing of pipelines), 404/403 for a pipeline-limited token on a request
    about other pipelines. A public route admits everyone."""
    if scope == auth.PUBLIC:
        return
    principal, caller.rate = authenticate(request)
    caller.principal = principal
    _principal.set(principal)
    context = request.context if isinstance(request.context, dict) else {}
    context["authorizer"] = {"principalId": principal.token_id, "actor": principal.actor}
    auth.check_scope(principal, scope)
    auth.authorize(principal, scope, pipeline_refs(request, declared, principal))


def authenticate(request) -> tuple[Principal, RateState | None]:
    """The credentials in the headers; without any, the dashboard's session cookie, which must
    come with its CSRF token on every write (403 ``csrf_failed``). A request carrying a token is
    never read as a session: clients with tokens are unaffected by cookies."""
    credentials = parse_credentials(request.headers, lambda: signed_request(request))
    if credentials is None:
        session_id = session_cookie(request.headers)
        if session_id is not None:
            session, rate = tokens.resume_session(wiring.context(), session_id)
            if request.method.upper() not in auth.READ_METHODS:
                auth.check_csrf(request.headers.get("x-csrf-token"), session.csrf_token)
            return session.principal, rate
    return tokens.authenticate(wiring.context(), credentials)


def signed_request(request) -> aksk.SignedRequest:
    """The request as an AK/SK signature covers it: the path as the client sent it (API Gateway's
    and chalice local's ``requestContext.path``), every query value, the headers, the raw body."""
    context = request.context if isinstance(request.context, dict) else {}
    query = request.query_params
    pairs = tuple((name, value) for name in query for value in query.getlist(name)) if query else ()
    return aksk.SignedRequest(method=request.method, path=context.get("path") or request.path,
                              query=pairs, headers=request.headers, body=request.raw_body or b"")


def _values(query, name: str) -> list[str]:
    """Every value of query parameter ``name``; none when it is absent (chalice's MultiDict
    raises KeyError then, even when other parameters are present)."""
    try:
        return list(query.getlist(name)) if query else []
    except KeyError:
        return []


def pipeline_refs(request, declared: auth.ActsOn | None,
                  principal: Principal) -> list[auth.PipelineRef] | None:
    """The pipelines this request acts on, read only from the places its route declared; only
    worked out for tokens limited to some. None: the service checks the records itself."""
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
    values = {name: _values(query, name) for name, _kind in declared.query}
    body = json_body_fields(request) if declared.body else None
    refs = auth.named_refs(declared, request.uri_params or {}, values, body)
    if not refs and declared.optional:
        return None  # nothing named: the service shows the caller only its own pipelines
    return refs


# ---- request id, rate headers and the access log ---------------------------------------------

def request_id(request) -> str:
    """API Gateway's request id (chalice local's), or a new one; kept in the request context."""
    context = request.context if isinstance(request.context, dict) else {}
    found = context.get("requestId") or uuid.uuid4().hex
    context["requestId"] = found
    return found


def stamp(response: Response, caller: Caller, request_id: str) -> None:
    """The caller's rate budget (``X-Rate-Limit-*``) and the request id on every answer."""
    headers = response.headers if response.headers is not None else {}
    response.headers = headers
    if caller.rate is not None:
        headers.update(caller.rate.headers())
    headers["X-Request-Id"] = request_id


def log_access(request, route_path: str, response: Response, caller: Caller, request_id: str,
               started: float) -> None:
    """One line per request: never a query string, a body or a credential."""
    context = request.context if isinstance(request.context, dict) else {}
    principal = caller.principal
    access_log.info("request", extra={"fields": {
        "requestId": request_id, "method": request.method, "path": context.get("path") or route_path,
        "route": route_path, "status": response.status_code,
        "latencyMs": round((time.perf_counter() - started) * 1000, 2),
        "tokenId": principal.token_id if principal else None,
        "actor": principal.actor if principal else None,
    }})
