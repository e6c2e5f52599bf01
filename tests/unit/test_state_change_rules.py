"""Which committed changes become events (``state_change``): one stream record is at most one
event, with an id that is the same however often the record is read."""
from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from chalicelib.domain.events import RUN_CHANGED, STAGE_CHANGED
from chalicelib.store.stream import state_change

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def _run(status="IN_PROGRESS", version=2, **extra):
    image = {"kind": {"S": "run"}, "pk": {"S": "RUN#web:1"}, "sk": {"S": "RUN"}, "run_id": {"S": "web:1"},
             "pipeline": {"S": "web"}, "status": {"S": status}, "version": {"N": str(version)},
             "created_at": {"S": "2026-01-01T00:00:00.000Z"}, "updated_at": {"S": "2026-01-01T00:00:05.000Z"}}
    return {**image, **extra}


def _stage(status="IN_PROGRESS", attempt=1, version=2, **extra):
    image = _run(status, version, kind={"S": "stage"}, sk={"S": "STAGE#1"}, stage_id={"S": "web:1:1"},
                 name={"S": "build"}, attempt={"N": str(attempt)})
    return {**image, **extra}


def _record(event, new=None, old=None, **dynamodb):
    images = dict(dynamodb)
    if new is not None:
        images["NewImage"] = new
    if old is not None:
        images["OldImage"] = old
    return {"eventName": event, "dynamodb": images}


def test_a_run_status_change_is_one_event_with_a_stable_id():
    record = _record("MODIFY", _run("SUCCESS", 3), _run("IN_PROGRESS", 2))
    change = state_change(record, NOW)
    identity = "RUN#web:1|RUN|2026-01-01T00:00:00.000Z|2|3"
    assert change is not None and change.as_dict() == {
        "id": "evt_" + hashlib.sha256(identity.encode()).hexdigest()[:32], "type": RUN_CHANGED,
        "time": "2026-01-01T00:00:05.000Z", "pipeline": "web", "runId": "web:1", "stageId": None,
        "stageName": None, "oldStatus": "IN_PROGRESS", "newStatus": "SUCCESS", "attempt": None}
    assert state_change(record, NOW) == change


def test_a_stage_change_names_the_stage_and_its_attempt():
    change = state_change(_record("MODIFY", _stage("IDLE", attempt=2, version=4), _stage("FAILURE")), NOW)
    assert change is not None
    c = change
    got = (c.type, c.stage_id, c.stage_name, c.old_status, c.new_status, c.attempt)
    assert got == (
        STAGE_CHANGED, "web:1:1", "build", "FAILURE", "IDLE", 2)


@pytest.mark.parametrize("record", [
    _record("MODIFY", _run("IN_PROGRESS", 3), _run("IN_PROGRESS", 2)),       # the same status
    _record("MODIFY", _stage("IN_PROGRESS", 1, 3), _stage("IN_PROGRESS", 1, 2)),
    _record("INSERT", _stage("IDLE")),                                          # every new stage is IDLE
    _record("MODIFY", _run("SUCCESS", kind={"S": "pipeline"}), _run()),         # not a run or stage
    _record("UPDATE", _run("SUCCESS"), _run()),                                 # not a stream event
    _record("MODIFY", _run("SUCCESS", run_id={"N": "5"}), _run()),              # no run id
    _record("MODIFY", _stage("SUCCESS", stage_id={"N": "1"}), _stage()),        # no stage id
    {"eventName": "MODIFY"},
])
def test_records_that_are_no_event(record):
    assert state_change(record, NOW) is None


def test_a_stage_born_running_is_an_event_and_a_removed_one_ends_with_no_status():
    born = state_change(_record("INSERT", _stage("IN_PROGRESS")), NOW)
    assert born is not None and (born.old_status, born.new_status, born.attempt) == (None, "IN_PROGRESS", 1)
    removed = state_change(_record("REMOVE", old=_stage("SUCCESS", attempt=3),
                                   ApproximateCreationDateTime=1767225600), NOW)
    assert removed is not None
    assert (removed.old_status, removed.new_status, removed.attempt, removed.time) == (
        "SUCCESS", None, 3, "2026-01-01T00:00:00.000Z")
    assert state_change(_record("REMOVE", old=_run()), NOW).time == "2026-01-01T12:00:00.000Z"


def test_a_run_without_a_pipeline_attribute_takes_it_from_its_id_and_odd_attributes_read_as_none():
    image = _run("SUCCESS", pipeline={"BOOL": True}, updated_at={"N": "x"}, version={"N": "not a number"})
    change = state_change(_record("INSERT", image), NOW)
    assert change is not None
    assert (change.pipeline, change.time, change.old_status) == ("web", "2026-01-01T12:00:00.000Z", None)
    no_status = state_change(_record("INSERT", _run() | {"status": {"N": "3"}}), NOW)
    assert no_status is not None and no_status.new_status is None


CANCELLATION = '{"by": "ops", "at": "2026-01-01T00:00:05.000Z", "reason": "replaced by run web:4", ' \
               '"stageId": null, "force": true}'


@pytest.mark.parametrize("status", ["CANCELLED", "CANCELLING"])
def test_a_run_cancel_event_carries_the_runs_cancellation(status):
    record = _record("MODIFY", _run(status, 3, cancellation={"S": CANCELLATION}), _run("QUEUED", 2))
    change = state_change(record, NOW)
    assert change is not None and change.as_dict()["cancellation"] == {
        "by": "ops", "at": "2026-01-01T00:00:05.000Z", "reason": "replaced by run web:4", "stageId": None,
        "force": True}


@pytest.mark.parametrize("record", [
    # retried: the record stays, the event to IN_PROGRESS carries none
    _record("MODIFY", _run("IN_PROGRESS", 3, cancellation={"S": CANCELLATION}), _run("CANCELLED", 2)),
    _record("MODIFY", _run("CANCELLED", 3), _run("IN_PROGRESS", 2)),  # a sender's cancel: no record
    _record("MODIFY", _run("CANCELLED", 3, cancellation={"S": "not json"}), _run("IN_PROGRESS", 2)),
    _record("MODIFY", _stage("CANCELLED", cancellation={"S": CANCELLATION}), _stage("IN_PROGRESS")),
])
def test_other_events_carry_no_cancellation(record):
    change = state_change(record, NOW)
    assert change is not None and "cancellation" not in change.as_dict()
