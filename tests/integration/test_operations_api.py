"""Cancel, stop, retry, approve/reject and variables through the native API (moto)."""
from __future__ import annotations

import base64
import json
import re

import pytest

ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def create(client, stages=None, pipeline="web", **body):
    body["pipeline"] = pipeline
    if stages is not None:
        body["stages"] = stages
    response = client.post("/api/runs", body)
    assert response.status_code == 201, response.json
    return response.json


def patch(client, stage_id, status):
    response = client.patch(f"/api/stages/{stage_id}", {"status": status})
    assert response.status_code == 200, response.json
    return response.json


def as_user(client, user):
    """Basic auth with the admin token as password: the user name is recorded as the actor."""
    raw = base64.b64encode(f"{user}:{client.admin_token}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def statuses(run):
    return [s["status"] for s in run["stages"]]


def assert_error(response, status, code):
    assert response.status_code == status, response.json
    assert response.json["error"]["code"] == code
    assert response.json["error"]["message"]
    assert "Traceback" not in json.dumps(response.json)


def four_stages(client, **kw):
    return create(client, ["PREPARE", "BUILD", "UNIT_TEST", "DEPLOY_PROD"], **kw)


def writes(ddb_calls):
    return {op: n for op, n in ddb_calls.items() if op in ("TransactWriteItems", "PutItem", "UpdateItem",
                                                           "DeleteItem")}


# ---- cancel ----------------------------------------------------------------------------------

def test_cancel_run_cancels_the_running_stage_and_skips_the_rest(client, clock):
    run = four_stages(client)
    ids = [s["id"] for s in run["stages"]]
    patch(client, ids[0], "IN_PROGRESS")
    clock.advance(2)
    patch(client, ids[0], "SUCCESS")
    patch(client, ids[1], "IN_PROGRESS")
    clock.advance(3.5)
    response = client.post(f"/api/runs/{run['id']}/cancel", {"reason": "wrong branch"},
                           headers=as_user(client, "alice"))
    assert response.status_code == 200
    body = response.json
    assert statuses(body) == ["SUCCESS", "CANCELLED", "SKIPPED", "SKIPPED"]
    assert body["status"] == "CANCELLED"
    assert body["cancellation"] == {"by": "alice", "at": "2026-03-20T17:17:19.260Z",
                                    "reason": "wrong branch", "stageId": None}
    build = body["stages"][1]
    assert build["endedAt"] == "2026-03-20T17:17:19.260Z" and build["duration"] == 3.5
    assert body["endedAt"] == build["endedAt"] and body["duration"] == 5.5
    assert client.get(f"/api/runs/{run['id']}").json == body


def test_cancel_run_without_body_and_between_stages(client):
    run = four_stages(client)
    first = run["stages"][0]["id"]
    patch(client, first, "IN_PROGRESS")
    patch(client, first, "SUCCESS")
    response = client.post(f"/api/runs/{run['id']}/cancel")
    assert response.status_code == 200
    assert statuses(response.json) == ["SUCCESS", "CANCELLED", "SKIPPED", "SKIPPED"]
    assert response.json["status"] == "CANCELLED"
    assert response.json["cancellation"]["by"] == "bootstrap admin"
    assert response.json["cancellation"]["reason"] is None


def test_cancelling_a_finished_run_is_200_and_writes_nothing(client, ddb_calls):
    run = four_stages(client)
    client.post(f"/api/runs/{run['id']}/cancel", {"reason": "first"})
    before = client.get(f"/api/runs/{run['id']}").json
    ddb_calls.clear()
    response = client.post(f"/api/runs/{run['id']}/cancel", {"reason": "second"})
    assert response.status_code == 200 and response.json == before
    assert response.json["cancellation"]["reason"] == "first"
    assert dict(ddb_calls) == {"Query": 1}


def test_cancel_stage_cancels_it_and_skips_later_idle_stages(client):
    run = four_stages(client)
    ids = [s["id"] for s in run["stages"]]
    patch(client, ids[0], "IN_PROGRESS")
    response = client.post(f"/api/stages/{ids[0]}/cancel", {"reason": "flaky runner"},
                           headers=as_user(client, "bob"))
    assert response.status_code == 200
    assert response.json["id"] == ids[0] and response.json["status"] == "CANCELLED"
    after = client.get(f"/api/runs/{run['id']}").json
    assert statuses(after) == ["CANCELLED", "SKIPPED", "SKIPPED", "SKIPPED"]
    assert after["status"] == "CANCELLED"
    assert after["cancellation"]["stageId"] == ids[0] and after["cancellation"]["by"] == "bob"
    assert ISO.match(after["cancellation"]["at"])


@pytest.mark.parametrize("status", ["IDLE", "SUCCESS", "FAILURE"])
def test_cancelling_a_stage_that_is_not_active_changes_nothing(client, ddb_calls, status):
    run = four_stages(client)
    stage = run["stages"][0]["id"]
    if status != "IDLE":
        patch(client, stage, "IN_PROGRESS")
        patch(client, stage, status)
    before = client.get(f"/api/runs/{run['id']}").json
    ddb_calls.clear()
    response = client.post(f"/api/stages/{stage}/cancel")
    assert response.status_code == 200 and response.json["status"] == status
    assert writes(ddb_calls) == {}
    assert client.get(f"/api/runs/{run['id']}").json == before


def test_cancel_is_one_query_and_one_transaction(client, ddb_calls):
    run = four_stages(client)
    patch(client, run["stages"][0]["id"], "IN_PROGRESS")
    ddb_calls.clear()
    assert client.post(f"/api/runs/{run['id']}/cancel").status_code == 200
    assert dict(ddb_calls) == {"Query": 1, "TransactWriteItems": 1}


@pytest.mark.parametrize("path", ["/api/runs/web:9/cancel", "/api/runs/nope/cancel",
                                  "/api/stages/web:1:9/cancel", "/api/stages/web:9:1/cancel",
                                  "/api/stages/x/cancel"])
def test_cancel_unknown_is_404(client, path):
    four_stages(client)
    assert_error(client.post(path), 404, "not_found")


@pytest.mark.parametrize("raw,status,code", [
    ('{"reason": 5}', 422, "validation_failed"),
    ('{"reason": ""}', 422, "validation_failed"),
    ('{"why": "x"}', 422, "validation_failed"),
    ('{"reason": "x"', 400, "bad_request"),
    ('["x"]', 400, "bad_request"),
])
def test_bad_cancel_bodies_change_nothing(client, raw, status, code):
    run = four_stages(client)
    patch(client, run["stages"][0]["id"], "IN_PROGRESS")
    before = client.get(f"/api/runs/{run['id']}").json
    assert_error(client.post(f"/api/runs/{run['id']}/cancel", raw=raw), status, code)
    assert client.get(f"/api/runs/{run['id']}").json == before


# ---- stop (by pipeline and counter) -----------------------------------------------------------

def test_stop_by_pipeline_and_counter_lets_the_running_stage_finish(client):
    four_stages(client)
    run = four_stages(client)
    patch(client, run["stages"][0]["id"], "IN_PROGRESS")
    response = client.post("/api/pipelines/web/runs/2/stop", {"reason": "superseded", "graceSeconds": 30},
                           headers=as_user(client, "ci-bot"))
    assert response.status_code == 200
    assert response.json["id"] == run["id"] and response.json["status"] == "CANCELLING"
    assert statuses(response.json) == ["IN_PROGRESS", "SKIPPED", "SKIPPED", "SKIPPED"]
    assert response.json["cancellation"]["by"] == "ci-bot"
    stopping = response.json["stopping"]
    assert {k: stopping[k] for k in ("mode", "by", "reason", "graceSeconds")} == {
        "mode": "STOP", "by": "ci-bot", "reason": "superseded", "graceSeconds": 30}
    assert response.json["stages"][0]["cancelsAt"] == stopping["graceUntil"]
    assert client.get("/api/runs/web:1").json["status"] == "IDLE"  # the other run is untouched
    # the stage finishes within its grace: the run ends CANCELLED all the same (a stop is final)
    patch(client, run["stages"][0]["id"], "SUCCESS")
    after = client.get(f"/api/runs/{run['id']}").json
    assert after["status"] == "CANCELLED" and statuses(after)[0] == "SUCCESS"
    assert after["stages"][0]["cancelsAt"] is None


def test_the_grace_ends_on_the_timer_and_a_run_past_its_deadline_cannot_be_retried(client, clock):
    from chalicelib import wiring
    from chalicelib.service.timers import sweep

    run = create(client, ["BUILD", {"type": "OTHER", "name": "notify", "always": True}], timeoutSeconds=120)
    build = run["stages"][0]["id"]
    started = patch(client, build, "IN_PROGRESS")
    assert started["runDeadline"] == started["timesOutAt"]  # the run's 120 s, its own being the same
    stopped = client.post(f"/api/pipelines/web/runs/{run['counter']}/stop", {"graceSeconds": 10}).json
    assert statuses(stopped) == ["IN_PROGRESS", "IDLE"] and stopped["stages"][1]["always"] is True
    assert stopped["stages"][0]["cancelsAt"] == stopped["stopping"]["graceUntil"]
    clock.advance(10)
    sweep(wiring.context())
    body = client.get(f"/api/runs/{run['id']}").json
    assert (body["status"], statuses(body)) == ("CANCELLED", ["CANCELLED", "IDLE"])
    assert body["stages"][0]["duration"] == 10
    clock.advance(200)  # past the run's deadline: a retry would only time out again
    assert_error(client.post(f"/api/runs/{run['id']}/retry"), 409, "run_deadline_passed")
    assert_error(client.post(f"/api/stages/{build}/retry"), 409, "run_deadline_passed")
    assert client.get(f"/api/runs/{run['id']}").json == body  # refused: nothing changed


def test_no_stage_can_be_patched_to_the_runs_cancelling_status(client):
    run = four_stages(client)
    patch(client, run["stages"][0]["id"], "IN_PROGRESS")
    assert_error(client.patch(f"/api/stages/{run['stages'][0]['id']}", {"status": "CANCELLING"}), 409,
                 "illegal_transition")


@pytest.mark.parametrize("body, field", [
    ({"graceSeconds": -1}, "graceSeconds"), ({"graceSeconds": 86401}, "graceSeconds"),
    ({"graceSeconds": "30"}, "graceSeconds"), ({"grace": 30}, "grace"),
])
def test_bad_stop_bodies_change_nothing(client, body, field):
    run = four_stages(client)
    patch(client, run["stages"][0]["id"], "IN_PROGRESS")
    before = client.get(f"/api/runs/{run['id']}").json
    response = client.post("/api/pipelines/web/runs/1/stop", body)
    assert response.status_code in (400, 422) and field in json.dumps(response.json["error"])
    assert client.get(f"/api/runs/{run['id']}").json == before


@pytest.mark.parametrize("path", ["/api/pipelines/web/runs/3/stop", "/api/pipelines/web/runs/abc/stop",
                                  "/api/pipelines/web/runs/0/stop", "/api/pipelines/other/runs/1/stop",
                                  "/api/pipelines/bad%20name/runs/1/stop"])
def test_stop_unknown_run_is_404(client, path):
    four_stages(client)
    assert_error(client.post(path), 404, "not_found")


# ---- retry -----------------------------------------------------------------------------------

def failed_run(client, clock):
    run = four_stages(client)
    ids = [s["id"] for s in run["stages"]]
    patch(client, ids[0], "IN_PROGRESS")
    clock.advance(1)
    patch(client, ids[0], "SUCCESS")
    patch(client, ids[1], "IN_PROGRESS")
    clock.advance(2)
    patch(client, ids[1], "FAILURE")
    for stage in ids[2:]:
        patch(client, stage, "SKIPPED")
    return run["id"], ids


def test_retry_run_failed_scope_is_the_default(client, clock):
    run_id, ids = failed_run(client, clock)
    assert client.get(f"/api/runs/{run_id}").json["status"] == "FAILURE"
    clock.advance(10)
    response = client.post(f"/api/runs/{run_id}/retry")
    assert response.status_code == 200
    body = response.json
    assert statuses(body) == ["SUCCESS", "IDLE", "IDLE", "IDLE"]
    assert body["status"] == "IN_PROGRESS" and body["endedAt"] is None
    assert body["duration"] == 13  # live again: the run started 13 s ago
    build = body["stages"][1]
    assert build["attempt"] == 2 and build["startedAt"] is None and build["duration"] is None
    # the run view shows the current attempt and a count; the history only when asked for
    assert build["attemptCount"] == 2 and "attempts" not in build
    history = client.get(f"/api/runs/{run_id}?include=attempts").json["stages"]
    assert history[1]["attempts"] == [{"attempt": 1, "status": "FAILURE",
                                       "startedAt": "2026-03-20T17:17:14.760Z",
                                       "endedAt": "2026-03-20T17:17:16.760Z", "duration": 2,
                                       "approvalDecision": None}]
    assert history[2]["attempts"][0]["status"] == "SKIPPED" and history[0]["attempts"] == []
    assert body["stages"][0]["attempt"] == 1
    assert body["startedAt"] == "2026-03-20T17:17:13.760Z"
    # the new attempt runs like the first
    patch(client, ids[1], "IN_PROGRESS")
    clock.advance(4)
    done = patch(client, ids[1], "SUCCESS")
    assert done["duration"] == 4 and done["attempt"] == 2


def test_retry_run_all_scope(client, clock):
    run_id, _ = failed_run(client, clock)
    response = client.post(f"/api/runs/{run_id}/retry", {"scope": "ALL"})
    assert response.status_code == 200
    assert [s["attempt"] for s in response.json["stages"]] == [2, 2, 2, 2]
    assert statuses(response.json) == ["IDLE"] * 4


def test_retry_run_with_nothing_to_retry_is_409(client, ddb_calls):
    run = four_stages(client)
    for stage in run["stages"]:
        patch(client, stage["id"], "IN_PROGRESS")
        patch(client, stage["id"], "SUCCESS")
    ddb_calls.clear()
    response = client.post(f"/api/runs/{run['id']}/retry", {"scope": "FAILED"})
    assert_error(response, 409, "nothing_to_retry")
    assert "nothing to retry" in response.json["error"]["message"]
    assert writes(ddb_calls) == {}


def test_retry_run_while_a_stage_runs_is_409(client):
    run = four_stages(client)
    patch(client, run["stages"][0]["id"], "IN_PROGRESS")
    patch(client, run["stages"][0]["id"], "FAILURE")
    patch(client, run["stages"][1]["id"], "IN_PROGRESS")
    assert_error(client.post(f"/api/runs/{run['id']}/retry"), 409, "illegal_transition")


@pytest.mark.parametrize("body", [{"scope": "SOME"}, {"scope": "failed"}, {"scope": None}, {"x": 1}])
def test_retry_run_bad_scope_is_422(client, body):
    run = four_stages(client)
    assert_error(client.post(f"/api/runs/{run['id']}/retry", body), 422, "validation_failed")


def test_retry_stage_restarts_it_and_the_skipped_stages_after_it(client, clock):
    run_id, ids = failed_run(client, clock)
    response = client.post(f"/api/stages/{ids[1]}/retry")
    assert response.status_code == 200
    assert response.json["id"] == ids[1] and response.json["status"] == "IDLE"
    assert response.json["attempt"] == 2
    after = client.get(f"/api/runs/{run_id}").json
    assert [s["attempt"] for s in after["stages"]] == [1, 2, 2, 2]
    assert after["status"] == "IN_PROGRESS"


def test_retry_a_successful_stage(client, clock):
    _, ids = failed_run(client, clock)
    response = client.post(f"/api/stages/{ids[0]}/retry")
    assert response.status_code == 200 and response.json["attempt"] == 2
    assert response.json["attemptCount"] == 2 and "attempts" not in response.json
    assert client.get(f"/api/stages/{ids[0]}/attempts").json["items"][0]["status"] == "SUCCESS"


@pytest.mark.parametrize("status,code", [("IN_PROGRESS", "illegal_transition"), ("IDLE", "nothing_to_retry")])
def test_retry_stage_that_is_not_finished_is_409(client, status, code):
    run = four_stages(client)
    stage = run["stages"][0]["id"]
    if status == "IN_PROGRESS":
        patch(client, stage, status)
    assert_error(client.post(f"/api/stages/{stage}/retry"), 409, code)


def test_retry_unknown_is_404(client):
    assert_error(client.post("/api/runs/web:1/retry"), 404, "not_found")
    assert_error(client.post("/api/stages/web:1:1/retry"), 404, "not_found")


# ---- approval gates --------------------------------------------------------------------------

def gated(client):
    run = create(client, ["BUILD", {"type": "DEPLOY_PROD", "name": "prod", "approval": "MANUAL"}])
    build, prod = (s["id"] for s in run["stages"])
    patch(client, build, "IN_PROGRESS")
    patch(client, build, "SUCCESS")
    waiting = patch(client, prod, "IN_PROGRESS")
    assert waiting["status"] == "WAITING_FOR_APPROVAL"
    return run["id"], prod


def test_approve_opens_the_gate_and_records_the_approver(client, clock):
    run_id, prod = gated(client)
    clock.advance(60)
    response = client.post(f"/api/stages/{prod}/approve", {"comment": "go"}, headers=as_user(client, "carol"))
    assert response.status_code == 200
    stage = response.json
    assert stage["status"] == "IN_PROGRESS" and stage["startedAt"] == "2026-03-20T17:18:13.760Z"
    assert stage["approvalDecision"] == {
        "decision": "APPROVED",
        "by": "carol",
        "at": "2026-03-20T17:18:13.760Z",
        "comment": "go",
        "attempt": 1,
    }
    assert client.get(f"/api/runs/{run_id}").json["status"] == "IN_PROGRESS"


def test_approving_twice_is_idempotent_and_writes_nothing(client, ddb_calls):
    _, prod = gated(client)
    first = client.post(f"/api/stages/{prod}/approve", headers=as_user(client, "carol"))
    ddb_calls.clear()
    again = client.post(f"/api/stages/{prod}/approve", {"comment": "again"}, headers=as_user(client, "dave"))
    assert again.status_code == 200 and again.json == first.json
    assert writes(ddb_calls) == {}


def test_reject_fails_the_gate_and_the_run(client):
    run_id, prod = gated(client)
    response = client.post(
        f"/api/stages/{prod}/reject", {"comment": "not today"}, headers=as_user(client, "erin")
    )
    assert response.status_code == 200
    assert response.json["status"] == "FAILURE" and response.json["duration"] is None
    assert response.json["approvalDecision"]["decision"] == "REJECTED"
    assert response.json["approvalDecision"]["comment"] == "not today"
    assert client.get(f"/api/runs/{run_id}").json["status"] == "FAILURE"
    assert client.post(f"/api/stages/{prod}/reject").status_code == 200
    assert_error(client.post(f"/api/stages/{prod}/approve"), 409, "already_decided")


def test_rejected_gate_retried_waits_for_a_new_approval(client):
    run_id, prod = gated(client)
    client.post(f"/api/stages/{prod}/reject")
    retried = client.post(f"/api/runs/{run_id}/retry").json
    assert retried["stages"][1]["approvalDecision"] is None
    history = client.get(f"/api/stages/{prod}?include=attempts").json["attempts"]
    assert history[0]["approvalDecision"]["decision"] == "REJECTED"
    assert patch(client, prod, "IN_PROGRESS")["status"] == "WAITING_FOR_APPROVAL"
    approved = client.post(f"/api/stages/{prod}/approve").json
    assert approved["status"] == "IN_PROGRESS" and approved["approvalDecision"]["attempt"] == 2


def test_approving_a_stage_that_is_not_waiting_is_409(client):
    run = create(client, ["BUILD", {"type": "DEPLOY_PROD", "approval": "MANUAL"}])
    build, prod = (s["id"] for s in run["stages"])
    assert_error(client.post(f"/api/stages/{prod}/approve"), 409, "illegal_transition")  # IDLE
    patch(client, build, "IN_PROGRESS")
    assert_error(client.post(f"/api/stages/{build}/approve"), 409, "illegal_transition")  # running
    assert_error(client.post(f"/api/stages/{build}/reject"), 409, "illegal_transition")


def test_patch_cannot_open_a_gate(client):
    _, prod = gated(client)
    assert_error(client.patch(f"/api/stages/{prod}", {"status": "IN_PROGRESS"}), 409, "illegal_transition")


def test_approve_bad_body_and_unknown_stage(client):
    _, prod = gated(client)
    assert_error(client.post(f"/api/stages/{prod}/approve", {"comment": 1}), 422, "validation_failed")
    assert_error(
        client.post(f"/api/stages/{prod}/approve", {"comment": "x" * 1001}), 422, "validation_failed"
    )
    assert_error(client.post("/api/stages/web:7:2/approve"), 404, "not_found")
    assert client.get(f"/api/stages/{prod}").json["status"] == "WAITING_FOR_APPROVAL"


def test_cancel_a_waiting_gate(client):
    run_id, prod = gated(client)
    response = client.post(f"/api/stages/{prod}/cancel")
    assert response.json["status"] == "CANCELLED"
    assert_error(client.post(f"/api/stages/{prod}/approve"), 409, "illegal_transition")
    assert client.get(f"/api/runs/{run_id}").json["status"] == "CANCELLED"


# ---- variables -------------------------------------------------------------------------------

def test_put_variables_merges_and_masks_secrets(client, ctx):
    run = create(client, ["BUILD"], variables={"ENV": "staging", "KEEP": "1"})
    response = client.put(f"/api/runs/{run['id']}/variables", {"variables": [
        {"key": "ENV", "value": "prod"},
        {"key": "DEPLOY_TOKEN", "value": "hunter2-very-secret", "secret": True},
    ]})
    assert response.status_code == 200
    assert response.json["variables"] == {"ENV": "prod", "KEEP": "1", "DEPLOY_TOKEN": "******"}
    assert response.json["secretVariables"] == ["DEPLOY_TOKEN"]
    for path in (f"/api/runs/{run['id']}", "/api/runs?pipeline=web"):
        assert "hunter2" not in json.dumps(client.get(path).json)
    # nor in the table: only its keyed hash is stored
    from chalicelib.store.schema import dynamodb_client

    table = dynamodb_client(ctx.settings)
    items = table.scan(TableName=ctx.settings.table_name)["Items"]
    assert "hunter2" not in json.dumps(items)
    assert "hmac-sha256:" in json.dumps(items)


def test_a_run_can_be_created_with_secret_variables(client, ctx, ddb_calls):
    ddb_calls.clear()
    response = client.post(
        "/api/runs",
        {
            "pipeline": "web",
            "stages": ["BUILD"],
            "variables": [
                {"key": "ENV", "value": "prod"},
                {"key": "DEPLOY_TOKEN", "value": "hunter2-at-birth", "secret": True},
            ],
        },
    )
    assert response.status_code == 201
    assert response.json["variables"] == {"ENV": "prod", "DEPLOY_TOKEN": "******"}
    assert response.json["secretVariables"] == ["DEPLOY_TOKEN"]
    assert dict(ddb_calls) == {"UpdateItem": 1, "TransactWriteItems": 1}  # as without secrets
    from chalicelib.store.schema import dynamodb_client

    items = dynamodb_client(ctx.settings).scan(TableName=ctx.settings.table_name)["Items"]
    assert "hunter2" not in json.dumps(items) and "hmac-sha256:" in json.dumps(items)
    # the same secret set later through PUT is recognised as unchanged: the same keyed hash
    ddb_calls.clear()
    again = client.put(f"/api/runs/{response.json['id']}/variables", {"variables": [
        {"key": "DEPLOY_TOKEN", "value": "hunter2-at-birth", "secret": True}]})
    assert again.status_code == 200 and writes(ddb_calls) == {}


@pytest.mark.parametrize("variables", [
    [{"key": "A", "value": "1"}, {"key": "A", "value": "2", "secret": True}],
    [],
    [{"key": "A", "value": "1", "secret": "yes"}],
    {"A": 1},
])
def test_bad_variables_at_creation_are_422_and_create_nothing(client, variables):
    response = client.post("/api/runs", {"pipeline": "web", "variables": variables})
    assert_error(response, 422, "validation_failed")
    assert client.get("/api/runs?pipeline=web").json["items"] == []


def test_put_same_variables_again_writes_nothing(client, ddb_calls):
    run = create(client, ["BUILD"])
    body = {"variables": [{"key": "A", "value": "1"}, {"key": "S", "value": "x", "secret": True}]}
    first = client.put(f"/api/runs/{run['id']}/variables", body)
    ddb_calls.clear()
    again = client.put(f"/api/runs/{run['id']}/variables", body)
    assert again.status_code == 200 and again.json == first.json
    assert writes(ddb_calls) == {}


@pytest.mark.parametrize("body", [
    {"variables": []},
    {"variables": [{"key": "1BAD", "value": "x"}]},
    {"variables": [{"key": "has space", "value": "x"}]},
    {"variables": [{"key": "A", "value": "x" * 4097}]},
    {"variables": [{"key": "A", "value": 1}]},
    {"variables": [{"key": "A", "value": "x", "secret": "true"}]},
    {"variables": [{"key": "A", "value": "x"}, {"key": "A", "value": "y"}]},
    {"variables": [{"key": "A"}]},
    {"variables": {"A": "x"}},
    {"vars": []},
    {"variables": [{"key": f"K{i}", "value": "x"} for i in range(101)]},
])
def test_bad_variables_are_422_and_change_nothing(client, body):
    run = create(client, ["BUILD"], variables={"ENV": "x"})
    response = client.put(f"/api/runs/{run['id']}/variables", body)
    assert_error(response, 422, "validation_failed")
    assert client.get(f"/api/runs/{run['id']}").json["variables"] == {"ENV": "x"}


def test_at_most_100_variables_after_the_merge(client):
    run = create(client, ["BUILD"], variables={f"V{i}": "x" for i in range(60)})
    extra = {"variables": [{"key": f"W{i}", "value": "y"} for i in range(40)]}
    assert client.put(f"/api/runs/{run['id']}/variables", extra).status_code == 200
    one_more = {"variables": [{"key": "LAST", "value": "z", "secret": True}]}
    response = client.put(f"/api/runs/{run['id']}/variables", one_more)
    assert_error(response, 422, "validation_failed")
    assert "at most 100" in response.json["error"]["message"]
    assert len(client.get(f"/api/runs/{run['id']}").json["variables"]) == 100


def test_put_variables_unknown_run_and_malformed_json(client):
    assert_error(client.put("/api/runs/web:5/variables", {"variables": [{"key": "A", "value": "1"}]}),
                 404, "not_found")
    run = create(client, ["BUILD"])
    assert_error(client.put(f"/api/runs/{run['id']}/variables", raw="{"), 400, "bad_request")
