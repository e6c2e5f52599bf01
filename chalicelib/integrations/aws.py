"""AWS CodePipeline and CodeBuild state changes, as EventBridge delivers them (the rule's
pattern is this integration's ``event_pattern`` in the registry; IAM, not a signature, says
who may put them on the bus).

CodePipeline: an execution is a run of the pipeline; each stage a stage; a Manual approval
action a stage of its own. CodeBuild: a build is a run of its project with one BUILD stage
(builds CodePipeline started are covered by that pipeline's events).
"""
from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from pydantic import ConfigDict, Field

from ..domain.errors import ValidationFailed
from ..domain.events import (
    ExternalUpdate,
    Ignored,
    StageUpdate,
    commit_of,
    parse_time,
    sanitize_name,
    stage_type_for,
    trigger_of,
)
from ..domain.status import FINAL, StageStatus, StageType
from .common import Text, Vendor, validate_payload

S = StageStatus
SOURCES = ("aws.codepipeline", "aws.codebuild")
CODEPIPELINE_DETAIL_TYPES = (
    "CodePipeline Pipeline Execution State Change",
    "CodePipeline Stage Execution State Change",
    "CodePipeline Action Execution State Change",
)
CODEBUILD_DETAIL_TYPES = ("CodeBuild Build State Change",)

_CP_STAGE = {"STARTED": S.IN_PROGRESS, "RESUMED": S.IN_PROGRESS, "SUCCEEDED": S.SUCCESS,
             "FAILED": S.FAILURE, "CANCELED": S.CANCELLED, "STOPPED": S.CANCELLED,
             "ABANDONED": S.CANCELLED}
_CP_PIPELINE = {"SUCCEEDED": S.SUCCESS, "FAILED": S.FAILURE, "CANCELED": S.CANCELLED,
                "STOPPED": S.CANCELLED, "SUPERSEDED": S.CANCELLED}
_CP_APPROVAL = {"STARTED": S.WAITING_FOR_APPROVAL, "SUCCEEDED": S.SUCCESS, "FAILED": S.FAILURE,
                "CANCELED": S.CANCELLED, "ABANDONED": S.CANCELLED}
_CB_STATUS = {"IN_PROGRESS": S.IN_PROGRESS, "SUCCEEDED": S.SUCCESS, "FAILED": S.FAILURE,
              "FAULT": S.FAILURE, "TIMED_OUT": S.TIMED_OUT, "STOPPED": S.CANCELLED}


class AwsEnvelope(Vendor):
    id: Text
    detail_type: str = Field(alias="detail-type")
    source: str
    account: str | None = None
    region: str | None = None
    time: str | None = None
    detail: dict


class CpActionType(Vendor):
    owner: str | None = None
    provider: str | None = None
    category: str | None = None


class CpDetail(Vendor):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)

    pipeline: Text
    execution_id: Text = Field(alias="execution-id")
    state: Text
    stage: str | None = None
    action: str | None = None
    type: CpActionType | None = None
    execution_trigger: dict | None = Field(default=None, alias="execution-trigger")


class CbPhase(Vendor):
    start_time: object = Field(default=None, alias="start-time")
    end_time: object = Field(default=None, alias="end-time")


class CbAdditional(Vendor):
    initiator: str | None = None
    source_version: str | None = Field(default=None, alias="source-version")
    build_start_time: object = Field(default=None, alias="build-start-time")
    phases: Annotated[list[CbPhase], Field(max_length=100)] = []


_CB_TIME = re.compile(r"^(?P<month>[A-Z][a-z]{2}) (?P<day>\d{1,2}), (?P<year>\d{4}) "
                      r"(?P<hour>\d{1,2}):(?P<minute>\d{2}):(?P<second>\d{2}) (?P<half>AM|PM)$")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def parse_codebuild_time(value: object) -> datetime | None:
    """CodeBuild's ``Sep 1, 2017 4:12:29 PM`` (``build-start-time``, phase times), in UTC as the
    documented example shows beside its event ``time``. Parsed by hand, not ``strptime``, so the
    process locale cannot change what ``Sep`` or ``PM`` mean. Anything else is None."""
    match = _CB_TIME.match(value) if isinstance(value, str) else None
    if match is None or match["month"] not in _MONTHS:
        return None
    hour = int(match["hour"])
    if not 1 <= hour <= 12:
        return None
    hour = hour % 12 + (12 if match["half"] == "PM" else 0)
    try:
        return datetime(int(match["year"]), _MONTHS.index(match["month"]) + 1, int(match["day"]), hour,
                        int(match["minute"]), int(match["second"]), tzinfo=UTC)
    except ValueError:  # Feb 30, second 61 ...
        return None


def codebuild_times(info: CbAdditional) -> tuple[datetime | None, datetime | None]:
    """(start, end) of a build from its own record: ``build-start-time`` else the first phase's
    start; the last phase end. None where the event does not say (the event time is used)."""
    starts = [t for t in (parse_codebuild_time(p.start_time) for p in info.phases) if t is not None]
    ends = [t for t in (parse_codebuild_time(p.end_time) for p in info.phases) if t is not None]
    start = parse_codebuild_time(info.build_start_time) or (min(starts) if starts else None)
    return start, (max(ends) if ends else None)


