"""No hostile body reaches a 500 (issue 10 item 4): a JSON body nested thousands of levels deep
(Python's json raises RecursionError on it) sent to every POST/PUT/PATCH route the app
registers, with and without an Idempotency-Key, is a 4xx in the route's error shape and
stores nothing. Bodies stay under the size limit, so the parsers, not the 413, answer them."""
from __future__ import annotations

import json
import re

import pytest

from chalicelib.integrations.github import signature as github_signature
from chalicelib.store.schema import dynamodb_client
from tests.fixtures import make_source
from tests.integration.test_operations_api import create

LIMIT = 64 * 1024  # tests' STAGETRACK_MAX_BODY_BYTES
DEEP_BODIES = {
    "array": "[" * 30_000 + "]" * 30_000,
    "unclosed": "[" * 60_000,
    "object": '{"a":' * 10_000 + "1" + "}" * 10_000,
}
# The same shapes for a route with a smaller body limit (sign-in, 4 KB): still deeper than json's
# recursion limit (1000), so it is the parser, not the 413, that answers.
SMALL_DEEP_BODIES = {
    "array": "[" * 2000 + "]" * 2000,
    "unclosed": "[" * 4000,
    "object": '{"a":' * 680 + "1" + "}" * 680,
}
PATH_VALUES = {
    "pipeline": "web",
    "run_id": "web:1",
    "stage_id": "web:1:1",
    "schedule_id": "sch_0",
    "counter": "1",
    "stage": "BUILD",
    "stage_name": "BUILD",
    "stage_counter": "1",
    "domain": "ws",
    "project_name": "proj",
    "pipeline_id": "1",
    "execution_id": "1",
    "job_id": "0" * 32,
    "build_no": "1",
}


def _writing_routes():
    from app import app
    from chalicelib.api.routing import declared_routes

    # the routes' own methods: the 405 fallbacks (api/fallbacks.py) never read a body
    return sorted((method, path) for path, method in declared_routes(app)
                  if method in ("POST", "PUT", "PATCH"))


def _body_limit(method: str, template: str) -> int:
    from app import app

    limit = app.routes[template][method].view_function.route_spec.max_body
    return limit if isinstance(limit, int) else LIMIT


def _table(ctx):
    items = dynamodb_client(ctx.settings).scan(TableName=ctx.settings.table_name)["Items"]
    return sorted(json.dumps(item, sort_keys=True) for item in items)


@pytest.fixture
def secrets(client):
    create(client, ["BUILD"])
    return {kind: make_source(client, kind, f"{kind}-main") for kind in ("github", "gitlab", "cdevents")}


def _headers(path: str, raw: str, secrets: dict, with_key: bool) -> dict:
    headers = {"Content-Type": "application/json", "Confirm": "true"}
    if with_key:
        headers["Idempotency-Key"] = "deep-1"
    if path.endswith("/github"):
        headers.update({"X-GitHub-Event": "workflow_run", "X-GitHub-Delivery": "d-deep",
                        "X-Hub-Signature-256": github_signature(secrets["github"], raw.encode())})
    elif path.endswith("/gitlab"):
        headers.update({"X-Gitlab-Event": "Pipeline Hook", "X-Gitlab-Token": secrets["gitlab"]})
    elif path.endswith("/cdevents"):
        headers.update(
            {
                "Authorization": f"Bearer {secrets['cdevents']}",
                "ce-specversion": "1.0",
                "ce-id": "deep",
                "ce-source": "tests",
                "ce-type": "dev.cdevents.pipelinerun.started.0.1.1",
                "ce-time": "2024-01-01T00:00:00Z",
            }
        )
    return headers


def test_every_route_that_takes_a_body_is_listed():
    assert len(_writing_routes()) >= 25  # the iteration below really covers the app


@pytest.mark.parametrize("with_key", [True, False], ids=["with-key", "without-key"])
@pytest.mark.parametrize("shape", sorted(DEEP_BODIES))
def test_a_deeply_nested_body_is_a_4xx_on_every_route_and_stores_nothing(
    client, ctx, secrets, shape, with_key
):
    raw = DEEP_BODIES[shape]
    assert len(raw) < LIMIT
    before = _table(ctx)
    for method, template in _writing_routes():
        path = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], template)
        if "/webhooks/" in path:
            path += f"?source={path.rsplit('/', 1)[1]}-main"
        webhook = "/webhooks/" in path
        body = raw if len(raw) < _body_limit(method, template) else SMALL_DEEP_BODIES[shape]
        assert len(body) < _body_limit(method, template)
        response = client.request(method, path, raw=body, headers=_headers(path, body, secrets, with_key),
                                  auth=None if webhook else True)
        where = f"{method} {template}: {response.status_code} {response.body[:200]!r}"
        assert 400 <= response.status_code < 500 and response.status_code != 413, where
        if template.startswith("/api/"):
            error = response.json["error"]
            assert isinstance(error["code"], str) and isinstance(error["message"], str), where
        assert "Idempotent-Replayed" not in response.headers, where
    assert _table(ctx) == before
