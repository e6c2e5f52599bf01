"""Create, read, change and delete runs and stages."""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict

from ..domain import ids
from ..domain.approvals import check_policy, policy_from_spec
from ..domain.errors import ConcurrentModification, Conflict, NotFound, ValidationFailed
from ..domain.model import Run, RunAggregate, RunMetadata, Stage, StageSpec, change_status, new_run
from ..domain.operations import VariableChange, apply_variables, layout_of
from ..domain.retries import schedule_retries
from ..domain.schemas import CreateRunIn, ListRunsQuery, PatchStageIn, StageSpecIn
from ..domain.status import DEFAULT_STAGE_TYPES, StageStatus, StageType
from ..domain.timers import drive, stamp_run_deadline
from . import ServiceContext, concurrency

MAX_WRITE_ATTEMPTS = 12
BACKOFF_SECONDS = 0.01


def backoff(attempt: int) -> None:
    """Full jitter, capped at 1.28 s: writers bunched on one run spread out instead of colliding
    again (DynamoDB may cancel *both* of two overlapping transactions, so retrying at once can
    livelock). Twelve attempts ride out a burst of a dozen writers on one run under load."""
    time.sleep(random.uniform(0, BACKOFF_SECONDS * (2 ** min(attempt, 7))))


def stage_specs(body: CreateRunIn) -> list[StageSpec]:
    if body.stages is None:
        return [StageSpec(type=t.value, name=t.value) for t in DEFAULT_STAGE_TYPES]
    specs = []
    for index, entry in enumerate(body.stages):
        if isinstance(entry, StageType):
            specs.append(StageSpec(type=entry.value, name=entry.value))
        else:
            specs.append(StageSpec(type=entry.type.value, name=entry.name or entry.type.value,
                                   timeout_seconds=entry.timeout_seconds, approval=entry.approval,
                                   expected_seconds=entry.expected_seconds,
                                   environment=entry.environment,
                                   approval_policy=_policy(entry, index, body.approver_groups),
                                   retry_policy=entry.retry_policy(),
                                   always=bool(entry.always)))
    return specs


def _policy(entry: StageSpecIn, index: int, groups: dict[str, list[str]] | None) -> dict | None:
    """A stage's approval policy as declared (None: it declares none); 422 if it cannot be met
    (a group its approvers name is not in ``approverGroups``, more required than approvers)."""
    if not entry.has_policy():
        return None
    policy = policy_from_spec(entry.approvers, entry.required, entry.prevent_self_approval,
                              entry.on_timeout, entry.remind_after_seconds, groups)
    problems = check_policy(policy)
    if problems:
        raise ValidationFailed(
            f"stage {entry.name or entry.type.value}: {'; '.join(problems)}",
            details=[{"field": f"stages.{index}.approvers", "message": problem} for problem in problems])
    return policy.as_dict()


def create_run(ctx: ServiceContext, body: CreateRunIn, *, actor: str | None = None) -> RunAggregate:
    """Two round trips: the pipeline's counter (one ADD, which also returns the stage layout
    kept on the pipeline and records the pipeline's latest activity), then run + stages in one
    transaction, which also stores this run's layout on the pipeline when it differs
    (``schedule`` repeats the latest layout). ``actor`` (who creates it: the token's name) is
    recorded on the run; a client cannot set it. A run of a concurrency group reads its group
    first (1 GetItem; SUPERSEDED with a run to cancel, 1 Query more): ``concurrency.insert_run``."""
    now = ctx.clock.now()
    specs = stage_specs(body)  # first: a policy that cannot be met is a 422 that claims no number
    claimed = ctx.stores.pipelines.claim(body.pipeline, at=now)
    counter, stored_layout = claimed.counter, claimed.layout
    plain, secret = _variables_of(body)
    aggregate = new_run(
        body.pipeline, counter, specs, now,
        commit=body.commit.recorded() if body.commit else None,
        trigger=body.trigger, variables=plain,
        timeout_seconds=body.timeout_seconds, auto_advance=body.auto_advance,
        metadata=RunMetadata(branch=body.branch, actor=actor, source_url=body.source_url,
                             source="native", environment=body.environment),
        stop_grace_seconds=body.stop_grace_seconds,
    )
    if secret:  # kept as a keyed hash only, exactly as PUT /api/runs/{id}/variables does
        apply_variables(aggregate, secret, ctx.settings.secret_pepper)
    options = {"stop_grace_seconds": body.stop_grace_seconds} if body.stop_grace_seconds is not None else {}
    layout = layout_of(specs, timeout_seconds=body.timeout_seconds, auto_advance=body.auto_advance, **options)
    concurrency.insert_run(ctx, aggregate, layout=None if layout == stored_layout else layout,
                           setting=claimed.concurrency, group=body.concurrency_group, actor=actor)
    return aggregate


