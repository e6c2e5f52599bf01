"""Webhooks in (one route per webhook integration of chalicelib/integrations/) and the admin
API of their sources.

Addressing: ``POST /api/webhooks/<type>?source=<name>``; the source (created with
``POST /api/sources``) holds the secret the request is verified with. These routes take no
stagetrack token (``scope="public"``): the signature or shared token IS the authentication,
checked before anything else is read from the body; refused, it is 403 (``signature_invalid``).
Every answer is JSON:
- 200 ``{"result": "applied"|"unchanged"|"ignored", "runId", "stages", "notes"}``; a replayed
  delivery id answers the first result again with ``Idempotent-Replayed: true``;
- 202 ``{"result": "ignored", "notes": [why]}`` for event types we do not handle;
- 200 ``{"result": "pong"}`` for GitHub's ping;
- 400 malformed JSON or headers, 403 bad signature/token, 404 no such source, 409 the same
  delivery still being processed (or the pipeline is paused), 413 larger than
  STAGETRACK_WEBHOOK_MAX_BODY_BYTES (2 MiB by default: a GitLab Pipeline Hook of ~2000 jobs;
  the other routes keep STAGETRACK_MAX_BODY_BYTES), 415 a body in a media type no webhook
  integration takes, 422 a payload that is not what the sender documents (the details name the
  field).
Translation only: the integration verifies and parses (its ``verify``/``receive``),
service/ingest.py applies.
"""
from __future__ import annotations

from typing import Annotated

from chalice import Blueprint
from pydantic import BaseModel, ConfigDict, StringConstraints

from .. import integrations, wiring
from ..domain import auth
from ..domain.auth import Forbidden
from ..integrations import Integration, Reply
from ..service import ingest
from ..service.ports import StoredSource
from .idempotency import shown_once
from .openapi import Out, Timestamp
from .parsing import parse_body
from .responses import json_response
from .routing import route
from .security import current_actor

routes = Blueprint(__name__)

# Every media type some webhook integration takes (GitHub JSON or form-encoded `payload=`,
# GitLab JSON, CloudEvents in binary or structured mode, text and octet-stream that reach the
# view, which answers in the sender's terms), accepted by every webhook route.
CONTENT_TYPES = integrations.webhook_content_types()


class SignatureRefused(Forbidden):
    """403, not 401: no HTTP authentication scheme is asked for (401 would need a
    WWW-Authenticate challenge); the request's signature or shared token is refused."""

    code = "signature_invalid"


def _responses() -> dict:
    """The statuses a webhook answers (route(openapi=)): not the native API's set."""
    def body(schema: str, description: str) -> dict:
        return {"description": description,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}

    return {
        "200": body("WebhookOut", "applied, unchanged, or ignored as stale; a replayed delivery id answers "
                                  "the first result again with Idempotent-Replayed: true"),
        "202": body("WebhookOut", "an event type stagetrack does not handle (notes say why)"),
        "400": body("ErrorOut", "malformed JSON, missing headers or query parameter source"),
        "403": body("ErrorOut", "bad or missing signature / token (code signature_invalid)"),
        "404": body("ErrorOut", "no webhook source of this type and name"),
        "409": body("ErrorOut", "the same delivery is being processed, or the pipeline is paused"),
        "413": body("ErrorOut", "request body too large"),
        "415": body("ErrorOut", "a request body in a media type webhooks do not take"),
        "422": body("ErrorOut", "not the payload the sender documents (details name the field)"),
    }


class SourceQuery(BaseModel):
    model_config = ConfigDict(defer_build=True)  # built on its first request

    source: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")]


class WebhookOut(Out):
    result: str


def _request():
    return routes.current_request


def _source() -> str | None:
    params = _request().query_params or {}
    return params.get("source")


def _answer(status: int, answer: dict, replayed: bool):
    return json_response(answer, status, {"Idempotent-Replayed": "true"} if replayed else None)


def _webhook_body_limit(settings) -> int:
    """Webhooks have a limit of their own: real senders' bodies grow with the pipeline."""
    return settings.webhook_max_body_bytes


def receive(integration: Integration):
    """The view of one webhook integration: its source's secret (400 without ``source``, 404 for
    no such source of this type), the integration's check of the request (403), then its parse;
    applied once per delivery id."""
    def view():
        request, ctx, name = _request(), wiring.context(), _source()
        secret = ingest.source_secret(ctx, integration.name, name)
        raw = request.raw_body or b""
        if not integration.verify(secret, request.headers, raw):
            raise SignatureRefused(integration.refusal)
        received = integration.receive(request.headers, raw, name)
        if isinstance(received, Reply):
            return json_response(received.body, received.status)
        return _answer(*ingest.ingest_webhook(ctx, received.update, namespace=f"{integration.name}:{name}",
                                              delivery_id=received.delivery_id, raw=received.fingerprint,
                                              actor=f"{integration.name}:{name}"))

    view.__name__ = view.__qualname__ = integration.name  # Chalice names the route after its view
    return view


def _register(integration: Integration) -> None:
    spec = integration.webhook
    assert spec is not None, f"webhook integration {integration.name} needs its route"
    route(routes, spec.path, methods=["POST"], scope="public", idempotency_key=False,
          max_body=_webhook_body_limit, query=SourceQuery, response=WebhookOut, summary=spec.summary,
          openapi={"responses": _responses()}, content_types=CONTENT_TYPES)(receive(integration))


for _integration in integrations.of_kind(integrations.WEBHOOK):
    _register(_integration)


# ---- sources (admin) -----------------------------------------------------------------------------

class SourceOut(Out):
    name: str
    type: str
    webhookPath: str
    createdAt: Timestamp
    createdBy: str | None


class SourceCreatedOut(SourceOut):
    secret: str


class SourceListOut(Out):
    items: list[SourceOut]


def source_view(source: StoredSource) -> dict:
    return {"name": source.name, "type": source.type,
            "webhookPath": f"/api/webhooks/{source.type}?source={source.name}",
            "createdAt": source.created_at, "createdBy": source.created_by}


# A source feeds runs of whatever pipelines its sender names: it acts on no single pipeline, so
# managing sources needs a token that is not limited to pipelines.
_SOURCES = auth.ACTS_ON_NO_SINGLE_PIPELINE


@route(routes, "/api/sources", methods=["POST"], scope="admin", acts_on=_SOURCES,
       body=ingest.CreateSourceIn,
       response=SourceCreatedOut, status=201,
       replay=shown_once(lambda effect: f"/api/sources/{effect['source']}"),
       summary="Create a webhook source; its secret is in this response only")
def create_source():
    ctx = wiring.context()
    body = parse_body(_request(), ingest.CreateSourceIn, ctx.settings.max_body_bytes)
    source, secret = ingest.create_source(ctx, body, current_actor())
    view = source_view(source)
    view["secret"] = secret
    return json_response(view, 201, {"Location": f"/api/sources/{source.name}", "Cache-Control": "no-store"})


@route(routes, "/api/sources", methods=["GET"], scope="admin", acts_on=_SOURCES, response=SourceListOut,
       summary="List webhook sources (never their secrets)")
def list_sources():
    return json_response({"items": [source_view(s) for s in ingest.list_sources(wiring.context())]})


@route(routes, "/api/sources/{name}", methods=["DELETE"], scope="admin", acts_on=_SOURCES,
       response=SourceOut,
       summary="Delete a webhook source; its webhooks are refused from now on")
def delete_source(name):
    return json_response(source_view(ingest.delete_source(wiring.context(), name)))
