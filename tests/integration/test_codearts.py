"""Huawei CodeArts Build's POST /v3/jobs/stop: the reference example replayed, and every error
in CodeArts' shape {"error_code", "error_msg"}."""
from __future__ import annotations

import hashlib
import json

import pytest

from chalicelib.api import codearts_wire
from chalicelib.domain import dialect_ids
from tests.fixtures.dialects import basic

# The reference's example request body, verbatim.
EXAMPLE_JOB_ID = "f9d6c8466d614a9788e9a0acf6c15f46"
EXAMPLE = {"job_id": EXAMPLE_JOB_ID, "build_no": "20"}


def issue(client, scopes, pipelines=None):
    body = {"name": "codearts", "scopes": scopes, **({"pipelines": pipelines} if pipelines else {})}
    response = client.post("/api/tokens", body)
    assert response.status_code == 201, response.json
    return response.json["token"]


def stop(client, body, token, *, raw=None):
    """POST https://{endpoint}/v3/jobs/stop with X-Auth-Token, as the reference calls it."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["X-Auth-Token"] = token
    payload = raw if raw is not None else json.dumps(body).encode()
    response = client._http.request("POST", "/v3/jobs/stop", headers=headers, body=payload)
    response.json = json.loads(response.body)
    return response


def assert_codearts_error(response, status):
    assert response.status_code == status, response.json
    assert response.headers["Content-Type"] == "application/json"
    assert set(response.json) == {"error_code", "error_msg"}
    assert response.json["error_code"] == codearts_wire.CODEARTS_ERROR_CODES[status]
    assert response.json["error_msg"]


def make_builds(client, count):
    """Pipeline "build-task" with ``count`` builds, the last one running; returns its job id."""
    for _ in range(count):
        body = {"pipeline": "build-task", "stages": ["BUILD", "UNIT_TEST"]}
        assert client.post("/api/runs", body).status_code == 201
    assert client.patch(f"/api/stages/build-task:{count}:1", {"status": "IN_PROGRESS"}).status_code == 200
    return client.get("/api/pipelines/build-task/status").json["codeartsJobId"]


@pytest.fixture
def builds(client):
    """Two builds of "build-task"; build 2 is running."""
    return make_builds(client, 2)


def test_the_job_id_is_the_md5_of_the_pipeline_name_shown_in_the_native_status(client, builds):
    """printf %s build-task | md5sum"""
    assert builds == dialect_ids.codearts_job_id("build-task") == hashlib.md5(b"build-task").hexdigest()
    assert len(builds) == 32 and builds.isalnum()


def test_reference_example_stops_build_20(client, ddb_calls):
    """POST https://{endpoint}/v3/jobs/stop { "job_id" : "<32 chars>", "build_no" : "20" } with
    X-Auth-Token: the reference's request, its job_id being this pipeline's."""
    builds = make_builds(client, 20)
    token = issue(client, ["operate"])
    ddb_calls.clear()
    response = stop(client, {"job_id": builds, "build_no": "20"}, token)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json == {"result": True}
    # token (UpdateItem), the job id (one Query on the index), the run (Query), one transaction
    assert dict(ddb_calls) == {"UpdateItem": 1, "Query": 2, "TransactWriteItems": 1}
    run = client.get("/api/runs/build-task:20").json
    # a graceful stop: the running build stage may finish (the default grace), nothing else starts
    assert run["status"] == "CANCELLING" and run["stopping"]["graceSeconds"] == 600
    assert [s["status"] for s in run["stages"]] == ["IN_PROGRESS", "SKIPPED"]
    assert run["stages"][0]["cancelsAt"] == run["stopping"]["graceUntil"]
    assert run["cancellation"]["by"] == "codearts"
    assert client.get("/api/runs/build-task:19").json["status"] == "IDLE"  # only build 20


def test_the_verbatim_example_job_id_names_no_pipeline_here(client, builds):
    assert_codearts_error(stop(client, EXAMPLE, issue(client, ["operate"])), 404)


def test_stopping_a_finished_build_is_a_successful_no_op(client, builds, ddb_calls):
    token = issue(client, ["operate"])
    assert stop(client, {"job_id": builds, "build_no": "2"}, token).json == {"result": True}
    before = client.get("/api/runs/build-task:2").json
    ddb_calls.clear()
    assert stop(client, {"job_id": builds, "build_no": "2"}, token).json == {"result": True}
    assert "TransactWriteItems" not in ddb_calls
    assert client.get("/api/runs/build-task:2").json == before


@pytest.mark.parametrize("body, raw", [
    (None, b"{not json"),
    (None, b"[]"),
    ({"job_id": "short", "build_no": "20"}, None),
    ({"job_id": "g" * 31 + "!", "build_no": "20"}, None),
    ({"build_no": "20"}, None),
    ({"job_id": "a" * 32}, None),
    ({"job_id": "a" * 32, "build_no": 20}, None),  # a string, as the reference says
    ({"job_id": "a" * 32, "build_no": "0"}, None),
    ({"job_id": "a" * 32, "build_no": "x"}, None),
    ({"job_id": "a" * 32, "build_no": "20", "extra": 1}, None),
])
def test_bad_requests_are_400_in_codearts_shape(client, builds, body, raw):
    assert_codearts_error(stop(client, body, issue(client, ["operate"]), raw=raw), 400)
    assert client.get("/api/runs/build-task:2").json["status"] == "IN_PROGRESS"


def test_unknown_build_is_404(client, builds):
    assert_codearts_error(stop(client, {"job_id": builds, "build_no": "3"}, issue(client, ["operate"])), 404)


def test_credentials_401_and_scope_403(client, builds):
    assert_codearts_error(stop(client, {"job_id": builds, "build_no": "2"}, None), 401)
    assert_codearts_error(stop(client, {"job_id": builds, "build_no": "2"}, "st_" + "x" * 43), 401)
    assert_codearts_error(stop(client, {"job_id": builds, "build_no": "2"}, issue(client, ["read"])), 403)
    assert client.get("/api/runs/build-task:2").json["status"] == "IN_PROGRESS"


def test_a_token_limited_to_pipelines_is_checked_against_job_ids_without_a_read(client, builds, ddb_calls):
    other = issue(client, ["operate"], ["other"])
    ddb_calls.clear()
    assert_codearts_error(stop(client, {"job_id": builds, "build_no": "2"}, other), 404)
    assert dict(ddb_calls) == {"UpdateItem": 1}
    assert_codearts_error(stop(client, {"build_no": "20"}, other), 403)  # names no build task
    mine = issue(client, ["operate"], ["other", "build-task"])
    assert stop(client, {"job_id": builds, "build_no": "2"}, mine).json == {"result": True}


def test_every_job_id_of_a_body_that_repeats_it_is_checked(client, builds):
    """Whichever job_id a parser keeps, a token must cover every one the body names."""
    from chalicelib.domain import dialect_ids

    limited = issue(client, ["operate"], ["build-task"])
    foreign = dialect_ids.codearts_job_id("other")
    for raw in (f'{{"job_id": "{foreign}", "job_id": "{builds}", "build_no": "2"}}',
                f'{{"job_id": "{builds}", "job_id": "{foreign}", "build_no": "2"}}'):
        response = client.request(
            "POST", "/v3/jobs/stop", raw=raw.encode(), headers={"X-Auth-Token": limited}
        )
        assert_codearts_error(response, 404)
    assert client.get("/api/runs/build-task:2").json["status"] == "IN_PROGRESS"


def test_other_credentials_work_too(client, builds):
    token = issue(client, ["operate"])
    response = client._http.request(
        "POST", "/v3/jobs/stop", body=json.dumps({"job_id": builds, "build_no": "2"}),
        headers={"Authorization": basic("ci", token), "Content-Type": "application/json"})
    assert response.status_code == 200
    assert client.get("/api/runs/build-task:2").json["cancellation"]["by"] == "ci"


def test_rate_limit_headers_come_with_every_answer(client, builds):
    token = issue(client, ["operate"])
    for body in ({"job_id": builds, "build_no": "2"}, {"job_id": builds, "build_no": "99"}):
        response = stop(client, body, token)
        assert int(response.headers["X-Rate-Limit-Limit"]) == 600
        assert int(response.headers["X-Rate-Limit-Remaining"]) < 600


# ---- the two path forms the official SDK calls (tests/integration/test_codearts_sdk.py drives the SDK) ----

def post(client, path, token, body=b"", content_type="application/json"):
    response = client._http.request("POST", path, body=body,
                                    headers={"X-Auth-Token": token, "Content-Type": content_type})
    response.json = json.loads(response.body)
    return response


@pytest.mark.parametrize("path, body, expected", [
    ("/v1/job/{job}/stop?build_no=2", b"", {"status": "success"}),
    ("/v1/job/{job}/stop", b'{"build_no": 2}', {"status": "success"}),  # as the v1 reference has it
    ("/v1/job/{job}/stop?build_no=2", b'{"build_no": 2}', {"status": "success"}),
    ("/v3/jobs/{job}/2/stop", b"", {"success": True, "result": ""}),
    ("/v3/jobs/{job}/2/stop", b"{}", {"success": True, "result": ""}),
])
def test_the_path_forms_stop_a_build(client, builds, path, body, expected):
    response = post(client, path.format(job=builds), issue(client, ["operate"]), body)
    assert response.status_code == 200 and response.json == expected
    assert client.get("/api/runs/build-task:2").json["status"] == "CANCELLING"


@pytest.mark.parametrize("path, body", [
    ("/v1/job/{job}/stop", b""),  # no build_no at all
    ("/v1/job/{job}/stop?build_no=0", b""),
    ("/v1/job/{job}/stop?build_no=x", b""),
    ("/v1/job/{job}/stop?build_no=2&build_no=3", b""),
    ("/v1/job/{job}/stop?build_no=2", b'{"build_no": 3}'),  # query and body disagree
    ("/v1/job/{job}/stop", b'{"build_no": "2"}'),  # an integer, as the reference says
    ("/v1/job/{job}/stop", b'{"build_no": 2, "extra": 1}'),
    ("/v1/job/{job}/stop", b"{not json"),
    ("/v1/job/short/stop?build_no=2", b""),
    ("/v3/jobs/{job}/0/stop", b""),
    ("/v3/jobs/{job}/2x/stop", b""),
    ("/v3/jobs/{job}/2/stop", b'{"build_no": 3}'),  # this form takes no body
    ("/v3/jobs/{job}%21/2/stop", b""),
])
def test_bad_path_form_requests_are_400_in_codearts_shape(client, builds, path, body):
    assert_codearts_error(post(client, path.format(job=builds), issue(client, ["operate"]), body), 400)
    assert client.get("/api/runs/build-task:2").json["status"] == "IN_PROGRESS"


@pytest.mark.parametrize("path", ["/v1/job/{job}/stop?build_no=3", "/v3/jobs/{job}/3/stop",
                                  "/v1/job/f9d6c8466d614a9788e9a0acf6c15f46/stop?build_no=2"])
def test_path_forms_answer_404_for_unknown_builds_and_jobs(client, builds, path):
    assert_codearts_error(post(client, path.format(job=builds), issue(client, ["operate"])), 404)


def test_path_forms_check_limited_tokens_against_the_job_id_in_the_path(client, builds, ddb_calls):
    other = issue(client, ["operate"], ["other"])
    ddb_calls.clear()
    assert_codearts_error(post(client, f"/v3/jobs/{builds}/2/stop", other), 404)
    assert_codearts_error(post(client, f"/v1/job/{builds}/stop?build_no=2", other), 404)
    assert dict(ddb_calls) == {"UpdateItem": 2}  # the token only: decided without a read
    assert_codearts_error(post(client, f"/v3/jobs/{builds}/2/stop", issue(client, ["read"])), 403)
    assert client.get("/api/runs/build-task:2").json["status"] == "IN_PROGRESS"
