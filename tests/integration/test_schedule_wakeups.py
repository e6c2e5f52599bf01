"""EventBridge Scheduler on moto (adapters/scheduler.py): the schedules API keeps each
stagetrack schedule's wake-ups in the stack's group — expression, time zone, state, target,
role, input, retry policy, dead-letter queue — through create, patch, disable and delete; and
the firing handler, invoked with the scheduler's payload, creates exactly one run however often
it is invoked and whatever the sweeper does."""
from __future__ import annotations

import json

import boto3
import pytest

from chalicelib.adapters.scheduler import RETRY_POLICY, EventBridgeWakeUps
from chalicelib.domain import schedules as rules
from chalicelib.domain.clock import parse_iso
from chalicelib.events.wakeups import schedule_fired
from chalicelib.service import schedules as service

GROUP = "stagetrack-schedules"
TARGET = "arn:aws:lambda:us-east-1:123456789012:function:stagetrack-schedule-fired"
ROLE = "arn:aws:iam::123456789012:role/stagetrack-ScheduleWakeUpRole-x"
DLQ = "arn:aws:sqs:us-east-1:123456789012:stagetrack-schedules-dlq"


@pytest.fixture
def scheduler(ctx):
    client = boto3.client("scheduler", region_name="us-east-1")
    client.create_schedule_group(Name=GROUP)
    ctx.wakeups = EventBridgeWakeUps(GROUP, TARGET, ROLE, DLQ, "us-east-1", client=client)
    return client


@pytest.fixture
def web(client):
    assert client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]}).status_code == 201


def names(scheduler) -> dict[str, dict]:
    listed = scheduler.list_schedules(GroupName=GROUP)["Schedules"]
    return {s["Name"]: scheduler.get_schedule(GroupName=GROUP, Name=s["Name"]) for s in listed}


def test_the_api_keeps_the_wakeups_of_a_schedule(client, web, scheduler):
    created = client.post("/api/pipelines/web/schedules", {
        "cron": "30 6 * * MON-FRI", "timeZone": "Europe/Paris", "variables": {"ENV": "prod"}})
    assert created.status_code == 201
    schedule_id = created.json["id"]
    first, second = rules.wakeup_names("web", schedule_id)
    found = names(scheduler)
    assert list(found) == [first]
    wakeup = found[first]
    assert wakeup["ScheduleExpression"] == "cron(30 6 ? * 2-6 *)"
    assert wakeup["ScheduleExpressionTimezone"] == "Europe/Paris"
    assert wakeup["State"] == "ENABLED" and wakeup["FlexibleTimeWindow"] == {"Mode": "OFF"}
    target = wakeup["Target"]
    assert (target["Arn"], target["RoleArn"]) == (TARGET, ROLE)
    assert json.loads(target["Input"]) == {"pipeline": "web", "scheduleId": schedule_id,
                                           "scheduledTime": "<aws.scheduler.scheduled-time>"}
    assert target["RetryPolicy"] == RETRY_POLICY and target["DeadLetterConfig"] == {"Arn": DLQ}

    # both day fields: two EventBridge schedules
    patched = client.patch(f"/api/pipelines/web/schedules/{schedule_id}", {"cron": "0 0 13 * FRI"})
    assert patched.status_code == 200
    assert {n: s["ScheduleExpression"] for n, s in names(scheduler).items()} == {
        first: "cron(0 0 13 * ? *)", second: "cron(0 0 ? * 6 *)"}
    client.patch(f"/api/pipelines/web/schedules/{schedule_id}", {"enabled": False})
    assert {s["State"] for s in names(scheduler).values()} == {"DISABLED"}
    # EventBridge cannot say it: no wake-up, the sweeper fires it
    client.patch(f"/api/pipelines/web/schedules/{schedule_id}", {"cron": "0 0 */2 * MON", "enabled": True})
    assert names(scheduler) == {}
    client.patch(f"/api/pipelines/web/schedules/{schedule_id}", {"cron": "@daily", "timeZone": "UTC"})
    assert {n: (s["ScheduleExpression"], s["ScheduleExpressionTimezone"], s["State"])
            for n, s in names(scheduler).items()} == {first: ("cron(0 0 * * ? *)", "UTC", "ENABLED")}
    assert client.delete(f"/api/pipelines/web/schedules/{schedule_id}").status_code == 200
    assert names(scheduler) == {}


def test_an_eventbridge_failure_answers_201_and_the_next_change_heals_it(client, web, scheduler, ctx):
    wakeups = ctx.wakeups
    ctx.wakeups = EventBridgeWakeUps("no-such-group", TARGET, ROLE, DLQ, "us-east-1", client=scheduler)
    created = client.post("/api/pipelines/web/schedules", {"cron": "*/5 * * * *"})
    assert created.status_code == 201 and names(scheduler) == {}  # stored; EventBridge refused
    ctx.wakeups = wakeups
    client.patch(f"/api/pipelines/web/schedules/{created.json['id']}", {"description": "nightly"})
    first, _ = rules.wakeup_names("web", created.json["id"])
    assert names(scheduler)[first]["ScheduleExpression"] == "cron(0/5 * * * ? *)"  # update -> create


def test_the_firing_handler_creates_one_run_however_often_invoked(client, web, scheduler, ctx, clock):
    schedule_id = client.post("/api/pipelines/web/schedules", {"cron": "*/5 * * * *"}).json["id"]
    due = service.get(ctx, "web", schedule_id).next_fire_at
    wakeup = names(scheduler)[rules.wakeup_names("web", schedule_id)[0]]
    payload = json.loads(wakeup["Target"]["Input"].replace(
        "<aws.scheduler.scheduled-time>", due.strftime("%Y-%m-%dT%H:%M:%SZ")))
    clock.set(due)
    clock.advance(0.4)
    outcomes = [schedule_fired(payload, None)["outcome"] for _ in range(3)]
    assert outcomes == [service.CREATED, service.STALE, service.STALE]
    clock.advance(300)  # the sweeper, well past the grace, and the next wake-up's retry of this one
    assert service.fire_due(ctx).outcomes.get(service.CREATED, 0) == 0
    listed = client.get("/api/runs?pipeline=web").json["items"]
    scheduled = [r for r in listed if r.get("source") == "schedule"]
    assert len(scheduled) == 1
    assert service.get(ctx, "web", schedule_id).last_fired_at == parse_iso(payload["scheduledTime"])


def test_the_apis_eventbridge_calls_fit_its_time_budget(aws):
    """1 s connect, 2 s read, 2 attempts in all (docs/deploy.md, Timeout budget)."""
    config = EventBridgeWakeUps(GROUP, TARGET, ROLE, DLQ, "us-east-1").client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (1.0, 2.0)
    assert config.retries == {"mode": "standard", "total_max_attempts": 2}
