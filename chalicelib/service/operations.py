"""Operations on runs and stages (cancel, stop, retry, approve/reject, variables) as use cases.

Each is one ``mutate_run``: load the run with its stages (1 Query; a stage retry reads only
what it restarts: ``retry_stage``), apply the pure rule from
domain/operations.py, write every changed item in one conditional transaction, re-apply on a
lost race. So an operation is all-or-nothing, and one that finds nothing to change (cancelling a
finished run, approving twice) writes nothing. Every entry point (native API, GoCD, CodeArts,
Buddy, the ingest queue and topic) reaches these through the command table (commands.py).
``actor`` is whoever the entry point says is calling.
"""
from __future__ import annotations

from ..domain import ids
from ..domain import operations as rules
from ..domain.errors import IllegalTransition, NotFound
from ..domain.model import RunAggregate, Stage
from ..domain.status import StageStatus
from . import ServiceContext, pipelines
from .runs import get_run, mutate_run, run_id_of_stage


def _stage_missing(stage_id: str) -> str:
    return f"stage {stage_id!r} not found"


def cancel_run(ctx: ServiceContext, run_id: str, *, actor: str,
               reason: str | None = None, force: bool = False) -> RunAggregate:
    """Cancel a run at once; ``force`` skips its finally (``always``) stages too
    (domain/operations.py: cancel_run). One whole-run transaction."""
    return mutate_run(ctx, run_id, lambda aggregate: rules.cancel_run(
        aggregate, ctx.clock.now(), actor=actor, reason=reason, force=force))


def run_id_by_counter(pipeline: str, counter: str | int) -> str:
    """The run id of a pipeline's run number (CodeArts' build_no, GoCD's counter)."""
    run_id = f"{pipeline}:{counter}"
    if ids.parse_run_id(run_id) is None:
        raise NotFound(f"run {counter} of pipeline {pipeline!r} not found")
    return run_id


def stop_run(ctx: ServiceContext, pipeline: str, counter: str | int, *, actor: str,
             reason: str | None = None, grace_seconds: int | None = None) -> RunAggregate:
    """A graceful stop (the native stop, CodeArts' "stop a build"), addressed by pipeline and run
    number: running stages may finish within the grace period, nothing new starts but
    ``always`` stages (domain/operations.py: stop_run). One whole-run transaction; the stage
    timers armed from it cancel what still runs when the grace period ends."""
    return mutate_run(
        ctx, run_id_by_counter(pipeline, counter),
        lambda aggregate: rules.stop_run(aggregate, ctx.clock.now(), actor=actor, reason=reason,
                                         grace_seconds=grace_seconds),
        missing=f"run {counter} of pipeline {pipeline!r} not found",
    )


def cancel_stage(ctx: ServiceContext, stage_id: str, *, actor: str,
                 reason: str | None = None) -> Stage:
    aggregate = mutate_run(
        ctx, run_id_of_stage(stage_id),
        lambda aggregate: rules.cancel_stage(aggregate, stage_id, ctx.clock.now(), actor=actor,
                                             reason=reason),
        missing=_stage_missing(stage_id),
    )
    return aggregate.stage(stage_id)


def retry_run(ctx: ServiceContext, run_id: str, scope: str = rules.SCOPE_FAILED) -> RunAggregate:
    def change(aggregate: RunAggregate) -> bool:
        rules.retry_run(aggregate, scope, ctx.clock.now())
        return True

    return mutate_run(ctx, run_id, change)


