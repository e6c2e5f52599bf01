"""GoCD under /go/api: the reference documents' curl examples replayed, field by field.

The bootstrap admin token of this module is "badger", so the older stage-cancel page's example
(``curl -u jez:badger -d "" .../cancel``) is replayed byte for byte. The newer reference's
examples use ``-u 'username:password'`` as a placeholder for a real account: they are replayed
with a stagetrack token as the password (user "username"), since that is what a password is here.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from chalicelib.api import gocd_wire
from chalicelib.domain.status import StageStatus
from chalicelib.settings import Settings
from tests.fixtures.dialects import assert_shape, basic, reference

FORM = "application/x-www-form-urlencoded"
JEZ = {"Authorization": basic("jez", "badger")}  # curl -u jez:badger
CONFIRMED = {**JEZ, "Confirm": "true"}


@pytest.fixture
def settings():
    return Settings(table_name="stagetrack-test", region="us-east-1", admin_token="badger")


def curl(client, method, path, *, headers=None, body=b""):
    """A request exactly as curl sends it: these headers, this body, nothing added."""
    response = client._http.request(method, path, headers=dict(headers or {}), body=body)
    response.text = response.body.decode() if isinstance(response.body, bytes) else response.body
    try:
        response.json = json.loads(response.text)
    except ValueError:
        response.json = None
    return response


def issue(client, scopes, pipelines=None, name="gocd-user"):
    body = {"name": name, "scopes": scopes}
    if pipelines:
        body["pipelines"] = pipelines
    response = client.post("/api/tokens", body)
    assert response.status_code == 201, response.json
    return response.json["token"]


@pytest.fixture
def operator(client):
    """-u 'username:password' of the newer reference, with a stagetrack token as the password."""
    return {"Authorization": basic("username", issue(client, ["operate"]))}


def create(client, pipeline, stages, **extra):
    response = client.post("/api/runs", {"pipeline": pipeline, "stages": stages, **extra})
    assert response.status_code == 201, response.json
    return response.json


def start(client, stage_id):
    assert client.patch(f"/api/stages/{stage_id}", {"status": "IN_PROGRESS"}).status_code == 200


def finish(client, stage_id, status="SUCCESS"):
    start(client, stage_id)
    assert client.patch(f"/api/stages/{stage_id}", {"status": status}).status_code == 200


def stage_of(client, run_id, position=1):
    return client.get(f"/api/stages/{run_id}:{position}").json


# ---- stage cancel -----------------------------------------------------------------------------

def test_older_reference_example_without_confirm_is_400_and_changes_nothing(client):
    """curl -u jez:badger -d "" http://goserver.com:8153/go/api/stages/demo_pipeline/first_stage/cancel"""
    run = create(client, "demo_pipeline", [{"type": "BUILD", "name": "first_stage"}])
    start(client, f"{run['id']}:1")
    before = client.get(f"/api/runs/{run['id']}").json
    response = curl(client, "POST", "/go/api/stages/demo_pipeline/first_stage/cancel",
                    headers={"Authorization": basic("jez", "badger"), "Content-Type": FORM})
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.text == "Missing required header 'Confirm' with value 'true'"
    assert client.get(f"/api/runs/{run['id']}").json == before


def test_older_reference_example_with_confirm_cancels_the_stage(client, ddb_calls):
    """The same request with the Confirm header newer GoCD requires: 200, the stage cancelled,
    the Basic user recorded as who cancelled it, later stages skipped."""
    run = create(client, "demo_pipeline", [{"type": "BUILD", "name": "first_stage"}, "DEPLOY_PROD"])
    start(client, f"{run['id']}:1")
    ddb_calls.clear()
    response = curl(client, "POST", "/go/api/stages/demo_pipeline/first_stage/cancel",
                    headers={**CONFIRMED, "Content-Type": FORM})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.text == "Stage cancelled successfully."
    # the pipeline's newest number (GetItem), the run (Query), one transaction
    assert dict(ddb_calls) == {"GetItem": 1, "Query": 1, "TransactWriteItems": 1}
    stored = client.get(f"/api/runs/{run['id']}").json
    assert [s["status"] for s in stored["stages"]] == ["CANCELLED", "SKIPPED"]
    assert stored["status"] == "CANCELLED"
    assert stored["cancellation"]["by"] == "jez" and stored["cancellation"]["stageId"] == f"{run['id']}:1"


def test_newer_reference_example_cancels(client, operator):
    """curl 'https://ci.example.com/go/api/stages/myPipeline/myStages/cancel' \
       -u 'username:password' -H 'Confirm: true' -X POST"""
    run = create(client, "myPipeline", [{"type": "BUILD", "name": "myStages"}])
    start(client, f"{run['id']}:1")
    response = curl(client, "POST", "/go/api/stages/myPipeline/myStages/cancel",
                    headers={**operator, "Confirm": "true"})
    assert (response.status_code, response.text) == (200, "Stage cancelled successfully.")
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert int(response.headers["X-Rate-Limit-Remaining"]) < int(response.headers["X-Rate-Limit-Limit"])
    assert stage_of(client, run["id"])["status"] == "CANCELLED"
    assert client.get(f"/api/runs/{run['id']}").json["cancellation"]["by"] == "username"


@pytest.mark.parametrize("confirm", [{"Confirm": "TRUE"}, {"X-GoCD-Confirm": "true"}])
def test_confirm_is_any_case_and_x_gocd_confirm_works(client, confirm):
    run = create(client, "p", [{"type": "BUILD", "name": "s"}])
    start(client, f"{run['id']}:1")
    response = curl(client, "POST", "/go/api/stages/p/s/cancel", headers={**confirm, **JEZ})
    assert response.status_code == 200


@pytest.mark.parametrize("value", ["false", "yes", ""])
def test_confirm_must_say_true(client, value):
    create(client, "p", [{"type": "BUILD", "name": "s"}])
    response = curl(client, "POST", "/go/api/stages/p/s/cancel",
                    headers={"Confirm": value, "Authorization": basic("jez", "badger")})
    assert response.status_code == 400


