"""Authorization comes from what each route declares it acts on, never from a stray query
parameter or body field (issue 10: ``POST /api/tokens?pipeline=A`` let an admin limited to A
mint an unlimited admin token).

Every route is read from the app's route table, so a route added later is covered without
editing this file: it must carry a declaration, and its decision for limited tokens must not
move when undeclared query parameters or body fields name a pipeline.
"""
from __future__ import annotations

import itertools
import json

import pytest
from chalice import Blueprint
from chalice.app import MultiDict

from app import app
from chalicelib.api import routing, security
from chalicelib.domain import auth, dialect_ids
from chalicelib.domain.auth import Principal
from chalicelib.domain.errors import DomainError

ROUTES = routing.declared_routes(app)  # each GET route also answers HEAD with the same spec
IDS = [f"{m} {p}" for p, m in ROUTES]


def spec_of(path, method):
    return app.routes[path][method].view_function.route_spec


# ---- every route declares what it acts on ---------------------------------------------------

def test_every_route_that_takes_a_token_declares_what_it_acts_on():
    assert len(ROUTES) > 40
    for path, method in ROUTES:
        spec = spec_of(path, method)
        if spec.scope == auth.PUBLIC:
            assert spec.acts_on is None, (method, path)
            continue
        assert isinstance(spec.acts_on, auth.ActsOn), (method, path)
        assert spec.acts_on.rule in (auth.NAMED, auth.NO_SINGLE_PIPELINE, auth.OWN_RECORDS, auth.RESOLVED)
        for name, _kind in spec.acts_on.path:
            assert "{" + name + "}" in path, (method, path, name)


def test_the_declarations_of_the_routes_that_manage_access():
    """Written out: what a limited admin may do with tokens, subscriptions and sources."""
    declared = {(m, p): spec_of(p, m).acts_on.describe() for p, m in ROUTES
                if spec_of(p, m).scope == auth.ADMIN}
    assert declared == {
        ("POST", "/api/tokens"): "body pipelines (pipelines)",
        ("GET", "/api/tokens"): auth.OWN_RECORDS,
        ("DELETE", "/api/tokens/{token_id}"): auth.OWN_RECORDS,
        ("POST", "/api/subscriptions"): "body pipelines (pipelines)",
        ("GET", "/api/subscriptions"): auth.OWN_RECORDS,
        ("GET", "/api/subscriptions/{subscription_id}"): auth.OWN_RECORDS,
        ("DELETE", "/api/subscriptions/{subscription_id}"): auth.OWN_RECORDS,
        ("GET", "/api/subscriptions/{subscription_id}/deliveries"): auth.OWN_RECORDS,
        ("POST", "/api/sources"): auth.NO_SINGLE_PIPELINE,
        ("GET", "/api/sources"): auth.NO_SINGLE_PIPELINE,
        ("DELETE", "/api/sources/{name}"): auth.NO_SINGLE_PIPELINE,
        ("POST", "/api/insights/rebuild"): auth.NO_SINGLE_PIPELINE,
        ("GET", "/api/insights/rebuild"): auth.NO_SINGLE_PIPELINE,
    }


@pytest.mark.parametrize("path, kwargs", [
    ("/x", {}),  # no declaration: refused at registration, so at import
    ("/x", {"scope": "admin"}),
    ("/x/{run_id}", {"acts_on": auth.acts_on(path={"id": auth.RUN})}),  # not a parameter of the path
    ("/x", {"acts_on": "global"}),  # the old strings mean nothing now
    ("/x", {"scope": "public", "acts_on": auth.ACTS_ON_NO_SINGLE_PIPELINE}),
])
def test_a_route_without_a_sound_declaration_cannot_be_registered(path, kwargs):
    blueprint = Blueprint("t")
    with pytest.raises(ValueError):
        routing.route(blueprint, path, methods=["GET"], **kwargs)
    assert blueprint._deferred_registrations == []


# ---- stray query parameters and body fields change no decision (every route) -----------------

SAMPLES = {auth.PIPELINE: "{p}", auth.PIPELINES: ["{p}"], auth.RUN: "{p}:1", auth.STAGE: "{p}:1:1"}
STRAY_QUERIES = [{"pipeline": ["{p}"]}, {"pipeline_name": ["{p}"]}, {"runId": ["{p}:1"]},
                 {"stageId": ["{p}:1:1"]}, {"pipeline": ["{p}"], "pipelines": ["{p}"], "run_id": ["{p}:1"]}]