def retry_stage(ctx: ServiceContext, stage_id: str) -> Stage:
    """A new attempt of the stage and of the SKIPPED stages after it, costing what it changes:
    it reads the stage and the run's summary (one BatchGetItem) and, only when the run's
    counters hold a SKIPPED stage, the stages after it (one Query bounded by its position); it
    writes the stages it restarts, their ended attempts and the run's summary in one
    transaction, each stage conditioned on its own version (``mutate_run(local=True)``).

    Why nothing else need be read: the rule decides from this stage and the SKIPPED stages
    after it. Another stage turning SKIPPED concurrently (a PATCH, itself a change of that
    stage alone) commutes with the retry: the outcome is that of the retry first, then it.
    A change of the whole run bumps the run's version, which the write is conditioned on.

    A run that was stopped or cancelled is taken up again by the retry (its ``stopping`` is
    cleared: a change of the run item), so there the retry reads and writes the whole run."""
    stopped: list[bool] = []

    def change(aggregate: RunAggregate) -> bool:
        if aggregate.partial and aggregate.run.stopping is not None:
            stopped.append(True)
            return False  # nothing written: done again below on the whole run
        rules.retry_stage(aggregate, stage_id, ctx.clock.now())
        return True

    aggregate = mutate_run(ctx, run_id_of_stage(stage_id), change, missing=_stage_missing(stage_id),
                           local=True, stage=stage_id, following=StageStatus.SKIPPED)
    if stopped:
        aggregate = mutate_run(ctx, run_id_of_stage(stage_id), change, missing=_stage_missing(stage_id))
    return aggregate.stage(stage_id)


def decide_stage(ctx: ServiceContext, stage_id: str, decision: str, *, actor: str,
                 comment: str | None = None, approver: str | None = None) -> Stage:
    """Approve or reject a gate: a change of that stage alone (``local``: the stage and the run
    item, whose ``actor`` self-approval is checked against). Two approvers racing both count:
    each write is conditioned on the stage's version, and the loser reloads and applies its
    decision again (``mutate_run``), where it may find the gate already decided (409)."""
    aggregate = mutate_run(
        ctx, run_id_of_stage(stage_id),
        lambda aggregate: rules.decide(aggregate, stage_id, decision, ctx.clock.now(), actor=actor,
                                       comment=comment, approver=approver),
        missing=_stage_missing(stage_id), local=True, stage=stage_id,
    )
    return aggregate.stage(stage_id)


def approve_stage(ctx: ServiceContext, stage_id: str, *, actor: str, comment: str | None = None) -> Stage:
    return decide_stage(ctx, stage_id, rules.APPROVED, actor=actor, comment=comment)


def reject_stage(ctx: ServiceContext, stage_id: str, *, actor: str, comment: str | None = None) -> Stage:
    return decide_stage(ctx, stage_id, rules.REJECTED, actor=actor, comment=comment)


def apply_variables(ctx: ServiceContext, run_id: str,
                    changes: list[rules.VariableChange]) -> RunAggregate:
    """Merge variables into a run; secret values are kept only as a keyed hash."""
    pepper = ctx.settings.secret_pepper
    return mutate_run(ctx, run_id, lambda aggregate: rules.apply_variables(aggregate, changes, pepper))


# ---- for the dialect endpoints (api/gocd.py, api/buddy.py) -----------------------------------

def cancel_stage_by_name(ctx: ServiceContext, pipeline: str, stage_name: str, *, actor: str,
                         reason: str | None = None) -> Stage:
    """GoCD's stage cancel: the stage of that name in the pipeline's latest run.

    The latest run holds the pipeline's newest run number (one consistent GetItem, then the
    usual Query and transaction). If that number has no run (deleted, or its creation failed),
    the newest run on the byPipeline index is used. Cancelling a stage that is not active is a
    successful no-op, as in GoCD; an unknown pipeline or stage name is a 404.
    """
    seen: list[str] = []  # the run loaded, then the stage found

    def change(aggregate: RunAggregate) -> bool:
        seen[:] = [aggregate.run.id]
        stage = next((s for s in aggregate.stages if s.name == stage_name), None)
        if stage is None:
            raise NotFound(f"stage {stage_name!r} not found in the latest run of pipeline {pipeline!r}")
        seen.append(stage.id)
        return rules.cancel_stage(aggregate, stage.id, ctx.clock.now(), actor=actor, reason=reason)

    counter = pipelines.status(ctx, pipeline).counter
    try:
        aggregate = mutate_run(ctx, ids.run_id(pipeline, counter), change)
    except NotFound:
        if seen:  # the run exists: the 404 is about the stage
            raise
        newest = pipelines.latest_run(ctx, pipeline)
        if newest is None:
            raise NotFound(f"pipeline {pipeline!r} has no runs") from None
        aggregate = mutate_run(ctx, newest.id, change)
    return aggregate.stage(seen[-1])


