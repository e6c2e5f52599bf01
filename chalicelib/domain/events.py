"""Events in and out, as pure rules: what other CI systems tell us, what we tell others.

In: each sender's payload (GitHub ``workflow_run``/``workflow_job``, GitLab pipeline and job
hooks, CDEvents, CodePipeline and CodeBuild EventBridge events) is parsed into one
``ExternalUpdate``: which of the sender's runs it is about (``namespace`` + ``run_key``), the
pipeline name it maps to, the stages it reports and the run's final status if it has one.
``apply_update`` applies it to a loaded run by the transition table, so the same rules hold for
every sender:
- a stage is found by name (the sender's job/stage/task name, sanitised) and added when new;
- statuses only move forward. A sender may skip steps (a job seen only when it completed goes
  IDLE -> IN_PROGRESS -> SUCCESS at the job's own start and end times); an update that would go
  backwards (a late "in_progress" after "completed") is ignored, never an error;
- a newer attempt of the sender's job (GitHub ``run_attempt``, GitLab ``retries_count``,
  CodePipeline RESUMED) archives the stage's attempt and starts the next one, as retry does;
- a final run status closes whatever the sender never reported as finished (running stages
  take the run's outcome, stages that never started become SKIPPED; a cancel is ``cancel_run``);
  a run the sender finished without reporting any stage gets one stage named ``pipeline``.
Unknown event types are ``Ignored`` (the webhook answers 202); payloads that are not what the
sender documents are ``ValidationFailed`` (422) naming the field.

Out: a committed change of a run or stage (one DynamoDB stream record) becomes at most one
``StateChange``; its id is derived from the item and its versions, so a stream record read
twice gives the same event id (consumers de-duplicate on it).

Also here: signatures (GitHub's ``X-Hub-Signature-256``, our own delivery signature), the
delivery backoff, the subscriber URL policy and the request models of sources/subscriptions.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import secrets as random_secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Mapping, Union
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from . import ids
from .clock import format_iso, parse_iso
from .errors import BadRequest, ValidationFailed
from .model import RunAggregate, Stage, change_status
from .operations import cancel_run, new_attempt
from .schemas import (
    CreateRunIn,
    PatchStageIn,
    Reason,
    StrictModel,
)
from .status import FINAL, StageStatus, StageType, is_legal

S = StageStatus
MAX_EXTERNAL_STAGES = 100  # stages a sender may add to one run (the run stays one small Query)
SUMMARY_STAGE = "pipeline"  # the stage of a run finished without any stage reported


# ---- names -----------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")
_DASHES = re.compile(r"-{2,}")
MAX_NAME = 100


def sanitize_name(text: str, fallback: str = "unnamed") -> str:
    """A pipeline or stage name (``ids.PIPELINE_PATTERN``) from any sender's name.

    "/" becomes "." (``octo-org/hello-world`` + ``CI`` -> ``octo-org.hello-world.CI``), every
    other run of characters outside ``[A-Za-z0-9_.-]`` becomes one "-", leading "." and "-" are
    dropped. Longer than 100 characters: cut to 91 plus "-" and 8 hex chars of a hash of the
    original, so two long names that differ only at the end stay apart.
    """
    cleaned = _DASHES.sub("-", _UNSAFE.sub("-", text.replace("/", ".").strip()))
    cleaned = cleaned.lstrip(".-").rstrip("-") or fallback
    if len(cleaned) > MAX_NAME:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
        cleaned = f"{cleaned[:91].rstrip('.-')}-{digest}"
    return cleaned


def stage_type_for(name: str, default: StageType = StageType.OTHER) -> str:
    """A stage named like a stage type (``build``, ``deploy-prod``) gets that type, else OTHER."""
    candidate = name.upper().replace("-", "_").replace(".", "_")
    return StageType(candidate).value if candidate in StageType.__members__ else default.value


# ---- times -----------------------------------------------------------------------------------

_GITLAB_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})(\.\d+)? UTC$")


def parse_time(value: object) -> datetime | None:
    """ISO-8601 (``Z`` or an offset) or GitLab's ``2016-08-12 15:23:28 UTC``; anything else is
    None (a timestamp we cannot read never fails an event; the clock's time is used)."""
    if not isinstance(value, str) or not value:
        return None
    match = _GITLAB_TIME.match(value)
    if match:
        value = f"{match.group(1)}T{match.group(2)}{match.group(3) or ''}Z"
    try:
        return parse_iso(value)
    except ValueError:
        return None


# ---- secrets and signatures --------------------------------------------------------------------

SOURCE_SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
SIGNATURE_TOLERANCE_SECONDS = 300


def new_secret() -> str:
    """256 random bits, URL-safe: fits GitHub's secret, GitLab's token and a Bearer token."""
    return SOURCE_SECRET_PREFIX + random_secrets.token_urlsafe(32)


def github_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_github_signature(secret: str, body: bytes, header: str | None) -> bool:
    """``X-Hub-Signature-256`` is HMAC-SHA256 of the raw body; compared in constant time."""
    if not header:
        return False
    return hmac.compare_digest(github_signature(secret, body).encode(), header.strip().encode("utf-8", "replace"))


def same_token(presented: str | None, expected: str) -> bool:
    """Constant time whatever the lengths: compares SHA-256 digests of both."""
    if not presented:
        return False
    return hmac.compare_digest(hashlib.sha256(presented.encode("utf-8", "replace")).digest(),
                               hashlib.sha256(expected.encode("utf-8")).digest())


def delivery_signature(secret: str, timestamp: int, body: bytes) -> str:
    """``X-Stagetrack-Signature``: ``v1=`` + hex HMAC-SHA256 over ``<timestamp>.<body>``."""
    message = str(timestamp).encode() + b"." + body
    return f"{SIGNATURE_VERSION}=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def verify_delivery(secret: str, body: bytes, timestamp_header: str | None, signature_header: str | None,
                    now: datetime, tolerance: int = SIGNATURE_TOLERANCE_SECONDS) -> bool:
    """What a subscriber does (README shows the same in a few lines): recompute the signature
    over the exact bytes received, compare in constant time, refuse stale timestamps."""
    if not timestamp_header or not signature_header or not timestamp_header.isdigit():
        return False
    timestamp = int(timestamp_header)
    if abs(now.timestamp() - timestamp) > tolerance:
        return False
    expected = delivery_signature(secret, timestamp, body).encode()
    return any(hmac.compare_digest(expected, part.strip().encode("utf-8", "replace"))
               for part in signature_header.split(","))


