"""Who may do what: scopes, tokens and access keys, and the permission decision.

Pure: no I/O. The API's security layer (api/security.py) runs these rules once for every route,
so a route cannot forget them; it reads the credentials from the headers (api/credentials.py)
and the service looks tokens up (service/tokens.py).

- Scopes are cumulative: admin ⊇ operate ⊇ read. GET/HEAD need read, other methods operate,
  token and subscription management admin; a route may declare its own.
- A token may be limited to some pipelines. A request about any other pipeline gets 404, the
  same answer as for something that does not exist, decided before anything is read, so the
  answer never depends on what the other pipeline holds. Listings filtered by another pipeline
  get the same 404. Which places of a request name its pipeline is declared by each route
  (``ActsOn``); nothing else is read. A route that acts on no single pipeline (webhook
  sources) is 403 for a limited token; tokens and subscriptions carry their own pipelines, and
  a caller sees, grants and revokes only those no broader than itself (``within``).
- Tokens are "st_" + 43 URL-safe characters (256 random bits) and are stored only as their
  SHA-256. A fast hash is right here: a slow, salted hash protects guessable passwords, but
  nobody can guess 256 random bits however fast the hash, and an unsalted hash is what lets
  the token be looked up by key in one request.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

from pydantic import Field, StringConstraints, field_validator

from . import ids
from .errors import DomainError, NotFound
from .ids import PIPELINE_PATTERN
from .schemas import StrictModel

READ, OPERATE, ADMIN, PUBLIC = "read", "operate", "admin", "public"
LEVELS = {READ: 1, OPERATE: 2, ADMIN: 3}
SCOPES = tuple(LEVELS)
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Paths that manage credentials or outbound secrets: admin whatever the method.
ADMIN_PREFIXES = ("/api/tokens", "/api/subscriptions", "/api/sources")

TOKEN_PREFIX = "st_"
_TOKEN = re.compile(r"^st_[A-Za-z0-9_-]{43}$")
_TOKEN_INSIDE = re.compile(r"st_[A-Za-z0-9_-]{20,}")  # also what the log scrubber removes
REALM = 'Bearer realm="stagetrack", Basic realm="stagetrack"'
RATE_WINDOW_SECONDS = 60


class Unauthorized(DomainError):
    """401: no credentials, unreadable ones, or a token that is unknown or revoked."""

    code = "unauthorized"
    headers = {"WWW-Authenticate": REALM}


class Forbidden(DomainError):
    """403: a valid token without the scope the route needs."""

    code = "forbidden"


class CsrfFailed(Forbidden):
    """403: a write authenticated by the browser session cookie without its X-CSRF-Token."""

    code = "csrf_failed"


class RateLimited(DomainError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, details={"retryAfter": retry_after})
        self.headers = {"Retry-After": str(retry_after)}


# ---- tokens ----------------------------------------------------------------------------------

# A token issued with a check key ends in a keyed check of its random part: 32 characters of
# randomness (24 bytes), then 11 of HMAC-SHA256(check key, random part) (8 bytes), so it has the
# same shape as a token without one ("st_" + 43). A credential whose check does not hold was not
# issued under this key: a guess, or a token from before checks (or from before a change of the
# key), which is looked up before anything is written (service/tokens.py).
_CHECKED_RANDOM_CHARS = 32
_CHECK_CONTEXT = b"stagetrack token check\x00"


def _token_check(random_part: str, check_key: str) -> str:
    digest = hmac.new(check_key.encode(), _CHECK_CONTEXT + random_part.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:8]).decode("ascii").rstrip("=")


def new_token_secret(check_key: str | None = None) -> str:
    """A new token; with ``check_key``, one that ``token_check_holds`` recognises offline."""
    if check_key is None:
        return TOKEN_PREFIX + secrets.token_urlsafe(32)  # pragma: no mutate (None is 32 bytes too)
    random_part = secrets.token_urlsafe(24)
    return TOKEN_PREFIX + random_part + _token_check(random_part, check_key)


def token_check_holds(secret: str, check_key: str) -> bool:
    """Whether a well-formed token (``looks_like_token``) ends in its check under ``check_key``;
    compared in constant time."""
    body = secret[len(TOKEN_PREFIX):]
    random_part, check = body[:_CHECKED_RANDOM_CHARS], body[_CHECKED_RANDOM_CHARS:]
    return hmac.compare_digest(check.encode(), _token_check(random_part, check_key).encode())


def new_token_id() -> str:
    return "tok_" + secrets.token_hex(8)


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_token(secret: str) -> bool:
    return bool(_TOKEN.fullmatch(secret))


def same_secret(presented_hash: str, expected_hash: str) -> bool:
    """Constant time, on hashes of equal length, so timing says nothing about the secret."""
    return hmac.compare_digest(presented_hash.encode(), expected_hash.encode())


# ---- browser sessions (service/tokens.py sign_in) ----------------------------------------------
# A session id is what the dashboard's cookie holds instead of the token: "st_sess_" + 256 random
# bits, stored only as its SHA-256 (like a token), so the log scrubber removes it as it does
# tokens. Its CSRF token is random too and travels in a header the page sends on every write.
SESSION_PREFIX = "st_sess_"
_SESSION = re.compile(r"^st_sess_[A-Za-z0-9_-]{43}$")
SESSION_SECONDS = 12 * 3600  # a session ends 12 hours after sign-in, whatever is done with it


def new_session_id() -> str:
    return SESSION_PREFIX + secrets.token_urlsafe(32)  # pragma: no mutate


def new_csrf_token() -> str:
    return "st_csrf_" + secrets.token_urlsafe(32)  # pragma: no mutate


def looks_like_session(value: str) -> bool:
    return bool(_SESSION.fullmatch(value))


def check_csrf(presented: str | None, expected: str) -> None:
    """A cookie-authenticated write must echo its session's CSRF token (constant time)."""
    if not presented or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise CsrfFailed("a request authenticated by the session cookie must send its session's "
                         "X-CSRF-Token header on every write (GET /api/session gives it)")


