"""The three dialects stagetrack speaks besides its own: GoCD, Huawei CodeArts Build, Buddy.works.

Pure: mapping tables, the ids each dialect addresses a pipeline by, request models and the wire
shapes of answers. api/gocd.py, api/codearts.py and api/buddy.py only parse a request, call the
service and hand what it returns to the builders here (README "Compatibility endpoints").

How the dialects' nouns map onto stagetrack's:
- pipeline: a GoCD pipeline (same name); a CodeArts build task, whose ``job_id`` is the MD5 of
  the name (32 hex characters); a Buddy pipeline, whose numeric ``pipeline_id`` is the first 52
  bits of the SHA-256 of the name (a JavaScript-safe integer). Both ids are functions of the
  name: they never change, anyone can compute them (``printf %s web | md5sum``), the native
  pipeline status shows them, and a token limited to some pipelines is checked against them
  without reading anything. The pipeline item carries them (store/models.py) so each is found
  back by one Query.
- run: a GoCD pipeline instance (``counter``), a CodeArts build (``build_no``), a Buddy execution
  (``id``) — all the run's counter, 1, 2, 3 ...
- stage: a GoCD stage, found by name, with one job of the same name; its attempts are GoCD's
  stage counters. A Buddy action, whose id is the stage's position.
"""
from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .clock import format_iso, millis_between, parse_iso
from .model import Run, RunAggregate, Stage
from .schemas import MAX_VARIABLES, StrictModel, VariableKey, VariableValue
from .status import FINAL, StageStatus

S = StageStatus

# ---- identities ------------------------------------------------------------------------------

JOB_ID_PATTERN = r"^[A-Za-z0-9]{32}$"
BUDDY_ID_BITS = 52
CODEARTS_KEY_PREFIX = "#codearts:"  # never a pipeline name: those cannot start with '#'
BUDDY_KEY_PREFIX = "#buddy:"


def codearts_job_id(pipeline: str) -> str:
    """The CodeArts build task id of a pipeline: MD5 of its name (an identifier, not a secret)."""
    return hashlib.md5(pipeline.encode("utf-8"), usedforsecurity=False).hexdigest()


