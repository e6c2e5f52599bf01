"""GitLab webhooks: Pipeline Hook and Job Hook, authenticated by ``X-Gitlab-Token`` (the
source's secret, compared in constant time).

A pipeline becomes a run of pipeline ``<group>.<project>``; each job a stage. The delivery id is
``Idempotency-Key`` or ``X-Gitlab-Event-UUID`` (kept across GitLab's retries), else a hash of
the body.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field

from ..domain.events import (
    MAX_EXTERNAL_STAGES,
    ExternalUpdate,
    Ignored,
    StageUpdate,
    commit_of,
    parse_time,
    sanitize_name,
    stage_type_for,
    trigger_of,
)
from ..domain.status import FINAL, StageStatus
from . import Received
from .common import Text, Vendor, load_json, same_token, validate_payload

S = StageStatus
TOKEN_HEADER = "x-gitlab-token"
EVENT_HEADER = "x-gitlab-event"
MAX_GITLAB_BUILDS = 5000


def verify(secret: str, headers: Mapping[str, str], raw: bytes) -> bool:
    return same_token(headers.get(TOKEN_HEADER), secret)


def receive(headers: Mapping[str, str], raw: bytes, source: str) -> Received:
    parsed = parse(headers.get(EVENT_HEADER), load_json(raw), source)
    # GitLab keeps Idempotency-Key (and X-Gitlab-Event-UUID) across its retries; a GitLab too
    # old to send either is de-duplicated on the payload itself.
    delivery = (headers.get("idempotency-key") or headers.get("x-gitlab-event-uuid")
                or "sha256:" + hashlib.sha256(raw).hexdigest())
    return Received(parsed, delivery, raw)


class GlAuthor(Vendor):
    name: str | None = None


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
    url: str | None = None
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
    author: GlAuthor | None = None
    timestamp: str | None = None


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
    user: GlUser | None = None


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


def _pipeline_url(project_url: str | None, pipeline_id: int) -> str | None:
    return f"{project_url.rstrip('/')}/-/pipelines/{pipeline_id}" if project_url else None


def parse(event: str | None, payload: object, source: str) -> ExternalUpdate | Ignored:
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
                             commit.author.name if commit and commit.author else None,
                             parse_time(commit.timestamp) if commit else None),
            trigger=trigger_of("gitlab", attrs.source), summary=f"pipeline {attrs.status}",
            branch=attrs.ref, sender=body.user.username if body.user else None,
            source_url=attrs.url or _pipeline_url(body.project.web_url, attrs.id),
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
            summary=f"job {body.build_status}", branch=body.ref,
            sender=body.user.username if body.user else None,
            source_url=_pipeline_url(body.project.web_url if body.project else
                                     body.repository.homepage if body.repository else None, body.pipeline_id),
        )
    return Ignored(f"GitLab event {event!r} is not handled; enable Pipeline events and Job events")

