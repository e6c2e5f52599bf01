"""The DynamoDB implementation of every port (service/ports.py), assembled once per container.

Each class is the port's face over the module that holds its DynamoDB code (item keys,
conditions, round trips documented there). ``build_stores`` binds the PynamoDB models to the
configured table once, the only global state the store keeps.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from ..domain.cursors import CursorCodec
from ..domain.events import StateChange
from ..domain.model import RunAggregate
from ..service.ports import (
    DeliveryAttempt,
    DueQuery,
    DueTimer,
    StoredSource,
    StoredSubscription,
    StoredToken,
    Stores,
)
from ..settings import Settings
from . import active, deliveries, dialects, models, sources, stream, subscriptions, tokens
from .idempotency import IdempotencyStore
from .pipelines import PipelineStore
from .repository import Repository


class DynamoRunLinks:
    def __init__(self, runs: Repository) -> None:
        self._runs = runs

    def linked_run(self, namespace: str, key: str) -> str | None:
        return sources.linked_run(namespace, key)

    def insert_linked_run(self, aggregate: RunAggregate, namespace: str, key: str, created_at: str) -> bool:
        return sources.insert_linked_run(self._runs, aggregate, namespace, key, created_at)


class DynamoDialectLookups:
    pipeline_by_codearts_key = staticmethod(dialects.pipeline_by_codearts_key)
    pipeline_by_buddy_key = staticmethod(dialects.pipeline_by_buddy_key)
    runs_between = staticmethod(dialects.runs_between)


class DynamoTokenStore:
    def insert(self, token: StoredToken, token_hash: str | None, window: int) -> None:
        tokens.insert(token, token_hash, window)

    def list_all(self) -> list[StoredToken]:
        return tokens.list_all()

    def delete(self, token_id: str,
               allowed: Callable[[StoredToken], bool] = lambda _t: True) -> StoredToken | None:
        return tokens.delete(token_id, allowed)

    def get_access_key(self, access_key: str) -> StoredToken | None:
        return tokens.get_access_key(access_key)

    def hit(self, token_hash: str, window: int) -> StoredToken | None:
        return tokens.hit(token_hash, window)

    def hit_access_key(self, access_key: str, window: int) -> StoredToken | None:
        return tokens.hit_access_key(access_key, window)


class DynamoSourceStore:
    def insert_source(self, source: StoredSource) -> bool:
        return sources.insert_source(source)

    def get_source(self, name: str) -> StoredSource | None:
        return sources.get_source(name)

    def list_sources(self) -> list[StoredSource]:
        return sources.list_sources()

    def delete_source(self, name: str) -> StoredSource | None:
        return sources.delete_source(name)


class DynamoSubscriptionStore:
    def insert(self, subscription: StoredSubscription) -> None:
        subscriptions.insert(subscription)

    def get(self, subscription_id: str) -> StoredSubscription | None:
        return subscriptions.get(subscription_id)

    def list_all(self) -> list[StoredSubscription]:
        return subscriptions.list_all()

    def delete(self, subscription_id: str,
               allowed: Callable[[StoredSubscription], bool] = lambda _s: True) -> StoredSubscription | None:
        return subscriptions.delete(subscription_id, allowed)


class DynamoDeliveryLog:
    def __init__(self, codec: CursorCodec) -> None:
        self._codec = codec

    def record(self, attempt: DeliveryAttempt, epoch_now: int) -> None:
        deliveries.record(attempt, epoch_now)

    def list_attempts(self, subscription_id: str, limit: int,
                      cursor: str | None) -> tuple[list[DeliveryAttempt], str | None]:
        return deliveries.list_attempts(subscription_id, limit, cursor, self._codec)


class DynamoActiveTimers:
    def due_timers(self, now_iso: str, limit: int = 1000) -> DueQuery:
        return active.due_timers(now_iso, limit)

    def armed_timer(self, record: dict) -> DueTimer | None:
        return active.armed_timer(record)


class DynamoChangeStream:
    def state_change(self, record: dict, now: datetime) -> StateChange | None:
        return stream.state_change(record, now)


def build_stores(settings: Settings) -> Stores:
    """Every port on the table ``settings`` name (binding the models to it)."""
    models.bind(settings.table_name, settings.region, settings.dynamodb_endpoint)
    codec = CursorCodec(settings.secret_key)
    runs = Repository(codec)
    return Stores(
        runs=runs, links=DynamoRunLinks(runs), pipelines=PipelineStore(), dialects=DynamoDialectLookups(),
        idempotency=IdempotencyStore(), tokens=DynamoTokenStore(), sources=DynamoSourceStore(),
        subscriptions=DynamoSubscriptionStore(), deliveries=DynamoDeliveryLog(codec),
        timers=DynamoActiveTimers(), changes=DynamoChangeStream(),
    )
