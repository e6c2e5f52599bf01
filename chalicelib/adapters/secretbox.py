"""Seals the secrets stagetrack must be able to read back (webhook source secrets, subscriber
signing secrets) with AES-256-GCM.

Why encrypt rather than hash: verifying a GitHub signature or signing a delivery needs the
secret itself, so a one-way hash (as for API tokens) cannot work. The table only ever holds
``v1.<key id>.<base64url(nonce | ciphertext | tag)>``:
- the key is derived (HKDF-SHA256) from the STAGETRACK_SECRET_KEY setting, so any long random
  string works as a setting; the key id (8 hex chars of a hash of the derived key) names which
  key sealed a value, so keys can be rotated: seal with the current key, open with the current
  or any of STAGETRACK_PREVIOUS_SECRET_KEYS;
- a fresh random 96-bit nonce per value;
- the item's identity (e.g. ``source:github-main``) is authenticated as associated data, so a
  ciphertext copied onto another item does not open.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .. import logging_setup
from ..service.ports import SecretUnreadable

VERSION = "v1"
_INFO = b"stagetrack secretbox v1"
_SALT = b"stagetrack"


__all__ = ["SecretBox", "SecretUnreadable", "from_settings"]


def _derive(setting: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=_INFO).derive(setting.encode("utf-8"))


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"key-id" + key).hexdigest()[:8]


class SecretBox:
    def __init__(self, current: str, previous: tuple[str, ...] = ()) -> None:
        self._current = _derive(current)
        self._keys = {_key_id(k): k for k in [_derive(p) for p in previous] + [self._current]}

    def __repr__(self) -> str:  # never shows key material
        return f"SecretBox(keys={len(self._keys)})"

    def seal(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(12)
        sealed = AESGCM(self._current).encrypt(nonce, plaintext.encode("utf-8"), context.encode("utf-8"))
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{VERSION}.{_key_id(self._current)}.{body}"

    def open(self, sealed: str, context: str) -> str:
        try:
            version, key_id, body = sealed.split(".", 2)
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except ValueError:
            raise SecretUnreadable("not a sealed secret") from None
        key = self._keys.get(key_id)
        if version != VERSION or key is None or len(raw) < 12 + 16:
            raise SecretUnreadable("sealed with a key that is not configured (STAGETRACK_SECRET_KEY "
                                   "changed? list the old one in STAGETRACK_PREVIOUS_SECRET_KEYS)")
        try:
            return AESGCM(key).decrypt(raw[:12], raw[12:], context.encode("utf-8")).decode("utf-8")
        except InvalidTag:
            raise SecretUnreadable("sealed secret failed authentication") from None


LOCAL_DEFAULT_KEY = "stagetrack-local-secret-key"
log = logging.getLogger("stagetrack.secrets")


def from_settings(settings) -> SecretBox:
    """The box for these settings (keys derived once per container). The keys are scrubbed from
    every log line; the documented local default is flagged when used against real DynamoDB."""
    box = _cached(settings.secret_key, tuple(settings.previous_secret_keys))
    if box not in _checked:
        _checked.add(box)
        for key in (settings.secret_key, *settings.previous_secret_keys):
            logging_setup.add_secret(key)
        if settings.secret_key == LOCAL_DEFAULT_KEY and settings.dynamodb_endpoint is None:
            log.warning(
                "SECURITY: STAGETRACK_SECRET_KEY is the documented local default and this is "
                "not DynamoDB Local: set it to a long random value (webhook secrets are sealed with it)"
            )
        elif len(settings.secret_key) < 32:
            log.warning("SECURITY: STAGETRACK_SECRET_KEY is shorter than 32 characters")
    return box


_checked: set = set()


_boxes: dict[tuple, SecretBox] = {}


def _cached(current: str, previous: tuple[str, ...]) -> SecretBox:
    """HKDF per call is cheap but not free; a container derives its keys once."""
    key = (hashlib.sha256(current.encode()).hexdigest(),
           tuple(hashlib.sha256(p.encode()).hexdigest() for p in previous))
    box = _boxes.get(key)
    if box is None:
        box = _boxes[key] = SecretBox(current, previous)
    return box
