"""Concurrency groups as use cases: admit a new run, write a change of a grouped run, release a
group when its run ends, GoCD's releaseLock, the pipeline's setting, the sweeper's repair.

The rules are in domain/concurrency.py; here they meet the stores. Every write that changes a
group is one atomic write with the runs it concerns, conditioned on the group's version as read,
so concurrent creates and releases serialize on the group item: no two runs of a QUEUED or
SUPERSEDED group are ever active at once.

Releasing happens right after the write that ends the holder (``after_save``), as its own
transaction: the holder's end and the promotion are two writes. A writer that dies between them
leaves the group held by a finished run; the group still has waiting runs, so it is on the
sweeper's index and the next sweep (``repair``) promotes the next run. With nobody waiting the
group stays held by a finished run until then: a SUPERSEDED create simply takes it (there is
nothing to cancel), a QUEUED create waits, which puts the group on the sweeper's index.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import replace
from datetime import datetime

from ..domain.clock import format_iso
from ..domain.concurrency import (
    QUEUE,
    SUPERSEDE,
    Admission,
    Group,
    Mode,
    Queue,
    RunQueued,
    Setting,
    admit,
    place,
    queue_place,
    reacquire,
    release,
)
from ..domain.errors import ConcurrentModification, NotFound, ValidationFailed
from ..domain.model import Run, RunAggregate, run_status_of
from ..domain.operations import cancel_run
from ..domain.status import FINAL
from . import ServiceContext

log = logging.getLogger(__name__)

WRITE_ATTEMPTS = 12
BACKOFF_SECONDS = 0.01
# A run of a group is created in one transaction with its group (and, SUPERSEDED, the cancel of
# the run it replaces): its stages must fit in it beside those (DynamoDB: 100 items).
MAX_GROUP_RUN_STAGES = 64


def _backoff(attempt: int) -> None:
    """Full jitter, as ``runs.backoff`` (which imports this module): creates racing for one
    group spread out instead of colliding again."""
    time.sleep(random.uniform(0, BACKOFF_SECONDS * (2 ** min(attempt, 7))))


def _group(ctx: ServiceContext, pipeline: str, name: str) -> Group:
    return ctx.stores.groups.get(pipeline, name) or Group(pipeline=pipeline, name=name)


def insert_linked_run(ctx: ServiceContext, aggregate: RunAggregate, *, setting: dict | None,
                      namespace: str, key: str, created_at: str, actor: str | None) -> bool:
    """As ``RunLinks.insert_linked_run`` (run + link, all or nothing; False: the link exists, a
    concurrent writer made its run first, nothing written), in the group the pipeline's setting
    puts the run in: a schedule's firing (service/schedules.py) follows its pipeline's mode."""
    if Setting.of(setting).mode == Mode.PARALLEL:
        return ctx.stores.links.insert_linked_run(aggregate, namespace, key, created_at)
    try:
        insert_run(ctx, aggregate, layout=None, setting=setting, group=None, actor=actor,
                   link=(namespace, key, created_at))
    except ConcurrentModification:
        if ctx.stores.links.linked_run(namespace, key) is not None:
            return False
        raise
    return True


def insert_run(ctx: ServiceContext, aggregate: RunAggregate, *, layout: dict | None,
               setting: dict | None, group: str | None, actor: str | None,
               link: tuple[str, str, str] | None = None) -> Admission | None:
    """Write a new run where its pipeline's setting (``setting``, as claimed with its number) and
    its own ``group`` put it. PARALLEL without a group: exactly ``RunStore.insert_run`` (no extra
    round trip). Else 1 GetItem of the group, then one transaction: the run and its stages, the
    group, and -- SUPERSEDED with a holder -- the holder's cancel, or -- QUEUED with the NEWEST
    discipline and a run waiting -- the waiting run's cancel ("replaced by run <id>"), each after
    1 Query to load it. A group changed meanwhile makes it read the group again. Returns what
    the group did.

    NEWEST with several runs waiting (queued under ALL before the setting changed): the older
    ones are cancelled first, one transaction each with the group (each leaves the queue), and
    the group read again, until one is left to replace with the create's own transaction."""
    run = aggregate.run
    placement = place(run.pipeline, Setting.of(setting), group)
    if placement is None:
        ctx.stores.runs.insert_run(aggregate, layout=layout)
        return None
    if len(aggregate.stages) > MAX_GROUP_RUN_STAGES:
        raise ValidationFailed(
            f"a run of a concurrency group has at most {MAX_GROUP_RUN_STAGES} stages (it is created "
            f"in one transaction with its group); this one has {len(aggregate.stages)}",
            details=[{"field": "stages",
                      "message": f"at most {MAX_GROUP_RUN_STAGES} in a concurrency group"}])
    run.concurrency_group = placement.group
    now = run.created_at
    conflicts = 0
    while conflicts < WRITE_ATTEMPTS:  # each pass writes, or replaces one of several waiting runs
        current = _group(ctx, run.pipeline, placement.group)
        admission = admit(current, run.id, placement.mode, placement.queue)
        run.queued = admission.kind == QUEUE
        aggregate.refresh(now)
        cancelled = None
        try:
            if admission.kind == SUPERSEDE:
                cancelled = _superseding(ctx, admission, run, actor)
            elif admission.replaced:
                waiting = _still_waiting(ctx, admission.replaced)
                if len(waiting) > 1:
                    _replace_alone(ctx, current, waiting[0], run, actor)
                    continue  # one fewer waits (at most MAX_QUEUE passes): read the group again
                cancelled = _replacing(waiting[0], run, actor) if waiting else None
            ctx.stores.groups.insert_run(aggregate, layout, admission.group, cancelled, link)
            return admission
        except ConcurrentModification:
            if link is not None and ctx.stores.links.linked_run(*link[:2]) is not None:
                raise  # the link is taken: the caller's answer, not a race to retry
            _backoff(conflicts)
            conflicts += 1
    raise ConcurrentModification(f"concurrency group {placement.group!r} is too busy; retry")


