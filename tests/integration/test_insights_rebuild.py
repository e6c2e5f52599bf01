"""POST/GET /api/insights/rebuild on moto: the rebuild as an admin's API operation (its record,
its progress and end, one at a time with a staleness rule), how it is started (an asynchronous
invoke of its function on AWS, a thread under `make run`), the function's handler and policy,
and who may ask for it."""
from __future__ import annotations

import json
import time

import pytest
from botocore.stub import Stubber
from chalice.test import Client

from chalicelib import wiring
from chalicelib.adapters import lambdas
from chalicelib.domain import rebuilds
from chalicelib.service import insights
from tests.fixtures import assert_items_allowed, iam_actions

RANGE = "from=2026-03-20&to=2026-03-20"


def finish(client, clock, stage_id, status="SUCCESS", seconds=10):
    client.patch(f"/api/stages/{stage_id}", {"status": "IN_PROGRESS"})
    clock.advance(seconds)
    client.patch(f"/api/stages/{stage_id}", {"status": status})


def history(client, clock):
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD", "DEPLOY_PROD"]})
    finish(client, clock, "web:1:1")
    finish(client, clock, "web:1:2")
    client.post("/api/runs", {"pipeline": "api", "stages": ["BUILD"]})
    finish(client, clock, "api:1:1", "FAILURE")


@pytest.fixture
def launched(monkeypatch):
    """The rebuilds asked for, not started: the test runs them (``run_rebuild``) when it wants."""
    ids: list[str] = []
    monkeypatch.setattr(wiring, "rebuild_launcher", lambda ctx: ids.append)
    return ids


def test_a_rebuild_is_recorded_started_and_its_result_read_back(client, clock, ctx, launched):
    history(client, clock)
    assert client.get("/api/insights/rebuild").status_code == 404  # none asked for yet
    started = client.post("/api/insights/rebuild")
    assert started.status_code == 202, started.json
    assert started.headers["Location"] == "/api/insights/rebuild"
    body = started.json
    assert body["id"].startswith("rb_") and launched == [body["id"]]
    assert body == {"id": body["id"], "status": "running", "startedAt": "2026-03-20T17:17:43.760Z",
                    "updatedAt": "2026-03-20T17:17:43.760Z", "by": "bootstrap admin", "finishedAt": None,
                    "pipelinesRebuilt": 0, "runsRead": 0, "itemsWritten": 0, "failure": None}
    assert client.get("/api/insights/rebuild").json == body
    clock.advance(3)
    done = insights.run_rebuild(ctx, body["id"])
    assert done is not None and done.status == rebuilds.SUCCEEDED
    result = client.get("/api/insights/rebuild").json
    assert (result["status"], result["pipelinesRebuilt"], result["runsRead"]) == ("succeeded", 2, 2)
    assert result["itemsWritten"] > 0 and result["finishedAt"] == "2026-03-20T17:17:46.760Z"
    assert result["startedAt"] == body["startedAt"] and result["failure"] is None
    # the same id again (a retried invoke) does nothing: the rebuild is no longer running
    assert insights.run_rebuild(ctx, body["id"]) is None
    assert client.get("/api/insights/rebuild").json == result


def test_a_second_rebuild_while_one_runs_is_409_until_the_first_is_stale(client, clock, ctx, launched):
    first = client.post("/api/insights/rebuild").json
    refused = client.post("/api/insights/rebuild")
    assert refused.status_code == 409 and refused.json["error"]["code"] == "rebuild_running"
    assert "started 2026-03-20T17:17:13.760Z" in refused.json["error"]["message"]
    assert launched == [first["id"]]
    clock.advance(int(rebuilds.STALE_AFTER.total_seconds()) - 1)  # no progress, not yet stale
    assert client.post("/api/insights/rebuild").status_code == 409
    clock.advance(1)  # twenty minutes without progress: taken for dead
    second = client.post("/api/insights/rebuild")
    assert second.status_code == 202 and second.json["id"] != first["id"]
    # the first wakes up: it is not the running rebuild any more, it does nothing
    assert insights.run_rebuild(ctx, first["id"]) is None
    assert client.get("/api/insights/rebuild").json["id"] == second.json["id"]


def test_a_rebuild_taken_over_midway_stops_at_its_next_progress(client, clock, ctx, launched, monkeypatch):
    history(client, clock)
    first = client.post("/api/insights/rebuild").json
    taken = []
    original = insights.rebuild

    def stalling(ctx, progress):
        def stall_then_report(report):
            if not taken:  # its first pipeline took twenty minutes: another rebuild took over
                clock.advance(int(rebuilds.STALE_AFTER.total_seconds()))
                taken.append(client.post("/api/insights/rebuild").json["id"])
            progress(report)

        return original(ctx, stall_then_report)

    monkeypatch.setattr(insights, "rebuild", stalling)
    assert insights.run_rebuild(ctx, first["id"]) is None  # stopped: taken over
    record = client.get("/api/insights/rebuild").json
    assert (record["id"], record["status"]) == (taken[0], "running")  # the new one's, untouched


def test_a_failed_rebuild_is_recorded_with_its_error_and_raised(client, clock, ctx, launched, monkeypatch):
    record = client.post("/api/insights/rebuild").json

    def broken(ctx, progress=None):
        raise RuntimeError("the table is gone")

    monkeypatch.setattr(insights, "rebuild", broken)
    with pytest.raises(RuntimeError):
        insights.run_rebuild(ctx, record["id"])
    failed = client.get("/api/insights/rebuild").json
    assert (failed["status"], failed["failure"]) == ("failed", "RuntimeError: the table is gone")
    assert failed["finishedAt"] is not None
    assert client.post("/api/insights/rebuild").status_code == 202  # a failed one blocks nothing


