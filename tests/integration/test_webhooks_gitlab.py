"""POST /api/webhooks/gitlab: GitLab Pipeline Hook and Job Hook, verified by X-Gitlab-Token."""
from __future__ import annotations

import pytest

from tests.fixtures import load, make_source, post_gitlab, variant

PIPELINE = "gitlab-org.gitlab-test"
RUN = f"{PIPELINE}:1"


@pytest.fixture
def token(client):
    return make_source(client, "gitlab", "gitlab-main")


def stages(client, run_id=RUN):
    return [(s["name"], s["status"], s["attempt"]) for s in client.get(f"/api/runs/{run_id}").json["stages"]]


def test_a_pipeline_hook_makes_a_run_with_every_job_as_a_stage(client, token):
    response = post_gitlab(client, "Pipeline Hook", load("gitlab_pipeline_hook"), token=token)
    assert response.status_code == 200, response.json
    assert response.json["runId"] == RUN and response.json["runCreated"] is True
    assert stages(client) == [
        ("build-image", "SUCCESS", 1),
        ("test", "IN_PROGRESS", 1),
        ("production", "IDLE", 1),
    ]
    run = client.get(f"/api/runs/{RUN}").json
    assert run["status"] == "IN_PROGRESS"
    assert run["commit"]["hash"] == "bcbb5ec396a2c0f828686f14fac9b80b780504f2"
    assert run["trigger"] == "gitlab:merge_request_event"
    build = run["stages"][0]
    assert (build["startedAt"], build["endedAt"], build["duration"]) == (
        "2016-08-12T15:24:56.000Z", "2016-08-12T15:25:26.000Z", 30)


def test_a_job_hook_moves_its_stage_and_the_pipeline_hook_closes_the_run(client, token):
    post_gitlab(client, "Pipeline Hook", load("gitlab_pipeline_hook"), token=token, uuid="u-1")
    job = post_gitlab(client, "Job Hook", load("gitlab_job_hook"), token=token, uuid="u-2")
    assert job.json["result"] == "applied" and job.json["stages"] == [
        {"stageId": f"{RUN}:2", "status": "SUCCESS"}
    ]
    test_stage = client.get(f"/api/stages/{RUN}:2").json
    assert (test_stage["endedAt"], test_stage["duration"]) == ("2016-08-12T15:26:10.500Z", 43.5)

    finished = variant(
        "gitlab_pipeline_hook",
        **{"object_attributes.status": "success", "object_attributes.finished_at": "2016-08-12 15:26:29 UTC"},
    )
    finished["builds"][1].update(status="success", finished_at="2016-08-12 15:26:10 UTC")
    finished["builds"][2].update(status="manual")  # the manual deploy was never played
    post_gitlab(client, "Pipeline Hook", finished, token=token, uuid="u-3")
    assert stages(client) == [
        ("build-image", "SUCCESS", 1),
        ("test", "SUCCESS", 1),
        ("production", "SKIPPED", 1),
    ]
    assert client.get(f"/api/runs/{RUN}").json["status"] == "SUCCESS"


def test_a_job_hook_alone_finds_its_project_without_the_project_object(client, token):
    payload = load("gitlab_job_hook")
    del payload["project"]
    response = post_gitlab(client, "Job Hook", payload, token=token)
    assert response.json["runId"] == RUN  # from repository.homepage


def test_a_retried_job_is_a_new_attempt(client, token):
    failed = variant("gitlab_job_hook", build_status="failed")
    post_gitlab(client, "Job Hook", failed, token=token, uuid="u-1")
    retried = variant("gitlab_job_hook", build_status="running", build_id=1978, retries_count=1,
                      build_finished_at=None, build_started_at="2016-08-12T15:30:00.000Z")
    post_gitlab(client, "Job Hook", retried, token=token, uuid="u-2")
    assert stages(client) == [("test", "IN_PROGRESS", 2)]
    assert client.get(f"/api/stages/{RUN}:1?include=attempts").json["attempts"][0]["status"] == "FAILURE"


def test_a_cancelled_pipeline_cancels_the_run(client, token):
    post_gitlab(client, "Pipeline Hook", load("gitlab_pipeline_hook"), token=token, uuid="u-1")
    cancelled = variant("gitlab_pipeline_hook", **{"object_attributes.status": "canceled"})
    post_gitlab(client, "Pipeline Hook", cancelled, token=token, uuid="u-2")
    run = client.get(f"/api/runs/{RUN}").json
    assert run["status"] == "CANCELLED" and run["cancellation"]["by"] == "gitlab:gitlab-main"


