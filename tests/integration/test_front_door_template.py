"""The front door in the packaged template (issue 16 item 2): stage and method throttling,
access logs in JSON without any credential, an optional WAF web ACL, the API function giving
up before API Gateway does (with the DynamoDB client's budget inside it), reserved concurrency
for the API and the async consumers and a concurrency cap on every SQS event source.

Read from the packaged template (chalice's resources with infra/resources.json merged in), so
a consumer added later without its cap fails here."""
from __future__ import annotations

import json
import re

import pytest

from chalicelib.settings import Settings
from infra import part_gateway
from tests.integration.test_infra import packaged  # noqa: F401 - the module's fixture

API_GATEWAY_GIVES_UP_SECONDS = 29


@pytest.fixture(scope="module")
def template(packaged):  # noqa: F811
    return json.loads(packaged.read_text())


def _default(template, value) -> int:
    """The default of the parameter ``value`` refers to."""
    assert set(value) == {"Ref"}, value
    return int(template["Parameters"][value["Ref"]]["Default"])


def _api(template) -> dict:
    return template["Resources"]["RestAPI"]["Properties"]


def test_the_stage_throttles_every_method_and_sign_in_more_tightly(template):
    settings = {(s["ResourcePath"], s["HttpMethod"]): s for s in _api(template)["MethodSettings"]}
    stage = settings[("/*", "*")]
    assert (_default(template, stage["ThrottlingRateLimit"]),
            _default(template, stage["ThrottlingBurstLimit"])) == (50, 100)
    sign_in = settings[("/~1api~1session", "POST")]
    assert (_default(template, sign_in["ThrottlingRateLimit"]),
            _default(template, sign_in["ThrottlingBurstLimit"])) == (2, 5)
    # the sign-in path is a real route of the API (a typo would throttle nothing)
    assert "post" in json.loads(json.dumps(_api(template)["DefinitionBody"]))["paths"]["/api/session"]


def test_access_logs_are_json_lines_in_a_retained_group_and_carry_no_credential(template):
    setting = _api(template)["AccessLogSetting"]
    group_id = setting["DestinationArn"]["Fn::GetAtt"][0]
    group = template["Resources"][group_id]
    assert group["Type"] == "AWS::Logs::LogGroup"
    assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    # not under /stagetrack/<stack>/, which the API function's log permission covers
    assert group["Properties"]["LogGroupName"] == {"Fn::Sub": "/stagetrack-access/${AWS::StackName}"}
    fields = json.loads(setting["Format"])  # one JSON object per request
    assert {"requestId", "ip", "method", "path", "status", "latencyMs", "errorType",
            "wafStatus"} <= set(fields)
    assert all(re.fullmatch(r"\$context\.[A-Za-z.]+", value) for value in fields.values()), fields
    lowered = setting["Format"].lower()
    for leak in ("authorization", "token", "cookie", "$input", "$method", "header", "querystring",
                 "error.message", "useragent", "apikey", "authorizer"):
        assert leak not in lowered, leak


def test_a_web_acl_is_associated_only_when_one_is_given(template):
    parameter = template["Parameters"]["WebAclArn"]
    assert parameter["Default"] == ""
    pattern = re.compile(parameter["AllowedPattern"])
    assert pattern.fullmatch("") and pattern.fullmatch(
        "arn:aws:wafv2:eu-west-1:123456789012:regional/webacl/edge/0b1c-11")
    assert not pattern.fullmatch("arn:aws:wafv2:us-east-1:123456789012:global/webacl/cf/1")  # CloudFront's
    association = template["Resources"]["ApiWebAclAssociation"]
    assert association["Type"] == "AWS::WAFv2::WebACLAssociation"
    assert template["Conditions"][association["Condition"]] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "WebAclArn"}, ""]}]}
    assert association["Properties"]["WebACLArn"] == {"Ref": "WebAclArn"}
    stage = _api(template)["StageName"]
    arn = association["Properties"]["ResourceArn"]["Fn::Sub"]
    assert arn.endswith("/restapis/${RestAPI}/stages/" + stage)
    assert association["DependsOn"] == [f"RestAPI{stage}Stage"]  # SAM's stage of the API


def test_the_api_function_gives_up_before_api_gateway_and_dynamodb_calls_fit_inside(template):
    timeout = template["Resources"]["APIHandler"]["Properties"]["Timeout"]
    assert timeout == part_gateway.API_TIMEOUT_SECONDS == 25 < API_GATEWAY_GIVES_UP_SECONDS
    assert 2 * Settings().dynamodb_call_budget() < timeout  # docs/deploy.md "Timeout budget"


def _reserved(template, name: str):
    return template["Resources"][name]["Properties"]["ReservedConcurrentExecutions"]


def test_the_api_and_the_async_consumers_have_reserved_concurrency(template):
    for name, parameter, default in [("APIHandler", "ApiReservedConcurrency", 50),
                                     ("IngestTopic", "EventConsumerReservedConcurrency", 10),
                                     ("AwsCiEvents", "EventConsumerReservedConcurrency", 10)]:
        condition, reserved, none = _reserved(template, name)["Fn::If"]
        assert (reserved, none) == ({"Ref": parameter}, {"Ref": "AWS::NoValue"})
        # 0 would stop the function altogether: it means "no reservation" instead
        assert template["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, 0]}]}
        assert template["Parameters"][parameter]["Default"] == default
    # the consumers a flood must not starve keep the account's unreserved pool
    for name in ("TimerArmer", "TimerFired", "TimerSweeper", "OutboxPublisher"):
        assert "ReservedConcurrentExecutions" not in template["Resources"][name]["Properties"]


def test_every_sqs_event_source_has_a_concurrency_cap(template):
    capped = {}
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        for event in resource["Properties"].get("Events", {}).values():
            if event["Type"] == "SQS":
                capped[name] = event["Properties"].get("ScalingConfig")
    assert set(capped) == {"IngestQueue", "DeliverWebhooks", "TimerFired"}
    assert all(c == {"MaximumConcurrency": {"Ref": "QueueConsumerMaxConcurrency"}} for c in capped.values())
    parameter = template["Parameters"]["QueueConsumerMaxConcurrency"]
    assert (parameter["MinValue"], parameter["Default"]) == (2, 10)  # Lambda's minimum is 2


def test_every_function_has_a_timeout_and_its_queue_outlasts_it_six_times(template):
    """A consumer still working when its message becomes visible again would see it twice:
    Lambda advises a queue visibility of six times the consumer's timeout. The API's 25 s is
    checked above; every other function keeps a stated timeout within Lambda's 900 s."""
    resources = template["Resources"]
    functions = {n: r["Properties"] for n, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}
    consumers = 0
    for name, properties in functions.items():
        assert isinstance(properties["Timeout"], int) and 1 <= properties["Timeout"] <= 900, name
        for event in properties.get("Events", {}).values():
            if event["Type"] != "SQS":
                continue
            queue = resources[event["Properties"]["Queue"]["Fn::GetAtt"][0]]["Properties"]
            assert queue["VisibilityTimeout"] >= 6 * properties["Timeout"], name
            consumers += 1
    assert consumers == 3
