"""The ingest queue's and topic's wire format: one JSON message, turned into one command.

Each message class names its ``action`` and builds its command (service/commands.py); the
bodies are validated as the API validates its own (strict, unknown fields refused, the same
limits: the operation messages reuse the HTTP body models). ``ingest_message`` keys a message
by its ``idempotencyKey`` (else by the transport's message id) and hands the command to
``service.ingest.ingest_command``, which applies it once. Adding an action: a class here and
its entry in ``IngestMessage``.
"""
from __future__ import annotations

import json
from typing import Annotated, Literal, Union, get_args

from pydantic import ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from ..domain import operations as rules
from ..domain.errors import BadRequest, ValidationFailed
from ..domain.operations import VariableChange
from ..domain.schemas import (
    ApplyVariablesIn,
    CreateRunIn,
    DecisionIn,
    GraceSeconds,
    PatchStageIn,
    PauseIn,
    PipelineName,
    Reason,
    ScheduleIn,
    StageName,
    StrictModel,
)
from ..service import ServiceContext, commands, ingest

REDACTED = "[REDACTED]"
IdempotencyKey = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,255}$")]
StageIdText = Annotated[str, StringConstraints(min_length=1, max_length=300)]
Counter = Annotated[int, Field(ge=1, le=10**12 - 1)]  # a run or stage counter, as the routes take


class _Message(StrictModel):
    model_config = ConfigDict(**StrictModel.model_config)

    idempotency_key: IdempotencyKey | None = Field(default=None, alias="idempotencyKey")
    action: str  # each message narrows it to its own name(s)

    def command(self) -> commands.Command:
        raise NotImplementedError


class CreateRunMessage(_Message):
    action: Literal["create_run"]
    run: CreateRunIn

    def command(self) -> commands.Command:
        return commands.CreateRun(self.run)


class PatchStageMessage(_Message):
    action: Literal["patch_stage"]
    stage_id: StageIdText = Field(alias="stageId")
    patch: PatchStageIn

    def command(self) -> commands.Command:
        return commands.PatchStage(self.stage_id, self.patch)


class CancelRunMessage(_Message):
    action: Literal["cancel_run"]
    run_id: StageIdText = Field(alias="runId")
    reason: Reason | None = None
    # A force-cancel (finally stages skipped too); left out of the message's hash when false,
    # so a cancel_run sent before it existed keeps its claim key.
    force: bool = Field(default=False, exclude_if=lambda value: not value)

    def command(self) -> commands.Command:
        return commands.CancelRun(self.run_id, self.reason, self.force)


class CancelStageMessage(_Message):
    action: Literal["cancel_stage"]
    stage_id: StageIdText = Field(alias="stageId")
    reason: Reason | None = None

    def command(self) -> commands.Command:
        return commands.CancelStage(self.stage_id, self.reason)


class RetryRunMessage(_Message):
    action: Literal["retry_run"]
    run_id: StageIdText = Field(alias="runId")
    scope: Literal["FAILED", "ALL"] = "FAILED"

    def command(self) -> commands.Command:
        return commands.RetryRun(self.run_id, self.scope)


class RetryStageMessage(_Message):
    action: Literal["retry_stage"]
    stage_id: StageIdText = Field(alias="stageId")

    def command(self) -> commands.Command:
        return commands.RetryStage(self.stage_id)


class DecideStageMessage(_Message):
    action: Literal["approve_stage", "reject_stage"]
    stage_id: StageIdText = Field(alias="stageId")
    comment: Reason | None = None

    def command(self) -> commands.Command:
        decision = rules.APPROVED if self.action == "approve_stage" else rules.REJECTED
        return commands.DecideStage(self.stage_id, decision, self.comment)


# ---- the operations the API and the dialects offer beyond those above ---------------------------

class ApplyVariablesMessage(_Message, ApplyVariablesIn):
    """``PUT /api/runs/{runId}/variables``: ``variables`` as its body's."""
    action: Literal["apply_variables"]
    run_id: StageIdText = Field(alias="runId")

    def command(self) -> commands.Command:
        return commands.ApplyVariables(self.run_id, tuple(
            VariableChange(key=v.key, value=v.value, secret=v.secret) for v in self.variables))


class PausePipelineMessage(_Message, PauseIn):
    """``POST /api/pipelines/{pipeline}/pause``: ``cause`` as its body's."""
    action: Literal["pause_pipeline"]
    pipeline: PipelineName

    def command(self) -> commands.Command:
        return commands.PausePipeline(self.pipeline, self.cause)


class UnpausePipelineMessage(_Message):
    action: Literal["unpause_pipeline"]
    pipeline: PipelineName

    def command(self) -> commands.Command:
        return commands.UnpausePipeline(self.pipeline)


class ReleaseLockMessage(_Message):
    """GoCD's releaseLock (``POST /go/api/pipelines/{pipeline}/releaseLock``)."""
    action: Literal["release_lock"]
    pipeline: PipelineName

    def command(self) -> commands.Command:
        return commands.ReleaseLock(self.pipeline)


class SchedulePipelineMessage(_Message, ScheduleIn):
    """``POST /api/pipelines/{pipeline}/schedule``: ``variables`` as its body's."""
    action: Literal["schedule_pipeline"]
    pipeline: PipelineName

    def command(self) -> commands.Command:
        return commands.SchedulePipeline(self.pipeline, variables=self.variables)