BACKOFF_BASE_SECONDS = 30
BACKOFF_CAP_SECONDS = 900  # SQS's longest DelaySeconds


def backoff_seconds(attempt: int, delivery_id: str) -> int:
    """Delay before attempt ``attempt + 1``: 30 s doubling to the 15 min cap, plus up to 10 %
    jitter drawn from the delivery id (deterministic, so a test can predict it, yet different
    per delivery so a receiver coming back is not hit by every retry at once)."""
    base = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempt - 1))
    spread = int(hashlib.sha256(f"{delivery_id}:{attempt}".encode()).hexdigest()[:4], 16) / 0xFFFF
    return min(BACKOFF_CAP_SECONDS, base + int(base * 0.1 * spread))


# ---- the update model and its rules -------------------------------------------------------------

@dataclass(frozen=True)
class StageUpdate:
    name: str
    type: str = StageType.OTHER.value
    status: StageStatus | None = None  # None: make sure the stage exists, change nothing
    attempt: int | None = None  # the sender's attempt number, when it has one
    restart: bool = False  # the sender restarted a finished stage (CodePipeline RESUMED)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    via_approval: bool = True  # the sender's own gate opened (GitHub environments, Manual approval)


@dataclass(frozen=True)
class ExternalUpdate:
    namespace: str  # whose run keys these are: "github:<source>", "aws.codepipeline", ...
    run_key: str  # the sender's run identity (GitHub run id, GitLab pipeline id, ...)
    pipeline: str
    stages: tuple[StageUpdate, ...] = ()
    run_status: StageStatus | None = None  # only final statuses change anything
    time: datetime | None = None
    commit: dict | None = None
    trigger: str | None = None
    summary: str = ""  # for logs and the webhook's answer, e.g. "workflow_job completed"


@dataclass(frozen=True)
class Ignored:
    """A well-formed event we do not act on (unknown type, ping, a build CodePipeline owns)."""

    reason: str


@dataclass
class Applied:
    changed: bool = False
    stages: list[tuple[str, str]] = field(default_factory=list)  # (stage id, status) touched
    notes: list[str] = field(default_factory=list)


