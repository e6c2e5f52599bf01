"""Timers (chalicelib/events/timers.py): the timer queue and its dead-letter queue, the timer
state machine (timer_state_machine.asl.json) and its role, and the three timer functions.

- timer_armer   reads the table's stream, starts executions of the state machine for timers due
                within the horizon (``TimerHorizonSeconds``; later ones are the sweeper's),
                and stops the executions of timers a change made stale
- timer_fired   consumes the timer queue; reads a run, writes it back (one transaction of Puts)
- timer_sweeper every minute; queries the activeStages index, reads and writes runs; fires the
                due schedules (their partition of the same index; service/schedules.py): reads
                a schedule and its firing's link, claims a run number, writes run + link, and
                moves the schedule to its next fire time
- the state machine may only send to the timer queue
"""
from __future__ import annotations

import json
from pathlib import Path

from .generate import Arns, Function
from .part_capture import async_failures, bucket_statement, stream_failure_destination

ASL_PATH = Path(__file__).resolve().parent / "timer_state_machine.asl.json"
QUEUE = "TimerQueue"
DLQ = "TimerDeadLetterQueue"
STATE_MACHINE = "TimerStateMachine"
STATE_MACHINE_ROLE = "TimerStateMachineRole"
ACTIVE_INDEX = "activeStages"
HORIZON = "TimerHorizonSeconds"

# load_run + save (TransactWrite of Puts); completing a big run's pending change (its stage
# chunks guarded by a ConditionCheck, deletes, then the intent's removal: store/repository.py)
RUN_READ_WRITE = ["dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
                  "dynamodb:ConditionCheckItem"]
STREAM_READ = ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator",
               "dynamodb:ListStreams"]
QUEUE_CONSUME = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]


def queue_arn(arns: Arns):
    return arns.named("sqs", QUEUE, "timers")


def state_machine_arn(arns: Arns):
    return arns.named("states", STATE_MACHINE, "timers", attribute="", kind="stateMachine:")


def executions_arn(arns: Arns):
    """Every execution of the timer state machine (the armer stops stale ones by name)."""
    return arns.pick(
        {"Fn::Sub": "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:execution:"
                    "${%s.Name}:*" % STATE_MACHINE},
        f"arn:aws:states:*:*:execution:{arns.stack}-timers:*")


def state_machine_definition() -> dict:
    return json.loads(ASL_PATH.read_text())


def render_definition(queue_url: str) -> str:
    """The ASL with its substitution applied, as CloudFormation does (used on moto)."""
    return ASL_PATH.read_text().replace("${TimerQueueUrl}", queue_url)


# A timer ends or times out a stage of an existing run (and so may end an attempt): it creates no
# run, so it never touches a pipeline item (only creating a run does: its counter). A stage that
# ends its run frees the run's concurrency group (service/concurrency.py): the group items.
TIMER_PARTITIONS = ("runs", "attempts", "groups")
# the sweeper's minute tick also fires due schedules, and a firing creates a run
SWEEPER_PARTITIONS = (*TIMER_PARTITIONS, "pipelines", "links", "schedules")


def _armer(arns: Arns) -> list[dict]:
    return [
        {"Sid": "TableStream", "Effect": "Allow", "Action": STREAM_READ, "Resource": [arns.stream()]},
        {"Sid": "StartTimers", "Effect": "Allow", "Action": ["states:StartExecution"],
         "Resource": [state_machine_arn(arns)]},
        {"Sid": "StopStaleTimers", "Effect": "Allow", "Action": ["states:StopExecution"],
         "Resource": [executions_arn(arns)]},
        bucket_statement(arns),
    ]


def _fired(arns: Arns) -> list[dict]:
    return [
        {"Sid": "Runs", "Effect": "Allow", "Action": RUN_READ_WRITE, "Resource": [arns.table()]},
        {"Sid": "TimerQueue", "Effect": "Allow", "Action": QUEUE_CONSUME, "Resource": [queue_arn(arns)]},
        # a stage whose end ends its run frees the run's concurrency group: read the group item
        {"Sid": "Groups", "Effect": "Allow", "Action": ["dynamodb:GetItem"], "Resource": [arns.table()]},
    ]


def _sweeper(arns: Arns) -> list[dict]:
    return [
        {"Sid": "Runs", "Effect": "Allow", "Action": RUN_READ_WRITE, "Resource": [arns.table()]},
        {"Sid": "ActiveIndex", "Effect": "Allow", "Action": ["dynamodb:Query"],
         "Resource": [arns.index(ACTIVE_INDEX)]},
        # the schedule's failed invocations are kept there (EventInvokeConfig, Lambda sends them)
        {"Sid": "FailedSweeps", "Effect": "Allow", "Action": ["sqs:SendMessage"],
         "Resource": [arns.named("sqs", DLQ, "timers-dlq")]},
        # a due schedule: read it and its link, start the run (pipeline counter, run, link), move it on
        {"Sid": "Schedules", "Effect": "Allow", "Action": ["dynamodb:GetItem"], "Resource": [arns.table()]},
    ]


