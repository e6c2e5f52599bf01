"""The process's outbound clients, built from the settings on first use and then reused
(a Lambda container builds each at most once; tests and the local runner swap their own in)."""
from __future__ import annotations

from .eventbridge import EventBridgePublisher
from .http import WebhookSender
from .sqs import SqsQueue

_cache: dict[tuple, object] = {}


def event_bus(settings) -> EventBridgePublisher | None:
    """None when no bus is configured (locally): events then only reach subscribers."""
    if not settings.event_bus:
        return None
    key = ("events", settings.event_bus, settings.region)
    if key not in _cache:
        _cache[key] = EventBridgePublisher(settings.event_bus, settings.region)
    return _cache[key]  # type: ignore[return-value]


def queue(url: str | None):
    if not url:
        return None
    key = ("sqs", url)
    if key not in _cache:
        _cache[key] = SqsQueue(url)
    return _cache[key]


def webhook_sender(settings) -> WebhookSender:
    key = ("http", settings.delivery_timeout_seconds, settings.allow_local_subscribers)
    if key not in _cache:
        _cache[key] = WebhookSender(settings.delivery_timeout_seconds, settings.allow_local_subscribers)
    return _cache[key]  # type: ignore[return-value]


def reset() -> None:
    _cache.clear()
