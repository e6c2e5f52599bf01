"""One botocore session per process for the outbound clients (EventBridge, SQS): a session
loads service models once, so each further client costs milliseconds, not a model load."""
from __future__ import annotations

import threading

_lock = threading.Lock()
_session = None
_clients: dict[tuple, object] = {}


def client(service: str, region: str | None, *, connect_timeout: float | None = None,
           read_timeout: float | None = None, max_attempts: int | None = None):
    """The process's client of ``service`` in ``region``; the limits (None: botocore's
    defaults) bound a call made inside a request's time budget."""
    global _session
    with _lock:
        key = (service, region, connect_timeout, read_timeout, max_attempts)
        if key not in _clients:
            if _session is None:
                import botocore.session

                _session = botocore.session.get_session()
            config = None
            if (connect_timeout, read_timeout, max_attempts) != (None, None, None):
                from botocore.config import Config

                config = Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                                retries={"mode": "standard", "total_max_attempts": max_attempts}
                                if max_attempts is not None else None)
            _clients[key] = _session.create_client(service, region_name=region, config=config)
        return _clients[key]
