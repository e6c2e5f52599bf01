"""Paging cursors: tamper-evident, and bound to the listing that issued them.

A cursor is ``base64url(JSON payload) "." base64url(tag)``, where the tag is the first 128 bits
of HMAC-SHA256 over ``<scope> NUL <payload part>`` under a key derived for this one purpose
from the deployment's secret key. The scope names the listing (for example the pipeline and the
status filter), so a cursor copied from another listing, edited, truncated, or made up does not
verify. The tag is checked before anything is decoded, so no forged text ever reaches the JSON
parser or the database; every failure is the same 400 "cursor is not valid".

What the payload holds (a DynamoDB key) is the store's business, not this module's.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

from .errors import BadRequest

MAX_CURSOR_CHARS = 2048
TAG_BYTES = 16
_PURPOSE = b"stagetrack/cursor/v1"
_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
INVALID = "cursor is not valid"


def _b64(data: bytes) -> str:
    # pragma below: "ASCII" is the same codec, and no cursor part ends in "X" (base64 of a JSON
    # object ends in f/Q, 0 or 9; of a 16-byte tag in A, Q, g or w), so rstrip("XX=XX") is "=".
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")  # pragma: no mutate


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    """Seals and opens cursors under one secret; ``scope`` says which listing a cursor is for."""

    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), _PURPOSE, hashlib.sha256).digest()

    def _tag(self, scope: str, body: str) -> str:
        message = scope.encode() + b"\x00" + body.encode("ascii")
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest()[:TAG_BYTES])

    def seal(self, scope: str, payload: dict | None) -> str | None:
        if not payload:
            return None
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        return f"{body}.{self._tag(scope, body)}"

    def open(self, scope: str, cursor: str) -> dict:
        """The payload of a cursor this codec sealed for ``scope``; anything else is a 400."""
        if not isinstance(cursor, str) or len(cursor) > MAX_CURSOR_CHARS:
            raise BadRequest(INVALID)
        body, dot, tag = cursor.partition(".")
        if not dot or not body or not set(body) <= _ALPHABET or not set(tag) <= _ALPHABET:
            raise BadRequest(INVALID)
        if not hmac.compare_digest(tag, self._tag(scope, body)):
            raise BadRequest(INVALID)
        try:
            payload = json.loads(_unb64(body))
        except (binascii.Error, ValueError, RecursionError):
            raise BadRequest(INVALID) from None
        if not isinstance(payload, dict):
            raise BadRequest(INVALID)
        return payload
