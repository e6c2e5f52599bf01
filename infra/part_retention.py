"""Retention of finished runs (chalicelib/events/retention.py, service/retention.py): the
``RunRetentionDays`` parameter and the function that reads the table's stream.

- run_retention  run items only: a finished one gets ``expires_at`` (the table's TTL), a
                 re-opened one loses it (UpdateItem on the run item); when the TTL removes a run
                 item, its stage items and ended attempts are deleted (Query of the run's
                 partition, DeleteItem). Its items: ``RUN#*`` and ``ATTEMPTS#*`` only.
"""
from __future__ import annotations

import json

from chalicelib.domain.status import FINAL
from chalicelib.settings import Settings
from chalicelib.store.stream import TTL_PRINCIPAL

from .generate import Arns, Function
from .part_capture import bucket_statement, stream_failure_destination
from .part_timers import STREAM_READ

RETENTION = "RunRetentionDays"
RETENTION_ACTIONS = ["dynamodb:Query", "dynamodb:UpdateItem", "dynamodb:DeleteItem"]
# The records it needs, so Lambda invokes it for nothing else: a finished run written, a run
# carrying an expiry written (it may have been re-opened), a run removed by the TTL.
RUN_RECORDS = (
    {"eventName": ["INSERT", "MODIFY"], "dynamodb": {"NewImage": {
        "kind": {"S": ["run"]}, "status": {"S": sorted(status.value for status in FINAL)}}}},
    {"eventName": ["MODIFY"], "dynamodb": {"NewImage": {
        "kind": {"S": ["run"]}, "expires_at": {"N": [{"exists": True}]}}}},
    {"eventName": ["REMOVE"], "userIdentity": {"type": ["Service"], "principalId": [TTL_PRINCIPAL]},
     "dynamodb": {"OldImage": {"kind": {"S": ["run"]}}}},
)


def parameters() -> dict:
    return {RETENTION: {
        "Type": "Number", "Default": Settings.run_retention_days, "MinValue": 0, "MaxValue": 36500,
        "Description": "Days a finished run, its stages and attempts are kept after it ended; "
                       "0: forever. docs/deploy.md, Retention"}}


def _statements(arns: Arns) -> list[dict]:
    return [
        {"Sid": "TableStream", "Effect": "Allow", "Action": STREAM_READ, "Resource": [arns.stream()]},
        {"Sid": "Runs", "Effect": "Allow", "Action": RETENTION_ACTIONS, "Resource": [arns.table()]},
        bucket_statement(arns),
    ]


def _properties() -> dict:
    return {
        "Environment": {"Variables": {"STAGETRACK_RUN_RETENTION_DAYS": {"Ref": RETENTION}}},
        "Events": {"RunRetentionDynamodbEventSource": {"Properties": {
            "Stream": {"Fn::GetAtt": ["StagetrackTable", "StreamArn"]},
            "MaximumRetryAttempts": 10,
            "BisectBatchOnFunctionError": True,
            "DestinationConfig": stream_failure_destination(),
            "FilterCriteria": {"Filters": [{"Pattern": json.dumps(pattern, separators=(",", ":"))}
                                           for pattern in RUN_RECORDS]},
        }}},
    }


FUNCTIONS = [
    Function("run_retention", "RunRetention", "RunRetentionRole", "run-retention",
             "policy-run-retention.json", _statements, _properties, partitions=("runs", "attempts")),
]


def resources(arns: Arns) -> dict:
    return {}
