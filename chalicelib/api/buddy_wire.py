"""Buddy.works' wire format: its pipeline ids in paths, status names, error body, the body of
"Cancel, Retry or Approve" and the execution object it answers with.

Pure (no chalice): api/buddy.py parses a request with these, calls the service and answers in
this shape. A Buddy execution is a run (its ``id`` the run's counter), an action a stage (its id
the stage's position). The numeric pipeline id is a function of the pipeline name shared with the
store and the service (domain/dialect_ids.py).
"""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from ..domain.clock import format_iso, millis_between
from ..domain.dialect_ids import BUDDY_ID_BITS, buddy_pipeline_id
from ..domain.model import Run, RunAggregate, Stage
from ..domain.schemas import MAX_VARIABLES, StrictModel, VariableKey, VariableValue
from ..domain.status import FINAL, StageStatus

S = StageStatus


def parse_buddy_id(value: str) -> int | None:
    """A Buddy pipeline id from a path: digits only, at most 52 bits; else None."""
    if not value.isascii() or not value.isdigit() or len(value) > 16:
        return None
    number = int(value)
    return number if 0 < number < 2 ** BUDDY_ID_BITS else None


# The mapping table of docs/dialects.md; a test checks it covers every status.
BUDDY_STATUS = {
    S.IDLE: "ENQUEUED",
    S.WAITING_FOR_APPROVAL: "WAITING_FOR_APPLY",
    S.IN_PROGRESS: "INPROGRESS",
    S.SUCCESS: "SUCCESSFUL",
    S.FAILURE: "FAILED",
    S.TIMED_OUT: "FAILED",
    S.CANCELLED: "TERMINATED",
    S.SKIPPED: "SKIPPED",
    S.QUEUED: "ENQUEUED",  # a run waiting in its concurrency group
    S.RETRY_PENDING: "ENQUEUED",  # a new attempt waits to start, as a queued one does
    S.CANCELLING: "TERMINATING",  # a run being stopped, its running actions finishing
}


def buddy_error(message: str) -> dict:
    """Buddy's error shape, as its SDKs read it: ``{"errors": [{"message": ...}]}``."""
    return {"errors": [{"message": message}]}


_BuddyText = Annotated[str, StringConstraints(max_length=4096)] | None
_BuddyFlag = bool | None


class BuddyVariableIn(StrictModel):
    """One variable of APPLY_VARIABLES: Buddy's whole Variable object, as its API returns it
    (GET/list variables) and its clients send back. ``key``, ``value`` and ``encrypted`` are
    used; every other documented field is accepted and ignored (stagetrack has no files, SSH keys
    or scopes to apply them to). A field Buddy does not document is still refused, as in every
    stagetrack body, so a misspelt ``encrypted`` cannot silently store a secret in clear."""

    key: VariableKey
    value: VariableValue
    encrypted: bool = False  # kept like a native secret variable: only a keyed hash
    # documented and ignored (buddy.works/docs/api/variables: get, list, add, edit)
    url: _BuddyText = None
    html_url: _BuddyText = None
    id: int | None = None
    type: _BuddyText = None  # VAR, FILE, SSH_KEY, ... (any: a type Buddy adds later still works)
    settable: _BuddyFlag = None
    run_only_settable: _BuddyFlag = None
    description: _BuddyText = None
    ssh_key: _BuddyFlag = None
    init_path: _BuddyText = None
    defaults: _BuddyText = None
    file_place: _BuddyText = None
    file_name: _BuddyText = None
    file_path: _BuddyText = None
    file_chmod: _BuddyText = None
    password: _BuddyText = None
    passphrase: _BuddyText = None
    key_identifier: _BuddyText = None
    checksum: _BuddyText = None
    key_fingerprint: _BuddyText = None
    public_value: _BuddyText = None
    comment: _BuddyText = None
    # the scope objects Buddy embeds (project, pipeline, action, environment): any JSON object
    project: dict | None = None
    pipeline: dict | None = None
    action: dict | None = None
    environment: dict | None = None


BUDDY_OPERATIONS = ("RETRY", "CANCEL", "APPLY", "APPLY_VARIABLES")


