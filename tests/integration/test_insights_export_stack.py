"""The stack's hourly OTLP export (events/insights_export.py) end to end on moto: the scheduled
handler, invoked as Lambda invokes it, in a container configured as the stack configures it
(the endpoint in its environment, the headers in a Secrets Manager secret named by ARN), POSTs
to the local OTLP receiver, which decodes the protobuf with the official classes; its calls
stay within its policy; without an endpoint it sends nothing."""
from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from chalice.test import Client

from chalicelib import wiring
from chalicelib.adapters import secrets
from chalicelib.adapters.metrics import EmfMetrics
from chalicelib.domain.insights import FinishedAttempt, FinishedRun
from chalicelib.domain.schemas import CreateRunIn
from chalicelib.domain.status import StageStatus as S
from chalicelib.events.insights_export import run_export
from chalicelib.service import insights, runs
from chalicelib.settings import Settings
from chalicelib.store.schema import ensure_tables
from infra import part_insights_export
from tests.fixtures import assert_items_allowed, aws_client
from tests.integration.test_infra import _allowed, iam_actions, packaged  # noqa: F401 - the module's fixtures
from tests.integration.test_otlp_receiver import SECRET, receiver  # noqa: F401 - the module's fixture

SCHEDULED = {"source": "aws.events", "detail_type": "Scheduled Event", "detail": {}, "resources": []}


def finish(ctx, pipeline: str, run_id: str, status: S, end: datetime) -> None:
    insights.add_attempt(ctx, FinishedAttempt(
        pipeline=pipeline, run_id=run_id, position=0, name="build", status=status, attempt=1,
        first_attempt=1, created_at=end - timedelta(minutes=5), started_at=end - timedelta(minutes=4),
        ended_at=end))
    insights.add_run(ctx, FinishedRun(pipeline=pipeline, run_id=run_id, status=status,
                                      created_at=end - timedelta(minutes=5),
                                      started_at=end - timedelta(minutes=4), ended_at=end, order=1))


def metrics_of(request) -> dict:
    [resource] = request.resource_metrics
    [scope] = resource.scope_metrics
    return {m.name: m for m in scope.metrics}


@pytest.fixture
def deployed(aws, receiver, monkeypatch):  # noqa: F811
    """A container of the stack's ``insights-export`` function: its environment names the
    endpoint and the headers' secret (an ARN), never a header's value."""
    base, state = receiver
    arn = aws_client("secretsmanager").create_secret(
        Name="stagetrack/otlp-headers", SecretString=json.dumps({"otlp_headers": f"api-key={SECRET}"}))["ARN"]
    for name in ("STAGETRACK_OTLP_HEADERS", "STAGETRACK_DYNAMODB_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STAGETRACK_TABLE", "stagetrack-export")
    monkeypatch.setenv("STAGETRACK_OTLP_ENDPOINT", f"{base}/v1/metrics")
    monkeypatch.setenv("STAGETRACK_SECRET_IDS", arn)
    monkeypatch.setenv("STAGETRACK_METRICS_NAMESPACE", "Stagetrack/test")
    ensure_tables(Settings.from_env())
    secrets.forget()
    wiring.override(None)
    yield state
    secrets.forget()
    wiring.override(None)


def test_the_scheduled_handler_exports_every_pipeline_to_the_receiver(deployed, capsys):
    from app import app

    state = deployed
    ctx = wiring.context()  # built from the environment: the headers read from the secret
    assert ctx.settings.otlp_headers == f"api-key={SECRET}"
    now = datetime.now(UTC)
    for pipeline in ("api", "web"):
        runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps({"pipeline": pipeline})))
    finish(ctx, "web", "r1", S.SUCCESS, now - timedelta(minutes=30))
    finish(ctx, "web", "r2", S.FAILURE, now - timedelta(days=2))
    with Client(app) as lambdas:
        lambdas.lambda_.invoke("insights_export", lambdas.events.generate_cw_event(**SCHEDULED))
    assert len(state.received) == 2
    web = next(r for r in state.received
               if any(a.value.string_value == "web" for m in metrics_of(r["request"]).values()
                      for p in (m.histogram.data_points or m.sum.data_points or m.gauge.data_points)
                      for a in p.attributes if a.key == "cicd.pipeline.name"))
    assert web["headers"].get("api-key") == SECRET and web["path"] == "/v1/metrics"
    metrics = metrics_of(web["request"])
    points = metrics["cicd.pipeline.run.duration"].histogram.data_points
    assert sum(p.count for p in points) == 2
    start = datetime.combine(now.date() - timedelta(days=6), datetime.min.time(), tzinfo=UTC)
    assert {p.start_time_unix_nano for p in points} == {int(start.timestamp()) * 10**9}
    assert metrics["cicd.pipeline.run.duration"].histogram.aggregation_temporality == 2  # cumulative
    assert metrics["stagetrack.pipeline.task.runs"].sum.data_points[0].as_double == 2
    out = capsys.readouterr().out
    assert SECRET not in out  # the header's value: never in a log line
    assert '"ExportsSent":2' in out  # the EMF count
    stored = ctx.stores.insights.export_totals("web")
    assert stored is not None and stored.since == start.date().isoformat()

    # the collector refuses: counted as failed; the next export sends the totals again, once
    state.status = 503
    with Client(app) as lambdas:
        lambdas.lambda_.invoke("insights_export", lambdas.events.generate_cw_event(**SCHEDULED))
    assert '"ExportsFailed":2' in capsys.readouterr().out
    state.status = 200
    finish(ctx, "web", "r3", S.SUCCESS, datetime.now(UTC))
    state.received.clear()
    with Client(app) as lambdas:
        lambdas.lambda_.invoke("insights_export", lambdas.events.generate_cw_event(**SCHEDULED))
    durations = [metrics_of(r["request"]).get("cicd.pipeline.run.duration") for r in state.received]
    counts = [sum(p.count for p in m.histogram.data_points) for m in durations if m is not None]
    assert counts == [3]  # "api" finished nothing: no count point is sent for it


