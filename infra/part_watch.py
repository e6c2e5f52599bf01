"""Watching the stack: the on-call topic, the alarms, one dashboard, tracing, and every
function's log group with a retention. docs/runbook.md says what each alarm means and what to
do first; every alarm's description links its section there.

Most of it is derived from the assembled template (``finish``, run by generate.py after every
part and function is in place), so a queue, function or index added later is watched without
an edit here:
- a **failure queue** is an SQS queue something dead-letters into (a RedrivePolicy's
  ``deadLetterTargetArn``, a function's ``DeadLetterQueue``, an ``OnFailure`` destination, an
  EventBridge target's ``DeadLetterConfig``) or whose name ends in ``-dlq`` / ``-failures``:
  alarm when it holds any message;
- every **function**: errors and throttles; a function reading a DynamoDB stream: iterator age;
  each function gets X-Ray active tracing, JSON logs (``LoggingConfig``: Lambda's own
  START/END/REPORT lines become JSON too, so every line of every group is JSON) and its own log
  group, created here with ``LogRetentionDays`` (the function depends on its group, so Lambda
  never creates one without a retention first);
- every **state machine**: executions failed and timed out; X-Ray tracing (its role may write
  traces);
- the **API** (chalice's ``RestAPI``): 5XX rate and p99 latency; tracing on the stage;
- the **table** and each of its indexes: read or write throttle events.
Every alarm notifies the on-call topic (``OnCallTopicArn`` output: subscribe the pager or an
address to it, docs/runbook.md) on ALARM and on OK.
Every queue gets an explicit ``DeletionPolicy``/``UpdateReplacePolicy`` of Delete (cfn-lint
I3011): a deleted stack's messages have nothing left to be replayed into, and a retained queue
keeps its name, so a stack of the same name could not be created again; export a failure queue
before deleting a stack (docs/runbook.md).

Log groups are named ``/stagetrack/<stack>/<function suffix>``, not Lambda's default
``/aws/lambda/<function name>``: a stack deployed before this change already has the default
groups (created by Lambda, kept forever), and a template resource of the same name would fail
the update. After upgrading, delete the old ``/aws/lambda/<stack>-*`` groups (docs/runbook.md).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .generate import Arns, Function, functions

FUNCTIONS: list[Function] = []
TOPIC = "OnCallTopic"
DASHBOARD = "StagetrackDashboard"
REST_API = "RestAPI"
TABLE = "StagetrackTable"
RETENTION = "LogRetentionDays"
RUNBOOK = "docs/runbook.md"
# CloudWatch Logs' accepted retentions (days)
RETENTIONS = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
              2922, 3288, 3653]
METRICS_NAMESPACE = {"Fn::Sub": "Stagetrack/${AWS::StackName}"}  # adapters/metrics.py
PERIOD = 300
ITERATOR_AGE_MS = 120_000  # the stream consumers are two minutes behind
API_ERROR_RATE = 0.01  # 1% of requests answered 5XX
API_P99_MS = 5000
XRAY = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
STATE_MACHINE_XRAY = XRAY + ["xray:GetSamplingRules", "xray:GetSamplingTargets"]
# Runbook sections (their headings' anchors in docs/runbook.md)
SECTIONS = {
    "queue": "failure-queue-not-empty",
    "errors": "function-errors",
    "throttles": "function-throttles",
    "iterator": "stream-iterator-age",
    "machine": "timer-executions-failed-or-timed-out",
    "api_errors": "api-5xx-rate",
    "api_latency": "api-p99-latency",
    "table": "dynamodb-throttles",
    "exports": "insights-exports-failed",
}
_FAILURE_NAME = re.compile(r"-(dlq|failures)$")


def log_group_name(suffix: str) -> dict:
    return {"Fn::Sub": "/stagetrack/${AWS::StackName}/%s" % suffix}


def log_group_id(function: Function) -> str:
    return f"{function.logical_id}LogGroup"


def parameters() -> dict:
    return {
        RETENTION: {"Type": "Number", "Default": 30, "AllowedValues": RETENTIONS,
                    "Description": "Days every function's log group keeps its lines"},
    }


def resources(arns: Arns) -> dict:
    # Not encrypted with alias/aws/sns: CloudWatch alarms cannot publish to a topic under the
    # AWS-managed key (its key policy does not admit cloudwatch.amazonaws.com); alarm texts
    # carry names and numbers, never data of the service.
    return {
        TOPIC: {"Type": "AWS::SNS::Topic", "Properties": {
            "TopicName": {"Fn::Sub": "${AWS::StackName}-on-call"}}},
    }


def outputs() -> dict:
    return {"OnCallTopicArn": {"Value": {"Ref": TOPIC}},
            "DashboardName": {"Value": {"Ref": DASHBOARD}}}


# ---- derived from the assembled template ------------------------------------------------------

def _targets(node, found: set[str]) -> None:
    """Logical ids of queues something dead-letters into, anywhere below ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            target = None
            if key == "deadLetterTargetArn":
                target = value
            elif key == "DeadLetterQueue" and isinstance(value, dict) and value.get("Type") == "SQS":
                target = value.get("TargetArn")
            elif key == "OnFailure" and isinstance(value, dict) and value.get("Type", "SQS") == "SQS":
                target = value.get("Destination")
            elif key == "DeadLetterConfig" and isinstance(value, dict):
                target = value.get("Arn")
            if isinstance(target, dict) and "Fn::GetAtt" in target:
                found.add(target["Fn::GetAtt"][0])
            _targets(value, found)
    elif isinstance(node, list):
        for value in node:
            _targets(value, found)


