"""Schedule firings racing on a real DynamoDB Local: however many tickers fire the same schedule
at the same fire time at once, exactly one run is created (the link keyed by schedule id and fire
time is written in the run's own transaction, conditioned on not existing)."""
from __future__ import annotations

import threading

import pytest

from chalicelib.domain import schedules as rules
from chalicelib.domain.schemas import CreateRunIn, CreateScheduleIn
from chalicelib.service import runs
from chalicelib.service import schedules as service

pytestmark = pytest.mark.ddb_local
TICKERS = 6


WEB = '{"pipeline": "web", "stages": ["BUILD"]}'


def body(raw: str) -> CreateScheduleIn:
    return CreateScheduleIn.model_validate_json(raw)


def test_concurrent_firings_of_one_fire_time_create_exactly_one_run(local_ctx, clock):
    ctx = local_ctx
    runs.create_run(ctx, CreateRunIn.model_validate_json(WEB), actor="a")
    schedule = service.create(ctx, "web", body('{"cron": "* * * * *"}'),
                              actor="alice")
    clock.advance(90)
    now = clock.now()
    barrier = threading.Barrier(TICKERS)
    outcomes: list[str] = []
    errors: list[BaseException] = []

    def ticker():
        barrier.wait()
        try:
            outcomes.append(service.fire(ctx, "web", schedule.id, now))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=ticker) for _ in range(TICKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    # each ticker either created the run, found the link (duplicate) or read the schedule after
    # it had advanced (stale): never two "created"
    assert outcomes.count(service.CREATED) == 1, outcomes
    assert set(outcomes) <= {service.CREATED, service.DUPLICATE, service.STALE}
    listed, _ = ctx.stores.runs.list_runs("web", None, 100, None)
    scheduled = [r for r in listed if r.source == "schedule"]
    assert len(scheduled) == 1
    key = rules.firing_key(schedule.id, schedule.next_fire_at)
    assert ctx.stores.links.linked_run(rules.LINK_NAMESPACE, key) == scheduled[0].id
    after = service.get(ctx, "web", schedule.id)
    assert after.last_run_id == scheduled[0].id and after.next_fire_at > now
    # the same fire time again (a late duplicate delivery): still one run
    assert service.fire_due(ctx, now).due == 0


def test_due_reads_only_enabled_schedules_from_the_sparse_index(local_ctx, clock):
    ctx = local_ctx
    runs.create_run(ctx, CreateRunIn.model_validate_json(WEB), actor="a")
    enabled = service.create(ctx, "web", body('{"cron": "* * * * *"}'), actor="a")
    service.create(ctx, "web", body('{"cron": "* * * * *", "enabled": false}'), actor="a")
    clock.advance(3600)
    now = clock.now().isoformat().replace("+00:00", "Z")
    assert ctx.stores.schedules.due(now, 100) == [("web", enabled.id)]
    assert ctx.stores.timers.due_timers("9999").timers == []  # the stage sweep never sees them


def test_wakeups_racing_the_backstop_sweeper_create_exactly_one_run(local_ctx, clock):
    """EventBridge's wake-up delivered late (its retries) and twice, at the moment the sweeper,
    past its grace, backs it up: one run for the fire time."""
    from chalicelib.adapters.scheduler import MemoryWakeUps
    from chalicelib.events.wakeups import schedule_fired
    from tests.fixtures.threads import run_threads

    ctx = local_ctx
    ctx.wakeups = MemoryWakeUps()  # EventBridge on: the sweeper waits the grace, then fires
    runs.create_run(ctx, CreateRunIn.model_validate_json(WEB), actor="a")
    schedule = service.create(ctx, "web", body('{"cron": "*/5 * * * *"}'), actor="alice")
    assert len(ctx.wakeups.wakeups) == 1
    due = schedule.next_fire_at
    clock.set(due + rules.BACKSTOP_GRACE)
    clock.advance(1)
    payload = {"pipeline": "web", "scheduleId": schedule.id,
               "scheduledTime": due.strftime("%Y-%m-%dT%H:%M:%SZ")}
    results: dict = {}
    outcomes = run_threads({
        "wake-up": lambda: results.setdefault("wake-up", schedule_fired(payload, None)["outcome"]),
        "retried wake-up": lambda: results.setdefault("retry", schedule_fired(payload, None)["outcome"]),
        "sweeper": lambda: results.setdefault("sweeper", service.fire_due(ctx).outcomes),
        "second sweeper": lambda: results.setdefault("sweeper 2", service.fire_due(ctx).outcomes),
    })
    assert set(outcomes.values()) == {"ok"}, outcomes
    created = [results["wake-up"], results["retry"]].count(service.CREATED) + sum(
        results[s].get(service.CREATED, 0) for s in ("sweeper", "sweeper 2"))
    assert created == 1, results
    listed, _ = ctx.stores.runs.list_runs("web", None, 100, None)
    assert len([r for r in listed if r.source == "schedule"]) == 1
    assert service.get(ctx, "web", schedule.id).last_fired_at == due