STRAY_BODY = {"pipeline": "{p}", "pipeline_name": "{p}", "runId": "{p}:1", "stageId": "{p}:1:1",
              "pipelines": ["{p}"]}


def fill(value, pipeline):
    if isinstance(value, list):
        return [fill(v, pipeline) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, pipeline) for k, v in value.items()}
    return value.replace("{p}", pipeline) if isinstance(value, str) else value


class FakeRequest:
    def __init__(self, uri_params, query, body):
        self.uri_params = uri_params
        self.query_params = MultiDict(query) if query else None
        self.raw_body = json.dumps(body).encode() if body is not None else b""


def sample_request(path, spec, pipeline="A"):
    """A request that names ``pipeline`` in every place the route declares (and, for the
    dialect resolvers, by that dialect's own ids)."""
    declared = spec.acts_on
    uri = {name: "1" for name in routing._PATH_PARAM.findall(path)}
    uri.update({name: fill(SAMPLES[kind], pipeline) for name, kind in declared.path})
    query = {name: [fill(SAMPLES[kind], pipeline)] for name, kind in declared.query}
    body = {name: fill(SAMPLES[kind], pipeline) for name, kind in declared.body} or None
    if "pipeline_id" in uri:  # Buddy
        uri["pipeline_id"] = str(dialect_ids.buddy_pipeline_id(pipeline))
    if "job_id" in uri:  # CodeArts' path forms
        uri["job_id"] = dialect_ids.codearts_job_id(pipeline)
    if spec.dialect == "codearts":
        body = {"job_id": dialect_ids.codearts_job_id(pipeline), "build_no": "1"}
    return uri, query, body


def decision(spec, request, principal):
    token = security._principal.set(principal)
    try:
        auth.check_scope(principal, spec.scope)
        auth.authorize(principal, spec.scope, security.pipeline_refs(request, spec.acts_on, principal))
        return "allowed"
    except DomainError as error:
        return f"{type(error).__name__}: {error.message}"
    finally:
        security._principal.reset(token)


LIMITED = {name: Principal(f"tok_{name}", name, (auth.ADMIN,), frozenset(pipelines))
           for name, pipelines in (("admin of A", {"A"}), ("admin of B", {"B"}))}


@pytest.mark.parametrize("path, method", [r for r in ROUTES if spec_of(*r).scope != auth.PUBLIC], ids=[
    i for i, r in zip(IDS, ROUTES, strict=True) if spec_of(*r).scope != auth.PUBLIC])
def test_undeclared_query_parameters_and_body_fields_change_no_decision(ctx, path, method):
    spec = spec_of(path, method)
    declared = spec.acts_on
    uri, query, body = sample_request(path, spec)
    query_names = {name for name, _ in declared.query}
    body_names = {name for name, _ in declared.body}
    expected = {"admin of A": "allowed", "admin of B": "NotFound"}
    if declared.rule == auth.NO_SINGLE_PIPELINE:
        expected = {"admin of A": "Forbidden", "admin of B": "Forbidden"}
    elif declared.rule == auth.OWN_RECORDS:  # the service filters the records (tests below)
        expected = {"admin of A": "allowed", "admin of B": "allowed"}
    for who, principal in LIMITED.items():
        baseline = decision(spec, FakeRequest(uri, query, body), principal)
        assert baseline.split(":")[0] == expected[who], (who, baseline)
        for stray_pipeline, stray in itertools.product(("A", "B"), STRAY_QUERIES):
            extra = {k: v for k, v in fill(stray, stray_pipeline).items() if k not in query_names}
            strayed = decision(spec, FakeRequest(uri, {**query, **extra}, body), principal)
            assert strayed == baseline, (who, extra)
            if spec.dialect != "codearts":  # its body is the declaration (job_id)
                fields = {k: v for k, v in fill(STRAY_BODY, stray_pipeline).items() if k not in body_names}
                strayed = decision(spec, FakeRequest(uri, query, {**fields, **(body or {})}), principal)
                assert strayed == baseline, (who, fields)


# ---- every admin route over HTTP: limited admins, stray query parameters ----------------------

_names = itertools.count(1)


def _token_of(client, pipelines):
    return client.post("/api/tokens", {"name": f"target-{next(_names)}", "scopes": ["read"],
                                       "pipelines": pipelines}).json["id"]


