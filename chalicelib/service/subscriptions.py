"""Outbound webhook subscriptions: create (secret shown once), list, get, delete, and the
delivery attempts of one. Secrets are sealed with AES-GCM before they are stored: the
delivery worker needs them in clear to sign, so they cannot be hashed.

A subscription is for the pipelines it names (None: every pipeline). A caller limited to some
pipelines creates subscriptions only for some of those, and sees and deletes only such ones
(``auth.within``); any other answers 404, as an unknown one does."""
from __future__ import annotations

import secrets as random_secrets

from ..domain import auth, events
from ..domain.auth import Principal
from ..domain.clock import format_iso
from ..domain.errors import NotFound, ValidationFailed
from ..domain.events import CreateSubscriptionIn, SubscriptionFilter
from . import ServiceContext
from .ports import DeliveryAttempt, StoredSubscription

MAX_SUBSCRIPTIONS = 100  # every stream batch reads them all (1 Query); keep that one small page


def _context(subscription_id: str) -> str:
    return f"subscription:{subscription_id}"


def create(ctx: ServiceContext, body: CreateSubscriptionIn,
           creator: Principal) -> tuple[StoredSubscription, str]:
    """A subscription no broader than its creator (403), its secret shown once."""
    auth.check_grant(creator, (), body.pipelines)
    created_by = creator.actor
    settings = ctx.settings
    events.check_subscriber_url(body.url, allow_local=settings.allow_local_subscribers)
    if len(ctx.stores.subscriptions.list_all()) >= MAX_SUBSCRIPTIONS:
        raise ValidationFailed(f"at most {MAX_SUBSCRIPTIONS} subscriptions; delete one first")
    subscription_id = "sub_" + random_secrets.token_hex(8)
    secret = body.secret or events.new_secret()
    subscription = StoredSubscription(
        subscription_id=subscription_id, url=body.url, events=tuple(dict.fromkeys(body.events)),
        pipelines=None if body.pipelines is None else tuple(sorted(set(body.pipelines))),
        statuses=None if body.statuses is None else tuple(sorted({s.value for s in body.statuses})),
        sealed_secret=ctx.box().seal(secret, _context(subscription_id)),
        created_at=format_iso(ctx.clock.now()), created_by=created_by, description=body.description,
        format=body.format,
    )
    ctx.stores.subscriptions.insert(subscription)
    return subscription, secret


def list_all(ctx: ServiceContext) -> list[StoredSubscription]:
    """Every subscription: for the delivery worker, not for callers (``visible_to``)."""
    return ctx.stores.subscriptions.list_all()


def _visible(viewer: Principal, subscription: StoredSubscription) -> bool:
    return auth.within(viewer, (), subscription.pipelines)


def visible_to(ctx: ServiceContext, viewer: Principal) -> list[StoredSubscription]:
    return [s for s in ctx.stores.subscriptions.list_all() if _visible(viewer, s)]


def get(ctx: ServiceContext, subscription_id: str, viewer: Principal) -> StoredSubscription:
    subscription = ctx.stores.subscriptions.get(subscription_id) if len(subscription_id) <= 64 else None
    if subscription is None or not _visible(viewer, subscription):
        raise NotFound(f"subscription {subscription_id!r} not found")
    return subscription


def delete(ctx: ServiceContext, subscription_id: str, viewer: Principal) -> StoredSubscription:
    """Deliveries already queued for it are dropped when they come up (no subscription)."""
    def allowed(subscription: StoredSubscription) -> bool:
        return _visible(viewer, subscription)

    subscription = (
        ctx.stores.subscriptions.delete(subscription_id, allowed) if len(subscription_id) <= 64 else None
    )
    if subscription is None:
        raise NotFound(f"subscription {subscription_id!r} not found")
    return subscription


def deliveries(ctx: ServiceContext, subscription_id: str, viewer: Principal, limit: int,
               cursor: str | None) -> tuple[list[DeliveryAttempt], str | None]:
    get(ctx, subscription_id, viewer)
    return ctx.stores.deliveries.list_attempts(subscription_id, limit, cursor)


def filter_of(subscription: StoredSubscription) -> SubscriptionFilter:
    return SubscriptionFilter(events=subscription.events, pipelines=subscription.pipelines,
                              statuses=subscription.statuses)


def secret_of(ctx: ServiceContext, subscription: StoredSubscription) -> str:
    return ctx.box().open(subscription.sealed_secret,
                                                           _context(subscription.subscription_id))
