"""The queue/topic messages of our own API (SQS ``ingest_queue``, SNS ``ingest_topic``):
one JSON message each, ``{"action": "create_run"|"patch_stage"|..., ...}``.

Apart from the rest of the domain because building these models costs a cold start that never
reads a message (the API, the timers, the outbox): service/ingest.py imports this module on
the first message. The senders' payloads (GitHub, GitLab, CDEvents, AWS) are their
integrations' (chalicelib/integrations/).
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from .errors import BadRequest, ValidationFailed
from .schemas import CreateRunIn, PatchStageIn, Reason, StrictModel

# ---- queue and topic messages: the API's own updates --------------------------------------------

IdempotencyKey = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,255}$")]
StageIdText = Annotated[str, StringConstraints(min_length=1, max_length=300)]


class _Message(StrictModel):
    model_config = ConfigDict(**StrictModel.model_config)

    idempotency_key: IdempotencyKey | None = Field(default=None, alias="idempotencyKey")


class CreateRunMessage(_Message):
    action: Literal["create_run"]
    run: CreateRunIn


class PatchStageMessage(_Message):
    action: Literal["patch_stage"]
    stage_id: StageIdText = Field(alias="stageId")
    patch: PatchStageIn


class CancelRunMessage(_Message):
    action: Literal["cancel_run"]
    run_id: StageIdText = Field(alias="runId")
    reason: Reason | None = None


class CancelStageMessage(_Message):
    action: Literal["cancel_stage"]
    stage_id: StageIdText = Field(alias="stageId")
    reason: Reason | None = None


class RetryRunMessage(_Message):
    action: Literal["retry_run"]
    run_id: StageIdText = Field(alias="runId")
    scope: Literal["FAILED", "ALL"] = "FAILED"


class RetryStageMessage(_Message):
    action: Literal["retry_stage"]
    stage_id: StageIdText = Field(alias="stageId")


class DecideStageMessage(_Message):
    action: Literal["approve_stage", "reject_stage"]
    stage_id: StageIdText = Field(alias="stageId")
    comment: Reason | None = None


IngestMessage = Annotated[
    CreateRunMessage
    | PatchStageMessage
    | CancelRunMessage
    | CancelStageMessage
    | RetryRunMessage
    | RetryStageMessage
    | DecideStageMessage,
    Field(discriminator="action"),
]
_message_adapter: TypeAdapter | None = None
MESSAGE_ACTIONS = ("create_run", "patch_stage", "cancel_run", "cancel_stage", "retry_run", "retry_stage",
                   "approve_stage", "reject_stage")


def parse_message(text: str | bytes) -> BaseModel:
    """One queue/topic message; 400 for bad JSON, 422 naming the field for a bad message."""
    global _message_adapter
    if _message_adapter is None:  # built on first use: only the queue and topic handlers need it
        _message_adapter = TypeAdapter(IngestMessage)
    try:
        return _message_adapter.validate_json(text)
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
