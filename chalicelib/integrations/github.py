"""GitHub Actions webhooks: ``workflow_run`` and ``workflow_job``, signed with
``X-Hub-Signature-256`` (HMAC-SHA256 of the raw body with the source's secret).

A workflow run becomes a run of pipeline ``<owner>.<repo>.<workflow name>``; each job a stage
named after the job. ``ping`` answers ``pong``; other events are ignored (202). The delivery id
is ``X-GitHub-Delivery`` (GitHub keeps it when it redelivers).
"""
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Annotated
from urllib.parse import parse_qs

from pydantic import Field

from ..domain.errors import BadRequest
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
from ..domain.status import StageStatus
from . import Received, Reply
from .common import Text, Vendor, content_type, load_json, validate_payload

S = StageStatus
SIGNATURE_HEADER = "x-hub-signature-256"
EVENT_HEADER = "x-github-event"
DELIVERY_HEADER = "x-github-delivery"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """``X-Hub-Signature-256`` is HMAC-SHA256 of the raw body; compared in constant time."""
    if not header:
        return False
    return hmac.compare_digest(signature(secret, body).encode(), header.strip().encode("utf-8", "replace"))


def verify(secret: str, headers: Mapping[str, str], raw: bytes) -> bool:
    return verify_signature(secret, raw, headers.get(SIGNATURE_HEADER))


def receive(headers: Mapping[str, str], raw: bytes, source: str) -> Received | Reply:
    event = headers.get(EVENT_HEADER)
    if event == "ping":
        return Reply({"result": "pong"})
    parsed = parse(event, payload_of(headers, raw), source)
    delivery = headers.get(DELIVERY_HEADER)
    if not delivery and not isinstance(parsed, Ignored):
        raise BadRequest("X-GitHub-Delivery header is required", details=[{"field": "X-GitHub-Delivery"}])
    return Received(parsed, delivery or "", raw)


def payload_of(headers: Mapping[str, str], raw: bytes) -> object:
    """GitHub sends JSON, or ``payload=<JSON>`` when the hook's content type is form-encoded."""
    if content_type(headers) == "application/x-www-form-urlencoded":
        try:
            values = parse_qs(raw.decode("utf-8"), strict_parsing=True).get("payload")
        except (UnicodeDecodeError, ValueError):
            values = None
        if not values:
            raise BadRequest("a form-encoded GitHub webhook needs a payload field")
        raw = values[0].encode("utf-8")
    return load_json(raw)


GITHUB_EVENTS = ("workflow_run", "workflow_job")
_GH_PENDING = {"requested": S.IDLE, "queued": S.IDLE, "pending": S.IDLE, "waiting": S.WAITING_FOR_APPROVAL,
               "in_progress": S.IN_PROGRESS}
_GH_CONCLUSIONS = {"success": S.SUCCESS, "neutral": S.SUCCESS, "failure": S.FAILURE,
                   "action_required": S.FAILURE, "startup_failure": S.FAILURE, "stale": S.FAILURE,
                   "cancelled": S.CANCELLED, "timed_out": S.TIMED_OUT, "skipped": S.SKIPPED}


class GhRepository(Vendor):
    id: int | None = None
    full_name: Text
    html_url: str | None = None


class GhUser(Vendor):
    login: str | None = None


class GhAuthor(Vendor):
    name: str | None = None


class GhHeadCommit(Vendor):
    id: str | None = None
    message: str | None = None
    author: GhAuthor | None = None
    timestamp: str | None = None


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
    head_branch: str | None = None
    html_url: str | None = None
    actor: GhUser | None = None
    triggering_actor: GhUser | None = None


class GhWorkflowRunEvent(Vendor):
    action: Text
    workflow_run: GhWorkflowRun
    workflow: GhWorkflow | None = None
    repository: GhRepository
    sender: GhUser | None = None


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
    head_branch: str | None = None


class GhWorkflowJobEvent(Vendor):
    action: Text
    workflow_job: GhWorkflowJob
    repository: GhRepository
    sender: GhUser | None = None


def github_status(status: str | None, conclusion: str | None) -> StageStatus | None:
    if status == "completed":
        return _GH_CONCLUSIONS.get(conclusion or "")
    return _GH_PENDING.get(status or "")


def _run_url(repository: GhRepository, run_id: int) -> str | None:
    """The workflow run's page (a job's event names only the job's own page)."""
    return f"{repository.html_url.rstrip('/')}/actions/runs/{run_id}" if repository.html_url else None


def github_pipeline(repository: str, workflow: str | None) -> str:
    return sanitize_name(f"{repository}/{workflow}" if workflow else repository, "github")


def parse(event: str | None, payload: object, source: str) -> ExternalUpdate | Ignored:
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
        who = run.triggering_actor or run.actor or body.sender
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
                parse_time(head.timestamp) if head else None,
            ),
            trigger=trigger_of("github", run.event),
            summary=f"workflow_run {body.action}",
            branch=run.head_branch, sender=who.login if who else None,
            source_url=run.html_url or _run_url(body.repository, run.id),
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
            summary=f"workflow_job {body.action}", branch=job.head_branch,
            sender=body.sender.login if body.sender else None,
            source_url=_run_url(body.repository, job.run_id),
        )
    return Ignored(f"GitHub event {event!r} is not handled; send workflow_run and workflow_job")