@pytest.mark.parametrize("path", ["/go/api/stages/p/s/cancel", "/go/api/pipelines/p/unpause",
                                  "/go/api/pipelines/p/releaseLock"])
def test_posts_without_parameters_refuse_form_fields(client, path):
    run = create(client, "p", [{"type": "BUILD", "name": "s"}])
    start(client, f"{run['id']}:1")
    client.post("/api/pipelines/p/pause")
    before = (client.get(f"/api/runs/{run['id']}").json, client.get("/api/pipelines/p/status").json)
    response = curl(client, "POST", path, body=b"force=true",
                    headers={**CONFIRMED, "Content-Type": FORM})
    assert response.status_code == 400 and "force" in response.text
    assert (client.get(f"/api/runs/{run['id']}").json, client.get("/api/pipelines/p/status").json) == before


def test_cancel_when_the_stage_is_not_active_is_200_and_writes_nothing(client, ddb_calls):
    run = create(client, "p", [{"type": "BUILD", "name": "s"}, {"type": "DEPLOY_PROD", "name": "d"}])
    finish(client, f"{run['id']}:1")
    before = client.get(f"/api/runs/{run['id']}").json
    ddb_calls.clear()
    for stage in ("s", "d"):  # finished, and not started yet
        response = curl(client, "POST", f"/go/api/stages/p/{stage}/cancel",
                        headers=CONFIRMED)
        assert (response.status_code, response.text) == (200, "Stage cancelled successfully.")
    assert "TransactWriteItems" not in ddb_calls
    assert client.get(f"/api/runs/{run['id']}").json == before


@pytest.mark.parametrize("path", ["/go/api/stages/p/nope/cancel", "/go/api/stages/nope/s/cancel",
                                  "/go/api/stages/a:b/s/cancel"])
def test_unknown_stage_or_pipeline_is_404_text(client, path):
    create(client, "p", [{"type": "BUILD", "name": "s"}])
    response = curl(client, "POST", path, headers=CONFIRMED)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8" and "not found" in response.text


def test_cancel_acts_on_the_latest_run(client):
    first = create(client, "p", [{"type": "BUILD", "name": "s"}])
    second = create(client, "p", [{"type": "BUILD", "name": "s"}])
    start(client, f"{first['id']}:1")
    start(client, f"{second['id']}:1")
    assert curl(client, "POST", "/go/api/stages/p/s/cancel",
                headers=CONFIRMED).status_code == 200
    assert stage_of(client, first["id"])["status"] == "IN_PROGRESS"
    assert stage_of(client, second["id"])["status"] == "CANCELLED"


def test_when_the_newest_run_was_deleted_the_newest_remaining_is_the_latest(client):
    first = create(client, "p", [{"type": "BUILD", "name": "s"}])
    second = create(client, "p", [{"type": "BUILD", "name": "s"}])
    start(client, f"{first['id']}:1")
    assert client.delete(f"/api/runs/{second['id']}").status_code == 200
    assert curl(client, "POST", "/go/api/stages/p/s/cancel",
                headers=CONFIRMED).status_code == 200
    assert stage_of(client, first["id"])["status"] == "CANCELLED"


def test_without_credentials_401_and_without_operate_permission_401_as_gocd_documents(client):
    run = create(client, "p", [{"type": "BUILD", "name": "s"}])
    start(client, f"{run['id']}:1")
    reader = issue(client, ["read"])
    for headers in ({}, {"Authorization": basic("jez", "wrong")}, {"Authorization": basic("jez", reader)}):
        response = curl(client, "POST", "/go/api/stages/p/s/cancel", headers={**headers, "Confirm": "true"})
        assert response.status_code == 401, response.text
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert response.headers["WWW-Authenticate"]
    assert stage_of(client, run["id"])["status"] == "IN_PROGRESS"


def test_a_token_limited_to_another_pipeline_gets_404_without_a_read(client, ddb_calls):
    create(client, "p", [{"type": "BUILD", "name": "s"}])
    limited = issue(client, ["operate"], ["other"])
    ddb_calls.clear()
    response = curl(client, "POST", "/go/api/stages/p/s/cancel",
                    headers={"Authorization": basic("jez", limited), "Confirm": "true"})
    assert response.status_code == 404
    assert dict(ddb_calls) == {"UpdateItem": 1}  # the token lookup only


# ---- stage instance and history ---------------------------------------------------------------

def test_stage_instance_replays_the_reference_example(client, operator, clock):
    """curl 'https://ci.example.com/go/api/stages/myPipeline/myStages/instance/1/1' -u 'username:password'"""
    run = create(client, "myPipeline", [{"type": "BUILD", "name": "myStages"}])
    start(client, f"{run['id']}:1")
    clock.advance(100)
    assert client.patch(f"/api/stages/{run['id']}:1", {"status": "SUCCESS"}).status_code == 200
    response = curl(client, "GET", "/go/api/stages/myPipeline/myStages/instance/1/1", headers=operator)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    body = response.json
    assert_shape(reference("gocd_stage_instance"), body, nullable={"$.jobs[].agent_uuid"})
    assert (body["name"], body["pipeline_name"], body["pipeline_counter"], body["counter"]) == \
        ("myStages", "myPipeline", 1, 1)
    assert (body["result"], body["approval_type"], body["approved_by"]) == ("Passed", "success", "changes")
    job = body["jobs"][0]
    assert (job["name"], job["result"], job["state"], job["rerun"]) == \
        ("myStages", "Passed", "Completed", False)
    started = gocd_wire.millis(clock.now()) - 100_000
    assert [(t["state"], t["state_change_time"]) for t in job["job_state_transitions"]] == [
        ("Scheduled", started), ("Building", started), ("Completed", started + 100_000)]