def buddy_pipeline_id(pipeline: str) -> int:
    """The Buddy pipeline id of a pipeline: 52 bits of SHA-256 of its name, never 0."""
    value = int(hashlib.sha256(pipeline.encode("utf-8")).hexdigest()[: BUDDY_ID_BITS // 4], 16)
    return value or 1


def codearts_key(pipeline: str) -> str:
    """What the pipeline item is found by for a CodeArts job id (store/dialects.py)."""
    return CODEARTS_KEY_PREFIX + codearts_job_id(pipeline)


def buddy_key(pipeline: str) -> str:
    return f"{BUDDY_KEY_PREFIX}{buddy_pipeline_id(pipeline)}"


def parse_buddy_id(value: str) -> int | None:
    """A Buddy pipeline id from a path: digits only, at most 52 bits; else None."""
    if not value.isascii() or not value.isdigit() or len(value) > 16:
        return None
    number = int(value)
    return number if 0 < number < 2 ** BUDDY_ID_BITS else None


# ---- statuses --------------------------------------------------------------------------------
# The mapping tables of README "Compatibility endpoints"; a test checks each covers every status.

GOCD_RESULT = {
    S.IDLE: "Unknown",
    S.WAITING_FOR_APPROVAL: "Unknown",
    S.IN_PROGRESS: "Unknown",
    S.SUCCESS: "Passed",
    S.FAILURE: "Failed",
    S.TIMED_OUT: "Cancelled",  # GoCD cancels a job that outlives its timeout
    S.CANCELLED: "Cancelled",
    S.SKIPPED: "Unknown",
}
GOCD_JOB_STATE = {
    S.IDLE: "Scheduled",
    S.WAITING_FOR_APPROVAL: "Waiting",
    S.IN_PROGRESS: "Building",
    S.SUCCESS: "Completed",
    S.FAILURE: "Completed",
    S.TIMED_OUT: "Completed",
    S.CANCELLED: "Completed",
    S.SKIPPED: "Discontinued",
}
BUDDY_STATUS = {
    S.IDLE: "ENQUEUED",
    S.WAITING_FOR_APPROVAL: "WAITING_FOR_APPLY",
    S.IN_PROGRESS: "INPROGRESS",
    S.SUCCESS: "SUCCESSFUL",
    S.FAILURE: "FAILED",
    S.TIMED_OUT: "FAILED",
    S.CANCELLED: "TERMINATED",
    S.SKIPPED: "SKIPPED",
}

# Error codes of the CodeArts error shape {"error_code", "error_msg"}, by HTTP status. Assigned by
# stagetrack in CodeArts Build's "CB.<8 digits>" form; the digits end with the status.
CODEARTS_ERROR_CODES = {
    400: "CB.00000400",
    401: "CB.00000401",
    403: "CB.00000403",
    404: "CB.00000404",
    405: "CB.00000405",
    409: "CB.00000409",
    413: "CB.00000413",
    415: "CB.00000415",
    429: "CB.00000429",
    500: "CB.00000500",
}


def codearts_error(status: int, message: str) -> dict:
    return {"error_code": CODEARTS_ERROR_CODES.get(status, CODEARTS_ERROR_CODES[500]), "error_msg": message}


def buddy_error(message: str) -> dict:
    """Buddy's error shape, as its SDKs read it: ``{"errors": [{"message": ...}]}``."""
    return {"errors": [{"message": message}]}


def gocd_error(message: str) -> dict:
    """GoCD's JSON error shape."""
    return {"message": message}


# ---- requests --------------------------------------------------------------------------------

class CodeArtsStopIn(StrictModel):
    """POST /v3/jobs/stop. Both are strings, as the CodeArts reference says."""

    job_id: Annotated[str, StringConstraints(pattern=JOB_ID_PATTERN)]
    build_no: Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{0,11}$")]


class CodeArtsStopV1In(StrictModel):
    """POST /v1/job/{job_id}/stop's optional body: the build number, an integer in the v1
    reference (the SDK sends it as the query parameter build_no instead)."""

    build_no: Annotated[int, Field(ge=1, le=999_999_999_999)] | None = None


class CodeArtsEmptyIn(StrictModel):
    """POST /v3/jobs/{job_id}/{build_no}/stop takes no body; ``{}`` is tolerated, nothing more."""


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


Reason = Annotated[str, StringConstraints(max_length=1000)]
FormVariables = Annotated[dict[VariableKey, VariableValue], Field(max_length=MAX_VARIABLES)]


class GoCDEmptyForm(StrictModel):
    """The POSTs without parameters (cancel, unpause, releaseLock): an empty body, or none."""


class GoCDPauseForm(StrictModel):
    """POST /go/api/pipelines/:name/pause, form data."""

    pauseCause: Reason = ""


class GoCDScheduleForm(StrictModel):
    """POST /go/api/pipelines/:name/schedule, form data ``variables[NAME]=value``,
    ``secure_variables[NAME]=value`` and ``materials[NAME]=revision`` (accepted and not used:
    stagetrack tracks runs, it does not fetch materials)."""

    variables: FormVariables = {}
    secure_variables: FormVariables = {}
    materials: Annotated[dict[Annotated[str, StringConstraints(max_length=200)],
                              Annotated[str, StringConstraints(max_length=200)]],
                         Field(max_length=MAX_VARIABLES)] = {}


# GoCD's current API (api.gocd.org, versioned by Accept): JSON bodies. Fields GoCD documents are
# accepted; others are refused as in every stagetrack body (a typo must not be silently dropped).

class GoCDPauseIn(StrictModel):
    """POST /go/api/pipelines/:name/pause with Accept v1: ``{"pause_cause": "..."}``."""

    pause_cause: Reason | None = None


class GoCDEnvironmentVariableIn(StrictModel):
    """One of schedule's ``environment_variables``: ``{name, value, secure}``, or a secure one as
    GoCD-encrypted ``encrypted_value``. stagetrack cannot decrypt GoCD's cipher text and needs
    not: a secure value is kept as a keyed hash only, whichever form it came in."""

    name: VariableKey
    value: VariableValue | None = None
    encrypted_value: VariableValue | None = None
    secure: bool = False

    @model_validator(mode="after")
    def _one_value(self) -> GoCDEnvironmentVariableIn:
        if (self.value is None) == (self.encrypted_value is None):
            raise PydanticCustomError("value", "give exactly one of value and encrypted_value")
        return self

    @property
    def is_secret(self) -> bool:
        return self.secure or self.encrypted_value is not None

    @property
    def text(self) -> str:
        if self.value is not None:
            return self.value
        assert self.encrypted_value is not None, "_one_value lets exactly one of them be None"
        return self.encrypted_value


GOCD_FINGERPRINT = r"^[0-9a-fA-F]{64}$"  # GoCD's material fingerprints are SHA-256, hex


class GoCDMaterialIn(StrictModel):
    """One of schedule's ``materials``: which revision of which material (by fingerprint)."""

    fingerprint: Annotated[str, StringConstraints(pattern=GOCD_FINGERPRINT)]
    revision: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class GoCDScheduleIn(StrictModel):
    """POST /go/api/pipelines/:name/schedule with Accept v1."""

    environment_variables: Annotated[list[GoCDEnvironmentVariableIn], Field(max_length=MAX_VARIABLES)] = []
    materials: Annotated[list[GoCDMaterialIn], Field(max_length=MAX_VARIABLES)] = []
    # accepted and not used: stagetrack does not poll materials, there is nothing to update
    update_materials_before_scheduling: bool = True

    @model_validator(mode="after")
    def _unique(self) -> GoCDScheduleIn:
        for field, names in (("environment_variables", [v.name for v in self.environment_variables]),
                             ("materials", [m.fingerprint.lower() for m in self.materials])):
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise PydanticCustomError("repeated", "{field}: each may appear once; repeated: {names}",
                                          {"field": field, "names": ", ".join(repeated)})
        return self

    def commit_for(self, pipeline: str) -> dict | None:
        """The run's commit, when a material names the pipeline's own material (the fingerprint
        its pipeline instances show) with a commit hash; other materials are tolerated, unused."""
        own = gocd_material_fingerprint(pipeline)
        for material in self.materials:
            if material.fingerprint.lower() == own and _COMMIT.match(material.revision):
                return {"hash": material.revision}
        return None


_COMMIT = re.compile(r"^[0-9a-fA-F]{7,64}$")


# ---- GoCD answers ----------------------------------------------------------------------------

GOCD_PAGE_SIZE = 10
GOCD_STAGE_IDS_PER_RUN = 100  # stage ids are counter * 100 + position (positions stay <= 50)
GOCD_API_VERSION = "17.1.0"  # the newest "Available since" in the GoCD reference implemented


def millis(moment: datetime | None) -> int | None:
    """Epoch milliseconds, exact (no float rounding), as GoCD's dates are."""
    if moment is None:
        return None
    return int(moment.timestamp()) * 1000 + moment.microsecond // 1000


def _iso_millis(text: str | None) -> int | None:
    return millis(parse_iso(text))


def gocd_stage_id(counter: int, position: int) -> int:
    return counter * GOCD_STAGE_IDS_PER_RUN + position


def _approved_by(approval: str, approved_by: str | None) -> str | None:
    """GoCD says "changes" for a stage that ran without a manual gate, else who approved it."""
    return "changes" if approval != "MANUAL" else approved_by


def _approval_type(approval: str) -> str:
    return "manual" if approval == "MANUAL" else "success"


def _job(run: Run, entry: dict) -> dict:
    status = S(entry["status"])
    return {
        "name": entry["name"],
        "result": GOCD_RESULT[status],
        "state": GOCD_JOB_STATE[status],
        "id": gocd_stage_id(run.counter, entry["position"]),
        "scheduled_date": _iso_millis(entry.get("startedAt")) or millis(run.created_at),
    }


def gocd_pipeline_stage(run: Run, entry: dict, *, operate: bool) -> dict:
    """One stage inside a pipeline instance (instance and pipeline history), from a stage
    summary (``model.stage_summary``)."""
    status = S(entry["status"])
    return {
        "name": entry["name"],
        "approved_by": _approved_by(entry["approval"], entry.get("approvedBy")),
        "jobs": [_job(run, entry)],
        "can_run": operate and (status in FINAL or status == S.WAITING_FOR_APPROVAL),
        "result": GOCD_RESULT[status],
        "approval_type": _approval_type(entry["approval"]),
        "counter": str(entry["attempt"]),
        "id": gocd_stage_id(run.counter, entry["position"]),
        "operate_permission": operate,
        "rerun_of_counter": None,
        "scheduled": status not in (S.SKIPPED, S.WAITING_FOR_APPROVAL),
    }


def gocd_material_fingerprint(pipeline: str) -> str:
    """The fingerprint of the one material stagetrack shows for a pipeline (its commits)."""
    return hashlib.sha256(f"stagetrack:{pipeline}".encode()).hexdigest()


def _material_revisions(run: Run) -> list[dict]:
    """A run's commit as GoCD's one material revision (stagetrack knows one commit per run)."""
    if not run.commit:
        return []
    return [{
        "modifications": [{
            "email_address": None,
            "id": run.counter,
            "modified_time": millis(run.created_at),
            "user_name": run.commit.get("committer") or "",
            "comment": run.commit.get("message") or "",
            "revision": run.commit["hash"],
        }],
        "material": {
            "description": f"commit of pipeline {run.pipeline}",
            "fingerprint": gocd_material_fingerprint(run.pipeline),
            "type": "Git",
            "id": 1,
        },
        "changed": True,
    }]


def gocd_pipeline_instance(run: Run, summary: list[dict], *, operate: bool) -> dict:
    """GET /go/api/pipelines/:name/instance/:counter, and each entry of the pipeline history."""
    return {
        "build_cause": {
            "approver": "",
            "material_revisions": _material_revisions(run),
            "trigger_forced": not run.commit,
            "trigger_message": run.trigger or "",
        },
        "name": run.pipeline,
        "natural_order": run.counter,
        "can_run": operate and run.status in FINAL,
        "comment": None,
        "stages": [gocd_pipeline_stage(run, entry, operate=operate) for entry in summary],
        "counter": run.counter,
        "id": run.counter,
        "preparing_to_schedule": False,
        "label": str(run.counter),
    }


def gocd_stage_history_entry(run: Run, entry: dict) -> dict:
    status = S(entry["status"])
    return {
        "name": entry["name"],
        "approved_by": _approved_by(entry["approval"], entry.get("approvedBy")),
        "jobs": [_job(run, entry)],
        "pipeline_counter": run.counter,
        "pipeline_name": run.pipeline,
        "result": GOCD_RESULT[status],
        "approval_type": _approval_type(entry["approval"]),
        "id": gocd_stage_id(run.counter, entry["position"]),
        "counter": str(entry["attempt"]),
        "rerun_of_counter": None,
    }


def pagination(offset: int, total: int) -> dict:
    return {"offset": offset, "total": total, "page_size": GOCD_PAGE_SIZE}


def attempt_of(stage: Stage, counter: int) -> dict | None:
    """One attempt of a stage (GoCD's stage counter): the current one or an archived one."""
    if counter == stage.attempt:
        decision = stage.approval_decision or {}
        return {"status": stage.status.value, "startedAt": format_iso(stage.started_at),
                "endedAt": format_iso(stage.ended_at), "waitingSince": format_iso(stage.waiting_since),
                "approvedBy": decision.get("by") if decision.get("decision") == "APPROVED" else None}
    for entry in stage.attempts:
        if entry.get("attempt") == counter:
            decision = entry.get("approvalDecision") or {}
            return {"status": entry["status"], "startedAt": entry.get("startedAt"),
                    "endedAt": entry.get("endedAt"), "waitingSince": None,
                    "approvedBy": decision.get("by") if decision.get("decision") == "APPROVED" else None}
    return None


def _transitions(scheduled_at: int | None, attempt: dict) -> list[dict]:
    status = S(attempt["status"])
    moments = [("Scheduled", scheduled_at)]
    if attempt.get("waitingSince"):
        moments.append(("Waiting", _iso_millis(attempt["waitingSince"])))
    if attempt.get("startedAt"):
        moments.append(("Building", _iso_millis(attempt["startedAt"])))
    if status in FINAL and attempt.get("endedAt"):
        moments.append(("Completed", _iso_millis(attempt["endedAt"])))
    return [{"state_change_time": moment, "id": index, "state": state}
            for index, (state, moment) in enumerate(moments, start=1) if moment is not None]


def gocd_stage_instance(run: Run, stage: Stage, counter: int, attempt: dict) -> dict:
    """GET /go/api/stages/:pipeline/:stage/instance/:pipeline_counter/:stage_counter."""
    status = S(attempt["status"])
    scheduled = _iso_millis(attempt.get("startedAt")) if counter > 1 else millis(stage.created_at)
    stage_id = gocd_stage_id(run.counter, stage.position)
    return {
        "name": stage.name,
        "clean_working_directory": False,
        "approved_by": _approved_by(stage.approval, attempt.get("approvedBy")),
        "jobs": [{
            "agent_uuid": None,
            "name": stage.name,
            "job_state_transitions": _transitions(scheduled, attempt),
            "scheduled_date": scheduled or _iso_millis(attempt.get("startedAt")) or millis(stage.created_at),
            "original_job_id": None,
            "pipeline_counter": None,
            "rerun": counter > 1,
            "pipeline_name": None,
            "result": GOCD_RESULT[status],
            "state": GOCD_JOB_STATE[status],
            "id": stage_id,
            "stage_counter": None,
            "stage_name": None,
        }],
        "pipeline_counter": run.counter,
        "pipeline_name": run.pipeline,
        "approval_type": _approval_type(stage.approval),
        "result": GOCD_RESULT[status],
        "counter": counter,
        "id": stage_id,
        "rerun_of_counter": None,
        "fetch_materials": True,
        "artifacts_deleted": False,
    }


def gocd_stage_v3(run: Run, stage: Stage, counter: int, attempt: dict) -> dict:
    """GET /go/api/stages/:pipeline_name/:pipeline_counter/:stage_name/:stage_counter (Accept v3):
    GoCD's current stage instance, field by field as its v3 representer writes it."""
    status = S(attempt["status"])
    scheduled = (_iso_millis(attempt.get("startedAt")) if counter > 1 else millis(stage.created_at)) \
        or millis(stage.created_at)
    transitions = [{"state": t["state"], "state_change_time": t["state_change_time"]}
                   for t in _transitions(scheduled, attempt)]
    body = {
        "name": stage.name,
        "counter": counter,
        "approval_type": _approval_type(stage.approval),
        "approved_by": _approved_by(stage.approval, attempt.get("approvedBy")),
        "scheduled_at": scheduled,
        "last_transitioned_time": transitions[-1]["state_change_time"] if transitions else scheduled,
        "result": GOCD_RESULT[status],
    }
    if body["result"] == "Cancelled":  # GoCD names who cancelled; "GoCD" when the system did
        cancellation = run.cancellation or {}
        mine = cancellation.get("stageId") == stage.id and counter == stage.attempt
        body["cancelled_by"] = cancellation.get("by") if mine and cancellation.get("by") else "GoCD"
    body.update({
        "rerun_of_counter": None,
        "fetch_materials": True,
        "clean_working_directory": False,
        "artifacts_deleted": False,
        "pipeline_name": run.pipeline,
        "pipeline_counter": run.counter,
        "jobs": [{
            "name": stage.name,
            "state": GOCD_JOB_STATE[status],
            "result": GOCD_RESULT[status],
            "scheduled_date": scheduled,
            "rerun": counter > 1,
            "original_job_id": None,
            "agent_uuid": None,
            "pipeline_name": None,
            "pipeline_counter": None,
            "stage_name": None,
            "stage_counter": None,
            "job_state_transitions": transitions,
        }],
    })
    return body


def gocd_pipeline_status(paused: bool, locked: bool, schedulable: bool) -> dict:
    return {"locked": locked, "paused": paused, "schedulable": schedulable}


def gocd_version(self_href: str) -> dict:
    """GET /go/api/version: the GoCD API level these endpoints implement, not a GoCD build."""
    return {
        "_links": {"self": {"href": self_href}, "doc": {"href": "https://api.gocd.io/#version"}},
        "version": GOCD_API_VERSION,
        "build_number": "0",
        "git_sha": "0" * 40,
        "full_version": f"{GOCD_API_VERSION} (0-stagetrack)",
        "commit_url": "",
    }


# ---- Buddy answers ---------------------------------------------------------------------------

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
            "commit_date": None, "message": commit.get("message") or "", "committer": person,
            "author": dict(person)}


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
        "branch": None,
        "from_revision": revision,
        "to_revision": revision,
        "creator": None,
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