def _superseding(ctx: ServiceContext, admission: Admission, run: Run,
                 actor: str | None) -> tuple[RunAggregate, RunAggregate] | None:
    """The holder's cancel, to write with the new run (None: it is gone or already ended, so
    taking the group is all there is to do; the group's version guards that it stays so)."""
    assert admission.superseded is not None
    old = ctx.stores.runs.load_run(admission.superseded)
    if old is None or old.run.status in FINAL:
        return None
    before = old.snapshot()
    cancel_run(old, run.created_at, actor=actor or "stagetrack", reason=f"superseded by run {run.id}")
    old.refresh(run.created_at)
    return before, old


def _still_waiting(ctx: ServiceContext, run_ids: tuple[str, ...]) -> list[RunAggregate]:
    """The runs of ``run_ids`` still QUEUED, loaded whole, oldest first (1 Query each; one
    cancelled or deleted meanwhile is passed over: the group's new queue drops its id)."""
    found = (ctx.stores.runs.load_run(run_id) for run_id in run_ids)
    return [aggregate for aggregate in found if aggregate is not None and aggregate.run.queued]


def _replacing(waiting: RunAggregate, run: Run, actor: str | None) -> tuple[RunAggregate, RunAggregate]:
    """A waiting run's cancel, replaced by ``run`` (a NEWEST queue keeps only the newest), to
    write with ``run``: it leaves the queue (no longer QUEUED: its first stage CANCELLED, the
    rest SKIPPED), recorded as ``replaced by run <id>``. A force-cancel: it never started, so
    there is nothing for its finally stages to clean up (GitHub's replaced pending run runs no
    job at all)."""
    before = waiting.snapshot()
    cancel_run(waiting, run.created_at, actor=actor or "stagetrack", reason=f"replaced by run {run.id}",
               force=True)
    waiting.run.queued = False
    waiting.refresh(run.created_at)
    return before, waiting


def _replace_alone(ctx: ServiceContext, group: Group, waiting: RunAggregate, run: Run,
                   actor: str | None) -> None:
    """One of several runs waiting in a NEWEST group (they queued under ALL) is replaced in its
    own transaction with the group, which it leaves; conditioned on both as read."""
    before, after = _replacing(waiting, run, actor)
    left = replace(group, queue=tuple(r for r in group.queue if r != after.run.id))
    ctx.stores.groups.save_run(before, after, left, claim=False)


