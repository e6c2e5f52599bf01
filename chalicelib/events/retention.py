"""Lambda handler of run retention: the table's stream (run items only) -> apply_retention."""
from __future__ import annotations

import logging

from chalice import Blueprint

from .. import wiring
from .timers import STREAM_ARN

log = logging.getLogger(__name__)

handlers = Blueprint(__name__)


@handlers.on_dynamodb_record(stream_arn=STREAM_ARN, batch_size=100, starting_position="TRIM_HORIZON",
                             name="run_retention")
def run_retention(event):
    """A failure raises: Lambda retries the batch (bisecting it); every step is idempotent."""
    from ..service.retention import apply_retention

    report = apply_retention(wiring.context(), (record.to_dict() for record in event))
    log.info("retention: %s", report)
    return {"expiring": report.expiring, "kept": report.kept, "purged": report.purged}
