"""Idempotency-Key claims (the HTTP side is api/idempotency.py).

A claim is one conditional PutItem: it succeeds when the key is new, when its record has expired
(TTL deletion can lag by hours, so expiry is checked here too) or when a first request holding
it was abandoned (its lease ran out while still PENDING: the process died between claiming and
writing anything). Only a refused claim costs one more read (strongly consistent GetItem) to
replay or explain.

A record goes PENDING -> COMMITTED -> DONE. COMMITTED is set by the request's own effect
transaction (store/repository.py ``Writer.transaction``, while ``holding`` is active), conditioned on
the claim token, so "the effect happened" and "the key took effect" are one atomic write. A
COMMITTED record is never claimed again before it expires, whatever its lease says: a request
that died after its effect committed, before its response was stored, leaves a record that a
retry answers from (``Record.effect``) instead of writing the effect again. ``release`` only
drops a PENDING claim (a request that failed wrote nothing); ``complete`` stores the response
on a PENDING or COMMITTED record still held by the same claim token.
"""
from __future__ import annotations

import json
import uuid
import zlib

from pynamodb.exceptions import DeleteError, PutError, UpdateError

from ..service.ports import COMMITTED, DONE, PENDING, ClaimTakenOver, Record
from . import models
from .models import IDEMPOTENCY_SK as SK
from .models import IdempotencyItem, ItemModels
from .models import idempotency_pk as _pk
from .repository import Writer, _is_condition_failure

assert (models.IDEM_PENDING, models.IDEM_COMMITTED, models.IDEM_DONE) == (PENDING, COMMITTED, DONE)

__all__ = ["COMMITTED", "DONE", "PENDING", "ClaimTakenOver", "IdempotencyStore", "Record"]


class IdempotencyStore:
    """The DynamoDB ``IdempotencyStore`` (service/ports.py) on the table of ``items``."""

    def __init__(self, items: ItemModels, writer: Writer) -> None:
        self._model = items.idempotency
        self._writer = writer

    def holding(self, key_hash: str, token: str):
        """The claim's commit rides on the next change's first transaction sent by the stores
        of this context (``Writer.holding``, repository.py)."""
        return self._writer.holding(key_hash, token)

    def claim(self, key_hash: str, fingerprint: str, now: int, *, lease_seconds: int,
              ttl_seconds: int) -> str | Record:
        """Returns a claim token (go ahead) or the record that holds the key."""
        for _ in range(2):
            token = uuid.uuid4().hex
            item = self._model(
                pk=_pk(key_hash), sk=SK, state=PENDING, fingerprint=fingerprint, token=token,
                lease_until=now + lease_seconds, expires_at=now + ttl_seconds,
            )
            free = (
                IdempotencyItem.pk.does_not_exist()
                | (IdempotencyItem.expires_at <= now)
                | ((IdempotencyItem.state == PENDING) & (IdempotencyItem.lease_until <= now))
            )
            try:
                item.save(condition=free)
                return token
            except PutError as error:
                if not _is_condition_failure(error):
                    raise
            try:
                held = self._model.get(_pk(key_hash), SK, consistent_read=True)
            except self._model.DoesNotExist:
                continue  # deleted (TTL) between our two calls: claim again
            return Record(
                state=held.state, fingerprint=held.fingerprint,
                status_code=None if held.status_code is None else int(held.status_code),
                headers=json.loads(held.headers) if held.headers else None,
                body=zlib.decompress(held.body) if held.body is not None else None,
                effect=json.loads(held.effect) if held.effect else None,
            )
        raise RuntimeError("idempotency key could not be claimed or read")

    def complete(self, key_hash: str, token: str, status_code: int, headers: dict,
                 body: bytes | None, *, max_stored: int) -> str:
        """Store the response of the request holding the claim: "stored"; "lost" if the claim
        was taken over meanwhile; "too_large" (claim released) if it cannot fit in an item.
        ``body`` None marks the key used without keeping the response (it held a secret)."""
        packed = None if body is None else zlib.compress(body)
        if packed is not None and len(packed) > max_stored:
            self.release(key_hash, token)
            return "too_large"
        item = self._model(pk=_pk(key_hash), sk=SK)
        try:
            item.update(
                actions=[
                    IdempotencyItem.state.set(DONE),
                    IdempotencyItem.status_code.set(status_code),
                    IdempotencyItem.headers.set(json.dumps(headers, separators=(",", ":"))),
                    IdempotencyItem.body.set(packed) if packed is not None else IdempotencyItem.body.remove(),
                ],
                condition=(IdempotencyItem.token == token)
                & IdempotencyItem.state.is_in(PENDING, COMMITTED),
            )
        except UpdateError as error:
            if _is_condition_failure(error):
                return "lost"
            raise
        return "stored"

    def release(self, key_hash: str, token: str) -> None:
        """Forget a claim whose request changed nothing (it failed), so the key can be reused.
        A COMMITTED record stays: its effect was written, whatever happened afterwards."""
        item = self._model(pk=_pk(key_hash), sk=SK)
        try:
            item.delete(condition=(IdempotencyItem.token == token) & (IdempotencyItem.state == PENDING))
        except DeleteError as error:
            if not _is_condition_failure(error):
                raise