def failure_queues(resources: dict) -> list[str]:
    queues = {name for name, r in resources.items() if r.get("Type") == "AWS::SQS::Queue"}
    found: set[str] = set()
    _targets(resources, found)
    for name in queues:
        queue_name = resources[name].get("Properties", {}).get("QueueName", {})
        text = queue_name.get("Fn::Sub", "") if isinstance(queue_name, dict) else str(queue_name)
        if _FAILURE_NAME.search(text):
            found.add(name)
    return sorted(found & queues)


def stream_consumers(resources: dict) -> list[Function]:
    def reads_stream(function: Function) -> bool:
        events = resources.get(function.logical_id, {}).get("Properties", {}).get("Events", {})
        return any("Stream" in event.get("Properties", {}) for event in events.values())

    return [f for f in functions() if reads_stream(f)]


def _alarm(name: str, section: str, what: str, metric: dict, *, threshold: float, datapoints: int = 2,
           periods: int = 3, missing: str = "notBreaching") -> dict:
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": {
        "AlarmName": {"Fn::Sub": "${AWS::StackName}-%s" % name},
        "AlarmDescription": f"{what}. Runbook: {RUNBOOK}#{SECTIONS[section]}",
        "ComparisonOperator": "GreaterThanThreshold", "Threshold": threshold,
        "EvaluationPeriods": periods, "DatapointsToAlarm": datapoints, "TreatMissingData": missing,
        "AlarmActions": [{"Ref": TOPIC}], "OKActions": [{"Ref": TOPIC}], **metric}}