def pipeline_hook(status: str, finished_at: str | None = None, **jobs) -> dict:
    """The documented pipeline hook with its status and some jobs (by name) changed."""
    payload = variant("gitlab_pipeline_hook", **{"object_attributes.status": status,
                                                 "object_attributes.finished_at": finished_at})
    for build in payload["builds"]:
        build.update(jobs.get(build["name"], {}))
    return payload


def production_job(status: str, started: str | None, finished: str | None) -> dict:
    """The job hook of the manual "production" job (id 380 in the pipeline hook example)."""
    return variant("gitlab_job_hook", build_id=380, build_name="production", build_stage="deploy",
                   build_status=status, build_started_at=started, build_finished_at=finished)


def test_a_failed_job_allowed_to_fail_leaves_the_pipeline_successful_as_gitlab_says(client, token):
    post_gitlab(client, "Pipeline Hook", load("gitlab_pipeline_hook"), token=token, uuid="u-1")
    allowed = variant("gitlab_job_hook", build_status="failed", build_allow_failure=True)
    assert post_gitlab(client, "Job Hook", allowed, token=token, uuid="u-2").status_code == 200
    test_stage = client.get(f"/api/stages/{RUN}:2").json
    assert (test_stage["status"], test_stage["allowFailure"]) == ("FAILURE", True)
    assert client.get(f"/api/runs/{RUN}").json["status"] == "IN_PROGRESS"  # production still to come

    done = pipeline_hook(
        "success",
        "2016-08-12 15:30:00 UTC",
        test={"status": "failed", "allow_failure": True, "finished_at": "2016-08-12 15:26:10 UTC"},
        production={
            "status": "success",
            "started_at": "2016-08-12 15:27:00 UTC",
            "finished_at": "2016-08-12 15:29:00 UTC",
        },
    )
    post_gitlab(client, "Pipeline Hook", done, token=token, uuid="u-3")
    run = client.get(f"/api/runs/{RUN}").json
    assert [(s["name"], s["status"], s["allowFailure"]) for s in run["stages"]] == [
        ("build-image", "SUCCESS", False), ("test", "FAILURE", True), ("production", "SUCCESS", False)]
    assert (run["status"], run["endedAt"]) == ("SUCCESS", "2016-08-12T15:29:00.000Z")


def test_a_failed_job_not_allowed_to_fail_fails_the_run(client, token):
    post_gitlab(client, "Pipeline Hook", load("gitlab_pipeline_hook"), token=token, uuid="u-1")
    post_gitlab(
        client, "Job Hook", variant("gitlab_job_hook", build_status="failed"), token=token, uuid="u-2"
    )
    failed = pipeline_hook("failed", "2016-08-12 15:30:00 UTC", test={"status": "failed"},
                           production={"status": "skipped"})
    post_gitlab(client, "Pipeline Hook", failed, token=token, uuid="u-3")
    run = client.get(f"/api/runs/{RUN}").json
    assert run["status"] == "FAILURE" and run["stages"][1]["allowFailure"] is False


def test_a_manual_job_played_after_its_pipeline_finished_ends_as_it_really_ran(client, token):
    """GitLab: pipeline success (the manual job waiting) -> played: pipeline running, job
    pending -> running -> success, pipeline success again. The job's stage ends SUCCESS at the
    job's own times, not SKIPPED where the first close left it."""
    post_gitlab(client, "Pipeline Hook", load("gitlab_pipeline_hook"), token=token, uuid="u-1")
    first_end = pipeline_hook("success", "2016-08-12 15:26:29 UTC",
                              test={"status": "success", "finished_at": "2016-08-12 15:26:10 UTC"},
                              production={"status": "manual"})
    post_gitlab(client, "Pipeline Hook", first_end, token=token, uuid="u-2")
    assert stages(client)[2] == ("production", "SKIPPED", 1)
    assert client.get(f"/api/runs/{RUN}").json["status"] == "SUCCESS"

    played = pipeline_hook(
        "running",
        None,
        test={"status": "success", "finished_at": "2016-08-12 15:26:10 UTC"},
        production={"status": "pending"},
    )
    post_gitlab(client, "Pipeline Hook", played, token=token, uuid="u-3")
    post_gitlab(client, "Job Hook", production_job("pending", None, None), token=token, uuid="u-4")
    running = post_gitlab(client, "Job Hook", production_job("running", "2016-08-12T16:00:00.000Z", None),
                          token=token, uuid="u-5")
    assert running.json["stages"] == [{"stageId": f"{RUN}:3", "status": "IN_PROGRESS"}]
    assert client.get(f"/api/runs/{RUN}").json["status"] == "IN_PROGRESS"
    post_gitlab(
        client,
        "Job Hook",
        production_job("success", "2016-08-12T16:00:00.000Z", "2016-08-12T16:01:30.000Z"),
        token=token,
        uuid="u-6",
    )
    second_end = pipeline_hook("success", "2016-08-12 16:01:31 UTC",
                               test={"status": "success", "finished_at": "2016-08-12 15:26:10 UTC"},
                               production={"status": "success", "started_at": "2016-08-12 16:00:00 UTC",
                                           "finished_at": "2016-08-12 16:01:30 UTC"})
    post_gitlab(client, "Pipeline Hook", second_end, token=token, uuid="u-7")
    production = client.get(f"/api/stages/{RUN}:3?include=attempts").json
    assert (production["status"], production["attempt"], production["attempts"]) == ("SUCCESS", 1, [])
    assert (production["startedAt"], production["endedAt"], production["duration"]) == (
        "2016-08-12T16:00:00.000Z", "2016-08-12T16:01:30.000Z", 90)
    run = client.get(f"/api/runs/{RUN}").json
    assert (run["status"], run["endedAt"]) == ("SUCCESS", "2016-08-12T16:01:30.000Z")