class CbDetail(Vendor):
    build_status: Text = Field(alias="build-status")
    project_name: Text = Field(alias="project-name")
    build_id: Text = Field(alias="build-id")
    additional_information: CbAdditional = Field(default_factory=CbAdditional, alias="additional-information")


def _console_url(region: str | None, *parts: str | None) -> str | None:
    """The execution or build in the AWS console (a link for people; its parts URL-quoted)."""
    if not region or not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", region) or not all(parts):
        return None
    path = "/".join(quote(str(part), safe="") for part in parts)
    return f"https://{region}.console.aws.amazon.com/codesuite/{path}?region={region}"


def _principal_name(detail: object) -> str | None:
    """Who started an execution: the last part of an ARN (``.../Admin/my-user``), or the text."""
    if not isinstance(detail, str) or not detail:
        return None
    return detail.rsplit("/", 1)[-1] if detail.startswith("arn:") else detail


def parse(event: object) -> ExternalUpdate | Ignored:
    """An EventBridge event from aws.codepipeline or aws.codebuild.

    CodePipeline: an execution is a run of the pipeline (its name, sanitised); each stage a
    stage. Action events matter only for Manual approval actions, which become a stage of their
    own (``<stage>.<action>``) waiting for approval; other actions are covered by their stage.
    CodeBuild: a build is a run of the project with one BUILD stage, started at its
    ``build-start-time`` and ended at its last phase's end (else the event ``time``; the arrival
    time only when the event has neither, so a late delivery keeps the build's own times).
    Builds that CodePipeline started (initiator ``codepipeline/...``) are ignored: their
    pipeline's events cover them.
    """
    envelope = validate_payload(AwsEnvelope, event, "EventBridge")
    moment = parse_time(envelope.time)
    if envelope.source == "aws.codepipeline" and envelope.detail_type in CODEPIPELINE_DETAIL_TYPES:
        detail = validate_payload(CpDetail, envelope.detail, envelope.detail_type)
        base: dict[str, Any] = dict(namespace="aws.codepipeline",
                    run_key=f"{envelope.account}/{envelope.region}/{detail.pipeline}/{detail.execution_id}",
                    pipeline=sanitize_name(detail.pipeline), time=moment,
                    summary=f"{envelope.detail_type}: {detail.state}",
                    source_url=_console_url(envelope.region, "codepipeline", "pipelines", detail.pipeline,
                                            "executions", detail.execution_id, "timeline"))
        if envelope.detail_type.startswith("CodePipeline Pipeline"):
            if detail.state in ("STARTED", "RESUMED", "STOPPING"):
                trigger = (detail.execution_trigger or {}).get("trigger-type")
                who = (detail.execution_trigger or {}).get("trigger-detail")
                return ExternalUpdate(**base, trigger=trigger_of("codepipeline", trigger),
                                      sender=_principal_name(who))
            final = _CP_PIPELINE.get(detail.state)
            if final is None:
                return Ignored(f"pipeline state {detail.state!r} changes nothing")
            return ExternalUpdate(**base, run_status=final)
        if not detail.stage:
            raise ValidationFailed(
                "a stage or action event needs detail.stage", details=[{"field": "detail.stage"}]
            )
        if envelope.detail_type.startswith("CodePipeline Stage"):
            status = _CP_STAGE.get(detail.state)
            if status is None:
                return Ignored(f"stage state {detail.state!r} changes nothing")
            name = sanitize_name(detail.stage)
            return ExternalUpdate(**base, stages=(StageUpdate(
                name=name, type=stage_type_for(name), status=status, restart=detail.state == "RESUMED"),))
        category = detail.type.category if detail.type else None
        if category != "Approval":
            return Ignored(f"{category or 'unknown'} action events are covered by their stage's events")
        status = _CP_APPROVAL.get(detail.state)
        if status is None:
            return Ignored(f"approval state {detail.state!r} changes nothing")
        name = sanitize_name(f"{detail.stage}.{detail.action or 'approval'}")
        return ExternalUpdate(**base, stages=(StageUpdate(name=name, status=status),))
    if envelope.source == "aws.codebuild" and envelope.detail_type in CODEBUILD_DETAIL_TYPES:
        detail = validate_payload(CbDetail, envelope.detail, envelope.detail_type)
        initiator = detail.additional_information.initiator or ""
        if initiator.startswith("codepipeline/"):
            return Ignored(f"build started by {initiator}: tracked through that pipeline's events")
        status = _CB_STATUS.get(detail.build_status)
        if status is None:
            return Ignored(f"build status {detail.build_status!r} changes nothing")
        started, ended = codebuild_times(detail.additional_information)
        stage = StageUpdate(name="build", type=StageType.BUILD.value, status=status, started_at=started,
                            ended_at=(ended or moment) if status in FINAL else None)
        return ExternalUpdate(
            namespace="aws.codebuild", run_key=detail.build_id, pipeline=sanitize_name(detail.project_name),
            stages=(stage,), run_status=status if status in FINAL else None, time=moment,
            commit=commit_of(detail.additional_information.source_version),
            trigger=trigger_of("codebuild", initiator), summary=f"build {detail.build_status}",
            sender=initiator or None,
            source_url=_console_url(envelope.region, "codebuild", "projects", detail.project_name, "build",
                                    detail.build_id.rsplit("/", 1)[-1]),
        )
    return Ignored(f"{envelope.source} {envelope.detail_type!r} events are not handled")

