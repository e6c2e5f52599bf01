"""Structured logs: one JSON object per line, with the request id, and no secrets.

The route helper (api/security.py) writes one ``request`` line per HTTP request with requestId
(API Gateway's request id, or a generated one locally; also sent back as X-Request-Id),
method, path, status, latencyMs, tokenId and actor. Nothing logs headers, bodies or query
strings. As a second line of defence every line is scrubbed before it is written: anything
shaped like a stagetrack token or a webhook secret (``whsec_``), the value after Bearer/Basic,
the value of a credential header (the API's own, and every header an integration lists in its
``redact_headers``: chalicelib/integrations/__init__.py), the value of a credential-named
field (``secret=``, ``"password":``, ``access_token=`` ...), and every exact value registered
with ``add_secret`` (the bootstrap admin token, the secret keys) become "[REDACTED]".

``configure`` puts the one JSON, scrubbed handler on every logger the service writes through:
``stagetrack`` (Chalice's app.log) and ``chalicelib`` (the modules that log under their own
``__name__``), and, in Lambda, on the root logger's handlers, where libraries' records go.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
from datetime import UTC, datetime

from . import integrations

LOGGER = "stagetrack"
SERVICE_LOGGERS = (LOGGER, "chalicelib")
REDACTED = "[REDACTED]"
_TOKEN = re.compile(r"(?<![A-Za-z0-9])st_[A-Za-z0-9_-]{20,}")  # not inside words such as test_...
_SCHEME = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_WEBHOOK_SECRET = re.compile(r"whsec_[A-Za-z0-9_-]{8,}")
# key=value, key: value, "key": "value" where the key names a credential
_CREDENTIAL_FIELD = re.compile(r"(?i)\b([\w-]*(?:secret|password|passwd|api[_-]?key|token|pepper)"
                               r"(?:[_-]?keys?)?\\?[\"']?\s*[:=]\s*\\?[\"']?)(?!\[REDACTED\])([^\s\"'&,;}\\]+)")
_extra_secrets: set[str] = set()
# Headers carrying credentials of our own API and its dialects; the integrations add theirs.
API_CREDENTIAL_HEADERS = ("x-auth-token", "authorization")


def credential_headers() -> tuple[str, ...]:
    """Every header whose value is scrubbed: the API's, then each integration's (read afresh,
    so an integration registered later is covered)."""
    return tuple(dict.fromkeys((*API_CREDENTIAL_HEADERS, *integrations.redact_headers())))


@functools.lru_cache(maxsize=8)
def _header_pattern(names: tuple[str, ...]) -> re.Pattern[str]:
    """``<header>: value``, ``<header>=value``, ``"<header>": "value"`` for any of ``names``."""
    alternatives = "|".join(re.escape(name) for name in names)
    return re.compile(rf"(?i)({alternatives})(\"?\s*[:=]\s*\"?)[^\s\",}}]+")


def redact(text: str) -> str:
    for secret in _extra_secrets:
        text = text.replace(secret, REDACTED)
    text = _TOKEN.sub(REDACTED, text)
    text = _SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _header_pattern(credential_headers()).sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _WEBHOOK_SECRET.sub(REDACTED, text)
    return _CREDENTIAL_FIELD.sub(lambda m: f"{m.group(1)}{REDACTED}", text)


def _redact_value(value):
    """Scrub before JSON encoding too: json.dumps escapes quotes and non-ASCII characters,
    after which an exact secret value would no longer be found in the line."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(v) for v in value]
    return value


def add_secret(value: str | None) -> None:
    """Scrub this exact value from every log line (e.g. the bootstrap admin token)."""
    if value and len(value) >= 8:
        _extra_secrets.add(value)


def scrub_settings(settings) -> None:
    """Register the secrets the settings hold, at start-up, before anything can log them."""
    for name in ("admin_token", "secret_key", "secret_pepper", "otlp_headers"):
        add_secret(getattr(settings, name, None))
    for key in getattr(settings, "previous_secret_keys", ()) or ():
        add_secret(key)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        entry = _redact_value({k: v if isinstance(v, (str, int, float, bool, type(None), dict, list))
                               else str(v) for k, v in entry.items()})
        return redact(json.dumps(entry, default=str, separators=(",", ":")))


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is now (Lambda and chalice local read stdout)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


def _own(logger: logging.Logger, level: int) -> None:
    for handler in list(logger.handlers):
        if not isinstance(handler, _StdoutHandler):
            logger.removeHandler(handler)  # e.g. Chalice's plain-text handler
    if not any(isinstance(h, _StdoutHandler) for h in logger.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def configure(logger: logging.Logger | None = None, level: int = logging.INFO,
              *, root: bool | None = None) -> logging.Logger:
    """Make ``stagetrack`` (Chalice's app.log) and ``chalicelib.*`` write scrubbed JSON lines to
    stdout, once. ``root`` (default: when running in Lambda, whose runtime puts its own
    plain-text handler on the root logger) also gives the root handlers the JSON formatter, so
    records of libraries and of any other logger are scrubbed too."""
    logger = logger or logging.getLogger(LOGGER)
    for name in SERVICE_LOGGERS:
        _own(logging.getLogger(name), level)
    if logger.name not in SERVICE_LOGGERS:
        _own(logger, level)
    if root is None:
        root = "AWS_LAMBDA_FUNCTION_NAME" in os.environ
    if root:
        top = logging.getLogger()
        if not top.handlers:
            top.addHandler(_StdoutHandler())
        for handler in top.handlers:
            handler.setFormatter(JsonFormatter())
    return logger
