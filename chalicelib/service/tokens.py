"""Issue, list, revoke and check API tokens.

The bootstrap admin token (STAGETRACK_ADMIN_TOKEN) is compared in memory, in constant time,
against its hash: it costs no round trip and is not rate-limited. It is the operator's
break-glass credential for issuing real tokens, not something clients should run on; keeping
it out of DynamoDB means it works before any token exists. Issued tokens are looked up and
rate-counted in one UpdateItem (store/tokens.py).

What a credential that is not ours costs: one of the wrong shape (prefix, length, alphabet)
nothing; a well-formed one whose keyed check (domain/auth.py, keyed with the pepper) does not
hold, one read of its key and no write; only a token that carries a valid check, which only
this deployment can make, goes straight to the counting UpdateItem (a revoked one fails its
condition there). Tokens issued before checks existed still work: they pass the read, then
are counted (one read more per request than a checked token; re-issue them to save it).

Access key pairs (``"kind": "access-key"``) are tokens in every respect (name, scopes,
pipelines, rate limit, listing, revocation) except how a request proves it holds one: it is
signed with the SK (api/aksk.py) instead of carrying a secret. Checking that needs the SK
itself, so it is stored sealed with the deployment key (adapters/secretbox.py), bound to its AK.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any

from .. import logging_setup
from ..domain import auth
from ..domain.auth import Credentials, Principal, RateLimited, RateState, Unauthorized
from ..domain.clock import format_iso
from ..domain.errors import NotFound
from ..settings import Settings
from . import ServiceContext
from .ports import SecretUnreadable, StoredSession, StoredToken

log = logging.getLogger("stagetrack.auth")

LOCAL_DEFAULT_ADMIN_TOKEN = "stagetrack-local-admin"
BOOTSTRAP_ID = "bootstrap"
UNKNOWN_TOKEN = "the token is unknown or revoked"  # the same words whichever way it was found out


def issue_token(ctx: ServiceContext, body: auth.CreateTokenIn, issuer: Principal) -> tuple[StoredToken, str]:
    """A new token or access key pair, never broader than its issuer (403). Its secret is
    returned here once: a token's is kept only as its SHA-256, a key pair's SK only sealed."""
    auth.check_grant(issuer, body.scopes, body.pipelines)
    created_by = issuer.actor
    common: dict[str, Any] = dict(
        token_id=auth.new_token_id(), name=body.name, scopes=list(body.scopes),
        pipelines=None if body.pipelines is None else sorted(body.pipelines),
        created_at=format_iso(ctx.clock.now()), created_by=created_by,
    )
    window = auth.rate_window(ctx.clock.now())
    if body.kind == "access-key":
        access_key, secret_key = auth.new_access_key(), auth.new_secret_key()
        sealed = ctx.box().seal(secret_key, _sealing_context(access_key))
        token = StoredToken(**common, access_key=access_key, sealed_secret_key=sealed)
        ctx.stores.tokens.insert(token, None, window)
        return token, secret_key
    secret = auth.new_token_secret(ctx.settings.secret_pepper)
    token = StoredToken(**common)
    ctx.stores.tokens.insert(token, auth.hash_token(secret), window)
    return token, secret


def list_tokens(ctx: ServiceContext, viewer: Principal) -> list[StoredToken]:
    """The tokens no broader than ``viewer``: all of them for an unlimited admin."""
    return [t for t in ctx.stores.tokens.list_all() if auth.within(viewer, t.scopes, t.pipelines)]


def revoke_token(ctx: ServiceContext, token_id: str, revoker: Principal) -> StoredToken:
    """Revoke a token no broader than ``revoker``; any other answers 404, as an unknown one
    does, so a limited admin learns nothing about tokens outside its pipelines."""
    def allowed(token: StoredToken) -> bool:
        return auth.within(revoker, token.scopes, token.pipelines)

    token = ctx.stores.tokens.delete(token_id, allowed) if len(token_id) <= 64 else None
    if token is None:
        raise NotFound(f"token {token_id!r} not found")
    return token


def authenticate(ctx: ServiceContext, credentials: Credentials | None) -> tuple[Principal, RateState | None]:
    """Who is calling and how much of their rate budget is left; 401 or 429 otherwise. An AK/SK
    signature (``credentials.signed``) checks itself against the SK looked up here."""
    if credentials is None:
        raise Unauthorized(
            "authentication required: send Authorization: Bearer <token>, Basic auth or X-Auth-Token"
        )
    if credentials.scheme == auth.ACCESS_KEY_SCHEME:
        return _authenticate_signed(ctx, credentials)
    presented = auth.hash_token(credentials.secret)
    if auth.same_secret(presented, _bootstrap_hash(ctx.settings)):
        return _bootstrap(credentials.user), None
    if not auth.looks_like_token(credentials.secret):
        raise Unauthorized("the credential is not a valid token")  # no round trip
    if not auth.token_check_holds(credentials.secret, ctx.settings.secret_pepper):
        # Not issued under this pepper: a guess, or a token from before checks. One read, and
        # nothing written (nor billed as a write) unless the token exists.
        if not ctx.stores.tokens.known(presented):
            raise Unauthorized(UNKNOWN_TOKEN)
    return _authenticate_hash(ctx, presented, credentials.user)


def _bootstrap(user: str | None) -> Principal:
    return Principal(BOOTSTRAP_ID, "bootstrap admin", (auth.ADMIN,), None, user=user, bootstrap=True)


def _authenticate_hash(ctx: ServiceContext, token_hash: str,
                       user: str | None) -> tuple[Principal, RateState]:
    """The token with this hash, counted in the current rate window; 401 if there is none."""
    now = ctx.clock.now()
    token = ctx.stores.tokens.hit(token_hash, auth.rate_window(now))
    if token is None:
        raise Unauthorized(UNKNOWN_TOKEN)
    return _admit(ctx, token, user, now)


# ---- browser sessions (the dashboard, api/session.py) -------------------------------------------

@dataclass(frozen=True)
class Session:
    """A signed-in browser: its id goes in an HttpOnly cookie, its CSRF token to the page."""

    session_id: str = field(repr=False)
    csrf_token: str = field(repr=False)
    principal: Principal
    expires_at: int  # epoch seconds


def sign_in(ctx: ServiceContext, secret: str) -> Session:
    """Check the token exactly as a request bearing it is checked (401, 429), then start a
    session standing for it: the session keeps the token's hash, so it has exactly the token's
    scopes and pipelines, and stops working when the token is revoked."""
    principal, _rate = authenticate(ctx, Credentials(secret, None, "bearer"))
    now = ctx.clock.now()
    session_id, csrf = auth.new_session_id(), auth.new_csrf_token()
    expires_at = int(now.timestamp()) + auth.SESSION_SECONDS
    ctx.stores.tokens.put_session(StoredSession(
        session_hash=auth.hash_token(session_id), token_hash=auth.hash_token(secret), csrf_token=csrf,
        expires_at=expires_at, created_at=format_iso(now)))
    return Session(session_id, csrf, principal, expires_at)


def resume_session(ctx: ServiceContext, session_id: str) -> tuple[Session, RateState | None]:
    """The session a cookie names, its token checked and counted as a bearer's would be; 401 for
    one that is malformed, unknown, signed out, expired, or whose token was revoked."""
    stored = (ctx.stores.tokens.get_session(auth.hash_token(session_id))
              if auth.looks_like_session(session_id) else None)
    now = ctx.clock.now()
    if stored is None or stored.expires_at <= int(now.timestamp()):
        raise Unauthorized("the session has ended or was signed out: sign in again")
    principal: Principal
    rate: RateState | None
    if auth.same_secret(stored.token_hash, _bootstrap_hash(ctx.settings)):
        principal, rate = _bootstrap(None), None
    else:
        principal, rate = _authenticate_hash(ctx, stored.token_hash, None)
    return Session(session_id, stored.csrf_token, principal, stored.expires_at), rate


def sign_out(ctx: ServiceContext, session_id: str) -> None:
    if auth.looks_like_session(session_id):
        ctx.stores.tokens.delete_session(auth.hash_token(session_id))


def _authenticate_signed(ctx: ServiceContext, credentials: Credentials) -> tuple[Principal, RateState]:
    """An AK/SK signature: the cheap checks first (shape, date window), then one read for the
    sealed SK, the signature, and only then the rate count, so requests nobody signed never
    spend the pair's budget (the AK alone is no secret: it travels in every request)."""
    signed, now = credentials.signed, ctx.clock.now()
    if signed is None:
        raise Unauthorized("an SDK-HMAC-SHA256 signature needs the request it signs")
    signed.check_date(now)
    stored = (
        ctx.stores.tokens.get_access_key(signed.access_key)
        if auth.looks_like_access_key(signed.access_key)
        else None
    )
    if stored is None or stored.sealed_secret_key is None:
        raise Unauthorized("the access key is unknown or revoked")
    try:
        secret_key = ctx.box().open(stored.sealed_secret_key, _sealing_context(signed.access_key))
    except SecretUnreadable as error:
        log.error("access key %s (%s): %s", stored.token_id, signed.access_key, error)
        raise Unauthorized("the access key cannot be checked: ask an admin to issue a new one") from None
    signed.verify(secret_key, now)
    token = ctx.stores.tokens.hit_access_key(signed.access_key, auth.rate_window(now))
    if token is None:  # revoked since it was read
        raise Unauthorized("the access key is unknown or revoked")
    return _admit(ctx, token, credentials.user, now)


def _sealing_context(access_key: str) -> str:
    """Binds a sealed SK to its AK: copied onto another pair's item, it does not open."""
    return f"access-key:{access_key}"


def _admit(
    ctx: ServiceContext, token: StoredToken, user: str | None, now
) -> tuple[Principal, RateState]:
    """The principal of a known token or access key, or 429 past the rate limit."""
    settings = ctx.settings
    principal = Principal(
        token.token_id, token.name, tuple(token.scopes),
        None if token.pipelines is None else frozenset(token.pipelines), user=user,
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
