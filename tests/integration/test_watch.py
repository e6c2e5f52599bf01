"""The packaged template is watched (issue 16, items 1 and 8): an alarm for every failure queue,
function, stream consumer, state machine, the API and the table, all to the on-call topic (a
stack output) and each linked to its docs/runbook.md section; one dashboard; X-Ray tracing on
functions, state machine and API stage; every function's log group in the template with a
retention, JSON logs and the metrics namespace; cfn-lint with informational checks and the
serverless rules, every ignored rule justified in docs/deploy.md and still firing.

The expectations are derived from the packaged template here, independently of
infra/part_watch.py, so a queue or function added without its alarm fails."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from markdown.extensions.toc import slugify

from infra import generate
from tests.integration.test_infra import packaged  # noqa: F401 - the module's fixture

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("cfn-lint")
FAILURE_QUEUES = {"IngestDeadLetterQueue", "DeliveryDeadLetterQueue", "TimerDeadLetterQueue",
                  "StreamFailureQueue", "EventRuleDeadLetterQueue"}  # issue 16 item 5


@pytest.fixture(scope="module")
def template(packaged):  # noqa: F811
    return json.loads(packaged.read_text())


def _of_type(template, kind):
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def _alarms(template):
    return _of_type(template, "AWS::CloudWatch::Alarm")


def _dimensions(alarm) -> list[dict]:
    properties = alarm["Properties"]
    if "Dimensions" in properties:
        return properties["Dimensions"]
    return [d for query in properties["Metrics"] if "MetricStat" in query
            for d in query["MetricStat"]["Metric"]["Dimensions"]]


def _watched(template, metric: str) -> list:
    """Dimension values of every alarm on ``metric`` (plain or inside metric math)."""
    found = []
    for alarm in _alarms(template).values():
        properties = alarm["Properties"]
        names = {properties.get("MetricName")} | {q["MetricStat"]["Metric"]["MetricName"]
                                                 for q in properties.get("Metrics", []) if "MetricStat" in q}
        if metric in names:
            found.append(_dimensions(alarm))
    return found


def _dead_letter_targets(node, found: set) -> set:
    """Queues referenced as a place failures go, anywhere in the packaged template."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("deadLetterTargetArn", "TargetArn", "Destination", "Arn") and isinstance(value, dict) \
                    and "Fn::GetAtt" in value:
                found.add(value["Fn::GetAtt"][0])
            _dead_letter_targets(value, found)
    elif isinstance(node, list):
        for value in node:
            _dead_letter_targets(value, found)
    return found


