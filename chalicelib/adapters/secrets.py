"""The deployment's secrets from AWS Secrets Manager, read once per container.

A deployed function's environment names its secrets (``STAGETRACK_SECRET_IDS``: ids or ARNs,
comma-separated), never their values: each is a JSON object holding some of the fields below,
read with one GetSecretValue the first time the container builds its context, and kept for the
container's life. A field found in two secrets, a field not listed here, or a secret that is not
such an object stops the container with a ``SettingsError`` naming the secret and the field,
never showing a value. Every value read is scrubbed from the logs before anything can log it.

Rotation (docs/deploy.md "Secrets"): a container keeps what it read, so a new value reaches the
functions as their containers are replaced (or at once, when their configuration is updated).
"""
from __future__ import annotations

import dataclasses
import json
import threading

from .. import logging_setup
from ..settings import Settings, SettingsError
from . import aws

# field of a secret's JSON -> the setting it provides
FIELDS = {
    "admin_token": "admin_token",
    "secret_pepper": "secret_pepper",
    "secret_key": "secret_key",
    "previous_secret_keys": "previous_secret_keys",
    "otlp_headers": "otlp_headers",  # the OTLP export's headers (name=value,...): the operator's secret
}

_lock = threading.Lock()
_read: dict[str, dict] = {}  # secret id -> its fields (per container)


def _fetch(secret_id: str, region: str) -> dict:
    with _lock:
        if secret_id not in _read:
            answer = aws.client("secretsmanager", region).get_secret_value(SecretId=secret_id)
            _read[secret_id] = _parse(secret_id, answer.get("SecretString"))
        return _read[secret_id]


def _parse(secret_id: str, text: str | None) -> dict:
    try:
        fields = json.loads(text) if text is not None else None
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        raise SettingsError(f"secret {secret_id} must hold a JSON object with some of "
                            f"{', '.join(FIELDS)}")
    values: dict = {}
    for name, value in fields.items():
        if name not in FIELDS:
            raise SettingsError(f"secret {secret_id} holds {name!r}; it may hold {', '.join(FIELDS)}")
        if name == "previous_secret_keys":
            keys = value.split(",") if isinstance(value, str) else value
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise SettingsError(f"secret {secret_id}: previous_secret_keys must be a list of strings")
            values[name] = tuple(k for k in keys if k)
        elif not isinstance(value, str) or not value:
            raise SettingsError(f"secret {secret_id}: {name} must be a non-empty string")
        else:
            values[name] = value
    for value in values.values():
        for one in (value,) if isinstance(value, str) else value:
            logging_setup.add_secret(one)
    return values


def resolve(settings: Settings) -> Settings:
    """The settings with the values their secrets hold (unchanged when they name none)."""
    found: dict = {}
    owner: dict[str, str] = {}
    for secret_id in settings.secret_ids:
        for name, value in _fetch(secret_id, settings.region).items():
            if name in owner:
                raise SettingsError(f"{name} is in two secrets: {owner[name]} and {secret_id}")
            owner[name] = secret_id
            found[FIELDS[name]] = value
    return dataclasses.replace(settings, **found) if found else settings


def forget() -> None:
    """Tests: a new container (the next resolve reads the secrets again)."""
    with _lock:
        _read.clear()
