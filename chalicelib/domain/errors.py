"""Domain errors. The API maps each class to one HTTP status; the message is safe to show."""
from __future__ import annotations


class DomainError(Exception):
    code = "error"

    def __init__(self, message: str, *, details: object | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(DomainError):
    code = "bad_request"


class ValidationFailed(DomainError):
    code = "validation_failed"


class PayloadTooLarge(DomainError):
    code = "payload_too_large"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class IllegalTransition(Conflict):
    code = "illegal_transition"


class ConcurrentModification(Conflict):
    code = "concurrent_modification"


class PipelinePaused(Conflict):
    code = "pipeline_paused"


class UnsupportedMediaType(DomainError):
    """415: a request body in a media type the route does not read."""

    code = "unsupported_media_type"


class MethodNotAllowed(DomainError):
    """405: the path exists, the method does not; ``allow`` lists the methods it serves."""

    code = "method_not_allowed"

    def __init__(self, message: str, *, allow: str) -> None:
        super().__init__(message)
        self.headers = {"Allow": allow}
