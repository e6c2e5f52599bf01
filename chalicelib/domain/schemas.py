"""Request bodies as pydantic models: strict types, unknown fields refused, bounded sizes.

Bodies are validated straight from the raw JSON bytes (``model_validate_json``) in strict mode,
so "30" is not an integer and "true" is not a boolean; a client learns about a wrong type
instead of having it silently coerced.
"""
from __future__ import annotations

import functools
import re
from datetime import date
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationInfo,
    WrapValidator,
    field_validator,
    model_validator,
)

from . import cron
from .clock import format_iso
from .concurrency import GROUP_PATTERN, Mode, Queue
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
# How long a stop lets running stages finish (domain/operations.py: stop_run); 0: cancel them at
# the next timer. At most a day, as operations.MAX_STOP_GRACE_SECONDS says.
GraceSeconds = Annotated[int, Field(ge=0, le=24 * 3600)]
Approval = Literal["AUTO", "MANUAL"]
# Approval policies (domain/approvals.py): a token name, or ``group:<name>`` of ``approverGroups``.
MAX_APPROVERS = 50
MAX_APPROVER_GROUPS = 20
ApproverName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9 _.@\-]{0,99}$")]
GroupName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")]
ConcurrencyGroupName = Annotated[str, StringConstraints(pattern=GROUP_PATTERN)]
ApproverRef = Annotated[str, StringConstraints(
    pattern=r"^(group:[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}|[A-Za-z0-9_][A-Za-z0-9 _.@\-]{0,99})$")]
OnTimeout = Literal["TIMED_OUT", "FAILURE", "APPROVE", "REJECT"]
# Run metadata (what people search runs by): printable text, bounded; a URL only http(s), so a
# link shown to people can never be a javascript: or data: one.
Branch = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]{1,255}$")]
Environment = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-/ ]{0,99}$")]
SourceUrl = Annotated[str, StringConstraints(pattern=r"^https?://[^\s\x00-\x1f\x7f]{1,2040}$")]


def _unset(value: object) -> bool:
    """Fields added to a body later are left out of its dump while unset, so a message's
    canonical form (the hash its queue claim is keyed on: events/messages.py) stays the same."""
    return value is None


CommitSha = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{7,64}$")]