class StopRunMessage(_Message):
    """``POST /api/pipelines/{pipeline}/runs/{counter}/stop``."""
    action: Literal["stop_run"]
    pipeline: PipelineName
    counter: Counter
    reason: Reason | None = None
    grace_seconds: GraceSeconds | None = Field(default=None, alias="graceSeconds",
                                                  exclude_if=lambda value: value is None)

    def command(self) -> commands.Command:
        return commands.StopRun(self.pipeline, self.counter, self.reason, self.grace_seconds)


class CancelStageByNameMessage(_Message):
    """GoCD's stage cancel: the stage of that name in the pipeline's latest run."""
    action: Literal["cancel_stage_by_name"]
    pipeline: PipelineName
    stage_name: StageName = Field(alias="stageName")
    reason: Reason | None = None

    def command(self) -> commands.Command:
        return commands.CancelStageByName(self.pipeline, self.stage_name, self.reason)


class CancelStageAttemptMessage(_Message):
    """GoCD v3's stage cancel: run ``counter``'s named stage, if ``attempt`` is its current one."""
    action: Literal["cancel_stage_attempt"]
    pipeline: PipelineName
    counter: Counter
    stage_name: StageName = Field(alias="stageName")
    attempt: Counter

    def command(self) -> commands.Command:
        return commands.CancelStageAttempt(self.pipeline, self.counter, self.stage_name, self.attempt)


class RerunStageByNameMessage(_Message):
    """GoCD's run stage: a new attempt of run ``counter``'s named stage."""
    action: Literal["rerun_stage_by_name"]
    pipeline: PipelineName
    counter: Counter
    stage_name: StageName = Field(alias="stageName")

    def command(self) -> commands.Command:
        return commands.RerunStageByName(self.pipeline, self.counter, self.stage_name)


class ApproveWaitingMessage(_Message, DecisionIn):
    """Buddy's APPLY: approve the run's stage waiting for approval."""
    action: Literal["approve_waiting"]
    run_id: StageIdText = Field(alias="runId")

    def command(self) -> commands.Command:
        return commands.ApproveWaiting(self.run_id, self.comment)


MESSAGE_TYPES: tuple[type[_Message], ...] = (
    CreateRunMessage, PatchStageMessage, CancelRunMessage, CancelStageMessage, RetryRunMessage,
    RetryStageMessage, DecideStageMessage, ApplyVariablesMessage, PausePipelineMessage,
    UnpausePipelineMessage, SchedulePipelineMessage, StopRunMessage, CancelStageByNameMessage,
    CancelStageAttemptMessage, RerunStageByNameMessage, ApproveWaitingMessage, ReleaseLockMessage,
)
MESSAGE_ACTIONS = tuple(action for kind in MESSAGE_TYPES
                        for action in get_args(kind.model_fields["action"].annotation))


def _adapter() -> TypeAdapter:
    """The discriminated union of MESSAGE_TYPES (built on first use: only the queue and topic
    handlers need it)."""
    union = Union[MESSAGE_TYPES]  # type: ignore[valid-type]  # noqa: UP007
    return TypeAdapter(Annotated[union, Field(discriminator="action")])


_message_adapter: TypeAdapter | None = None


def parse_message(text: str | bytes) -> _Message:
    """One queue/topic message; 400 for bad JSON, 422 naming the field for a bad message."""
    global _message_adapter
    if _message_adapter is None:
        _message_adapter = _adapter()
    try:
        message: _Message = _message_adapter.validate_json(text)
        return message
    except ValidationError as error:
        details = [{"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"],
                    "type": e["type"]} for e in error.errors(include_url=False, include_input=False)]
        if any(d["type"] == "json_invalid" for d in details):
            raise BadRequest("message is not valid JSON") from None
        if any(d["type"] in ("union_tag_not_found", "union_tag_invalid") for d in details):
            raise ValidationFailed(f"message needs an action, one of: {', '.join(MESSAGE_ACTIONS)}",
                                   details=details) from None
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        raise ValidationFailed(f"invalid message: {summary}", details=details) from None


def ingest_message(ctx: ServiceContext, body: str, *, transport_id: str, actor: str) -> tuple[dict, bool]:
    """A queue/topic message, once: keyed by its ``idempotencyKey`` when it has one (so the same
    message sent to the queue and the topic applies once), else by the transport's message id
    (SQS redelivers with the same id)."""
    message = parse_message(body)
    key = f"key:{message.idempotency_key}" if message.idempotency_key else f"id:{transport_id}"
    canonical = message.model_dump_json(by_alias=True, exclude={"idempotency_key"}).encode()
    action: str = message.action
    return ingest.ingest_command(ctx, action, message.command(), key=key, payload=canonical, actor=actor)



def redacted(body: str) -> str:
    """A message as the dead-letter queue keeps it: the value of every variable marked secret
    replaced. A secret is kept only as a keyed hash once applied; a message that never applied
    must not leave it in clear either. Anything else is kept as sent, to be looked at or resent."""
    try:
        message = json.loads(body)
    except ValueError:
        return body
    variables = message.get("variables") if isinstance(message, dict) else None
    if not isinstance(variables, list):
        return body
    for variable in variables:
        if isinstance(variable, dict) and variable.get("secret", False) is not False and "value" in variable:
            variable["value"] = REDACTED
    return json.dumps(message, separators=(",", ":"))