def _subscription_of(client, pipelines):
    return client.post("/api/subscriptions", {"url": "https://hooks.example.com/x", "events": ["*"],
                                              "pipelines": pipelines}).json["id"]


def _source(client):
    name = f"src-{next(_names)}"
    assert client.post("/api/sources", {"type": "github", "name": name}).status_code == 201
    return name


# (method, path) -> a fresh request about pipeline A (made by the bootstrap admin where it needs
# something to exist), and the status for: the unlimited bootstrap admin, an admin limited to A,
# an admin limited to B. A DELETE gets a fresh target each time, so every answer is comparable.
ADMIN_REQUESTS = {
    ("POST", "/api/tokens"): (
        lambda c: ("/api/tokens", {"name": "t", "scopes": ["read"], "pipelines": ["A"]}),
        (201, 201, 404),
    ),
    ("GET", "/api/tokens"): (lambda c: ("/api/tokens", None), (200, 200, 200)),
    ("DELETE", "/api/tokens/{token_id}"): (
        lambda c: (f"/api/tokens/{_token_of(c, ['A'])}", None),
        (200, 200, 404),
    ),
    ("POST", "/api/subscriptions"): (
        lambda c: (
            "/api/subscriptions",
            {"url": "https://hooks.example.com/x", "events": ["*"], "pipelines": ["A"]},
        ),
        (201, 201, 404),
    ),
    ("GET", "/api/subscriptions"): (lambda c: ("/api/subscriptions", None), (200, 200, 200)),
    ("GET", "/api/subscriptions/{subscription_id}"): (
        lambda c: (f"/api/subscriptions/{_subscription_of(c, ['A'])}", None),
        (200, 200, 404),
    ),
    ("DELETE", "/api/subscriptions/{subscription_id}"): (
        lambda c: (f"/api/subscriptions/{_subscription_of(c, ['A'])}", None),
        (200, 200, 404),
    ),
    ("GET", "/api/subscriptions/{subscription_id}/deliveries"): (
        lambda c: (f"/api/subscriptions/{_subscription_of(c, ['A'])}/deliveries", None),
        (200, 200, 404),
    ),
    ("POST", "/api/sources"): (
        lambda c: ("/api/sources", {"type": "gitlab", "name": f"new-{next(_names)}"}),
        (201, 403, 403),
    ),
    ("GET", "/api/sources"): (lambda c: ("/api/sources", None), (200, 403, 403)),
    ("DELETE", "/api/sources/{name}"): (lambda c: (f"/api/sources/{_source(c)}", None), (200, 403, 403)),
    # no rebuild can run on moto: each is recorded failed at once, so none blocks the next
    ("POST", "/api/insights/rebuild"): (lambda c: ("/api/insights/rebuild", None), (202, 403, 403)),
    ("GET", "/api/insights/rebuild"): (lambda c: ("/api/insights/rebuild", None), (404, 403, 403)),
}
STRAYS = ["", "?pipeline=A", "?pipeline_name=A", "?runId=A:1", "?stageId=A:1:1",
          "?pipeline=A&pipeline_name=A&runId=A:1&stageId=A:1:1"]
ADMIN_ROUTES = [r for r in ROUTES if spec_of(*r).scope == auth.ADMIN]


def test_the_table_below_covers_every_admin_route():
    assert sorted((m, p) for p, m in ADMIN_ROUTES) == sorted(ADMIN_REQUESTS)


@pytest.mark.parametrize("path, method", ADMIN_ROUTES, ids=[f"{m} {p}" for p, m in ADMIN_ROUTES])
def test_admin_routes_answer_limited_admins_the_same_whatever_the_query_says(client, path, method):
    make, statuses = ADMIN_REQUESTS[(method, path)]
    callers = {"bootstrap admin": True}
    for name, pipelines in (("admin of A", ["A"]), ("admin of B", ["B"])):
        callers[name] = client.post("/api/tokens", {"name": name, "scopes": ["admin"],
                                                    "pipelines": pipelines}).json["token"]
    for (who, token), status in zip(callers.items(), statuses, strict=True):
        answers = set()
        for stray in STRAYS:
            url, body = make(client)
            response = client.request(method, url + stray, body, auth=token)
            error = (response.json or {}).get("error", {}) if isinstance(response.json, dict) else {}
            assert response.status_code == status, (who, stray, response.json)
            answers.add((response.status_code, error.get("code"), error.get("message", "").split("'")[0]))
        assert len(answers) == 1, (who, answers)
