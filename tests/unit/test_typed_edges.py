"""Values the types said could be missing, and that really could be (issue 11, mypy): each is
refused or skipped where it appears instead of crashing later."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chalicelib.api import idempotency
from chalicelib.domain import events
from chalicelib.integrations import cdevents
from chalicelib.service.ports import DONE, Record
from chalicelib.store.stream import state_change

NOW = datetime(2026, 3, 20, 17, 17, 15, tzinfo=UTC)


def stage_image(status: str, **extra: dict) -> dict:
    image = {"pk": {"S": "RUN#web:1"}, "sk": {"S": "STAGE#0002"}, "kind": {"S": "stage"},
             "run_id": {"S": "web:1"}, "pipeline": {"S": "web"}, "name": {"S": "deploy"},
             "status": {"S": status}, "attempt": {"N": "1"}, "version": {"N": "2"},
             "updated_at": {"S": "2026-03-20T17:17:15.000Z"}}
    return {**image, **extra}


def modified(old: dict, new: dict) -> dict:
    return {"eventName": "MODIFY", "dynamodb": {"OldImage": old, "NewImage": new}}


def test_a_stage_record_names_its_stage_in_its_event():
    change = state_change(modified(stage_image("IDLE", stage_id={"S": "web:1:2"}),
                                          stage_image("IN_PROGRESS", stage_id={"S": "web:1:2"})), NOW)
    assert change is not None
    assert (change.type, change.stage_id, change.attempt) == (events.STAGE_CHANGED, "web:1:2", 1)
    assert cdevents.to_cdevent(change)["subject"]["id"] == "web:1:2"


@pytest.mark.parametrize("stage_id", [None, {"N": "2"}])
def test_a_stage_record_without_a_stage_id_is_no_event(stage_id):
    # before: a stage event with stage_id None (or 2), which to_cdevent could not render
    extra = {} if stage_id is None else {"stage_id": stage_id}
    record = modified(stage_image("IDLE", **extra), stage_image("IN_PROGRESS", **extra))
    assert state_change(record, NOW) is None


def test_an_attempt_that_is_not_a_number_is_none():
    new = stage_image("IN_PROGRESS", stage_id={"S": "web:1:2"}, attempt={"S": "2"})
    change = state_change(modified(stage_image("IDLE", stage_id={"S": "web:1:2"}), new), NOW)
    assert change is not None and change.attempt is None


def test_a_kept_response_without_its_status_is_not_replayed_as_one():
    # before: Response(status_code=None), which chalice cannot answer with
    held = Record(state=DONE, fingerprint="f", status_code=None, headers={}, body=b"{}")
    with pytest.raises(idempotency.ResponseNotKept):
        idempotency._replay(held, "f", None)
