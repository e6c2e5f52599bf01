"""Reading a request: its JSON body against a model, its query string, its media type and size,
the fields a JSON body names (for authorization), and the base URL the client called.

Bad input is a domain error (400, 413, 415, 422) that the route renders in its own shape.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from .. import wiring
from ..domain.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, ValidationFailed

# The request body media types a route accepts unless it says otherwise (route(content_types=)).
# Chalice itself is told every route takes any type ("*/*"): its own 415 has its own shape
# ({"Code": ...}), so the list is checked by check_content_type, in ours. A route reading JSON
# (parse_body) refuses anything but JSON with 415 as well.
ACCEPTED_CONTENT_TYPES = ["application/json"]  # a route taking more says so (GoCD forms, webhooks)

M = TypeVar("M", bound=BaseModel)

_MEDIA_TYPE = re.compile(r"^[a-z0-9!#$&^_.+\-]{1,64}/[a-z0-9!#$&^_.+\-]{1,64}$")


def media_type(request) -> str:
    """The request body's media type, lower case, without parameters; JSON when none is given
    (as Chalice and API Gateway assume)."""
    return (request.headers.get("content-type") or "").split(";")[0].strip().lower() or "application/json"


def check_content_type(request, accepts: tuple[str, ...]) -> None:
    """A body in a media type the route does not list (``accepts``; () = any) is 415. Only a
    body has a media type: a request without one passes whatever Content-Type it names."""
    if not accepts or not request.raw_body:
        return
    media = media_type(request)
    if media not in accepts:
        named = repr(media) if _MEDIA_TYPE.match(media) else "this media type"  # echo nothing odd
        raise UnsupportedMediaType(f"a request body in {named} is not accepted here; send one of: "
                                   + ", ".join(accepts))


def check_body_size(request, max_body: int | Callable | None) -> None:
    """Every route, whatever its view does with the body: nothing larger gets in. ``max_body``:
    bytes, ``callable(settings) -> bytes``, or None for the setting ``max_body_bytes``."""
    settings = wiring.context().settings
    limit = max_body(settings) if callable(max_body) else max_body or settings.max_body_bytes
    size = len(request.raw_body or b"")
    if size > limit:
        raise PayloadTooLarge(f"request body is {size} bytes; the limit is {limit}")


class _JsonObject:
    """A JSON object as its (key, value) pairs, every one of a repeated key kept."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, object]]) -> None:
        self.pairs = pairs


def json_body_fields(request) -> list[tuple[str, object]] | None:
    """The top-level fields of a JSON object body, in order, duplicates included: whichever
    value of a repeated field the view's parser keeps, authorization has seen it. None for
    anything else (the view answers 400 for it; a limited token gets 403 first)."""
    raw = request.raw_body or b""
    if not raw or len(raw) > wiring.context().settings.max_body_bytes:
        return None
    try:
        body = json.loads(raw, object_pairs_hook=_JsonObject)
    except (ValueError, RecursionError):
        return None
    return body.pairs if isinstance(body, _JsonObject) else None


def _field_errors(error: ValidationError) -> list[dict]:
    return [
        {
            "field": ".".join(str(part) for part in item["loc"]) or "(body)",
            "message": item["msg"],
            "type": item["type"],
        }
        for item in error.errors(include_url=False, include_input=False)
    ]


def parse_body(request, model: type[M], max_bytes: int) -> M:
    """Malformed JSON or a non-object body is 400; a body that fails the schema is 422; a body
    that is not application/json is 415."""
    raw = request.raw_body or b""
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"request body is {len(raw)} bytes; the limit is {max_bytes}")
    if raw and media_type(request) != "application/json":
        raise UnsupportedMediaType("send the body as application/json")
    try:
        return model.model_validate_json(raw or b"")
    except ValidationError as error:
        fields = _field_errors(error)
        if any(f["type"] == "json_invalid" for f in fields):
            raise BadRequest("request body is not valid JSON") from None
        if any(f["field"] == "(body)" and f["type"] == "model_type" for f in fields):
            raise BadRequest("request body must be a JSON object") from None
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        raise ValidationFailed(summary, details=fields) from None


_HOST = re.compile(r"^[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?$")


def base_url(request) -> str:
    """Scheme, host and API Gateway stage the client called, for the absolute URLs some
    dialects answer with (Buddy's ``url``, GoCD's ``_links``). A Host header that is not a plain
    host[:port] is not echoed."""
    headers = request.headers
    host = (headers.get("host") or "").strip()
    if not _HOST.fullmatch(host):
        host = "localhost"
    scheme = (headers.get("x-forwarded-proto") or "http").split(",")[0].strip().lower()
    if scheme not in ("http", "https"):
        scheme = "http"
    context = request.context if isinstance(request.context, dict) else {}
    stage, path = context.get("stage"), context.get("path") or ""
    prefix = f"/{stage}" if stage and path.startswith(f"/{stage}/") else ""
    return f"{scheme}://{host}{prefix}"


def parse_query(params: dict | None, model: type[M]) -> M:
    """Query strings are text; numbers in them are parsed here, so this is lax, not strict."""
    try:
        return model.model_validate(dict(params or {}), strict=False)
    except ValidationError as error:
        fields = _field_errors(error)
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        raise BadRequest(summary, details=fields) from None
