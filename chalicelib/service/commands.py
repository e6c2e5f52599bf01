"""Every write, as a command: one frozen dataclass per operation, one handler each, one table.

Every entry point that changes something (the native routes, the GoCD, CodeArts and Buddy
routes, the ingest queue and topic) builds a command and calls ``execute``; nothing else
dispatches an operation. Adding an operation is: a command class and its handler here, the
route or message that builds it. The handlers are thin: the rules are in domain/, the use
cases in runs.py, operations.py and pipelines.py, which they call.

``actor`` is whoever the entry point says is calling (a token's name, ``sqs:<queue>``); the
commands that record no actor ignore it. Reads (views, listings, dialect lookups) are not
commands: each entry point calls the read use cases directly.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..domain import operations as rules
from ..domain.model import RunAggregate, Stage
from ..domain.operations import Pipeline, VariableChange
from ..domain.schedules import Schedule
from ..domain.schemas import ConcurrencyIn, CreateRunIn, CreateScheduleIn, PatchScheduleIn, PatchStageIn
from . import ServiceContext, concurrency, operations, pipelines, runs, schedules

R = TypeVar("R")


class Command(Generic[R]):
    """A write; ``R`` is what its handler returns (the run, stage or pipeline it changed)."""


# ---- runs and stages, by id ------------------------------------------------------------------

@dataclass(frozen=True)
class CreateRun(Command[RunAggregate]):
    body: CreateRunIn
    # Whose run it is (the run's ``actor``): the authenticated token's name, which the client
    # cannot choose (the ``actor`` of ``execute`` may be a Basic auth user name it can). None:
    # the entry point's actor (a queue message: ``sqs:<queue>``).
    creator: str | None = None


@dataclass(frozen=True)
class PatchStage(Command[Stage]):
    stage_id: str
    patch: PatchStageIn


@dataclass(frozen=True)
class CancelRun(Command[RunAggregate]):
    """Cancel a run at once; ``force``: its finally (``always``) stages are skipped or cancelled
    too, so it is CANCELLED at once (GitHub's force-cancel, Argo's terminate)."""
    run_id: str
    reason: str | None = None
    force: bool = False


@dataclass(frozen=True)
class CancelStage(Command[Stage]):
    stage_id: str
    reason: str | None = None


@dataclass(frozen=True)
class RetryRun(Command[RunAggregate]):
    run_id: str
    scope: str = rules.SCOPE_FAILED


@dataclass(frozen=True)
class RetryStage(Command[Stage]):
    stage_id: str


@dataclass(frozen=True)
class DecideStage(Command[Stage]):
    """Approve or reject a stage waiting for approval (``decision``: APPROVED or REJECTED)."""
    stage_id: str
    decision: str
    comment: str | None = None
    # Who decides under an approval policy: the authenticated token's name, which the client
    # cannot choose (the ``actor`` may be a Basic auth user name it can). None: the actor.
    approver: str | None = None


@dataclass(frozen=True)
class ApplyVariables(Command[RunAggregate]):
    run_id: str
    changes: tuple[VariableChange, ...]


# ---- addressed by pipeline, run number or stage name (the dialects' addressing) ----------------

@dataclass(frozen=True)
class StopRun(Command[RunAggregate]):
    """Stop the run numbered ``counter`` of ``pipeline`` gracefully (CodeArts' stop, the native
    stop): running stages may finish for ``grace_seconds`` (None: the run's, else the default)."""
    pipeline: str
    counter: str | int
    reason: str | None = None
    grace_seconds: int | None = None


@dataclass(frozen=True)
class CancelStageByName(Command[Stage]):
    """Cancel the stage of that name in the pipeline's latest run (GoCD 17.1's cancel)."""
    pipeline: str
    stage_name: str
    reason: str | None = None


@dataclass(frozen=True)
class CancelStageAttempt(Command[Stage]):
    """Cancel a named stage of run ``counter`` if ``attempt`` is its current one (GoCD v3)."""
    pipeline: str
    counter: int
    stage_name: str
    attempt: int


@dataclass(frozen=True)
class RerunStageByName(Command[Stage]):
    """A new attempt of the named stage of run ``counter`` (GoCD's run stage); a stage waiting
    for approval is approved instead (GoCD's trigger of a manual stage), by ``approver``."""
    pipeline: str
    counter: int
    stage_name: str
    approver: str | None = None  # as DecideStage's


@dataclass(frozen=True)
class ApproveWaiting(Command[RunAggregate]):
    """Approve the run's stage that waits for approval (Buddy's APPLY)."""
    run_id: str
    comment: str | None = None
    approver: str | None = None  # as DecideStage's


# ---- pipelines ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class PausePipeline(Command[Pipeline]):
    pipeline: str
    cause: str | None = None


@dataclass(frozen=True)
class UnpausePipeline(Command[Pipeline]):
    pipeline: str


@dataclass(frozen=True)
class SchedulePipeline(Command[RunAggregate]):
    """A new run laid out like the pipeline's latest one."""
    pipeline: str
    variables: Mapping[str, str] | None = None
    secret_variables: Mapping[str, str] | None = None
    commit: Mapping[str, Any] | None = None
    source: str = "native"  # the entry point that scheduled it (GoCD's schedule: "gocd")
    creator: str | None = None  # as CreateRun's


@dataclass(frozen=True)
class ReleaseLock(Command[Pipeline]):
    """GoCD's releaseLock: the run holding the pipeline's default concurrency group lets it go
    (it keeps running) and the oldest queued run starts (service/concurrency.py)."""
    pipeline: str


@dataclass(frozen=True)
class SetConcurrency(Command[Pipeline]):
    """A pipeline's concurrency setting (configuration, as its schedules: API only)."""
    pipeline: str
    body: ConcurrencyIn


# ---- schedules (service/schedules.py; their firing is the minute tick's, not an entry point's) --

@dataclass(frozen=True)
class CreateSchedule(Command[Schedule]):
    pipeline: str
    body: CreateScheduleIn


@dataclass(frozen=True)
class ChangeSchedule(Command[Schedule]):
    pipeline: str
    schedule_id: str
    patch: PatchScheduleIn


@dataclass(frozen=True)
class DeleteSchedule(Command[Schedule]):
    pipeline: str
    schedule_id: str


# ---- the table ---------------------------------------------------------------------------------

Handler = Callable[[ServiceContext, Any, str], Any]
HANDLERS: dict[type, Handler] = {}


def handles(kind: type) -> Callable[[Handler], Handler]:
    """Registers the one handler of a command class."""
    def register(handler: Handler) -> Handler:
        if kind in HANDLERS:
            raise RuntimeError(f"{kind.__name__} has a handler already")
        HANDLERS[kind] = handler
        return handler
    return register


def execute(ctx: ServiceContext, command: Command[R], *, actor: str) -> R:
    """Run ``command`` through its handler."""
    handler = HANDLERS.get(type(command))
    if handler is None:
        raise TypeError(f"no handler for {type(command).__name__}")
    result: R = handler(ctx, command, actor)
    return result


@handles(CreateRun)
def _create_run(ctx: ServiceContext, command: CreateRun, actor: str) -> RunAggregate:
    return runs.create_run(ctx, command.body, actor=command.creator or actor)


@handles(PatchStage)
def _patch_stage(ctx: ServiceContext, command: PatchStage, actor: str) -> Stage:
    return runs.patch_stage(ctx, command.stage_id, command.patch)


@handles(CancelRun)
def _cancel_run(ctx: ServiceContext, command: CancelRun, actor: str) -> RunAggregate:
    return operations.cancel_run(ctx, command.run_id, actor=actor, reason=command.reason,
                                 force=command.force)


@handles(CancelStage)
def _cancel_stage(ctx: ServiceContext, command: CancelStage, actor: str) -> Stage:
    return operations.cancel_stage(ctx, command.stage_id, actor=actor, reason=command.reason)


@handles(RetryRun)
def _retry_run(ctx: ServiceContext, command: RetryRun, actor: str) -> RunAggregate:
    return operations.retry_run(ctx, command.run_id, command.scope)


@handles(RetryStage)
def _retry_stage(ctx: ServiceContext, command: RetryStage, actor: str) -> Stage:
    return operations.retry_stage(ctx, command.stage_id)


@handles(DecideStage)
def _decide_stage(ctx: ServiceContext, command: DecideStage, actor: str) -> Stage:
    return operations.decide_stage(ctx, command.stage_id, command.decision, actor=actor,
                                   comment=command.comment, approver=command.approver)


@handles(ApplyVariables)
def _apply_variables(ctx: ServiceContext, command: ApplyVariables, actor: str) -> RunAggregate:
    return operations.apply_variables(ctx, command.run_id, list(command.changes))


@handles(StopRun)
def _stop_run(ctx: ServiceContext, command: StopRun, actor: str) -> RunAggregate:
    return operations.stop_run(ctx, command.pipeline, command.counter, actor=actor, reason=command.reason,
                               grace_seconds=command.grace_seconds)


@handles(CancelStageByName)
def _cancel_stage_by_name(ctx: ServiceContext, command: CancelStageByName, actor: str) -> Stage:
    return operations.cancel_stage_by_name(ctx, command.pipeline, command.stage_name, actor=actor,
                                           reason=command.reason)


@handles(CancelStageAttempt)
def _cancel_stage_attempt(ctx: ServiceContext, command: CancelStageAttempt, actor: str) -> Stage:
    return operations.cancel_stage_attempt(ctx, command.pipeline, command.counter, command.stage_name,
                                           command.attempt, actor=actor)


@handles(RerunStageByName)
def _rerun_stage_by_name(ctx: ServiceContext, command: RerunStageByName, actor: str) -> Stage:
    return operations.rerun_stage_by_name(ctx, command.pipeline, command.counter, command.stage_name,
                                          actor=actor, approver=command.approver)


@handles(ApproveWaiting)
def _approve_waiting(ctx: ServiceContext, command: ApproveWaiting, actor: str) -> RunAggregate:
    return operations.approve_waiting(ctx, command.run_id, actor=actor, comment=command.comment,
                                      approver=command.approver)


@handles(PausePipeline)
def _pause_pipeline(ctx: ServiceContext, command: PausePipeline, actor: str) -> Pipeline:
    return pipelines.pause(ctx, command.pipeline, actor=actor, cause=command.cause)


@handles(UnpausePipeline)
def _unpause_pipeline(ctx: ServiceContext, command: UnpausePipeline, actor: str) -> Pipeline:
    return pipelines.unpause(ctx, command.pipeline)


@handles(ReleaseLock)
def _release_lock(ctx: ServiceContext, command: ReleaseLock, actor: str) -> Pipeline:
    concurrency.release_lock(ctx, command.pipeline)
    return pipelines.status(ctx, command.pipeline)


@handles(SetConcurrency)
def _set_concurrency(ctx: ServiceContext, command: SetConcurrency, actor: str) -> Pipeline:
    concurrency.set_setting(ctx, pipelines.known_name(command.pipeline), command.body.mode,
                            command.body.group, command.body.queue)
    return pipelines.status(ctx, command.pipeline)


@handles(SchedulePipeline)
def _schedule_pipeline(ctx: ServiceContext, command: SchedulePipeline, actor: str) -> RunAggregate:
    return pipelines.schedule(
        ctx, command.pipeline, actor=actor,
        variables=None if command.variables is None else dict(command.variables),
        secret_variables=None if command.secret_variables is None else dict(command.secret_variables),
        commit=None if command.commit is None else dict(command.commit), source=command.source,
        creator=command.creator,
    )


@handles(CreateSchedule)
def _create_schedule(ctx: ServiceContext, command: CreateSchedule, actor: str) -> Schedule:
    return schedules.create(ctx, command.pipeline, command.body, actor=actor)


@handles(ChangeSchedule)
def _change_schedule(ctx: ServiceContext, command: ChangeSchedule, actor: str) -> Schedule:
    return schedules.change(ctx, command.pipeline, command.schedule_id, command.patch)


@handles(DeleteSchedule)
def _delete_schedule(ctx: ServiceContext, command: DeleteSchedule, actor: str) -> Schedule:
    return schedules.delete(ctx, command.pipeline, command.schedule_id)