def level_of(scopes: list[str] | tuple[str, ...] | frozenset[str]) -> str:
    """The highest scope of a list; scopes are cumulative, so that one is all that counts."""
    return max(scopes, key=LEVELS.__getitem__)


# ---- credentials -----------------------------------------------------------------------------
# How a request presents a credential (Bearer, Basic, X-Auth-Token, an AK/SK signature) is HTTP:
# api/credentials.py reads the headers into ``Credentials``; the service checks them.

class SignatureProof(Protocol):
    """A request signed with an access key pair's SK (api/aksk.py: Huawei's SDK-HMAC-SHA256), as
    the service checks it without knowing the format. Both checks raise Unauthorized."""

    @property
    def access_key(self) -> str: ...

    def check_date(self, now: datetime) -> None:
        """The signing time is within the replay window (checked before any lookup)."""

    def verify(self, secret_key: str, now: datetime) -> None:
        """``secret_key`` signed this very request."""


@dataclass(frozen=True)
class Credentials:
    secret: str = field(repr=False)  # never printed, so never logged by accident
    user: str | None  # the Basic auth user name, recorded as the actor
    scheme: str  # "bearer" | "basic" | "x-auth-token" | ACCESS_KEY_SCHEME
    signed: SignatureProof | None = field(default=None, repr=False)  # AK/SK only


ACCESS_KEY_SCHEME = "sdk-hmac-sha256"  # secret: the AK; the SK never travels (api/aksk.py)

# Access key pairs are stagetrack's own credentials, in Huawei's shape (the AK 20 characters).
ACCESS_KEY_PREFIX = "STAK"
_ACCESS_KEY = re.compile(r"^STAK[A-Z2-7]{16}$")
SECRET_KEY_PREFIX = "st_sk_"  # "st_..." so the log scrubber removes it wherever it appears


def new_access_key() -> str:
    return ACCESS_KEY_PREFIX + base64.b32encode(secrets.token_bytes(10)).decode("ascii")


def new_secret_key() -> str:
    return SECRET_KEY_PREFIX + secrets.token_urlsafe(32)


def looks_like_access_key(value: str) -> bool:
    return bool(_ACCESS_KEY.match(value))