def test_stage_counter_is_the_attempt(client):
    run = create(client, "p", [{"type": "BUILD", "name": "s"}])
    finish(client, f"{run['id']}:1", "FAILURE")
    assert client.post(f"/api/stages/{run['id']}:1/retry").status_code == 200
    start(client, f"{run['id']}:1")
    first = client.get("/go/api/stages/p/s/instance/1/1").json
    second = client.get("/go/api/stages/p/s/instance/1/2").json
    assert (first["counter"], first["result"], first["jobs"][0]["rerun"]) == (1, "Failed", False)
    assert (second["counter"], second["result"], second["jobs"][0]["state"], second["jobs"][0]["rerun"]) == \
        (2, "Unknown", "Building", True)
    for path in ("/go/api/stages/p/s/instance/1/3", "/go/api/stages/p/s/instance/2/1",
                 "/go/api/stages/p/x/instance/1/1", "/go/api/stages/p/s/instance/1/0",
                 "/go/api/stages/p/s/instance/one/1"):
        response = client.get(path)
        assert response.status_code == 404 and set(response.json) == {"message"}, path


def test_stage_history_replays_the_reference_example(client, operator, ddb_calls):
    """curl 'https://ci.example.com/go/api/stages/myPipeline/defaultStage/history' -u 'username:password'"""
    outcomes = ["SUCCESS", "CANCELLED", "CANCELLED"]
    for outcome in outcomes:
        run = create(client, "myPipeline", [{"type": "BUILD", "name": "defaultStage"}])
        finish(client, f"{run['id']}:1", outcome)
    ddb_calls.clear()
    response = curl(client, "GET", "/go/api/stages/myPipeline/defaultStage/history", headers=operator)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    # token, pipeline, one page of runs, their stages' summaries (issue 12: on the stagesByPipeline
    # index, no longer copied on every run item)
    assert dict(ddb_calls) == {"UpdateItem": 1, "GetItem": 1, "Query": 2}
    body = response.json
    assert_shape(reference("gocd_stage_history"), body)
    assert body["pagination"] == {"offset": 0, "total": 3, "page_size": 10}
    assert [(s["pipeline_counter"], s["result"], s["counter"]) for s in body["stages"]] == \
        [(3, "Cancelled", "1"), (2, "Cancelled", "1"), (1, "Passed", "1")]


def test_histories_page_by_offset_ten_at_a_time(client, ddb_calls):
    for _ in range(12):
        create(client, "p", [{"type": "BUILD", "name": "s"}])
    ddb_calls.clear()
    first = client.get("/go/api/pipelines/p/history").json
    assert dict(ddb_calls) == {"GetItem": 1, "Query": 2}  # pipeline, runs, their stage summaries
    assert [p["counter"] for p in first["pipelines"]] == list(range(12, 2, -1))
    assert first["pagination"] == {"offset": 0, "total": 12, "page_size": 10}
    second = client.get("/go/api/pipelines/p/history/10").json
    assert [p["counter"] for p in second["pipelines"]] == [2, 1]
    assert second["pagination"] == {"offset": 10, "total": 12, "page_size": 10}
    assert client.get("/go/api/pipelines/p/history/12").json["pipelines"] == []
    stages = client.get("/go/api/stages/p/s/history/5").json
    assert [s["pipeline_counter"] for s in stages["stages"]] == list(range(7, 0, -1))
    assert client.get("/go/api/pipelines/p/history/x").status_code == 400
    assert client.get("/go/api/stages/p/nope/history").status_code == 404
    assert client.get("/go/api/pipelines/nope/history").status_code == 404


def test_history_offsets_count_run_numbers_so_pages_never_overlap(client):
    for _ in range(12):
        create(client, "p", [{"type": "BUILD", "name": "s"}])
    client.delete("/api/runs/p:11")
    client.delete("/api/runs/p:3")
    pages = [client.get(f"/go/api/pipelines/p/history/{offset}").json for offset in (0, 10)]
    seen = [p["counter"] for page in pages for p in page["pipelines"]]
    assert seen == [12, 10, 9, 8, 7, 6, 5, 4, 2, 1]
    assert all(page["pagination"]["total"] == 12 for page in pages)


def test_a_run_stored_without_a_stage_summary_still_shows_its_stages(client, ctx, ddb_calls):
    """Runs written before run items carried a summary: history reads their stages once."""
    from chalicelib.store.models import run_pk
    from tests.fixtures.backends import items_of

    create(client, "p", [{"type": "BUILD", "name": "s"}, "DEPLOY_PROD"])
    run_model = items_of(ctx).run
    item = run_model.get(run_pk("p:1"), "#RUN")
    item.update(actions=[run_model.stage_summary.remove()])
    ddb_calls.clear()
    body = client.get("/go/api/pipelines/p/history").json
    assert [s["name"] for s in body["pipelines"][0]["stages"]] == ["s", "DEPLOY_PROD"]
    assert dict(ddb_calls) == {"GetItem": 1, "Query": 2}
    assert [s["name"] for s in client.get("/go/api/stages/p/s/history").json["stages"]] == ["s"]


# ---- pipelines --------------------------------------------------------------------------------

def test_pipeline_instance_replays_the_reference_example(client):
    """curl 'http://ci.example.com/go/api/pipelines/PipelineName/instance/1' -u 'username:password'"""
    run = create(client, "PipelineName", [{"type": "BUILD", "name": "stage1"},
                                          {"type": "DEPLOY_PROD", "name": "stage2", "approval": "MANUAL"}],
                 commit={"hash": "a788f1876e2e1f6e5a1e91006e75cd1d467a0edb",
                         "message": "my hola mundo changes", "committer": "Pick E Reader"})
    finish(client, f"{run['id']}:1")
    reader = {"Authorization": basic("username", issue(client, ["read"]))}
    response = curl(client, "GET", "/go/api/pipelines/PipelineName/instance/1", headers=reader)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    body = response.json
    assert_shape(reference("gocd_pipeline_instance"), body, nullable={"$.stages[].approved_by"})
    assert (body["name"], body["counter"], body["label"], body["natural_order"]) == \
        ("PipelineName", 1, "1", 1)
    revision = body["build_cause"]["material_revisions"][0]["modifications"][0]
    assert (revision["revision"], revision["comment"], revision["user_name"]) == (
        "a788f1876e2e1f6e5a1e91006e75cd1d467a0edb", "my hola mundo changes", "Pick E Reader")
    stage1, stage2 = body["stages"]
    assert [stage1[k] for k in ("name", "result", "counter", "approval_type", "scheduled")] == \
        ["stage1", "Passed", "1", "success", True]
    assert (stage2["result"], stage2["approval_type"], stage2["approved_by"]) == ("Unknown", "manual", None)
    assert stage1["operate_permission"] is False  # a read token
    assert client.get("/go/api/pipelines/PipelineName/instance/2").status_code == 404


