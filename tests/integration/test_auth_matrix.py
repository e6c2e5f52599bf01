"""Every endpoint × every kind of caller, with the status each must get.

The endpoints are read from the app's route table when the tests are collected, so a route
added by anyone is in the matrix without editing this file. Callers: no token, a bad token,
read, operate limited to another pipeline, operate, admin. Each route's requests concern a
pipeline of its own, where a run (<pipeline>:1 with two stages) exists.
"""
from __future__ import annotations

import json

import pytest

from app import app
from chalicelib.api import gocd
from chalicelib.api.openapi import build_document
from chalicelib.api.routing import declared_routes
from chalicelib.domain import auth
from tests.fixtures.dialects import error_message

IDENTITIES = ["no token", "bad token", "read", "operate on another pipeline", "operate", "admin"]
ROUTES = declared_routes(app)  # without each GET's HEAD and the 405 fallbacks (tests/e2e/test_http_errors.py)
ALL_ROUTES = sorted((path, method) for path, methods in app.routes.items() for method in methods)
SAMPLE = {"pipeline": "web", "pipeline_name": "web", "run_id": "web:1", "runId": "web:1",
          "stage_id": "web:1:1", "stageId": "web:1:1", "counter": "1", "token_id": "tok_0000000000000000"}
# Requests that must succeed for every caller allowed to make them (the seeded data exists).
SUCCEEDS = {("GET", "/api/runs"), ("GET", "/api/runs/{run_id}"), ("GET", "/api/stages"),
            ("GET", "/api/stages/{stage_id}"), ("GET", "/api/tokens"), ("GET", "/openapi.json"),
            ("GET", "/health"), ("POST", "/api/runs"), ("GET", "/api/pipelines/{pipeline}/status")}
DOCUMENT = build_document(app)


def spec_of(path, method):
    return app.routes[path][method].view_function.route_spec


def test_every_route_goes_through_the_route_helper():
    """A route registered any other way would skip authentication: refuse it."""
    assert ROUTES, "no routes found"
    missing = [
        (m, p) for p, m in ALL_ROUTES if getattr(app.routes[p][m].view_function, "route_spec", None) is None
    ]
    assert missing == []


def sample_request(path, method, pipeline="web"):
    """Path and query filled with values about ``pipeline``; a body naming it where the
    documented body has a pipeline field."""
    operation = DOCUMENT["paths"][path][method.lower()]
    url = path
    for name in [p["name"] for p in operation["parameters"] if p["in"] == "path"]:
        url = url.replace("{" + name + "}", SAMPLE.get(name, "x").replace("web", pipeline))
    query = [(p["name"], SAMPLE.get(p["name"], "x").replace("web", pipeline)) for p in operation["parameters"]
             if p["in"] == "query" and p["required"]]
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query)
    body = None
    schema = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    ref = schema.get("$ref", "").rsplit("/", 1)[-1]
    if "pipeline" in DOCUMENT["components"]["schemas"].get(ref, {}).get("properties", {}):
        body = {"pipeline": pipeline}
    names = {n for n in SAMPLE if "{" + n + "}" in path} | {k for k, _ in query} | set(body or {})
    return url, body, _names_its_pipeline(spec_of(path, method), names)


def _names_its_pipeline(spec, names) -> bool:
    """True if the sample fills every place the route declares as naming its pipeline."""
    declared = spec.acts_on
    if declared is None or declared.rule != auth.NAMED:
        return False
    return {name for name, _kind in declared.path + declared.query + declared.body} <= names


def expected_for(identity, path, method, names_pipeline):
    """"ok" (allowed through auth) or the status auth must answer with."""
    spec = spec_of(path, method)
    if (method, path) == ("GET", "/api/session"):
        return 401  # public, but it answers only the dashboard's session cookie: no caller here has one
    if spec.scope == auth.PUBLIC:
        return "ok"
    if identity in ("no token", "bad token"):
        return 401
    level = {"read": "read", "operate on another pipeline": "operate", "operate": "operate",
             "admin": "admin"}[identity]
    if auth.LEVELS[level] < auth.LEVELS[spec.scope]:
        if spec.dialect == "gocd":  # GoCD 17.1 documents 401; its current-only API answers 403
            return 403 if path in gocd.CURRENT_ONLY else 401
        return 403
    if identity == "operate on another pipeline" and spec.acts_on.rule != auth.OWN_RECORDS:
        if not names_pipeline and spec.acts_on.optional:
            return "ok"  # a search across the pipelines it may see (tests/integration/test_browse.py)
        return 404 if names_pipeline else 403
    return "ok"


