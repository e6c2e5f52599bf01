"""Answers: the JSON error body, JSON responses, and the HTTP status of each domain error.

Every error body is ``{"error": {"code", "message"[, "details"]}}``; a dialect renders its own
shape from the same status (``route(render_error=...)``, api/*_wire.py).
"""
from __future__ import annotations

import json

from chalice import Response

from ..domain.auth import Forbidden, RateLimited, Unauthorized
from ..domain.errors import (
    BadRequest,
    Conflict,
    DomainError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)

STATUS_BY_ERROR: list[tuple[type[DomainError], int]] = [
    (BadRequest, 400),
    (ValidationFailed, 422),
    (PayloadTooLarge, 413),
    (NotFound, 404),
    (MethodNotAllowed, 405),
    (Conflict, 409),
    (UnsupportedMediaType, 415),
    (Unauthorized, 401),
    (Forbidden, 403),
    (RateLimited, 429),
]


def error_body(code: str, message: str, details: object | None = None) -> dict:
    error: dict = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def json_response(body: object, status: int = 200, headers: dict | None = None) -> Response:
    merged: dict[str, str | list[str]] = {"Content-Type": "application/json"}
    if headers:
        merged.update(headers)
    return Response(body=json.dumps(body, separators=(",", ":")), status_code=status, headers=merged)


def error_response(error: DomainError) -> Response:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return json_response(error_body(error.code, error.message, error.details), status,
                                 getattr(error, "headers", None))
    return json_response(error_body("internal_error", "internal error"), 500)


def status_of(error: DomainError) -> int:
    return next((status for cls, status in STATUS_BY_ERROR if isinstance(error, cls)), 500)
