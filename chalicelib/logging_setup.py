"""Structured logs: one JSON object per line, with the request id, and no secrets.

The route helper (api/__init__.py) writes one ``request`` line per HTTP request with requestId
(API Gateway's request id, or a generated one locally; also sent back as X-Request-Id),
method, path, status, latencyMs, tokenId and actor. Nothing logs headers, bodies or query
strings. As a second line of defence every line is scrubbed before it is written: anything
shaped like a stagetrack token, the value after Bearer/Basic, and the bootstrap admin token
become "[REDACTED]".
"""
from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone

LOGGER = "stagetrack"
REDACTED = "[REDACTED]"
_PATTERNS = [
    re.compile(r"st_[A-Za-z0-9_-]{20,}"),
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)(x-auth-token|authorization|x-hub-signature-256|x-gitlab-token)(\"?\s*[:=]\s*\"?)[^\s\",}]+"),
]
_extra_secrets: set[str] = set()


def redact(text: str) -> str:
    for secret in _extra_secrets:
        text = text.replace(secret, REDACTED)
    text = _PATTERNS[0].sub(REDACTED, text)
    text = _PATTERNS[1].sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return _PATTERNS[2].sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


def add_secret(value: str | None) -> None:
    """Scrub this exact value from every log line (e.g. the bootstrap admin token)."""
    if value and len(value) >= 8:
        _extra_secrets.add(value)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
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


def configure(logger: logging.Logger | None = None, level: int = logging.INFO) -> logging.Logger:
    """Make the ``stagetrack`` logger (Chalice's app.log) write JSON lines to stdout, once."""
    logger = logger or logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        if not isinstance(handler, _StdoutHandler):
            logger.removeHandler(handler)  # Chalice's plain-text handler
    if not any(isinstance(h, _StdoutHandler) for h in logger.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger
