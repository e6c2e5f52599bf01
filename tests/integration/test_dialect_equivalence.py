"""The same run operated through the native API and through a dialect ends in the same stored
state: the repository's aggregate (run and every stage, versions included) and pipeline item,
compared after setting aside who did it (the actor) and the pipeline's own name and ids.

Each case builds two identical pipelines, "alpha" (native) and "bravo" (dialect), at the same
moment of the fake clock, applies the operation one way to each, and compares what is stored.
"""
from __future__ import annotations

import dataclasses
import json
import re

import pytest

from chalicelib.api import gocd_wire
from chalicelib.domain import dialect_ids
from tests.fixtures.dialects import basic

NATIVE, DIALECT = "alpha", "bravo"
LAYOUT = [{"type": "BUILD", "name": "build"}, {"type": "UNIT_TEST", "name": "test"},
          {"type": "DEPLOY_PROD", "name": "deploy", "approval": "MANUAL"}]
FORM = "application/x-www-form-urlencoded"
ACTOR_FIELDS = {"by", "paused_by", "actor"}


def normalized(value, pipeline: str):
    """Stored state with the pipeline's name and ids replaced and actors set aside."""
    def scrub(node):
        if isinstance(node, dict):
            return {k: "<actor>" if k in ACTOR_FIELDS and v is not None else scrub(v)
                    for k, v in node.items()}
        if isinstance(node, list):
            return [scrub(v) for v in node]
        if isinstance(node, str):
            node = re.sub(r"^scheduled by .*", "scheduled by <actor>", node)
            ids = (dialect_ids.codearts_job_id(pipeline), str(dialect_ids.buddy_pipeline_id(pipeline)),
                   pipeline)
            for name in ids:
                node = node.replace(name, "<pipeline>")
        return node

    return scrub(json.loads(json.dumps(dataclasses.asdict(value), default=str)))


def stored_run(ctx, pipeline, counter=1):
    return normalized(ctx.stores.runs.load_run(f"{pipeline}:{counter}"), pipeline)


def scheduled_alike(ctx, counter):
    """The runs a native and a GoCD schedule made are the same but for where they came from
    (the run's ``source``, issue 13): the native one's, with that checked and set aside."""
    native, dialect = stored_run(ctx, NATIVE, counter), stored_run(ctx, DIALECT, counter)
    assert (native["run"]["source"], dialect["run"]["source"]) == ("native", "gocd")
    dialect["run"]["source"] = "native"
    assert native == dialect
    return native


def stored_pipeline(ctx, pipeline):
    return normalized(ctx.stores.pipelines.get(pipeline), pipeline)


def ok(response, status=200):
    assert response.status_code == status, (response.status_code, response.body)
    return response


# ---- the two sides of each case ---------------------------------------------------------------

def gocd(client, method, path, body=b"", content_type=None):
    headers = {"Authorization": basic("jez", client.admin_token), "Confirm": "true"}
    if content_type:
        headers["Content-Type"] = content_type
    return client._http.request(method, path, headers=headers, body=body)


def codearts(client, body):
    return client._http.request("POST", "/v3/jobs/stop", body=json.dumps(body),
                                headers={"X-Auth-Token": client.admin_token,
                                         "Content-Type": "application/json"})


def buddy(client, pipeline, body, counter=1):
    path = (f"/workspaces/ws/projects/proj/pipelines/{dialect_ids.buddy_pipeline_id(pipeline)}"
            f"/executions/{counter}")
    return client.patch(path, body)


def setup_running(client, pipeline):
    ok(client.post("/api/runs", {"pipeline": pipeline, "stages": LAYOUT, "variables": {"KEEP": "1"}}), 201)
    ok(client.patch(f"/api/stages/{pipeline}:1:1", {"status": "IN_PROGRESS"}))


def setup_failed(client, pipeline):
    setup_running(client, pipeline)
    ok(client.patch(f"/api/stages/{pipeline}:1:1", {"status": "SUCCESS"}))
    ok(client.patch(f"/api/stages/{pipeline}:1:2", {"status": "IN_PROGRESS"}))
    ok(client.patch(f"/api/stages/{pipeline}:1:2", {"status": "FAILURE"}))


def setup_waiting(client, pipeline):
    setup_running(client, pipeline)
    ok(client.patch(f"/api/stages/{pipeline}:1:1", {"status": "SUCCESS"}))
    ok(client.patch(f"/api/stages/{pipeline}:1:2", {"status": "IN_PROGRESS"}))
    ok(client.patch(f"/api/stages/{pipeline}:1:2", {"status": "SUCCESS"}))
    ok(client.patch(f"/api/stages/{pipeline}:1:3", {"status": "IN_PROGRESS"}))  # MANUAL: its gate


VARIABLES = [{"key": "ENV", "value": "prod"}, {"key": "KEEP", "value": "2"}]

