"""Ids and names with a trailing newline are unknown or invalid, never an alias (issue 10, item 4).

Python's ``re`` lets ``$`` match before a final newline, so ``re.match(r"^x$", "x\\n")`` matches;
every id and name check must use ``fullmatch``. pydantic's Rust engine treats ``$`` as the end of
the text; both paths are tested.
"""
from __future__ import annotations

import pytest

from tests.integration.test_api_runs import assert_error


@pytest.fixture
def web_run(client):
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    client.post("/api/runs", {"pipeline": "A", "stages": ["BUILD"]})
    return "web:1:1"


@pytest.mark.parametrize("suffix", ["%0A", "%0D%0A", "%0a"])
def test_stage_id_with_newline_is_404_on_every_stage_route(client, web_run, suffix):
    for method, path, body in [
        ("GET", f"/api/stages/A:1:1{suffix}", None),
        ("PATCH", f"/api/stages/A:1:1{suffix}", {"status": "IN_PROGRESS"}),
        ("DELETE", f"/api/stages/A:1:1{suffix}", None),
        ("POST", f"/api/stages/A:1:1{suffix}/cancel", None),
        ("GET", "/api/stages/A%0A:1:1", None),
        ("GET", f"/api/runs/A:1{suffix}", None),
        ("DELETE", f"/api/runs/A:1{suffix}", None),
        ("POST", f"/api/runs/A:1{suffix}/cancel", None),
        ("GET", f"/api/stages?runId=A:1{suffix}", None),
    ]:
        response = client.request(method, path, body)
        assert_error(response, 404, "not_found")
    # nothing changed
    stage = client.get("/api/stages/A:1:1").json
    assert stage["status"] == "IDLE"
    assert client.get("/api/runs/A:1").status_code == 200


def test_pipeline_with_newline_in_query_and_body_is_refused(client, web_run):
    assert_error(client.get("/api/runs?pipeline=web%0A"), 400, "bad_request")
    response = client.post("/api/runs", {"pipeline": "web\n"})
    assert response.status_code in (400, 422)
    assert response.json["error"]["code"] in ("bad_request", "validation_failed")
    assert client.get("/api/runs/web:2").status_code == 404


def test_pipeline_with_newline_in_pipeline_routes_is_unknown(client, web_run):
    for method, path in [("GET", "/api/pipelines/web%0A/status"),
                         ("POST", "/api/pipelines/web%0A/pause"),
                         ("POST", "/api/pipelines/web%0A/runs/1/stop")]:
        response = client.request(method, path)
        assert response.status_code in (400, 404), (path, response.status_code, response.json)
    assert client.get("/api/pipelines/web/status").json.get("paused") in (False, None)


def test_dialect_paths_with_newline_are_unknown(client, web_run):
    client.post("/api/runs/web:1/cancel", {})
    for path in ["/go/api/pipelines/web%0A/history", "/go/api/pipelines/web/history/0%0A",
                 "/go/api/stages/web%0A/BUILD/history",
                 "/go/api/stages/web/BUILD/instance/1%0A/1", "/go/api/stages/web/BUILD/instance/1/1%0A",
                 "/go/api/pipelines/web%0A/instance/1", "/go/api/pipelines/web/instance/1%0A",
                 "/go/api/pipelines/web%0A/status"]:
        response = client.get(path)
        assert response.status_code in (400, 404), (path, response.status_code, response.body)
    response = client.request("POST", "/go/api/stages/web%0A/BUILD/cancel", headers={"Confirm": "true"})
    assert response.status_code == 404, response.body
