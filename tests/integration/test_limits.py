"""Rate limits per token, and hostile input on every route: clear 4xx errors, never a 500."""
from __future__ import annotations

import json

import pytest

from app import app
from chalicelib.api.routing import declared_routes
from chalicelib.domain import auth
from chalicelib.settings import Settings
from tests.fixtures.dialects import error_message

LIMIT = 3
ROUTES = declared_routes(app)
BODY_METHODS = {"POST", "PUT", "PATCH"}


@pytest.fixture
def settings():
    """A small budget, so the limit is reached in a few requests."""
    return Settings(table_name="stagetrack-test", region="us-east-1", rate_limit_per_minute=LIMIT)


def issue(client, scopes=("operate",), pipelines=None):
    body = {"name": "limited", "scopes": list(scopes)}
    if pipelines:
        body["pipelines"] = pipelines
    response = client.post("/api/tokens", body)
    assert response.status_code == 201
    return response.json["token"]


# ---- rate limit ------------------------------------------------------------------------------

def test_requests_past_the_limit_get_429_until_the_next_minute(client, clock):
    clock.set("2026-03-20T17:17:40.000Z")  # 20 s left in this minute
    token = issue(client)
    remaining = []
    for _ in range(LIMIT):
        response = client.get("/api/runs?pipeline=web", auth=token)
        assert response.status_code == 200
        assert response.headers["X-Rate-Limit-Limit"] == str(LIMIT)
        remaining.append(int(response.headers["X-Rate-Limit-Remaining"]))
    assert remaining == [2, 1, 0]

    refused = client.post("/api/runs", {"pipeline": "web"}, auth=token)
    assert refused.status_code == 429
    assert refused.json["error"]["code"] == "rate_limited"
    assert refused.headers["Retry-After"] == "20"
    assert refused.headers["X-Rate-Limit-Remaining"] == "0"
    assert client.get("/api/runs?pipeline=web").json["items"] == []  # the refused POST did nothing

    clock.advance(20)
    again = client.get("/api/runs?pipeline=web", auth=token)
    assert again.status_code == 200 and again.headers["X-Rate-Limit-Remaining"] == str(LIMIT - 1)


def test_each_token_has_its_own_budget_and_the_bootstrap_admin_none(client):
    first, second = issue(client), issue(client)
    for _ in range(LIMIT + 1):
        client.get("/api/runs?pipeline=web", auth=first)
    assert client.get("/api/runs?pipeline=web", auth=first).status_code == 429
    assert client.get("/api/runs?pipeline=web", auth=second).status_code == 200
    for _ in range(LIMIT + 2):
        response = client.get("/api/runs?pipeline=web")
        assert response.status_code == 200 and "X-Rate-Limit-Limit" not in response.headers


def test_forbidden_requests_count_too(client):
    token = issue(client, scopes=["read"])
    statuses = [
        client.post("/api/runs", {"pipeline": "web"}, auth=token).status_code for _ in range(LIMIT + 1)
    ]
    assert statuses == [403] * LIMIT + [429]


def test_a_request_with_a_clock_behind_counts_in_the_newer_window(client, ctx, clock):
    """Lambda containers' clocks differ a little: a late one must not reset the counter."""
    token = issue(client)
    digest = auth.hash_token(token)
    window = auth.rate_window(clock.now())
    token_store = ctx.stores.tokens
    assert token_store.hit(digest, window + 1).hits == 1  # a container already in the next minute
    behind = token_store.hit(digest, window)
    assert (behind.window, behind.hits) == (window + 1, 2)


def test_two_requests_starting_a_window_at_once_both_count(client, ctx, clock, monkeypatch):
    token = issue(client)
    digest = auth.hash_token(token)
    window = auth.rate_window(clock.now()) + 1
    token_store = ctx.stores.tokens
    original = token_store._update
    raced = []

    def racing(key, expression, condition, names, values):
        if expression.startswith("SET") and not raced:
            raced.append(True)
            original(key, expression, condition, names, values)  # the other request wins
        return original(key, expression, condition, names, values)

    monkeypatch.setattr(token_store, "_update", racing)
    counted = token_store.hit(digest, window)
    assert (counted.window, counted.hits) == (window, 2)


# ---- input limits on every route -------------------------------------------------------------

def fill(path, value):
    out = path
    while "{" in out:
        start, end = out.index("{"), out.index("}")
        out = out[:start] + value + out[end + 1:]
    return out


def assert_clean_error(response, allowed):
    body = response.body.decode() if isinstance(response.body, bytes) else str(response.body)
    assert response.status_code in allowed, (response.status_code, body[:300])
    assert response.status_code < 500
    if response.status_code >= 400:  # the native error shape, or a dialect endpoint's own
        assert error_message(response) and "Traceback" not in body, body[:300]


WITH_PARAMS = [r for r in ROUTES if "{" in r[0]]
AUTHENTICATED = [r for r in ROUTES if app.routes[r[0]][r[1]].view_function.route_spec.scope != auth.PUBLIC]


