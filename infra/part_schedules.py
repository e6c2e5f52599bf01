"""Schedules on EventBridge Scheduler (issue 15 item 4; service/schedules.py, adapters/scheduler.py).

- ``ScheduleGroup``            the group every wake-up lives in (``<stack>-schedules``); the API
                               creates, updates and deletes schedules in it only
- ``ScheduleWakeUpRole``       the role EventBridge Scheduler assumes to invoke a wake-up's
                               target: only ``scheduler.amazonaws.com``, for this account's
                               schedule group; it may invoke the firing function and dead-letter
                               into the queue below, nothing else
- ``ScheduleWakeUpDeadLetterQueue`` (``-schedules-dlq``) a wake-up EventBridge could not deliver
                               after its retry policy, and a firing that failed after Lambda's two
                               asynchronous retries (alarmed by part_watch.py, docs/runbook.md)
- ``schedule_fired``           the firing function: reads the schedule and its firing's link,
                               claims a run number, writes run + link, moves the schedule on;
                               deletes the wake-ups of a deleted schedule (its delete's
                               EventBridge call failed) when one of them wakes it
- the API gets the group, the function's and the role's ARNs and the queue's ARN in its
  environment, and may pass the role to EventBridge Scheduler only; the sweeper gets the group
  (so it waits the grace before backing a wake-up up)
"""
from __future__ import annotations

from .generate import Arns, Function
from .part_capture import async_failures
from .part_timers import SWEEPER_PARTITIONS

GROUP = "ScheduleGroup"
ROLE = "ScheduleWakeUpRole"
DLQ = "ScheduleWakeUpDeadLetterQueue"
FIRED = "ScheduleFired"
SWEEPER = "TimerSweeper"
API = "APIHandler"
SCHEDULER = "scheduler.amazonaws.com"
SCHEDULE_WRITE = ["scheduler:CreateSchedule", "scheduler:UpdateSchedule", "scheduler:DeleteSchedule"]
# a firing: read the schedule and its link, claim the pipeline's next number, write the run, its
# stages and the link in one transaction (in its concurrency group, if any), move the schedule on
FIRING = ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem",
          "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem"]


def group_name():
    return {"Fn::Sub": "${AWS::StackName}-schedules"}


def schedules_arn(arns: Arns):
    """Every schedule of the stack's group (schedule/<group>/<name>)."""
    return arns.pick({"Fn::Sub": "arn:${AWS::Partition}:scheduler:${AWS::Region}:${AWS::AccountId}:schedule/"
                                 "${%s}/*" % GROUP},
                     f"arn:aws:scheduler:*:*:schedule/{arns.stack}-schedules/*")


def role_arn(arns: Arns):
    return arns.pick({"Fn::GetAtt": [ROLE, "Arn"]}, f"arn:aws:iam::*:role/{arns.stack}-{ROLE}-*")


def dlq_arn(arns: Arns):
    return arns.named("sqs", DLQ, "schedules-dlq")


def function_arn(arns: Arns):
    return arns.pick({"Fn::GetAtt": [FIRED, "Arn"]},
                     f"arn:aws:lambda:*:*:function:{arns.stack}-schedule-fired")


def api_statements(arns: Arns) -> list[dict]:
    """Added to the API's policy (generate.py): keep a schedule's wake-ups, in the group only,
    passing the wake-up role to EventBridge Scheduler only."""
    return [
        {"Sid": "ScheduleWakeUps", "Effect": "Allow", "Action": list(SCHEDULE_WRITE),
         "Resource": [schedules_arn(arns)]},
        {"Sid": "PassWakeUpRole", "Effect": "Allow", "Action": ["iam:PassRole"], "Resource": [role_arn(arns)],
         "Condition": {"StringEquals": {"iam:PassedToService": SCHEDULER}}},
    ]


def _fired(arns: Arns) -> list[dict]:
    return [
        {"Sid": "Firings", "Effect": "Allow", "Action": list(FIRING), "Resource": [arns.table()]},
        # a firing that fails after Lambda's asynchronous retries is kept there (EventInvokeConfig)
        {"Sid": "FailedFirings", "Effect": "Allow", "Action": ["sqs:SendMessage"],
         "Resource": [dlq_arn(arns)]},
        # a wake-up of a deleted schedule (the delete's EventBridge call failed) removes itself
        {"Sid": "RemoveOrphanWakeUps", "Effect": "Allow", "Action": ["scheduler:DeleteSchedule"],
         "Resource": [schedules_arn(arns)]},
    ]


def _fired_properties() -> dict:
    return async_failures(DLQ, retries=2)


FUNCTIONS = [
    Function("schedule_fired", FIRED, "ScheduleFiredRole", "schedule-fired", "policy-schedule-fired.json",
             _fired, _fired_properties, partitions=SWEEPER_PARTITIONS),
]


def resources(arns: Arns) -> dict:
    group_arn = {"Fn::GetAtt": [GROUP, "Arn"]}
    return {
        GROUP: {"Type": "AWS::Scheduler::ScheduleGroup", "Properties": {"Name": group_name()}},
        DLQ: {"Type": "AWS::SQS::Queue", "Properties": {
            "QueueName": {"Fn::Sub": "${AWS::StackName}-schedules-dlq"},
            "MessageRetentionPeriod": 1209600, "SqsManagedSseEnabled": True}},
        ROLE: {"Type": "AWS::IAM::Role", "Properties": {
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": SCHEDULER}, "Action": "sts:AssumeRole",
                # only this account's schedules, in this stack's group (confused deputy)
                "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
                              "ArnEquals": {"aws:SourceArn": group_arn}}}]},
            "Policies": [{"PolicyName": "InvokeTheFiringFunctionOnly", "PolicyDocument": {
                "Version": "2012-10-17", "Statement": [
                    {"Sid": "FiringFunction", "Effect": "Allow", "Action": ["lambda:InvokeFunction"],
                     "Resource": [function_arn(arns)]},
                    # EventBridge Scheduler sends a wake-up it could not deliver with this role
                    {"Sid": "DeadLetters", "Effect": "Allow", "Action": ["sqs:SendMessage"],
                     "Resource": [dlq_arn(arns)]}]}}]}},
        API: {"Properties": {"Environment": {"Variables": {
            "STAGETRACK_SCHEDULE_GROUP": {"Ref": GROUP},
            "STAGETRACK_SCHEDULE_TARGET_ARN": function_arn(arns),
            "STAGETRACK_SCHEDULE_ROLE_ARN": role_arn(arns),
            "STAGETRACK_SCHEDULE_DLQ_ARN": dlq_arn(arns)}}}},
        SWEEPER: {"Properties": {"Environment": {"Variables": {
            "STAGETRACK_SCHEDULE_GROUP": {"Ref": GROUP}}}}},
        FIRED: {"Properties": {"Environment": {"Variables": {
            "STAGETRACK_SCHEDULE_GROUP": {"Ref": GROUP}}}}},
    }


def outputs() -> dict:
    return {"ScheduleGroupName": {"Value": {"Ref": GROUP}},
            "ScheduleDeadLetterQueueUrl": {"Value": {"Ref": DLQ}}}
