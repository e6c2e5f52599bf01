"""POST /api/webhooks/cdevents: CDEvents over the CloudEvents HTTP binding (binary and
structured mode), authenticated with the source's shared token as a Bearer token."""
from __future__ import annotations

import json

import pytest

from tests.fixtures import load, make_source, post_cdevent, variant

RUN = "myPipeline:1"


@pytest.fixture
def token(client):
    return make_source(client, "cdevents", "tekton")


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_a_pipeline_run_and_its_task_runs(client, token, mode):
    for name in ("pipelinerun_queued", "pipelinerun_started"):
        response = post_cdevent(client, load(f"cdevents_{name}"), token=token, mode=mode)
        assert response.status_code == 200, response.json
    run = client.get(f"/api/runs/{RUN}").json
    assert (run["status"], run["stages"], run["trigger"]) == ("IDLE", [], "cdevents")

    started = post_cdevent(client, load("cdevents_taskrun_started"), token=token, mode=mode)
    assert started.json["stages"] == [{"stageId": f"{RUN}:1", "status": "IN_PROGRESS"}]
    post_cdevent(client, load("cdevents_taskrun_finished"), token=token, mode=mode)
    stage = client.get(f"/api/stages/{RUN}:1").json
    assert (stage["name"], stage["status"], stage["duration"]) == ("myTask", "FAILURE", 90.5)
    assert stage["startedAt"] == "2023-03-20T14:27:09.000Z"

    finished = post_cdevent(client, load("cdevents_pipelinerun_finished"), token=token, mode=mode)
    assert finished.json["result"] == "unchanged"  # the failed task already failed the run
    assert client.get(f"/api/runs/{RUN}").json["status"] == "FAILURE"


def test_a_finished_pipeline_run_with_tasks_still_running_closes_them(client, token):
    post_cdevent(client, load("cdevents_taskrun_started"), token=token)
    succeeded = variant("cdevents_pipelinerun_finished", **{"subject.content.outcome": "success"})
    post_cdevent(client, succeeded, token=token)
    assert client.get("/api/runs/tekton:1").json["status"] == "SUCCESS"


def test_a_task_run_of_an_unannounced_pipeline_run_goes_to_the_sources_pipeline(client, token):
    response = post_cdevent(client, load("cdevents_taskrun_started"), token=token)
    assert response.json["runId"] == "tekton:1" and response.json["runCreated"] is True
    later = post_cdevent(client, load("cdevents_pipelinerun_started"), token=token)
    assert later.json["runId"] == "tekton:1"  # the same pipelineRun, found by its id


def test_a_cancelled_pipeline_run(client, token):
    post_cdevent(client, load("cdevents_taskrun_started"), token=token)
    cancelled = variant("cdevents_pipelinerun_finished", **{"subject.content.outcome": "cancel"})
    post_cdevent(client, cancelled, token=token)
    assert client.get("/api/runs/tekton:1").json["status"] == "CANCELLED"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic eDp5"},
                                     {"X-Auth-Token": "nope"}])
def test_without_the_sources_bearer_token_it_is_403(client, token, ddb_calls, headers):
    ddb_calls.clear()
    response = post_cdevent(client, load("cdevents_pipelinerun_queued"), token=None, headers=headers)
    assert response.status_code == 403 and dict(ddb_calls) == {"GetItem": 1}
    assert client.get("/api/runs?pipeline=myPipeline").json["items"] == []


def test_a_replay_is_recognised_by_id_and_source(client, token, ddb_calls):
    first = post_cdevent(client, load("cdevents_pipelinerun_queued"), token=token)
    ddb_calls.clear()
    again = post_cdevent(client, load("cdevents_pipelinerun_queued"), token=token, mode="structured")
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    assert "TransactWriteItems" not in ddb_calls
    # the same id from another source is another event
    other = post_cdevent(
        client,
        variant("cdevents_pipelinerun_queued", **{"subject.id": "run-2"}),
        token=token,
        ce_source="/event/source/456",
    )
    assert other.json["runId"] == "myPipeline:2"