def _stat(namespace: str, metric: str, dimensions: dict, statistic: str = "Sum") -> dict:
    stat = {"Namespace": namespace, "MetricName": metric, "Period": PERIOD,
            "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()]}
    if statistic.startswith("p"):
        stat["ExtendedStatistic"] = statistic
    else:
        stat["Statistic"] = statistic
    return stat


def _sum_of(label: str, *metrics: tuple[str, str, dict]) -> dict:
    """Metric math: the sum of the given (namespace, metric, dimensions), missing as 0."""
    queries: list[dict] = []
    for index, (namespace, metric, dimensions) in enumerate(metrics):
        queries.append({"Id": f"m{index}", "ReturnData": False, "MetricStat": {
            "Metric": {"Namespace": namespace, "MetricName": metric,
                       "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()]},
            "Period": PERIOD, "Stat": "Sum"}})
    expression = " + ".join(f"FILL(m{i}, 0)" for i in range(len(metrics)))
    return {"Metrics": [{"Id": "total", "Label": label, "Expression": expression, "ReturnData": True},
                        *queries]}


def _api_dimensions() -> dict:
    return {"ApiName": {"Fn::Sub": "${AWS::StackName}"}, "Stage": api_stage()}


def api_stage() -> str:
    config = json.loads((Path(__file__).resolve().parent.parent / ".chalice" / "config.json").read_text())
    return config["stages"]["dev"]["api_gateway_stage"]


def alarms(resources: dict) -> dict:
    made: dict = {}
    for queue in failure_queues(resources):
        made[f"{queue}DepthAlarm"] = _alarm(
            f"{_kebab(queue)}-not-empty", "queue", f"{queue} holds messages that failed",
            _stat("AWS/SQS", "ApproximateNumberOfMessagesVisible",
                  {"QueueName": {"Fn::GetAtt": [queue, "QueueName"]}}, "Maximum"),
            threshold=0, datapoints=1, periods=1, missing="ignore")
    for function in functions():
        name = {"FunctionName": {"Ref": function.logical_id}}
        made[f"{function.logical_id}ErrorsAlarm"] = _conditional(function, _alarm(
            f"{function.suffix}-errors", "errors", f"{function.name} failed invocations",
            _stat("AWS/Lambda", "Errors", name), threshold=0))
        made[f"{function.logical_id}ThrottlesAlarm"] = _conditional(function, _alarm(
            f"{function.suffix}-throttles", "throttles", f"{function.name} invocations throttled",
            _stat("AWS/Lambda", "Throttles", name), threshold=0))
    for function in stream_consumers(resources):
        made[f"{function.logical_id}IteratorAgeAlarm"] = _alarm(
            f"{function.suffix}-iterator-age", "iterator",
            f"{function.name} is more than {ITERATOR_AGE_MS // 1000} s behind the table's stream",
            _stat("AWS/Lambda", "IteratorAge", {"FunctionName": {"Ref": function.logical_id}}, "Maximum"),
            threshold=ITERATOR_AGE_MS)
    for machine in _of_type(resources, "AWS::StepFunctions::StateMachine"):
        arn = {"StateMachineArn": {"Ref": machine}}
        for metric, word in (("ExecutionsFailed", "failed"), ("ExecutionsTimedOut", "timed-out")):
            made[f"{machine}{metric}Alarm"] = _alarm(
                f"{_kebab(machine)}-{word}", "machine", f"{machine} executions {word.replace('-', ' ')}",
                _stat("AWS/States", metric, arn), threshold=0, datapoints=1, periods=1)
    if REST_API in resources:
        made["Api5xxRateAlarm"] = _alarm(
            "api-5xx-rate", "api_errors", f"more than {API_ERROR_RATE:.0%} of API requests answered 5XX",
            _stat("AWS/ApiGateway", "5XXError", _api_dimensions(), "Average"), threshold=API_ERROR_RATE)
        made["ApiLatencyP99Alarm"] = _alarm(
            "api-p99-latency", "api_latency", f"API p99 latency above {API_P99_MS} ms",
            _stat("AWS/ApiGateway", "Latency", _api_dimensions(), "p99"), threshold=API_P99_MS)
    table = resources[TABLE]["Properties"]
    name = {"TableName": {"Ref": TABLE}}
    made["TableThrottlesAlarm"] = _alarm(
        "table-throttles", "table", "reads or writes of the table throttled",
        _sum_of("throttle events", ("AWS/DynamoDB", "ReadThrottleEvents", name),
                ("AWS/DynamoDB", "WriteThrottleEvents", name)), threshold=0)
    for index in table.get("GlobalSecondaryIndexes", []):
        dims = {**name, "GlobalSecondaryIndexName": index["IndexName"]}
        logical = index["IndexName"][0].upper() + index["IndexName"][1:]
        made[f"{logical}IndexThrottlesAlarm"] = _alarm(
            f"{_kebab(logical)}-index-throttles", "table",
            f"reads or writes of the {index['IndexName']} index throttled (its writes throttle the table's)",
            _sum_of("throttle events", ("AWS/DynamoDB", "ReadThrottleEvents", dims),
                    ("AWS/DynamoDB", "WriteThrottleEvents", dims)), threshold=0)
    return made


def _conditional(function: Function, resource: dict) -> dict:
    """A resource of a function that exists only under a condition carries the same one."""
    if function.condition is not None:
        resource["Condition"] = function.condition
    return resource


def _of_type(resources: dict, kind: str) -> list[str]:
    return sorted(name for name, r in resources.items() if r.get("Type") == kind)


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


# ---- the dashboard ------------------------------------------------------------------------------

def _widget(title: str, metrics: list, *, stat: str = "Sum", width: int = 12) -> dict:
    return {"type": "metric", "width": width, "height": 6, "properties": {
        "title": title, "region": "${AWS::Region}", "stat": stat, "period": PERIOD, "view": "timeSeries",
        "metrics": metrics}}


def dashboard_body(resources: dict, made: dict) -> str:
    """Of the resources that always exist: one the template may leave out (a ``Condition``)
    cannot be named in the body's ``Fn::Sub``."""
    names = [f for f in functions() if f.condition is None]
    queues = failure_queues(resources)
    machines = _of_type(resources, "AWS::StepFunctions::StateMachine")
    api = ["ApiName", "${AWS::StackName}", "Stage", api_stage()]
    widgets = [
        {"type": "alarm", "width": 24, "height": 6, "properties": {
            "title": "Alarms", "alarms": [f"${{{alarm}.Arn}}" for alarm in sorted(made)
                                          if "Condition" not in made[alarm]]}},
        _widget("API requests and errors", [
            ["AWS/ApiGateway", metric, *api] for metric in ("Count", "4XXError", "5XXError")]),
        _widget("API latency p50 / p99 (ms)", [
            ["AWS/ApiGateway", "Latency", *api, {"stat": stat}] for stat in ("p50", "p99")],
            stat="p99"),
        _widget("Function errors", [["AWS/Lambda", "Errors", "FunctionName", f"${{{f.logical_id}}}"]
                                    for f in names]),
        _widget("Function throttles", [["AWS/Lambda", "Throttles", "FunctionName", f"${{{f.logical_id}}}"]
                                       for f in names]),
        _widget("Function duration p99 (ms)", [["AWS/Lambda", "Duration", "FunctionName",
                                                f"${{{f.logical_id}}}"] for f in names], stat="p99"),
        _widget("Stream iterator age (ms)", [["AWS/Lambda", "IteratorAge", "FunctionName",
                                              f"${{{f.logical_id}}}"] for f in stream_consumers(resources)],
                stat="Maximum"),
        _widget("Failure queues: messages", [["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName",
                                              f"${{{q}.QueueName}}"] for q in queues], stat="Maximum"),
        _widget("Timer executions", [["AWS/States", metric, "StateMachineArn", f"${{{m}}}"]
                                     for m in machines for metric in
                                     ("ExecutionsStarted", "ExecutionsSucceeded", "ExecutionsFailed",
                                      "ExecutionsAborted", "ExecutionsTimedOut")]),
        _widget("Table: consumed capacity and throttles", [
            ["AWS/DynamoDB", metric, "TableName", f"${{{TABLE}}}"] for metric in
            ("ConsumedReadCapacityUnits", "ConsumedWriteCapacityUnits", "ReadThrottleEvents",
             "WriteThrottleEvents")]),
        _widget("Runs finished, by status", [
            ["Stagetrack/${AWS::StackName}", "RunsFinished", "Status", status] for status in
            ("SUCCESS", "FAILURE", "CANCELLED", "TIMED_OUT", "SKIPPED")]),
        _widget("Timers and deliveries", [
            *[["Stagetrack/${AWS::StackName}", "TimersFired", "Status", s] for s in ("TIMED_OUT", "SUCCESS")],
            ["Stagetrack/${AWS::StackName}", "TimersStale"],
            ["Stagetrack/${AWS::StackName}", "DeliveriesFailed"],
            ["Stagetrack/${AWS::StackName}", "DeliveriesDeadLettered"]]),
    ]
    return json.dumps({"widgets": widgets}, separators=(",", ":"))


# ---- applied to the assembled template ----------------------------------------------------------

def finish(resources: dict) -> None:
    for queue in _of_type(resources, "AWS::SQS::Queue"):
        resources[queue].setdefault("DeletionPolicy", "Delete")
        resources[queue].setdefault("UpdateReplacePolicy", "Delete")
    for function in functions():
        group = log_group_id(function)
        resources[group] = _conditional(function, {
            "Type": "AWS::Logs::LogGroup", "DeletionPolicy": "Delete", "UpdateReplacePolicy": "Delete",
            "Properties": {"LogGroupName": log_group_name(function.suffix),
                           "RetentionInDays": {"Ref": RETENTION}}})
        properties = resources.setdefault(function.logical_id, {}).setdefault("Properties", {})
        properties["Tracing"] = "Active"
        properties["LoggingConfig"] = {"LogFormat": "JSON", "LogGroup": {"Ref": group}}
        properties.setdefault("Environment", {}).setdefault("Variables", {})[
            "STAGETRACK_METRICS_NAMESPACE"] = METRICS_NAMESPACE
    for machine in _of_type(resources, "AWS::StepFunctions::StateMachine"):
        properties = resources[machine]["Properties"]
        properties["TracingConfiguration"] = {"Enabled": True}
        role = properties["RoleArn"]["Fn::GetAtt"][0]
        resources[role]["Properties"]["Policies"].append({"PolicyName": "Tracing", "PolicyDocument": {
            "Version": "2012-10-17", "Statement": [{"Sid": "Tracing", "Effect": "Allow",
                                                    "Action": STATE_MACHINE_XRAY, "Resource": "*"}]}})
    api = resources.setdefault(REST_API, {}).setdefault("Properties", {})
    api["TracingEnabled"] = True
    api["Name"] = {"Fn::Sub": "${AWS::StackName}"}  # the ApiName the alarms and dashboard name
    made = alarms(resources)
    resources.update(made)
    resources[DASHBOARD] = {"Type": "AWS::CloudWatch::Dashboard", "Properties": {
        "DashboardName": {"Fn::Sub": "${AWS::StackName}"},
        "DashboardBody": {"Fn::Sub": dashboard_body(resources, made)}}}
