"""Idempotency-Key on every POST, implemented once: ``route()`` sends each POST through ``guard``.

- No header: nothing happens here (no extra round trip).
- First request with a key claims it (one conditional PutItem), runs, and stores its response
  (status, body, Location) for 24 h (the table's TTL attribute ``expires_at``).
- A repeat with the same key and the same request (path, query and JSON body, compared as parsed
  JSON) gets the stored response again, with ``Idempotent-Replayed: true``, and changes nothing.
- Same key, different request: 422. Same key while the first request is still running: 409.
- Keys are scoped per caller and route (method + path template): two callers, or two different
  endpoints, never see each other's keys. A key is 1..255 printable ASCII characters, else 400.
- A response marked ``Cache-Control: no-store`` (one that shows a secret once, like a new API
  token) is never stored: the key is used up, and a repeat gets 409 saying so (with the
  Location of what the first request created) instead of a second secret.
- Only successful (2xx) responses are remembered. A request that failed changed nothing (every
  write is one transaction), so its claim is dropped and the same key may be sent again.
- A claim whose request never answered (the process died) is abandoned after LEASE_SECONDS and
  can then be claimed again.
Keys and fingerprints are stored as HMACs under the deployment pepper: a body may carry secret
variables, and a plain hash of it would let a guessable secret be confirmed from the table.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from typing import Callable

from chalice import Response

from .. import wiring
from ..domain.errors import BadRequest, Conflict, ValidationFailed
from ..store.idempotency import PENDING, Record

log = logging.getLogger("stagetrack.api")

HEADER = "Idempotency-Key"
TTL_SECONDS = 24 * 3600
LEASE_SECONDS = 300
MAX_STORED_BODY = 300_000  # compressed bytes; an item must stay below DynamoDB's 400 KB
REPLAYED_HEADER = "Idempotent-Replayed"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_KEPT_HEADERS = ("Content-Type", "Location")


class IdempotencyKeyReused(ValidationFailed):
    code = "idempotency_key_reused"


class IdempotencyKeyInUse(Conflict):
    code = "idempotency_key_in_use"


class ResponseNotKept(Conflict):
    code = "idempotency_response_not_kept"


def _authorizer(request) -> dict:
    context = request.context if isinstance(request.context, dict) else {}
    authorizer = context.get("authorizer")
    return authorizer if isinstance(authorizer, dict) else {}


def caller(request) -> str:
    """Whose keys these are: the authenticated principal (its token id, which authentication
    puts in ``requestContext.authorizer.principalId`` as an API Gateway authorizer does), else
    "anonymous" (public routes)."""
    return str(_authorizer(request).get("principalId") or "anonymous")


def actor(request) -> str:
    """The name recorded as who did something: the authenticated actor (Basic auth user or the
    token's name), else the principal, else "anonymous"."""
    authorizer = _authorizer(request)
    return str(authorizer.get("actor") or authorizer.get("principalId") or "anonymous")


def _mac(pepper: str, *parts: str) -> str:
    message = "\n".join(parts).encode()
    return hmac.new(pepper.encode(), message, hashlib.sha256).hexdigest()


def _canonical_body(raw: bytes) -> str:
    """The same JSON sent with other spacing or key order is the same request."""
    if not raw:
        return ""
    try:
        return json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"))
    except (ValueError, UnicodeDecodeError):
        return "raw:" + hashlib.sha256(raw).hexdigest()


def guard(request, template: str, call: Callable[[], Response]) -> Response:
    key = request.headers.get(HEADER)
    if request.method != "POST" or key is None:
        return call()
    if not _KEY.fullmatch(key):
        raise BadRequest(f"{HEADER} must be 1 to 255 printable ASCII characters without spaces",
                         details=[{"field": HEADER}])
    ctx = wiring.context()
    pepper = ctx.repo.settings.secret_pepper
    store = ctx.repo.idempotency
    key_hash = _mac(pepper, "key", caller(request), request.method, template, key)
    params = request.query_params
    query = [(name, params.getlist(name)) for name in sorted(params)] if params else []
    fingerprint = _mac(
        pepper, "request", json.dumps(sorted((request.uri_params or {}).items())),
        json.dumps(query), _canonical_body(request.raw_body or b""),
    )
    now = int(ctx.clock.now().timestamp())
    held = store.claim(key_hash, fingerprint, now, lease_seconds=LEASE_SECONDS, ttl_seconds=TTL_SECONDS)
    if isinstance(held, Record):
        return _replay(held, fingerprint)
    token = held
    try:
        response = call()
    except BaseException:
        store.release(key_hash, token)
        raise
    _remember(store, key_hash, token, response)
    return response


def _replay(held: Record, fingerprint: str) -> Response:
    if not hmac.compare_digest(held.fingerprint, fingerprint):
        raise IdempotencyKeyReused(
            f"this {HEADER} was already used with a different request; use a new key")
    if held.state == PENDING:
        raise IdempotencyKeyInUse(
            f"a request with this {HEADER} is still being processed; retry later")
    headers = dict(held.headers or {})
    if held.body is None:
        raise ResponseNotKept(
            f"the request with this {HEADER} succeeded, but its response held a secret shown "
            "only once and was not kept", details={"status": held.status_code, **headers})
    headers[REPLAYED_HEADER] = "true"
    return Response(body=held.body.decode(), status_code=held.status_code, headers=headers)


def _remember(store, key_hash: str, token: str, response: Response) -> None:
    status = response.status_code
    if not 200 <= status < 300:
        store.release(key_hash, token)
        return
    headers = {name: response.headers[name] for name in _KEPT_HEADERS if name in (response.headers or {})}
    if "no-store" in (response.headers or {}).get("Cache-Control", ""):
        headers.pop("Content-Type", None)
        store.complete(key_hash, token, status, headers, None, max_stored=MAX_STORED_BODY)
        return
    body = response.body
    if isinstance(body, str):
        body = body.encode()
    elif not isinstance(body, bytes):
        body = json.dumps(body, separators=(",", ":")).encode()
    outcome = store.complete(key_hash, token, status, headers, body, max_stored=MAX_STORED_BODY)
    if outcome != "stored":
        log.warning("idempotent response not kept (%s)", outcome)