def save(ctx: ServiceContext, before: RunAggregate, after: RunAggregate, *, local: bool) -> None:
    """Write a change of a run (``RunStore.save``), with what its group asks of it:

    - a QUEUED run's stages may not move, except to end it (a cancel: it leaves the queue, its
      status is then its stages'); anything else is 409 ``run_queued``;
    - a run of a group that becomes active again after it ended (a retry, a sender's new attempt)
      takes its group back in the same write, conditioned on the group's version: 409
      ``concurrency_group_busy`` while another run holds it.
    A grouped run is always written whole (``local`` is ignored: its end must be decided on
    every stage, as the release depends on it)."""
    run = after.run
    if run.concurrency_group is None:
        ctx.stores.runs.save(before, after, local=local)
        return
    if before.run.queued:
        was = {stage.id: stage.status for stage in before.stages}
        moved = any(stage.status != was.get(stage.id, stage.status) for stage in after.stages)
        if moved:
            if run_status_of(after.stages) not in FINAL:
                raise RunQueued(f"run {run.id!r} waits in concurrency group {run.concurrency_group!r}; "
                                f"its stages start once it is promoted (cancel it to leave the queue)",
                                details={"group": run.concurrency_group})
            run.queued = False
            after.rederive()
    if before.run.status in FINAL and run.status not in FINAL and not run.queued:
        group = _group(ctx, run.pipeline, run.concurrency_group)
        # rewritten even when it already names this run: its version guards the change
        ctx.stores.groups.save_run(before, after, reacquire(group, run.id) or replace(group))
        return
    ctx.stores.runs.save(before, after, local=False)


def after_save(ctx: ServiceContext, before: RunAggregate, after: RunAggregate) -> None:
    """After a change of a grouped run: if it ended, free its group (or leave its queue).
    Best effort: a failure is logged and left to the sweeper (``repair``)."""
    run = after.run
    if run.concurrency_group is None or run.status not in FINAL or before.run.status in FINAL:
        return
    try:
        free(ctx, run.pipeline, run.concurrency_group, run.id, holder=run, now=ctx.clock.now())
    except Exception:  # noqa: BLE001 - the change is committed; the sweeper repairs the group
        log.warning("run %s ended; freeing its concurrency group failed, the sweeper will",
                    run.id, exc_info=True)


def after_delete(ctx: ServiceContext, aggregate: RunAggregate) -> None:
    """A deleted run of a group frees it (or leaves its queue), as one that ended does."""
    run = aggregate.run
    if run.concurrency_group is None:
        return
    try:
        free(ctx, run.pipeline, run.concurrency_group, run.id, holder=None, now=ctx.clock.now())
    except Exception:  # noqa: BLE001 - the delete is committed; the sweeper repairs the group
        log.warning("run %s deleted; freeing its concurrency group failed", run.id, exc_info=True)


def free(ctx: ServiceContext, pipeline: str, name: str, run_id: str, *, holder: Run | None,
         now: datetime, check: bool = True) -> str | None:
    """Run ``run_id`` no longer holds group ``name``: the oldest run still queued there holds it
    next and is promoted (QUEUED -> IDLE), in one write with the group, conditioned on the group's
    version, on the promoted run's version, and (``check``) on the run that freed it being
    unchanged since it was read as ``holder`` (gone: None) -- so a retry that made it active again
    meanwhile makes this read again and stop. A run that only waited there leaves the queue.
    Returns the promoted run's id (None: nobody waited, or nothing to do).

    Reads: 1 GetItem (the group), 1 Query per queued run looked at (the oldest still waiting is
    usually the first), and, on a retry after a lost race, 1 Query of the freeing run."""
    for attempt in range(WRITE_ATTEMPTS):
        group = ctx.stores.groups.get(pipeline, name)
        if group is None:
            return None
        if group.active != run_id:
            if run_id in group.queue:
                left = replace(group, queue=tuple(r for r in group.queue if r != run_id))
                try:
                    ctx.stores.groups.write(left, now=now)
                except ConcurrentModification:
                    _backoff(attempt)
                    continue
            return None
        if attempt > 0 and check:
            again = ctx.stores.runs.load_run(run_id)
            if again is not None and again.run.status not in FINAL:
                return None  # active again (a retry took the group back): it still holds it
            holder = None if again is None else again.run
        promoted = _next_waiting(ctx, group)
        freed = release(group, run_id, {promoted.run.id} if promoted else set())
        assert freed is not None
        promotion = None
        if promoted is not None:
            before = promoted.snapshot()
            promoted.run.queued = False
            promoted.refresh(now)
            promotion = (before, promoted)
        try:
            ctx.stores.groups.write(freed.group, promotion, checked=holder if check else None, now=now)
            return freed.promoted
        except ConcurrentModification:
            _backoff(attempt)
    raise ConcurrentModification(f"concurrency group {name!r} is too busy; the sweeper frees it")