def test_a_late_stale_hook_does_not_reopen_a_skipped_job(client, token):
    """Only evidence that the job ran (running or finished) reopens it; a late "created" or
    "manual" from before the end changes nothing."""
    first_end = pipeline_hook("success", "2016-08-12 15:26:29 UTC",
                              test={"status": "success", "finished_at": "2016-08-12 15:26:10 UTC"},
                              production={"status": "manual"})
    post_gitlab(client, "Pipeline Hook", first_end, token=token, uuid="u-1")
    late = post_gitlab(client, "Pipeline Hook", load("gitlab_pipeline_hook"), token=token, uuid="u-2")
    assert late.json["result"] == "unchanged"
    assert stages(client)[2] == ("production", "SKIPPED", 1)


@pytest.mark.parametrize(
    "never_started, ends",
    [
        ("created", "SKIPPED"),
        ("pending", "SKIPPED"),
        ("waiting_for_resource", "SKIPPED"),
        ("scheduled", "SKIPPED"),
        ("manual", "CANCELLED"),  # waiting at its gate is active in stagetrack: a cancel cancels it
    ],
)
def test_a_cancelled_pipeline_leaves_no_never_started_job_idle(client, token, never_started, ends):
    post_gitlab(client, "Pipeline Hook", load("gitlab_pipeline_hook"), token=token, uuid="u-1")
    cancelled = pipeline_hook("canceled", "2016-08-12 15:26:00 UTC",
                              test={"status": "canceled", "finished_at": "2016-08-12 15:26:00 UTC"},
                              production={"status": never_started})
    post_gitlab(client, "Pipeline Hook", cancelled, token=token, uuid="u-2")
    run = client.get(f"/api/runs/{RUN}").json
    assert [(s["name"], s["status"]) for s in run["stages"]] == [
        ("build-image", "SUCCESS"), ("test", "CANCELLED"), ("production", ends)]
    assert run["status"] == "CANCELLED" and run["cancellation"]["by"] == "gitlab:gitlab-main"


def test_a_cancelled_pipeline_whose_jobs_were_reported_canceled_follows_gitlab(client, token):
    cancelled = pipeline_hook("canceled", "2016-08-12 15:26:00 UTC",
                              test={"status": "canceled", "finished_at": "2016-08-12 15:26:00 UTC"},
                              production={"status": "canceled"})
    post_gitlab(client, "Pipeline Hook", cancelled, token=token, uuid="u-1")
    assert stages(client) == [
        ("build-image", "SUCCESS", 1),
        ("test", "CANCELLED", 1),
        ("production", "CANCELLED", 1),
    ]


@pytest.mark.parametrize("sent", [None, "", "wrong-token", "whsec_" + "x" * 43])
def test_a_missing_or_wrong_token_is_403_and_changes_nothing(client, token, ddb_calls, sent):
    ddb_calls.clear()
    response = post_gitlab(client, "Pipeline Hook", load("gitlab_pipeline_hook"), token=sent)
    assert response.status_code == 403 and response.json["error"]["code"] == "signature_invalid"
    assert dict(ddb_calls) == {"GetItem": 1}
    assert client.get(f"/api/runs?pipeline={PIPELINE}").json["items"] == []