class StrictModel(BaseModel):
    """Request bodies: unknown fields and silent coercions are errors. Each model is built on
    its first use (``defer_build``): a function that never validates one (timers, outbox) does
    not pay for it at cold start, and the API builds only the ones its requests need."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True, defer_build=True)


class CommitIn(StrictModel):
    hash: CommitSha
    message: Annotated[str, StringConstraints(max_length=4000)] | None = None
    committer: Annotated[str, StringConstraints(max_length=200)] | None = None
    committed_at: AwareDatetime | None = Field(default=None, alias="committedAt", exclude_if=_unset)

    def recorded(self) -> dict:
        """The commit as a run records it (``committedAt`` as ISO-8601 UTC with milliseconds)."""
        commit = self.model_dump(exclude_none=True, exclude={"committed_at"})
        if self.committed_at is not None:
            commit["committedAt"] = format_iso(self.committed_at)
        return commit


# Automatic retries (domain/retries.py): bounded so one stage can never loop for long.
MAX_RETRIES = 10
MAX_BACKOFF_SECONDS = 3600
RetryWhen = Literal["FAILURE", "TIMED_OUT"]
RETRY_WHEN: tuple[RetryWhen, ...] = ("FAILURE", "TIMED_OUT")  # the default: both


def _distinct(values: list) -> list:
    if len(set(values)) != len(values):
        raise ValueError("each status at most once")
    return values


def _number_is_max(value: object) -> object:
    """``retry: 2`` is ``retry: {"max": 2}`` (GitLab's short form)."""
    return {"max": value} if isinstance(value, int) and not isinstance(value, bool) else value


class RetryIn(StrictModel):
    """A stage's ``retry``: ``max`` automatic retries on the statuses in ``when`` (default both),
    the first after ``backoffSeconds`` (default 0), each next one twice as long, at most 3600 s."""

    max: Annotated[int, Field(ge=1, le=MAX_RETRIES)]
    when: Annotated[list[RetryWhen], Field(min_length=1, max_length=2), AfterValidator(_distinct)] = Field(
        default_factory=lambda: list(RETRY_WHEN))
    backoff_seconds: Annotated[int, Field(ge=0, le=MAX_BACKOFF_SECONDS)] = Field(
        default=0, alias="backoffSeconds")


class StageSpecIn(StrictModel):
    type: StageType
    name: StageName | None = None
    timeout_seconds: TimeoutSeconds | None = Field(default=None, alias="timeoutSeconds")
    approval: Approval = "AUTO"
    # A stage driven by the tracker itself: its timer completes it with SUCCESS this long after
    # it started (unless its timeout comes first). See domain/timers.py.
    expected_seconds: TimeoutSeconds | None = Field(default=None, alias="expectedSeconds")
    environment: Environment | None = Field(default=None, exclude_if=_unset)
    # A MANUAL stage's approval policy (domain/approvals.py); every field unset: none.
    approvers: Annotated[list[ApproverRef], Field(min_length=1, max_length=MAX_APPROVERS)] | None = Field(
        default=None, exclude_if=_unset)
    required: Annotated[int, Field(ge=1, le=MAX_APPROVERS)] | None = Field(default=None, exclude_if=_unset)
    prevent_self_approval: bool | None = Field(default=None, alias="preventSelfApproval", exclude_if=_unset)
    on_timeout: OnTimeout | None = Field(default=None, alias="onTimeout", exclude_if=_unset)
    remind_after_seconds: TimeoutSeconds | None = Field(default=None, alias="remindAfterSeconds",
                                                        exclude_if=_unset)
    # Automatic retries on FAILURE / TIMED_OUT (domain/retries.py); a number N is {"max": N}.
    retry: Annotated[RetryIn | None, BeforeValidator(_number_is_max)] = Field(default=None, exclude_if=_unset)

    def retry_policy(self) -> dict | None:
        """The policy as stored on the stage (``RetryPolicy.as_dict``), None without one."""
        if self.retry is None:
            return None
        return {"max": self.retry.max, "when": sorted(self.retry.when, key=RETRY_WHEN.index),
                "backoffSeconds": self.retry.backoff_seconds}
    # A finally stage: still runs after a failure, a stop or a cancel (model.Stage.always).
    always: bool | None = Field(default=None, exclude_if=_unset)

    def has_policy(self) -> bool:
        return any(value is not None for value in (self.approvers, self.required, self.prevent_self_approval,
                                                   self.on_timeout, self.remind_after_seconds))

    @model_validator(mode="after")
    def _policy_needs_manual(self) -> StageSpecIn:
        if self.has_policy() and self.approval != "MANUAL":
            raise ValueError("approvers, required, preventSelfApproval, onTimeout and remindAfterSeconds "
                             "need approval MANUAL")
        return self


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
    branch: Branch | None = Field(default=None, exclude_if=_unset)
    source_url: SourceUrl | None = Field(default=None, alias="sourceUrl", exclude_if=_unset)
    environment: Environment | None = Field(default=None, exclude_if=_unset)
    # Groups of token names that stage ``approvers`` name as ``group:<name>``.
    approver_groups: Annotated[dict[GroupName, Annotated[list[ApproverName], Field(
        min_length=1, max_length=MAX_APPROVERS)]], Field(max_length=MAX_APPROVER_GROUPS)] | None = Field(
        default=None, alias="approverGroups", exclude_if=_unset)
    # The concurrency group this run joins instead of its pipeline's default (domain/concurrency.py)
    concurrency_group: ConcurrencyGroupName | None = Field(
        default=None, alias="concurrencyGroup", exclude_if=_unset)
    # How long a stop of this run lets running stages finish (a stop may say otherwise).
    stop_grace_seconds: GraceSeconds | None = Field(default=None, alias="stopGraceSeconds",
                                                    exclude_if=_unset)

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


_ISO_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T[0-9:.]+(Z|[+-]\d{2}:\d{2})")


def _iso_text(value: object) -> object:
    """A query's instant must be written as ISO-8601 with its offset (not an epoch number)."""
    if not isinstance(value, str) or not _ISO_INSTANT.fullmatch(value):
        raise ValueError("an ISO-8601 date-time with a time zone, e.g. 2026-01-31T12:00:00Z")
    return value


Instant = Annotated[AwareDatetime, BeforeValidator(_iso_text)]
Cursor = Annotated[str, StringConstraints(max_length=2048)]
Actor = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]{1,200}$")]


class SearchRunsQuery(StrictModel):
    """``GET /api/runs``: every filter optional (the pipelines the token may see without
    ``pipeline``), newest first, ``limit`` per page; ``createdFrom`` / ``createdTo`` inclusive."""

    pipeline: PipelineName | None = None
    status: StageStatus | None = None
    branch: Branch | None = None
    actor: Actor | None = None
    commit: CommitSha | None = None
    source: Literal["native", "github", "gitlab", "cdevents", "codepipeline", "codebuild", "buddy",
                    "gocd", "codearts", "schedule"] | None = None
    created_from: Instant | None = Field(default=None, alias="createdFrom")
    created_to: Instant | None = Field(default=None, alias="createdTo")
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    cursor: Cursor | None = None

    @model_validator(mode="after")
    def _ordered(self) -> SearchRunsQuery:
        if self.created_from and self.created_to and self.created_from > self.created_to:
            raise ValueError("createdFrom must not be after createdTo")
        return self


