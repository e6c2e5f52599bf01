"""The native runs/stages API, endpoint by endpoint: status codes, body shapes, bad input."""
from __future__ import annotations

import json
import re

import pytest

ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
REFERENCE_STAGE_FIELDS = {"id", "createdAt", "updatedAt", "type", "startedAt", "endedAt",
                          "duration", "status", "runId"}
DEFAULT_TYPES = ["PREPARE", "CODE_QUALITY", "UNIT_TEST", "BUILD", "DEPLOY_STAGING", "DEPLOY_PROD"]


def create(client, **body):
    body.setdefault("pipeline", "web")
    response = client.post("/api/runs", body)
    assert response.status_code == 201, response.json
    return response.json


def assert_error(response, status, code):
    assert response.status_code == status, response.json
    assert set(response.json) == {"error"}
    assert response.json["error"]["code"] == code
    assert isinstance(response.json["error"]["message"], str) and response.json["error"]["message"]
    assert "Traceback" not in json.dumps(response.json)


# ---- POST /api/runs ----------------------------------------------------------------------------

def test_create_run_with_default_stages(client):
    response = client.post("/api/runs", {"pipeline": "web"})
    assert response.status_code == 201
    run = response.json
    assert response.headers["Location"] == f"/api/runs/{run['id']}"
    assert run["pipeline"] == "web" and run["counter"] == 1 and run["status"] == "IDLE"
    assert run["startedAt"] is None and run["endedAt"] is None and run["duration"] is None
    assert ISO.match(run["createdAt"]) and run["createdAt"] == run["updatedAt"]
    assert [s["type"] for s in run["stages"]] == DEFAULT_TYPES
    for position, stage in enumerate(run["stages"], start=1):
        assert REFERENCE_STAGE_FIELDS <= set(stage)
        assert stage["runId"] == run["id"] and stage["status"] == "IDLE"
        assert stage["position"] == position and stage["attempt"] == 1
        assert stage["startedAt"] is None and stage["duration"] is None


def test_runs_are_numbered_per_pipeline(client):
    assert [create(client)["counter"] for _ in range(3)] == [1, 2, 3]
    assert create(client, pipeline="api")["counter"] == 1
    assert create(client)["counter"] == 4


def test_create_run_with_type_names_and_objects(client):
    run = create(client, stages=["BUILD", {"type": "DEPLOY_PROD", "name": "prod", "timeoutSeconds": 600,
                                           "approval": "MANUAL"}],
                 commit={"hash": "506a3963507943d6908154f4bc9646e829128a08", "message": "init repo",
                         "committer": "Mike Benson"},
                 trigger="push", variables={"ENV": "prod"}, timeoutSeconds=3600)
    build, prod = run["stages"]
    assert (build["type"], build["name"], build["timeoutSeconds"], build["approval"]) == \
        ("BUILD", "BUILD", 3600, "AUTO")
    assert (prod["type"], prod["name"], prod["timeoutSeconds"], prod["approval"]) == \
        ("DEPLOY_PROD", "prod", 600, "MANUAL")
    assert run["commit"] == {"hash": "506a3963507943d6908154f4bc9646e829128a08",
                             "message": "init repo", "committer": "Mike Benson", "committedAt": None}
    assert run["trigger"] == "push" and run["variables"] == {"ENV": "prod"}
    assert client.get(f"/api/runs/{run['id']}").json == run


def test_create_run_makes_two_round_trips(client, ddb_calls):
    create(client)
    assert dict(ddb_calls) == {"UpdateItem": 1, "TransactWriteItems": 1}


@pytest.mark.parametrize("raw,code", [
    ("{not json", "bad_request"),
    ("", "bad_request"),
    ("[]", "bad_request"),
    ('"web"', "bad_request"),
    ("null", "bad_request"),
])
def test_create_run_rejects_malformed_bodies(client, raw, code):
    assert_error(client.post("/api/runs", raw=raw), 400, code)
    assert client.get("/api/runs?pipeline=web").json["items"] == []


