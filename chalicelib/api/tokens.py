"""API tokens: issue (the secret is shown once), list, revoke. Unrestricted admin tokens only."""
from __future__ import annotations

from chalice import Blueprint

from .. import wiring
from ..domain.auth import CreateTokenIn
from ..service import tokens
from ..store.tokens import StoredToken
from . import current_actor, json_response, parse_body, route
from .idempotency import shown_once
from .openapi import TokenCreatedOut, TokenListOut, TokenOut

token_api = Blueprint(__name__)


def token_view(token: StoredToken) -> dict:
    return {
        "id": token.token_id,
        "name": token.name,
        "scopes": list(token.scopes),
        "pipelines": None if token.pipelines is None else list(token.pipelines),
        "createdAt": token.created_at,
        "createdBy": token.created_by,
    }


@route(token_api, "/api/tokens", methods=["POST"], scope="admin", body=CreateTokenIn,
       response=TokenCreatedOut, status=201,
       replay=shown_once(lambda effect: f"/api/tokens/{effect['token']}"),
       summary="Issue a token; its secret is in this response only")
def create_token():
    ctx = wiring.context()
    body = parse_body(token_api.current_request, CreateTokenIn, ctx.repo.settings.max_body_bytes)
    token, secret = tokens.issue_token(ctx, body, current_actor())
    view = token_view(token)
    view["token"] = secret
    return json_response(view, 201, {"Location": f"/api/tokens/{token.token_id}", "Cache-Control": "no-store"})


@route(token_api, "/api/tokens", methods=["GET"], scope="admin", response=TokenListOut,
       summary="List tokens (never their secrets)")
def list_tokens():
    return json_response({"items": [token_view(t) for t in tokens.list_tokens(wiring.context())]})


@route(token_api, "/api/tokens/{token_id}", methods=["DELETE"], scope="admin", response=TokenOut,
       summary="Revoke a token; it stops working at once")
def revoke_token(token_id):
    return json_response(token_view(tokens.revoke_token(wiring.context(), token_id)))
