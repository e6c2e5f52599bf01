"""EventBridge wake-ups follow the stored schedule through the port (service/schedules.py
``_follow``, adapters/scheduler.py ``MemoryWakeUps``), a failing EventBridge loses nothing, a
wake-up fires only what the store says is due, and the sweeper backs EventBridge up after a
grace (injected clock, no sleeps)."""
from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest

from chalicelib import wiring
from chalicelib.adapters.scheduler import MemoryWakeUps
from chalicelib.domain import schedules as rules
from chalicelib.domain.clock import parse_iso
from chalicelib.domain.schemas import CreateRunIn, CreateScheduleIn, PatchScheduleIn
from chalicelib.events.wakeups import schedule_fired
from chalicelib.service import runs
from chalicelib.service import schedules as service
from chalicelib.settings import Settings
from chalicelib.ticker import minute_tick
from tests.fixtures.clock import FakeClock


class Counted:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def count(self, name, value=1, dimensions=None):
        self.counts[name] = self.counts.get(name, 0) + value


@pytest.fixture
def clock():
    return FakeClock("2026-03-20T10:00:30.000Z")


@pytest.fixture
def wakeups():
    return MemoryWakeUps()


@pytest.fixture
def ctx(clock, wakeups):
    context = wiring.memory_context(Settings(table_name="unused", region="us-east-1"), clock)
    context.wakeups = wakeups
    context.metrics = Counted()
    runs.create_run(context, CreateRunIn.model_validate_json('{"pipeline": "web", "stages": ["BUILD"]}'),
                    actor="alice")
    wiring.override(context)  # the handler's context
    yield context
    wiring.override(None)


def create(ctx, **body):
    body = {"cron": "*/5 * * * *", **body}
    return service.create(ctx, "web", CreateScheduleIn.model_validate_json(json.dumps(body)), actor="alice")


def patch(ctx, schedule, **body):
    return service.change(ctx, "web", schedule.id, PatchScheduleIn.model_validate_json(json.dumps(body)))


def scheduled_runs(ctx):
    found, _ = ctx.stores.runs.list_runs("web", None, 100, None)
    return [r for r in found if r.source == "schedule"]


def test_create_puts_one_wakeup_with_the_expression_zone_and_state(ctx, wakeups):
    schedule = create(ctx, cron="0 9 * * MON-FRI", timeZone="Europe/Paris")
    first, _second = rules.wakeup_names("web", schedule.id)
    assert wakeups.calls == [("put", first)]  # a new schedule has nothing to remove
    assert wakeups.wakeups == {first: rules.WakeUp(
        name=first, expression="cron(0 9 ? * 2-6 *)", time_zone="Europe/Paris", enabled=True,
        pipeline="web", schedule_id=schedule.id)}


def test_changes_follow_two_expressions_none_disabled_and_delete(ctx, wakeups):
    schedule = create(ctx)
    first, second = rules.wakeup_names("web", schedule.id)
    schedule = patch(ctx, schedule, cron="0 0 13 * FRI")  # both day fields: two wake-ups
    assert {n: w.expression for n, w in wakeups.wakeups.items()} == {
        first: "cron(0 0 13 * ? *)", second: "cron(0 0 ? * 6 *)"}
    schedule = patch(ctx, schedule, enabled=False)
    assert [w.enabled for w in wakeups.wakeups.values()] == [False, False]
    schedule = patch(ctx, schedule, cron="0 0 */2 * MON", enabled=True)  # not expressible: none
    assert wakeups.wakeups == {}
    schedule = patch(ctx, schedule, cron="30 6 * * *", timeZone="Asia/Kolkata")
    assert {n: (w.expression, w.time_zone) for n, w in wakeups.wakeups.items()} == {
        first: ("cron(30 6 * * ? *)", "Asia/Kolkata")}
    wakeups.calls.clear()
    service.delete(ctx, "web", schedule.id)
    assert wakeups.wakeups == {} and wakeups.calls == [("remove", first), ("remove", second)]


