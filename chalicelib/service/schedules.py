"""Schedules: create, read, change and delete a pipeline's cron schedules, and fire the due ones.

Two things fire schedules. On AWS, EventBridge Scheduler wakes the ``schedule_fired`` function
at each fire time (events/wakeups.py -> ``fire_woken``): every create, change and delete here
writes the stored schedule first, then makes its EventBridge schedules (``ctx.wakeups``) match
it (``_follow``). The minute tick (the AWS sweeper, events/timers.py; the local ticker under
``make run``, chalicelib/ticker.py) runs ``fire_due``: with EventBridge on it fires a schedule
EventBridge covers only once it is ``BACKSTOP_GRACE`` late (a missed or failed wake-up), and
one EventBridge cannot express at once; locally it fires everything at once. The stored
schedule is the truth: a wake-up at a time the schedule is not due (an EventBridge schedule
that lags a change) fires nothing.

Each firing creates exactly one run, whatever the number of ticks, wake-ups, Lambdas or
processes that fire it: the run is written in one transaction with a link keyed by (schedule
id, fire time), conditioned on the link not existing (store/sources.py ``insert_linked_run``); a
duplicate or concurrent firing finds the link and creates nothing. Then the schedule moves to
its next fire time (a write conditioned on its version). Missed fire times (a tick that did not
run for an hour) collapse into one firing, at the latest one missed, as GitLab and Argo do by
default.

While the pipeline is paused a firing creates no run: it is skipped, with a note on the
schedule (``lastSkipped``), a log line and a ``SchedulesSkipped`` metric.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from ..domain import ids
from ..domain import schedules as rules
from ..domain.clock import format_iso
from ..domain.errors import ConcurrentModification, Conflict, NotFound, PipelinePaused
from ..domain.model import RunMetadata
from ..domain.schedules import Schedule
from ..domain.schemas import CreateScheduleIn, PatchScheduleIn
from . import ServiceContext, concurrency, pipelines

log = logging.getLogger(__name__)

FIRE_LIMIT = 100  # schedules fired per tick; the rest (rare) wait for the next tick


def _known(ctx: ServiceContext, pipeline: str, schedule_id: str) -> Schedule:
    found = None
    if ids.is_pipeline_name(pipeline) and rules.is_id(schedule_id):
        found = ctx.stores.schedules.get(pipeline, schedule_id)
    if found is None:
        raise NotFound(f"schedule {schedule_id!r} of pipeline {pipeline!r} not found")
    return found


def create(ctx: ServiceContext, pipeline: str, body: CreateScheduleIn, *, actor: str) -> Schedule:
    """A pipeline must have run once (a firing repeats the layout of its latest run): 404
    otherwise, as for ``POST /api/pipelines/{p}/schedule``."""
    found = pipelines.status(ctx, pipeline)
    if found.layout is None:
        raise NotFound(f"pipeline {pipeline!r} has never run; a schedule repeats its latest run's stages")
    if len(ctx.stores.schedules.list_for(pipeline)) >= rules.MAX_PER_PIPELINE:
        raise Conflict(f"pipeline {pipeline!r} has {rules.MAX_PER_PIPELINE} schedules, the most it may have")
    now = ctx.clock.now()
    schedule = Schedule(id=rules.new_id(), pipeline=pipeline, cron=" ".join(body.cron.split()),
                        time_zone=body.time_zone, enabled=body.enabled, created_at=now, created_by=actor,
                        updated_at=now, variables=dict(body.variables or {}),
                        description=body.description).rescheduled(now)
    ctx.stores.schedules.insert(schedule)
    _follow(ctx, pipeline, schedule.id, schedule, new=True)
    return schedule


def list_for(ctx: ServiceContext, pipeline: str) -> list[Schedule]:
    pipelines.status(ctx, pipeline)  # 404 for an unknown pipeline, not an empty list
    return ctx.stores.schedules.list_for(pipeline)


def get(ctx: ServiceContext, pipeline: str, schedule_id: str) -> Schedule:
    return _known(ctx, pipeline, schedule_id)


def change(ctx: ServiceContext, pipeline: str, schedule_id: str, patch: PatchScheduleIn) -> Schedule:
    """Only the fields given change; the next fire time is computed again from now. A change
    racing another (or a firing) is a 409: read it again."""
    current = _known(ctx, pipeline, schedule_id)
    given = patch.model_fields_set
    now = ctx.clock.now()
    changed = replace(
        current,
        cron=" ".join(patch.cron.split()) if "cron" in given and patch.cron else current.cron,
        time_zone=patch.time_zone if "time_zone" in given and patch.time_zone else current.time_zone,
        variables=dict(patch.variables) if "variables" in given and patch.variables is not None
        else current.variables,
        enabled=patch.enabled if "enabled" in given and patch.enabled is not None else current.enabled,
        description=patch.description if "description" in given else current.description,
        updated_at=now,
    ).rescheduled(now)
    stored = ctx.stores.schedules.replace(changed)
    _follow(ctx, pipeline, schedule_id, stored)
    return stored


def delete(ctx: ServiceContext, pipeline: str, schedule_id: str) -> Schedule:
    _known(ctx, pipeline, schedule_id)
    deleted = ctx.stores.schedules.delete(pipeline, schedule_id)
    if deleted is None:
        raise NotFound(f"schedule {schedule_id!r} of pipeline {pipeline!r} not found")
    _follow(ctx, pipeline, schedule_id, None)
    return deleted


FOLLOW_ROUNDS = 3  # EventBridge writes of one change chasing changes stored meanwhile


def _wanted(schedule: Schedule | None) -> list[rules.WakeUp]:
    return [] if schedule is None else rules.wakeups_of(schedule)


def _follow(ctx: ServiceContext, pipeline: str, schedule_id: str, stored: Schedule | None, *,
            new: bool = False) -> None:
    """Make the schedule's EventBridge wake-ups match what was just stored (``None``: deleted):
    put those its cron needs (``domain.schedules.wakeups_of``, state following ``enabled``),
    remove the other names of the two it may have. Both names are always written or removed,
    so a wake-up an earlier failed call left behind is healed by the next change.

    Two changes racing (two PATCHes, a PATCH and a DELETE) may reach EventBridge in the other
    order than the store. So after writing EventBridge a change reads the schedule again and,
    if another change stored other wake-ups meanwhile, writes those: whichever change writes
    EventBridge last has read the latest stored schedule after its write (one GetItem more per
    change; a new schedule skips it, as no one else knows its id yet).

    Called after the store's write and never failing the request: a failing EventBridge call is
    logged (``ScheduleWakeUpsFailed`` metric) and the schedule still fires, from the sweeper,
    ``BACKSTOP_GRACE`` late at worst; a wake-up left firing at old times fires nothing (the
    firing checks the stored schedule)."""
    if not ctx.wakeups.fires:
        return
    try:
        for _ in range(FOLLOW_ROUNDS):
            wanted = {w.name: w for w in _wanted(stored)}
            for name in rules.wakeup_names(pipeline, schedule_id):
                if name in wanted:
                    ctx.wakeups.put(wanted[name], new=new)
                elif not new:  # a new schedule has no wake-up to remove
                    ctx.wakeups.remove(name)
            if new:
                return
            latest = ctx.stores.schedules.get(pipeline, schedule_id)
            if _wanted(latest) == _wanted(stored):
                return
            stored = latest
    except Exception as error:  # noqa: BLE001 - the stored schedule stands; the sweeper backs it up
        log.warning("EventBridge schedules of schedule %s of pipeline %s were not updated (%s); the sweeper "
                    "fires it", schedule_id, pipeline, type(error).__name__,
                    extra={"event": "ScheduleWakeUpsFailed", "schedule": schedule_id,
                           "pipeline": pipeline, "error": type(error).__name__})
        ctx.metrics.count("ScheduleWakeUpsFailed")


# ---- firing ------------------------------------------------------------------------------------

CREATED, DUPLICATE, SKIPPED, STALE = "created", "duplicate", "skipped", "stale"
GONE = "gone"  # no stored schedule of that id: deleted (its wake-ups are removed when one wakes)
WAITING = "waiting"  # due, but EventBridge's wake-up still has the grace to fire it


@dataclass
class FireReport:
    due: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    failed: int = 0


def fire_due(ctx: ServiceContext, now: datetime | None = None, *, limit: int = FIRE_LIMIT) -> FireReport:
    """Fire every schedule due by ``now``: one Query of the sparse index, then each one. With
    EventBridge waking schedules (``ctx.wakeups.fires``) those it covers wait out the grace
    (outcome ``waiting``: one GetItem, nothing written)."""
    now = now or ctx.clock.now()
    grace = rules.BACKSTOP_GRACE if ctx.wakeups.fires else timedelta(0)
    due = ctx.stores.schedules.due(format_iso(now), limit)
    report = FireReport(due=len(due))
    for pipeline, schedule_id in due:
        try:
            outcome = fire(ctx, pipeline, schedule_id, now, grace=grace)
        except ConcurrentModification:
            report.failed += 1  # the next tick finds it again; its firing key keeps it single
            continue
        report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1
    return report


def fire_woken(ctx: ServiceContext, pipeline: str, schedule_id: str, scheduled_at: datetime | None) -> str:
    """A wake-up from EventBridge Scheduler (events/wakeups.py): fire the schedule if the
    stored schedule is due by our clock. ``scheduled_at`` (EventBridge's scheduled time) only
    forgives clock skew: a wake-up up to ``WAKE_TOLERANCE`` before the fire time by our clock
    fires it; any other wake-up at a time the schedule is not due (an EventBridge schedule that
    lags a change, a late retry after the sweeper fired it) is ``stale`` and does nothing. A
    wake-up of a deleted schedule (``gone``) removes its wake-ups."""
    if not (ids.is_pipeline_name(pipeline) and rules.is_id(schedule_id)):
        return STALE
    now = ctx.clock.now()
    if scheduled_at is not None and now < scheduled_at <= now + rules.WAKE_TOLERANCE:
        now = scheduled_at
    outcome = fire(ctx, pipeline, schedule_id, now)
    if outcome == GONE:
        # an orphan: the delete's EventBridge call failed. A wake-up exists only after its
        # schedule was stored (create writes the store first), so a wake-up finding no schedule
        # outlived its delete: remove it now rather than let it fire into nothing for ever.
        _follow(ctx, pipeline, schedule_id, None)
    return outcome


def fire(ctx: ServiceContext, pipeline: str, schedule_id: str, now: datetime, *,
         grace: timedelta = timedelta(0)) -> str:
    """Fire one schedule if it is due by ``now``: at most one run per (schedule, fire time).
    ``grace`` (the sweeper with EventBridge on): a schedule EventBridge wakes is fired only once
    it is that late, and then logged as a missed wake-up (``ScheduleWakeUpsMissed``)."""
    schedule = ctx.stores.schedules.get(pipeline, schedule_id)
    if schedule is None:
        return GONE
    if not schedule.enabled or schedule.next_fire_at is None:
        return STALE
    if schedule.next_fire_at > now:
        return STALE
    fire_at = schedule.next_fire_at
    if grace and rules.woken_by_eventbridge(schedule):
        if fire_at > now - grace:
            return WAITING
        log.warning("schedule %s of pipeline %s was not woken by EventBridge at %s; the sweeper fires it",
                    schedule.id, pipeline, format_iso(fire_at),
                    extra={"event": "ScheduleWakeUpMissed", "schedule": schedule.id, "pipeline": pipeline,
                           "fireAt": format_iso(fire_at)})
        ctx.metrics.count("ScheduleWakeUpsMissed")
    key = rules.firing_key(schedule.id, fire_at)
    outcome, run_id, skipped = DUPLICATE, ctx.stores.links.linked_run(rules.LINK_NAMESPACE, key), None
    if run_id is None:
        try:
            claimed = ctx.stores.pipelines.claim(pipeline, require_layout=True, at=now)
        except PipelinePaused as paused:
            outcome, skipped = SKIPPED, {"at": format_iso(fire_at), "reason": "pipeline_paused",
                                         "message": paused.message}
        except NotFound as missing:
            outcome, skipped = SKIPPED, {"at": format_iso(fire_at), "reason": "pipeline_not_found",
                                         "message": missing.message}
        else:
            aggregate = pipelines.run_like_latest(
                ctx, pipeline, claimed.counter, claimed.layout, trigger=rules.trigger_of(schedule),
                variables=dict(schedule.variables) or None,
                metadata=RunMetadata(actor=schedule.created_by, source=rules.SOURCE))
            # in the pipeline's concurrency group, if it has one (service/concurrency.py)
            if concurrency.insert_linked_run(ctx, aggregate, setting=claimed.concurrency,
                                             namespace=rules.LINK_NAMESPACE, key=key,
                                             created_at=format_iso(now) or "", actor=schedule.created_by):
                outcome, run_id = CREATED, aggregate.run.id
            else:  # a concurrent firing wrote the run first; its number claimed here stays a gap
                run_id = ctx.stores.links.linked_run(rules.LINK_NAMESPACE, key)
    if skipped is not None:
        log.warning("schedule %s of pipeline %s skipped its firing at %s: %s", schedule.id, pipeline,
                    skipped["at"], skipped["reason"],
                    extra={"event": "ScheduleSkipped", "schedule": schedule.id, "pipeline": pipeline,
                           "fireAt": skipped["at"], "reason": skipped["reason"]})
        ctx.metrics.count("SchedulesSkipped")
    else:
        log.info("schedule %s of pipeline %s fired at %s: run %s (%s)", schedule.id, pipeline,
                 format_iso(fire_at), run_id, outcome,
                 extra={"event": "ScheduleFired", "schedule": schedule.id, "pipeline": pipeline,
                        "fireAt": format_iso(fire_at), "runId": run_id, "outcome": outcome})
        ctx.metrics.count("SchedulesFired", dimensions={"Outcome": outcome})
    advanced = replace(schedule, next_fire_at=schedule.following(max(fire_at, now)),
                       last_fired_at=fire_at if skipped is None else schedule.last_fired_at,
                       last_run_id=run_id if skipped is None else schedule.last_run_id,
                       last_skipped=skipped or schedule.last_skipped)
    try:
        ctx.stores.schedules.replace(advanced)
    except (NotFound, ConcurrentModification):
        pass  # deleted, changed (its next fire time computed again) or advanced by a concurrent firing
    return outcome