def status_path(current: StageStatus, target: StageStatus) -> list[StageStatus] | None:
    """The legal steps from ``current`` to ``target`` ([] when already there), or None when the
    target lies behind (a late or duplicate update). Steps a sender may skip are filled in."""
    if current == target:
        return []
    if is_legal(current, target):
        return [target]
    if current == S.IDLE and target in (S.SUCCESS, S.FAILURE, S.TIMED_OUT):
        return [S.IN_PROGRESS, target]
    if current == S.WAITING_FOR_APPROVAL and target in (S.SUCCESS, S.TIMED_OUT):
        return [S.IN_PROGRESS, target]
    return None


def append_stage(aggregate: RunAggregate, name: str, stage_type: str, now: datetime,
                 attempt: int = 1) -> Stage:
    position = max((s.position for s in aggregate.stages), default=0) + 1
    stage = Stage(id=ids.stage_id(aggregate.run.id, position), run_id=aggregate.run.id,
                  position=position, type=stage_type, name=name, status=S.IDLE, created_at=now,
                  updated_at=now, attempt=max(1, attempt))
    aggregate.stages.append(stage)
    return stage


def _clamp(moment: datetime | None, now: datetime, floor: datetime | None = None) -> datetime:
    """A sender's timestamp, but never in our future and never before the stage started."""
    moment = min(moment or now, now)
    return max(moment, floor) if floor is not None else moment


def _move(stage: Stage, path: list[StageStatus], update: StageUpdate, at: datetime, now: datetime) -> None:
    for step in path:
        if step == S.IN_PROGRESS:
            moment = _clamp(update.started_at or at, now)
        elif step in FINAL:
            moment = _clamp(update.ended_at or at, now, stage.started_at)
        else:
            moment = _clamp(at, now)
        change_status(stage, step, moment, via_approval=update.via_approval)
    stage.updated_at = now


def apply_update(aggregate: RunAggregate, update: ExternalUpdate, now: datetime, *, actor: str) -> Applied:
    """Apply a sender's update to a loaded run (see the module docstring for the rules)."""
    result = Applied()
    at = _clamp(update.time, now)
    for reported in update.stages:
        stage = next((s for s in aggregate.stages if s.name == reported.name), None)
        if stage is None:
            if len(aggregate.stages) >= MAX_EXTERNAL_STAGES:
                result.notes.append(f"stage {reported.name}: run already has {MAX_EXTERNAL_STAGES} stages; ignored")
                continue
            stage = append_stage(aggregate, reported.name, reported.type, now, reported.attempt or 1)
            result.changed = True
        if reported.attempt is not None and reported.attempt < stage.attempt:
            result.notes.append(f"stage {stage.name}: attempt {reported.attempt} is older than "
                                f"attempt {stage.attempt}; ignored")
            continue
        wanted_attempt = reported.attempt or stage.attempt
        if reported.restart and stage.status in FINAL and reported.attempt is None:
            wanted_attempt = stage.attempt + 1
        while stage.attempt < wanted_attempt:
            if stage.status not in FINAL:  # the sender moved on without telling us how it ended
                change_status(stage, S.CANCELLED, at)
            new_attempt(stage, now)
            result.changed = True
        if reported.status is not None:
            path = status_path(stage.status, reported.status)
            if path is None:
                result.notes.append(f"stage {stage.name}: {stage.status.value} -> "
                                    f"{reported.status.value} would go backwards; ignored")
            elif path:
                _move(stage, path, reported, at, now)
                result.changed = True
        result.stages.append((stage.id, stage.status.value))
    if update.run_status in FINAL:
        if _close_run(aggregate, update.run_status, at, now, actor=actor, result=result):
            result.changed = True
    return result


def _close_run(aggregate: RunAggregate, final: StageStatus, at: datetime, now: datetime, *,
               actor: str, result: Applied) -> bool:
    if not aggregate.stages:
        summary = append_stage(aggregate, SUMMARY_STAGE, StageType.OTHER.value, now)
        _move(summary, status_path(S.IDLE, final) or [], StageUpdate(SUMMARY_STAGE), at, now)
        result.stages.append((summary.id, summary.status.value))
        return True
    if final == S.CANCELLED:
        return cancel_run(aggregate, at, actor=actor, reason="cancelled in the sending system")
    changed = False
    for stage in aggregate.stages:
        if stage.status in FINAL:
            continue
        if stage.status == S.IN_PROGRESS:
            target = final if final in (S.SUCCESS, S.FAILURE, S.TIMED_OUT) else S.CANCELLED
        elif stage.status == S.WAITING_FOR_APPROVAL:
            target = S.SKIPPED if final in (S.SUCCESS, S.SKIPPED) else S.CANCELLED
        else:
            target = S.SKIPPED
        change_status(stage, target, _clamp(at, now, stage.started_at))
        stage.updated_at = now
        result.stages.append((stage.id, stage.status.value))
        changed = True
    return changed