def test_a_failing_eventbridge_keeps_the_schedule_and_the_sweeper_fires_it(ctx, clock, wakeups, caplog):
    wakeups.failing = RuntimeError("ThrottlingException")
    caplog.set_level(logging.WARNING)
    schedule = create(ctx, cron="*/5 * * * *")  # 201 all the same: stored first
    assert service.get(ctx, "web", schedule.id).cron == "*/5 * * * *"
    assert wakeups.wakeups == {} and ctx.metrics.counts["ScheduleWakeUpsFailed"] == 1
    assert "were not updated (RuntimeError)" in caplog.text
    clock.set("2026-03-20T10:05:10.000Z")  # due, within the grace: EventBridge's turn
    assert service.fire_due(ctx).outcomes == {service.WAITING: 1} and scheduled_runs(ctx) == []
    clock.set("2026-03-20T10:07:00.000Z")  # two minutes late: the backstop fires it, once
    assert service.fire_due(ctx).outcomes == {service.CREATED: 1}
    assert len(scheduled_runs(ctx)) == 1 and ctx.metrics.counts["ScheduleWakeUpsMissed"] == 1
    assert "was not woken by EventBridge" in caplog.text
    assert service.get(ctx, "web", schedule.id).last_fired_at == parse_iso("2026-03-20T10:05:00Z")


def test_the_wakeup_fires_once_and_the_sweeper_then_finds_nothing(ctx, clock, wakeups):
    schedule = create(ctx)
    clock.set("2026-03-20T10:05:00.250Z")
    payload = {"pipeline": "web", "scheduleId": schedule.id, "scheduledTime": "2026-03-20T10:05:00Z"}
    assert schedule_fired(payload, None) == {"outcome": service.CREATED}
    assert schedule_fired(payload, None) == {"outcome": service.STALE}  # a retried delivery
    clock.set("2026-03-20T10:07:30.000Z")
    minute_tick(ctx)  # the sweeper, past the grace: the fire time is done, nothing is due
    assert len(scheduled_runs(ctx)) == 1
    assert "ScheduleWakeUpsMissed" not in ctx.metrics.counts


def test_a_wakeup_a_little_early_by_our_clock_fires_a_wakeup_not_due_does_nothing(ctx, clock):
    schedule = create(ctx)
    clock.set("2026-03-20T10:04:57.000Z")  # 3 s early: clock skew, within WAKE_TOLERANCE
    assert service.fire_woken(ctx, "web", schedule.id, parse_iso("2026-03-20T10:05:00Z")) == service.CREATED
    run = scheduled_runs(ctx)[0]
    # an EventBridge schedule lagging a change (or lying): a time the schedule is not due
    clock.set("2026-03-20T10:06:00.000Z")
    assert service.fire_woken(ctx, "web", schedule.id, parse_iso("2026-03-20T10:06:00Z")) == service.STALE
    clock.set("2026-03-20T10:09:50.000Z")  # 10 s early: too early, not forgiven
    assert service.fire_woken(ctx, "web", schedule.id, parse_iso("2026-03-20T10:10:00Z")) == service.STALE
    assert [r.id for r in scheduled_runs(ctx)] == [run.id]


@pytest.mark.parametrize("payload", [
    None, [], "x", {"pipeline": "web"}, {"pipeline": 1, "scheduleId": "sch_" + "a" * 20},
    {"pipeline": "web", "scheduleId": "sch_" + "a" * 20, "scheduledTime": 5},
    {"pipeline": "web", "scheduleId": "sch_" + "a" * 20, "scheduledTime": "yesterday"},
])
def test_malformed_wakeups_are_dropped(ctx, payload):
    assert schedule_fired(payload, None) == {"outcome": "malformed"}


@pytest.mark.parametrize(("pipeline", "schedule_id"), [("../web", "sch_" + "a" * 20), ("web", "sch_x")])
def test_wakeups_naming_no_possible_schedule_are_stale_and_touch_nothing(ctx, wakeups, pipeline, schedule_id):
    answer = schedule_fired({"pipeline": pipeline, "scheduleId": schedule_id}, None)
    assert answer == {"outcome": service.STALE} and wakeups.calls == []


def test_a_wakeup_that_outlived_its_schedule_removes_itself(ctx, clock, wakeups):
    schedule = create(ctx, cron="0 0 13 * FRI")  # two wake-ups
    wakeups.failing = RuntimeError("EventBridge down")
    service.delete(ctx, "web", schedule.id)
    assert len(wakeups.wakeups) == 2  # the delete could not remove them: orphans
    wakeups.failing, wakeups.calls = None, []
    clock.set("2026-04-13T00:00:00.000Z")
    answer = schedule_fired({"pipeline": "web", "scheduleId": schedule.id,
                             "scheduledTime": "2026-04-13T00:00:00Z"}, None)
    assert answer == {"outcome": service.GONE} and wakeups.wakeups == {}
    assert wakeups.calls == [("remove", name) for name in rules.wakeup_names("web", schedule.id)]
    assert scheduled_runs(ctx) == []