class BuddyOperationIn(StrictModel):
    """PATCH .../executions/:execution_id. ``variables`` is required with APPLY_VARIABLES and
    refused with the other operations (they would silently drop it)."""

    operation: Literal["RETRY", "CANCEL", "APPLY", "APPLY_VARIABLES"]
    comment: Annotated[str, StringConstraints(max_length=1000)] | None = None  # APPLY: the approval's
    variables: Annotated[list[BuddyVariableIn], Field(min_length=1, max_length=MAX_VARIABLES)] | None = Field(
        default=None, validate_default=True)

    @field_validator("variables")
    @classmethod
    def _with_apply_variables(cls, value, info: ValidationInfo):
        operation = info.data.get("operation")
        if operation == "APPLY_VARIABLES" and value is None:
            raise PydanticCustomError("required", "required when operation is APPLY_VARIABLES")
        if operation is not None and operation != "APPLY_VARIABLES" and value is not None:
            raise PydanticCustomError("not_allowed", "only accepted with operation APPLY_VARIABLES, "
                                                     "not {operation}", {"operation": operation})
        if value is not None:
            keys = [v.key for v in value]
            repeated = sorted({k for k in keys if keys.count(k) > 1})
            if repeated:
                raise PydanticCustomError("repeated", "each key may appear once; repeated: {keys}",
                                          {"keys": ", ".join(repeated)})
        return value


def buddy_progress(stage: Stage, now: datetime) -> int:
    """Percent done: 100 once finished (whatever the outcome), 0 before; a running stage that
    declared ``expectedSeconds`` moves towards 99 with its elapsed time."""
    if stage.status in FINAL:
        return 0 if stage.status == S.SKIPPED else 100
    if stage.status == S.IN_PROGRESS and stage.expected_seconds and stage.started_at is not None:
        done = millis_between(stage.started_at, now) * 100 // (stage.expected_seconds * 1000)
        return max(0, min(99, done))
    return 0


def _buddy_revision(commit: dict | None) -> dict | None:
    if not commit:
        return None
    person = {"url": None, "html_url": None, "id": None, "name": commit.get("committer") or "",
              "avatar_url": None}
    return {"url": None, "html_url": None, "revision": commit["hash"], "author_date": None,
            "commit_date": commit.get("committedAt"), "message": commit.get("message") or "",
            "committer": person, "author": dict(person)}


def _buddy_branch(branch: str | None) -> dict | None:
    """The run's branch as Buddy's branch object (no repository here to link to, nor to say
    whether it is the default branch: false)."""
    if branch is None:
        return None
    return {"url": None, "html_url": None, "name": branch, "default": False}


def _buddy_creator(actor: str | None) -> dict | None:
    """Who created the run (its ``actor``) as Buddy's member object: the name only."""
    if actor is None:
        return None
    return {"url": None, "html_url": None, "id": None, "name": actor, "avatar_url": None}


def buddy_execution(aggregate: RunAggregate, *, api_base: str, native_base: str, domain: str,
                    project: str, latest: Run | None, now: datetime) -> dict:
    """The execution object of Buddy's "Cancel, Retry or Approve" answer, field by field as in
    its reference example. ``api_base`` is the URL of this API's /workspaces tree as the client
    called it; ``html_url``s point at the native run and stages (stagetrack has no web UI);
    ``latest`` is the pipeline's newest run, for ``pipeline.last_execution_*``."""
    run = aggregate.run
    pipeline_id = buddy_pipeline_id(run.pipeline)
    pipeline_url = f"{api_base}/workspaces/{domain}/projects/{project}/pipelines/{pipeline_id}"
    newest = run if latest is None or latest.counter <= run.counter else latest
    revision = _buddy_revision(run.commit)
    return {
        "url": f"{pipeline_url}/executions/{run.counter}",
        "html_url": f"{native_base}/api/runs/{run.id}",
        "id": run.counter,
        "start_date": format_iso(run.started_at),
        "finish_date": format_iso(run.ended_at),
        "triggeredOn": "CLICK",  # runs start by an API call: Buddy's manual trigger
        "refresh": False,
        "status": BUDDY_STATUS[run.status],
        "comment": run.trigger or "",
        "branch": _buddy_branch(run.branch),
        "from_revision": revision,
        "to_revision": revision,
        "creator": _buddy_creator(run.actor),
        "pipeline": {
            "url": pipeline_url,
            "html_url": f"{native_base}/api/pipelines/{run.pipeline}/status",
            "id": pipeline_id,
            "name": run.pipeline,
            "on": "CLICK",
            "refs": [],
            "last_execution_status": BUDDY_STATUS[newest.status],
            "last_execution_revision": (newest.commit or {}).get("hash"),
        },
        "action_executions": [
            {
                "status": BUDDY_STATUS[stage.status],
                "progress": buddy_progress(stage, now),
                "action": {
                    "url": f"{pipeline_url}/actions/{stage.position}",
                    "html_url": f"{native_base}/api/stages/{stage.id}",
                    "id": stage.position,
                    "name": stage.name,
                    "type": stage.type,
                    "trigger_time": "ON_EVERY_EXECUTION",
                    "last_execution_status": BUDDY_STATUS[stage.status],
                },
            }
            for stage in sorted(aggregate.stages, key=lambda s: s.position)
        ],
    }
