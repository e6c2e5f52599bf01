"""Force-cancel through the native API (moto): ``POST /api/runs/{id}/cancel`` with
``{"force": true}`` -- exact bodies, its cost, bad bodies, a pipeline-limited token."""
from __future__ import annotations

import json

import pytest

STAGES = ["BUILD", "UNIT_TEST", {"type": "OTHER", "name": "cleanup", "always": True}]


def create(client, **body):
    body.setdefault("pipeline", "web")
    body.setdefault("stages", STAGES)
    response = client.post("/api/runs", body)
    assert response.status_code == 201, response.json
    return response.json


def patch(client, stage_id, status):
    response = client.patch(f"/api/stages/{stage_id}", {"status": status})
    assert response.status_code == 200, response.json
    return response.json


def statuses(run):
    return [s["status"] for s in run["stages"]]


def test_force_cancel_skips_the_finally_stage_and_the_run_is_cancelled_at_once(client, clock):
    run = create(client, autoAdvance=True)
    patch(client, run["stages"][0]["id"], "IN_PROGRESS")
    clock.advance(2)
    response = client.post(f"/api/runs/{run['id']}/cancel", {"reason": "runner gone", "force": True})
    assert response.status_code == 200, response.json
    body = response.json
    assert (body["status"], statuses(body)) == ("CANCELLED", ["CANCELLED", "SKIPPED", "SKIPPED"])
    assert body["cancellation"] == {"by": "bootstrap admin", "at": "2026-03-20T17:17:15.760Z",
                                    "reason": "runner gone", "stageId": None, "force": True}
    assert body["stopping"] == {"mode": "CANCEL", "by": "bootstrap admin", "at": "2026-03-20T17:17:15.760Z",
                                "reason": "runner gone", "force": True}
    assert body["endedAt"] == "2026-03-20T17:17:15.760Z" and body["duration"] == 2
    assert client.get(f"/api/runs/{run['id']}").json == body
    listed = client.get("/api/runs?pipeline=web&status=CANCELLED").json["items"]
    assert [r["id"] for r in listed] == [run["id"]]


def test_a_plain_cancel_runs_the_finally_stage_and_a_force_cancel_then_ends_it(client):
    run = create(client, autoAdvance=True)
    patch(client, run["stages"][0]["id"], "IN_PROGRESS")
    plain = client.post(f"/api/runs/{run['id']}/cancel").json
    assert (plain["status"], statuses(plain)) == ("CANCELLING", ["CANCELLED", "SKIPPED", "IN_PROGRESS"])
    assert "force" not in plain["cancellation"]
    forced = client.post(f"/api/runs/{run['id']}/cancel", {"force": True}).json
    assert (forced["status"], statuses(forced)) == ("CANCELLED", ["CANCELLED", "SKIPPED", "CANCELLED"])
    assert forced["cancellation"]["force"] is True
    assert client.get("/api/runs?pipeline=web&status=CANCELLING").json["items"] == []


def test_force_false_is_a_plain_cancel(client):
    run = create(client)
    patch(client, run["stages"][0]["id"], "IN_PROGRESS")
    body = client.post(f"/api/runs/{run['id']}/cancel", {"force": False}).json
    assert (body["status"], statuses(body)) == ("CANCELLED", ["CANCELLED", "SKIPPED", "IDLE"])
    assert set(body["cancellation"]) == {"by", "at", "reason", "stageId"}


def test_force_cancel_is_one_query_and_one_transaction_and_again_writes_nothing(client, ddb_calls):
    run = create(client)
    patch(client, run["stages"][0]["id"], "IN_PROGRESS")
    ddb_calls.clear()
    first = client.post(f"/api/runs/{run['id']}/cancel", {"force": True})
    assert first.status_code == 200 and dict(ddb_calls) == {"Query": 1, "TransactWriteItems": 1}
    ddb_calls.clear()
    again = client.post(f"/api/runs/{run['id']}/cancel", {"force": True, "reason": "again"})
    assert again.status_code == 200 and again.json == first.json
    assert dict(ddb_calls) == {"Query": 1}


@pytest.mark.parametrize("raw,status,code", [
    ('{"force": "true"}', 422, "validation_failed"),
    ('{"force": 1}', 422, "validation_failed"),
    ('{"force": null}', 422, "validation_failed"),
    ('{"force": true, "grace": 1}', 422, "validation_failed"),
])
def test_bad_force_bodies_change_nothing(client, raw, status, code):
    run = create(client)
    patch(client, run["stages"][0]["id"], "IN_PROGRESS")
    before = client.get(f"/api/runs/{run['id']}").json
    response = client.post(f"/api/runs/{run['id']}/cancel", raw=raw)
    assert response.status_code == status, response.json
    assert response.json["error"]["code"] == code
    assert any(d["field"] in ("force", "grace") for d in response.json["error"]["details"])
    assert client.get(f"/api/runs/{run['id']}").json == before


def test_a_stage_cancel_has_no_force(client):
    run = create(client)
    stage = run["stages"][0]["id"]
    patch(client, stage, "IN_PROGRESS")
    response = client.post(f"/api/stages/{stage}/cancel", raw='{"force": true}')
    assert response.status_code == 422 and response.json["error"]["details"][0]["field"] == "force"
    assert client.get(f"/api/stages/{stage}").json["status"] == "IN_PROGRESS"


def test_a_token_limited_to_another_pipeline_cannot_force_cancel(client):
    run = create(client)
    patch(client, run["stages"][0]["id"], "IN_PROGRESS")
    other = client.post("/api/tokens", {"name": "other-ci", "scopes": ["operate"], "pipelines": ["other"]})
    assert other.status_code == 201, other.json
    before = client.get(f"/api/runs/{run['id']}").json
    response = client.post(f"/api/runs/{run['id']}/cancel", {"force": True}, auth=other.json["token"])
    assert response.status_code == 404 and response.json["error"]["code"] == "not_found"
    assert "Traceback" not in json.dumps(response.json)
    assert client.get(f"/api/runs/{run['id']}").json == before
    reader = client.post("/api/tokens", {"name": "reader", "scopes": ["read"]}).json["token"]
    assert client.post(f"/api/runs/{run['id']}/cancel", {"force": True}, auth=reader).status_code == 403