def test_without_an_endpoint_the_handler_sends_nothing(deployed, monkeypatch):
    from app import app

    monkeypatch.delenv("STAGETRACK_OTLP_ENDPOINT")
    state = deployed
    ctx = wiring.context()
    runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps({"pipeline": "web"})))
    finish(ctx, "web", "r1", S.SUCCESS, datetime.now(UTC))
    with Client(app) as lambdas:
        lambdas.lambda_.invoke("insights_export", lambdas.events.generate_cw_event(**SCHEDULED))
    assert state.received == [] and ctx.stores.insights.export_totals("web") is None


def test_the_exports_calls_stay_within_its_policy_and_partition(ctx, clock, iam_actions, receiver):  # noqa: F811
    base, state = receiver
    actions, indexes = iam_actions
    ctx.settings = replace(ctx.settings, otlp_endpoint=f"{base}/v1/metrics")
    ctx.metrics = EmfMetrics("Stagetrack/test", clock)
    runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps({"pipeline": "web"})))
    finish(ctx, "web", "r1", S.SUCCESS, clock.now())
    for days in (0, 8):  # the first export (its totals), then one that folds a day out of the window
        clock.advance(days * 86400)
        actions.clear()
        indexes.clear()
        report = run_export(ctx)
        assert report is not None and report.sent == 1 and report.saved == 1
        assert actions <= _allowed("insights_export")
        assert indexes == {part_insights_export.LISTING_INDEX}
        assert assert_items_allowed(actions, "insights_export") == {"INSIGHTS#"}
    assert {"dynamodb:Query", "dynamodb:GetItem", "dynamodb:PutItem"} <= actions
    assert len(state.received) == 2


def _references(node) -> set[str]:
    if isinstance(node, dict):
        found = set()
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                found.add(value[0] if isinstance(value, list) else value.split(".")[0])
            elif key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                found |= {name.split(".")[0] for name in re.findall(r"\$\{([^}!]+)\}", text)}
            found |= _references(value)
        return found
    if isinstance(node, list):
        return set().union(*(_references(v) for v in node)) if node else set()
    return set()


def test_the_template_makes_the_export_only_with_an_endpoint(packaged):  # noqa: F811
    template = json.loads(packaged.read_text())
    resources, parameters = template["Resources"], template["Parameters"]
    assert parameters["OtlpEndpoint"]["Default"] == parameters["OtlpHeadersSecretArn"]["Default"] == ""
    assert template["Conditions"]["OtlpExportOn"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "OtlpEndpoint"}, ""]}]}
    conditional = {name for name, r in resources.items() if r.get("Condition") == "OtlpExportOn"}
    assert conditional == {"InsightsExport", "InsightsExportRole", "InsightsExportLogGroup",
                           "InsightsExportErrorsAlarm", "InsightsExportThrottlesAlarm",
                           "InsightsExportsFailedAlarm"}
    assert resources["InsightsExportRoleSecretPolicy"]["Condition"] == "OtlpHeadersSet"
    # nothing that always exists names what may not (the dashboard included)
    maybe = conditional | {"InsightsExportRoleSecretPolicy"}
    for name, resource in resources.items():
        if resource.get("Condition") is None:
            assert not _references(resource) & maybe, name
    function = resources["InsightsExport"]["Properties"]
    event = function["Events"]["InsightsExportEvent"]
    assert (event["Type"], event["Properties"]["Schedule"]) == ("Schedule", "rate(1 hour)")
    variables = function["Environment"]["Variables"]
    assert variables["STAGETRACK_OTLP_ENDPOINT"] == {"Ref": "OtlpEndpoint"}
    assert "STAGETRACK_OTLP_HEADERS" not in variables  # the headers: from the secret only
    alarm = resources["InsightsExportsFailedAlarm"]["Properties"]
    assert (alarm["MetricName"], alarm["Period"], alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"],
            alarm["Threshold"]) == ("ExportsFailed", 3600, 2, 2, 0)
    assert alarm["Namespace"] == {"Fn::Sub": "Stagetrack/${AWS::StackName}"}
    role = resources["InsightsExportRole"]["Properties"]
    [statements] = [p["PolicyDocument"]["Statement"] for p in role["Policies"]]
    [items] = [s for s in statements if s["Sid"] == "Insights"]
    assert items["Action"] == ["dynamodb:Query", "dynamodb:GetItem", "dynamodb:PutItem"]
    assert items["Condition"] == {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["INSIGHTS*"]}}
