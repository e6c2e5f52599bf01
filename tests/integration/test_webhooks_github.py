"""POST /api/webhooks/github: GitHub Actions workflow_run / workflow_job, as GitHub sends them.

Real-shaped payloads (tests/fixtures), HMAC signatures, replays, unknown events, bad input."""
from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from chalicelib.integrations.github import signature as github_signature
from tests.fixtures import load, make_source, post_github, variant
from tests.fixtures.backends import items_of

PIPELINE = "octo-org.example-workflow.Greeting-Actions"
RUN = f"{PIPELINE}:1"
STAGE = f"{RUN}:1"


@pytest.fixture
def secret(client):
    return make_source(client, "github", "github-main")


def runs_of(client, pipeline=PIPELINE):
    return client.get(f"/api/runs?pipeline={pipeline}").json["items"]


# ---- sources ------------------------------------------------------------------------------------

def test_a_source_shows_its_secret_once_and_keeps_it_sealed(client, ctx, capsys):
    created = client.post("/api/sources", {"type": "github", "name": "github-main"})
    assert created.status_code == 201
    assert created.headers["Cache-Control"] == "no-store"
    assert created.headers["Location"] == "/api/sources/github-main"
    secret = created.json["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    assert created.json["webhookPath"] == "/api/webhooks/github?source=github-main"

    listed = client.get("/api/sources").json["items"]
    assert [s["name"] for s in listed] == ["github-main"] and "secret" not in listed[0]
    stored = items_of(ctx).source.get("SOURCES", "SOURCE#github-main")
    assert stored.secret.startswith("v1.") and secret not in stored.secret
    assert secret not in capsys.readouterr().out  # never logged


def test_sources_are_admin_only_and_validated(client):
    token = client.post("/api/tokens", {"name": "ci", "scopes": ["operate"]}).json["token"]
    assert client.post("/api/sources", {"type": "github", "name": "x"}, auth=token).status_code == 403
    assert client.get("/api/sources", auth=None).status_code == 401
    assert client.post("/api/sources", {"type": "jenkins", "name": "x"}).status_code == 422
    assert client.post("/api/sources", {"type": "github", "name": "has space"}).status_code == 422
    assert client.post("/api/sources", {"type": "github", "name": "a"}).status_code == 201
    again = client.post("/api/sources", {"type": "gitlab", "name": "a"})
    assert again.status_code == 409 and again.json["error"]["code"] == "conflict"


def test_a_deleted_source_refuses_its_webhooks(client, secret):
    assert client.delete("/api/sources/github-main").json["name"] == "github-main"
    assert client.delete("/api/sources/github-main").status_code == 404
    response = post_github(client, "workflow_run", load("github_workflow_run_requested"), secret=secret)
    assert response.status_code == 404 and runs_of(client) == []


# ---- the happy path: a workflow run and its job -------------------------------------------------

def test_a_workflow_run_and_its_job_become_a_run_and_a_stage(client, secret, clock):
    first = post_github(client, "workflow_run", load("github_workflow_run_requested"), secret=secret,
                        delivery="d-1")
    assert first.status_code == 200, first.json
    assert first.json == {
        "result": "applied",
        "event": "workflow_run requested",
        "runId": RUN,
        "runCreated": True,
    }
    run = client.get(f"/api/runs/{RUN}").json
    assert (run["pipeline"], run["status"], run["stages"]) == (PIPELINE, "IDLE", [])
    assert run["commit"] == {
        "hash": "e3103f8eb03e1ad7f2331c5446b23c070fc54055",
        "message": "Update README.md",
        "committer": "Octo Cat",
        "committedAt": "2021-06-15T19:22:14.000Z",  # head_commit.timestamp
    }
    assert run["trigger"] == "github:push"
    # issue 13: what the sender says of its run (the official example payload's values)
    assert {key: run[key] for key in ("branch", "actor", "sourceUrl", "source")} == {
        "branch": "main", "actor": "octocat",
        "sourceUrl": "https://github.com/octo-org/example-workflow/actions/runs/940463255",
        "source": "github"}

    for delivery, name in (("d-2", "queued"), ("d-3", "in_progress"), ("d-4", "completed")):
        response = post_github(client, "workflow_job", load(f"github_workflow_job_{name}"), secret=secret,
                               delivery=delivery)
        assert response.status_code == 200 and response.json["result"] == "applied", response.json
    stage = client.get(f"/api/stages/{STAGE}").json
    assert (stage["name"], stage["type"], stage["status"]) == ("Run-a-one-line-script", "OTHER", "SUCCESS")
    assert (stage["startedAt"], stage["endedAt"], stage["duration"]) == (
        "2021-06-15T19:22:27.000Z", "2021-06-15T19:22:45.000Z", 18)
    assert stage["updatedAt"] == "2026-03-20T17:17:13.760Z"  # written now, by the clock

    done = post_github(
        client, "workflow_run", load("github_workflow_run_completed"), secret=secret, delivery="d-5"
    )
    assert done.json["result"] == "unchanged"  # the job already finished the run
    assert client.get(f"/api/runs/{RUN}").json["status"] == "SUCCESS"


def test_a_job_of_an_unknown_run_creates_the_run(client, secret, ddb_calls):
    ddb_calls.clear()
    response = post_github(client, "workflow_job", load("github_workflow_job_completed"), secret=secret)
    assert response.status_code == 200
    assert response.json["runCreated"] is True and response.json["stages"] == [
        {"stageId": STAGE, "status": "SUCCESS"}
    ]
    # source + link lookup, delivery claim, run number, one transaction (run, stage, link), answer kept
    assert dict(ddb_calls) == {"GetItem": 2, "PutItem": 1, "UpdateItem": 2, "TransactWriteItems": 1}
    run = client.get(f"/api/runs/{RUN}").json
    assert run["status"] == "SUCCESS" and run["stages"][0]["duration"] == 18  # IDLE -> IN_PROGRESS -> SUCCESS


def test_a_job_of_a_known_run_is_one_query_and_one_transaction(client, secret, ddb_calls):
    post_github(client, "workflow_run", load("github_workflow_run_requested"), secret=secret, delivery="d-1")
    ddb_calls.clear()
    post_github(
        client, "workflow_job", load("github_workflow_job_in_progress"), secret=secret, delivery="d-2"
    )
    assert dict(ddb_calls) == {
        "GetItem": 2,
        "PutItem": 1,
        "Query": 1,
        "TransactWriteItems": 1,
        "UpdateItem": 1,
    }


def test_a_failed_run_closes_what_github_never_finished(client, secret):
    post_github(
        client, "workflow_job", load("github_workflow_job_in_progress"), secret=secret, delivery="d-1"
    )
    failed = variant("github_workflow_run_completed", **{"workflow_run.conclusion": "failure"})
    response = post_github(client, "workflow_run", failed, secret=secret, delivery="d-2")
    assert response.json["result"] == "applied"
    assert client.get(f"/api/runs/{RUN}").json["status"] == "FAILURE"
    assert client.get(f"/api/stages/{STAGE}").json["status"] == "FAILURE"


def test_a_cancelled_run_is_cancelled_with_github_as_the_actor(client, secret):
    post_github(
        client, "workflow_job", load("github_workflow_job_in_progress"), secret=secret, delivery="d-1"
    )
    cancelled = variant("github_workflow_run_completed", **{"workflow_run.conclusion": "cancelled"})
    post_github(client, "workflow_run", cancelled, secret=secret, delivery="d-2")
    run = client.get(f"/api/runs/{RUN}").json
    assert run["status"] == "CANCELLED" and run["cancellation"]["by"] == "github:github-main"


def test_a_run_github_finished_without_jobs_gets_a_pipeline_stage(client, secret):
    post_github(client, "workflow_run", load("github_workflow_run_completed"), secret=secret)
    run = client.get(f"/api/runs/{RUN}").json
    assert run["status"] == "SUCCESS" and [(s["name"], s["status"]) for s in run["stages"]] == [
        ("pipeline", "SUCCESS")
    ]


def test_out_of_order_deliveries_never_move_a_stage_backwards(client, secret):
    post_github(client, "workflow_job", load("github_workflow_job_completed"), secret=secret, delivery="d-1")
    late = post_github(
        client, "workflow_job", load("github_workflow_job_in_progress"), secret=secret, delivery="d-2"
    )
    assert late.status_code == 200 and late.json["result"] == "unchanged"
    assert "would go backwards" in late.json["notes"][0]
    assert client.get(f"/api/stages/{STAGE}").json["status"] == "SUCCESS"


def test_a_rerun_of_a_failed_job_is_a_new_attempt_of_its_stage(client, secret):
    failed = variant("github_workflow_job_completed", **{"workflow_job.conclusion": "failure"})
    post_github(client, "workflow_job", failed, secret=secret, delivery="d-1")
    rerun = variant(
        "github_workflow_job_in_progress",
        **{"workflow_job.run_attempt": 2, "workflow_job.started_at": "2021-06-15T19:30:00Z"},
    )
    post_github(client, "workflow_job", rerun, secret=secret, delivery="d-2")
    stage = client.get(f"/api/stages/{STAGE}").json
    assert (stage["attempt"], stage["status"], stage["startedAt"]) == (
        2,
        "IN_PROGRESS",
        "2021-06-15T19:30:00.000Z",
    )
    history = client.get(f"/api/stages/{STAGE}/attempts").json["items"]
    assert stage["attemptCount"] == 2 and [a["status"] for a in history] == ["FAILURE"]
    old = post_github(
        client, "workflow_job", load("github_workflow_job_completed"), secret=secret, delivery="d-3"
    )
    assert old.json["result"] == "unchanged" and "older than attempt 2" in old.json["notes"][0]


def test_a_job_waiting_for_an_environment_waits_for_approval(client, secret):
    waiting = variant("github_workflow_job_queued", action="waiting", **{"workflow_job.status": "waiting"})
    post_github(client, "workflow_job", waiting, secret=secret, delivery="d-1")
    assert client.get(f"/api/stages/{STAGE}").json["status"] == "WAITING_FOR_APPROVAL"
    post_github(client, "workflow_job", load("github_workflow_job_completed"), secret=secret, delivery="d-2")
    assert client.get(f"/api/stages/{STAGE}").json["status"] == "SUCCESS"  # approved in GitHub, then ran


def test_form_encoded_payloads_are_accepted(client, secret):
    raw = urlencode({"payload": json.dumps(load("github_workflow_job_queued"))}).encode()
    response = post_github(client, "workflow_job", raw, secret=secret,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200 and response.json["runCreated"] is True


# ---- authentication: the signature, nothing else ------------------------------------------------

@pytest.mark.parametrize("signature", [None, "", "sha256=" + "0" * 64, "sha1=abc", "sha256=zz"])
def test_a_bad_or_missing_signature_is_403_and_changes_nothing(client, secret, ddb_calls, signature):
    ddb_calls.clear()
    response = post_github(client, "workflow_run", load("github_workflow_run_requested"), secret=None,
                           signature=signature)
    assert response.status_code == 403
    assert response.json["error"]["code"] == "signature_invalid"
    assert "WWW-Authenticate" not in response.headers  # no scheme to challenge with
    assert dict(ddb_calls) == {"GetItem": 1}  # the source, nothing else
    assert runs_of(client) == []


def test_a_signature_of_another_body_or_secret_is_403(client, secret):
    payload = load("github_workflow_run_requested")
    other = github_signature(secret, json.dumps({**payload, "action": "completed"}).encode())
    assert post_github(client, "workflow_run", payload, secret=None, signature=other).status_code == 403
    assert post_github(client, "workflow_run", payload, secret="whsec_not-the-secret").status_code == 403
    assert runs_of(client) == []


def test_stagetrack_tokens_neither_help_nor_hurt(client, secret):
    payload = load("github_workflow_run_requested")
    no_sig = post_github(client, "workflow_run", payload, secret=None,
                         headers={"Authorization": f"Bearer {client.admin_token}"})
    assert no_sig.status_code == 403
    signed = post_github(
        client, "workflow_run", payload, secret=secret, headers={"Authorization": "Bearer junk"}
    )
    assert signed.status_code == 200


def test_the_source_must_exist_and_be_a_github_source(client, secret):
    payload = load("github_workflow_run_requested")
    response = client.post("/api/webhooks/github", raw=json.dumps(payload), auth=None,
                           headers={"X-GitHub-Event": "workflow_run"})
    assert response.status_code == 400 and response.json["error"]["details"] == [{"field": "source"}]
    assert post_github(client, "workflow_run", payload, secret=secret, source="nope").status_code == 404
    make_source(client, "gitlab", "gitlab-main")
    assert (
        post_github(client, "workflow_run", payload, secret=secret, source="gitlab-main").status_code == 404
    )


# ---- replays ------------------------------------------------------------------------------------

def test_a_replayed_delivery_answers_the_first_result_and_writes_nothing(client, secret, ddb_calls):
    payload = load("github_workflow_job_completed")
    first = post_github(
        client, "workflow_job", payload, secret=secret, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958"
    )
    ddb_calls.clear()
    again = post_github(
        client, "workflow_job", payload, secret=secret, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958"
    )
    assert again.status_code == 200 and again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "TransactWriteItems" not in ddb_calls and "UpdateItem" not in ddb_calls
    assert len(runs_of(client)) == 1


def test_a_delivery_id_reused_with_another_payload_is_422(client, secret):
    post_github(client, "workflow_job", load("github_workflow_job_queued"), secret=secret, delivery="same")
    response = post_github(
        client, "workflow_job", load("github_workflow_job_completed"), secret=secret, delivery="same"
    )
    assert response.status_code == 422 and response.json["error"]["code"] == "delivery_id_reused"
    assert client.get(f"/api/stages/{STAGE}").json["status"] == "IDLE"


def test_a_failed_delivery_can_be_redelivered(client, secret, ctx):
    client.post("/api/runs", {"pipeline": PIPELINE, "stages": ["BUILD"]})  # the pipeline exists
    client.post(f"/api/pipelines/{PIPELINE}/pause", {"cause": "maintenance"})
    paused = post_github(
        client, "workflow_run", load("github_workflow_run_requested"), secret=secret, delivery="d-9"
    )
    assert paused.status_code == 409 and paused.json["error"]["code"] == "pipeline_paused"
    client.post(f"/api/pipelines/{PIPELINE}/unpause")
    redelivered = post_github(client, "workflow_run", load("github_workflow_run_requested"), secret=secret,
                              delivery="d-9")
    assert redelivered.status_code == 200 and redelivered.json["runId"] == f"{PIPELINE}:2"


def test_two_deliveries_racing_to_create_a_run_make_one(client, ctx, secret, monkeypatch):
    """The loser of the creation race finds the link taken and applies to the winner's run."""
    post_github(client, "workflow_job", load("github_workflow_job_queued"), secret=secret, delivery="d-1")
    links = ctx.stores.links
    real = links.linked_run
    calls = []

    def not_yet_committed(namespace, key):  # the winner's transaction lands after our first read
        calls.append(key)
        return None if len(calls) == 1 else real(namespace, key)

    monkeypatch.setattr(links, "linked_run", not_yet_committed)
    response = post_github(client, "workflow_job", load("github_workflow_job_in_progress"), secret=secret,
                           delivery="d-2")
    assert response.json["runId"] == RUN and response.json["runCreated"] is False
    assert [r["id"] for r in runs_of(client)] == [RUN]  # number 2 was claimed and is left unused
    assert client.get(f"/api/stages/{STAGE}").json["status"] == "IN_PROGRESS"


# ---- events we do not handle, and bad payloads --------------------------------------------------

def test_ping_is_answered(client, secret):
    response = post_github(client, "ping", load("github_ping"), secret=secret)
    assert (response.status_code, response.json) == (200, {"result": "pong"})


@pytest.mark.parametrize("event", ["push", "check_run", "", None])
def test_events_we_do_not_handle_are_202_and_say_why(client, secret, event):
    headers = {} if event is not None else {"X-GitHub-Event": ""}
    response = post_github(client, event or "", load("github_push"), secret=secret, headers=headers)
    assert response.status_code == 202
    assert (
        response.json["result"] == "ignored" and "workflow_run and workflow_job" in response.json["notes"][0]
    )
    assert client.get("/api/runs?pipeline=octo-org.example-workflow").json["items"] == []


def test_malformed_json_is_400(client, secret):
    response = post_github(client, "workflow_run", b'{"action": "requested", ', secret=secret)
    assert (
        response.status_code == 400 and response.json["error"]["message"] == "request body is not valid JSON"
    )


@pytest.mark.parametrize("change, field", [
    ({"workflow_job.name": None}, "workflow_job.name"),
    ({"workflow_job.run_id": "not-a-number"}, "workflow_job.run_id"),
    ({"workflow_job.run_attempt": 0}, "workflow_job.run_attempt"),
    ({"repository": None}, "repository"),
])
def test_a_payload_github_would_not_send_is_422_naming_the_field(client, secret, change, field):
    response = post_github(
        client, "workflow_job", variant("github_workflow_job_queued", **change), secret=secret
    )
    assert response.status_code == 422, response.json
    assert any(d["field"] == field for d in response.json["error"]["details"])
    assert runs_of(client) == []


def test_a_json_array_is_400(client, secret):
    response = post_github(client, "workflow_job", b"[]", secret=secret)
    assert response.status_code == 400


def test_a_missing_delivery_id_is_400(client, secret):
    response = post_github(
        client, "workflow_job", load("github_workflow_job_queued"), secret=secret, delivery=None
    )
    assert response.status_code == 400 and "X-GitHub-Delivery" in response.json["error"]["message"]


def test_a_long_workflow_name_still_makes_a_valid_pipeline_name(client, secret):
    long_name = "Build & Test " * 20
    payload = variant("github_workflow_run_requested", **{"workflow_run.name": long_name})
    response = post_github(client, "workflow_run", payload, secret=secret)
    pipeline = response.json["runId"].rsplit(":", 1)[0]
    assert len(pipeline) == 100 and pipeline.startswith("octo-org.example-workflow.Build-Test-Build-Test")
    assert client.get(f"/api/runs/{response.json['runId']}").status_code == 200



def test_a_run_made_by_a_job_event_gets_what_its_run_event_says_later_and_keeps_it(client, secret):
    """Issue 13: metadata a first event did not carry is recorded by a later one, never changed."""
    job = variant("github_workflow_job_queued", **{"workflow_job.head_branch": None, "sender": None})
    assert post_github(client, "workflow_job", job, secret=secret, delivery="j-1").json["runCreated"] is True
    before = client.get(f"/api/runs/{RUN}").json
    assert (before["branch"], before["actor"], before["source"]) == (None, None, "github")
    assert before["sourceUrl"] == "https://github.com/octo-org/example-workflow/actions/runs/940463255"
    post_github(client, "workflow_run", load("github_workflow_run_requested"), secret=secret, delivery="r-1")
    after = client.get(f"/api/runs/{RUN}").json
    assert (after["branch"], after["actor"]) == ("main", "octocat")
    later = variant("github_workflow_run_completed", **{"workflow_run.head_branch": "other"})
    post_github(client, "workflow_run", later, secret=secret, delivery="r-2")
    assert client.get(f"/api/runs/{RUN}").json["branch"] == "main"
    assert [r["id"] for r in client.get("/api/runs?branch=main&source=github").json["items"]] == [RUN]