def test_pipeline_history_replays_the_reference_example(client, operator):
    """curl 'http://ci.example.com/go/api/pipelines/pipeline1/history/0' -u 'username:password'"""
    for outcome in ("SUCCESS", "FAILURE"):
        run = create(client, "pipeline1", [{"type": "BUILD", "name": "stage1"}],
                     commit={"hash": "c194b49db102b705ebc13e604e490ae13ac92d96"})
        finish(client, f"{run['id']}:1", outcome)
    response = curl(client, "GET", "/go/api/pipelines/pipeline1/history/0", headers=operator)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    body = response.json
    assert_shape(reference("gocd_pipeline_history"), body)
    assert body["pagination"] == {"offset": 0, "total": 2, "page_size": 10}
    assert [(p["counter"], p["stages"][0]["result"], p["can_run"]) for p in body["pipelines"]] == \
        [(2, "Failed", True), (1, "Passed", True)]


def test_pipeline_status_replays_the_reference_example(client, operator):
    """curl 'http://ci.example.com/go/api/pipelines/pipeline1/status' -u 'username:password'"""
    create(client, "pipeline1", ["BUILD"])
    response = curl(client, "GET", "/go/api/pipelines/pipeline1/status", headers=operator)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.json == {"locked": False, "paused": False, "schedulable": True}
    client.post("/api/pipelines/pipeline1/pause")
    paused = curl(client, "GET", "/go/api/pipelines/pipeline1/status", headers=operator).json
    assert paused == reference("gocd_pipeline_status")
    assert paused == {"locked": False, "paused": True, "schedulable": False}


def test_pause_and_unpause_replay_the_reference_examples(client, operator):
    """curl .../pipelines/pipeline1/pause -u 'username:password' -H 'Confirm: true' -X POST
       -d 'pauseCause=take some rest'; then .../unpause the same way without -d."""
    create(client, "pipeline1", ["BUILD"])
    response = curl(client, "POST", "/go/api/pipelines/pipeline1/pause",
                    headers={**operator, "Confirm": "true", "Content-Type": FORM},
                    body=b"pauseCause=take some rest")
    assert (response.status_code, response.headers["Content-Type"], response.text) == \
        (200, "text/html; charset=utf-8", "")
    native = client.get("/api/pipelines/pipeline1/status").json
    assert (native["paused"], native["pausedCause"], native["pausedBy"]) == \
        (True, "take some rest", "username")
    assert client.post("/api/runs", {"pipeline": "pipeline1"}).status_code == 409  # paused: no new runs
    again = curl(client, "POST", "/go/api/pipelines/pipeline1/pause", headers={**operator, "Confirm": "true"})
    assert again.status_code == 409 and "already paused" in again.text
    response = curl(client, "POST", "/go/api/pipelines/pipeline1/unpause",
                    headers={**operator, "Confirm": "true"})
    assert (response.status_code, response.headers["Content-Type"], response.text) == \
        (200, "text/html; charset=utf-8", "")
    assert client.get("/api/pipelines/pipeline1/status").json["paused"] is False
    assert curl(client, "POST", "/go/api/pipelines/pipeline1/unpause",
                headers={**operator, "Confirm": "true"}).status_code == 409


@pytest.mark.parametrize("body", [b"pauseCause=" + b"x" * 1001, b"cause=x", b"pauseCause=a&pauseCause=b",
                                  b"pauseCause=%ff", b'{"pauseCause": "x"}'])
def test_bad_pause_forms_are_400_and_change_nothing(client, body):
    create(client, "p", ["BUILD"])
    content_type = "application/json" if body.startswith(b"{") else FORM
    response = curl(client, "POST", "/go/api/pipelines/p/pause", body=body,
                    headers={**CONFIRMED, "Content-Type": content_type})
    assert response.status_code == 400, response.text
    assert client.get("/api/pipelines/p/status").json["paused"] is False


def test_release_lock_replays_the_reference_example(client, operator):
    """curl 'http://ci.example.com/go/api/pipelines/pipeline1/releaseLock' -u ... \
       -H 'Confirm: true' -X POST"""
    create(client, "pipeline1", ["BUILD"])
    response = curl(client, "POST", "/go/api/pipelines/pipeline1/releaseLock",
                    headers={**operator, "Confirm": "true"})
    assert (response.status_code, response.headers["Content-Type"], response.text) == \
        (200, "text/html; charset=utf-8", "pipeline lock released for pipeline1")
    assert curl(client, "POST", "/go/api/pipelines/nope/releaseLock",
                headers={**operator, "Confirm": "true"}).status_code == 404


def test_schedule_replays_the_reference_example(client, operator):
    """curl 'http://ci.example.com/go/api/pipelines/pipeline1/schedule' -u ... -H 'Confirm: true' -X POST"""
    create(client, "pipeline1", [{"type": "BUILD", "name": "build"}, "DEPLOY_PROD"], variables={"OLD": "1"})
    response = curl(client, "POST", "/go/api/pipelines/pipeline1/schedule",
                    headers={**operator, "Confirm": "true"})
    assert (response.status_code, response.headers["Content-Type"], response.text) == \
        (202, "text/html; charset=utf-8", "Request to schedule pipeline pipeline1 accepted")
    run = client.get("/api/runs/pipeline1:2").json
    assert [s["name"] for s in run["stages"]] == ["build", "DEPLOY_PROD"]
    assert run["variables"] == {} and run["trigger"] == "scheduled by username"


