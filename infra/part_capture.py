"""Failure capture that keeps the data (issue 16 item 5).

- ``StreamFailureBucket``: the on-failure destination of both stream consumers (outbox
  publisher, timer armer). A batch that still fails after its retries is written there by
  Lambda as one object holding the whole invocation record (the stream records themselves,
  not just their shard positions as an SQS destination would), so it outlives the stream's
  24 h. SSE-S3 encrypted, public access blocked, TLS only, objects expire after
  ``FailureRecordDays``. Every new object notifies ``StreamFailureQueue`` (a ``-failures``
  queue: part_watch.py alarms on it), which is what pages; ``python -m tools.replay
  stream-failures`` replays the objects (docs/runbook.md).
- ``EventRuleDeadLetterQueue``: every EventBridge rule target (the CodePipeline/CodeBuild rule,
  the sweeper's schedule) gets it as ``DeadLetterConfig`` with a ``RetryPolicy``; its queue
  policy admits only this stack's rules.
- Asynchronously invoked functions (EventBridge, SNS, the schedule) get an
  ``EventInvokeConfig`` on-failure destination (the full request payload is kept).
"""
from __future__ import annotations

from .generate import Arns, Function

FUNCTIONS: list[Function] = []
BUCKET = "StreamFailureBucket"
NOTICES = "StreamFailureQueue"
NOTICES_POLICY = "StreamFailureQueuePolicy"
RULES_DLQ = "EventRuleDeadLetterQueue"
RULES_DLQ_POLICY = "EventRuleDeadLetterQueuePolicy"
EXPIRY = "FailureRecordDays"
KEEP = 1209600  # 14 days, the most SQS keeps
# EventBridge: retry a target for up to an hour, 20 times at most, then dead-letter the event
RULE_RETRY = {"MaximumRetryAttempts": 20, "MaximumEventAgeInSeconds": 3600}
# chalice's event names for the rule targets: function logical id -> event key
RULE_EVENTS = {"AwsCiEvents": "AwsCiEventsEvent", "TimerSweeper": "TimerSweeperEvent",
               "InsightsExport": "InsightsExportEvent"}
BUCKET_WRITE = ["s3:PutObject", "s3:ListBucket"]  # what Lambda needs to write an S3 destination


def bucket_arn(arns: Arns):
    return arns.pick({"Fn::GetAtt": [BUCKET, "Arn"]}, "arn:aws:s3:::*-stream-failures-*")


def bucket_statement(arns: Arns) -> dict:
    """The stream consumer's role: Lambda writes the failure record with it."""
    arn = bucket_arn(arns)
    objects = arns.pick({"Fn::Sub": "${%s.Arn}/*" % BUCKET}, "arn:aws:s3:::*-stream-failures-*/*")
    return {"Sid": "StreamFailureRecords", "Effect": "Allow", "Action": BUCKET_WRITE,
            "Resource": [arn, objects]}


def stream_failure_destination() -> dict:
    """An S3 bucket destination: no SAM ``Type`` (its SQS/SNS types would add policies)."""
    return {"OnFailure": {"Destination": {"Fn::GetAtt": [BUCKET, "Arn"]}}}


def async_failures(queue_logical: str, retries: int = 2) -> dict:
    """Asynchronous invocations that fail after ``retries`` go to the queue with their payload."""
    return {"EventInvokeConfig": {"MaximumRetryAttempts": retries, "DestinationConfig": {
        "OnFailure": {"Type": "SQS", "Destination": {"Fn::GetAtt": [queue_logical, "Arn"]}}}}}


def parameters() -> dict:
    return {EXPIRY: {"Type": "Number", "Default": 90, "MinValue": 1, "MaxValue": 3650,
                     "Description": "Days the stream failure bucket keeps a failed batch's record"}}


def _queue(suffix: str) -> dict:
    return {"Type": "AWS::SQS::Queue", "Properties": {
        "QueueName": {"Fn::Sub": "${AWS::StackName}-%s" % suffix},
        "MessageRetentionPeriod": KEEP, "SqsManagedSseEnabled": True}}


def _queue_policy(queue: str, sid: str, service: str, condition: dict) -> dict:
    return {"Type": "AWS::SQS::QueuePolicy", "Properties": {
        "Queues": [{"Ref": queue}],
        "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
            "Sid": sid, "Effect": "Allow", "Principal": {"Service": service},
            "Action": "sqs:SendMessage", "Resource": {"Fn::GetAtt": [queue, "Arn"]},
            "Condition": condition}]}}}


def resources(arns: Arns) -> dict:
    rule_target = {"DeadLetterConfig": {"Arn": {"Fn::GetAtt": [RULES_DLQ, "Arn"]}},
                   "RetryPolicy": dict(RULE_RETRY)}
    made: dict = {
        NOTICES: _queue("stream-failures"),
        NOTICES_POLICY: _queue_policy(NOTICES, "BucketNotices", "s3.amazonaws.com", {
            "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}),
        BUCKET: {
            "Type": "AWS::S3::Bucket",
            # failure records are evidence: a deleted stack keeps them (they expire on their own)
            "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain",
            "DependsOn": [NOTICES_POLICY],
            "Properties": {
                "BucketEncryption": {"ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
                "PublicAccessBlockConfiguration": {
                    "BlockPublicAcls": True, "BlockPublicPolicy": True,
                    "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
                "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                "VersioningConfiguration": {"Status": "Enabled"},
                "LifecycleConfiguration": {"Rules": [{
                    "Id": "ExpireFailureRecords", "Status": "Enabled",
                    "ExpirationInDays": {"Ref": EXPIRY},
                    "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}]},
                "NotificationConfiguration": {"QueueConfigurations": [{
                    "Event": "s3:ObjectCreated:*", "Queue": {"Fn::GetAtt": [NOTICES, "Arn"]}}]},
            },
        },
        "StreamFailureBucketPolicy": {"Type": "AWS::S3::BucketPolicy", "Properties": {
            "Bucket": {"Ref": BUCKET},
            "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                "Resource": [{"Fn::GetAtt": [BUCKET, "Arn"]}, {"Fn::Sub": "${%s.Arn}/*" % BUCKET}],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}}},
        RULES_DLQ: _queue("rules-dlq"),
        RULES_DLQ_POLICY: _queue_policy(RULES_DLQ, "StackRules", "events.amazonaws.com", {
            "ArnLike": {"aws:SourceArn": {"Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:"
                                                     "${AWS::AccountId}:rule/${AWS::StackName}-*"}}}),
    }
    for function, event in RULE_EVENTS.items():
        made[function] = {"Properties": {"Events": {event: {"Properties": rule_target}}}}
    return made


def outputs() -> dict:
    return {"StreamFailureBucketName": {"Value": {"Ref": BUCKET}},
            "StreamFailureQueueUrl": {"Value": {"Ref": NOTICES}},
            "EventRuleDeadLetterQueueUrl": {"Value": {"Ref": RULES_DLQ}}}
