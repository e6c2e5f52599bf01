"""The DynamoDB implementation of every port (service/ports.py), assembled once per context.

Assembly only: each store class lives in the module that holds its DynamoDB code (item keys,
conditions, round trips documented there) and gets what it needs here, as instance state: the
item classes bound to the configured table and endpoint (``models.item_models``, cached per
table/region/endpoint with one botocore client), the ``Writer`` that sends the transactions an
Idempotency-Key claim may ride on, and the cursor codec. Nothing is bound globally, so contexts on
different tables coexist in one process.
"""
from __future__ import annotations

from ..domain.cursors import CursorCodec
from ..service.ports import Stores
from ..settings import Settings
from .active import ActiveTimers
from .deliveries import DeliveryLog
from .dialects import DialectLookups
from .finder import Finder
from .groups import GroupStore
from .idempotency import IdempotencyStore
from .insights import InsightsStore
from .models import ClientLimits, item_models
from .pipelines import PipelineStore
from .repository import Repository, Writer
from .retention import RunRetention
from .schedules import ScheduleStore
from .sources import RunLinks, SourceStore
from .stream import StreamDecoder
from .subscriptions import SubscriptionStore
from .tokens import TokenStore


def client_limits(settings: Settings) -> ClientLimits:
    return ClientLimits(connect_timeout_seconds=settings.dynamodb_connect_timeout_seconds,
                        read_timeout_seconds=settings.dynamodb_read_timeout_seconds,
                        max_retries=settings.dynamodb_max_retries)


def build_stores(settings: Settings) -> Stores:
    """Every port on the table ``settings`` names, at its region and endpoint."""
    items = item_models(settings.table_name, settings.region, settings.dynamodb_endpoint,
                        client_limits(settings))
    writer = Writer(items)
    codec = CursorCodec(settings.secret_key)
    runs = Repository(items, writer, codec)
    return Stores(
        runs=runs, links=RunLinks(items, runs), pipelines=PipelineStore(items, writer),
        dialects=DialectLookups(items), idempotency=IdempotencyStore(items, writer),
        tokens=TokenStore(items, writer), sources=SourceStore(items, writer),
        subscriptions=SubscriptionStore(items, writer), deliveries=DeliveryLog(items, codec),
        timers=ActiveTimers(items), changes=StreamDecoder(), finder=Finder(items, codec),
        schedules=ScheduleStore(items), retention=RunRetention(items),
        insights=InsightsStore(items, writer), groups=GroupStore(items, runs),
    )