@pytest.mark.parametrize("body,field", [
    ({}, "pipeline"),
    ({"pipeline": ""}, "pipeline"),
    ({"pipeline": "has space"}, "pipeline"),
    ({"pipeline": "a:b"}, "pipeline"),
    ({"pipeline": "x" * 101}, "pipeline"),
    ({"pipeline": 5}, "pipeline"),
    ({"pipeline": "web", "unknown": 1}, "unknown"),
    ({"pipeline": "web", "stages": []}, "stages"),
    ({"pipeline": "web", "stages": "BUILD"}, "stages"),
    ({"pipeline": "web", "stages": ["NOPE"]}, "stages.0"),
    ({"pipeline": "web", "stages": [{"type": "BUILD", "extra": 1}]}, "stages.0"),
    ({"pipeline": "web", "stages": [{"type": "BUILD", "timeoutSeconds": "30"}]}, "stages.0"),
    ({"pipeline": "web", "stages": [{"type": "BUILD", "timeoutSeconds": 0}]}, "stages.0"),
    ({"pipeline": "web", "stages": [{"type": "BUILD", "approval": "SOMETIMES"}]}, "stages.0"),
    ({"pipeline": "web", "stages": ["BUILD"] * 51}, "stages"),
    ({"pipeline": "web", "stages": ["BUILD", "BUILD"]}, "(body)"),
    ({"pipeline": "web", "commit": {"hash": "zzz"}}, "commit.hash"),
    ({"pipeline": "web", "variables": {"bad key": "x"}}, "variables"),
    ({"pipeline": "web", "variables": {"K": 1}}, "variables.K"),
    ({"pipeline": "web", "variables": {"K": "x" * 4097}}, "variables.K"),
    ({"pipeline": "web", "variables": {f"K{i}": "v" for i in range(101)}}, "variables"),
    ({"pipeline": "web", "trigger": ""}, "trigger"),
])
def test_create_run_rejects_invalid_bodies_naming_the_field(client, body, field):
    response = client.post("/api/runs", body)
    assert_error(response, 422, "validation_failed")
    fields = [d["field"] for d in response.json["error"]["details"]]
    assert any(f == field or f.startswith(field + ".") for f in fields), fields
    assert client.get("/api/runs?pipeline=web").json["items"] == []


def test_huge_body_is_413_and_changes_nothing(client):
    body = json.dumps({"pipeline": "web", "trigger": "x" * 70_000})
    assert_error(client.post("/api/runs", raw=body), 413, "payload_too_large")
    assert client.get("/api/runs?pipeline=web").json["items"] == []


