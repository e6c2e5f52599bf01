"""GoCD's wire format: result and state names, its error body, its form and JSON request
bodies, and its answers (pipeline and stage instances, histories, status, version).

Pure (no chalice): api/gocd.py parses a request with these, calls the service and answers in
this shape. A GoCD pipeline is a stagetrack pipeline (same name), a pipeline instance a run (its
``counter``), a stage a stage found by name with one job of the same name; its attempts are
GoCD's stage counters.
"""
from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from ..domain.clock import format_iso, parse_iso
from ..domain.model import Run, Stage
from ..domain.schemas import MAX_VARIABLES, StrictModel, VariableKey, VariableValue
from ..domain.status import FINAL, StageStatus

S = StageStatus

# The mapping tables of docs/dialects.md; a test checks each covers every status.
GOCD_RESULT = {
    S.IDLE: "Unknown",
    S.WAITING_FOR_APPROVAL: "Unknown",
    S.IN_PROGRESS: "Unknown",
    S.SUCCESS: "Passed",
    S.FAILURE: "Failed",
    S.TIMED_OUT: "Cancelled",  # GoCD cancels a job that outlives its timeout
    S.CANCELLED: "Cancelled",
    S.SKIPPED: "Unknown",
    S.QUEUED: "Unknown",  # a run waiting in its concurrency group (GoCD: waiting for its lock)
    S.RETRY_PENDING: "Unknown",
    S.CANCELLING: "Unknown",  # a run being stopped: not over yet
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
    S.QUEUED: "Scheduled",
    S.RETRY_PENDING: "Scheduled",  # GoCD's state of a job rescheduled, not yet assigned
    S.CANCELLING: "Completing",  # a run being stopped, its running jobs finishing
}


def gocd_error(message: str) -> dict:
    """GoCD's JSON error shape."""
    return {"message": message}


# ---- requests ------------------------------------------------------------------------------------

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


# ---- answers -------------------------------------------------------------------------------------

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
        "can_run": operate and (status in FINAL or status in (S.WAITING_FOR_APPROVAL, S.RETRY_PENDING)),
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


def attempt_of(stage: Stage, counter: int, ended: dict | None) -> dict | None:
    """One attempt of a stage (GoCD's stage counter): the current one, or ``ended`` (the ended
    attempt of that number, read by key: ``runs.ended_attempt``)."""
    if counter == stage.attempt:
        decision = stage.approval_decision or {}
        return {"status": stage.status.value, "startedAt": format_iso(stage.started_at),
                "endedAt": format_iso(stage.ended_at), "waitingSince": format_iso(stage.waiting_since),
                "approvedBy": decision.get("by") if decision.get("decision") == "APPROVED" else None}
    if ended is not None and ended.get("attempt") == counter:
        decision = ended.get("approvalDecision") or {}
        return {"status": ended["status"], "startedAt": ended.get("startedAt"),
                "endedAt": ended.get("endedAt"), "waitingSince": None,
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
