"""tools/replay.py on moto (issue 16 item 5): what a failure queue or the stream failure bucket
holds goes back to its source once, and is processed once (idempotency holds across a replay).
Lambda itself is simulated: SQS deliveries are handed to chalice's test harness, and the
functions the tool invokes are a fake Lambda client (moto cannot run one)."""
from __future__ import annotations

import json

import boto3
import pytest
from chalice.test import Client
from moto import mock_aws

from chalicelib.domain.errors import NotFound
from chalicelib.events.inbound import REPLAY_OF
from chalicelib.service import runs
from tools import replay

STACK = "stagetrack"
CREATE = json.dumps({"action": "create_run", "run": {"pipeline": "web", "stages": ["BUILD"]}})


class FakeLambda:
    """Records invocations; ``failing`` function names answer with a FunctionError."""

    def __init__(self, failing=()) -> None:
        self.calls: list[tuple[str, dict, str]] = []
        self.failing = set(failing)

    def invoke(self, FunctionName, Payload, InvocationType):  # noqa: N803 - boto3's names
        self.calls.append((FunctionName, json.loads(Payload), InvocationType))
        return {"StatusCode": 200, **({"FunctionError": "Unhandled"} if FunctionName in self.failing else {})}


@pytest.fixture
def aws(memory_ctx):
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        urls = {}
        for suffix in ("ingest-dlq", "deliveries-dlq", "timers-dlq", "rules-dlq", "deliveries", "timers"):
            urls[suffix] = sqs.create_queue(QueueName=f"{STACK}-{suffix}")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=urls["ingest-dlq"], AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        urls["ingest"] = sqs.create_queue(QueueName=f"{STACK}-ingest", Attributes={
            "VisibilityTimeout": "0",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})})["QueueUrl"]
        yield sqs, urls


def deliver(sqs, url, lambdas) -> dict:
    """What Lambda's SQS event source mapping does for ingest_queue: one receive, one invoke."""
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
                                   ).get("Messages", [])
    event = {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": {}, "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:us-east-1:123456789012:{STACK}-ingest", "awsRegion": "us-east-1",
        "messageAttributes": {k: {"stringValue": v["StringValue"], "dataType": v["DataType"]}
                              for k, v in m.get("MessageAttributes", {}).items()},
    } for m in messages]}
    answer = lambdas.lambda_.invoke("ingest_queue", event).payload if messages else {}
    for m in messages:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return {"ids": [m["MessageId"] for m in messages], **answer}


def _runs_of_web(ctx) -> int:
    count = 0
    for number in range(1, 4):
        try:
            runs.get_run(ctx, f"web:{number}")
            count += 1
        except NotFound:
            pass
    return count


def _redrive(sqs, urls) -> str:
    """The ingest message is received once (not deleted: its batch failed) and moved to the DLQ
    by SQS on the next receive; its id."""
    [first] = sqs.receive_message(QueueUrl=urls["ingest"])["Messages"]
    assert sqs.receive_message(QueueUrl=urls["ingest"]).get("Messages", []) == []  # moved
    [moved] = sqs.receive_message(QueueUrl=urls["ingest-dlq"], VisibilityTimeout=0)["Messages"]
    assert moved["MessageId"] == first["MessageId"]
    return first["MessageId"]


def test_an_ingest_message_that_never_applied_is_replayed_and_applied_once(aws, memory_ctx):
    from app import app

    sqs, urls = aws
    sqs.send_message(QueueUrl=urls["ingest"], MessageBody=CREATE)
    _redrive(sqs, urls)
    report = replay.Replayer(STACK, sqs=sqs).replay_queue("ingest-dlq")
    assert report.as_dict() == {"replayed": 1, "dropped": 0, "kept": []}
    assert sqs.receive_message(QueueUrl=urls["ingest-dlq"]).get("Messages", []) == []
    with Client(app) as lambdas:
        assert deliver(sqs, urls["ingest"], lambdas)["batchItemFailures"] == []
    assert _runs_of_web(memory_ctx) == 1


def test_an_ingest_message_applied_before_it_failed_is_not_applied_again(aws, memory_ctx):
    """Applied, then its batch failed (say the function timed out after the write): SQS moved
    it to the DLQ. Replayed, it keeps the id it was first delivered with, so it is a replay."""
    from app import app

    sqs, urls = aws
    assert replay.REPLAY_OF == REPLAY_OF  # the attribute the tool sets is the one the handler reads
    sqs.send_message(QueueUrl=urls["ingest"], MessageBody=CREATE)
    [first] = sqs.receive_message(QueueUrl=urls["ingest"], VisibilityTimeout=0)["Messages"]
    with Client(app) as lambdas:
        event = lambdas.events.generate_sqs_event(message_bodies=[CREATE], queue_name=f"{STACK}-ingest")
        event["Records"][0]["messageId"] = first["MessageId"]
        lambdas.lambda_.invoke("ingest_queue", event)  # applied; its deletion never happened
        assert _runs_of_web(memory_ctx) == 1
        assert sqs.receive_message(QueueUrl=urls["ingest"]).get("Messages", []) == []  # -> DLQ
        assert replay.Replayer(STACK, sqs=sqs).replay_queue("ingest-dlq").replayed == 1
        delivered = deliver(sqs, urls["ingest"], lambdas)
    assert delivered["ids"] and delivered["ids"][0] != first["MessageId"]  # a new SQS message...
    assert delivered["batchItemFailures"] == []
    assert _runs_of_web(memory_ctx) == 1  # ...recognised as the same one: applied once


