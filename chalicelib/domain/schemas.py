"""Request bodies as pydantic models: strict types, unknown fields refused, bounded sizes.

Bodies are validated straight from the raw JSON bytes (``model_validate_json``) in strict mode,
so "30" is not an integer and "true" is not a boolean; a client learns about a wrong type
instead of having it silently coerced.
"""
from __future__ import annotations

import functools
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    WrapValidator,
    model_validator,
)

from .ids import PIPELINE_PATTERN
from .status import StageStatus, StageType

MAX_STAGES = 50
MAX_VARIABLES = 100
MAX_TIMEOUT_SECONDS = 30 * 24 * 3600

PipelineName = Annotated[str, StringConstraints(pattern=PIPELINE_PATTERN)]
StageName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$")]
VariableKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")]
VariableValue = Annotated[str, StringConstraints(max_length=4096)]
TimeoutSeconds = Annotated[int, Field(ge=1, le=MAX_TIMEOUT_SECONDS)]
Approval = Literal["AUTO", "MANUAL"]


class StrictModel(BaseModel):
    """Request bodies: unknown fields and silent coercions are errors. Each model is built on
    its first use (``defer_build``): a function that never validates one (timers, outbox) does
    not pay for it at cold start, and the API builds only the ones its requests need."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True, defer_build=True)


class CommitIn(StrictModel):
    hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{7,64}$")]
    message: Annotated[str, StringConstraints(max_length=4000)] | None = None
    committer: Annotated[str, StringConstraints(max_length=200)] | None = None


class StageSpecIn(StrictModel):
    type: StageType
    name: StageName | None = None
    timeout_seconds: TimeoutSeconds | None = Field(default=None, alias="timeoutSeconds")
    approval: Approval = "AUTO"
    # A stage driven by the tracker itself: its timer completes it with SUCCESS this long after
    # it started (unless its timeout comes first). See domain/timers.py.
    expected_seconds: TimeoutSeconds | None = Field(default=None, alias="expectedSeconds")


VariableMap = Annotated[dict[VariableKey, VariableValue], Field(max_length=MAX_VARIABLES)]
VariableList = Annotated[list["VariableIn"], Field(min_length=1, max_length=MAX_VARIABLES)]


@functools.cache
def _variables_adapter(shape: str) -> TypeAdapter:
    return TypeAdapter(VariableList if shape == "list" else VariableMap)


def _map_or_list(value, _handler):
    """Either shape, validated as that shape alone: errors then name the field as they would
    without the choice (``variables.K``, ``variables.0.value``), not the union's branches."""
    # "map" is only the cache key of the other shape (any value but "list" means map)
    shape = "list" if isinstance(value, list) else "map"  # pragma: no mutate
    # pragma below: strict=None/omitted keep the models' own strict config, and from JSON the map
    # shape has nothing lax mode would coerce; strict=False (which would coerce) is tested.
    return _variables_adapter(shape).validate_python(value, strict=True)  # pragma: no mutate


class CreateRunIn(StrictModel):
    pipeline: PipelineName
    stages: Annotated[list[StageType | StageSpecIn], Field(min_length=1, max_length=MAX_STAGES)] | None = None
    commit: CommitIn | None = None
    trigger: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    # {"KEY": "value"}, or the list of PUT /api/runs/{id}/variables to mark some secret
    variables: Annotated[VariableMap | VariableList, WrapValidator(_map_or_list)] | None = None
    timeout_seconds: TimeoutSeconds | None = Field(default=None, alias="timeoutSeconds")
    # The run driver: when a stage succeeds, the next stage starts by itself.
    auto_advance: bool = Field(default=False, alias="autoAdvance")

    @model_validator(mode="after")
    def _unique_stage_names(self) -> CreateRunIn:
        if self.stages:
            names = [s.value if isinstance(s, StageType) else (s.name or s.type.value) for s in self.stages]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(
                    f"stage names must be unique within a run; repeated: {', '.join(duplicates)}"
                )
        if isinstance(self.variables, list):
            _refuse_repeated_keys(self.variables)
        return self


class PatchStageIn(StrictModel):
    status: StageStatus | None = None
    name: StageName | None = None
    timeout_seconds: TimeoutSeconds | None = Field(default=None, alias="timeoutSeconds")

    @model_validator(mode="after")
    def _not_empty(self) -> PatchStageIn:
        if not self.model_fields_set:
            raise ValueError("a patch must set at least one of: status, name, timeoutSeconds")
        if "status" in self.model_fields_set and self.status is None:
            raise ValueError("status cannot be null")
        if "name" in self.model_fields_set and self.name is None:
            raise ValueError("name cannot be null")
        return self


class ListRunsQuery(StrictModel):
    pipeline: PipelineName
    status: StageStatus | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    cursor: Annotated[str, StringConstraints(max_length=2048)] | None = None


class IncludeQuery(BaseModel):
    """``?include=attempts`` on a run or a stage: its stages' ended attempts too. Other query
    parameters are ignored, as they always were on these routes."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    include: Literal["attempts"] | None = None


class AttemptsQuery(StrictModel):
    """``GET /api/stages/{id}/attempts``: newest first, ``limit`` per page."""

    limit: Annotated[int, Field(ge=1, le=100)] = 20
    cursor: Annotated[str, StringConstraints(max_length=2048)] | None = None


# ---- operations (domain/operations.py) --------------------------------------------------------

Reason = Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class CancelIn(StrictModel):
    reason: Reason | None = None


class RetryRunIn(StrictModel):
    scope: Literal["FAILED", "ALL"] = "FAILED"


class DecisionIn(StrictModel):
    comment: Reason | None = None


class VariableIn(StrictModel):
    key: VariableKey
    value: VariableValue
    secret: bool = False


class ApplyVariablesIn(StrictModel):
    variables: Annotated[list[VariableIn], Field(min_length=1, max_length=MAX_VARIABLES)]

    @model_validator(mode="after")
    def _unique_keys(self) -> ApplyVariablesIn:
        _refuse_repeated_keys(self.variables)
        return self


def _refuse_repeated_keys(variables: list[VariableIn]) -> None:
    keys = [v.key for v in variables]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(f"each key may appear once; repeated: {', '.join(duplicates)}")


class PauseIn(StrictModel):
    cause: Reason | None = None


class ScheduleIn(StrictModel):
    variables: Annotated[dict[VariableKey, VariableValue], Field(max_length=MAX_VARIABLES)] | None = None


class EmptyIn(StrictModel):
    """An operation without parameters: no body, or ``{}``."""
