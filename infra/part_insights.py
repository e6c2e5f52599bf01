"""The insights rebuild function (chalicelib/events/rebuilds.py), started by the API's
``POST /api/insights/rebuild`` with an asynchronous invoke (adapters/lambdas.py).

- insights_rebuild  lists every pipeline (the pipelinesByActivity index), its runs (byPipeline),
                    each run with its stages and ended attempts (Query) and its insights
                    markers; rewrites the pipeline's aggregate items, state and markers
                    (BatchWriteItem, PutItem, Query of the old keys), then the every-pipeline
                    items; its progress goes on the rebuild record (INSIGHTS / REBUILD). Its
                    timeout is Lambda's longest, 900 s (.chalice/config.json); Lambda does not
                    retry it (``MaximumRetryAttempts: 0``): a failed rebuild is on its record
                    and raises the function's Errors alarm (part_watch.py), and an operator asks
                    again (docs/runbook.md). Its log group, retention, tracing and alarms come
                    from part_watch.py like every function's.
- the API may invoke this function and no other (``lambda:InvokeFunction`` on its ARN), and
  learns its name from ``STAGETRACK_INSIGHTS_REBUILD_FUNCTION``.
"""
from __future__ import annotations

from .generate import Arns, Function

LOGICAL_ID = "InsightsRebuild"
SUFFIX = "insights-rebuild"
TIMEOUT_SECONDS = 900  # .chalice/config.json lambda_timeout of insights_rebuild
# What a replay reads (store/repository.py load_run, attempts_of: Query) and writes
# (store/insights.py: GetItem/PutItem of the state and the record, BatchWriteItem of the items)
REBUILD_PARTITIONS = ("runs", "attempts", "insights", "insight_marks")
REBUILD_ACTIONS = ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:BatchWriteItem"]
INDEXES = ("pipelinesByActivity", "byPipeline")


def function_arn(arns: Arns):
    return arns.named("lambda", LOGICAL_ID, SUFFIX, kind="function:")


def _statements(arns: Arns) -> list[dict]:
    return [
        {"Sid": "Replay", "Effect": "Allow", "Action": REBUILD_ACTIONS, "Resource": [arns.table()]},
        {"Sid": "Listings", "Effect": "Allow", "Action": ["dynamodb:Query"],
         "Resource": [arns.index(name) for name in INDEXES]},
    ]


def _properties() -> dict:
    return {"EventInvokeConfig": {"MaximumRetryAttempts": 0}}


FUNCTIONS = [
    Function("insights_rebuild", LOGICAL_ID, f"{LOGICAL_ID}Role", SUFFIX, "policy-insights-rebuild.json",
             _statements, _properties, partitions=REBUILD_PARTITIONS),
]


def api_statements(arns: Arns) -> list[dict]:
    """What the API handler needs here (generate.py adds it to the API's policy)."""
    return [{"Sid": "StartInsightsRebuild", "Effect": "Allow", "Action": ["lambda:InvokeFunction"],
             "Resource": [function_arn(arns)]}]


def resources(arns: Arns) -> dict:
    return {"APIHandler": {"Properties": {"Environment": {"Variables": {
        "STAGETRACK_INSIGHTS_REBUILD_FUNCTION": {"Ref": LOGICAL_ID}}}}}}
