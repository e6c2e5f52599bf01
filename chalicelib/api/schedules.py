"""A pipeline's cron schedules (issue 15 item 4): translation only (service/schedules.py).

Authorized as pause is: reading needs ``read``, creating/changing/deleting ``operate`` (or
admin), and a token limited to some pipelines reaches only those pipelines' schedules (the
pipeline is the path's ``{pipeline}``; a schedule id is looked up inside that pipeline only).
"""
from __future__ import annotations

from typing import Annotated, Any

from chalice import Blueprint
from pydantic import Field, StringConstraints

from .. import wiring
from ..domain import auth
from ..domain.clock import format_iso
from ..domain.schedules import Schedule
from ..domain.schemas import CreateScheduleIn, PatchScheduleIn
from ..service import commands, schedules
from .idempotency import actor
from .openapi import Out, Timestamp
from .parsing import parse_body
from .responses import json_response
from .routing import route

routes = Blueprint(__name__)

_PIPELINE = auth.acts_on(path={"pipeline": auth.PIPELINE})


class SkippedOut(Out):
    at: Timestamp = Field(description="the fire time that created no run")
    reason: str = Field(description="pipeline_paused or pipeline_not_found")
    message: str


class ScheduleOut(Out):
    id: Annotated[str, StringConstraints(pattern=r"^sch_[0-9a-f]{20}$")]
    pipeline: str
    cron: str = Field(description="5 fields: minute hour day-of-month month day-of-week")
    timeZone: str = Field(description="IANA time zone the cron fields are read in")
    enabled: bool
    variables: dict[str, str]
    description: str | None
    nextFireAt: Timestamp | None = Field(description="null while disabled")
    lastFiredAt: Timestamp | None
    lastRunId: str | None
    lastSkipped: SkippedOut | None
    createdAt: Timestamp
    createdBy: str
    updatedAt: Timestamp


class ScheduleListOut(Out):
    items: list[ScheduleOut] = Field(description="oldest first")


def view(schedule: Schedule) -> dict[str, Any]:
    return {
        "id": schedule.id, "pipeline": schedule.pipeline, "cron": schedule.cron,
        "timeZone": schedule.time_zone, "enabled": schedule.enabled, "variables": dict(schedule.variables),
        "description": schedule.description, "nextFireAt": format_iso(schedule.next_fire_at),
        "lastFiredAt": format_iso(schedule.last_fired_at), "lastRunId": schedule.last_run_id,
        "lastSkipped": schedule.last_skipped, "createdAt": format_iso(schedule.created_at),
        "createdBy": schedule.created_by, "updatedAt": format_iso(schedule.updated_at),
    }


def _request():
    return routes.current_request


def _body(model):
    return parse_body(_request(), model, wiring.context().settings.max_body_bytes)


@route(routes, "/api/pipelines/{pipeline}/schedules", methods=["POST"], acts_on=_PIPELINE,
       body=CreateScheduleIn, response=ScheduleOut, status=201,
       summary="Create a cron schedule that starts a run like the pipeline's latest one")
def create_schedule(pipeline):
    created = commands.execute(wiring.context(), commands.CreateSchedule(pipeline, _body(CreateScheduleIn)),
                               actor=actor(_request()))
    return json_response(view(created), 201,
                         {"Location": f"/api/pipelines/{pipeline}/schedules/{created.id}"})


@route(routes, "/api/pipelines/{pipeline}/schedules", methods=["GET"], acts_on=_PIPELINE, etag=True,
       response=ScheduleListOut, summary="The pipeline's schedules")
def list_schedules(pipeline):
    return json_response({"items": [view(s) for s in schedules.list_for(wiring.context(), pipeline)]})


@route(routes, "/api/pipelines/{pipeline}/schedules/{schedule_id}", methods=["GET"], acts_on=_PIPELINE,
       response=ScheduleOut, summary="One schedule")
def get_schedule(pipeline, schedule_id):
    return json_response(view(schedules.get(wiring.context(), pipeline, schedule_id)))


@route(routes, "/api/pipelines/{pipeline}/schedules/{schedule_id}", methods=["PATCH"], acts_on=_PIPELINE,
       body=PatchScheduleIn, response=ScheduleOut,
       summary="Change a schedule (enabled, cron, timeZone, variables, description)")
def patch_schedule(pipeline, schedule_id):
    change = commands.ChangeSchedule(pipeline, schedule_id, _body(PatchScheduleIn))
    return json_response(view(commands.execute(wiring.context(), change, actor=actor(_request()))))


@route(routes, "/api/pipelines/{pipeline}/schedules/{schedule_id}", methods=["DELETE"], acts_on=_PIPELINE,
       response=ScheduleOut, summary="Delete a schedule (answers with it)")
def delete_schedule(pipeline, schedule_id):
    deleted = commands.execute(wiring.context(), commands.DeleteSchedule(pipeline, schedule_id),
                               actor=actor(_request()))
    return json_response(view(deleted))