def commit_of(sha: object, message: object = None, committer: object = None) -> dict | None:
    """A run's commit as the native API stores it (``CommitIn``), or None if unusable."""
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-fA-F]{7,64}", sha):
        return None
    commit: dict = {"hash": sha}
    if isinstance(message, str) and message:
        commit["message"] = message[:4000]
    if isinstance(committer, str) and committer:
        commit["committer"] = committer[:200]
    return commit


def _trigger(*parts: object) -> str | None:
    text = ":".join(str(p) for p in parts if p not in (None, ""))
    return text[:100] or None


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
            namespace=namespace, run_key=str(run.id), pipeline=github_pipeline(body.repository.full_name, workflow),
            run_status=final, time=parse_time(run.updated_at) or parse_time(run.created_at),
            commit=commit_of(run.head_sha, head.message if head else None,
                             head.author.name if head and head.author else None),
            trigger=_trigger("github", run.event), summary=f"workflow_run {body.action}",
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
    stages: Annotated[list[str], Field(max_length=100)] = []
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
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None


class GlPipelineHook(Vendor):
    object_kind: Literal["pipeline"]
    object_attributes: GlPipelineAttributes
    project: GlProject
    user: GlUser | None = None
    commit: GlPipelineCommit | None = None
    builds: Annotated[list[GlBuild], Field(max_length=1000)] = []


class GlRepository(Vendor):
    name: str | None = None
    homepage: str | None = None


class GlJobHook(Vendor):
    object_kind: Literal["build"]
    build_id: int
    build_name: Text
    build_stage: str | None = None
    build_status: Text
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
    each job a stage named after the job. The pipeline hook's ``builds`` (every job's status)
    is applied too, so a project that sends only pipeline hooks still shows its jobs."""
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
            stages.append(StageUpdate(name=name, type=stage_type_for(name), status=build_status,
                                      started_at=parse_time(build.started_at),
                                      ended_at=parse_time(build.finished_at)))
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
        stage = StageUpdate(name=name, type=stage_type_for(name), status=status,
                            attempt=body.retries_count + 1, started_at=parse_time(body.build_started_at),
                            ended_at=parse_time(body.build_finished_at))
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
CLOUDEVENTS_JSON = "application/cloudevents+json"
CLOUDEVENTS_BATCH = "application/cloudevents-batch+json"


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
        raise BadRequest(f"CloudEvents specversion {headers.get('ce-specversion')!r} is not supported; use 1.0")
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
    match = _CDEVENT_TYPE.match(event.type)
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


class CbAdditional(Vendor):
    initiator: str | None = None
    source_version: str | None = Field(default=None, alias="source-version")


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
    CodeBuild: a build is a run of the project with one BUILD stage. Builds that CodePipeline
    started (initiator ``codepipeline/...``) are ignored: their pipeline's events cover them.
    """
    envelope = validate_payload(AwsEnvelope, event, "EventBridge")
    moment = parse_time(envelope.time)
    if envelope.source == "aws.codepipeline" and envelope.detail_type in CODEPIPELINE_DETAIL_TYPES:
        detail = validate_payload(CpDetail, envelope.detail, envelope.detail_type)
        base = dict(namespace="aws.codepipeline",
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
            raise ValidationFailed("a stage or action event needs detail.stage", details=[{"field": "detail.stage"}])
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
        stage = StageUpdate(name="build", type=StageType.BUILD.value, status=status)
        return ExternalUpdate(
            namespace="aws.codebuild", run_key=detail.build_id, pipeline=sanitize_name(detail.project_name),
            stages=(stage,), run_status=status if status in FINAL else None, time=moment,
            commit=commit_of(detail.additional_information.source_version),
            trigger=_trigger("codebuild", initiator), summary=f"build {detail.build_status}",
        )
    return Ignored(f"{envelope.source} {envelope.detail_type!r} events are not handled")


# ---- queue and topic messages: the API's own updates --------------------------------------------

IdempotencyKey = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,255}$")]
StageIdText = Annotated[str, StringConstraints(min_length=1, max_length=300)]