def test_the_sweeper_fires_what_eventbridge_cannot_say_at_once(ctx, clock, wakeups):
    odd_fridays = create(ctx, cron="*/5 * */2 * FRI")  # '*/2' ANDs with FRI: not EventBridge's
    assert not rules.woken_by_eventbridge(odd_fridays) and wakeups.wakeups == {}
    clock.set("2026-03-26T23:58:00.000Z")
    covered = create(ctx, cron="*/5 * * * *")
    assert {w.schedule_id for w in wakeups.wakeups.values()} == {covered.id}
    clock.set("2026-03-27T00:00:01.000Z")  # Friday the 27th: both due
    assert service.fire_due(ctx).outcomes == {service.CREATED: 1, service.WAITING: 1}
    assert service.get(ctx, "web", odd_fridays.id).last_fired_at == parse_iso("2026-03-27T00:00:00Z")
    assert service.get(ctx, "web", covered.id).last_fired_at is None


def test_without_eventbridge_the_tick_fires_everything_on_time(ctx, clock):
    ctx.wakeups = MemoryWakeUps(fires=False)
    create(ctx)
    clock.set("2026-03-20T10:05:01.000Z")
    assert service.fire_due(ctx).outcomes == {service.CREATED: 1}
    assert ctx.wakeups.calls == []  # and nothing is sent anywhere


def test_the_grace_is_two_minutes():
    assert rules.BACKSTOP_GRACE == timedelta(minutes=2) and rules.WAKE_TOLERANCE == timedelta(seconds=5)


def test_both_wakeups_of_a_two_expression_schedule_on_the_same_minute_make_one_run(ctx, clock, wakeups):
    """Friday the 13th: the day-of-month and the weekday wake-ups both fire at midnight."""
    schedule = create(ctx, cron="0 0 13 * FRI")
    assert len(wakeups.wakeups) == 2
    clock.set("2026-11-12T23:59:00.000Z")
    schedule = patch(ctx, schedule, description="again")  # next fire time: Friday 13 November
    assert schedule.next_fire_at == parse_iso("2026-11-13T00:00:00Z")
    clock.set("2026-11-13T00:00:00.300Z")
    payload = {"pipeline": "web", "scheduleId": schedule.id, "scheduledTime": "2026-11-13T00:00:00Z"}
    outcomes = [schedule_fired(dict(payload), None)["outcome"] for _ in wakeups.wakeups]
    assert outcomes == [service.CREATED, service.STALE] and len(scheduled_runs(ctx)) == 1


def test_a_change_whose_eventbridge_write_lost_a_race_writes_the_latest_stored_one(ctx, wakeups, monkeypatch):
    """PATCH A stores, PATCH B stores and writes EventBridge, then A's EventBridge write lands:
    A reads the schedule again and writes B's wake-ups; a DELETE meanwhile: A removes them."""
    schedule = create(ctx, cron="*/5 * * * *")
    first, _ = rules.wakeup_names("web", schedule.id)
    original_put = wakeups.put
    racing = {"done": False}

    def put_after_b(wakeup, *, new):
        if not racing["done"]:  # B's change is stored (and written to EventBridge) before A's lands
            racing["done"] = True
            patch(ctx, service.get(ctx, "web", schedule.id), cron="0 12 * * *")
        original_put(wakeup, new=new)

    monkeypatch.setattr(wakeups, "put", put_after_b)
    patch(ctx, schedule, cron="0 6 * * *")  # A
    assert service.get(ctx, "web", schedule.id).cron == "0 12 * * *"
    assert wakeups.wakeups[first].expression == "cron(0 12 * * ? *)"

    def put_after_delete(wakeup, *, new):
        if not racing["done"]:  # the DELETE is stored and removes the wake-ups before A's put lands
            racing["done"] = True
            service.delete(ctx, "web", schedule.id)
        original_put(wakeup, new=new)

    racing["done"] = False
    monkeypatch.setattr(wakeups, "put", put_after_delete)
    patch(ctx, service.get(ctx, "web", schedule.id), cron="0 7 * * *")
    assert wakeups.wakeups == {}  # A's late put was undone: the schedule is gone