# ---- principals and decisions ----------------------------------------------------------------

@dataclass(frozen=True)
class Principal:
    """Who is calling: the token (its id and name, never its secret) and the Basic user."""

    token_id: str
    name: str
    scopes: tuple[str, ...]
    pipelines: frozenset[str] | None  # None: every pipeline
    user: str | None = None
    bootstrap: bool = False

    @property
    def level(self) -> str:
        return level_of(self.scopes)

    @property
    def actor(self) -> str:
        """The name to record on what this caller does (cancelled by, approved by ...)."""
        return self.user or self.name

    def has(self, scope: str) -> bool:
        return LEVELS[self.level] >= LEVELS[scope]

    def covers(self, pipeline: str) -> bool:
        return self.pipelines is None or pipeline in self.pipelines

    def as_dict(self) -> dict:
        return {"tokenId": self.token_id, "name": self.name, "user": self.user, "actor": self.actor}


def required_scope(method: str, path: str, declared: str | None = None) -> str:
    if declared is not None:
        if declared not in (*SCOPES, PUBLIC):
            raise ValueError(f"unknown scope {declared!r}")
        return declared
    if any(path == p or path.startswith(p + "/") for p in ADMIN_PREFIXES):
        return ADMIN
    return READ if method.upper() in READ_METHODS else OPERATE


@dataclass(frozen=True)
class PipelineRef:
    """A pipeline a request names, and how to say "not found" about it."""

    pipeline: str | None  # None: the value named no pipeline (a malformed id)
    missing: str  # the 404 message the view would give for it


# ---- what a route acts on --------------------------------------------------------------------
#
# Every non-public route declares, when it is registered, where a request names the pipeline(s)
# it acts on. Authorization reads those places and nothing else: a query parameter or body field
# the route did not declare never counts, so it can neither open a route to a limited token
# (the "?pipeline=A" escalation) nor close one.

PIPELINE, PIPELINES, RUN, STAGE = "pipeline", "pipelines", "run", "stage"
KINDS = (PIPELINE, PIPELINES, RUN, STAGE)  # pipelines: a list of names (body fields only)

NAMED = "named"  # path parameters / query parameters / body fields name the pipeline
NO_SINGLE_PIPELINE = "no single pipeline"  # a pipeline-limited token gets 403
OWN_RECORDS = "own records"  # records that carry their pipelines; the service shows a limited caller its own
RESOLVED = "resolved"  # a dialect's own ids: a resolver maps them to pipelines without reading


@dataclass(frozen=True)
class ActsOn:
    """What a route acts on, for tokens limited to some pipelines (``route(acts_on=...)``).

    Build it with ``acts_on(path=..., query=..., body=...)``, ``ACTS_ON_NO_SINGLE_PIPELINE``,
    ``ACTS_ON_OWN_RECORDS`` or ``resolved_by(resolver)``. For a limited token, every declared
    place must name something (a missing query parameter or body field is 403: the token
    cannot be used unscoped), and every pipeline named must be one of the token's (else 404).
    """

    rule: str
    path: tuple[tuple[str, str], ...] = ()  # (path parameter, kind)
    query: tuple[tuple[str, str], ...] = ()  # (query parameter, kind): a listing's filter
    body: tuple[tuple[str, str], ...] = ()  # (top-level JSON body field, kind)
    # RESOLVED: resolver(request) -> name | PipelineRef | [..] | None (the request: the web layer's)
    resolver: Callable[[Any], Any] | None = None
    # The declared query parameters may be left out, even by a limited token: the listing then
    # covers every pipeline the caller may see, which the service works out (a search, not a
    # pipeline's listing). Given, they are checked as always (another pipeline: 404).
    optional: bool = False

    def describe(self) -> str:
        if self.rule != NAMED:
            return self.rule
        parts = [f"{where} {name} ({kind})" for where, pairs in
                 (("path", self.path), ("query", self.query), ("body", self.body)) for name, kind in pairs]
        return ", ".join(parts) + (" or own records" if self.optional else "")


