"""The dashboard's browser session: sign in with a token, see who is signed in, sign out.

The token is posted once in a JSON body (never in a URL) and exchanged for a random session id
in an ``HttpOnly; Secure; SameSite=Strict`` cookie that page scripts cannot read
(service/tokens.py ``sign_in``). Requests carrying that cookie are authenticated by it in
api/security.py, with exactly the token's scopes and pipelines; every write among them must
echo the session's CSRF token in ``X-CSRF-Token`` (403 ``csrf_failed`` otherwise).

The three routes are public (they take no token in a header): sign-in checks the token itself,
the other two read the cookie. Sign-in is not Idempotency-Key replayable, so no response
holding a session is ever stored.
"""
from __future__ import annotations

from chalice import Blueprint, Response

from .. import wiring
from ..domain import auth
from ..domain.auth import SignInIn, Unauthorized
from ..service import tokens
from .credentials import SESSION_COOKIE, session_cookie
from .parsing import parse_body
from .responses import json_response
from .routing import route

routes = Blueprint(__name__)

SIGN_IN_MAX_BODY = 4096  # a token is 46 characters; nothing larger is read
_ATTRIBUTES = "HttpOnly; Secure; SameSite=Strict; Path=/"
_NO_STORE = {"Cache-Control": "no-store"}

_SESSION_OUT = {
    "type": "object", "additionalProperties": False,
    "required": ["name", "scopes", "pipelines", "csrfToken"],
    "properties": {"name": {"type": "string"},
                   "scopes": {"type": "array", "items": {"enum": list(auth.SCOPES)}},
                   "pipelines": {"type": ["array", "null"], "items": {"type": "string"}},
                   "csrfToken": {"type": "string"}},
}


_ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}}
_COOKIE_HEADER = {"Set-Cookie": {"description": "the session cookie (HttpOnly; Secure; SameSite=Strict)",
                                 "schema": {"type": "string"}}}


def _responses(success: dict, *errors: int) -> dict:
    described = {400: "malformed request", 401: "no session, or an unknown or revoked token",
                 403: "a live session without its X-CSRF-Token", 413: "body over 4 KB",
                 415: "not JSON", 422: "no token field", 429: "the token's rate limit"}
    return {"responses": {**success, **{str(code): {"description": described[code], **_ERROR}
                                        for code in errors}}}


def _session_answer() -> dict:
    return {"200": {"description": "the session", "headers": _COOKIE_HEADER,
                    "content": {"application/json": {"schema": _SESSION_OUT}}}}


def set_cookie(session_id: str, max_age: int) -> str:
    return f"{SESSION_COOKIE}={session_id}; {_ATTRIBUTES}; Max-Age={max_age}"


CLEAR_COOKIE = f"{SESSION_COOKIE}=; {_ATTRIBUTES}; Max-Age=0"


def session_view(session: tokens.Session) -> dict:
    principal = session.principal
    return {"name": principal.name, "scopes": list(principal.scopes),
            "pipelines": None if principal.pipelines is None else sorted(principal.pipelines),
            "csrfToken": session.csrf_token}


@route(routes, "/api/session", methods=["POST"], scope="public", body=SignInIn, response=_SESSION_OUT,
       max_body=SIGN_IN_MAX_BODY, idempotency_key=False,
       openapi=_responses(_session_answer(), 400, 401, 413, 415, 422, 429),
       summary="Sign a browser in with a token: a session cookie and its CSRF token")
def sign_in():
    ctx = wiring.context()
    body = parse_body(routes.current_request, SignInIn, SIGN_IN_MAX_BODY)
    session = tokens.sign_in(ctx, body.token)
    max_age = session.expires_at - int(ctx.clock.now().timestamp())
    return json_response(session_view(session), 200,
                         {**_NO_STORE, "Set-Cookie": set_cookie(session.session_id, max_age)})


@route(routes, "/api/session", methods=["GET"], scope="public", response=_SESSION_OUT,
       openapi=_responses(_session_answer(), 401, 429),
       summary="The signed-in browser's token name, scopes, pipelines and CSRF token (401: none)")
def get_session():
    session_id = session_cookie(routes.current_request.headers)
    if session_id is None:
        raise Unauthorized("not signed in: POST /api/session with a token")
    session, _rate = tokens.resume_session(wiring.context(), session_id)
    return json_response(session_view(session), 200, _NO_STORE)


@route(routes, "/api/session", methods=["DELETE"], scope="public", status=204,
       openapi=_responses({"204": {"description": "signed out; the cookie cleared",
                                   "headers": _COOKIE_HEADER}}, 403, 429),
       summary="Sign out: the session stops working at once and its cookie is cleared")
def sign_out():
    """A live session needs its CSRF token (another site cannot sign a visitor out); without a
    session there is nothing to end, and the answer is the same 204."""
    ctx = wiring.context()
    request = routes.current_request
    session_id = session_cookie(request.headers)
    if session_id is not None:
        try:
            session, _rate = tokens.resume_session(ctx, session_id)
        except Unauthorized:
            session = None
        if session is not None:
            auth.check_csrf(request.headers.get("x-csrf-token"), session.csrf_token)
            tokens.sign_out(ctx, session_id)
    return Response(body="", status_code=204, headers={**_NO_STORE, "Set-Cookie": CLEAR_COOKIE})