def _variables_of(body: CreateRunIn) -> tuple[dict[str, str], list[VariableChange]]:
    """Plain variables, and the secret ones (only the list form can mark a variable secret)."""
    if not isinstance(body.variables, list):
        return dict(body.variables or {}), []
    plain = {v.key: v.value for v in body.variables if not v.secret}
    return plain, [VariableChange(v.key, v.value, secret=True) for v in body.variables if v.secret]


def get_run(ctx: ServiceContext, run_id: str, *, missing: str | None = None) -> RunAggregate:
    aggregate = ctx.stores.runs.load_run(run_id) if ids.parse_run_id(run_id) else None
    if aggregate is None:
        raise NotFound(missing or f"run {run_id!r} not found")
    return aggregate


def list_runs(ctx: ServiceContext, query: ListRunsQuery) -> tuple[list[Run], str | None]:
    return ctx.stores.runs.list_runs(query.pipeline, query.status, query.limit, query.cursor)


def get_stage(ctx: ServiceContext, stage_id: str) -> Stage:
    stage = ctx.stores.runs.get_stage(stage_id)
    if stage is None:
        raise NotFound(f"stage {stage_id!r} not found")
    return stage


def stage_attempts(ctx: ServiceContext, stage_id: str, limit: int,
                   cursor: str | None) -> tuple[list[dict], str | None]:
    """A stage's ended attempts, newest first, paged (404 for an unknown stage)."""
    return ctx.stores.runs.list_attempts(get_stage(ctx, stage_id), limit, cursor)


def attempts_of_run(ctx: ServiceContext, aggregate: RunAggregate) -> dict[str, list[dict]]:
    """Every stage's ended attempts (stage id -> oldest first): ``?include=attempts``."""
    return attempts_of_stages(ctx, aggregate.stages)


def attempts_of_stages(ctx: ServiceContext, stages: list[Stage]) -> dict[str, list[dict]]:
    return ctx.stores.runs.attempts_of(stages)


def ended_attempt(ctx: ServiceContext, stage: Stage, number: int) -> dict | None:
    """Ended attempt ``number`` of a loaded stage (one read by key; none for a number that is
    not one of its ended attempts, the current one included), or None."""
    if not stage.has_attempt(number) or number == stage.attempt:
        return None
    return ctx.stores.runs.get_attempt(stage, number)


def run_id_of_stage(stage_id: str) -> str:
    parsed = ids.parse_stage_id(stage_id)
    if parsed is None:
        raise NotFound(f"stage {stage_id!r} not found")
    return parsed[0]


def mutate_run(ctx: ServiceContext, run_id: str, change: Callable[[RunAggregate], bool], *,
               guard_stage: str | None = None, missing: str | None = None,
               local: bool = False, stage: str | None = None,
               following: StageStatus | None = None) -> RunAggregate:
    """Load, change in memory, write back conditionally; reload and reapply on a lost race.

    A race lost to a change of another stage of the same run is retried transparently (both
    writers win, serially). A race lost on ``guard_stage`` itself is the client's conflict: the
    stage it meant to change is no longer the one it saw (its status, attempt, name or timeout
    moved: ``_as_seen``), so it gets a 409 instead of silently overwriting; a concurrent write
    that left all of those (a stop's grace end stamped on the running stage, a reminder) is not.
    ``change`` returns False when there is nothing to write (no round trip).
    ``missing`` is the 404 message when the run does not exist (e.g. naming the stage asked for).

    ``local``: ``change`` decides from the stage it changes alone, never from its siblings (a
    status change is; a rename, which checks the other names, is not). A change that then turns
    out to touch one stage and nothing of the run is written as that stage and the run's
    summary (``RunStore.save``): writers of different stages of one run do not conflict. The
    run driver reads every stage, so an ``autoAdvance`` run's changes are never local.
    ``stage`` is the stage a local change reads (default ``guard_stage``), and ``following``
    a status that makes it read the stages after it too, when the run has a stage in it
    (``RunStore.load_stage``): ``change`` then decides from those alone.

    After ``change``, two convergent rules complete every change the same way: an attempt that
    ran and ended in a status its stage's retry policy names is retried automatically
    (``schedule_retries``: RETRY_PENDING, a change of that stage alone), then the run driver.
    """
    guard_seen = None
    missing = missing or (guard_stage and f"stage {guard_stage!r} not found")
    for attempt in range(MAX_WRITE_ATTEMPTS):
        aggregate = _load(ctx, run_id, (stage or guard_stage) if local else None, missing, following)
        if guard_stage is not None:
            current = _as_seen(aggregate.stage(guard_stage))
            if attempt == 0:
                guard_seen = current
            elif current != guard_seen:
                raise Conflict(f"stage {guard_stage!r} was changed concurrently; read it again")
        before = aggregate.snapshot()
        if not change(aggregate):
            return aggregate
        schedule_retries(before, aggregate, ctx.clock.now())  # automatic retries (domain/retries.py)
        drive(aggregate, ctx.clock.now())  # the run driver, for every kind of change
        stamp_run_deadline(aggregate, ctx.clock.now())  # the run's timeoutSeconds on what started
        aggregate.refresh(ctx.clock.now())
        try:
            # a run of a concurrency group: its queue and its group join the write (concurrency.py)
            concurrency.save(ctx, before, aggregate, local=local and not aggregate.run.auto_advance)
        except ConcurrentModification:
            backoff(attempt)
            continue
        concurrency.after_save(ctx, before, aggregate)
        return aggregate
    raise ConcurrentModification(f"run {run_id!r} is too busy; retry")