def _next_waiting(ctx: ServiceContext, group: Group) -> RunAggregate | None:
    """The oldest queued run that still waits, loaded whole (one cancelled or deleted meanwhile
    is passed over: ``release`` drops it from the queue)."""
    for candidate in group.queue:
        aggregate = ctx.stores.runs.load_run(candidate)
        if aggregate is not None and aggregate.run.queued:
            return aggregate
    return None


def queue_place_of(ctx: ServiceContext, run: Run) -> dict | None:
    """A QUEUED run's place in its group (``domain.concurrency.queue_place``): 1 GetItem, none for
    a run that does not wait. A queued run that ended leaves the queue right after its write
    (``after_save``), so the place is exact unless that write failed and the sweeper has not
    repaired the group yet (then it counts a run that no longer waits)."""
    if not run.queued or run.concurrency_group is None:
        return None
    group = ctx.stores.groups.get(run.pipeline, run.concurrency_group)
    return None if group is None else queue_place(group, run.id)


def holder_of(ctx: ServiceContext, pipeline: str, setting: dict | None) -> str | None:
    """The run holding the pipeline's default group (GoCD's lock), or None: 1 GetItem, none for a
    PARALLEL pipeline."""
    chosen = Setting.of(setting)
    if chosen.mode == Mode.PARALLEL:
        return None
    group = ctx.stores.groups.get(pipeline, chosen.group or pipeline)
    return None if group is None else group.active


def release_lock(ctx: ServiceContext, pipeline: str) -> str | None:
    """GoCD's releaseLock: the run holding the pipeline's default group lets it go while it keeps
    running, and the oldest queued run is promoted. Nothing held: nothing to do (GoCD answers the
    same text). Returns the run promoted, if any."""
    found = ctx.stores.pipelines.get(pipeline)
    if found is None:
        raise NotFound(f"pipeline {pipeline!r} not found")
    chosen = Setting.of(found.concurrency)
    if chosen.mode == Mode.PARALLEL:
        return None
    name = chosen.group or pipeline
    group = ctx.stores.groups.get(pipeline, name)
    if group is None or group.active is None:
        return None
    return free(ctx, pipeline, name, group.active, holder=None, now=ctx.clock.now(), check=False)


def set_setting(ctx: ServiceContext, pipeline: str, mode: Mode, group: str | None,
                queue: Queue | None = None):
    """Store the pipeline's concurrency setting (1 UpdateItem). It applies to runs created from
    then on; runs already queued stay queued and are promoted as their group frees (under
    NEWEST, the next run to wait replaces them all)."""
    return ctx.stores.pipelines.set_concurrency(pipeline, Setting(mode, group, queue or Queue.ALL).as_dict())


def repair(ctx: ServiceContext, now: datetime) -> int:
    """The sweeper's part: every group with waiting runs that has not changed for a grace time
    (1 Query) whose holder has ended or is gone is freed (its next run promoted). Reads per due
    group: 1 GetItem and 1 Query (the holder). Returns how many groups it freed."""
    freed = 0
    for pipeline, name in ctx.stores.groups.due_groups(format_iso(now) or ""):
        group = ctx.stores.groups.get(pipeline, name)
        if group is None or not group.queue or group.active is None:
            continue
        holder = ctx.stores.runs.load_run(group.active)
        if holder is not None and holder.run.status not in FINAL:
            continue  # still running: it frees the group when it ends
        try:
            free(ctx, pipeline, name, group.active, holder=None if holder is None else holder.run, now=now)
            freed += 1
        except ConcurrentModification:
            log.warning("concurrency group %s/%s busy; next sweep", pipeline, name)
    return freed
