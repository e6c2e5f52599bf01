"""Schedules on the memory stores (service/schedules.py): create/change/delete, firing exactly
once per (schedule, fire time), skipping while paused, the local ticker."""
from __future__ import annotations

import json
import logging

import pytest

from chalicelib import wiring
from chalicelib.domain.clock import format_iso
from chalicelib.domain.errors import ConcurrentModification, Conflict, NotFound
from chalicelib.domain.schemas import CreateRunIn, CreateScheduleIn, PatchScheduleIn
from chalicelib.service import pipelines, runs
from chalicelib.service import schedules as service
from chalicelib.settings import Settings
from chalicelib.ticker import minute_tick
from tests.fixtures.clock import FakeClock


@pytest.fixture
def clock():
    return FakeClock("2026-03-20T10:00:30.000Z")


@pytest.fixture
def ctx(clock):
    context = wiring.memory_context(Settings(table_name="unused", region="us-east-1"), clock)
    runs.create_run(context, CreateRunIn.model_validate_json(
        '{"pipeline": "web", "stages": ["BUILD", "UNIT_TEST"]}'),
                    actor="alice")
    return context


def create(ctx, **body):
    body = {"cron": "*/5 * * * *", **body}
    return service.create(ctx, "web", CreateScheduleIn.model_validate_json(json.dumps(body)), actor="alice")


def run_ids(ctx):
    return [r.id for r in runs_of(ctx)]


def runs_of(ctx):
    found, _ = ctx.stores.runs.list_runs("web", None, 100, None)
    return sorted(found, key=lambda r: r.counter)


def test_create_computes_the_next_fire_time_in_its_zone(ctx):
    schedule = create(ctx, cron="0 9 * * MON-FRI", timeZone="Europe/Paris", variables={"ENV": "prod"})
    assert schedule.id.startswith("sch_") and schedule.enabled
    assert format_iso(schedule.next_fire_at) == "2026-03-23T08:00:00.000Z"  # Monday 09:00 CET
    assert service.get(ctx, "web", schedule.id) == schedule
    assert [s.id for s in service.list_for(ctx, "web")] == [schedule.id]


def test_a_disabled_schedule_has_no_next_fire_time_and_never_fires(ctx, clock):
    schedule = create(ctx, enabled=False)
    assert schedule.next_fire_at is None
    clock.advance(3600)
    assert service.fire_due(ctx).due == 0
    assert run_ids(ctx) == ["web:1"]


def test_create_needs_a_pipeline_that_ran(ctx):
    with pytest.raises(NotFound, match="not found"):
        service.create(ctx, "nope", CreateScheduleIn.model_validate_json('{"cron": "* * * * *"}'), actor="a")


def test_firing_creates_one_run_per_fire_time_with_source_and_trigger(ctx, clock):
    schedule = create(ctx, variables={"ENV": "prod"})
    clock.set("2026-03-20T10:05:00.000Z")
    report = service.fire_due(ctx)
    assert (report.due, report.outcomes) == (1, {"created": 1})
    run = runs_of(ctx)[-1]
    assert (run.id, run.source, run.actor, run.variables) == ("web:2", "schedule", "alice", {"ENV": "prod"})
    assert run.trigger == f"schedule {schedule.id} (*/5 * * * * UTC)"
    assert [s.type for s in runs.get_run(ctx, "web:2").stages] == ["BUILD", "UNIT_TEST"]
    after = service.get(ctx, "web", schedule.id)
    assert (format_iso(after.last_fired_at), after.last_run_id) == ("2026-03-20T10:05:00.000Z", "web:2")
    assert format_iso(after.next_fire_at) == "2026-03-20T10:10:00.000Z"
    assert service.fire_due(ctx).due == 0  # the same tick again: nothing due
    assert run_ids(ctx) == ["web:1", "web:2"]


def test_a_duplicate_firing_of_the_same_fire_time_creates_nothing(ctx, clock):
    """Two tickers read the schedule before either advanced it: the second finds the link."""
    schedule = create(ctx)
    clock.set("2026-03-20T10:05:10.000Z")
    stale = service.get(ctx, "web", schedule.id)
    assert service.fire(ctx, "web", schedule.id, clock.now()) == service.CREATED
    with pytest.raises(ConcurrentModification):  # the racing ticker's advance loses ...
        ctx.stores.schedules.replace(stale)
    rewound = service.get(ctx, "web", schedule.id)
    rewound.next_fire_at = stale.next_fire_at
    ctx.stores.schedules.replace(rewound)  # ... but had it read before the advance, it fires again:
    assert service.fire(ctx, "web", schedule.id, clock.now()) == service.DUPLICATE
    assert run_ids(ctx) == ["web:1", "web:2"]


def test_missed_fire_times_collapse_into_one_firing(ctx, clock):
    create(ctx)
    clock.set("2026-03-20T12:00:30.000Z")  # two hours without a tick
    assert service.fire_due(ctx).outcomes == {"created": 1}
    assert run_ids(ctx) == ["web:1", "web:2"]
    assert format_iso(service.list_for(ctx, "web")[0].next_fire_at) == "2026-03-20T12:05:00.000Z"