CASES = {
    "gocd stage cancel = native stage cancel": (
        setup_running,
        lambda c, p: c.post(f"/api/stages/{p}:1:1/cancel"),
        lambda c, p: gocd(c, "POST", f"/go/api/stages/{p}/build/cancel", b"", FORM),
    ),
    "codearts stop = native stop": (
        setup_running,
        lambda c, p: c.post(f"/api/pipelines/{p}/runs/1/stop"),
        lambda c, p: codearts(c, {"job_id": dialect_ids.codearts_job_id(p), "build_no": "1"}),
    ),
    "buddy CANCEL = native run cancel": (
        setup_running,
        lambda c, p: c.post(f"/api/runs/{p}:1/cancel"),
        lambda c, p: buddy(c, p, {"operation": "CANCEL"}),
    ),
    "buddy RETRY = native retry of the failed stages": (
        setup_failed,
        lambda c, p: c.post(f"/api/runs/{p}:1/retry", {"scope": "FAILED"}),
        lambda c, p: buddy(c, p, {"operation": "RETRY"}),
    ),
    "buddy APPLY = native approve of the waiting stage": (
        setup_waiting,
        lambda c, p: c.post(f"/api/stages/{p}:1:3/approve"),
        lambda c, p: buddy(c, p, {"operation": "APPLY"}),
    ),
    "buddy APPLY_VARIABLES = native variables merge": (
        setup_running,
        lambda c, p: c.put(f"/api/runs/{p}:1/variables", {"variables": [
            *VARIABLES, {"key": "SECRET", "value": "s3cret", "secret": True}]}),
        lambda c, p: buddy(c, p, {"operation": "APPLY_VARIABLES", "variables": [
            *VARIABLES, {"key": "SECRET", "value": "s3cret", "encrypted": True}]}),
    ),
    "buddy APPLY_VARIABLES with Buddy's whole Variable objects = native variables merge": (
        setup_running,
        lambda c, p: c.put(f"/api/runs/{p}:1/variables", {"variables": [
            *VARIABLES, {"key": "SECRET", "value": "s3cret", "secret": True}]}),
        lambda c, p: buddy(c, p, {"operation": "APPLY_VARIABLES", "variables": [
            {**v, "type": "VAR", "settable": True, "description": "", "id": n, "encrypted": False}
            for n, v in enumerate(VARIABLES, start=1)] + [
            {"key": "SECRET", "value": "s3cret", "encrypted": True, "type": "VAR", "settable": False,
             "run_only_settable": False, "description": "a secret", "id": 9}]}),
    ),
    "gocd v3 stage cancel by counters = native stage cancel": (
        setup_running,
        lambda c, p: c.post(f"/api/stages/{p}:1:1/cancel"),
        lambda c, p: gocd_current(c, "POST", f"/go/api/stages/{p}/1/build/1/cancel", 3),
    ),
    "gocd v2 run stage = native stage retry": (
        setup_failed,
        lambda c, p: c.post(f"/api/stages/{p}:1:2/retry"),
        lambda c, p: gocd_current(c, "POST", f"/go/api/stages/{p}/1/test/run", 2),
    ),
}


def gocd_current(client, method, path, version, body=None):
    """GoCD's current API: Accept vN, a JSON body or X-GoCD-Confirm."""
    headers = {"Authorization": basic("jez", client.admin_token),
               "Accept": f"application/vnd.go.cd.v{version}+json"}
    if body is None:
        headers["X-GoCD-Confirm"] = "true"
    else:
        headers["Content-Type"] = "application/json"
    return client._http.request(method, path, headers=headers, body=b"" if body is None else json.dumps(body))


@pytest.mark.parametrize("case", list(CASES))
def test_the_same_operation_ends_in_the_same_stored_run(client, ctx, case):
    setup, native_op, dialect_op = CASES[case]
    for pipeline in (NATIVE, DIALECT):
        setup(client, pipeline)
    assert stored_run(ctx, NATIVE) == stored_run(ctx, DIALECT)  # the same starting point
    before = stored_run(ctx, NATIVE)
    ok(native_op(client, NATIVE))
    assert dialect_op(client, DIALECT).status_code in (200, 202)  # GoCD's run stage answers 202
    native, dialect = stored_run(ctx, NATIVE), stored_run(ctx, DIALECT)
    assert native != before, "the operation changed nothing: the case proves nothing"
    assert native == dialect
    assert stored_pipeline(ctx, NATIVE) == stored_pipeline(ctx, DIALECT)