def test_every_failure_queue_has_a_depth_alarm(template):
    queues = set(_of_type(template, "AWS::SQS::Queue"))
    failure_queues = (_dead_letter_targets(template["Resources"], set()) & queues) | FAILURE_QUEUES
    depths = _watched(template, "ApproximateNumberOfMessagesVisible")
    watched = {d["Value"]["Fn::GetAtt"][0] for dims in depths for d in dims if d["Name"] == "QueueName"}
    assert FAILURE_QUEUES <= queues
    assert watched == failure_queues
    for name, alarm in _alarms(template).items():
        if alarm["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible":
            p = alarm["Properties"]
            # any message at all; a queue idle for hours stops reporting: stay in ALARM until it reads 0
            assert (p["Statistic"], p["Threshold"], p["ComparisonOperator"], p["TreatMissingData"]) == (
                "Maximum", 0, "GreaterThanThreshold", "ignore"), name


def test_every_function_has_an_errors_and_a_throttles_alarm(template):
    functions = set(_of_type(template, "AWS::Serverless::Function"))
    assert len(functions) == len(generate.functions())
    for metric in ("Errors", "Throttles"):
        watched = [d["Value"] for dims in _watched(template, metric) for d in dims
                   if d["Name"] == "FunctionName"]
        assert sorted(v["Ref"] for v in watched) == sorted(functions), metric


def test_every_stream_consumer_has_an_iterator_age_alarm(template):
    consumers = {name for name, f in _of_type(template, "AWS::Serverless::Function").items()
                 if any(e["Type"] == "DynamoDB" for e in f["Properties"].get("Events", {}).values())}
    assert consumers == {"TimerArmer", "OutboxPublisher"}
    watched = {d["Value"]["Ref"] for dims in _watched(template, "IteratorAge") for d in dims}
    assert watched == consumers


def test_state_machine_api_and_table_are_watched(template):
    machines = set(_of_type(template, "AWS::StepFunctions::StateMachine"))
    for metric in ("ExecutionsFailed", "ExecutionsTimedOut"):
        assert {d["Value"]["Ref"] for dims in _watched(template, metric) for d in dims} == machines
    api_name = {"Fn::Sub": "${AWS::StackName}"}
    assert template["Resources"]["RestAPI"]["Properties"]["Name"] == api_name
    stage = template["Resources"]["RestAPI"]["Properties"]["StageName"]
    for metric in ("5XXError", "Latency"):
        (dims,) = _watched(template, metric)
        assert dims == [{"Name": "ApiName", "Value": api_name}, {"Name": "Stage", "Value": stage}]
    by_metric = {a["Properties"].get("MetricName"): a["Properties"] for a in _alarms(template).values()}
    assert (by_metric["5XXError"]["Statistic"], by_metric["5XXError"]["Threshold"]) == ("Average", 0.01)
    assert (by_metric["Latency"]["ExtendedStatistic"], by_metric["Latency"]["Threshold"]) == ("p99", 5000)
    table = template["Resources"]["StagetrackTable"]["Properties"]
    throttled = _watched(template, "WriteThrottleEvents")
    assert _watched(template, "ReadThrottleEvents") == throttled
    indexes = {d["Value"] for dims in throttled for d in dims if d["Name"] == "GlobalSecondaryIndexName"}
    assert indexes == {i["IndexName"] for i in table["GlobalSecondaryIndexes"]}
    assert [{"Name": "TableName", "Value": {"Ref": "StagetrackTable"}}] * 2 in throttled  # the table itself


def _runbook_anchors() -> set[str]:
    text = (ROOT / "docs" / "runbook.md").read_text()
    return {slugify(m.group(1).strip(), "-") for m in re.finditer(r"^#{2,4} (.+)$", text, re.M)}


def test_every_alarm_pages_the_on_call_topic_and_links_its_runbook_section(template):
    assert template["Resources"]["OnCallTopic"]["Type"] == "AWS::SNS::Topic"
    assert template["Outputs"]["OnCallTopicArn"] == {"Value": {"Ref": "OnCallTopic"}}
    anchors = _runbook_anchors()
    alarms = _alarms(template)
    assert len(alarms) >= 2 * len(generate.functions()) + len(FAILURE_QUEUES)
    names = set()
    for name, alarm in alarms.items():
        p = alarm["Properties"]
        assert p["AlarmActions"] == p["OKActions"] == [{"Ref": "OnCallTopic"}], name
        link = re.search(r"Runbook: docs/runbook\.md#([a-z0-9-]+)$", p["AlarmDescription"])
        assert link and link.group(1) in anchors, (name, p["AlarmDescription"])
        names.add(p["AlarmName"]["Fn::Sub"])
        assert p["AlarmName"]["Fn::Sub"].startswith("${AWS::StackName}-")
    assert len(names) == len(alarms)  # alarm names are unique


def test_one_dashboard_showing_every_alarm(template):
    (dashboard,) = _of_type(template, "AWS::CloudWatch::Dashboard").values()
    body = json.loads(dashboard["Properties"]["DashboardBody"]["Fn::Sub"])
    (alarm_widget,) = [w for w in body["widgets"] if w["type"] == "alarm"]
    # an alarm the template may leave out (a Condition: the OTLP export's) cannot be named there
    always = [a for a, alarm in _alarms(template).items() if "Condition" not in alarm]
    assert sorted(alarm_widget["properties"]["alarms"]) == sorted(f"${{{a}.Arn}}" for a in always)
    assert {alarm.get("Condition") for alarm in _alarms(template).values()} == {None, "OtlpExportOn"}
    metrics = {row[1] for w in body["widgets"] for row in w["properties"].get("metrics", [])}
    assert {"RunsFinished", "TimersFired", "DeliveriesFailed", "IteratorAge", "5XXError"} <= metrics


def test_tracing_is_on_for_functions_state_machine_and_api_stage(template):
    resources = template["Resources"]
    for name, function in _of_type(template, "AWS::Serverless::Function").items():
        assert function["Properties"]["Tracing"] == "Active", name
        role = function["Properties"]["Role"]["Fn::GetAtt"][0]
        statements = [s for p in resources[role]["Properties"]["Policies"]
                      for s in p["PolicyDocument"]["Statement"]]
        actions = {a for s in statements for a in s["Action"]}
        assert {"xray:PutTraceSegments", "xray:PutTelemetryRecords"} <= actions
    for machine in _of_type(template, "AWS::StepFunctions::StateMachine").values():
        assert machine["Properties"]["TracingConfiguration"] == {"Enabled": True}
        role = resources[machine["Properties"]["RoleArn"]["Fn::GetAtt"][0]]
        actions = {a for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]
                   for a in s["Action"]}
        assert "xray:PutTraceSegments" in actions
    assert resources["RestAPI"]["Properties"]["TracingEnabled"] is True