def test_a_dead_lettered_message_with_redacted_secrets_is_kept_not_replayed(aws):
    sqs, urls = aws
    body = json.dumps({"origin": "sqs:stagetrack-ingest", "error": {"code": "not_found"},
                       "message": json.dumps({"action": "apply_variables", "runId": "web:1",
                                              "variables": [{"key": "T", "value": "[REDACTED]",
                                                             "secret": True}]})})
    sqs.send_message(QueueUrl=urls["ingest-dlq"], MessageBody=body)
    report = replay.Replayer(STACK, sqs=sqs).replay_queue("ingest-dlq")
    assert report.replayed == 0 and len(report.kept) == 1 and "redacted" in report.kept[0]
    assert sqs.receive_message(QueueUrl=urls["ingest"]).get("Messages", []) == []


def test_rule_and_async_failures_are_invoked_again_with_their_event(aws):
    sqs, urls = aws
    event = {"id": "e-1", "source": "aws.codebuild", "detail-type": "CodeBuild Build State Change"}
    target = "arn:aws:lambda:us-east-1:123456789012:function:stagetrack-aws-ci-events"
    sqs.send_message(QueueUrl=urls["rules-dlq"], MessageBody=json.dumps(event), MessageAttributes={
        "TARGET_ARN": {"DataType": "String", "StringValue": target}})
    sweeper = f"{target[:-13]}timer-sweeper"
    sweep = {"requestContext": {"functionArn": sweeper, "condition": "RetriesExhausted"},
             "requestPayload": {"source": "aws.events"}, "responsePayload": {"errorMessage": "x"}}
    sqs.send_message(QueueUrl=urls["timers-dlq"], MessageBody=json.dumps(sweep))
    lam = FakeLambda()
    tool = replay.Replayer(STACK, sqs=sqs, lam=lam)
    assert tool.replay_queue("rules-dlq").as_dict() == {"replayed": 1, "dropped": 0, "kept": []}
    assert tool.replay_queue("timers-dlq").as_dict() == {"replayed": 0, "dropped": 1, "kept": []}
    assert lam.calls == [(target, event, "Event")]  # the sweep is not replayed
    assert sqs.receive_message(QueueUrl=urls["rules-dlq"]).get("Messages", []) == []


def test_a_dead_lettered_delivery_gets_one_more_attempt(aws):
    sqs, urls = aws
    dead = {"deliveryId": "d1", "subscriptionId": "s1", "eventId": "e1", "eventType": "x", "attempt": 8,
            "payload": "{}", "lastStatus": 500, "lastError": None, "deadLetteredAt": "2026-03-20T17:17:13Z"}
    sqs.send_message(QueueUrl=urls["deliveries-dlq"], MessageBody=json.dumps(dead))
    assert replay.Replayer(STACK, sqs=sqs).replay_queue("deliveries-dlq").replayed == 1
    [message] = sqs.receive_message(QueueUrl=urls["deliveries"])["Messages"]
    assert json.loads(message["Body"]) == {"deliveryId": "d1", "subscriptionId": "s1", "eventId": "e1",
                                           "eventType": "x", "attempt": 9, "payload": "{}"}


def test_stream_failure_records_are_invoked_again_and_deleted_once_they_succeed(aws):
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="failures")
    armer = "arn:aws:lambda:us-east-1:123456789012:function:stagetrack-timer-armer"
    outbox = "arn:aws:lambda:us-east-1:123456789012:function:stagetrack-outbox-publisher"
    batch = {"Records": [{"eventID": "1", "eventName": "INSERT", "dynamodb": {"SequenceNumber": "100"}}]}
    for key, function in (("aws/lambda/a/1", armer), ("aws/lambda/b/1", outbox)):
        s3.put_object(Bucket="failures", Key=key, Body=json.dumps({
            "requestContext": {"functionArn": function, "condition": "RetryAttemptsExhausted"},
            "version": "1.0", "payload": json.dumps(batch)}))
    lam = FakeLambda(failing={outbox})
    report = replay.Replayer(STACK, sqs=aws[0], s3=s3, lam=lam).replay_bucket("failures")
    assert report.replayed == 1 and len(report.kept) == 1 and report.kept[0].startswith("aws/lambda/b/1")
    assert lam.calls == [(armer, batch, "RequestResponse"), (outbox, batch, "RequestResponse")]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="failures")["Contents"]] == ["aws/lambda/b/1"]


def test_the_command_line_reports_and_fails_when_something_is_kept(aws, capsys):
    sqs, urls = aws
    sqs.send_message(QueueUrl=urls["rules-dlq"], MessageBody="{}")  # no TARGET_ARN
    code = replay.main(["rules-dlq"], replayer=lambda stack, dry_run: replay.Replayer(
        stack, sqs=sqs, lam=FakeLambda(), dry_run=dry_run))
    assert code == 1
    out = json.loads(capsys.readouterr().out)
    assert out["source"] == "rules-dlq" and out["replayed"] == 0 and len(out["kept"]) == 1