@pytest.mark.parametrize(
    "ce_type",
    [
        "dev.cdevents.artifact.published.0.1.1",
        "dev.cdevents.taskrun.queued.0.2.0",
        "com.example.someevent",
        "dev.cdevents.pipelinerun.started.1.0.0",
    ],
)
def test_other_event_types_are_202(client, token, ce_type):
    payload = variant("cdevents_pipelinerun_started", **{"context.type": ce_type})
    response = post_cdevent(client, payload, token=token)
    assert response.status_code == 202 and response.json["result"] == "ignored"


@pytest.mark.parametrize("headers, raw, status", [
    ({"ce-specversion": ""}, None, 400),  # not a CloudEvent at all
    ({"ce-specversion": "0.3"}, None, 400),
    ({"Content-Type": "application/cloudevents-batch+json"}, b"[]", 400),
    ({}, b"{not json", 400),
    ({"Content-Type": "text/plain"}, None, 400),
])
def test_malformed_cloudevents_are_400(client, token, headers, raw, status):
    payload = load("cdevents_pipelinerun_queued")
    response = post_cdevent(client, raw if raw is not None else payload, token=token, headers=headers)
    assert response.status_code == status, response.json
    assert client.get("/api/runs?pipeline=myPipeline").json["items"] == []


def test_a_structured_event_missing_attributes_is_422(client, token):
    raw = json.dumps({"specversion": "1.0", "type": "dev.cdevents.pipelinerun.queued.0.2.0",
                      "data": load("cdevents_pipelinerun_queued")}).encode()
    response = client.post("/api/webhooks/cdevents?source=tekton", raw=raw, auth=None,
                           headers={"Content-Type": "application/cloudevents+json",
                                    "Authorization": f"Bearer {token}"})
    assert response.status_code == 422
    assert {d["field"] for d in response.json["error"]["details"]} == {"id", "source"}


@pytest.mark.parametrize("change, field", [
    ({"subject.content.outcome": "meh"}, "subject.content.outcome"),
    ({"subject.content.pipelineRun": None}, "subject.content.pipelineRun"),
    ({"subject": None}, "subject"),
])
def test_cdevents_that_break_the_spec_are_422(client, token, change, field):
    name = (
        "cdevents_taskrun_finished"
        if "pipelineRun" in field or "outcome" in field
        else "cdevents_pipelinerun_queued"
    )
    response = post_cdevent(client, variant(name, **change), token=token)
    assert response.status_code == 422, response.json
    assert response.json["error"]["details"][0]["field"] == field


def test_a_context_type_that_contradicts_the_cloudevent_is_422(client, token):
    payload = load("cdevents_pipelinerun_queued")
    response = post_cdevent(client, payload, token=token,
                            headers={"ce-type": "dev.cdevents.pipelinerun.started.0.2.0"})
    assert response.status_code == 422


def test_the_pipeline_runs_url_is_recorded_as_its_source(client, token):
    """Issue 13: a pipelineRun's ``url`` (the run in the sender's system) is the run's sourceUrl."""
    post_cdevent(client, load("cdevents_pipelinerun_queued"), token=token, mode="binary")
    run = client.get(f"/api/runs/{RUN}").json
    assert (run["sourceUrl"], run["source"], run["actor"], run["branch"]) == (
        "https://www.example.com/mySubject123", "cdevents", None, None)


def test_a_url_that_is_no_web_link_is_not_recorded(client, token):
    event = load("cdevents_pipelinerun_queued")
    event["subject"]["content"]["url"] = "javascript:alert(document.cookie)"
    assert post_cdevent(client, event, token=token, mode="binary").status_code == 200
    assert client.get(f"/api/runs/{RUN}").json["sourceUrl"] is None
