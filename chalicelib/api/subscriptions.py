"""Outbound webhook subscriptions (admin): create, list, get, delete, and their deliveries.

Translation only (service/subscriptions.py does the work). The signing secret is in the
creation response only (``Cache-Control: no-store``, never kept by Idempotency-Key replays);
listings never show it.

Authorization: a subscription is for the pipelines it names. Creating one declares the body's
``pipelines`` (a limited admin must name them, all its own: 404 for another, 403 without);
the other routes act on stored subscriptions, and a limited admin sees and deletes only those
within its pipelines (service/subscriptions.py), others answer 404.
"""
from __future__ import annotations

from typing import Annotated

from chalice import Blueprint
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from .. import wiring
from ..domain import auth
from ..domain.events import CreateSubscriptionIn, SubscriptionFormat
from ..service import subscriptions
from ..service.ports import DeliveryAttempt, StoredSubscription
from .idempotency import shown_once
from .openapi import Out, Timestamp
from .parsing import parse_body, parse_query
from .responses import json_response
from .routing import route
from .security import current_principal

routes = Blueprint(__name__)


class SubscriptionOut(Out):
    id: str
    url: str
    events: list[str]
    pipelines: list[str] | None = Field(description="null: every pipeline")
    statuses: list[str] | None = Field(description="null: every new status")
    description: str | None
    format: SubscriptionFormat = Field(
        description="what deliveries carry: stagetrack (our event JSON) or cdevents (a CDEvent, "
                    "CloudEvents binary mode)")
    createdAt: Timestamp
    createdBy: str | None


class SubscriptionCreatedOut(SubscriptionOut):
    secret: str = Field(description="the signing secret: in this response only, stored encrypted")


class SubscriptionListOut(Out):
    items: list[SubscriptionOut]


class DeliveryOut(Out):
    deliveryId: str
    eventId: str
    eventType: str
    attempt: int
    outcome: str = Field(description="delivered | retrying | dead-lettered")
    statusCode: int | None
    error: str | None
    at: Timestamp
    durationMs: int | None
    nextAttemptAt: Timestamp | None


class DeliveryListOut(Out):
    items: list[DeliveryOut]
    nextCursor: str | None


class DeliveriesQuery(BaseModel):
    model_config = ConfigDict(defer_build=True)  # built on its first request

    limit: Annotated[int, Field(ge=1, le=100)] = 50
    cursor: Annotated[str, StringConstraints(max_length=2048)] | None = None


def subscription_view(subscription: StoredSubscription) -> dict:
    return {
        "id": subscription.subscription_id, "url": subscription.url, "events": list(subscription.events),
        "pipelines": None if subscription.pipelines is None else list(subscription.pipelines),
        "statuses": None if subscription.statuses is None else list(subscription.statuses),
        "description": subscription.description, "format": subscription.format,
        "createdAt": subscription.created_at, "createdBy": subscription.created_by,
    }


def delivery_view(attempt: DeliveryAttempt) -> dict:
    return {"deliveryId": attempt.delivery_id, "eventId": attempt.event_id, "eventType": attempt.event_type,
            "attempt": attempt.attempt, "outcome": attempt.outcome, "statusCode": attempt.status_code,
            "error": attempt.error, "at": attempt.at, "durationMs": attempt.duration_ms,
            "nextAttemptAt": attempt.next_attempt_at}


def _request():
    return routes.current_request


_OWN = auth.ACTS_ON_OWN_RECORDS


@route(routes, "/api/subscriptions", methods=["POST"], body=CreateSubscriptionIn,
       acts_on=auth.acts_on(body={"pipelines": auth.PIPELINES}),
       response=SubscriptionCreatedOut, status=201,
       replay=shown_once(lambda effect: f"/api/subscriptions/{effect['subscription']}"),
       summary="Subscribe a URL to run/stage status changes; the signing secret is shown once")
def create_subscription():
    ctx = wiring.context()
    body = parse_body(_request(), CreateSubscriptionIn, ctx.settings.max_body_bytes)
    subscription, secret = subscriptions.create(ctx, body, current_principal())
    view = subscription_view(subscription)
    view["secret"] = secret
    return json_response(view, 201, {"Location": f"/api/subscriptions/{subscription.subscription_id}",
                                     "Cache-Control": "no-store"})


@route(routes, "/api/subscriptions", methods=["GET"], acts_on=_OWN, response=SubscriptionListOut,
       summary="List subscriptions (never their secrets)")
def list_subscriptions():
    items = subscriptions.visible_to(wiring.context(), current_principal())
    return json_response({"items": [subscription_view(s) for s in items]})


@route(routes, "/api/subscriptions/{subscription_id}", methods=["GET"], acts_on=_OWN,
       response=SubscriptionOut,
       summary="One subscription")
def get_subscription(subscription_id):
    found = subscriptions.get(wiring.context(), subscription_id, current_principal())
    return json_response(subscription_view(found))


@route(routes, "/api/subscriptions/{subscription_id}", methods=["DELETE"], acts_on=_OWN,
       response=SubscriptionOut,
       summary="Delete a subscription; deliveries still queued for it are dropped")
def delete_subscription(subscription_id):
    deleted = subscriptions.delete(wiring.context(), subscription_id, current_principal())
    return json_response(subscription_view(deleted))


@route(routes, "/api/subscriptions/{subscription_id}/deliveries", methods=["GET"], acts_on=_OWN,
       query=DeliveriesQuery, response=DeliveryListOut,
       summary="Delivery attempts of a subscription, newest first (kept 14 days)")
def list_deliveries(subscription_id):
    query = parse_query(_request().query_params, DeliveriesQuery)
    items, cursor = subscriptions.deliveries(wiring.context(), subscription_id, current_principal(),
                                           query.limit, query.cursor)
    return json_response({"items": [delivery_view(a) for a in items], "nextCursor": cursor})
