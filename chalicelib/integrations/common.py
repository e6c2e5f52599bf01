"""What every integration module shares: the base of a sender's payload model, payload
validation into domain errors, JSON loading, and a constant-time token comparison."""
from __future__ import annotations

import hashlib
import hmac
import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from ..domain.errors import BadRequest, ValidationFailed


class Vendor(BaseModel):
    """A sender's payload: we read the fields we need, ignore the rest, coerce nothing silly.
    Built on first use (``defer_build``), so a cold start pays only for the models it uses."""

    model_config = ConfigDict(extra="ignore", defer_build=True)


Text = Annotated[str, StringConstraints(min_length=1, max_length=1000)]


def validate_payload(model: type[BaseModel], data: object, what: str) -> Any:
    if not isinstance(data, dict):
        raise BadRequest(f"{what} payload must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        details = [{"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"],
                    "type": e["type"]} for e in error.errors(include_url=False, include_input=False)]
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        raise ValidationFailed(f"not a {what} payload: {summary}", details=details) from None


def load_json(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("request body is not valid JSON") from None


def same_token(presented: str | None, expected: str) -> bool:
    """Constant time whatever the lengths: compares SHA-256 digests of both."""
    if not presented:
        return False
    return hmac.compare_digest(hashlib.sha256(presented.encode("utf-8", "replace")).digest(),
                               hashlib.sha256(expected.encode("utf-8")).digest())


def content_type(headers: Any) -> str:
    """The media type of a request (no parameters), lower case; "" when not sent."""
    return (headers.get("content-type") or "").split(";")[0].strip().lower()