def test_every_log_group_has_a_retention_and_every_function_logs_json_to_its_own(template):
    resources = template["Resources"]
    parameter = template["Parameters"]["LogRetentionDays"]
    assert (parameter["Type"], parameter["Default"]) == ("Number", 30) and 3653 in parameter["AllowedValues"]
    groups = _of_type(template, "AWS::Logs::LogGroup")
    for name, group in groups.items():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name
    used = []
    for name, function in _of_type(template, "AWS::Serverless::Function").items():
        config = function["Properties"]["LoggingConfig"]
        assert config["LogFormat"] == "JSON", name
        group = config["LogGroup"]["Ref"]
        used.append(group)
        suffix = function["Properties"]["FunctionName"]["Fn::Sub"].removeprefix("${AWS::StackName}-")
        expected = {"Fn::Sub": f"/stagetrack/${{AWS::StackName}}/{suffix}"}
        assert groups[group]["Properties"]["LogGroupName"] == expected
        role = resources[function["Properties"]["Role"]["Fn::GetAtt"][0]]
        (own,) = [s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]
                  if s["Sid"] == "OwnLogs"]
        assert "logs:CreateLogGroup" not in own["Action"]  # a group Lambda creates is kept forever
        arn = own["Resource"]["Fn::Sub"]
        assert arn.endswith(f":log-group:/stagetrack/${{AWS::StackName}}/{suffix}:*") or (
            name == "APIHandler" and arn.endswith(":log-group:/stagetrack/${AWS::StackName}/*:*"))
        variables = function["Properties"]["Environment"]["Variables"]
        assert variables["STAGETRACK_METRICS_NAMESPACE"] == {"Fn::Sub": "Stagetrack/${AWS::StackName}"}
    # one group per function, and the API stage's access log (test_front_door_template.py)
    access = resources["RestAPI"]["Properties"]["AccessLogSetting"]["DestinationArn"]["Fn::GetAtt"][0]
    assert sorted(used + [access]) == sorted(groups)  # none unused


# ---- cfn-lint: informational checks and the serverless rules ------------------------------------

def _config() -> dict:
    return yaml.safe_load((ROOT / ".cfnlintrc.yaml").read_text())


def test_lint_runs_informational_checks_and_the_serverless_rules():
    config = _config()
    assert config["include_checks"] == ["I"]
    assert config["append_rules"] == ["cfn_lint_serverless.rules"]
    pins = (ROOT / "requirements-dev.txt").read_text()
    assert re.search(r"^cfn-lint-serverless==\d+\.\d+\.\d+$", pins, re.M)


def test_every_ignored_lint_rule_is_justified_in_the_deploy_docs_and_still_fires(packaged):  # noqa: F811
    """Ignored by rule id in one place (.cfnlintrc.yaml); each id is explained in docs/deploy.md;
    one that no longer fires must leave both (the list only shrinks)."""
    ignored = _config()["ignore_checks"]
    section = (ROOT / "docs" / "deploy.md").read_text().split("## Lint findings we accept", 1)[1]
    for rule in ignored:
        assert f"`{rule}`" in section, f"{rule}: ignored in .cfnlintrc.yaml, unjustified in docs/deploy.md"
    # --ignore-checks on the command line replaces the file's list (W9999: no such rule)
    done = subprocess.run([str(LINT), "--ignore-checks", "W9999", "--format", "json", "--", str(packaged)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    fired = {finding["Rule"]["Id"] for finding in json.loads(done.stdout)}
    assert fired == set(ignored), (
        f"ignored but no longer fire (remove them): {sorted(set(ignored) - fired)}; "
        f"fire unignored: {sorted(fired - set(ignored))}")
