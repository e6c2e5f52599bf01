"""API tokens and access key pairs: issue (the secret, a token or an SK, is shown once), list,
revoke.

A caller never issues, sees or revokes a token (or key pair) broader than itself
(domain/auth.py ``within``): an admin limited to some pipelines issues tokens limited to some of
those (the body's ``pipelines``, declared below, is checked like any pipeline a request names:
404 for another one, 403 when absent) and lists and revokes only such tokens; other tokens
answer 404.
"""
from __future__ import annotations

from chalice import Blueprint

from .. import wiring
from ..domain import auth
from ..domain.auth import CreateTokenIn
from ..service import tokens
from ..service.ports import StoredToken
from .idempotency import shown_once
from .openapi import TokenCreatedOut, TokenListOut, TokenOut
from .parsing import parse_body
from .responses import json_response
from .routing import route
from .security import current_principal

routes = Blueprint(__name__)


def token_view(token: StoredToken) -> dict:
    view = {
        "id": token.token_id,
        "kind": "access-key" if token.access_key else "token",
        "name": token.name,
        "scopes": list(token.scopes),
        "pipelines": None if token.pipelines is None else list(token.pipelines),
        "createdAt": token.created_at,
        "createdBy": token.created_by,
    }
    if token.access_key:
        view["accessKey"] = token.access_key  # the AK is no secret: it is sent with every request
    return view


@route(routes, "/api/tokens", methods=["POST"], scope="admin", body=CreateTokenIn,
       acts_on=auth.acts_on(body={"pipelines": auth.PIPELINES}),
       response=TokenCreatedOut, status=201,
       replay=shown_once(lambda effect: f"/api/tokens/{effect['token']}"),
       summary="Issue a token; its secret is in this response only")
def create_token():
    ctx = wiring.context()
    body = parse_body(routes.current_request, CreateTokenIn, ctx.settings.max_body_bytes)
    token, secret = tokens.issue_token(ctx, body, current_principal())
    view = token_view(token)
    view["secretKey" if token.access_key else "token"] = secret
    return json_response(
        view, 201, {"Location": f"/api/tokens/{token.token_id}", "Cache-Control": "no-store"}
    )


@route(routes, "/api/tokens", methods=["GET"], scope="admin", acts_on=auth.ACTS_ON_OWN_RECORDS,
       response=TokenListOut, summary="List tokens no broader than the caller (never their secrets)")
def list_tokens():
    items = tokens.list_tokens(wiring.context(), current_principal())
    return json_response({"items": [token_view(t) for t in items]})


@route(routes, "/api/tokens/{token_id}", methods=["DELETE"], scope="admin",
       acts_on=auth.ACTS_ON_OWN_RECORDS, response=TokenOut,
       summary="Revoke a token no broader than the caller; it stops working at once")
def revoke_token(token_id):
    return json_response(token_view(tokens.revoke_token(wiring.context(), token_id, current_principal())))
