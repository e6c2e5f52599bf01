"""Failure capture in the packaged template (issue 16 item 5), derived from the template itself
so a consumer added later without its capture fails here: every stream source keeps failed
batches whole in the failure bucket, every queue source reports partial batch failures, every
rule target has a dead-letter queue (with a queue policy) and a retry policy, every
asynchronously invoked function has an on-failure destination."""
from __future__ import annotations

import json

import pytest

from tests.integration.test_infra import packaged  # noqa: F401 - the module's fixture

ASYNC = {"CloudWatchEvent", "EventBridgeRule", "Schedule", "SNS"}
RULES = {"CloudWatchEvent", "EventBridgeRule", "Schedule"}


@pytest.fixture(scope="module")
def template(packaged):  # noqa: F811
    return json.loads(packaged.read_text())


def _events(template):
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            for key, event in resource["Properties"].get("Events", {}).items():
                yield name, key, event["Type"], event["Properties"]


def _statements(template, function):
    role = template["Resources"][function]["Properties"]["Role"]["Fn::GetAtt"][0]
    return [s for p in template["Resources"][role]["Properties"]["Policies"]
            for s in p["PolicyDocument"]["Statement"]]


def test_stream_failures_are_kept_whole_in_an_encrypted_private_expiring_bucket(template):
    streams = [(f, p) for f, _, kind, p in _events(template) if kind == "DynamoDB"]
    assert {f for f, _ in streams} == {"OutboxPublisher", "TimerArmer"}
    for function, properties in streams:
        assert properties["DestinationConfig"]["OnFailure"] == {
            "Destination": {"Fn::GetAtt": ["StreamFailureBucket", "Arn"]}}, function
        assert properties["BisectBatchOnFunctionError"] is True
        writes = [s for s in _statements(template, function) if "s3:PutObject" in s["Action"]]
        assert writes and writes[0]["Resource"][0] == {"Fn::GetAtt": ["StreamFailureBucket", "Arn"]}
    bucket = template["Resources"]["StreamFailureBucket"]
    props = bucket["Properties"]
    assert bucket["Type"] == "AWS::S3::Bucket"
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
        "ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    assert set(props["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(props["PublicAccessBlockConfiguration"]) == 4
    [rule] = props["LifecycleConfiguration"]["Rules"]
    assert rule["ExpirationInDays"] == {"Ref": "FailureRecordDays"}
    assert template["Parameters"]["FailureRecordDays"]["Type"] == "Number"
    # every new record notifies a watched queue, which S3 may send to
    [notice] = props["NotificationConfiguration"]["QueueConfigurations"]
    assert notice["Queue"] == {"Fn::GetAtt": ["StreamFailureQueue", "Arn"]}
    assert "StreamFailureQueueDepthAlarm" in template["Resources"]
    assert "StreamFailureQueuePolicy" in bucket["DependsOn"]


def test_the_timer_armer_reports_partial_failures_and_every_queue_consumer_does(template):
    reported = {f: p.get("FunctionResponseTypes") for f, _, kind, p in _events(template)
                if kind == "SQS" or f == "TimerArmer"}
    assert set(reported) == {"TimerArmer", "TimerFired", "IngestQueue", "DeliverWebhooks"}
    assert set(map(tuple, reported.values())) == {("ReportBatchItemFailures",)}


def test_every_rule_target_has_a_dead_letter_queue_and_a_retry_policy(template):
    targets = [(f, p) for f, _, kind, p in _events(template) if kind in RULES]
    assert {f for f, _ in targets} == {"AwsCiEvents", "TimerSweeper", "InsightsExport"}
    for _, properties in targets:
        assert properties["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["EventRuleDeadLetterQueue", "Arn"]}}
        assert properties["RetryPolicy"] == {"MaximumRetryAttempts": 20, "MaximumEventAgeInSeconds": 3600}
    policy = template["Resources"]["EventRuleDeadLetterQueuePolicy"]["Properties"]
    assert policy["Queues"] == [{"Ref": "EventRuleDeadLetterQueue"}]
    [statement] = policy["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert "aws:SourceArn" in statement["Condition"]["ArnLike"]  # only this stack's rules


def test_every_asynchronously_invoked_function_has_an_on_failure_destination(template):
    invoked = {f for f, _, kind, _ in _events(template) if kind in ASYNC}
    assert invoked == {"AwsCiEvents", "IngestTopic", "TimerSweeper", "InsightsExport"}
    for function in invoked:
        config = template["Resources"][function]["Properties"]["EventInvokeConfig"]
        destination = config["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0]
        assert template["Resources"][destination]["Type"] == "AWS::SQS::Queue"
        sends = [s for s in _statements(template, function) if "sqs:SendMessage" in s["Action"]]
        assert any({"Fn::GetAtt": [destination, "Arn"]} in s["Resource"] for s in sends), function
