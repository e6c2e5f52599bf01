"""Events in and out (chalicelib/events/inbound.py, outbound.py): the EventBridge bus stagetrack
publishes to, the ingest queue and topic, the delivery queue, their dead-letter queues, the
stream consumer's failure queue, the five functions, and the secret key the API and the
delivery worker seal and open webhook secrets with.

- aws_ci_events     EventBridge rule (chalice's, default bus): CodePipeline and CodeBuild state
                    changes; applies them (DynamoDB), dead-letters what can never apply
- ingest_queue      the ingest queue (ReportBatchItemFailures); same writes
- ingest_topic      the ingest topic; same writes
- outbox_publisher  the table's stream (second and last consumer, filtered to runs and
                    stages); reads the subscriptions, puts events on the bus, queues
                    deliveries; then adds what finished to the insights aggregates (their day
                    items, pipeline state and per-run markers: Query, GetItem, and a
                    transaction of Puts and Updates); writes the expectations of started
                    stages (GetItem and UpdateItem of that stage); then applies run retention
                    (part_retention.py: its own statement, on run and attempt items only);
                    a batch failing after its retries is kept whole in the stream failure
                    bucket (part_capture.py)
- deliver_webhooks  the delivery queue (ReportBatchItemFailures); reads its subscription,
                    records the attempt, queues the retry or dead-letters it
"""
from __future__ import annotations

import json

from . import part_retention
from .generate import KEY_SECRET, PEPPER_SECRET, RUN_PARTITIONS, Arns, Function
from .part_capture import async_failures, bucket_statement, stream_failure_destination

BUS = "StagetrackEventBus"
INGEST_QUEUE = "IngestMessageQueue"
INGEST_TOPIC = "IngestMessageTopic"
INGEST_DLQ = "IngestDeadLetterQueue"
DELIVERY_QUEUE = "DeliveryQueue"
DELIVERY_DLQ = "DeliveryDeadLetterQueue"
FUNCTION_TIMEOUT = 60  # .chalice/config.json lambda_timeout of the queue consumers
VISIBILITY_TIMEOUT = 6 * FUNCTION_TIMEOUT  # as Lambda advises for SQS event sources
MAX_RECEIVES = 5

# What applying an external event does to the table: the delivery claim (PutItem, then
# UpdateItem; DeleteItem to release it; GetItem to replay it), the link (GetItem), a run number
# (UpdateItem), a run with its link (TransactWrite of Puts), load and save a run (Query, Puts),
# a change of one stage (BatchGetItem of it and its run item; GetItem/UpdateItem to settle).
APPLY = [
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:ConditionCheckItem",
]  # the last: big runs' chunks (store/repository.py)
STREAM_READ = ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator",
               "dynamodb:ListStreams"]
QUEUE_CONSUME = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]
SEND = ["sqs:SendMessage"]


def _queue(arns: Arns, logical: str, suffix: str):
    return arns.named("sqs", logical, suffix)


def ingest_dlq(arns: Arns):
    return _queue(arns, INGEST_DLQ, "ingest-dlq")


def _apply(arns: Arns) -> list[dict]:
    return [
        {"Sid": "ApplyUpdates", "Effect": "Allow", "Action": APPLY, "Resource": [arns.table()]},
        {"Sid": "DeadLetters", "Effect": "Allow", "Action": SEND, "Resource": [ingest_dlq(arns)]},
    ]


def _aws_ci_events(arns: Arns) -> list[dict]:
    return _apply(arns)


def _ingest_queue(arns: Arns) -> list[dict]:
    return _apply(arns) + [{"Sid": "IngestQueue", "Effect": "Allow", "Action": QUEUE_CONSUME,
                            "Resource": [_queue(arns, INGEST_QUEUE, "ingest")]}]


def _ingest_topic(arns: Arns) -> list[dict]:
    return _apply(arns)


# What publishing and the insights reach; run retention's items are its statement's alone.
OUTBOX_PARTITIONS = ("subscriptions", "insights", "insight_marks")