IsoDate = Annotated[str, StringConstraints(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
# A stage's name as senders give it (a GitHub job "build (ubuntu-latest, 3.12)"), not only as the
# native API allows: any printable text.
AnyStageName = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]{1,200}$")]


class InsightsQuery(StrictModel):
    """``GET /api/insights``: one pipeline, or every pipeline the token may see; ``from``/``to``
    UTC days (ISO-8601 dates, both included; default the last 30 days up to today), at most
    ``insights.MAX_DAYS`` of them; ``stage``: that stage's figures."""

    pipeline: PipelineName | None = None
    stage: AnyStageName | None = None
    from_: IsoDate | None = Field(default=None, alias="from")
    to: IsoDate | None = None
    granularity: Literal["day", "week"] = "day"

    @model_validator(mode="after")
    def _real_dates(self) -> InsightsQuery:
        for name, value in (("from", self.from_), ("to", self.to)):
            if value is not None:
                try:
                    date.fromisoformat(value)
                except ValueError:
                    raise ValueError(f"{name} is not a date (YYYY-MM-DD)") from None
        return self


class PipelinesQuery(StrictModel):
    """``GET /api/pipelines``: most recently active first; ``runs`` newest runs of each."""

    limit: Annotated[int, Field(ge=1, le=100)] = 20
    runs: Annotated[int, Field(ge=0, le=20)] = 5
    cursor: Cursor | None = None


class ApprovalsQuery(StrictModel):
    """``GET /api/approvals``: waiting longest first."""

    limit: Annotated[int, Field(ge=1, le=100)] = 20
    cursor: Cursor | None = None


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


class CancelRunIn(CancelIn):
    """A run's cancel; ``force`` (default false) skips its finally stages too (a force-cancel:
    operations.cancel_run). A stage's cancel has no force: it never skips a finally stage."""

    force: bool = Field(default=False, exclude_if=lambda value: not value)


class StopIn(StrictModel):
    """A graceful stop: running stages may finish for ``graceSeconds`` (default: the run's
    ``stopGraceSeconds``, else operations.DEFAULT_STOP_GRACE_SECONDS)."""

    reason: Reason | None = None
    grace_seconds: GraceSeconds | None = Field(default=None, alias="graceSeconds", exclude_if=_unset)


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


class ConcurrencyIn(StrictModel):
    """``PUT /api/pipelines/{p}/concurrency``: the mode, the default group (None: the pipeline's
    name) and the queue discipline of the runs that wait (None: ALL). Stored whole: a PUT
    replaces the setting. ``NEWEST`` with SUPERSEDED is refused: no run waits there."""

    mode: Mode
    group: ConcurrencyGroupName | None = None
    queue: Queue | None = None

    @field_validator("queue")
    @classmethod
    def _queue_needs_waiting_runs(cls, value: Queue | None, info: ValidationInfo) -> Queue | None:
        if value == Queue.NEWEST and info.data.get("mode") == Mode.SUPERSEDED:
            raise ValueError("queue NEWEST needs mode QUEUED (or PARALLEL, for runs that name a "
                             "group): a SUPERSEDED run never waits")
        return value


# ---- schedules (issue 15 item 4): cron and time zone checked here, so a bad one is a 422 naming
# the field and the part of it at fault (domain/cron.py)

def _checked_cron(value: object) -> object:
    if isinstance(value, str):
        cron.parse(value)  # CronError is a ValueError: pydantic reports it on the field
    return value


def _checked_zone(value: object) -> object:
    if isinstance(value, str):
        cron.zone(value)
    return value


CronText = Annotated[str, StringConstraints(min_length=1, max_length=100), BeforeValidator(_checked_cron)]
TimeZoneName = Annotated[str, StringConstraints(min_length=1, max_length=64), BeforeValidator(_checked_zone)]
ScheduleVariables = Annotated[dict[VariableKey, VariableValue], Field(max_length=MAX_VARIABLES)]
ScheduleDescription = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]{0,255}$")]


class CreateScheduleIn(StrictModel):
    cron: CronText
    time_zone: TimeZoneName = Field(default="UTC", alias="timeZone")
    variables: ScheduleVariables | None = None
    enabled: bool = True
    description: ScheduleDescription | None = None


class PatchScheduleIn(StrictModel):
    """Only the fields given change; at least one."""

    cron: CronText | None = None
    time_zone: TimeZoneName | None = Field(default=None, alias="timeZone")
    variables: ScheduleVariables | None = None
    enabled: bool | None = None
    description: ScheduleDescription | None = None

    @model_validator(mode="after")
    def _something(self) -> PatchScheduleIn:
        if not self.model_fields_set:
            raise ValueError("give at least one of cron, timeZone, variables, enabled, description")
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self
