"""What senders send, parsed into ``events.ExternalUpdate``: GitHub ``workflow_run`` and
``workflow_job``, GitLab pipeline and job hooks, CDEvents over the CloudEvents HTTP binding,
CodePipeline and CodeBuild EventBridge events, and the queue/topic messages of our own API.

Apart from ``domain/events.py`` because it is most of the domain's pydantic models: the
webhook and ingest code imports it when a payload arrives, so a cold start that never parses
one (the API, the timers, the outbox) does not pay for building them.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from .errors import BadRequest, ValidationFailed
from .events import (
    CLOUDEVENTS_BATCH,
    CLOUDEVENTS_JSON,
    CODEBUILD_DETAIL_TYPES,
    CODEPIPELINE_DETAIL_TYPES,
    MAX_EXTERNAL_STAGES,
    ExternalUpdate,
    Ignored,
    StageUpdate,
    _trigger,
    commit_of,
    parse_time,
    sanitize_name,
    stage_type_for,
)
from .status import FINAL, StageStatus, StageType

S = StageStatus
MAX_GITLAB_BUILDS = 5000


# ---- vendor payloads: shared plumbing -----------------------------------------------------------

class Vendor(BaseModel):
    """A sender's payload: we read the fields we need, ignore the rest, coerce nothing silly.
    Built on first use (``defer_build``), so a cold start pays only for the models it uses."""

    model_config = ConfigDict(extra="ignore", defer_build=True)


Text = Annotated[str, StringConstraints(min_length=1, max_length=1000)]


def validate_payload(model: type[BaseModel], data: object, what: str):
    if not isinstance(data, dict):
        raise BadRequest(f"{what} payload must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        details = [{"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"],
                    "type": e["type"]} for e in error.errors(include_url=False, include_input=False)]
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        raise ValidationFailed(f"not a {what} payload: {summary}", details=details) from None


def load_json(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("request body is not valid JSON") from None


# ---- GitHub Actions ----------------------------------------------------------------------------

GITHUB_EVENTS = ("workflow_run", "workflow_job")
_GH_PENDING = {"requested": S.IDLE, "queued": S.IDLE, "pending": S.IDLE, "waiting": S.WAITING_FOR_APPROVAL,
               "in_progress": S.IN_PROGRESS}
_GH_CONCLUSIONS = {"success": S.SUCCESS, "neutral": S.SUCCESS, "failure": S.FAILURE,
                   "action_required": S.FAILURE, "startup_failure": S.FAILURE, "stale": S.FAILURE,
                   "cancelled": S.CANCELLED, "timed_out": S.TIMED_OUT, "skipped": S.SKIPPED}


class GhRepository(Vendor):
    id: int | None = None
    full_name: Text


class GhAuthor(Vendor):
    name: str | None = None


class GhHeadCommit(Vendor):
    id: str | None = None
    message: str | None = None
    author: GhAuthor | None = None


class GhWorkflow(Vendor):
    name: str | None = None


class GhWorkflowRun(Vendor):
    id: int
    name: str | None = None
    run_number: int | None = None
    run_attempt: Annotated[int, Field(ge=1)] = 1
    event: str | None = None
    status: str | None = None
    conclusion: str | None = None
    head_sha: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    run_started_at: str | None = None
    head_commit: GhHeadCommit | None = None


class GhWorkflowRunEvent(Vendor):
    action: Text
    workflow_run: GhWorkflowRun
    workflow: GhWorkflow | None = None
    repository: GhRepository


class GhWorkflowJob(Vendor):
    id: int
    run_id: int
    run_attempt: Annotated[int, Field(ge=1)] = 1
    workflow_name: str | None = None
    name: Text
    status: Text
    conclusion: str | None = None
    head_sha: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None


class GhWorkflowJobEvent(Vendor):
    action: Text
    workflow_job: GhWorkflowJob
    repository: GhRepository


def github_status(status: str | None, conclusion: str | None) -> StageStatus | None:
    if status == "completed":
        return _GH_CONCLUSIONS.get(conclusion or "")
    return _GH_PENDING.get(status or "")


def github_pipeline(repository: str, workflow: str | None) -> str:
    return sanitize_name(f"{repository}/{workflow}" if workflow else repository, "github")


def parse_github(event: str | None, payload: object, source: str) -> ExternalUpdate | Ignored:
    """``X-GitHub-Event`` + body. A workflow run becomes a run of pipeline
    ``<owner>.<repo>.<workflow name>``; each job a stage (type OTHER) named after the job."""
    namespace = f"github:{source}"
    if event == "workflow_run":
        body = validate_payload(GhWorkflowRunEvent, payload, "GitHub workflow_run")
        run = body.workflow_run
        workflow = run.name or (body.workflow.name if body.workflow else None)
        final = None
        if run.status == "completed" or body.action == "completed":
            final = _GH_CONCLUSIONS.get(run.conclusion or "")
            if final is None:
                return Ignored(f"workflow_run completed with unknown conclusion {run.conclusion!r}")
        head = run.head_commit
        return ExternalUpdate(
            namespace=namespace,
            run_key=str(run.id),
            pipeline=github_pipeline(body.repository.full_name, workflow),
            run_status=final,
            time=parse_time(run.updated_at) or parse_time(run.created_at),
            commit=commit_of(
                run.head_sha,
                head.message if head else None,
                head.author.name if head and head.author else None,
            ),
            trigger=_trigger("github", run.event),
            summary=f"workflow_run {body.action}",
        )
    if event == "workflow_job":
        body = validate_payload(GhWorkflowJobEvent, payload, "GitHub workflow_job")
        job = body.workflow_job
        status = github_status(job.status, job.conclusion)
        if status is None:
            return Ignored(f"workflow_job with unknown status {job.status!r}/{job.conclusion!r}")
        name = sanitize_name(job.name, f"job-{job.id}")
        stage = StageUpdate(name=name, type=stage_type_for(name), status=status, attempt=job.run_attempt,
                            started_at=parse_time(job.started_at), ended_at=parse_time(job.completed_at))
        moment = parse_time(job.completed_at) or parse_time(job.started_at) or parse_time(job.created_at)
        return ExternalUpdate(
            namespace=namespace, run_key=str(job.run_id),
            pipeline=github_pipeline(body.repository.full_name, job.workflow_name),
            stages=(stage,), time=moment, commit=commit_of(job.head_sha), trigger="github",
            summary=f"workflow_job {body.action}",
        )
    return Ignored(f"GitHub event {event!r} is not handled; send workflow_run and workflow_job")


# ---- GitLab ------------------------------------------------------------------------------------

GITLAB_EVENTS = ("Pipeline Hook", "Job Hook")
_GL_STATUS = {
    "created": S.IDLE, "waiting_for_resource": S.IDLE, "preparing": S.IDLE, "pending": S.IDLE,
    "scheduled": S.IDLE, "waiting_for_callback": S.IDLE, "manual": S.WAITING_FOR_APPROVAL,
    "running": S.IN_PROGRESS, "success": S.SUCCESS, "failed": S.FAILURE, "canceled": S.CANCELLED,
    "skipped": S.SKIPPED,
}


class GlProject(Vendor):
    id: int | None = None
    name: str | None = None
    path_with_namespace: str | None = None
    web_url: str | None = None


class GlUser(Vendor):
    name: str | None = None
    username: str | None = None


class GlPipelineAttributes(Vendor):
    id: int
    iid: int | None = None
    ref: str | None = None
    sha: str | None = None
    source: str | None = None
    status: Text
    stages: Annotated[list[str], Field(max_length=MAX_EXTERNAL_STAGES)] = []
    created_at: str | None = None
    finished_at: str | None = None


class GlPipelineCommit(Vendor):
    id: str | None = None
    message: str | None = None
    author: GhAuthor | None = None


class GlBuild(Vendor):
    id: int
    stage: str | None = None
    name: Text
    status: Text
    allow_failure: bool | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None


class GlPipelineHook(Vendor):
    object_kind: Literal["pipeline"]
    object_attributes: GlPipelineAttributes
    project: GlProject
    user: GlUser | None = None
    commit: GlPipelineCommit | None = None
    # Every job of the pipeline, retried ones included. A bound on parsing only: the body limit
    # (2 MiB) binds first for real payloads; jobs past the run's stage cap are ignored, reported.
    builds: Annotated[list[GlBuild], Field(max_length=MAX_GITLAB_BUILDS)] = []


class GlRepository(Vendor):
    name: str | None = None
    homepage: str | None = None


class GlJobHook(Vendor):
    object_kind: Literal["build"]
    build_id: int
    build_name: Text
    build_stage: str | None = None
    build_status: Text
    build_allow_failure: bool | None = None
    build_created_at: str | None = None
    build_started_at: str | None = None
    build_finished_at: str | None = None
    retries_count: Annotated[int, Field(ge=0)] = 0
    pipeline_id: int
    project_id: int | None = None
    project_name: str | None = None
    sha: str | None = None
    ref: str | None = None
    repository: GlRepository | None = None
    project: GlProject | None = None


def gitlab_pipeline(project: GlProject | None, repository: GlRepository | None = None,
                    project_name: str | None = None, project_id: int | None = None) -> str:
    """``gitlab-org/gitlab-test`` -> ``gitlab-org.gitlab-test``, from whichever field the hook has."""
    if project is not None and project.path_with_namespace:
        return sanitize_name(project.path_with_namespace)
    for url in (project.web_url if project else None, repository.homepage if repository else None):
        if url:
            path = urlsplit(url).path.strip("/")
            if path:
                return sanitize_name(path)
    if project_name:
        return sanitize_name(project_name.replace(" / ", "/"))
    return f"gitlab-project-{project_id}" if project_id is not None else "gitlab"


def _gitlab_status(value: str, what: str) -> StageStatus | Ignored:
    status = _GL_STATUS.get(value)
    return Ignored(f"{what} status {value!r} changes nothing") if status is None else status


def parse_gitlab(event: str | None, payload: object, source: str) -> ExternalUpdate | Ignored:
    """``X-Gitlab-Event`` + body. A pipeline becomes a run of pipeline ``<group>.<project>``;
    each job a stage named after the job, allowed to fail when the job is (``allow_failure``).
    The pipeline hook's ``builds`` (every job's status) is applied too, so a project that sends
    only pipeline hooks still shows its jobs."""
    namespace = f"gitlab:{source}"
    if event == "Pipeline Hook":
        body = validate_payload(GlPipelineHook, payload, "GitLab pipeline hook")
        attrs = body.object_attributes
        status = _gitlab_status(attrs.status, "pipeline")
        if isinstance(status, Ignored):
            return status
        latest: dict[str, GlBuild] = {}
        for build in sorted(body.builds, key=lambda b: b.id):
            latest[sanitize_name(build.name, f"job-{build.id}")] = build  # a retried job: the newest
        order = {stage: index for index, stage in enumerate(attrs.stages)}  # GitLab's stage order
        stages = []
        for name, build in sorted(latest.items(), key=lambda item: (order.get(item[1].stage, len(order)),
                                                                    item[1].id)):
            build_status = _GL_STATUS.get(build.status)
            stages.append(
                StageUpdate(
                    name=name,
                    type=stage_type_for(name),
                    status=build_status,
                    started_at=parse_time(build.started_at),
                    ended_at=parse_time(build.finished_at),
                    allow_failure=build.allow_failure,
                )
            )
        commit = body.commit
        return ExternalUpdate(
            namespace=namespace, run_key=str(attrs.id), pipeline=gitlab_pipeline(body.project),
            stages=tuple(stages), run_status=status if status in FINAL else None,
            time=parse_time(attrs.finished_at) or parse_time(attrs.created_at),
            commit=commit_of(attrs.sha, commit.message if commit else None,
                             commit.author.name if commit and commit.author else None),
            trigger=_trigger("gitlab", attrs.source), summary=f"pipeline {attrs.status}",
        )
    if event == "Job Hook":
        body = validate_payload(GlJobHook, payload, "GitLab job hook")
        status = _gitlab_status(body.build_status, "job")
        if isinstance(status, Ignored):
            return status
        name = sanitize_name(body.build_name, f"job-{body.build_id}")
        stage = StageUpdate(
            name=name,
            type=stage_type_for(name),
            status=status,
            attempt=body.retries_count + 1,
            started_at=parse_time(body.build_started_at),
            ended_at=parse_time(body.build_finished_at),
            allow_failure=body.build_allow_failure,
        )
        moment = (parse_time(body.build_finished_at) or parse_time(body.build_started_at)
                  or parse_time(body.build_created_at))
        return ExternalUpdate(
            namespace=namespace, run_key=str(body.pipeline_id),
            pipeline=gitlab_pipeline(body.project, body.repository, body.project_name, body.project_id),
            stages=(stage,), time=moment, commit=commit_of(body.sha), trigger="gitlab",
            summary=f"job {body.build_status}",
        )
    return Ignored(f"GitLab event {event!r} is not handled; enable Pipeline events and Job events")


# ---- CDEvents (CloudEvents HTTP binding) ----------------------------------------------------------

_CDEVENT_TYPE = re.compile(r"^dev\.cdevents\.(?P<subject>[a-z]+)\.(?P<predicate>[a-z]+)\."
                           r"(?P<major>\d+)\.(?P<minor>\d+)\.(?P<patch>\d+)(?:-[0-9A-Za-z.-]+)?$")
_CD_OUTCOMES = {"success": S.SUCCESS, "failure": S.FAILURE, "error": S.FAILURE, "cancel": S.CANCELLED}


@dataclass(frozen=True)
class CloudEvent:
    id: str
    source: str
    type: str
    time: datetime | None
    data: object


CeText = Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class StructuredCloudEvent(Vendor):
    specversion: Literal["1.0"]
    id: CeText
    source: CeText
    type: CeText
    time: str | None = None
    datacontenttype: str | None = None
    data: Any = None


def parse_cloudevent(headers: Mapping[str, str], raw: bytes) -> CloudEvent:
    """Binary mode (``ce-*`` headers, the CDEvent as the JSON body) or structured mode
    (``Content-Type: application/cloudevents+json``, the CDEvent in ``data``)."""
    content_type = (headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type == CLOUDEVENTS_BATCH:
        raise BadRequest("batched CloudEvents are not accepted; send one event per request")
    if content_type == CLOUDEVENTS_JSON:
        body = validate_payload(StructuredCloudEvent, load_json(raw), "CloudEvents structured-mode")
        return CloudEvent(id=body.id, source=body.source, type=body.type, time=parse_time(body.time),
                          data=body.data)
    missing = [h for h in ("ce-specversion", "ce-id", "ce-source", "ce-type") if not headers.get(h)]
    if missing:
        raise BadRequest("not a CloudEvent: send ce-specversion, ce-id, ce-source and ce-type headers "
                         f"(binary mode) or Content-Type: {CLOUDEVENTS_JSON}; missing {', '.join(missing)}")
    if headers.get("ce-specversion") != "1.0":
        raise BadRequest(
            f"CloudEvents specversion {headers.get('ce-specversion')!r} is not supported; use 1.0"
        )
    if content_type not in ("", "application/json"):
        raise BadRequest(f"the CDEvent must be sent as application/json, not {content_type}")
    for name in ("ce-id", "ce-source", "ce-type"):
        if len(headers[name]) > 1000:
            raise BadRequest(f"{name} is longer than 1000 characters")
    return CloudEvent(id=headers["ce-id"], source=headers["ce-source"], type=headers["ce-type"],
                      time=parse_time(headers.get("ce-time")), data=load_json(raw))


class CdContext(Vendor):
    id: str | None = None
    type: str | None = None
    timestamp: str | None = None


class CdPipelineRunRef(Vendor):
    id: CeText
    source: str | None = None


class CdContent(Vendor):
    pipelineName: str | None = None
    taskName: str | None = None
    outcome: str | None = None
    errors: str | None = None
    pipelineRun: CdPipelineRunRef | None = None


class CdSubject(Vendor):
    id: CeText
    source: str | None = None
    type: str | None = None
    content: CdContent = CdContent()


class CDEvent(Vendor):
    context: CdContext = CdContext()
    subject: CdSubject


def _cd_outcome(content: CdContent) -> StageStatus:
    if content.outcome is None:
        return S.FAILURE if content.errors else S.SUCCESS
    status = _CD_OUTCOMES.get(content.outcome)
    if status is None:
        raise ValidationFailed(f"unknown CDEvents outcome {content.outcome!r}; expected one of "
                               f"{', '.join(_CD_OUTCOMES)}", details=[{"field": "subject.content.outcome"}])
    return status


def parse_cdevent(event: CloudEvent, source: str) -> ExternalUpdate | Ignored:
    """pipelineRun queued/started/finished and taskRun started/finished (0.x versions). A
    pipelineRun is a run of pipeline ``pipelineName``; a taskRun a stage named ``taskName``
    of the run its ``pipelineRun.id`` names (a taskRun of a pipelineRun never announced
    creates that run in a pipeline named after the webhook source)."""
    match = _CDEVENT_TYPE.fullmatch(event.type)
    if match is None:
        return Ignored(f"CloudEvent type {event.type!r} is not a CDEvent")
    subject, predicate, major = match.group("subject"), match.group("predicate"), match.group("major")
    handled = {("pipelinerun", "queued"), ("pipelinerun", "started"), ("pipelinerun", "finished"),
               ("taskrun", "started"), ("taskrun", "finished")}
    if (subject, predicate) not in handled:
        return Ignored(f"CDEvent {subject}.{predicate} is not handled")
    if major != "0":
        return Ignored(f"CDEvent version {major}.x of {subject}.{predicate} is not supported (0.x is)")
    body = validate_payload(CDEvent, event.data, "CDEvent")
    if body.context.type and body.context.type != event.type:
        raise ValidationFailed("context.type does not match the CloudEvent type",
                               details=[{"field": "context.type"}])
    content = body.subject.content
    moment = event.time or parse_time(body.context.timestamp)
    namespace = f"cdevents:{source}"
    if subject == "pipelinerun":
        pipeline = sanitize_name(content.pipelineName or source)
        return ExternalUpdate(
            namespace=namespace, run_key=body.subject.id, pipeline=pipeline, time=moment,
            run_status=_cd_outcome(content) if predicate == "finished" else None,
            trigger="cdevents", summary=f"pipelinerun {predicate}",
        )
    if content.pipelineRun is None:
        raise ValidationFailed("a taskRun event needs subject.content.pipelineRun.id",
                               details=[{"field": "subject.content.pipelineRun"}])
    name = sanitize_name(content.taskName or body.subject.id)
    status = S.IN_PROGRESS if predicate == "started" else _cd_outcome(content)
    stage = StageUpdate(name=name, type=stage_type_for(name), status=status,
                        started_at=moment if predicate == "started" else None,
                        ended_at=moment if predicate == "finished" else None)
    return ExternalUpdate(namespace=namespace, run_key=content.pipelineRun.id, pipeline=sanitize_name(source),
                          stages=(stage,), time=moment, trigger="cdevents", summary=f"taskrun {predicate}")


# ---- AWS CodePipeline and CodeBuild (EventBridge) ------------------------------------------------

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
    id: CeText
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
    execution_id: CeText = Field(alias="execution-id")
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
    build_id: CeText = Field(alias="build-id")
    additional_information: CbAdditional = Field(default=CbAdditional(), alias="additional-information")


def parse_aws_event(event: object) -> ExternalUpdate | Ignored:
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
                    summary=f"{envelope.detail_type}: {detail.state}")
        if envelope.detail_type.startswith("CodePipeline Pipeline"):
            if detail.state in ("STARTED", "RESUMED", "STOPPING"):
                trigger = (detail.execution_trigger or {}).get("trigger-type")
                return ExternalUpdate(**base, trigger=_trigger("codepipeline", trigger))
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
            trigger=_trigger("codebuild", initiator), summary=f"build {detail.build_status}",
        )
    return Ignored(f"{envelope.source} {envelope.detail_type!r} events are not handled")

