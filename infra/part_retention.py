"""Retention of finished runs (service/retention.py): the ``RunRetentionDays`` parameter and what
the function applying it needs. No function of its own: it rides on the outbox publisher's
reader of the table's stream (part_events.py, chalicelib/events/outbound.py), because DynamoDB
Streams throttles more than two readers of a shard, and the timer armer and the outbox publisher
are those two. The outbox's filter (runs and stages, new or old image) already passes every
record retention needs: a finished run written, a run carrying an expiry written (it may have
been re-opened), a run removed by the table's TTL.

What retention does to the table: a finished run gets ``expires_at`` (the table's TTL), a
re-opened one loses it (UpdateItem on the run item); when the TTL removes a run item, its stage
items and ended attempts are deleted (Query of the run's partition, DeleteItem). Its items:
``RUN#*`` and ``ATTEMPTS#*`` only, so its statement is limited to those partitions.
"""
from __future__ import annotations

from chalicelib.settings import Settings

from .generate import Arns

RETENTION = "RunRetentionDays"
RETENTION_ACTIONS = ["dynamodb:Query", "dynamodb:UpdateItem", "dynamodb:DeleteItem"]
RETENTION_PARTITIONS = ("runs", "attempts")


def parameters() -> dict:
    return {RETENTION: {
        "Type": "Number", "Default": Settings.run_retention_days, "MinValue": 0, "MaxValue": 36500,
        "Description": "Days a finished run, its stages and attempts are kept after it ended; "
                       "0: forever. docs/deploy.md, Retention"}}


def statement(arns: Arns) -> dict:
    """The statement of the function applying retention; ``Partitions``: its own item limit
    (generate.py turns it into the ``dynamodb:LeadingKeys`` condition)."""
    return {"Sid": "RunRetention", "Effect": "Allow", "Action": RETENTION_ACTIONS,
            "Resource": [arns.table()], "Partitions": RETENTION_PARTITIONS}


def variables() -> dict:
    return {"STAGETRACK_RUN_RETENTION_DAYS": {"Ref": RETENTION}}


FUNCTIONS: list = []


def resources(arns: Arns) -> dict:
    return {}