def _armer_properties() -> dict:
    return {
        "Environment": {"Variables": {"STAGETRACK_TIMER_STATE_MACHINE_ARN": {"Ref": STATE_MACHINE},
                                      "STAGETRACK_TIMER_HORIZON_SECONDS": {"Ref": HORIZON}}},
        "Events": {"TimerArmerDynamodbEventSource": {"Properties": {
            "Stream": {"Fn::GetAtt": ["StagetrackTable", "StreamArn"]},
            "MaximumRetryAttempts": 10,
            "BisectBatchOnFunctionError": True,
            # the handler reports the first record it could not arm; Lambda retries from it
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "DestinationConfig": stream_failure_destination(),
            # a stage written (it may need a timer, or make one stale) or removed (its timer is stale)
            "FilterCriteria": {"Filters": [{"Pattern": json.dumps(pattern, separators=(",", ":"))}
                                           for pattern in STAGE_RECORDS]},
        }}},
    }


STAGE_RECORDS = (
    {"eventName": ["INSERT", "MODIFY"], "dynamodb": {"NewImage": {"kind": {"S": ["stage"]}}}},
    {"eventName": ["REMOVE"], "dynamodb": {"OldImage": {"kind": {"S": ["stage"]}}}},
)


def _fired_properties() -> dict:
    return {"Events": {"TimerFiredSqsEventSource": {"Properties": {
        "Queue": {"Fn::GetAtt": [QUEUE, "Arn"]}, "FunctionResponseTypes": ["ReportBatchItemFailures"]}}}}


def _sweeper_properties() -> dict:
    # no retry: the next minute's sweep does the same work; a failed one is kept to be looked at
    return async_failures(DLQ, retries=0)


FUNCTIONS = [
    Function("timer_armer", "TimerArmer", "TimerArmerRole", "timer-armer",
             "policy-timer-armer.json", _armer, _armer_properties, partitions=()),
    Function("timer_fired", "TimerFired", "TimerFiredRole", "timer-fired",
             "policy-timer-fired.json", _fired, _fired_properties, partitions=TIMER_PARTITIONS),
    Function("timer_sweeper", "TimerSweeper", "TimerSweeperRole", "timer-sweeper",
             "policy-timer-sweeper.json", _sweeper, _sweeper_properties, partitions=SWEEPER_PARTITIONS),
]


def resources(arns: Arns) -> dict:
    return {
        DLQ: {"Type": "AWS::SQS::Queue", "Properties": {
            "QueueName": {"Fn::Sub": "${AWS::StackName}-timers-dlq"},
            "MessageRetentionPeriod": 1209600, "SqsManagedSseEnabled": True}},
        QUEUE: {"Type": "AWS::SQS::Queue", "Properties": {
            "QueueName": {"Fn::Sub": "${AWS::StackName}-timers"},
            "VisibilityTimeout": 360,  # six times the handler's 60 s timeout, as Lambda advises
            # four days (SQS's default, stated): a timer message is useful only until the sweeper,
            # every minute, has fired its stage anyway
            "MessageRetentionPeriod": 345600,
            "SqsManagedSseEnabled": True,
            "RedrivePolicy": {"deadLetterTargetArn": {"Fn::GetAtt": [DLQ, "Arn"]}, "maxReceiveCount": 5}}},
        STATE_MACHINE_ROLE: {"Type": "AWS::IAM::Role", "Properties": {
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": "states.amazonaws.com"},
                "Action": "sts:AssumeRole"}]},
            "Policies": [{"PolicyName": "SendTimersOnly", "PolicyDocument": {
                "Version": "2012-10-17", "Statement": [{
                    "Sid": "TimerQueue", "Effect": "Allow", "Action": ["sqs:SendMessage"],
                    "Resource": [queue_arn(arns)]}]}}]}},
        STATE_MACHINE: {"Type": "AWS::StepFunctions::StateMachine", "Properties": {
            "StateMachineName": {"Fn::Sub": "${AWS::StackName}-timers"},
            "StateMachineType": "STANDARD",
            "Definition": state_machine_definition(),
            "DefinitionSubstitutions": {"TimerQueueUrl": {"Ref": QUEUE}},
            "RoleArn": {"Fn::GetAtt": [STATE_MACHINE_ROLE, "Arn"]}}},
    }


def parameters() -> dict:
    return {HORIZON: {
        "Type": "Number", "Default": 3600, "MinValue": 0, "MaxValue": 86400,
        "Description": "A stage timer due within this many seconds of its stage's write waits in a "
                       "Step Functions execution (fires within seconds); a later one is fired by "
                       "the minute sweeper (within a minute). 0: the sweeper fires all. "
                       "docs/deploy.md, Timers at scale"}}


def outputs() -> dict:
    return {"TimerStateMachineArn": {"Value": {"Ref": STATE_MACHINE}},
            "TimerQueueUrl": {"Value": {"Ref": QUEUE}}}