def acts_on(*, path: Mapping[str, str] | None = None, query: Mapping[str, str] | None = None,
            body: Mapping[str, str] | None = None, optional: bool = False) -> ActsOn:
    """The places that name the pipeline / run / stage a route acts on; ``{name: kind}`` each.
    ``optional`` (query parameters only): without them the route shows the caller its own."""
    if optional and (path or body or not query):
        raise ValueError("acts_on(optional=True) is for query parameters only")
    declared = {"path": dict(path or {}), "query": dict(query or {}), "body": dict(body or {})}
    if not any(declared.values()):
        raise ValueError("acts_on() needs a path parameter, query parameter or body field")
    for where, pairs in declared.items():
        for name, kind in pairs.items():
            if kind not in KINDS or (kind == PIPELINES and where != "body"):
                raise ValueError(f"{where} {name}: kind {kind!r} is not one of {KINDS} (lists: body only)")
    return ActsOn(NAMED, path=tuple(declared["path"].items()), query=tuple(declared["query"].items()),
                  body=tuple(declared["body"].items()), optional=optional)


def resolved_by(resolver: Callable[[Any], Any]) -> ActsOn:
    """A dialect whose ids are not ours (Buddy's numeric pipeline id, CodeArts' job id): the
    resolver maps them to the caller's pipelines by comparing ids; None names none (403)."""
    if not callable(resolver):
        raise ValueError("resolved_by() takes a callable")
    return ActsOn(RESOLVED, resolver=resolver)


ACTS_ON_NO_SINGLE_PIPELINE = ActsOn(NO_SINGLE_PIPELINE)
ACTS_ON_OWN_RECORDS = ActsOn(OWN_RECORDS)


def ref_of(kind: str, value: object) -> PipelineRef:
    """The pipeline one value names. A value that is not a well-formed name or id (a number, a
    list, a malformed id) names none, which a limited token gets as 404."""
    what = {PIPELINES: "pipeline"}.get(kind, kind)
    if not isinstance(value, str):
        return PipelineRef(None, f"{what} {_short(value)} not found")
    if kind in (PIPELINE, PIPELINES):
        return PipelineRef(value if ids.is_pipeline_name(value) else None, f"pipeline {value!r} not found")
    if kind == RUN:
        parsed = ids.parse_run_id(value)
        return PipelineRef(parsed[0] if parsed else None, f"run {value!r} not found")
    parsed_stage = ids.parse_stage_id(value)
    run = ids.parse_run_id(parsed_stage[0]) if parsed_stage else None
    return PipelineRef(run[0] if run else None, f"stage {value!r} not found")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def named_refs(declared: ActsOn, path: Mapping[str, str], query: Mapping[str, list[str]],
               body: list[tuple[str, object]] | None) -> list[PipelineRef]:
    """Every pipeline the declared places of a request name, for a token limited to some.

    ``query`` holds every value of each parameter; ``body`` every top-level (field, value) pair
    of a JSON object body in order, a repeated field once per value (None: not a JSON object).
    All values are gathered, whatever comes before them: a body field holding a list (kind
    ``pipelines``) counts each item, and a value that is not a name counts as naming none.
    403 if a declared place names nothing: a limited token must say which pipeline it acts on.
    """
    refs: list[PipelineRef] = []
    for name, kind in declared.path:
        refs.append(ref_of(kind, path.get(name)))
    for name, kind in declared.query:
        values = list(query.get(name) or ())
        if not values and declared.optional:
            continue
        if not values:
            raise Forbidden(f"this token is limited to some pipelines: query parameter {name} is required")
        refs += [ref_of(kind, value) for value in values]
    for name, kind in declared.body:
        body_values = [value for field, value in (body or ()) if field == name and value is not None]
        found: list[PipelineRef] = []
        for value in body_values:
            items = value if kind == PIPELINES and isinstance(value, list) else [value]
            found += [ref_of(kind, item) for item in items]
        if not found:
            raise Forbidden(f"this token is limited to some pipelines: the body must name them in {name}")
        refs += found
    return refs


