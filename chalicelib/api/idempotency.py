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

Crash safety: while the view runs, the claim is held (``holding``), and the write that is the
request's effect carries the key's record in the same transaction (store/repository.py
``transaction``), which marks it COMMITTED with what was written (``{"run": id}``,
``{"token": id}``...), on condition the claim token is still ours. So:
- a process that dies after claiming but before its effect leaves a PENDING claim: after
  LEASE_SECONDS another request may claim the key and run (nothing was written before);
- a process that dies after its effect committed but before storing its response leaves a
  COMMITTED record: a repeat never runs the view again. The route's ``replay`` renders the
  answer from the recorded effect (the resource as it is now, same status and Location, with
  ``Idempotent-Replayed: true``); a route without one answers 409
  ``idempotency_response_not_kept`` naming the effect;
- a first request that outlives its lease and whose key was claimed meanwhile by a retry cannot
  commit any more: its transaction fails on the claim token and writes nothing (409
  ``idempotency_key_in_use``).
Every POST route is either atomic with its key this way or writes nothing that could repeat:
runs (create, schedule, every operation; native and dialect), tokens, subscriptions, sources and
pipeline pause/unpause all commit the key in their own write. A pipeline's run counter is
claimed before the run's transaction and outside it: a request that dies in between leaves an
unused number (a gap), never a second run. GoCD's releaseLock and operations that find nothing
to change write nothing, so a repeat after a crash simply runs them (still nothing to repeat).
Webhooks do not take the header (their delivery id is their key, service/ingest.py).

Keys and fingerprints are stored as HMACs under the deployment pepper: a body may carry secret
variables, and a plain hash of it would let a guessable secret be confirmed from the table.
A body too deeply nested to parse is fingerprinted by its raw bytes (the view then answers 400);
it never reaches a 500.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable

from chalice import Response

from .. import wiring
from ..domain.errors import BadRequest, Conflict, ValidationFailed
from ..service.ports import COMMITTED, PENDING, Record

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
    except (ValueError, UnicodeDecodeError, RecursionError):  # nested too deep: the view says 400
        return "raw:" + hashlib.sha256(raw).hexdigest()


def guard(request, template: str, call: Callable[[], Response],
          replay: Callable[[dict], Response] | None = None) -> Response:
    """Run ``call`` once per key; ``replay(effect)`` answers a repeat whose first request
    committed its effect but never stored its response (see the module docstring)."""
    key = request.headers.get(HEADER)
    if request.method != "POST" or key is None:
        return call()
    if not _KEY.fullmatch(key):
        raise BadRequest(f"{HEADER} must be 1 to 255 printable ASCII characters without spaces",
                         details=[{"field": HEADER}])
    ctx = wiring.context()
    pepper = ctx.settings.secret_pepper
    store = ctx.stores.idempotency
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
        return _replay(held, fingerprint, replay)
    token = held
    try:
        with store.holding(key_hash, token):
            response = call()
    except BaseException:
        store.release(key_hash, token)  # only while PENDING: a committed effect stays recorded
        raise
    _remember(store, key_hash, token, response)
    return response


def _replay(held: Record, fingerprint: str, replay: Callable[[dict], Response] | None) -> Response:
    if not hmac.compare_digest(held.fingerprint, fingerprint):
        raise IdempotencyKeyReused(
            f"this {HEADER} was already used with a different request; use a new key")
    if held.state == PENDING:
        raise IdempotencyKeyInUse(
            f"a request with this {HEADER} is still being processed; retry later")
    if held.state == COMMITTED:
        return _replay_committed(held.effect or {}, replay)
    headers = dict(held.headers or {})
    if held.body is None or held.status_code is None:
        raise ResponseNotKept(
            f"the request with this {HEADER} succeeded, but its response held a secret shown "
            "only once and was not kept", details={"status": held.status_code, **headers})
    headers[REPLAYED_HEADER] = "true"
    return Response(body=held.body.decode(), status_code=held.status_code, headers=headers)


def _replay_committed(effect: dict, replay: Callable[[dict], Response] | None) -> Response:
    """The first request's effect was written but its response was not stored (it died in
    between): answer from the effect, never by running the view again."""
    if replay is None:
        raise ResponseNotKept(
            f"the request with this {HEADER} took effect, but its response was not kept",
            details={"effect": effect})
    response = replay(effect)
    response.headers = {**(response.headers or {}), REPLAYED_HEADER: "true"}
    return response


def shown_once(location: Callable[[dict], str], status: int = 201) -> Callable[..., Response]:
    """``replay`` for a route whose answer shows a secret once (never stored): a repeat after a
    crash gets the same 409 as any repeat of it, with the Location of what was created."""
    def replay(effect: dict, **_path) -> Response:
        raise ResponseNotKept(
            f"the request with this {HEADER} succeeded, but its response held a secret shown "
            "only once and was not kept", details={"status": status, "Location": location(effect)})
    return replay


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
