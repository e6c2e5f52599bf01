"""Schedules: create, read, change and delete a pipeline's cron schedules, and fire the due ones.

Firing (``fire_due``) runs on the minute tick: the AWS sweeper (events/timers.py, one rule every
minute) and the local ticker under ``make run`` (chalicelib/ticker.py). Each firing creates
exactly one run, whatever the number of ticks, Lambdas or processes that fire it: the run is
written in one transaction with a link keyed by (schedule id, fire time), conditioned on the
link not existing (store/sources.py ``insert_linked_run``); a duplicate or concurrent firing
finds the link and creates nothing. Then the schedule moves to its next fire time (a write
conditioned on its version). Missed fire times (a tick that did not run for an hour) collapse
into one firing, at the latest one missed, as GitLab and Argo do by default.

While the pipeline is paused a firing creates no run: it is skipped, with a note on the
schedule (``lastSkipped``), a log line and a ``SchedulesSkipped`` metric.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime

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
    return ctx.stores.schedules.replace(changed)


def delete(ctx: ServiceContext, pipeline: str, schedule_id: str) -> Schedule:
    _known(ctx, pipeline, schedule_id)
    deleted = ctx.stores.schedules.delete(pipeline, schedule_id)
    if deleted is None:
        raise NotFound(f"schedule {schedule_id!r} of pipeline {pipeline!r} not found")
    return deleted


# ---- firing ------------------------------------------------------------------------------------

CREATED, DUPLICATE, SKIPPED, STALE = "created", "duplicate", "skipped", "stale"


@dataclass
class FireReport:
    due: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    failed: int = 0


def fire_due(ctx: ServiceContext, now: datetime | None = None, *, limit: int = FIRE_LIMIT) -> FireReport:
    """Fire every schedule due by ``now``: one Query of the sparse index, then each one."""
    now = now or ctx.clock.now()
    due = ctx.stores.schedules.due(format_iso(now), limit)
    report = FireReport(due=len(due))
    for pipeline, schedule_id in due:
        try:
            outcome = fire(ctx, pipeline, schedule_id, now)
        except ConcurrentModification:
            report.failed += 1  # the next tick finds it again; its firing key keeps it single
            continue
        report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1
    return report


def fire(ctx: ServiceContext, pipeline: str, schedule_id: str, now: datetime) -> str:
    """Fire one schedule if it is due by ``now``: at most one run per (schedule, fire time)."""
    schedule = ctx.stores.schedules.get(pipeline, schedule_id)
    if schedule is None or not schedule.enabled or schedule.next_fire_at is None:
        return STALE
    if schedule.next_fire_at > now:
        return STALE
    fire_at = schedule.next_fire_at
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
