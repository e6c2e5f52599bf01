"""Outbound webhook subscriptions, all in one partition (``SUBSCRIPTIONS``).

Round trips: the stream publisher reads every subscription with 1 Query per batch of stream
records (only when the batch holds a state change); a delivery reads its subscription with 1
GetItem; admins create (1 conditional PutItem), list (1 Query) and delete (1 GetItem +
1 DeleteItem). Secrets are sealed (AES-GCM) before they get here.
"""
from __future__ import annotations

import json
from collections.abc import Callable

from pynamodb.exceptions import DeleteError

from ..domain.events import FORMAT_STAGETRACK
from ..service.ports import StoredSubscription
from .models import ItemModels, SubscriptionItem
from .repository import Writer, _is_condition_failure

__all__ = ["StoredSubscription", "SubscriptionStore"]

SUBSCRIPTIONS_PK = "SUBSCRIPTIONS"


def _sk(subscription_id: str) -> str:
    return f"SUB#{subscription_id}"


def _list(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(json.loads(text))


def _from_item(item: SubscriptionItem) -> StoredSubscription:
    return StoredSubscription(
        subscription_id=item.subscription_id, url=item.url, events=_list(item.events) or (),
        pipelines=_list(item.pipelines), statuses=_list(item.statuses), sealed_secret=item.secret,
        created_at=item.created_at, created_by=item.created_by, description=item.description,
        format=item.payload_format or FORMAT_STAGETRACK,  # items stored before formats existed
    )


class SubscriptionStore:
    """The DynamoDB ``SubscriptionStore`` (service/ports.py) on the table of ``items``."""

    def __init__(self, items: ItemModels, writer: Writer) -> None:
        self._model = items.subscription
        self._writer = writer

    def insert(self, subscription: StoredSubscription) -> None:
        item = self._model(
            pk=SUBSCRIPTIONS_PK, sk=_sk(subscription.subscription_id),
            subscription_id=subscription.subscription_id, url=subscription.url,
            events=json.dumps(list(subscription.events)),
            pipelines=None if subscription.pipelines is None else json.dumps(list(subscription.pipelines)),
            statuses=None if subscription.statuses is None else json.dumps(list(subscription.statuses)),
            secret=subscription.sealed_secret, description=subscription.description,
            created_at=subscription.created_at, created_by=subscription.created_by,
            payload_format=subscription.format,
        )
        self._writer.put_item(item, SubscriptionItem.pk.does_not_exist(),
                              {"subscription": subscription.subscription_id})

    def get(self, subscription_id: str) -> StoredSubscription | None:
        try:
            return _from_item(self._model.get(SUBSCRIPTIONS_PK, _sk(subscription_id), consistent_read=True))
        except self._model.DoesNotExist:
            return None

    def list_all(self) -> list[StoredSubscription]:
        items = [_from_item(item) for item in self._model.query(SUBSCRIPTIONS_PK, consistent_read=True)]
        return sorted(items, key=lambda s: (s.created_at, s.subscription_id))

    def delete(self, subscription_id: str,
               allowed: Callable[[StoredSubscription], bool] = lambda _s: True) -> StoredSubscription | None:
        """Delete it if ``allowed(subscription)`` (read first, strongly consistent); None if there
        is none or it is not allowed. Subscriptions never change, so the check still holds."""
        subscription = self.get(subscription_id)
        if subscription is None or not allowed(subscription):
            return None
        try:
            self._model(pk=SUBSCRIPTIONS_PK, sk=_sk(subscription_id)).delete(
                condition=SubscriptionItem.pk.exists())
        except DeleteError as error:
            if not _is_condition_failure(error):
                raise
        return subscription
