"""Starting the insights rebuild where it runs (service/insights.py ``start_rebuild``'s launch).

On AWS the API hands it to its own function with an asynchronous invoke (``InvocationType:
Event``): the API answers 202 at once and the rebuild has the function's 15 minutes, not the
API's 25 seconds. Under `make run` it runs in a daemon thread of this process, on the same
context. Elsewhere (no function named, not `make run`) nothing can run it: ``nowhere``.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def invoke_async(function: str, payload: dict, region: str | None = None, client=None) -> None:
    """One asynchronous invoke; raises if Lambda did not accept it (not 202)."""
    if client is None:
        from .aws import client as aws_client

        client = aws_client("lambda", region)
    answer = client.invoke(FunctionName=function, InvocationType="Event",
                           Payload=json.dumps(payload).encode())
    if answer.get("StatusCode") != 202:
        raise RuntimeError(f"Lambda did not accept the invoke of {function}: {answer.get('StatusCode')}")


def in_thread(target: Callable[[], object], name: str) -> threading.Thread:
    """Run ``target`` in a daemon thread; what it raises is logged, never lost."""
    def run() -> None:
        try:
            target()
        except Exception:
            log.exception("%s failed", name)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def nowhere(rebuild_id: str) -> None:
    """Neither a rebuild function nor `make run`: nothing here can run a rebuild."""
    raise RuntimeError("no rebuild function is configured (STAGETRACK_INSIGHTS_REBUILD_FUNCTION) and this "
                       "is not `make run`: run `make insights-rebuild` where the table is reachable")
