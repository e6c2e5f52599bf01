"""The insights rebuild function: invoked asynchronously by ``POST /api/insights/rebuild``
(adapters/lambdas.py) with ``{"rebuild": <id>}``; translation only (service/insights.py
``run_rebuild``). Its timeout is Lambda's longest (infra/part_insights.py), Lambda does not retry
it (a failed rebuild is recorded and alarmed, asked for again by an operator), and an error is
raised again so the function's Errors alarm fires.
"""
from __future__ import annotations

from chalice import Blueprint

from .. import wiring

handlers = Blueprint(__name__)


@handlers.lambda_function(name="insights_rebuild")
def insights_rebuild(event, context):
    from ..service.insights import run_rebuild

    rebuild_id = event.get("rebuild") if isinstance(event, dict) else None
    if not isinstance(rebuild_id, str):
        raise ValueError("the event names no rebuild: expected {\"rebuild\": <id>}")
    record = run_rebuild(wiring.context(), rebuild_id)
    return {"rebuild": rebuild_id, "status": record.status if record is not None else "not-running"}