@pytest.mark.parametrize("header", ["uuid", "idempotency_key", None])
def test_a_redelivery_is_answered_from_the_first_one(client, token, ddb_calls, header):
    """GitLab's Idempotency-Key (kept across its retries), else X-Gitlab-Event-UUID, else the
    payload itself identifies a delivery."""
    ids = {"uuid": None, "idempotency_key": None}
    if header:
        ids[header] = "6a7b0c1d-2e3f-4a5b-8c9d-0e1f2a3b4c5d"
    first = post_gitlab(client, "Job Hook", load("gitlab_job_hook"), token=token, **ids)
    ddb_calls.clear()
    again = post_gitlab(client, "Job Hook", load("gitlab_job_hook"), token=token, **ids)
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    assert "TransactWriteItems" not in ddb_calls
    assert len(client.get(f"/api/runs?pipeline={PIPELINE}").json["items"]) == 1


def test_idempotency_key_is_the_senders_delivery_id_not_an_api_key(client, token):
    """The API's own Idempotency-Key handling is off on webhooks: GitLab's key is matched
    against GitLab deliveries only, and another payload under the same key is refused."""
    post_gitlab(client, "Job Hook", load("gitlab_job_hook"), token=token, idempotency_key="k-1")
    other = post_gitlab(client, "Job Hook", variant("gitlab_job_hook", build_status="failed"), token=token,
                        idempotency_key="k-1")
    assert other.status_code == 422 and other.json["error"]["code"] == "delivery_id_reused"


@pytest.mark.parametrize("event", ["Push Hook", "Merge Request Hook", "Deployment Hook", "", None])
def test_other_hooks_are_202_and_say_why(client, token, event):
    headers = {"X-Gitlab-Event": ""} if event is None else {}
    response = post_gitlab(client, event or "", load("gitlab_pipeline_hook"), token=token, headers=headers)
    assert response.status_code == 202
    assert "Pipeline events and Job events" in response.json["notes"][0]


def test_a_status_that_changes_nothing_is_ignored(client, token):
    response = post_gitlab(
        client, "Job Hook", variant("gitlab_job_hook", build_status="canceling"), token=token
    )
    assert response.status_code == 202 and response.json["result"] == "ignored"


@pytest.mark.parametrize("raw, status", [(b"{oops", 400), (b"\xff", 400), (b"[1]", 400)])
def test_malformed_bodies_are_400(client, token, raw, status):
    assert post_gitlab(client, "Pipeline Hook", raw, token=token).status_code == status


@pytest.mark.parametrize("event, change, field", [
    ("Pipeline Hook", {"object_kind": "build"}, "object_kind"),
    ("Pipeline Hook", {"object_attributes.id": "abc"}, "object_attributes.id"),
    ("Job Hook", {"build_name": ""}, "build_name"),
    ("Job Hook", {"pipeline_id": None}, "pipeline_id"),
    ("Job Hook", {"retries_count": -1}, "retries_count"),
])
def test_payloads_gitlab_would_not_send_are_422(client, token, event, change, field):
    name = "gitlab_pipeline_hook" if event == "Pipeline Hook" else "gitlab_job_hook"
    response = post_gitlab(client, event, variant(name, **change), token=token)
    assert response.status_code == 422
    assert any(d["field"] == field for d in response.json["error"]["details"])
    assert client.get(f"/api/runs?pipeline={PIPELINE}").json["items"] == []


def test_the_run_records_what_gitlab_says_of_its_pipeline(client, token):
    """Issue 13: branch (ref), actor (the user), the pipeline's page, the commit's time, source."""
    post_gitlab(client, "Pipeline Hook", load("gitlab_pipeline_hook"), token=token)
    run = client.get(f"/api/runs/{RUN}").json
    assert {key: run[key] for key in ("branch", "actor", "sourceUrl", "source")} == {
        "branch": "master", "actor": "root", "source": "gitlab",
        "sourceUrl": "http://example.com/gitlab-org/gitlab-test/-/pipelines/2366"}
    assert run["commit"]["committedAt"] == "2016-08-12T15:23:21.000Z"
    assert [r["id"] for r in client.get("/api/runs?source=gitlab&branch=master").json["items"]] == [RUN]


def test_a_job_hook_first_records_its_pipeline_from_the_job(client, token):
    response = post_gitlab(client, "Job Hook", load("gitlab_job_hook"), token=token)
    run = client.get(f"/api/runs/{response.json['runId']}").json
    assert {key: run[key] for key in ("branch", "actor", "sourceUrl", "source")} == {
        "branch": "gitlab-script-trigger", "actor": "user", "source": "gitlab",
        "sourceUrl": "http://192.168.64.1:3005/gitlab-org/gitlab-test/-/pipelines/2366"}
