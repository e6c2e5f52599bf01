"""Wire shapes of runs and stages (the reference "Stages" API fields first, then ours)."""
from __future__ import annotations

from datetime import datetime

from .clock import format_iso, seconds_from_millis
from .concurrency import Setting
from .dialect_ids import buddy_pipeline_id, codearts_job_id
from .model import Run, RunAggregate, Stage
from .operations import Pipeline, masked_variables
from .overruns import Expectation, eta, own_expectation, stage_expectations


def stage_view(stage: Stage, now: datetime, attempts: list[dict] | None = None,
               expected: Expectation | None = None) -> dict:
    """The stage; ``attempts`` (its ended attempts, oldest first) only when they were asked for
    (``?include=attempts``): by default a stage shows its current attempt and their count.
    ``typicalSeconds``: its recent p50 (``expected``, else its own stored one: domain/overruns.py)."""
    expected = expected or own_expectation(stage)
    body: dict[str, object] = {
        "id": stage.id,
        "createdAt": format_iso(stage.created_at),
        "updatedAt": format_iso(stage.updated_at),
        "type": stage.type,
        "startedAt": format_iso(stage.started_at),
        "endedAt": format_iso(stage.ended_at),
        "duration": seconds_from_millis(stage.elapsed_ms(now)),
        "status": stage.status.value,
        "runId": stage.run_id,
        "name": stage.name,
        "position": stage.position,
        "approval": stage.approval,
        "timeoutSeconds": stage.timeout_seconds,
        "expectedSeconds": stage.expected_seconds,
        "timesOutAt": format_iso(stage.deadline()),
        "attempt": stage.attempt,
        "attemptCount": stage.attempt_count,
        "approvalDecision": stage.approval_decision,
        "approvalPolicy": stage.approval_policy,
        "approvals": [dict(d) for d in stage.approvals],
        "allowFailure": stage.allow_failure,
        "environment": stage.environment,
        "retry": stage.retry_policy,
        "autoRetries": stage.auto_retries,
        "nextRetryAt": format_iso(stage.next_retry_at),
        "retryReason": stage.retry_reason,
        "always": stage.always,
        "cancelsAt": format_iso(stage.cancel_at) if stage.is_active else None,
        "runDeadline": format_iso(stage.run_deadline) if stage.is_active else None,
        "typicalSeconds": expected.p50_ms / 1000 if expected is not None else None,
        "overrunningAt": format_iso(stage.overrunning_at),
        "version": stage.version,
    }
    if attempts is not None:
        body["attempts"] = [attempt_view(entry) for entry in attempts]
    return body


def attempt_view(entry: dict) -> dict:
    """One ended attempt (as ``operations.new_attempt`` recorded it), every field present."""
    return {"attempt": entry["attempt"], "status": entry["status"], "startedAt": entry.get("startedAt"),
            "endedAt": entry.get("endedAt"), "duration": entry.get("duration"),
            "approvalDecision": entry.get("approvalDecision")}


def run_summary_view(run: Run, now: datetime) -> dict:
    return {
        "id": run.id,
        "pipeline": run.pipeline,
        "counter": run.counter,
        "status": run.status.value,
        "createdAt": format_iso(run.created_at),
        "updatedAt": format_iso(run.updated_at),
        "startedAt": format_iso(run.started_at),
        "endedAt": format_iso(run.ended_at),
        "duration": seconds_from_millis(run.elapsed_ms(now)),
        "commit": commit_view(run.commit),
        "trigger": run.trigger,
        "branch": run.branch,
        "actor": run.actor,
        "sourceUrl": run.source_url,
        "source": run.source,
        "environment": run.environment,
        "variables": masked_variables(run),
        "secretVariables": sorted(run.secrets),
        "timeoutSeconds": run.timeout_seconds,
        "autoAdvance": run.auto_advance,
        "cancellation": run.cancellation,
        "stopping": run.stopping,
        "stopGraceSeconds": run.stop_grace_seconds,
        "version": run.version,
    }


def commit_view(commit: dict | None) -> dict | None:
    """The commit as recorded, with ``committedAt`` always present (null when unknown)."""
    if commit is None:
        return None
    return {**commit, "committedAt": commit.get("committedAt")}


def run_view(aggregate: RunAggregate, now: datetime,
             attempts: dict[str, list[dict]] | None = None) -> dict:
    """The run with its stages; with ``attempts`` (stage id -> ended attempts, oldest first:
    ``?include=attempts``) every stage carries its ``attempts``."""
    body = run_summary_view(aggregate.run, now)
    # its concurrency group (null: none); not in listings, whose index does not hold it
    body["concurrencyGroup"] = aggregate.run.concurrency_group
    # when it should end, from its stages' recent history (domain/overruns.py); not in listings,
    # whose index does not hold the stages
    body["eta"] = format_iso(eta(aggregate, now))
    expected = stage_expectations(aggregate.stages)
    body["stages"] = [stage_view(stage, now, None if attempts is None else attempts.get(stage.id, []),
                                 expected.get(stage.id))
                      for stage in aggregate.stages]
    return body


def pipeline_status_view(pipeline: Pipeline) -> dict:
    """GoCD's pipeline status (paused, locked, schedulable) plus who paused it, when and why."""
    return {
        "name": pipeline.name,
        "paused": pipeline.paused,
        "pausedCause": pipeline.pause_cause,
        "pausedBy": pipeline.paused_by,
        "pausedAt": format_iso(pipeline.paused_at),
        "locked": pipeline.locked,
        "lockedBy": pipeline.lock_holder,  # the run holding its default concurrency group
        "schedulable": pipeline.schedulable,
        "concurrency": Setting.of(pipeline.concurrency).as_dict(),
        # how the compatibility endpoints address it (domain/dialect_ids.py)
        "codeartsJobId": codearts_job_id(pipeline.name),
        "buddyPipelineId": buddy_pipeline_id(pipeline.name),
    }


def pipeline_overview_view(pipeline: Pipeline, recent_runs: list[Run]) -> dict:
    """A pipeline in GET /api/pipelines: its state and its newest runs' stages in brief (a
    status matrix: runs x stages)."""
    return {
        "name": pipeline.name,
        "paused": pipeline.paused,
        "lastActivityAt": format_iso(pipeline.last_activity),
        "runCount": pipeline.counter,
        "recentRuns": [{
            "id": run.id, "counter": run.counter, "status": run.status.value,
            "createdAt": format_iso(run.created_at), "branch": run.branch,
            "stages": [{"name": entry["name"], "status": entry["status"]}
                       for entry in run.stage_summary or []],
        } for run in recent_runs],
    }


def approval_view(stage: Stage, run: Run, now: datetime) -> dict:
    """A stage waiting for approval in GET /api/approvals, with what its run says of itself."""
    return {
        "stage": stage_view(stage, now),
        "run": {"id": run.id, "pipeline": run.pipeline, "counter": run.counter, "branch": run.branch,
                "actor": run.actor},
        "waitingSince": format_iso(stage.waiting_since or stage.updated_at),
    }
