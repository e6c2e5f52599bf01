"""Every answer in the documented error shape: unknown paths (404), wrong methods (405 + Allow),
body media types a route does not read (415), HEAD on GET routes and OPTIONS.

In process (chalice.test.Client, with tools/local_gateway installed by conftest) for every route,
then over HTTP against `chalice local` started as `make run` starts it. The deployed side (the
gateway responses in the packaged template) is in tests/integration/test_infra.py.
"""
from __future__ import annotations

import json
import re

import pytest
import requests

from app import app
from chalicelib.api.routing import ALL_METHODS, declared_routes
from chalicelib.domain import auth
from tests.fixtures.dialects import error_message

DECLARED = declared_routes(app)
PATHS = sorted(app.routes)
GET_ROUTES = [path for path, method in DECLARED if method == "GET"]
BODY_ROUTES = [(path, method) for path, method in DECLARED if method in ("POST", "PUT", "PATCH")]
SAMPLE = {"pipeline": "web", "pipeline_name": "web", "run_id": "web:1", "stage_id": "web:1:1",
          "counter": "1", "pipeline_counter": "1", "stage_counter": "1", "stage": "BUILD", "offset": "0"}
TOKEN = "st_" + "s3cr3t" * 7  # a credential-looking value that must never come back


def fill(path: str) -> str:
    return re.sub(r"{(\w+)}", lambda m: SAMPLE.get(m.group(1), "x"), path)


def allow_of(path: str) -> str:
    """The Allow header a path must send: what it declares, HEAD with GET, and OPTIONS."""
    served = declared_methods(path) | ({"HEAD"} if "GET" in declared_methods(path) else set()) | {"OPTIONS"}
    return ", ".join(m for m in ALL_METHODS if m in served)


def spec(path: str, method: str):
    return app.routes[path][method].view_function.route_spec


def declared_methods(path: str) -> set[str]:
    return {m for p, m in DECLARED if p == path}


def body_of(response) -> str:
    return response.body.decode() if isinstance(response.body, bytes) else str(response.body or "")


@pytest.fixture
def seeded(client):
    assert (
        client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD", "DEPLOY_PROD"]}).status_code == 201
    )
    return client


# ---- 405 with Allow, OPTIONS ----------------------------------------------------------------------

def test_every_path_answers_every_method():
    """API Gateway answers a method a path lacks with MISSING_AUTHENTICATION_TOKEN, Chalice with
    its own {"Code": ...} 405: every path has a view for every method instead."""
    for path in PATHS:
        assert set(app.routes[path]) == set(ALL_METHODS), path