def test_a_rebuild_that_cannot_be_started_is_failed_at_once(client, monkeypatch):
    def unreachable(rebuild_id):
        raise ConnectionError("lambda endpoint unreachable")

    monkeypatch.setattr(wiring, "rebuild_launcher", lambda ctx: unreachable)
    answer = client.post("/api/insights/rebuild")
    assert answer.status_code == 202
    assert (answer.json["status"], answer.json["failure"]) == (
        "failed", "ConnectionError: lambda endpoint unreachable")
    assert client.post("/api/insights/rebuild").status_code == 202  # nothing left running


def test_without_a_function_nor_make_run_nothing_can_run_it(client):
    answer = client.post("/api/insights/rebuild").json
    assert answer["status"] == "failed" and "no rebuild function is configured" in answer["failure"]


def test_under_make_run_the_rebuild_runs_in_a_thread(client, clock, ctx, monkeypatch):
    from dataclasses import replace

    history(client, clock)
    assert ctx.settings.insights_rebuild_function is None
    monkeypatch.setattr(ctx, "settings", replace(ctx.settings, local_ticker=True))  # as `make run` sets it
    record = client.post("/api/insights/rebuild").json
    deadline = time.monotonic() + 20
    while client.get("/api/insights/rebuild").json["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    result = client.get("/api/insights/rebuild").json
    assert (result["id"], result["status"], result["runsRead"]) == (record["id"], "succeeded", 2)


def test_on_aws_the_rebuild_is_an_asynchronous_invoke_of_its_function(ctx, monkeypatch):
    from dataclasses import replace

    import botocore.session

    lam = botocore.session.get_session().create_client("lambda", region_name="us-east-1")
    with Stubber(lam) as stub:
        stub.add_response("invoke", {"StatusCode": 202},
                          {"FunctionName": "stagetrack-insights-rebuild", "InvocationType": "Event",
                           "Payload": json.dumps({"rebuild": "rb_1"}).encode()})
        lambdas.invoke_async("stagetrack-insights-rebuild", {"rebuild": "rb_1"}, client=lam)
        stub.add_response("invoke", {"StatusCode": 500})
        with pytest.raises(RuntimeError, match="did not accept"):
            lambdas.invoke_async("stagetrack-insights-rebuild", {"rebuild": "rb_2"}, client=lam)
    settings = replace(ctx.settings, insights_rebuild_function="stagetrack-insights-rebuild")
    deployed = replace(ctx, settings=settings)
    sent = []
    monkeypatch.setattr(lambdas, "invoke_async",
                        lambda function, payload, region=None, client=None: sent.append((function, payload)))
    wiring.rebuild_launcher(deployed)("rb_3")
    assert sent == [("stagetrack-insights-rebuild", {"rebuild": "rb_3"})]


def test_the_rebuild_function_replays_within_its_policy(client, clock, ctx, launched, monkeypatch):
    from app import app

    history(client, clock)  # no stream consumer here: only the rebuild makes the aggregates
    assert client.get(f"/api/insights?{RANGE}").json["runs"]["total"] == 0
    record = client.post("/api/insights/rebuild").json
    with Client(app) as lam, iam_actions(monkeypatch) as actions:
        answer = lam.lambda_.invoke("insights_rebuild", {"rebuild": record["id"]}).payload
    assert answer == {"rebuild": record["id"], "status": "succeeded"}
    reached = assert_items_allowed(actions, "insights_rebuild")
    from infra.part_insights import REBUILD_ACTIONS

    assert set(actions) == set(REBUILD_ACTIONS)  # it is allowed exactly what it uses
    assert reached == {"RUN#", "INSIGHTS", "INSIGHTS#", "INSMARK#"}
    rebuilt = client.get(f"/api/insights?{RANGE}").json
    assert (rebuilt["runs"]["total"], rebuilt["dora"]["deploymentFrequency"]) == (2, 1.0)
    with Client(app) as lam:
        with pytest.raises(ValueError, match="names no rebuild"):
            lam.lambda_.invoke("insights_rebuild", {})


def issue(client, name, scopes, pipelines=None) -> str:
    body = {"name": name, "scopes": scopes, **({"pipelines": pipelines} if pipelines else {})}
    response = client.post("/api/tokens", body)
    assert response.status_code == 201, response.json
    return response.json["token"]


def test_only_an_unlimited_admin_may_rebuild_or_read_the_rebuild(client, launched):
    tokens = {"read": issue(client, "reader", ["read"]), "operate": issue(client, "operator", ["operate"]),
              "limited admin": issue(client, "web-admin", ["admin"], ["web"])}
    for name, token in tokens.items():
        for method in ("POST", "GET"):
            answer = client.request(method, "/api/insights/rebuild", auth=token)
            assert answer.status_code == 403, (name, method, answer.json)
            assert answer.json["error"]["code"] == "forbidden"
    assert client.post("/api/insights/rebuild", auth=None).status_code == 401
    assert launched == []  # nothing was started
    assert client.get("/api/insights/rebuild").status_code == 404


def test_it_takes_no_body_but_the_empty_object(client, launched):
    unknown = client.post("/api/insights/rebuild", {"pipeline": "web"})
    assert unknown.status_code == 422 and launched == []
    assert client.post("/api/insights/rebuild", {}).status_code == 202 and len(launched) == 1
