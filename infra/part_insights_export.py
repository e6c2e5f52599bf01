"""The insights' OpenTelemetry export (chalicelib/events/insights_export.py, docs/otel.md "In the
stack"): the ``insights_export`` function, every hour, only when the ``OtlpEndpoint`` parameter is
set (condition ``OtlpExportOn``: without it the function, its role, schedule, log group and
alarms are not created, so nothing runs or costs).

- ``OtlpEndpoint``: the collector's OTLP/HTTP metrics URL (``https://…/v1/metrics``).
- ``OtlpHeadersSecretArn``: a Secrets Manager secret the operator creates, a JSON object
  ``{"otlp_headers": "api-key=…"}`` (adapters/secrets.py reads it once per container); the
  function's environment gets its ARN only, and a policy that exists only when it is set allows
  reading that secret alone. Empty: no headers.
- What the function reaches: the pipelines' listing (the ``pipelinesByActivity`` index), the
  insights items (``INSIGHTS*``: the day items it reads, its ``OTLP`` totals item it gets and
  puts). Its failed invocations go to the rules' dead-letter queue, unretried: the next hour
  sends everything again.
- ``ExportsFailed`` (EMF, counted by service/insights_export.py): alarm when two hourly exports
  in a row had a pipeline fail (one failure loses nothing: docs/runbook.md).
"""
from __future__ import annotations

from .generate import Arns, Function
from .part_capture import RULES_DLQ, async_failures
from .part_watch import METRICS_NAMESPACE, _alarm

ENDPOINT = "OtlpEndpoint"
HEADERS_SECRET = "OtlpHeadersSecretArn"
EXPORT_ON = "OtlpExportOn"
HEADERS_SET = "OtlpHeadersSet"
LISTING_INDEX = "pipelinesByActivity"
EXPORT_PARTITIONS = ("insights",)
FAILED_METRIC = "ExportsFailed"
EXPORT_PERIOD = 3600  # the export's rate (events/insights_export.py EXPORT_RATE_HOURS)


def _statements(arns: Arns) -> list[dict]:
    return [
        # the day items of a window (Query), its totals item (GetItem, conditional PutItem)
        {"Sid": "Insights", "Effect": "Allow",
         "Action": ["dynamodb:Query", "dynamodb:GetItem", "dynamodb:PutItem"], "Resource": [arns.table()]},
        {"Sid": "PipelineListing", "Effect": "Allow", "Action": ["dynamodb:Query"],
         "Resource": [arns.index(LISTING_INDEX)]},
        {"Sid": "FailedExports", "Effect": "Allow", "Action": ["sqs:SendMessage"],
         "Resource": [arns.named("sqs", RULES_DLQ, "rules-dlq")]},
    ]


def _properties() -> dict:
    return {"Environment": {"Variables": {"STAGETRACK_OTLP_ENDPOINT": {"Ref": ENDPOINT}}},
            **async_failures(RULES_DLQ, retries=0)}


FUNCTIONS = [
    Function("insights_export", "InsightsExport", "InsightsExportRole", "insights-export",
             "policy-insights-export.json", _statements, _properties, partitions=EXPORT_PARTITIONS,
             condition=EXPORT_ON, secret_parameter=(HEADERS_SECRET, HEADERS_SET)),
]


def parameters() -> dict:
    return {
        ENDPOINT: {"Type": "String", "Default": "", "AllowedPattern": r"^(https://[^\s,]+)?$",
                   "Description": "OTLP/HTTP metrics URL the insights are exported to every hour, e.g. "
                                  "https://otel.example.com:4318/v1/metrics; empty: no export "
                                  "(docs/otel.md)"},
        HEADERS_SECRET: {"Type": "String", "Default": "",
                         "AllowedPattern": r"^(arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+)?$",
                         "Description": "ARN of a Secrets Manager secret {\"otlp_headers\": "
                                        "\"name=value,...\"} holding the export's headers (a "
                                        "collector's API key); empty: none"},
    }


def conditions() -> dict:
    return {
        EXPORT_ON: {"Fn::Not": [{"Fn::Equals": [{"Ref": ENDPOINT}, ""]}]},
        HEADERS_SET: {"Fn::And": [{"Condition": EXPORT_ON},
                                  {"Fn::Not": [{"Fn::Equals": [{"Ref": HEADERS_SECRET}, ""]}]}]},
    }


def resources(arns: Arns) -> dict:
    failed = {"Namespace": METRICS_NAMESPACE, "MetricName": FAILED_METRIC, "Period": EXPORT_PERIOD,
              "Statistic": "Sum"}
    alarm = _alarm("insights-exports-failed", "exports",
                   "the OTLP export of the insights failed for a pipeline two hours in a row", failed,
                   threshold=0, datapoints=2, periods=2)
    alarm["Condition"] = EXPORT_ON
    return {"InsightsExportsFailedAlarm": alarm}
