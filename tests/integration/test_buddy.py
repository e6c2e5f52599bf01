"""Buddy.works' PATCH .../pipelines/:pipeline_id/executions/:execution_id: the reference's
APPLY_VARIABLES example replayed, the answer compared field by field with its example response,
and every operation, error, scope and rate-limit header."""
from __future__ import annotations

import json

import pytest

from chalicelib.api import buddy_wire
from chalicelib.domain import dialect_ids
from chalicelib.domain.status import StageStatus
from tests.fixtures.dialects import assert_shape, reference

# Fields the reference example fills that stagetrack has no value for (documented in README).
NULLABLE = {"$.branch", "$.creator", "$.from_revision.url", "$.from_revision.html_url",
            "$.from_revision.author_date", "$.from_revision.commit_date", "$.to_revision.url",
            "$.to_revision.html_url", "$.to_revision.author_date", "$.to_revision.commit_date",
            *(f"$.{rev}.{who}.{field}" for rev in ("from_revision", "to_revision")
              for who in ("committer", "author") for field in ("url", "html_url", "id", "avatar_url")),
            # issue 13: a run's branch and creator, with what stagetrack does not know of them
            "$.branch.url", "$.branch.html_url", "$.creator.url", "$.creator.html_url", "$.creator.id",
            "$.creator.avatar_url"}

# The reference's example body, verbatim.
APPLY_VARIABLES = '''{
  "operation": "APPLY_VARIABLES",
  "variables": [
    {
      "key": "myVar1",
      "value": "someValue"
    }
  ]
}'''


def issue(client, scopes, pipelines=None):
    body = {"name": "buddy", "scopes": scopes, **({"pipelines": pipelines} if pipelines else {})}
    response = client.post("/api/tokens", body)
    assert response.status_code == 201, response.json
    return response.json["token"]