def _named_stage(aggregate: RunAggregate, stage_name: str, pipeline: str) -> Stage:
    stage = next((s for s in aggregate.stages if s.name == stage_name), None)
    if stage is None:
        raise NotFound(
            f"stage {stage_name!r} not found in run {aggregate.run.counter} of pipeline {pipeline!r}"
        )
    return stage


def cancel_stage_attempt(ctx: ServiceContext, pipeline: str, counter: int, stage_name: str,
                         attempt: int, *, actor: str) -> Stage:
    """GoCD's current stage cancel, by pipeline counter, stage name and stage counter (attempt).

    One Query and at most one transaction. An attempt that is not the stage's current one has
    ended, so there is nothing to cancel: a successful no-op, as cancelling an inactive stage is;
    an attempt the stage never had is a 404.
    """
    found: list[Stage] = []

    def change(aggregate: RunAggregate) -> bool:
        stage = _named_stage(aggregate, stage_name, pipeline)
        found[:] = [stage]
        known = stage.has_attempt(attempt)
        if not known:
            raise NotFound(f"stage {stage_name!r} with counter {attempt} not found in run {counter} "
                           f"of pipeline {pipeline!r}")
        if attempt != stage.attempt:
            return False
        return rules.cancel_stage(aggregate, stage.id, ctx.clock.now(), actor=actor)

    aggregate = mutate_run(ctx, run_id_by_counter(pipeline, counter), change)
    return aggregate.stage(found[0].id)


def rerun_stage_by_name(ctx: ServiceContext, pipeline: str, counter: int, stage_name: str, *,
                        actor: str = "gocd", approver: str | None = None) -> Stage:
    """GoCD's run stage: a new attempt of the named stage of run ``counter`` (the native stage
    retry: 409 while it is active or before it ran). The name is found in the run (one Query),
    then the stage is retried as the native retry does it (``retry_stage``: what it restarts,
    the run's version left as it is), so both end in the same stored run. A rename between the
    two commutes with the retry: the stage is the one that had the name when it was read.
    A stage waiting for approval is approved instead, as GoCD's run of a manual stage is its
    approval: under the same rules as the native approve (``decide_stage``)."""
    aggregate = get_run(ctx, run_id_by_counter(pipeline, counter))
    stage = _named_stage(aggregate, stage_name, pipeline)
    if stage.status == StageStatus.WAITING_FOR_APPROVAL:
        return decide_stage(ctx, stage.id, rules.APPROVED, actor=actor, approver=approver)
    return retry_stage(ctx, stage.id)


def approve_waiting(ctx: ServiceContext, run_id: str, *, actor: str,
                    comment: str | None = None, approver: str | None = None) -> RunAggregate:
    """Buddy's APPLY: approve the run's stage that waits for approval (the first, if several).
    A run with no stage waiting is a 409 and changes nothing. The stage is picked from the whole
    run as read; the write is then the native approval's (``local``: that stage and the run's
    summary, conditioned on the stage's version), so both store the same run and race alike."""
    def change(aggregate: RunAggregate) -> bool:
        waiting = sorted((s for s in aggregate.stages if s.status == StageStatus.WAITING_FOR_APPROVAL),
                         key=lambda s: s.position)
        if not waiting:
            raise IllegalTransition(
                f"run {run_id!r} has no stage waiting for approval (run status "
                f"{aggregate.run.status.value})", details={"runStatus": aggregate.run.status.value})
        return rules.decide(aggregate, waiting[0].id, rules.APPROVED, ctx.clock.now(), actor=actor,
                            comment=comment, approver=approver)

    return mutate_run(ctx, run_id, change, local=True)