@pytest.fixture(scope="module")
def world():
    """One moto table, app client and set of callers for the whole matrix (issuing tokens is
    the slow part); each test then gets a pipeline of its own, so tests stay independent."""
    from chalice.test import Client
    from moto import mock_aws

    from chalicelib import wiring
    from chalicelib.settings import Settings
    from chalicelib.store.schema import ensure_tables
    from tests.fixtures.api import ApiClient
    from tests.fixtures.clock import FakeClock

    settings = Settings(table_name="stagetrack-matrix", region="us-east-1")
    with mock_aws():
        ensure_tables(settings)
        wiring.override(wiring.dynamo_context(settings, FakeClock("2026-03-20T17:17:13.760Z")))
        try:
            with Client(app) as http:
                client = ApiClient(http, admin_token=settings.admin_token)
                yield client, _issue_callers(client)
        finally:
            wiring.override(None)


def _issue_callers(client):
    def issue(scopes, pipelines=None):
        body = {"name": f"matrix-{scopes[0]}", "scopes": scopes}
        if pipelines:
            body["pipelines"] = pipelines
        response = client.post("/api/tokens", body)
        assert response.status_code == 201, response.json
        return {"Authorization": f"Bearer {response.json['token']}"}

    return {
        "no token": None,
        "bad token": {"Authorization": "Bearer st_" + "x" * 43},
        "read": issue(["read"]),
        "operate on another pipeline": issue(["operate"], ["other"]),
        "operate": issue(["operate"]),
        "admin": issue(["admin"]),
    }


_pipelines = iter(range(1, 10_000))


@pytest.mark.parametrize("path, method", ROUTES, ids=[f"{m} {p}" for p, m in ROUTES])
def test_matrix(world, ddb_calls, path, method):
    client, callers = world
    pipeline = f"web{next(_pipelines)}"  # the seeded run: <pipeline>:1 with two stages
    assert (
        client.post("/api/runs", {"pipeline": pipeline, "stages": ["BUILD", "DEPLOY_PROD"]}).status_code
        == 201
    )
    url, body, names_pipeline = sample_request(path, method, pipeline)
    seen = {}
    # The least privileged first, so mutating requests by allowed callers come last.
    for identity in IDENTITIES:
        headers = callers[identity]
        ddb_calls.clear()
        response = client.request(method, url, body, headers=headers, auth=None)
        expected = expected_for(identity, path, method, names_pipeline)
        seen[identity] = response.status_code
        text = response.body.decode() if isinstance(response.body, bytes) else str(response.body)
        assert response.status_code < 500, (identity, response.status_code, text)
        assert "X-Request-Id" in response.headers
        if expected == "ok":
            assert response.status_code not in (401, 403), (identity, text)
            if (method, path) in SUCCEEDS:
                assert 200 <= response.status_code < 300, (identity, response.status_code, text)
        else:
            assert response.status_code == expected, (identity, response.status_code, text)
            if spec_of(path, method).dialect:  # a dialect endpoint: its own documented error shape
                assert error_message(response), (identity, text)
            else:
                assert response.json["error"]["code"] in ("unauthorized", "forbidden", "not_found")
        if response.status_code == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        if expected == 404:
            # Decided before anything about the other pipeline was read: only the token lookup.
            assert dict(ddb_calls) == {"UpdateItem": 1}
        public = spec_of(path, method).scope == auth.PUBLIC
        if identity in ("read", "operate on another pipeline", "operate", "admin") and not public:
            assert int(response.headers["X-Rate-Limit-Limit"]) == 600
            assert 0 < int(response.headers["X-Rate-Limit-Remaining"]) < 600
        if identity in ("no token", "bad token") and not public:
            assert "X-Rate-Limit-Limit" not in response.headers
            assert ddb_calls.get("Query", 0) == 0 and ddb_calls.get("TransactWriteItems", 0) == 0
    print(json.dumps({f"{method} {path}": seen}))


def test_matrix_covers_the_native_routes_with_known_answers():
    """The dynamic expectations agree with hand-written ones for routes we know."""
    cases = {
        ("GET", "/api/runs/{run_id}"): ("read", 404),
        ("DELETE", "/api/runs/{run_id}"): ("operate", 404),
        ("PATCH", "/api/stages/{stage_id}"): ("operate", 404),
        ("GET", "/api/stages"): ("read", 404),
        ("POST", "/api/runs"): ("operate", 404),
        ("GET", "/api/runs"): ("read", "ok"),  # pipeline is optional: ?pipeline=other is 404
        ("POST", "/api/tokens"): ("admin", 403),
        ("GET", "/api/tokens"): ("admin", 403),
        ("DELETE", "/api/tokens/{token_id}"): ("admin", 403),
        ("GET", "/openapi.json"): ("public", "ok"),
    }
    for (method, path), (scope, other_pipeline) in cases.items():
        assert spec_of(path, method).scope == scope
        _, _, names = sample_request(path, method)
        assert expected_for("operate on another pipeline", path, method, names) == other_pipeline
