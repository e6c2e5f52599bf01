"""One botocore session per process for the outbound clients (EventBridge, SQS): a session
loads service models once, so each further client costs milliseconds, not a model load."""
from __future__ import annotations

import threading

_lock = threading.Lock()
_session = None
_clients: dict[tuple[str, str | None], object] = {}


def client(service: str, region: str | None):
    global _session
    with _lock:
        key = (service, region)
        if key not in _clients:
            if _session is None:
                import botocore.session

                _session = botocore.session.get_session()
            _clients[key] = _session.create_client(service, region_name=region)
        return _clients[key]