def check_scope(principal: Principal, scope: str) -> None:
    """403 without the scope; checked before pipelines, so that 403 says nothing about them."""
    if not principal.has(scope):
        raise Forbidden(f"this token has scope {principal.level!r}; this needs {scope!r}")


def authorize(principal: Principal, scope: str, refs: list[PipelineRef] | None) -> None:
    """403 without the scope; for a token limited to some pipelines, 404 for any other
    pipeline (and for malformed ids, which name none), 403 if the request names no pipeline.
    ``refs`` None means the route checks its records itself (``ACTS_ON_OWN_RECORDS``)."""
    check_scope(principal, scope)
    if principal.pipelines is None or refs is None:
        return
    if not refs:
        raise Forbidden("this token is limited to some pipelines; this request names none")
    for ref in refs:
        if ref.pipeline is None or not principal.covers(ref.pipeline):
            raise NotFound(ref.missing)


def within(principal: Principal, scopes: Iterable[str], pipelines: Iterable[str] | None) -> bool:
    """True if a token (or a subscription: no scopes) with these scopes and pipelines is no
    broader than ``principal``: its level at most the principal's, and, for a principal limited
    to some pipelines, limited itself to some of those (None, every pipeline, is broader)."""
    scopes = tuple(scopes)
    if scopes and LEVELS[level_of(scopes)] > LEVELS[principal.level]:
        return False
    if principal.pipelines is None:
        return True
    return pipelines is not None and set(pipelines) <= principal.pipelines


def check_grant(principal: Principal, scopes: Iterable[str], pipelines: Iterable[str] | None) -> None:
    """A caller never issues a token (or creates a subscription) broader than itself: 403."""
    scopes = tuple(scopes)
    if scopes and LEVELS[level_of(scopes)] > LEVELS[principal.level]:
        raise Forbidden(f"this token has scope {principal.level!r}; it cannot grant {level_of(scopes)!r}")
    if not within(principal, (), pipelines):
        raise Forbidden("this token is limited to some pipelines: name pipelines, all of them its own")


# ---- rate windows ----------------------------------------------------------------------------

def rate_window(now: datetime, seconds: int = RATE_WINDOW_SECONDS) -> int:
    """Fixed windows: the number of the window ``now`` falls in."""
    return int(now.timestamp()) // seconds


def retry_after(now: datetime, window: int, seconds: int = RATE_WINDOW_SECONDS) -> int:
    """Whole seconds until the window ends (at least 1)."""
    end = (window + 1) * seconds
    return max(1, int(end - now.timestamp() + 0.999))


@dataclass(frozen=True)
class RateState:
    limit: int
    used: int

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    @property
    def exceeded(self) -> bool:
        return self.used > self.limit

    def headers(self) -> dict[str, str]:
        return {"X-Rate-Limit-Limit": str(self.limit), "X-Rate-Limit-Remaining": str(self.remaining)}


# ---- request bodies --------------------------------------------------------------------------

PipelineName = Annotated[str, StringConstraints(pattern=PIPELINE_PATTERN)]
TokenName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9 _.@\-]{0,99}$")]
MAX_TOKEN_PIPELINES = 50
_UNIQUE = {"uniqueItems": True}


class SignInIn(StrictModel):
    """``POST /api/session``: the token a browser signs in with (never in a URL)."""

    token: Annotated[str, Field(min_length=1, max_length=1024)]


class CreateTokenIn(StrictModel):
    kind: Literal["token", "access-key"] = "token"  # access-key: an AK/SK pair (api/aksk.py)
    name: TokenName
    scopes: Annotated[list[Literal["read", "operate", "admin"]],
                      Field(min_length=1, max_length=3, json_schema_extra=_UNIQUE)]
    pipelines: Annotated[list[PipelineName], Field(min_length=1, max_length=MAX_TOKEN_PIPELINES,
                                                   json_schema_extra=_UNIQUE)] | None = None

    @field_validator("name")
    @classmethod
    def _not_a_secret(cls, value: str) -> str:
        if _TOKEN_INSIDE.search(value):
            raise ValueError("a token's name is shown and logged: it must not look like a token")
        return value

    @field_validator("scopes", "pipelines")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("entries must be unique")
        return value