@pytest.mark.parametrize("path, method", WITH_PARAMS, ids=[f"{m} {p}" for p, m in WITH_PARAMS])
def test_hostile_path_parameters(client, path, method):
    for value in ["x" * 3000, "%00", "..%2F..%2Fetc", "web:1:1:1:1", "web:0", "web:-1", "web:1e3",
                  "%F0%9F%92%A3", "%27%20OR%201%3D1", "web:99999999999999999999"]:
        response = client.request(method, fill(path, value), {} if method in BODY_METHODS else None)
        assert_clean_error(response, {200, 202, 400, 404, 409, 422})


def body_limit(path: str, method: str, settings) -> int:
    """The route's own limit (webhooks have a larger one) or the default setting."""
    own = app.routes[path][method].view_function.route_spec.max_body
    return own(settings) if callable(own) else own or settings.max_body_bytes


def test_only_webhooks_take_more_than_the_default_body_limit(settings):
    larger = {path for path, method in ROUTES if method in BODY_METHODS
              and body_limit(path, method, settings) > settings.max_body_bytes}
    assert larger == {"/api/webhooks/github", "/api/webhooks/gitlab", "/api/webhooks/cdevents"}
    smaller = {path for path, method in ROUTES if method in BODY_METHODS
               and body_limit(path, method, settings) < settings.max_body_bytes}
    assert smaller == {"/api/session"}  # a sign-in body holds one token: 4 KB is plenty
    assert body_limit("/api/webhooks/gitlab", "POST", settings) == 2 * 1024 * 1024


@pytest.mark.parametrize("path, method", [r for r in ROUTES if r[1] in BODY_METHODS],
                         ids=[f"{m} {p}" for p, m in ROUTES if m in BODY_METHODS])
def test_hostile_bodies(client, settings, path, method):
    url = fill(path, "web:1:1" if "stage" in path else "web:1" if "run_id" in path else "web")
    limit = body_limit(path, method, settings)
    cases = [
        (b"x" * (limit + 1), {413}),
        (json.dumps({"pipeline": "web", "pad": "x" * limit}).encode(), {413}),
        (b"[" * 20000 + b"]" * 20000, {400, 422}),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, {400, 422}),
        (b"{not json", {400}),
        (b"\xff\xfe\x00", {400}),
        (b"[]", {400, 422}),
        (b'"a string"', {400, 422}),
        (b"null", {400, 422}),
        (b'{"pipeline": "web", "timeoutSeconds": 1' + b"0" * 400 + b"}", {400, 404, 422}),
        (b'{"pipeline": "web", "unknown": 1}', {400, 404, 422}),
        (b'{"pipeline": "\\ud800"}', {400, 404, 422}),
    ]
    for raw, allowed in cases:
        response = client.request(method, url, raw=raw)
        # a route with a smaller limit than these bodies (sign-in: 4 KB) refuses them by size first
        assert_clean_error(response, {413} if len(raw) > limit else allowed)


@pytest.mark.parametrize("path, method", AUTHENTICATED, ids=[f"{m} {p}" for p, m in AUTHENTICATED])
def test_oversized_credentials_are_refused_without_a_lookup(client, ddb_calls, path, method):
    ddb_calls.clear()
    response = client.request(method, fill(path, "web"), headers={"Authorization": "Bearer " + "a" * 5000})
    assert response.status_code == 401 and dict(ddb_calls) == {}
    assert "a" * 100 not in response.body.decode()


@pytest.mark.parametrize("body, field", [
    ({"pipeline": "web", "stages": ["BUILD"] * 51}, "stages"),
    ({"pipeline": "web", "stages": [{"type": "BUILD", "name": f"s{i}"} for i in range(51)]}, "stages"),
    ({"pipeline": "web", "variables": {f"K{i}": "v" for i in range(101)}}, "variables"),
    ({"pipeline": "web", "variables": {"K": "v" * 4097}}, "variables.K"),
    ({"pipeline": "web", "variables": {"bad key": "v"}}, "variables"),
    ({"pipeline": "x" * 101}, "pipeline"),
    ({"pipeline": "a:b"}, "pipeline"),
    ({"pipeline": "web", "trigger": "t" * 101}, "trigger"),
    ({"pipeline": "web", "commit": {"hash": "zz"}}, "commit.hash"),
    ({"pipeline": "web", "commit": {"hash": "abcdef1", "message": "m" * 4001}}, "commit.message"),
    ({"pipeline": "web", "timeoutSeconds": 0}, "timeoutSeconds"),
])
def test_run_limits_are_422_naming_the_field(client, body, field):
    response = client.post("/api/runs", body)
    assert response.status_code == 422, response.json
    assert any(d["field"].startswith(field) for d in response.json["error"]["details"])
    assert client.get("/api/runs?pipeline=web").json["items"] == []


def test_fifty_stages_is_fine(client):
    response = client.post("/api/runs", {"pipeline": "web", "stages": [{"type": "BUILD", "name": f"s{i}"}
                                                                        for i in range(50)]})
    assert response.status_code == 201 and len(response.json["stages"]) == 50


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=abc", "status=NOPE", "cursor=" + "x" * 2049,
                                   "cursor=%%%", "pipeline=" + "p" * 101, "pipeline=a%3Ab"])
def test_list_query_limits_are_400(client, query):
    # (GET /api/runs without pipeline is the search across pipelines since issue 13, not a 400)
    response = client.get("/api/runs?" + ("pipeline=web&" if "pipeline=" not in query else "") + query)
    assert_clean_error(response, {400})