def _outbox(arns: Arns) -> list[dict]:
    return [
        {"Sid": "TableStream", "Effect": "Allow", "Action": STREAM_READ, "Resource": [arns.stream()]},
        {"Sid": "Subscriptions", "Effect": "Allow", "Action": ["dynamodb:Query"], "Resource": [arns.table()],
         "Partitions": OUTBOX_PARTITIONS},
        # the insights aggregates (store/insights.py): only their partitions
        {"Sid": "Insights", "Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:PutItem",
                                                         "dynamodb:UpdateItem"],
         "Resource": [arns.table()], "Partitions": OUTBOX_PARTITIONS},
        # the expectations of started stages (service/overruns.py): read a stage, update it
        {"Sid": "StageExpectations", "Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:UpdateItem"],
         "Resource": [arns.table()], "Partitions": ("runs",)},
        part_retention.statement(arns),
        {
            "Sid": "PublishEvents",
            "Effect": "Allow",
            "Action": ["events:PutEvents"],
            "Resource": [arns.named("events", BUS, "events", kind="event-bus/")],
        },
        {
            "Sid": "QueueDeliveries",
            "Effect": "Allow",
            "Action": SEND,
            "Resource": [_queue(arns, DELIVERY_QUEUE, "deliveries")],
        },
        bucket_statement(arns),
    ]


def _deliver(arns: Arns) -> list[dict]:
    deliveries = _queue(arns, DELIVERY_QUEUE, "deliveries")
    return [
        {
            "Sid": "SubscriptionsAndAttempts",
            "Effect": "Allow",
            "Action": ["dynamodb:GetItem", "dynamodb:PutItem"],
            "Resource": [arns.table()],
        },
        {"Sid": "DeliveryQueue", "Effect": "Allow", "Action": QUEUE_CONSUME, "Resource": [deliveries]},
        {
            "Sid": "RetriesAndDeadLetters",
            "Effect": "Allow",
            "Action": SEND,
            "Resource": [deliveries, _queue(arns, DELIVERY_DLQ, "deliveries-dlq")],
        },
    ]


def _pepper() -> dict:
    return {"STAGETRACK_INGEST_DLQ_URL": {"Ref": INGEST_DLQ}}


def _async_failures() -> dict:
    """SNS and EventBridge invoke asynchronously: after Lambda's retries, the event is kept
    (an on-failure destination: the request payload with the error, python -m tools.replay)."""
    return async_failures(INGEST_DLQ)


def _aws_ci_properties() -> dict:
    return {"Environment": {"Variables": _pepper()}, **_async_failures()}


def _ingest_queue_properties() -> dict:
    return {"Environment": {"Variables": _pepper()},
            "Events": {"IngestQueueSqsEventSource": {"Properties": {
                "Queue": {"Fn::GetAtt": [INGEST_QUEUE, "Arn"]},
                "FunctionResponseTypes": ["ReportBatchItemFailures"]}}}}


def _ingest_topic_properties() -> dict:
    return {"Environment": {"Variables": _pepper()}, **_async_failures(),
            "Events": {"IngestTopicSnsSubscription": {"Properties": {"Topic": {"Ref": INGEST_TOPIC}}}}}


def _outbox_properties() -> dict:
    def kind_is(image: str) -> str:
        return json.dumps({"dynamodb": {image: {"kind": {"S": ["run", "stage"]}}}}, separators=(",", ":"))

    return {
        "Environment": {
            "Variables": {
                "STAGETRACK_EVENT_BUS": {"Ref": BUS},
                "STAGETRACK_DELIVERY_QUEUE_URL": {"Ref": DELIVERY_QUEUE},
                **part_retention.variables(),
            }
        },
        "Events": {
            "OutboxPublisherDynamodbEventSource": {
                "Properties": {
                    "Stream": {"Fn::GetAtt": ["StagetrackTable", "StreamArn"]},
                    "MaximumRetryAttempts": 10,
                    "BisectBatchOnFunctionError": True,
                    # runs and stages only: inserted/modified (new image) or removed (old image);
                    # this passes every run record retention needs (a finished run, a run with
                    # an expiry, a run the TTL removed), so no narrower pattern may replace it
                    "FilterCriteria": {
                        "Filters": [{"Pattern": kind_is("NewImage")}, {"Pattern": kind_is("OldImage")}]
                    },
                    # no ReportBatchItemFailures: a failure here is the bus or the queue refusing
                    # the whole batch (events/outbound.py), so the batch is retried, bisected
                    "DestinationConfig": stream_failure_destination(),
                }
            }
        },
    }