def test_paused_pipeline_skips_with_a_note_and_resumes_after_unpause(ctx, clock, caplog):
    schedule = create(ctx)
    pipelines.pause(ctx, "web", actor="bob", cause="freeze")
    clock.set("2026-03-20T10:05:00.000Z")
    with caplog.at_level(logging.WARNING, logger="chalicelib.service.schedules"):
        assert service.fire_due(ctx).outcomes == {"skipped": 1}
    assert [r.getMessage() for r in caplog.records] == [
        f"schedule {schedule.id} of pipeline web skipped its firing at 2026-03-20T10:05:00.000Z: "
        "pipeline_paused"]
    skipped = service.get(ctx, "web", schedule.id)
    assert skipped.last_skipped == {"at": "2026-03-20T10:05:00.000Z", "reason": "pipeline_paused",
                                    "message": "pipeline 'web' is paused; it accepts no new runs"}
    assert skipped.last_fired_at is None and format_iso(skipped.next_fire_at) == "2026-03-20T10:10:00.000Z"
    assert run_ids(ctx) == ["web:1"]
    pipelines.unpause(ctx, "web")
    clock.set("2026-03-20T10:10:00.000Z")
    assert service.fire_due(ctx).outcomes == {"created": 1}
    assert run_ids(ctx) == ["web:1", "web:2"]  # no number used by the skipped firing


def test_change_recomputes_and_deleted_schedules_never_fire(ctx, clock):
    schedule = create(ctx)
    changed = service.change(ctx, "web", schedule.id, PatchScheduleIn.model_validate_json(
        '{"cron": "0 12 * * *", "timeZone": "Asia/Tokyo"}'))
    assert format_iso(changed.next_fire_at) == "2026-03-21T03:00:00.000Z"
    assert changed.version == schedule.version + 1
    off = PatchScheduleIn.model_validate_json('{"enabled": false}')
    disabled = service.change(ctx, "web", schedule.id, off)
    assert disabled.next_fire_at is None and disabled.cron == "0 12 * * *"
    service.delete(ctx, "web", schedule.id)
    with pytest.raises(NotFound):
        service.get(ctx, "web", schedule.id)
    with pytest.raises(NotFound):
        service.delete(ctx, "web", schedule.id)


def test_a_change_from_a_stale_read_is_a_conflict(ctx):
    schedule = create(ctx)
    service.change(ctx, "web", schedule.id, PatchScheduleIn.model_validate_json('{"enabled": false}'))
    with pytest.raises(ConcurrentModification):
        ctx.stores.schedules.replace(schedule)


def test_a_schedule_id_is_found_only_in_its_own_pipeline(ctx):
    api = CreateRunIn.model_validate_json('{"pipeline": "api", "stages": ["BUILD"]}')
    runs.create_run(ctx, api, actor="a")
    schedule = create(ctx)
    for pipeline, schedule_id in [("api", schedule.id), ("web", "sch_nope"), ("bad name!", schedule.id)]:
        with pytest.raises(NotFound):
            service.get(ctx, pipeline, schedule_id)


def test_at_most_fifty_schedules_per_pipeline(ctx, monkeypatch):
    monkeypatch.setattr(service.rules, "MAX_PER_PIPELINE", 2)
    create(ctx)
    create(ctx)
    with pytest.raises(Conflict, match="has 2 schedules"):
        create(ctx)


@pytest.mark.parametrize(("body", "field", "message"), [
    ({"cron": "61 * * * *"}, "cron", "minute: 61 is out of range 0-59"),
    ({"cron": "* * * * *", "timeZone": "Mars/Olympus"}, "timeZone", "not an IANA time zone"),
    ({"cron": "0 0 30 2 *"}, "cron", "never fires"),
    ({"cron": "* * * * *", "enabled": "yes"}, "enabled", "valid boolean"),
])
def test_bad_bodies_name_the_field(body, field, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        CreateScheduleIn.model_validate_json(json.dumps(body))
    (error,) = caught.value.errors()
    assert error["loc"] == (field,) and message in error["msg"]


def test_a_patch_must_change_something_and_cannot_null_a_field():
    from pydantic import ValidationError

    for raw in ("{}", '{"enabled": null}', '{"cron": null}'):
        with pytest.raises(ValidationError):
            PatchScheduleIn.model_validate_json(raw)


def test_the_local_ticker_fires_due_schedules_even_when_the_sweep_fails(ctx, clock, monkeypatch):
    create(ctx)
    clock.set("2026-03-20T10:05:00.000Z")

    def broken(_ctx):
        raise RuntimeError("DynamoDB Local restarting")
    monkeypatch.setattr("chalicelib.ticker.sweep", broken)
    with pytest.raises(RuntimeError):
        minute_tick(ctx)
    assert run_ids(ctx) == ["web:1", "web:2"]
