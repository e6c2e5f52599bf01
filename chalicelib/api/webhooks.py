"""Webhooks in (GitHub, GitLab, CDEvents) and the admin API of their sources.

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
  the other routes keep STAGETRACK_MAX_BODY_BYTES), 415 a body in a media type not in
  CONTENT_TYPES, 422 a payload that is not what the sender documents (the details name the field).
Translation only: verification and parsing are in domain/events.py, applying in service/ingest.py.
"""
from __future__ import annotations

import hashlib
import json
from typing import Annotated
from urllib.parse import parse_qs

from chalice import Blueprint
from pydantic import BaseModel, ConfigDict, StringConstraints

from .. import wiring
from ..domain import auth, events
from ..domain.auth import Forbidden
from ..domain.errors import BadRequest
from ..service import ingest
from ..service.ports import StoredSource
from .idempotency import shown_once
from .openapi import Out, Timestamp
from .parsing import parse_body
from .responses import json_response
from .routing import route
from .security import current_actor

webhooks = Blueprint(__name__)

# What senders really send: GitHub JSON or form-encoded `payload=`, GitLab JSON, CloudEvents in
# binary (any type; JSON here) or structured mode. Text and octet-stream reach the view, which
# answers in the sender's terms (a CloudEvent that is not JSON is its 400), not a bare 415.
CONTENT_TYPES = ["application/json", "application/x-www-form-urlencoded", "text/plain",
                 "application/octet-stream", events.CLOUDEVENTS_JSON, events.CLOUDEVENTS_BATCH]


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
    return webhooks.current_request


def _source() -> str | None:
    params = _request().query_params or {}
    return params.get("source")


def _answer(status: int, answer: dict, replayed: bool):
    return json_response(answer, status, {"Idempotent-Replayed": "true"} if replayed else None)


def _webhook_body_limit(settings) -> int:
    """Webhooks have a limit of their own: real senders' bodies grow with the pipeline."""
    return settings.webhook_max_body_bytes


def _webhook(path: str, summary: str):
    return route(webhooks, path, methods=["POST"], scope="public",
                 idempotency_key=False, max_body=_webhook_body_limit,
                 query=SourceQuery, response=WebhookOut, summary=summary,
                 openapi={"responses": _responses()}, content_types=CONTENT_TYPES)


@_webhook("/api/webhooks/github", "GitHub Actions workflow_run / workflow_job (X-Hub-Signature-256)")
def github():
    request, ctx, name = _request(), wiring.context(), _source()
    secret = ingest.source_secret(ctx, "github", name)
    raw = request.raw_body or b""
    if not events.verify_github_signature(secret, raw, request.headers.get("x-hub-signature-256")):
        raise SignatureRefused("X-Hub-Signature-256 is missing or does not match this source's secret")
    event = request.headers.get("x-github-event")
    if event == "ping":
        return json_response({"result": "pong"})
    parsed = events.payloads().parse_github(event, _github_payload(request, raw), name)
    delivery = request.headers.get("x-github-delivery")
    if not delivery and not isinstance(parsed, events.Ignored):
        raise BadRequest("X-GitHub-Delivery header is required", details=[{"field": "X-GitHub-Delivery"}])
    return _answer(*ingest.ingest_webhook(ctx, parsed, namespace=f"github:{name}", delivery_id=delivery or "",
                                          raw=raw, actor=f"github:{name}"))


def _github_payload(request, raw: bytes) -> object:
    """GitHub sends JSON, or ``payload=<JSON>`` when the hook's content type is form-encoded."""
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        try:
            values = parse_qs(raw.decode("utf-8"), strict_parsing=True).get("payload")
        except (UnicodeDecodeError, ValueError):
            values = None
        if not values:
            raise BadRequest("a form-encoded GitHub webhook needs a payload field")
        raw = values[0].encode("utf-8")
    return events.payloads().load_json(raw)


@_webhook("/api/webhooks/gitlab", "GitLab Pipeline Hook / Job Hook (X-Gitlab-Token)")
def gitlab():
    request, ctx, name = _request(), wiring.context(), _source()
    secret = ingest.source_secret(ctx, "gitlab", name)
    if not events.same_token(request.headers.get("x-gitlab-token"), secret):
        raise SignatureRefused("X-Gitlab-Token is missing or is not this source's secret token")
    raw = request.raw_body or b""
    parsed = events.payloads().parse_gitlab(
        request.headers.get("x-gitlab-event"), events.payloads().load_json(raw), name
    )
    # GitLab keeps Idempotency-Key (and X-Gitlab-Event-UUID) across its retries; a GitLab too
    # old to send either is de-duplicated on the payload itself.
    delivery = (request.headers.get("idempotency-key") or request.headers.get("x-gitlab-event-uuid")
                or "sha256:" + hashlib.sha256(raw).hexdigest())
    return _answer(*ingest.ingest_webhook(ctx, parsed, namespace=f"gitlab:{name}", delivery_id=delivery,
                                          raw=raw, actor=f"gitlab:{name}"))


@_webhook("/api/webhooks/cdevents", "CDEvents over the CloudEvents HTTP binding (Authorization: Bearer)")
def cdevents():
    request, ctx, name = _request(), wiring.context(), _source()
    secret = ingest.source_secret(ctx, "cdevents", name)
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not events.same_token(token.strip(), secret):
        raise SignatureRefused("send Authorization: Bearer <this source's secret>")
    raw = request.raw_body or b""
    cloudevent = events.payloads().parse_cloudevent(request.headers, raw)
    parsed = events.payloads().parse_cdevent(cloudevent, name)
    # the event, not its encoding: a retry in the other content mode is still the same event
    canonical = json.dumps([cloudevent.type, cloudevent.data], sort_keys=True, separators=(",", ":")).encode()
    return _answer(*ingest.ingest_webhook(ctx, parsed, namespace=f"cdevents:{name}",
                                          delivery_id=json.dumps([cloudevent.source, cloudevent.id]),
                                          raw=canonical, actor=f"cdevents:{name}"))


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


@route(webhooks, "/api/sources", methods=["POST"], scope="admin", acts_on=_SOURCES,
       body=events.CreateSourceIn,
       response=SourceCreatedOut, status=201,
       replay=shown_once(lambda effect: f"/api/sources/{effect['source']}"),
       summary="Create a webhook source; its secret is in this response only")
def create_source():
    ctx = wiring.context()
    body = parse_body(_request(), events.CreateSourceIn, ctx.settings.max_body_bytes)
    source, secret = ingest.create_source(ctx, body, current_actor())
    view = source_view(source)
    view["secret"] = secret
    return json_response(view, 201, {"Location": f"/api/sources/{source.name}", "Cache-Control": "no-store"})


@route(webhooks, "/api/sources", methods=["GET"], scope="admin", acts_on=_SOURCES, response=SourceListOut,
       summary="List webhook sources (never their secrets)")
def list_sources():
    return json_response({"items": [source_view(s) for s in ingest.list_sources(wiring.context())]})


@route(webhooks, "/api/sources/{name}", methods=["DELETE"], scope="admin", acts_on=_SOURCES,
       response=SourceOut,
       summary="Delete a webhook source; its webhooks are refused from now on")
def delete_source(name):
    return json_response(source_view(ingest.delete_source(wiring.context(), name)))