class _Message(StrictModel):
    model_config = ConfigDict(**StrictModel.model_config, defer_build=True)

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
    Union[CreateRunMessage, PatchStageMessage, CancelRunMessage, CancelStageMessage, RetryRunMessage,
          RetryStageMessage, DecideStageMessage],
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


# ---- out: state changes from stream records ------------------------------------------------------

RUN_CHANGED = "run.status-changed"
STAGE_CHANGED = "stage.status-changed"
EVENT_TYPES = (RUN_CHANGED, STAGE_CHANGED)
EVENT_SOURCE = "stagetrack"


@dataclass(frozen=True)
class StateChange:
    id: str
    type: str
    time: str
    pipeline: str
    run_id: str
    stage_id: str | None
    stage_name: str | None
    old_status: str | None
    new_status: str | None
    attempt: int | None

    @property
    def detail_type(self) -> str:
        """EventBridge ``detail-type``: ``stagetrack.run.status-changed`` or ``...stage...``."""
        return f"{EVENT_SOURCE}.{self.type}"

    def as_dict(self) -> dict:
        return {"id": self.id, "type": self.type, "time": self.time, "pipeline": self.pipeline,
                "runId": self.run_id, "stageId": self.stage_id, "stageName": self.stage_name,
                "oldStatus": self.old_status, "newStatus": self.new_status, "attempt": self.attempt}

    def body(self) -> str:
        """The exact JSON subscribers receive (and sign over)."""
        return json.dumps(self.as_dict(), separators=(",", ":"))


def _attr(image: Mapping, name: str) -> object:
    value = image.get(name)
    if not isinstance(value, dict):
        return None
    if "S" in value:
        return value["S"]
    if "N" in value:
        try:
            return int(value["N"])
        except ValueError:
            return None
    return None


def state_change(record: Mapping, now: datetime) -> StateChange | None:
    """The event one stream record stands for, or None (not a run/stage, or no status change).

    - run inserted: old status null; run removed: new status null; run modified: only when its
      status changed (every write rewrites the run item, usually with the same status);
    - stage modified: when its status or attempt changed; stage inserted: only when it is born
      already moving (a sender's stage seen running), since every new run's stages start IDLE
      and the run's own event says the run exists; stage removed: new status null.
    """
    event_name = record.get("eventName")
    images = record.get("dynamodb") or {}
    new = images.get("NewImage") or {}
    old = images.get("OldImage") or {}
    current = new or old
    kind = _attr(current, "kind")
    if kind not in ("run", "stage") or event_name not in ("INSERT", "MODIFY", "REMOVE"):
        return None
    old_status = _attr(old, "status") if old else None
    new_status = _attr(new, "status") if new else None
    old_attempt = _attr(old, "attempt") if old else None
    new_attempt = _attr(new, "attempt") if new else None
    if kind == "run":
        if event_name == "MODIFY" and old_status == new_status:
            return None
    else:
        if event_name == "MODIFY" and (old_status, old_attempt) == (new_status, new_attempt):
            return None
        if event_name == "INSERT" and new_status == S.IDLE.value:
            return None
    run_id = _attr(current, "run_id")
    if not isinstance(run_id, str):
        return None
    parsed = ids.parse_run_id(run_id)
    pipeline = _attr(current, "pipeline") or (parsed[0] if parsed else None)
    if new:
        moment = _attr(new, "updated_at")
    else:
        approximate = images.get("ApproximateCreationDateTime")
        moment = (format_iso(datetime.fromtimestamp(float(approximate), timezone.utc))
                  if isinstance(approximate, (int, float)) else format_iso(now))
    identity = "|".join(str(x) for x in (_attr(current, "pk"), _attr(current, "sk"), _attr(current, "created_at"),
                                         _attr(old, "version") if old else None,
                                         _attr(new, "version") if new else None))
    return StateChange(
        id="evt_" + hashlib.sha256(identity.encode()).hexdigest()[:32],
        type=RUN_CHANGED if kind == "run" else STAGE_CHANGED,
        time=moment if isinstance(moment, str) else format_iso(now),
        pipeline=str(pipeline), run_id=run_id,
        stage_id=_attr(current, "stage_id") if kind == "stage" else None,
        stage_name=_attr(current, "name") if kind == "stage" else None,
        old_status=old_status if isinstance(old_status, str) else None,
        new_status=new_status if isinstance(new_status, str) else None,
        attempt=(new_attempt if new else old_attempt) if kind == "stage" else None,
    )