def _as_seen(stage: Stage) -> tuple:
    """What a client that changes a stage saw of it: a concurrent change of any of these makes
    its change a conflict (409), one of anything else is applied under it."""
    return stage.status, stage.attempt, stage.name, stage.timeout_seconds


def _load(ctx: ServiceContext, run_id: str, only: str | None, missing: str | None,
          following: StageStatus | None = None) -> RunAggregate:
    """The run to change: only stage ``only`` (and the stages after it, with ``following``)
    when the change reads nothing else (one read whatever the run's size), the whole run
    otherwise -- and always for an ``autoAdvance`` run, whose driver reads every stage."""
    if only is not None and ids.parse_stage_id(only) is not None:
        store = ctx.stores.runs
        aggregate = store.load_stage(only) if following is None else store.load_stage(only, following)
        if aggregate is None:
            raise NotFound(missing or f"run {run_id!r} not found")
        # the driver of an autoAdvance run, and the group of a grouped run, read every stage
        if not (aggregate.partial and (aggregate.run.auto_advance or aggregate.run.concurrency_group)):
            return aggregate
    return get_run(ctx, run_id, missing=missing)


def patch_stage(ctx: ServiceContext, stage_id: str, patch: PatchStageIn) -> Stage:
    """A status or timeout change reads the stage and the run's summary only (``local``). A
    rename reads the whole run (one Query) because names are unique in a run, and writes the
    stage and the run item conditioned on the change counter read (so two renames to one name
    cannot both land; no index entry moves). Kept so on purpose: making the check O(1) needs the names
    somewhere keyed -- a marker item per name (one more write per stage on every create, and
    items every run Query reads), or a name set on the run item (bytes on every read of it) --
    which would tax every run for a rare, administrative change (docs/performance.md)."""
    fields = patch.model_fields_set

    def change(aggregate: RunAggregate) -> bool:
        now = ctx.clock.now()
        stage = aggregate.stage(stage_id)
        original = asdict(stage)
        # PatchStageIn refuses a null name or status: set means not None
        if patch.name is not None and patch.name != stage.name:
            if any(s.name == patch.name for s in aggregate.stages if s is not stage):
                raise Conflict(f"another stage of this run is already named {patch.name!r}")
            stage.name = patch.name
        if "timeout_seconds" in fields:
            stage.timeout_seconds = patch.timeout_seconds
        if patch.status is not None:
            change_status(stage, patch.status, now)
        if asdict(stage) == original:
            return False
        stage.updated_at = now
        return True

    # a rename reads the other stages' names: a change of the run, not of this stage alone
    aggregate = mutate_run(ctx, run_id_of_stage(stage_id), change, guard_stage=stage_id,
                           local=patch.name is None)
    return aggregate.stage(stage_id)


def delete_stage(ctx: ServiceContext, stage_id: str) -> Stage:
    removed: list[Stage] = []

    def change(aggregate: RunAggregate) -> bool:
        removed[:] = [aggregate.remove_stage(stage_id)]
        return True

    mutate_run(ctx, run_id_of_stage(stage_id), change, guard_stage=stage_id)
    return removed[0]


def delete_run(ctx: ServiceContext, run_id: str) -> RunAggregate:
    """Deleting is the caller's last word, so a concurrent change only causes a reload."""
    for attempt in range(MAX_WRITE_ATTEMPTS):
        aggregate = get_run(ctx, run_id)
        try:
            ctx.stores.runs.delete_run(aggregate)
        except ConcurrentModification:
            backoff(attempt)
            continue
        concurrency.after_delete(ctx, aggregate)
        return aggregate
    raise ConcurrentModification(f"run {run_id!r} is too busy; retry")