def test_schedule_with_variables_materials_and_secure_variables_as_form_data(client, ctx, operator):
    """The reference's post data: materials[svn_material]=3456&variables[ENV_VAR_1]=value1&
    variables[ENV_VAR_2]=value2, and secure_variables[PASSWORD]=new_password."""
    create(client, "pipeline1", ["BUILD"])
    body = (b"materials[svn_material]=3456&variables[ENV_VAR_1]=value1&variables[ENV_VAR_2]=value2"
            b"&secure_variables[PASSWORD]=new_password")
    response = curl(client, "POST", "/go/api/pipelines/pipeline1/schedule", body=body,
                    headers={**operator, "Confirm": "true", "Content-Type": FORM})
    assert response.status_code == 202, response.text
    run = client.get("/api/runs/pipeline1:2").json
    assert run["variables"] == {"ENV_VAR_1": "value1", "ENV_VAR_2": "value2", "PASSWORD": "******"}
    assert run["secretVariables"] == ["PASSWORD"]
    from chalicelib.store.schema import dynamodb_client

    items = dynamodb_client(ctx.settings).scan(TableName=ctx.settings.table_name)["Items"]
    assert "new_password" not in json.dumps(items)


@pytest.mark.parametrize("body", [b"variables[bad key]=1", b"variables[A]=1&variables[A]=2", b"other=1",
                                  b"variables[]=1", b"variables[A]=" + b"v" * 4097])
def test_bad_schedule_forms_are_400_and_use_no_run_number(client, body):
    create(client, "p", ["BUILD"])
    response = curl(client, "POST", "/go/api/pipelines/p/schedule", body=body,
                    headers={**CONFIRMED, "Content-Type": FORM})
    assert response.status_code == 400, response.text
    assert client.post("/api/runs", {"pipeline": "p"}).json["counter"] == 2


def test_schedule_a_paused_or_unknown_pipeline(client):
    create(client, "p", ["BUILD"])
    client.post("/api/pipelines/p/pause")
    headers = CONFIRMED
    assert curl(client, "POST", "/go/api/pipelines/p/schedule", headers=headers).status_code == 409
    assert curl(client, "POST", "/go/api/pipelines/nope/schedule", headers=headers).status_code == 404


# ---- version and content negotiation ----------------------------------------------------------

