"""Pipelines: pause/unpause, status (GoCD's paused/locked/schedulable) and schedule (moto)."""
from __future__ import annotations

import json

import pytest

from tests.integration.test_operations_api import as_user, assert_error, create

LAYOUT = ["BUILD", {"type": "DEPLOY_PROD", "name": "prod", "approval": "MANUAL", "timeoutSeconds": 600}]


def status_fields(body):
    """The status fields this API promises (other modules may add more, e.g. dialect ids)."""
    return {k: body[k] for k in ("name", "paused", "pausedCause", "pausedBy", "pausedAt", "locked",
                                 "schedulable")}


def layout_of(run):
    return [(s["type"], s["name"], s["approval"], s["timeoutSeconds"]) for s in run["stages"]]


def test_status_of_a_pipeline_that_ran(client, ddb_calls):
    create(client, LAYOUT)
    ddb_calls.clear()
    response = client.get("/api/pipelines/web/status")
    assert response.status_code == 200
    assert status_fields(response.json) == {"name": "web", "paused": False, "pausedCause": None,
                                            "pausedBy": None, "pausedAt": None, "locked": False,
                                            "schedulable": True}
    assert dict(ddb_calls) == {"GetItem": 1}


def test_pause_refuses_new_runs_until_unpaused(client, clock):
    create(client, LAYOUT)
    clock.advance(1)
    response = client.post("/api/pipelines/web/pause", {"cause": "release freeze"},
                           headers=as_user(client, "alice"))
    assert response.status_code == 200
    paused = {"name": "web", "paused": True, "pausedCause": "release freeze", "pausedBy": "alice",
              "pausedAt": "2026-03-20T17:17:14.760Z", "locked": False, "schedulable": False}
    assert status_fields(response.json) == paused
    assert status_fields(client.get("/api/pipelines/web/status").json) == paused
    assert_error(client.post("/api/runs", {"pipeline": "web"}), 409, "pipeline_paused")
    assert_error(client.post("/api/pipelines/web/schedule"), 409, "pipeline_paused")
    assert client.post("/api/runs", {"pipeline": "other"}).status_code == 201  # only this one
    assert_error(client.post("/api/pipelines/web/pause"), 409, "conflict")  # already paused (GoCD)

    response = client.post("/api/pipelines/web/unpause")
    assert response.status_code == 200
    assert status_fields(response.json) == {"name": "web", "paused": False, "pausedCause": None,
                                            "pausedBy": None, "pausedAt": None, "locked": False,
                                            "schedulable": True}
    assert client.post("/api/runs", {"pipeline": "web"}).json["counter"] == 2  # no number lost
    assert_error(client.post("/api/pipelines/web/unpause"), 409, "conflict")


def test_pause_does_not_touch_running_runs(client):
    run = create(client, ["BUILD"])
    client.patch(f"/api/stages/{run['stages'][0]['id']}", {"status": "IN_PROGRESS"})
    client.post("/api/pipelines/web/pause")
    done = client.patch(f"/api/stages/{run['stages'][0]['id']}", {"status": "SUCCESS"})
    assert done.status_code == 200
    assert client.get(f"/api/runs/{run['id']}").json["status"] == "SUCCESS"


def test_pause_without_cause(client):
    create(client, LAYOUT)
    response = client.post("/api/pipelines/web/pause")
    assert response.status_code == 200 and response.json["paused"] is True
    assert response.json["pausedCause"] is None and response.json["pausedBy"] == "bootstrap admin"


@pytest.mark.parametrize("method,path", [
    ("GET", "/api/pipelines/nope/status"), ("POST", "/api/pipelines/nope/pause"),
    ("POST", "/api/pipelines/nope/unpause"), ("POST", "/api/pipelines/nope/schedule"),
    ("GET", "/api/pipelines/bad%20name/status"), ("POST", "/api/pipelines/bad%20name/schedule"),
])
def test_unknown_pipeline_is_404_and_creates_nothing(client, ctx, method, path):
    assert_error(client.request(method, path), 404, "not_found")
    assert ctx.stores.pipelines.get("nope") is None


@pytest.mark.parametrize("path,raw", [
    ("/api/pipelines/web/pause", '{"cause": 1}'),
    ("/api/pipelines/web/pause", '{"pauseCause": "x"}'),
    ("/api/pipelines/web/unpause", '{"cause": "x"}'),
    ("/api/pipelines/web/schedule", '{"variables": {"1BAD": "x"}}'),
    ("/api/pipelines/web/schedule", '{"variables": [{"key": "A", "value": "x"}]}'),
])
def test_bad_pipeline_bodies_are_422(client, path, raw):
    create(client, LAYOUT)
    assert_error(client.post(path, raw=raw), 422, "validation_failed")
    assert client.get("/api/pipelines/web/status").json["paused"] is False
    assert client.get("/api/runs?pipeline=web").json["items"][0]["counter"] == 1