def test_gocd_pause_and_unpause_store_what_native_pause_and_unpause_store(client, ctx):
    for pipeline in (NATIVE, DIALECT):
        setup_running(client, pipeline)
    ok(client.post(f"/api/pipelines/{NATIVE}/pause", {"cause": "take some rest"}))
    ok(gocd(client, "POST", f"/go/api/pipelines/{DIALECT}/pause", b"pauseCause=take some rest", FORM))
    paused = stored_pipeline(ctx, NATIVE)
    assert paused["paused"] is True and paused["pause_cause"] == "take some rest"
    assert paused == stored_pipeline(ctx, DIALECT)
    ok(client.post(f"/api/pipelines/{NATIVE}/unpause"))
    ok(gocd(client, "POST", f"/go/api/pipelines/{DIALECT}/unpause"))
    assert stored_pipeline(ctx, NATIVE) == stored_pipeline(ctx, DIALECT)
    assert stored_pipeline(ctx, NATIVE)["paused"] is False


def test_gocd_schedule_stores_the_run_native_schedule_stores(client, ctx):
    for pipeline in (NATIVE, DIALECT):
        setup_running(client, pipeline)
    variables = {"ENV_VAR_1": "value1", "ENV_VAR_2": "value2"}
    ok(client.post(f"/api/pipelines/{NATIVE}/schedule", {"variables": variables}), 202)
    ok(gocd(client, "POST", f"/go/api/pipelines/{DIALECT}/schedule",
            b"variables[ENV_VAR_1]=value1&variables[ENV_VAR_2]=value2", FORM), 202)
    native = scheduled_alike(ctx, 2)
    assert native["run"]["variables"] == {"ENV_VAR_1": "value1", "ENV_VAR_2": "value2"}
    assert stored_pipeline(ctx, NATIVE) == stored_pipeline(ctx, DIALECT)


# ---- the lookups behind the dialects, on moto and on a real DynamoDB Local ---------------------

def test_dialect_ids_and_history_ranges_on_moto_and_dynamodb_local(any_ctx):
    """The pipeline item found by its CodeArts and Buddy ids through the overloaded indexes,
    and history pages as counter ranges, where moto could accept what DynamoDB does not."""
    from chalicelib.domain.errors import NotFound
    from chalicelib.domain.schemas import CreateRunIn
    from chalicelib.service import pipelines, runs

    for pipeline in ("web", "api", "web"):
        body = json.dumps({"pipeline": pipeline, "stages": ["BUILD"]})
        runs.create_run(any_ctx, CreateRunIn.model_validate_json(body))
    assert pipelines.by_codearts_job(any_ctx, dialect_ids.codearts_job_id("web")).name == "web"
    assert pipelines.by_buddy_id(any_ctx, dialect_ids.buddy_pipeline_id("api")).name == "api"
    with pytest.raises(NotFound):
        pipelines.by_codearts_job(any_ctx, dialect_ids.codearts_job_id("nope"))
    found, page = pipelines.history(any_ctx, "web", 0, gocd_wire.GOCD_PAGE_SIZE)
    assert found.counter == 2
    assert [(r.counter, r.stage_summary[0]["name"]) for r in page] == [(2, "BUILD"), (1, "BUILD")]
    assert [r.counter for r in pipelines.history(any_ctx, "web", 1, gocd_wire.GOCD_PAGE_SIZE)[1]] == [1]
    assert pipelines.history(any_ctx, "web", 2, gocd_wire.GOCD_PAGE_SIZE)[1] == []
    # the run listing by pipeline still holds runs only
    listed, _ = runs.list_runs(any_ctx, runs.ListRunsQuery(pipeline="web"))
    assert [r.id for r in listed] == ["web:2", "web:1"]


def test_gocd_v1_pause_schedule_unpause_store_what_native_ones_store(client, ctx):
    for pipeline in (NATIVE, DIALECT):
        setup_running(client, pipeline)
    ok(client.post(f"/api/pipelines/{NATIVE}/pause", {"cause": "take some rest"}))
    ok(
        gocd_current(
            client, "POST", f"/go/api/pipelines/{DIALECT}/pause", 1, {"pause_cause": "take some rest"}
        )
    )
    assert stored_pipeline(ctx, NATIVE)["paused"] is True
    assert stored_pipeline(ctx, NATIVE) == stored_pipeline(ctx, DIALECT)
    ok(client.post(f"/api/pipelines/{NATIVE}/unpause"))
    ok(gocd_current(client, "POST", f"/go/api/pipelines/{DIALECT}/unpause", 1))
    assert stored_pipeline(ctx, NATIVE) == stored_pipeline(ctx, DIALECT)
    ok(client.post(f"/api/pipelines/{NATIVE}/schedule", {"variables": {"ENV_VAR_1": "value1"}}), 202)
    ok(gocd_current(client, "POST", f"/go/api/pipelines/{DIALECT}/schedule", 1, {
        "environment_variables": [{"name": "ENV_VAR_1", "value": "value1", "secure": False}],
        "materials": [{"fingerprint": "b" * 64, "revision": "123"}],
        "update_materials_before_scheduling": True}), 202)
    native = scheduled_alike(ctx, 2)
    assert native["run"]["variables"] == {"ENV_VAR_1": "value1"}
    assert stored_pipeline(ctx, NATIVE) == stored_pipeline(ctx, DIALECT)
