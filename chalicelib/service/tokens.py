"""Issue, list, revoke and check API tokens.

The bootstrap admin token (STAGETRACK_ADMIN_TOKEN) is compared in memory, in constant time,
against its hash: it costs no round trip and is not rate-limited. It is the operator's
break-glass credential for issuing real tokens, not something clients should run on; keeping
it out of DynamoDB means it works before any token exists. Issued tokens are looked up and
rate-counted in one UpdateItem (store/tokens.py).
"""
from __future__ import annotations

import functools
import logging

from .. import logging_setup
from ..domain import auth
from ..domain.auth import Credentials, Principal, RateLimited, RateState, Unauthorized
from ..domain.clock import format_iso
from ..domain.errors import NotFound
from ..settings import Settings
from ..store import tokens as store
from ..store.tokens import StoredToken
from . import ServiceContext

log = logging.getLogger("stagetrack.auth")

LOCAL_DEFAULT_ADMIN_TOKEN = "stagetrack-local-admin"
BOOTSTRAP_ID = "bootstrap"


def issue_token(ctx: ServiceContext, body: auth.CreateTokenIn, issuer: Principal) -> tuple[StoredToken, str]:
    """A new token, never broader than its issuer (403); its secret is returned here once and
    kept only as its SHA-256."""
    auth.check_grant(issuer, body.scopes, body.pipelines)
    created_by = issuer.actor
    secret = auth.new_token_secret()
    token = StoredToken(
        token_id=auth.new_token_id(), name=body.name, scopes=list(body.scopes),
        pipelines=None if body.pipelines is None else sorted(body.pipelines),
        created_at=format_iso(ctx.clock.now()), created_by=created_by,
    )
    store.insert(token, auth.hash_token(secret), auth.rate_window(ctx.clock.now()))
    return token, secret


def list_tokens(ctx: ServiceContext, viewer: Principal) -> list[StoredToken]:
    """The tokens no broader than ``viewer``: all of them for an unlimited admin."""
    return [t for t in store.list_all() if auth.within(viewer, t.scopes, t.pipelines)]


def revoke_token(ctx: ServiceContext, token_id: str, revoker: Principal) -> StoredToken:
    """Revoke a token no broader than ``revoker``; any other answers 404, as an unknown one
    does, so a limited admin learns nothing about tokens outside its pipelines."""
    def allowed(token: StoredToken) -> bool:
        return auth.within(revoker, token.scopes, token.pipelines)

    token = store.delete(token_id, allowed) if len(token_id) <= 64 else None
    if token is None:
        raise NotFound(f"token {token_id!r} not found")
    return token


def authenticate(ctx: ServiceContext, credentials: Credentials | None) -> tuple[Principal, RateState | None]:
    """Who is calling and how much of their rate budget is left; 401 or 429 otherwise."""
    if credentials is None:
        raise Unauthorized("authentication required: send Authorization: Bearer <token>, Basic auth or X-Auth-Token")
    settings = ctx.repo.settings
    presented = auth.hash_token(credentials.secret)
    if auth.same_secret(presented, _bootstrap_hash(settings)):
        principal = Principal(BOOTSTRAP_ID, "bootstrap admin", (auth.ADMIN,), None,
                              user=credentials.user, bootstrap=True)
        return principal, None
    if not auth.looks_like_token(credentials.secret):
        raise Unauthorized("the credential is not a valid token")
    now = ctx.clock.now()
    window = auth.rate_window(now)
    token = store.hit(presented, window)
    if token is None:
        raise Unauthorized("the token is unknown or revoked")
    principal = Principal(
        token.token_id, token.name, tuple(token.scopes),
        None if token.pipelines is None else frozenset(token.pipelines), user=credentials.user,
    )
    rate = RateState(limit=settings.rate_limit_per_minute, used=token.hits)
    if rate.exceeded:
        error = RateLimited(f"rate limit of {rate.limit} requests per minute exceeded",
                            retry_after=auth.retry_after(now, token.window))
        error.headers.update(rate.headers())
        raise error
    return principal, rate


@functools.lru_cache(maxsize=8)
def _bootstrap_hash_of(token: str, local: bool) -> str:
    logging_setup.add_secret(token)
    if token == LOCAL_DEFAULT_ADMIN_TOKEN and not local:
        log.warning("SECURITY: the bootstrap admin token is the documented local default and "
                    "this is not DynamoDB Local: set STAGETRACK_ADMIN_TOKEN to a long random value")
    elif len(token) < 20:
        log.warning("SECURITY: STAGETRACK_ADMIN_TOKEN is shorter than 20 characters")
    return auth.hash_token(token)


def _bootstrap_hash(settings: Settings) -> str:
    return _bootstrap_hash_of(settings.admin_token, settings.dynamodb_endpoint is not None)
