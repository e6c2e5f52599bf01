"""EventBridge Scheduler schedules that wake the ``schedule_fired`` function at a stagetrack
schedule's fire times (the ``ScheduleWakeUps`` port, service/ports.py).

Each wake-up is one schedule in the stack's schedule group (infra/part_schedules.py):
``cron(...)`` with the schedule's IANA time zone, ``FlexibleTimeWindow`` OFF (fired at the
minute, not spread over a window), state ENABLED or DISABLED with the stagetrack schedule, and a
target: the firing function, invoked through the stack's scheduler role, with the input
``{"pipeline", "scheduleId", "scheduledTime": <aws.scheduler.scheduled-time>}``, a retry policy
and the scheduler dead-letter queue. ``MemoryWakeUps`` is its twin for the unit tier.
"""
from __future__ import annotations

import json

from ..domain.schedules import WakeUp

SCHEDULED_TIME = "<aws.scheduler.scheduled-time>"  # EventBridge puts the fire time's instant here
# EventBridge retries a wake-up it could not deliver (Lambda throttled or unavailable) for up to
# 15 minutes, then dead-letters it. Past the sweeper's 2 minute grace a retry usually finds the
# firing done (stale, nothing happens); retrying longer than that only delays the dead letter.
RETRY_POLICY = {"MaximumRetryAttempts": 10, "MaximumEventAgeInSeconds": 900}
# The API calls EventBridge inside its 25 s (docs/deploy.md, Timeout budget): a stalled call
# fails after 2 attempts x (1 s + 2 s) plus one backoff of at most 1 s, about 7 s, and the first
# failure ends the schedule's follow-up (service/schedules.py), so one request waits on at most
# one such call. botocore's defaults (60 s, 60 s, 3 attempts) would outlast API Gateway's 29 s.
CLIENT_LIMITS = {"connect_timeout": 1.0, "read_timeout": 2.0, "max_attempts": 2}


def wakeup_input(wakeup: WakeUp) -> str:
    return json.dumps({"pipeline": wakeup.pipeline, "scheduleId": wakeup.schedule_id,
                       "scheduledTime": SCHEDULED_TIME}, separators=(",", ":"))


class EventBridgeWakeUps:
    """The wake-ups on EventBridge Scheduler (boto3 ``scheduler``), in ``group``."""

    fires = True

    def __init__(self, group: str, target_arn: str | None, role_arn: str | None, dlq_arn: str | None,
                 region: str | None = None, client=None) -> None:
        self.group = group
        self.target_arn = target_arn
        self.role_arn = role_arn
        self.dlq_arn = dlq_arn
        self.region = region
        self._client = client

    @property
    def client(self):
        if self._client is None:
            from .aws import client

            self._client = client("scheduler", self.region, **CLIENT_LIMITS)
        return self._client

    def request(self, wakeup: WakeUp) -> dict:
        """CreateSchedule/UpdateSchedule's parameters (an update replaces every one of them)."""
        if not self.target_arn or not self.role_arn:
            raise RuntimeError("STAGETRACK_SCHEDULE_TARGET_ARN and STAGETRACK_SCHEDULE_ROLE_ARN must be set "
                               "to create EventBridge schedules")
        target: dict = {"Arn": self.target_arn, "RoleArn": self.role_arn, "Input": wakeup_input(wakeup),
                        "RetryPolicy": dict(RETRY_POLICY)}
        if self.dlq_arn:
            target["DeadLetterConfig"] = {"Arn": self.dlq_arn}
        return {"Name": wakeup.name, "GroupName": self.group, "ScheduleExpression": wakeup.expression,
                "ScheduleExpressionTimezone": wakeup.time_zone, "FlexibleTimeWindow": {"Mode": "OFF"},
                "State": "ENABLED" if wakeup.enabled else "DISABLED",
                "Description": f"stagetrack schedule {wakeup.schedule_id} of pipeline {wakeup.pipeline}",
                "Target": target}

    def put(self, wakeup: WakeUp, *, new: bool) -> None:
        request = self.request(wakeup)
        errors = self.client.exceptions
        if new:
            try:
                self.client.create_schedule(**request)
                return
            except errors.ConflictException:  # it exists (a retried create): replace it
                pass
            self.client.update_schedule(**request)
            return
        try:
            self.client.update_schedule(**request)
        except errors.ResourceNotFoundException:  # never created (inexpressible before, or a failed call)
            self.client.create_schedule(**request)

    def remove(self, name: str) -> None:
        try:
            self.client.delete_schedule(Name=name, GroupName=self.group)
        except self.client.exceptions.ResourceNotFoundException:
            pass


class MemoryWakeUps:
    """The unit tier's twin: the wake-ups by name, each call recorded; ``failing`` makes every
    call raise (an EventBridge outage)."""

    def __init__(self, fires: bool = True) -> None:
        self.fires = fires
        self.wakeups: dict[str, WakeUp] = {}
        self.calls: list[tuple[str, str]] = []
        self.failing: Exception | None = None

    def put(self, wakeup: WakeUp, *, new: bool) -> None:
        self.calls.append(("put", wakeup.name))
        if self.failing is not None:
            raise self.failing
        self.wakeups[wakeup.name] = wakeup

    def remove(self, name: str) -> None:
        self.calls.append(("remove", name))
        if self.failing is not None:
            raise self.failing
        self.wakeups.pop(name, None)


def from_settings(settings) -> EventBridgeWakeUps | None:
    """None without a schedule group (`make run`, tests): the minute tick fires every schedule."""
    if not settings.schedule_group:
        return None
    return EventBridgeWakeUps(settings.schedule_group, settings.schedule_target_arn,
                              settings.schedule_role_arn, settings.schedule_dlq_arn, settings.region)