@pytest.mark.parametrize("path", PATHS)
def test_a_method_the_path_does_not_serve_is_405_with_allow(client, ddb_calls, path):
    allow = allow_of(path)
    dialect = next(spec(path, m).dialect for m in declared_methods(path))
    for method in set(ALL_METHODS) - set(allow.split(", ")):
        ddb_calls.clear()
        response = client.request(
            method,
            fill(path),
            raw=b'{"pipeline": "web"}' if method != "HEAD" else None,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status_code == 405, (method, path, body_of(response))
        assert response.headers["Allow"] == allow
        assert "X-Request-Id" in response.headers
        assert dict(ddb_calls) == {}  # no token lookup, nothing read
        if method == "HEAD":
            assert body_of(response) == ""
            continue
        assert TOKEN not in body_of(response)
        if dialect is None:
            assert response.json == {"error": {"code": "method_not_allowed", "message":
                                               f"{method} is not allowed on {path}; allowed: {allow}"}}
        else:  # a dialect path answers in its dialect's shape
            assert "is not allowed" in error_message(response)


@pytest.mark.parametrize("path", ["/api/runs", "/api/stages/{stage_id}", "/v3/jobs/stop", "/health"])
def test_options_is_204_with_allow_and_no_cors(client, path):
    response = client.request("OPTIONS", fill(path), auth=None)
    assert response.status_code == 204 and body_of(response) == ""
    assert response.headers["Allow"] == allow_of(path)
    assert not any(name.lower().startswith("access-control-") for name in response.headers)


# ---- HEAD ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", GET_ROUTES)
def test_head_answers_like_get_without_a_body(seeded, path):
    url = fill(path) + (
        "?runId=web:1" if path == "/api/stages" else "?pipeline=web" if path == "/api/runs" else ""
    )
    get = seeded.get(url)
    head = seeded.request("HEAD", url)
    assert head.status_code == get.status_code, (path, body_of(get))
    assert body_of(head) == ""
    assert get.status_code >= 400 or body_of(get)  # there was a body to leave out
    volatile = {"X-Request-Id", "X-Rate-Limit-Remaining"}
    assert {k: v for k, v in head.headers.items() if k not in volatile} == \
        {k: v for k, v in get.headers.items() if k not in volatile}


def test_head_needs_the_same_credentials_as_get(client):
    response = client.request("HEAD", "/api/runs?pipeline=web", auth=None)
    assert response.status_code == 401 and body_of(response) == ""
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_head_is_not_an_operation_of_its_own_in_the_document(client):
    paths = client.get("/openapi.json", auth=None).json["paths"]
    assert not any(set(ops) - {m.lower() for m in declared_methods(p)} for p, ops in paths.items())


# ---- 415 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("path, method", BODY_ROUTES, ids=[f"{m} {p}" for p, m in BODY_ROUTES])
def test_a_body_in_a_type_the_route_does_not_read_is_415_and_changes_nothing(seeded, ddb_calls, path, method):
    before = seeded.get("/api/runs?pipeline=web").json
    ddb_calls.clear()
    response = seeded.request(method, fill(path) + "?source=x", raw=b"<run><pipeline>web</pipeline></run>",
                              headers={"Content-Type": "application/xml", "Idempotency-Key": "k-415",
                                       "Authorization": f"Bearer {seeded.admin_token}"})
    assert response.status_code == 415, body_of(response)
    assert set(ddb_calls) <= {"UpdateItem"}  # at most the token lookup: nothing else read or written
    if spec(path, method).dialect is None:
        assert response.json["error"]["code"] == "unsupported_media_type"
        assert "'application/xml'" in response.json["error"]["message"]
        assert "application/json" in response.json["error"]["message"]
    else:
        assert error_message(response)
    assert seeded.get("/api/runs?pipeline=web").json == before


def test_credentials_are_checked_before_the_media_type(client):
    response = client.request("POST", "/api/runs", raw=b"<x/>", headers={"Content-Type": "application/xml"},
                              auth=None)
    assert response.status_code == 401


def test_an_odd_content_type_is_not_echoed(client):
    response = client.request("POST", "/api/runs", raw=b"x",
                              headers={"Content-Type": f"text/{'<script>' * 3}; a=b"})
    assert response.status_code == 415
    assert "<script>" not in body_of(response)


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON", ""])
def test_json_bodies_are_accepted_with_parameters_any_case_or_no_content_type(client, content_type):
    response = client.request("POST", "/api/runs", raw=json.dumps({"pipeline": "web"}),
                              headers={"Content-Type": content_type})
    assert response.status_code == 201, body_of(response)


def test_a_request_without_a_body_has_no_media_type_to_refuse(client):
    response = client.get("/api/runs?pipeline=web", headers={"Content-Type": "application/xml"})
    assert response.status_code == 200


def test_a_listed_type_a_json_route_cannot_read_is_415(client):
    response = client.request(
        "POST", "/api/runs", raw=b"pipeline=web", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415 and response.json["error"]["code"] == "unsupported_media_type"


# ---- unknown paths --------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
@pytest.mark.parametrize("path", ["/nope", "/api/runs/web:1/nope", "/api", "/go/api/stages/a/b/c/d/e/f"])
def test_an_unknown_path_is_404_and_echoes_no_credential(client, method, path):
    response = client.request(method, path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 404
    assert response.json == {"error": {"code": "not_found", "message": "no such resource: see /openapi.json"}}
    assert TOKEN not in body_of(response) and TOKEN not in json.dumps(dict(response.headers))


def test_public_routes_stay_public():
    """The fallbacks take no token (a path's methods are public in /openapi.json); the routes
    themselves keep their scopes."""
    for path in PATHS:
        for method, entry in app.routes[path].items():
            route_spec = entry.view_function.route_spec
            if method not in route_spec.methods and not (method == "HEAD" and "GET" in route_spec.methods):
                assert route_spec.scope == auth.PUBLIC and route_spec.acts_on is None


# ---- over HTTP, as `make run` serves -------------------------------------------------------------

@pytest.mark.ddb_local
def test_over_http_unknown_paths_wrong_methods_media_types_and_head(chalice_local):
    base, admin_token, _log = chalice_local
    admin = {"Authorization": f"Bearer {admin_token}"}
    with requests.Session() as http:  # one kept-alive connection: a HEAD must not leave bytes behind
        created = http.post(f"{base}/api/runs", json={"pipeline": "http", "stages": ["BUILD"]}, headers=admin)
        assert created.status_code == 201, created.text
        run_id, stage_id = created.json()["id"], created.json()["stages"][0]["id"]

        for method in ("GET", "POST", "HEAD"):
            unknown = http.request(
                method, f"{base}/api/nope/deeper", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert unknown.status_code == 404, unknown.text
            assert TOKEN not in unknown.text and TOKEN not in json.dumps(dict(unknown.headers))
            if method != "HEAD":
                assert unknown.headers["Content-Type"] == "application/json"
                assert unknown.json() == {"error": {"code": "not_found",
                                                    "message": "no such resource: see /openapi.json"}}

        wrong = http.put(f"{base}/api/runs", json={"pipeline": "http"}, headers=admin)
        assert wrong.status_code == 405
        assert wrong.headers["Allow"] == "GET, HEAD, POST, OPTIONS"
        assert wrong.json()["error"]["code"] == "method_not_allowed"

        xml = http.post(
            f"{base}/api/runs", data=b"<run/>", headers={**admin, "Content-Type": "application/xml"}
        )
        assert xml.status_code == 415 and xml.json()["error"]["code"] == "unsupported_media_type"

        options = http.options(f"{base}/api/runs/{run_id}")
        assert options.status_code == 204 and options.headers["Allow"] == "GET, HEAD, DELETE, OPTIONS"

        for url in (f"/api/runs/{run_id}", f"/api/stages/{stage_id}", f"/api/stages?runId={run_id}",
                    "/health", "/openapi.json", "/go/api/version"):
            get = http.get(base + url, headers=admin)
            head = http.head(base + url, headers=admin)
            assert (head.status_code, get.status_code) == (200, 200), url
            assert head.content == b"" and get.content
            assert head.headers["Content-Type"] == get.headers["Content-Type"]
            assert head.headers["Content-Length"] == "0"  # see README: HEAD does not compute GET's body
        # the connection still works after all those HEADs
        assert http.get(f"{base}/api/runs/{run_id}", headers=admin).json()["id"] == run_id


def test_the_document_lists_415_where_a_body_is_read(client):
    paths = client.get("/openapi.json", auth=None).json["paths"]
    for path, method in BODY_ROUTES:
        if spec(path, method).dialect is None:  # dialects document their own product's statuses
            assert "415" in paths[path][method.lower()]["responses"], (method, path)