def patch(client, path, body, token):
    """curl -X PATCH <url> -H "Authorization: Bearer <YOUR-TOKEN>" \
       -H "Content-Type: application/json" -d '...'"""
    headers = {"Content-Type": "application/json", "Host": "api.buddy.example"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
    response = client._http.request("PATCH", path, headers=headers, body=raw)
    response.json = json.loads(response.body)
    return response


@pytest.fixture
def execution(client):
    """Pipeline "dev" (with a commit) run 1: "Upload files to dev" running, then a manual gate."""
    created = client.post("/api/runs", {
        "pipeline": "dev", "branch": "master",
        "commit": {"hash": "506a3963507943d6908154f4bc9646e829128a08", "message": "init repo\n",
                   "committer": "Mike Benson", "committedAt": "2016-01-19T12:36:33Z"},
        "stages": [{"type": "BUILD", "name": "Upload-files-to-dev"},
                   {"type": "DEPLOY_PROD", "name": "deploy", "approval": "MANUAL"}]})
    assert created.status_code == 201
    assert client.patch("/api/stages/dev:1:1", {"status": "IN_PROGRESS"}).status_code == 200
    pipeline_id = client.get("/api/pipelines/dev/status").json["buddyPipelineId"]
    return f"/workspaces/buddy/projects/company-website/pipelines/{pipeline_id}/executions/1"


def assert_buddy_error(response, status):
    assert response.status_code == status, response.json
    assert response.headers["Content-Type"] == "application/json"
    assert set(response.json) == {"errors"} and response.json["errors"][0]["message"]


def test_apply_variables_replays_the_reference_example(client, execution, ddb_calls):
    token = issue(client, ["operate"])
    ddb_calls.clear()
    response = patch(client, execution, APPLY_VARIABLES, token)
    assert response.status_code == 200, response.json
    assert response.headers["Content-Type"] == "application/json"
    # token (UpdateItem), pipeline_id (one Query on the index), the run (Query), one transaction
    assert dict(ddb_calls) == {"UpdateItem": 1, "Query": 2, "TransactWriteItems": 1}
    assert int(response.headers["X-Rate-Limit-Limit"]) == 600
    assert int(response.headers["X-Rate-Limit-Remaining"]) == 599  # this token's first request
    body = response.json
    assert_shape(reference("buddy_execution"), body, nullable=NULLABLE)
    pipeline_id = dialect_ids.buddy_pipeline_id("dev")
    base = f"http://api.buddy.example/workspaces/buddy/projects/company-website/pipelines/{pipeline_id}"
    assert body["url"] == f"{base}/executions/1"
    assert body["html_url"] == "http://api.buddy.example/api/runs/dev:1"
    assert (body["id"], body["status"], body["triggeredOn"], body["refresh"]) == \
        (1, "INPROGRESS", "CLICK", False)
    assert body["start_date"] == "2026-03-20T17:17:13.760Z" and body["finish_date"] is None
    assert body["to_revision"]["revision"] == "506a3963507943d6908154f4bc9646e829128a08"
    assert body["to_revision"]["commit_date"] == "2016-01-19T12:36:33.000Z"
    # the run's branch and creator (issue 13; null before)
    assert body["branch"] == {"url": None, "html_url": None, "name": "master", "default": False}
    assert body["creator"] == {"url": None, "html_url": None, "id": None, "name": "bootstrap admin",
                               "avatar_url": None}
    assert body["pipeline"] == {
        "url": base, "html_url": "http://api.buddy.example/api/pipelines/dev/status", "id": pipeline_id,
        "name": "dev", "on": "CLICK", "refs": [], "last_execution_status": "INPROGRESS",
        "last_execution_revision": "506a3963507943d6908154f4bc9646e829128a08"}
    upload, deploy = body["action_executions"]
    assert (upload["status"], upload["progress"]) == ("INPROGRESS", 0)
    assert upload["action"] == {
        "url": f"{base}/actions/1", "html_url": "http://api.buddy.example/api/stages/dev:1:1", "id": 1,
        "name": "Upload-files-to-dev", "type": "BUILD", "trigger_time": "ON_EVERY_EXECUTION",
        "last_execution_status": "INPROGRESS"}
    assert (deploy["status"], deploy["action"]["id"]) == ("ENQUEUED", 2)
    assert client.get("/api/runs/dev:1").json["variables"] == {"myVar1": "someValue"}
    again = patch(client, execution, APPLY_VARIABLES, token)  # the same again: nothing to write
    assert again.json == body and int(again.headers["X-Rate-Limit-Remaining"]) == 598


def test_apply_variables_requires_variables_400_in_buddy_shape(client, execution):
    token = issue(client, ["operate"])
    before = client.get("/api/runs/dev:1").json
    for body in ({"operation": "APPLY_VARIABLES"}, {"operation": "APPLY_VARIABLES", "variables": None},
                 {"operation": "APPLY_VARIABLES", "variables": []}):
        response = patch(client, execution, body, token)
        assert_buddy_error(response, 400)
    assert "variables" in response.json["errors"][0]["message"]
    assert client.get("/api/runs/dev:1").json == before


@pytest.mark.parametrize("body", [
    "{not json", "[]", {}, {"operation": "PAUSE"}, {"operation": "cancel"},
    {"operation": "CANCEL", "variables": [{"key": "a", "value": "b"}]},
    {"operation": "APPLY_VARIABLES", "variables": [{"key": "bad key", "value": "b"}]},
    {"operation": "APPLY_VARIABLES", "variables": [{"key": "a", "value": "b"}, {"key": "a", "value": "c"}]},
    {"operation": "APPLY_VARIABLES", "variables": [{"key": "a"}]},
    {"operation": "RETRY", "extra": True},
])
def test_bad_bodies_are_400_and_change_nothing(client, execution, body):
    before = client.get("/api/runs/dev:1").json
    assert_buddy_error(patch(client, execution, body, issue(client, ["operate"])), 400)
    assert client.get("/api/runs/dev:1").json == before


def test_cancel_terminates_the_execution(client, execution):
    response = patch(client, execution, {"operation": "CANCEL"}, issue(client, ["operate"]))
    assert response.status_code == 200
    body = response.json
    assert body["status"] == "TERMINATED" and body["finish_date"] == "2026-03-20T17:17:13.760Z"
    assert [(a["status"], a["progress"]) for a in body["action_executions"]] == \
        [("TERMINATED", 100), ("SKIPPED", 0)]
    assert client.get("/api/runs/dev:1").json["cancellation"]["by"] == "buddy"


def test_retry_starts_the_failed_actions_again(client, execution):
    token = issue(client, ["operate"])
    client.patch("/api/stages/dev:1:1", {"status": "FAILURE"})
    response = patch(client, execution, {"operation": "RETRY"}, token)
    assert response.status_code == 200
    assert response.json["status"] == "ENQUEUED"
    assert [a["status"] for a in response.json["action_executions"]] == ["ENQUEUED", "ENQUEUED"]
    stage = client.get("/api/stages/dev:1:1?include=attempts").json
    assert (stage["attempt"], stage["attempts"][0]["status"]) == (2, "FAILURE")
    # nothing failed any more: Buddy's RETRY does not apply, 409, nothing changed
    assert_buddy_error(patch(client, execution, {"operation": "RETRY"}, token), 409)


def test_apply_approves_the_waiting_action(client, execution):
    token = issue(client, ["operate"])
    assert_buddy_error(patch(client, execution, {"operation": "APPLY"}, token), 409)  # nothing waits yet
    client.patch("/api/stages/dev:1:1", {"status": "SUCCESS"})
    client.patch("/api/stages/dev:1:2", {"status": "IN_PROGRESS"})  # MANUAL: to its gate
    waiting = patch(client, execution, {"operation": "APPLY_VARIABLES",
                                        "variables": [{"key": "A", "value": "1"}]}, token).json
    assert (waiting["status"], waiting["action_executions"][1]["status"]) == \
        ("WAITING_FOR_APPLY", "WAITING_FOR_APPLY")
    response = patch(client, execution, {"operation": "APPLY"}, token)
    assert response.status_code == 200
    assert response.json["status"] == "INPROGRESS"
    assert response.json["action_executions"][1]["status"] == "INPROGRESS"
    decision = client.get("/api/stages/dev:1:2").json["approvalDecision"]
    assert (decision["decision"], decision["by"]) == ("APPROVED", "buddy")


def test_encrypted_variables_are_kept_only_as_a_keyed_hash(client, ctx, execution):
    body = {"operation": "APPLY_VARIABLES",
            "variables": [{"key": "TOKEN", "value": "hunter2-secret", "encrypted": True}]}
    assert patch(client, execution, body, issue(client, ["operate"])).status_code == 200
    run = client.get("/api/runs/dev:1").json
    assert run["variables"]["TOKEN"] == "******" and run["secretVariables"] == ["TOKEN"]
    from chalicelib.store.schema import dynamodb_client

    items = dynamodb_client(ctx.settings).scan(TableName=ctx.settings.table_name)["Items"]
    assert "hunter2" not in json.dumps(items)


def test_unknown_pipeline_or_execution_is_404(client, execution):
    token = issue(client, ["operate"])
    base = "/workspaces/buddy/projects/company-website/pipelines"
    for path in (execution.replace("/executions/1", "/executions/2"), f"{base}/12345/executions/1",
                 f"{base}/dev/executions/1", f"{base}/{2 ** 60}/executions/1",
                 execution.replace("/executions/1", "/executions/x")):
        assert_buddy_error(patch(client, path, {"operation": "CANCEL"}, token), 404)


def test_scopes_workspace_and_execution_run_are_operate(client, execution):
    """Buddy's required scopes WORKSPACE and EXECUTION_RUN: a read-only token gets 403."""
    assert_buddy_error(patch(client, execution, {"operation": "CANCEL"}, None), 401)
    assert_buddy_error(patch(client, execution, {"operation": "CANCEL"}, "st_" + "x" * 43), 401)
    forbidden = patch(client, execution, {"operation": "CANCEL"}, issue(client, ["read"]))
    assert_buddy_error(forbidden, 403)
    assert "X-Rate-Limit-Remaining" in forbidden.headers
    assert client.get("/api/runs/dev:1").json["status"] == "IN_PROGRESS"


def test_a_limited_token_is_checked_against_buddy_ids_without_a_read(client, execution, ddb_calls):
    other = issue(client, ["operate"], ["other"])
    ddb_calls.clear()
    assert_buddy_error(patch(client, execution, {"operation": "CANCEL"}, other), 404)
    assert dict(ddb_calls) == {"UpdateItem": 1}
    mine = issue(client, ["operate"], ["dev"])
    assert patch(client, execution, {"operation": "CANCEL"}, mine).status_code == 200


def test_last_execution_status_is_the_newest_run(client, execution):
    client.post("/api/runs", {"pipeline": "dev", "stages": ["BUILD"]})
    body = patch(client, execution, {"operation": "CANCEL"}, issue(client, ["operate"])).json
    assert (body["status"], body["pipeline"]["last_execution_status"]) == ("TERMINATED", "ENQUEUED")
    assert body["pipeline"]["last_execution_revision"] is None


def test_progress_follows_expected_seconds(client, clock):
    client.post("/api/runs", {"pipeline": "sim", "stages": [{"type": "BUILD", "expectedSeconds": 100}]})
    client.patch("/api/stages/sim:1:1", {"status": "IN_PROGRESS"})
    clock.advance(40)
    path = f"/workspaces/w/projects/p/pipelines/{dialect_ids.buddy_pipeline_id('sim')}/executions/1"
    body = patch(client, path, {"operation": "APPLY_VARIABLES", "variables": [{"key": "A", "value": "1"}]},
                 issue(client, ["operate"])).json
    assert body["action_executions"][0]["progress"] == 40


def test_every_status_has_a_buddy_status():
    assert set(buddy_wire.BUDDY_STATUS) == set(StageStatus)
    named = {"INPROGRESS", "SUCCESSFUL", "FAILED", "TERMINATED", "WAITING_FOR_APPLY"}  # the reference's
    assert named <= set(buddy_wire.BUDDY_STATUS.values())


# ---- Buddy's whole Variable object (issue 10) --------------------------------------------------

def test_apply_variables_takes_back_the_variable_objects_buddy_lists(client, ctx, execution):
    """A client that lists variables from Buddy and sends them back as they came (type,
    settable, description, file_* ... and the read-only url/id) is served: key and value are
    used, encrypted ones are kept as secrets (keyed hash only), the rest is ignored."""
    listed = reference("buddy_variables")["variables"]
    response = patch(client, execution, {"operation": "APPLY_VARIABLES", "variables": listed},
                     issue(client, ["operate"]))
    assert response.status_code == 200, response.json
    run = client.get("/api/runs/dev:1").json
    assert run["variables"] == {"API_TOKEN": "******", "SSH_KEY": "******"}
    assert run["secretVariables"] == ["API_TOKEN", "SSH_KEY"]
    from chalicelib.store.schema import dynamodb_client

    items = json.dumps(dynamodb_client(ctx.settings).scan(TableName=ctx.settings.table_name)["Items"])
    assert "secret-token-value" not in items and "SmFXMKglBP8n" not in items


def test_a_plain_variable_object_with_every_documented_field_is_a_plain_variable(client, execution):
    variable = {"key": "REGION", "value": "eu-west-1", "type": "VAR", "settable": True,
                "run_only_settable": False, "encrypted": False, "description": "where", "id": 7,
                "url": "https://api.buddy.works/workspaces/w/variables/7", "html_url": "https://buddy.works/w",
                "ssh_key": False, "init_path": "/opts", "defaults": "a\nb", "file_place": "NONE",
                "file_name": "f", "file_path": "~/f", "file_chmod": "600", "password": "",
                "passphrase": "", "key_identifier": "", "project": {"name": "company-website"},
                "pipeline": {"id": 2}, "action": None, "comment": "from the UI"}
    response = patch(client, execution, {"operation": "APPLY_VARIABLES", "variables": [variable]},
                     issue(client, ["operate"]))
    assert response.status_code == 200, response.json
    run = client.get("/api/runs/dev:1").json
    assert run["variables"] == {"REGION": "eu-west-1"} and run.get("secretVariables", []) == []


@pytest.mark.parametrize("variable", [
    {"key": "A", "value": "1", "encrpyted": True},           # a misspelt flag: never a silent clear text
    {"key": "A", "value": "1", "settable": "yes"},           # documented, but of the wrong type
    {"key": "A", "value": "1", "description": "d" * 4097},   # documented, but too long
])
def test_undocumented_or_ill_typed_variable_fields_are_400_and_change_nothing(client, execution, variable):
    before = client.get("/api/runs/dev:1").json
    response = patch(client, execution, {"operation": "APPLY_VARIABLES", "variables": [variable]},
                     issue(client, ["operate"]))
    assert_buddy_error(response, 400)
    assert client.get("/api/runs/dev:1").json == before


def test_comment_is_the_approval_comment_and_the_cancellation_reason(client, execution):
    token = issue(client, ["operate"])
    client.patch("/api/stages/dev:1:1", {"status": "SUCCESS"})
    client.patch("/api/stages/dev:1:2", {"status": "IN_PROGRESS"})  # MANUAL: to its gate
    response = patch(client, execution, {"operation": "APPLY", "comment": "ship it"}, token)
    assert response.status_code == 200, response.json
    assert client.get("/api/stages/dev:1:2").json["approvalDecision"]["comment"] == "ship it"
    response = patch(client, execution, {"operation": "CANCEL", "comment": "wrong branch"}, token)
    assert response.status_code == 200, response.json
    assert client.get("/api/runs/dev:1").json["cancellation"]["reason"] == "wrong branch"