def test_version_replays_the_reference_example(client):
    """curl 'https://ci.example.com/go/api/version' -H 'Accept: application/vnd.go.cd.v1+json'"""
    response = curl(client, "GET", "/go/api/version",
                    headers={"Accept": "application/vnd.go.cd.v1+json", "Host": "ci.example.com"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/vnd.go.cd.v1+json; charset=utf-8"
    assert_shape(reference("gocd_version"), response.json)
    assert response.json["_links"]["self"]["href"] == "http://ci.example.com/go/api/version"
    assert response.json["version"] == gocd_wire.GOCD_API_VERSION


@pytest.mark.parametrize("accept", [None, "application/vnd.go.cd.v4+json", "*/*", "application/json",
                                    "text/html,application/xhtml+xml,*/*;q=0.8"])
def test_other_json_versions_get_the_default_representation(client, accept):
    headers = {"Accept": accept} if accept else {}
    response = curl(client, "GET", "/go/api/version", headers=headers)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/vnd.go.cd.v1+json; charset=utf-8"


@pytest.mark.parametrize("path", ["/go/api/version", "/go/api/pipelines/p/status",
                                  "/go/api/pipelines/p/history", "/go/api/stages/p/s/history",
                                  "/go/api/pipelines/p/instance/1"])
@pytest.mark.parametrize("accept", ["application/xml", "text/html", "application/json;q=0"])
def test_an_accept_header_ruling_json_out_is_406(client, path, accept):
    create(client, "p", [{"type": "BUILD", "name": "s"}])
    response = curl(client, "GET", path, headers={"Accept": accept, "Authorization": basic("jez", "badger")})
    assert response.status_code == 406
    assert set(response.json) == {"message"}


def test_json_endpoints_answer_errors_as_gocd_json(client):
    response = client.get("/go/api/pipelines/nope/status")
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.json == {"message": "pipeline 'nope' not found"}
    unauthorized = client.get("/go/api/pipelines/nope/status", auth=None)
    assert unauthorized.status_code == 401 and set(unauthorized.json) == {"message"}


# ---- mapping tables ---------------------------------------------------------------------------

def test_every_status_has_a_gocd_result_and_job_state():
    assert set(gocd_wire.GOCD_RESULT) == set(StageStatus) == set(gocd_wire.GOCD_JOB_STATE)
    assert set(gocd_wire.GOCD_RESULT.values()) == {"Passed", "Failed", "Cancelled", "Unknown"}
    assert set(gocd_wire.GOCD_JOB_STATE.values()) <= {"Scheduled", "Assigned", "Preparing", "Building",
                                                     "Completing", "Completed", "Discontinued", "Waiting"}


# ---- GoCD's current API (api.gocd.org), next to the 17.1 forms ---------------------------------

V1 = "application/vnd.go.cd.v1+json"
V1_ANSWER = "application/vnd.go.cd.v1+json; charset=utf-8"
V3_ANSWER = "application/vnd.go.cd.v3+json; charset=utf-8"
JSON_BODY = "application/json"


def test_current_pause_and_unpause_replay_the_reference_examples(client, operator):
    """curl .../pipelines/pipeline1/pause -u ... -H 'Accept: application/vnd.go.cd.v1+json'
       -H 'Content-Type: application/json' -X POST -d '{"pause_cause": "Investigating build failures"}'
    (no X-GoCD-Confirm: a JSON body is enough); then .../unpause with -H 'X-GoCD-Confirm: true'."""
    create(client, "pipeline1", ["BUILD"])
    response = curl(client, "POST", "/go/api/pipelines/pipeline1/pause",
                    headers={**operator, "Accept": V1, "Content-Type": JSON_BODY},
                    body=b'{\n            "pause_cause": "Investigating build failures"\n          }')
    assert (response.status_code, response.headers["Content-Type"], response.json) == \
        (200, V1_ANSWER, {"message": "Pipeline 'pipeline1' paused successfully."})
    native = client.get("/api/pipelines/pipeline1/status").json
    assert (native["paused"], native["pausedCause"], native["pausedBy"]) == \
        (True, "Investigating build failures", "username")
    again = curl(client, "POST", "/go/api/pipelines/pipeline1/pause",
                 headers={**operator, "Accept": V1, "X-GoCD-Confirm": "true"})
    assert (again.status_code, again.headers["Content-Type"], again.json) == (409, V1_ANSWER, {
        "message": "Failed to pause pipeline 'pipeline1'. Pipeline 'pipeline1' is already paused."})
    response = curl(client, "POST", "/go/api/pipelines/pipeline1/unpause",
                    headers={**operator, "Accept": V1, "X-GoCD-Confirm": "true"})
    assert (response.status_code, response.headers["Content-Type"], response.json) == \
        (200, V1_ANSWER, {"message": "Pipeline 'pipeline1' unpaused successfully."})
    assert client.get("/api/pipelines/pipeline1/status").json["paused"] is False
    again = curl(client, "POST", "/go/api/pipelines/pipeline1/unpause",
                 headers={**operator, "Accept": V1, "X-GoCD-Confirm": "true"})
    assert (again.status_code, again.json) == (409, {
        "message": "Failed to unpause pipeline 'pipeline1'. Pipeline 'pipeline1' is already unpaused."})


def test_current_unlock_replays_the_reference_example(client, operator):
    """curl .../pipelines/pipeline1/unlock -u ... -H 'Accept: application/vnd.go.cd.v1+json'
       -H 'X-GoCD-Confirm: true' -X POST. The message is GoCD's server's (the reference's example
    adds a full stop GoCD does not send)."""
    create(client, "pipeline1", ["BUILD"])
    response = curl(client, "POST", "/go/api/pipelines/pipeline1/unlock",
                    headers={**operator, "Accept": V1, "X-GoCD-Confirm": "true"})
    assert (response.status_code, response.headers["Content-Type"], response.json) == \
        (200, V1_ANSWER, {"message": "Pipeline lock released for pipeline1"})
    missing = curl(client, "POST", "/go/api/pipelines/nope/unlock",
                   headers={**operator, "Accept": V1, "X-GoCD-Confirm": "true"})
    assert (missing.status_code, missing.headers["Content-Type"], set(missing.json)) == \
        (404, V1_ANSWER, {"message"})


def test_current_schedule_replays_the_reference_example(client, ctx, operator):
    """The reference's body as printed has trailing commas: not JSON, 400, no run number used.
    The same body without them: 202, variables and secure variables (also GoCD-encrypted ones,
    kept as a keyed hash like any secret), materials of another server tolerated and unused."""
    create(client, "pipeline1", [{"type": "BUILD", "name": "build"}])
    printed = (
        Path(__file__).parent.parent / "fixtures" / "reference" / "gocd_v1_schedule_request.txt"
    ).read_bytes()
    headers = {**operator, "Accept": V1, "Content-Type": JSON_BODY}
    response = curl(client, "POST", "/go/api/pipelines/pipeline1/schedule", headers=headers, body=printed)
    assert (response.status_code, response.headers["Content-Type"], set(response.json)) == \
        (400, V1_ANSWER, {"message"})
    assert client.get("/api/runs/pipeline1:2").status_code == 404
    fixed = re.sub(rb",(\s*})", rb"\1", printed)
    response = curl(client, "POST", "/go/api/pipelines/pipeline1/schedule", headers=headers, body=fixed)
    assert (response.status_code, response.headers["Content-Type"], response.json) == \
        (202, V1_ANSWER, {"message": "Request to schedule pipeline pipeline1 accepted"})
    run = client.get("/api/runs/pipeline1:2").json
    assert run["variables"] == {"USERNAME": "bob", "SSH_PASSPHRASE": "******", "PASSWORD": "******"}
    assert run["secretVariables"] == ["PASSWORD", "SSH_PASSPHRASE"]
    assert run.get("commit") is None and run["trigger"] == "scheduled by username"
    from chalicelib.store.schema import dynamodb_client

    items = json.dumps(dynamodb_client(ctx.settings).scan(TableName=ctx.settings.table_name)["Items"])
    assert "some passphrase" not in items and "YEepp1G0C05SpP0fcp4Jh" not in items


def test_current_schedule_records_the_commit_of_the_pipelines_own_material(client, operator):
    """The material a pipeline instance shows (its fingerprint) with a commit hash: the new
    run's commit. Without a body, X-GoCD-Confirm with any value (as GoCD documents) is enough."""
    create(client, "pipeline1", ["BUILD"], commit={"hash": "a" * 40})
    fingerprint = curl(client, "GET", "/go/api/pipelines/pipeline1/instance/1", headers=operator).json[
        "build_cause"]["material_revisions"][0]["material"]["fingerprint"]
    body = {
        "materials": [{"fingerprint": fingerprint, "revision": "1058e75b18e8a645dd71702851994a010789f450"}],
        "update_materials_before_scheduling": False,
    }
    response = curl(client, "POST", "/go/api/pipelines/pipeline1/schedule", body=json.dumps(body),
                    headers={**operator, "Accept": V1, "Content-Type": JSON_BODY})
    assert response.status_code == 202, response.text
    assert (
        client.get("/api/runs/pipeline1:2").json["commit"]["hash"]
        == "1058e75b18e8a645dd71702851994a010789f450"
    )
    response = curl(client, "POST", "/go/api/pipelines/pipeline1/schedule",
                    headers={**operator, "Accept": V1, "X-GoCD-Confirm": "anything"})
    assert response.status_code == 202, response.text
    assert client.get("/api/runs/pipeline1:3").json.get("commit") is None


@pytest.mark.parametrize("body, content_type, status", [
    (b"", None, 400),                                              # no body and no X-GoCD-Confirm
    (b"pause_cause=x", FORM, 415),                                 # a body must be JSON
    (b'{"pause_cause": 1}', JSON_BODY, 422),
    (b'{"pauseCause": "x"}', JSON_BODY, 422),                      # the 17.1 field name in JSON
    (b'{"pause_cause": "' + b"x" * 1001 + b'"}', JSON_BODY, 422),
    (b"[1]", JSON_BODY, 400),
])
def test_bad_current_pause_requests_change_nothing(client, body, content_type, status):
    create(client, "p", ["BUILD"])
    headers = {**JEZ, "Accept": V1, **({"Content-Type": content_type} if content_type else {})}
    response = curl(client, "POST", "/go/api/pipelines/p/pause", headers=headers, body=body)
    assert (response.status_code, response.headers["Content-Type"], set(response.json)) == \
        (status, V1_ANSWER, {"message"})
    assert client.get("/api/pipelines/p/status").json["paused"] is False


@pytest.mark.parametrize("body", [
    {"environment_variables": [{"name": "A"}]},                                    # no value
    {"environment_variables": [{"name": "A", "value": "1", "encrypted_value": "x"}]},
    {"environment_variables": [{"name": "bad name", "value": "1"}]},
    {"environment_variables": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
    {"materials": [{"fingerprint": "nope", "revision": "1"}]},
    {"materials": [{"fingerprint": "b" * 64, "revision": ""}]},
    {"materials": [{"fingerprint": "b" * 64, "revision": "1"}, {"fingerprint": "B" * 64, "revision": "2"}]},
    {"update_materials_before_scheduling": "yes"},
    {"variables": {"A": "1"}},                                                     # not a v1 field
])
def test_bad_current_schedule_bodies_are_422_and_use_no_run_number(client, body):
    create(client, "p", ["BUILD"])
    response = curl(client, "POST", "/go/api/pipelines/p/schedule", body=json.dumps(body),
                    headers={**JEZ, "Accept": V1, "Content-Type": JSON_BODY})
    assert (response.status_code, response.headers["Content-Type"]) == (422, V1_ANSWER), response.text
    assert client.post("/api/runs", {"pipeline": "p"}).json["counter"] == 2


@pytest.mark.parametrize(
    "accept", ["application/vnd.go.cd.v7+json", "application/vnd.go.cd.v2+json, text/html"]
)
@pytest.mark.parametrize("path", ["/go/api/pipelines/p/pause", "/go/api/pipelines/p/schedule",
                                  "/go/api/pipelines/p/unlock", "/go/api/stages/p/1/s/1/cancel"])
def test_an_unsupported_gocd_version_is_gocds_404_and_changes_nothing(client, path, accept):
    run = create(client, "p", [{"type": "BUILD", "name": "s"}])
    start(client, f"{run['id']}:1")
    before = (client.get(f"/api/runs/{run['id']}").json, client.get("/api/pipelines/p/status").json)
    response = curl(client, "POST", path, headers={**JEZ, "Accept": accept, "X-GoCD-Confirm": "true"})
    assert (response.status_code, response.json) == \
        (404, {"message": "The url you are trying to reach appears to be incorrect."})
    assert (client.get(f"/api/runs/{run['id']}").json, client.get("/api/pipelines/p/status").json) == before


def test_the_unversioned_gocd_type_asks_for_the_latest(client):
    create(client, "p", ["BUILD"])
    response = curl(client, "POST", "/go/api/pipelines/p/pause",
                    headers={**JEZ, "Accept": "application/vnd.go.cd+json", "X-GoCD-Confirm": "true"})
    assert (response.status_code, response.headers["Content-Type"]) == (200, V1_ANSWER)


def test_current_stage_instance_by_counters(client, operator, clock):
    """curl .../go/api/stages/myPipeline/1/myStage/2 -u ... -H 'Accept: application/vnd.go.cd.v3+json':
    GoCD's v3 stage representer, field by field; stage counter 1 is the archived attempt."""
    run = create(client, "myPipeline", [{"type": "BUILD", "name": "myStage"}])
    finish(client, f"{run['id']}:1", "FAILURE")
    assert client.post(f"/api/stages/{run['id']}:1/retry").status_code == 200
    clock.advance(5)
    start(client, f"{run['id']}:1")
    response = curl(client, "GET", "/go/api/stages/myPipeline/1/myStage/2",
                    headers={**operator, "Accept": "application/vnd.go.cd.v3+json"})
    assert (response.status_code, response.headers["Content-Type"]) == (200, V3_ANSWER), response.text
    body = response.json
    assert list(body) == ["name", "counter", "approval_type", "approved_by", "scheduled_at",
                          "last_transitioned_time", "result", "rerun_of_counter", "fetch_materials",
                          "clean_working_directory", "artifacts_deleted", "pipeline_name",
                          "pipeline_counter", "jobs"]
    assert (
        body["name"],
        body["counter"],
        body["result"],
        body["pipeline_name"],
        body["pipeline_counter"],
    ) == ("myStage", 2, "Unknown", "myPipeline", 1)
    (job,) = body["jobs"]
    assert (job["state"], job["rerun"], [t["state"] for t in job["job_state_transitions"]]) == \
        ("Building", True, ["Scheduled", "Building"])
    assert set(job["job_state_transitions"][0]) == {"state", "state_change_time"}
    first = curl(client, "GET", "/go/api/stages/myPipeline/1/myStage/1", headers=operator).json
    assert (first["counter"], first["result"], first["jobs"][0]["state"]) == (1, "Failed", "Completed")
    for path in ("/go/api/stages/myPipeline/1/myStage/3", "/go/api/stages/myPipeline/2/myStage/1",
                 "/go/api/stages/myPipeline/1/other/1", "/go/api/stages/myPipeline/x/myStage/1"):
        missing = curl(client, "GET", path, headers=operator)
        assert (missing.status_code, missing.headers["Content-Type"], set(missing.json)) == \
            (404, V3_ANSWER, {"message"}), path


def test_current_cancel_by_counters(client, operator, ddb_calls):
    """curl -X POST .../go/api/stages/myPipeline/1/myStage/1/cancel -H 'Accept:
    application/vnd.go.cd.v3+json' -H 'X-GoCD-Confirm: true': 200 {"message"}, the stage
    cancelled by the Basic user; again (no longer active): 200 and nothing written."""
    run = create(client, "myPipeline", [{"type": "BUILD", "name": "myStage"}, "DEPLOY_PROD"])
    start(client, f"{run['id']}:1")
    headers = {**operator, "Accept": "application/vnd.go.cd.v3+json", "X-GoCD-Confirm": "true"}
    ddb_calls.clear()
    response = curl(client, "POST", "/go/api/stages/myPipeline/1/myStage/1/cancel", headers=headers)
    assert (response.status_code, response.headers["Content-Type"], response.json) == \
        (200, V3_ANSWER, {"message": "Stage cancelled successfully."})
    assert ddb_calls["Query"] == 1 and ddb_calls["TransactWriteItems"] == 1
    stored = client.get(f"/api/runs/{run['id']}").json
    assert [s["status"] for s in stored["stages"]] == ["CANCELLED", "SKIPPED"]
    assert stored["cancellation"]["by"] == "username"
    shown = curl(client, "GET", "/go/api/stages/myPipeline/1/myStage/1", headers=operator).json
    assert (shown["result"], shown["cancelled_by"]) == ("Cancelled", "username")
    ddb_calls.clear()
    again = curl(client, "POST", "/go/api/stages/myPipeline/1/myStage/1/cancel", headers=headers)
    assert again.status_code == 200 and "TransactWriteItems" not in ddb_calls
    for path in (
        "/go/api/stages/myPipeline/1/myStage/2/cancel",
        "/go/api/stages/myPipeline/9/myStage/1/cancel",
    ):
        assert curl(client, "POST", path, headers=headers).status_code == 404
    no_confirm = curl(client, "POST", "/go/api/stages/myPipeline/1/myStage/1/cancel",
                      headers={**operator, "Accept": "application/vnd.go.cd.v3+json"})
    assert (no_confirm.status_code, no_confirm.json) == \
        (400, {"message": "Missing required header 'X-GoCD-Confirm' with value 'true'"})


def test_current_cancel_of_an_earlier_stage_counter_is_a_no_op(client, operator):
    run = create(client, "p", [{"type": "BUILD", "name": "s"}])
    finish(client, f"{run['id']}:1", "FAILURE")
    client.post(f"/api/stages/{run['id']}:1/retry")
    start(client, f"{run['id']}:1")
    response = curl(client, "POST", "/go/api/stages/p/1/s/1/cancel",
                    headers={**operator, "Accept": "application/vnd.go.cd.v3+json", "X-GoCD-Confirm": "true"})
    assert response.status_code == 200
    assert stage_of(client, run["id"])["status"] == "IN_PROGRESS"


def test_current_run_stage(client, operator):
    """curl -X POST .../go/api/stages/myPipeline/1/myStage/run -H 'X-GoCD-Confirm: true'
       -H 'Accept: application/vnd.go.cd.v2+json': 202 and the stage's next attempt; while it
    runs, 409."""
    run = create(client, "myPipeline", [{"type": "BUILD", "name": "myStage"}])
    finish(client, f"{run['id']}:1", "FAILURE")
    headers = {**operator, "Accept": "application/vnd.go.cd.v2+json", "X-GoCD-Confirm": "true"}
    response = curl(client, "POST", "/go/api/stages/myPipeline/1/myStage/run", headers=headers)
    assert (response.status_code, response.headers["Content-Type"], response.json) == \
        (202, "application/vnd.go.cd.v2+json; charset=utf-8",
         {"message": "Request to schedule stage myPipeline/1/myStage accepted"})
    assert stage_of(client, run["id"])["attempt"] == 2
    start(client, f"{run['id']}:1")
    assert curl(client, "POST", "/go/api/stages/myPipeline/1/myStage/run", headers=headers).status_code == 409


def test_running_a_manual_stage_approves_it_under_its_approval_policy(client, operator):
    """GoCD's run of a manual stage is its approval: the token decides (not the Basic user
    name), under the stage's policy -- 403 for a token that is not an approver, 409 again."""
    run = create(client, "gated", [{"type": "BUILD", "name": "build"},
                                   {"type": "DEPLOY_PROD", "name": "prod", "approval": "MANUAL",
                                    "approvers": ["release-manager"]}])
    finish(client, f"{run['id']}:1", "SUCCESS")
    start(client, f"{run['id']}:2")
    accept = {"Accept": "application/vnd.go.cd.v2+json", "X-GoCD-Confirm": "true"}
    path = "/go/api/stages/gated/1/prod/run"
    refused = curl(client, "POST", path, headers={**operator, **accept})  # token "gocd-user"
    assert refused.status_code == 403 and "not an allowed approver" in refused.json["message"]
    manager = {"Authorization": basic("someone", issue(client, ["operate"], name="release-manager"))}
    response = curl(client, "POST", path, headers={**manager, **accept})
    assert response.status_code == 202, response.json
    stage = client.get(f"/api/stages/{run['id']}:2").json
    assert (stage["status"], stage["attempt"], stage["approvalDecision"]["by"]) == \
        ("IN_PROGRESS", 1, "release-manager")
    assert curl(client, "POST", path, headers={**manager, **accept}).status_code == 409


def test_current_api_answers_403_for_a_missing_permission(client):
    """GoCD's current controllers answer 403 (their ...And403 checks), the 17.1 pages 401."""
    create(client, "p", [{"type": "BUILD", "name": "s"}])
    reader = {"Authorization": basic("viewer", issue(client, ["read"], name="viewer"))}
    current = curl(client, "POST", "/go/api/pipelines/p/pause",
                   headers={**reader, "Accept": V1, "X-GoCD-Confirm": "true"})
    assert (current.status_code, current.headers["Content-Type"], set(current.json)) == \
        (403, V1_ANSWER, {"message"})
    legacy = curl(client, "POST", "/go/api/pipelines/p/pause", headers={**reader, "Confirm": "true"})
    assert (legacy.status_code, legacy.headers["Content-Type"]) == (401, "text/plain; charset=utf-8")
    assert client.get("/api/pipelines/p/status").json["paused"] is False