def test_non_json_content_type_is_refused(client):
    response = client.post("/api/runs", raw="pipeline=web",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_error(response, 415, "unsupported_media_type")
    assert client.get("/api/runs?pipeline=web").json["items"] == []


# ---- GET /api/runs/{id}, GET /api/runs ---------------------------------------------------------

def test_get_run_is_one_query(client, ddb_calls):
    run = create(client)
    ddb_calls.clear()
    response = client.get(f"/api/runs/{run['id']}")
    assert response.status_code == 200 and response.json == run
    assert dict(ddb_calls) == {"Query": 1}


@pytest.mark.parametrize("run_id", ["web:99", "nope:1", "garbage", "web:0", "web:1:1"])
def test_unknown_run_is_404(client, run_id):
    create(client)
    assert_error(client.get(f"/api/runs/{run_id}"), 404, "not_found")


def test_list_runs_newest_first_with_opaque_cursor(client, ddb_calls):
    for _ in range(5):
        create(client)
    create(client, pipeline="other")
    ddb_calls.clear()
    first = client.get("/api/runs?pipeline=web&limit=2")
    assert first.status_code == 200
    assert dict(ddb_calls) == {"Query": 1}
    assert [r["counter"] for r in first.json["items"]] == [5, 4]
    assert "stages" not in first.json["items"][0]
    seen = [r["counter"] for r in first.json["items"]]
    cursor = first.json["nextCursor"]
    while cursor:
        page = client.get(f"/api/runs?pipeline=web&limit=2&cursor={cursor}")
        assert page.status_code == 200
        seen += [r["counter"] for r in page.json["items"]]
        cursor = page.json["nextCursor"]
    assert seen == [5, 4, 3, 2, 1]


def test_list_runs_by_status(client):
    runs = [create(client) for _ in range(3)]
    stage = runs[1]["stages"][0]["id"]
    assert client.patch(f"/api/stages/{stage}", {"status": "IN_PROGRESS"}).status_code == 200
    items = client.get("/api/runs?pipeline=web&status=IN_PROGRESS").json["items"]
    assert [r["id"] for r in items] == [runs[1]["id"]]
    idle = client.get("/api/runs?pipeline=web&status=IDLE").json["items"]
    assert [r["counter"] for r in idle] == [3, 1]


def test_list_runs_of_unknown_pipeline_is_empty(client):
    assert client.get("/api/runs?pipeline=ghost").json == {"items": [], "nextCursor": None}


@pytest.mark.parametrize("query", [
    "?pipeline=web&limit=0", "?pipeline=web&limit=101", "?pipeline=web&limit=x",
    "?pipeline=web&status=DONE", "?pipeline=bad%20name", "?pipeline=web&cursor=%%%",
    "?pipeline=web&cursor=eyJ4IjoxfQ", "?pipeline=web&bogus=1",
])
def test_list_runs_rejects_bad_queries(client, query):
    assert_error(client.get(f"/api/runs{query}"), 400, "bad_request")


def test_cursor_of_another_pipeline_is_refused(client):
    for _ in range(3):
        create(client)
    cursor = client.get("/api/runs?pipeline=web&limit=1").json["nextCursor"]
    assert_error(client.get(f"/api/runs?pipeline=api&cursor={cursor}"), 400, "bad_request")


# ---- DELETE /api/runs/{id} ---------------------------------------------------------------------

def test_delete_run_answers_with_it_and_removes_its_stages(client, ddb_calls):
    run = create(client)
    ddb_calls.clear()
    response = client.delete(f"/api/runs/{run['id']}")
    assert response.status_code == 200 and response.json == run
    assert dict(ddb_calls) == {"Query": 1, "TransactWriteItems": 1}
    assert_error(client.get(f"/api/runs/{run['id']}"), 404, "not_found")
    assert_error(client.get(f"/api/stages/{run['stages'][0]['id']}"), 404, "not_found")
    assert_error(client.delete(f"/api/runs/{run['id']}"), 404, "not_found")
    assert create(client)["counter"] == 2, "counters are never reused"


# ---- GET /api/stages?runId= --------------------------------------------------------------------

def test_list_stages_matches_the_reference_shape(client, ddb_calls):
    run = create(client)
    ddb_calls.clear()
    response = client.get(f"/api/stages?runId={run['id']}")
    assert response.status_code == 200
    assert dict(ddb_calls) == {"Query": 1}
    assert isinstance(response.json, list)
    assert [s["type"] for s in response.json] == DEFAULT_TYPES
    for stage in response.json:
        assert REFERENCE_STAGE_FIELDS <= set(stage)
        assert ISO.match(stage["createdAt"]) and ISO.match(stage["updatedAt"])
        assert stage["startedAt"] is None and stage["endedAt"] is None and stage["duration"] is None


def test_list_stages_needs_a_run_id(client):
    assert_error(client.get("/api/stages"), 400, "bad_request")
    assert_error(client.get("/api/stages?runId="), 400, "bad_request")


def test_list_stages_of_unknown_run_is_404(client):
    assert_error(client.get("/api/stages?runId=web:1"), 404, "not_found")
    assert_error(client.get("/api/stages?runId=..."), 404, "not_found")


# ---- GET/PATCH/DELETE /api/stages/{id} ---------------------------------------------------------

def test_get_stage_is_one_get_item(client, ddb_calls):
    stage = create(client)["stages"][2]
    ddb_calls.clear()
    response = client.get(f"/api/stages/{stage['id']}")
    assert response.status_code == 200 and response.json == stage
    assert dict(ddb_calls) == {"GetItem": 1}


@pytest.mark.parametrize("stage_id", ["web:1:9", "web:2:1", "web:1", "x", "web:1:0"])
def test_unknown_stage_is_404_everywhere(client, stage_id):
    create(client)
    assert_error(client.get(f"/api/stages/{stage_id}"), 404, "not_found")
    assert_error(client.patch(f"/api/stages/{stage_id}", {"status": "IN_PROGRESS"}), 404, "not_found")
    assert_error(client.delete(f"/api/stages/{stage_id}"), 404, "not_found")


def test_patch_stage_through_its_life(client, clock, ddb_calls):
    run = create(client)
    stage_id = run["stages"][0]["id"]
    ddb_calls.clear()
    started = client.patch(f"/api/stages/{stage_id}", {"status": "IN_PROGRESS"})
    assert started.status_code == 200
    # issue 12: the stage and its run item (one BatchGetItem), not the whole run (a Query)
    assert dict(ddb_calls) == {"BatchGetItem": 1, "TransactWriteItems": 1}
    assert started.json["status"] == "IN_PROGRESS"
    assert started.json["startedAt"] == "2026-03-20T17:17:13.760Z" and started.json["duration"] == 0
    clock.advance(30)
    assert client.get(f"/api/stages/{stage_id}").json["duration"] == 30, "live duration"
    assert client.get(f"/api/runs/{run['id']}").json["status"] == "IN_PROGRESS"
    clock.advance(30.25)
    done = client.patch(f"/api/stages/{stage_id}", {"status": "SUCCESS"})
    assert done.status_code == 200
    assert done.json["status"] == "SUCCESS" and done.json["duration"] == 60.25
    assert done.json["endedAt"] == "2026-03-20T17:18:14.010Z"
    assert done.json["updatedAt"] == done.json["endedAt"]
    clock.advance(100)
    assert client.get(f"/api/stages/{stage_id}").json["duration"] == 60.25, "frozen once ended"
    after = client.get(f"/api/runs/{run['id']}").json
    assert after["status"] == "IN_PROGRESS" and after["startedAt"] == started.json["startedAt"]
    assert after["updatedAt"] == done.json["updatedAt"]


def test_run_finishes_when_its_last_stage_does(client, clock):
    run = create(client, stages=["BUILD", "DEPLOY_PROD"])
    for stage in run["stages"]:
        client.patch(f"/api/stages/{stage['id']}", {"status": "IN_PROGRESS"})
        clock.advance(10)
        client.patch(f"/api/stages/{stage['id']}", {"status": "SUCCESS"})
    body = client.get(f"/api/runs/{run['id']}").json
    assert body["status"] == "SUCCESS" and body["duration"] == 20
    assert body["endedAt"] == body["stages"][-1]["endedAt"]
    assert [r["id"] for r in client.get("/api/runs?pipeline=web&status=SUCCESS").json["items"]] == [run["id"]]


def test_failed_stage_fails_the_run(client):
    run = create(client, stages=["BUILD", "DEPLOY_PROD"])
    stage = run["stages"][0]["id"]
    client.patch(f"/api/stages/{stage}", {"status": "IN_PROGRESS"})
    client.patch(f"/api/stages/{stage}", {"status": "FAILURE"})
    body = client.get(f"/api/runs/{run['id']}").json
    assert body["status"] == "FAILURE" and body["endedAt"] is not None


@pytest.mark.parametrize("path,target", [
    ([], "SUCCESS"), ([], "FAILURE"), ([], "TIMED_OUT"), (["IN_PROGRESS", "TIMED_OUT"], "CANCELLED"),
    (["IN_PROGRESS"], "IDLE"), (["IN_PROGRESS"], "SKIPPED"), (["IN_PROGRESS"], "WAITING_FOR_APPROVAL"),
    (["IN_PROGRESS", "SUCCESS"], "IN_PROGRESS"), (["IN_PROGRESS", "SUCCESS"], "FAILURE"),
    (["IN_PROGRESS", "FAILURE"], "SUCCESS"), (["SKIPPED"], "IN_PROGRESS"), (["CANCELLED"], "IDLE"),
    (["WAITING_FOR_APPROVAL"], "IN_PROGRESS"), (["WAITING_FOR_APPROVAL"], "SUCCESS"),
])
def test_illegal_patch_is_409_and_changes_nothing(client, path, target, ddb_calls):
    run = create(client)
    stage_id = run["stages"][0]["id"]
    for status in path:
        assert client.patch(f"/api/stages/{stage_id}", {"status": status}).status_code == 200
    before = client.get(f"/api/runs/{run['id']}").json
    ddb_calls.clear()
    response = client.patch(f"/api/stages/{stage_id}", {"status": target})
    assert_error(response, 409, "illegal_transition")
    assert "TransactWriteItems" not in ddb_calls
    assert client.get(f"/api/runs/{run['id']}").json == before


def test_patch_to_the_same_status_is_an_idempotent_no_write(client, ddb_calls):
    stage_id = create(client)["stages"][0]["id"]
    first = client.patch(f"/api/stages/{stage_id}", {"status": "IN_PROGRESS"}).json
    ddb_calls.clear()
    again = client.patch(f"/api/stages/{stage_id}", {"status": "IN_PROGRESS"})
    assert again.status_code == 200 and again.json == first
    assert dict(ddb_calls) == {"BatchGetItem": 1}  # the stage and its run item


def test_patch_other_mutable_fields(client):
    run = create(client, stages=["BUILD", "DEPLOY_PROD"])
    stage_id = run["stages"][0]["id"]
    body = client.patch(f"/api/stages/{stage_id}", {"name": "compile", "timeoutSeconds": 90}).json
    assert body["name"] == "compile" and body["timeoutSeconds"] == 90 and body["status"] == "IDLE"
    cleared = client.patch(f"/api/stages/{stage_id}", {"timeoutSeconds": None}).json
    assert cleared["timeoutSeconds"] is None
    clash = client.patch(f"/api/stages/{stage_id}", {"name": "DEPLOY_PROD"})
    assert_error(clash, 409, "conflict")


@pytest.mark.parametrize("raw,status,code", [
    ("{", 400, "bad_request"),
    ("[1]", 400, "bad_request"),
    ("{}", 422, "validation_failed"),
    ('{"status": "DONE"}', 422, "validation_failed"),
    ('{"status": null}', 422, "validation_failed"),
    ('{"status": 1}', 422, "validation_failed"),
    ('{"id": "other"}', 422, "validation_failed"),
    ('{"createdAt": "2020-01-01T00:00:00.000Z"}', 422, "validation_failed"),
    ('{"duration": 5}', 422, "validation_failed"),
    ('{"timeoutSeconds": "10"}', 422, "validation_failed"),
    ('{"name": "bad name!"}', 422, "validation_failed"),
])
def test_bad_patch_bodies_change_nothing(client, raw, status, code):
    run = create(client)
    stage_id = run["stages"][0]["id"]
    assert_error(client.patch(f"/api/stages/{stage_id}", raw=raw), status, code)
    assert client.get(f"/api/runs/{run['id']}").json == run


def test_delete_stage_answers_with_it_and_rederives_the_run(client):
    run = create(client, stages=["BUILD", "DEPLOY_PROD"])
    build, prod = run["stages"]
    client.patch(f"/api/stages/{build['id']}", {"status": "IN_PROGRESS"})
    client.patch(f"/api/stages/{build['id']}", {"status": "SUCCESS"})
    assert client.get(f"/api/runs/{run['id']}").json["status"] == "IN_PROGRESS"
    deleted = client.delete(f"/api/stages/{prod['id']}")
    assert deleted.status_code == 200 and deleted.json == prod
    after = client.get(f"/api/runs/{run['id']}").json
    assert [s["id"] for s in after["stages"]] == [build["id"]]
    assert after["status"] == "SUCCESS"
    assert [s["id"] for s in client.get(f"/api/stages?runId={run['id']}").json] == [build["id"]]
    assert_error(client.delete(f"/api/stages/{prod['id']}"), 404, "not_found")


def test_no_trace_for_internal_errors(client, monkeypatch):
    from chalicelib.service import runs

    def boom(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(runs, "get_run", boom)
    response = client.get("/api/runs/web:1")
    assert_error(response, 500, "internal_error")
    assert "secret internals" not in response.body.decode()