def _deliver_properties() -> dict:
    return {
        "Environment": {"Variables": {"STAGETRACK_DELIVERY_QUEUE_URL": {"Ref": DELIVERY_QUEUE},
                                      "STAGETRACK_DELIVERY_DLQ_URL": {"Ref": DELIVERY_DLQ}}},
        "Events": {"DeliverWebhooksSqsEventSource": {"Properties": {
            "Queue": {"Fn::GetAtt": [DELIVERY_QUEUE, "Arn"]},
            "FunctionResponseTypes": ["ReportBatchItemFailures"]}}},
    }


FUNCTIONS = [
    Function("aws_ci_events", "AwsCiEvents", "AwsCiEventsRole", "aws-ci-events",
             "policy-aws-ci-events.json", _aws_ci_events, _aws_ci_properties,
             partitions=(*RUN_PARTITIONS, "idempotency", "links"), secrets=(PEPPER_SECRET,)),
    Function("ingest_queue", "IngestQueue", "IngestQueueRole", "ingest-queue",
             "policy-ingest-queue.json", _ingest_queue, _ingest_queue_properties,
             partitions=(*RUN_PARTITIONS, "idempotency", "links"), secrets=(PEPPER_SECRET,)),
    Function("ingest_topic", "IngestTopic", "IngestTopicRole", "ingest-topic",
             "policy-ingest-topic.json", _ingest_topic, _ingest_topic_properties,
             partitions=(*RUN_PARTITIONS, "idempotency", "links"), secrets=(PEPPER_SECRET,)),
    Function("outbox_publisher", "OutboxPublisher", "OutboxPublisherRole", "outbox-publisher",
             "policy-outbox-publisher.json", _outbox, _outbox_properties,
             partitions=(*OUTBOX_PARTITIONS, *part_retention.RETENTION_PARTITIONS)),
    Function("deliver_webhooks", "DeliverWebhooks", "DeliverWebhooksRole", "deliver-webhooks",
             "policy-deliver-webhooks.json", _deliver, _deliver_properties,
             partitions=("subscriptions", "deliveries"), secrets=(KEY_SECRET,)),
]


def _sqs(suffix: str, **properties) -> dict:
    return {
        "Type": "AWS::SQS::Queue",
        "Properties": {
            "QueueName": {"Fn::Sub": "${AWS::StackName}-%s" % suffix},
            "SqsManagedSseEnabled": True,
            **properties,
        },
    }


def _redrive(dlq: str) -> dict:
    return {"deadLetterTargetArn": {"Fn::GetAtt": [dlq, "Arn"]}, "maxReceiveCount": MAX_RECEIVES}


def resources(arns: Arns) -> dict:
    keep = {"MessageRetentionPeriod": 1209600}  # 14 days, the most SQS keeps
    return {
        BUS: {
            "Type": "AWS::Events::EventBus",
            "Properties": {"Name": {"Fn::Sub": "${AWS::StackName}-events"}},
        },
        INGEST_DLQ: _sqs("ingest-dlq", **keep),
        INGEST_QUEUE: _sqs(
            "ingest", VisibilityTimeout=VISIBILITY_TIMEOUT, **keep, RedrivePolicy=_redrive(INGEST_DLQ)
        ),
        INGEST_TOPIC: {
            "Type": "AWS::SNS::Topic",
            "Properties": {
                "TopicName": {"Fn::Sub": "${AWS::StackName}-ingest"},
                "KmsMasterKeyId": "alias/aws/sns",
            },
        },
        DELIVERY_DLQ: _sqs("deliveries-dlq", **keep),
        DELIVERY_QUEUE: _sqs(
            "deliveries", VisibilityTimeout=VISIBILITY_TIMEOUT, **keep, RedrivePolicy=_redrive(DELIVERY_DLQ)
        ),
    }


def outputs() -> dict:
    return {
        "EventBusName": {"Value": {"Ref": BUS}},
        "IngestQueueUrl": {"Value": {"Ref": INGEST_QUEUE}},
        "IngestTopicArn": {"Value": {"Ref": INGEST_TOPIC}},
        "IngestDeadLetterQueueUrl": {"Value": {"Ref": INGEST_DLQ}},
        "DeliveryDeadLetterQueueUrl": {"Value": {"Ref": DELIVERY_DLQ}},
    }