def test_schedule_repeats_the_latest_layout(client, ddb_calls):
    first = create(client, LAYOUT, timeoutSeconds=3600)
    ddb_calls.clear()
    response = client.post("/api/pipelines/web/schedule", {"variables": {"ENV": "prod"}},
                           headers=as_user(client, "sched"))
    assert response.status_code == 202
    run = response.json
    assert response.headers["Location"] == f"/api/runs/{run['id']}" == "/api/runs/web:2"
    assert run["counter"] == 2 and run["status"] == "IDLE"
    assert layout_of(run) == layout_of(first)
    assert run["timeoutSeconds"] == 3600
    assert run["variables"] == {"ENV": "prod"} and run["trigger"] == "scheduled by sched"
    # claiming the number returned the layout: no extra read
    assert dict(ddb_calls) == {"UpdateItem": 1, "TransactWriteItems": 1}
    assert client.get("/api/runs/web:2").json == run


def test_schedule_follows_the_newest_layout(client):
    create(client, LAYOUT)
    create(client, ["UNIT_TEST", "BUILD", "OTHER"])
    run = client.post("/api/pipelines/web/schedule").json
    assert [s["type"] for s in run["stages"]] == ["UNIT_TEST", "BUILD", "OTHER"]
    assert run["variables"] == {}


def test_creating_runs_stores_the_layout_only_when_it_changes(client, monkeypatch):
    import botocore.client

    transactions = []
    original = botocore.client.BaseClient._make_api_call

    def spy(self, operation, params):
        if operation == "TransactWriteItems":
            transactions.append([next(iter(item)) for item in params["TransactItems"]])
        return original(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", spy)
    create(client, ["BUILD"])
    create(client, ["BUILD"])
    create(client, ["BUILD", "OTHER"])
    assert transactions == [["Put", "Put", "Update"], ["Put", "Put"], ["Put", "Put", "Put", "Update"]]


def test_schedule_a_pipeline_that_never_ran_is_404_and_uses_no_number(client, ctx):
    assert_error(client.post("/api/pipelines/fresh/schedule"), 404, "not_found")
    assert ctx.stores.pipelines.get("fresh") is None
    assert client.post("/api/runs", {"pipeline": "fresh"}).json["counter"] == 1


def test_layout_is_kept_as_json_on_the_pipeline_item(client, ctx):
    create(client, LAYOUT, timeoutSeconds=30)
    layout = ctx.stores.pipelines.get("web").layout
    assert json.loads(json.dumps(layout)) == layout
    assert layout["run"]["timeout_seconds"] == 30
    assert [s["name"] for s in layout["stages"]] == ["BUILD", "prod"]


def _conflict_once(monkeypatch, operation, error):
    """The first ``operation`` call meets a transaction in flight (as real DynamoDB answers)."""
    import botocore.client
    import botocore.exceptions

    original = botocore.client.BaseClient._make_api_call
    calls = []

    def flaky(self, name, params):
        if name == operation:
            calls.append(name)
            if len(calls) == 1:
                raise botocore.exceptions.ClientError(error, name)
        return original(self, name, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", flaky)
    return calls


def test_a_run_insert_cancelled_by_a_transaction_conflict_is_sent_again(client, monkeypatch):
    create(client, ["BUILD"])
    calls = _conflict_once(monkeypatch, "TransactWriteItems", {
        "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
        "CancellationReasons": [{"Code": "None"}, {"Code": "None"}, {"Code": "TransactionConflict"}],
    })
    response = client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD", "OTHER"]})
    assert response.status_code == 201 and response.json["counter"] == 2
    assert calls == ["TransactWriteItems", "TransactWriteItems"]
    assert [s["type"] for s in client.post("/api/pipelines/web/schedule").json["stages"]] == [
        "BUILD",
        "OTHER",
    ]


def test_a_run_insert_whose_condition_failed_is_not_sent_again(client, monkeypatch):
    calls = _conflict_once(monkeypatch, "TransactWriteItems", {
        "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
        "CancellationReasons": [{"Code": "ConditionalCheckFailed"}, {"Code": "None"}],
    })
    response = client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    assert response.status_code == 500 and calls == ["TransactWriteItems"]


def test_a_counter_update_meeting_a_transaction_is_sent_again(client, monkeypatch):
    calls = _conflict_once(monkeypatch, "UpdateItem", {
        "Error": {"Code": "TransactionConflictException", "Message": "in flight"}})
    response = client.post("/api/runs", {"pipeline": "web"})
    assert response.status_code == 201 and response.json["counter"] == 1
    assert calls == ["UpdateItem", "UpdateItem"]