def delivery_id(event_id: str, subscription_id: str) -> str:
    """The same event to the same subscriber always has the same delivery id (dedupe key)."""
    return "dlv_" + hashlib.sha256(f"{event_id}|{subscription_id}".encode()).hexdigest()[:24]


# ---- subscriptions and sources: request models and policy ----------------------------------------

SourceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")]
SOURCE_TYPES = ("github", "gitlab", "cdevents")
EventFilter = Literal["run.status-changed", "stage.status-changed", "*"]
PipelineName = Annotated[str, StringConstraints(pattern=ids.PIPELINE_PATTERN)]
FORMAT_STAGETRACK = "stagetrack"  # our own event JSON (``StateChange.body``)
FORMAT_CDEVENTS = "cdevents"  # a CDEvent over the CloudEvents HTTP binding (domain/cdevents.py)
SubscriptionFormat = Literal["stagetrack", "cdevents"]
SUBSCRIPTION_FORMATS = (FORMAT_STAGETRACK, FORMAT_CDEVENTS)


class CreateSourceIn(StrictModel):
    type: Literal["github", "gitlab", "cdevents"]
    name: SourceName


class CreateSubscriptionIn(StrictModel):
    url: Annotated[str, StringConstraints(min_length=10, max_length=2048)]
    events: Annotated[list[EventFilter], Field(min_length=1, max_length=3)]
    pipelines: Annotated[list[PipelineName], Field(min_length=1, max_length=50)] | None = None
    statuses: Annotated[list[StageStatus], Field(min_length=1, max_length=len(StageStatus))] | None = None
    secret: Annotated[str, StringConstraints(min_length=16, max_length=256, pattern=r"^[\x21-\x7e]+$")] | None = None
    description: Annotated[str, StringConstraints(max_length=200)] | None = None
    format: SubscriptionFormat = FORMAT_STAGETRACK


@dataclass(frozen=True)
class SubscriptionFilter:
    events: tuple[str, ...]
    pipelines: tuple[str, ...] | None = None
    statuses: tuple[str, ...] | None = None

    def matches(self, change: StateChange) -> bool:
        if "*" not in self.events and change.type not in self.events:
            return False
        if self.pipelines is not None and change.pipeline not in self.pipelines:
            return False
        return self.statuses is None or change.new_status in self.statuses


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def check_subscriber_url(url: str, *, allow_local: bool) -> str:
    """The SSRF stance, first line: https only, to a host name or a public IP address; no
    credentials in the URL. ``allow_local`` (a local/test setting) also admits
    ``http://127.0.0.1``/``localhost``. The delivery client checks again, after resolving the
    host name, that every address it would connect to is public (adapters/http.py)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValidationFailed("url is not a valid URL", details=[{"field": "url"}]) from None
    host = (parts.hostname or "").lower()
    if not host:
        raise ValidationFailed("url needs a host", details=[{"field": "url"}])
    if parts.username or parts.password:
        raise ValidationFailed("url must not carry credentials; subscribers verify the signature",
                               details=[{"field": "url"}])
    if parts.fragment:
        raise ValidationFailed("url must not have a #fragment", details=[{"field": "url"}])
    local = host in LOCAL_HOSTS
    if parts.scheme != "https" and not (parts.scheme == "http" and local and allow_local):
        raise ValidationFailed("url must be https (http://127.0.0.1 only when "
                               "STAGETRACK_ALLOW_LOCAL_SUBSCRIBERS is set)", details=[{"field": "url"}])
    if local and not allow_local:
        raise ValidationFailed("url must not point at this machine", details=[{"field": "url"}])
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    if address is not None and not address.is_global and not (allow_local and address.is_loopback):
        raise ValidationFailed("url must not point at a private, loopback or link-local address",
                               details=[{"field": "url"}])
    if port is not None and not 1 <= port <= 65535:
        raise ValidationFailed("url has an invalid port", details=[{"field": "url"}])
    return url


def address_allowed(address: str, *, allow_local: bool) -> bool:
    """Second line, at delivery: may we connect to this resolved address?"""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if ip.is_global:
        return True
    return allow_local and ip.is_loopback
