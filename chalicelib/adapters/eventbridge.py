"""Publishes stagetrack's state changes to an EventBridge bus (PutEvents, 10 entries a call).

Entries: ``Source`` "stagetrack", ``DetailType`` "stagetrack.run.status-changed" or
"stagetrack.stage.status-changed", ``Detail`` the event JSON (the same body subscribers get).
Entries PutEvents reports as failed are sent once more; still failing, ``PublishFailed`` is
raised so the stream handler fails and Lambda retries the batch (at-least-once: consumers
de-duplicate on the event's ``id``).
"""
from __future__ import annotations

import json

from ..domain.clock import parse_iso
from ..domain.events import EVENT_SOURCE, StateChange

MAX_ENTRIES = 10


class PublishFailed(Exception):
    pass


def entry(change: StateChange, bus: str) -> dict:
    return {"Source": EVENT_SOURCE, "DetailType": change.detail_type, "Detail": change.body(),
            "EventBusName": bus, "Time": parse_iso(change.time), "Resources": []}


class EventBridgePublisher:
    def __init__(self, bus: str, region: str | None = None, client=None) -> None:
        self.bus = bus
        self.region = region
        self._client = client

    @property
    def client(self):
        if self._client is None:
            from .aws import client

            self._client = client("events", self.region)
        return self._client

    def publish(self, changes: list[StateChange]) -> int:
        entries = [entry(change, self.bus) for change in changes]
        for start in range(0, len(entries), MAX_ENTRIES):
            pending = entries[start:start + MAX_ENTRIES]
            for _ in range(2):
                response = self.client.put_events(Entries=pending)
                results = response.get("Entries", [])
                pending = [e for e, r in zip(pending, results, strict=False) if r.get("ErrorCode")]
                if not response.get("FailedEntryCount") or not pending:
                    pending = []
                    break
            if pending:
                raise PublishFailed(f"EventBridge refused {len(pending)} event(s): "
                                    + json.dumps([r.get("ErrorCode") for r in results if r.get("ErrorCode")]))
        return len(entries)
