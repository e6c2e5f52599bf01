"""The official Huawei Cloud SDK (huaweicloudsdkcodeartsbuild + huaweicloudsdkcore), unchanged,
signing with an access key pair (SDK-HMAC-SHA256) issued by POST /api/tokens, calling the three
stop APIs. Its HTTP goes through a requests transport adapter into the Chalice test client (on
moto), and its signing clock is the test's clock, so nothing waits and nothing leaves the process.
"""
from __future__ import annotations

import json
import re
from datetime import datetime as real_datetime

import pytest
import requests
from huaweicloudsdkcodeartsbuild.v3 import (
    CodeArtsBuildClient,
    StopBuildJobRequest,
    StopJobRequest,
    StopJobRequestBody,
    StopTheJobRequest,
)
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkcore.signer import signer as sdk_signer

from chalicelib.api import codearts_wire
from chalicelib.settings import Settings
from tests.fixtures.dialects import basic
from tests.integration.test_codearts import make_builds
from tests.integration.test_tokens import raw_table_dump

ENDPOINT = "https://codearts.stagetrack.test"


class ChaliceAdapter(requests.adapters.BaseAdapter):
    """A requests transport that hands each request to the Chalice test client; ``mutate`` may
    change what arrives (to play a man in the middle)."""

    def __init__(self, http, mutate=None):
        super().__init__()
        self._http, self.mutate, self.sent = http, mutate, []

    def send(self, request, **_kwargs):
        url = requests.utils.urlparse(request.url)
        path = url.path + (f"?{url.query}" if url.query else "")
        body = request.body or b""
        body = body.encode() if isinstance(body, str) else body
        headers = dict(request.headers)
        if self.mutate:
            path, headers, body = self.mutate(path, headers, body)
        self.sent.append((request.method, path, headers, body))
        answer = self._http.request(request.method, path, headers=headers, body=body)
        response = requests.Response()
        response.status_code = answer.status_code
        response.headers = requests.structures.CaseInsensitiveDict(answer.headers)
        response._content = answer.body
        response.url, response.request, response.encoding = request.url, request, "utf-8"
        return response

    def close(self):
        pass


@pytest.fixture
def sdk_clock(monkeypatch, clock):
    """The SDK stamps X-Sdk-Date from datetime.utcnow(); make that the test's clock."""

    class ClockDatetime(real_datetime):
        @classmethod
        def utcnow(cls):
            return clock.now().replace(tzinfo=None)

    monkeypatch.setattr(sdk_signer, "datetime", ClockDatetime)
    clock.set("2026-03-20T17:17:13.000Z")  # X-Sdk-Date has whole seconds: make skews exact
    return clock


def issue_access_key(client, scopes=("operate",), pipelines=None, name="codearts-sdk"):
    body = {"kind": "access-key", "name": name, "scopes": list(scopes)}
    if pipelines is not None:
        body["pipelines"] = pipelines
    response = client.post("/api/tokens", body)
    assert response.status_code == 201, response.json
    return response.json


def sdk(client, ak, sk, mutate=None):
    """CodeArtsBuildClient as its documentation builds it, its transport swapped for ours."""
    config = HttpConfig.get_default_config()
    config.retry_times = 0
    built = (CodeArtsBuildClient.new_builder().with_http_config(config)
             .with_credentials(BasicCredentials(ak, sk, "0123456789abcdef0123456789abcdef"))
             .with_endpoint(ENDPOINT).build())
    adapter = ChaliceAdapter(client._http, mutate)
    built._http_client._session.mount("https://", adapter)
    built.adapter = adapter
    return built


def stop_calls(job_id, build_no):
    """The three SDK calls that stop build ``build_no`` of ``job_id``, by their names."""
    return {
        "v1": lambda c: c.stop_the_job(StopTheJobRequest(job_id=job_id, build_no=int(build_no))),
        "v3-path": lambda c: c.stop_build_job(StopBuildJobRequest(job_id=job_id, build_no=int(build_no))),
        "v3-body": lambda c: c.stop_job(
            StopJobRequest(body=StopJobRequestBody(job_id=job_id, build_no=str(build_no)))
        ),
    }


EXPECTED = {
    "v1": {"status": "success"},
    "v3-path": {"success": True, "result": ""},
    "v3-body": {"result": True},
}
CALLS = list(EXPECTED)


@pytest.fixture
def builds(client):
    """Two builds of "build-task"; build 2 is running."""
    return make_builds(client, 2)


def sdk_error(call, client_sdk, status):
    with pytest.raises(ClientRequestException) as caught:
        call(client_sdk)
    error = caught.value
    assert error.status_code == status
    assert error.error_code == codearts_wire.CODEARTS_ERROR_CODES[status], error.error_msg
    assert error.error_msg
    return error


# ---- issuing ---------------------------------------------------------------------------------

def test_an_access_key_is_issued_like_a_token_and_its_sk_is_stored_only_sealed(client, ctx):
    created = issue_access_key(client, scopes=["operate"], pipelines=["web"])
    assert re.fullmatch(r"STAK[A-Z2-7]{16}", created["accessKey"])
    assert re.fullmatch(r"st_sk_[A-Za-z0-9_-]{43}", created["secretKey"])
    assert created["kind"] == "access-key" and "token" not in created
    assert {k: created[k] for k in ("name", "scopes", "pipelines", "createdBy")} == {
        "name": "codearts-sdk", "scopes": ["operate"], "pipelines": ["web"], "createdBy": "bootstrap admin"}

    dump = raw_table_dump(ctx)
    assert created["secretKey"] not in dump and created["secretKey"][6:] not in dump
    listed = client.get("/api/tokens")
    assert created["secretKey"] not in listed.body.decode()
    assert listed.json["items"] == [{k: v for k, v in created.items() if k != "secretKey"}]


def test_a_repeated_issue_with_the_same_idempotency_key_does_not_show_the_sk_again(client):
    headers = {"Idempotency-Key": "issue-ak-1"}
    body = {"kind": "access-key", "name": "once", "scopes": ["read"]}
    assert client.post("/api/tokens", body, headers=headers).status_code == 201
    again = client.post("/api/tokens", body, headers=headers)
    assert again.status_code == 409 and "secretKey" not in again.body.decode()


@pytest.mark.parametrize("kind", ["access_key", "AK", "", None])
def test_an_unknown_kind_is_422(client, kind):
    response = client.post("/api/tokens", {"kind": kind, "name": "x", "scopes": ["read"]})
    assert response.status_code == 422 and response.json["error"]["code"] == "validation_failed"
    assert client.get("/api/tokens").json["items"] == []


# ---- the SDK stops builds ----------------------------------------------------------------------

@pytest.mark.parametrize("call", CALLS)
def test_the_sdk_stops_a_build_with_each_api(client, builds, sdk_clock, ddb_calls, call):
    key = issue_access_key(client)
    codearts = sdk(client, key["accessKey"], key["secretKey"])
    ddb_calls.clear()
    response = stop_calls(builds, 2)[call](codearts)
    assert response.status_code == 200
    assert json.loads(response.raw_content) == EXPECTED[call]
    # the key (GetItem), its count (UpdateItem), the job id (Query), the run (Query), the cancel
    assert dict(ddb_calls) == {"GetItem": 1, "UpdateItem": 1, "Query": 2, "TransactWriteItems": 1}
    run = client.get("/api/runs/build-task:2").json
    # a graceful stop: the running build stage may finish within the default grace period
    assert run["status"] == "CANCELLING" and run["cancellation"]["by"] == "codearts-sdk"
    assert client.get("/api/runs/build-task:1").json["status"] == "IDLE"
    method, path, headers, _body = codearts.adapter.sent[-1]
    assert headers["Authorization"].startswith(f"SDK-HMAC-SHA256 Access={key['accessKey']}, SignedHeaders=")
    assert key["secretKey"] not in repr(codearts.adapter.sent)  # the SK never travels


@pytest.mark.parametrize("call", CALLS)
def test_stopping_a_finished_build_again_succeeds(client, builds, sdk_clock, call):
    key = issue_access_key(client)
    codearts = sdk(client, key["accessKey"], key["secretKey"])
    for _ in range(2):
        assert json.loads(stop_calls(builds, 2)[call](codearts).raw_content) == EXPECTED[call]


@pytest.mark.parametrize("call", CALLS)
def test_unknown_job_and_unknown_build_are_404(client, builds, sdk_clock, call):
    key = issue_access_key(client)
    codearts = sdk(client, key["accessKey"], key["secretKey"])
    sdk_error(stop_calls("f9d6c8466d614a9788e9a0acf6c15f46", 2)[call], codearts, 404)
    sdk_error(stop_calls(builds, 3)[call], codearts, 404)
    assert client.get("/api/runs/build-task:2").json["status"] == "IN_PROGRESS"


# ---- and is refused as it should be ------------------------------------------------------------

@pytest.mark.parametrize("call", CALLS)
def test_a_wrong_sk_is_401_and_does_not_spend_the_keys_rate_budget(
    client, builds, sdk_clock, ddb_calls, call
):
    key = issue_access_key(client)
    ddb_calls.clear()
    error = sdk_error(stop_calls(builds, 2)[call], sdk(client, key["accessKey"], "st_sk_" + "x" * 43), 401)
    assert "signature does not match" in error.error_msg
    assert dict(ddb_calls) == {"GetItem": 1}  # read the key, nothing counted, nothing written
    assert client.get("/api/runs/build-task:2").json["status"] == "IN_PROGRESS"


def test_an_unknown_access_key_is_401_and_a_malformed_one_costs_no_read(client, builds, sdk_clock, ddb_calls):
    key = issue_access_key(client)
    ddb_calls.clear()
    sdk_error(stop_calls(builds, 2)["v1"], sdk(client, "STAKAAAAAAAAAAAAAAAA", key["secretKey"]), 401)
    assert dict(ddb_calls) == {"GetItem": 1}
    ddb_calls.clear()
    sdk_error(stop_calls(builds, 2)["v1"], sdk(client, "not-an-access-key", key["secretKey"]), 401)
    assert dict(ddb_calls) == {}


def _tamper_body(path, headers, body):
    return path, headers, body.replace(b'"build_no": "2"', b'"build_no": "1"')


def _tamper_query(path, headers, body):
    return path.replace("build_no=2", "build_no=1"), headers, body


def _tamper_path(path, headers, body):
    return path.replace("/2/stop", "/1/stop"), headers, body


@pytest.mark.parametrize("call, tamper", [("v3-body", _tamper_body), ("v1", _tamper_query),
                                          ("v3-path", _tamper_path)])
def test_a_request_changed_after_signing_is_401(client, builds, sdk_clock, call, tamper):
    client.patch("/api/stages/build-task:1:1", {"status": "IN_PROGRESS"})
    key = issue_access_key(client)
    codearts = sdk(client, key["accessKey"], key["secretKey"], mutate=tamper)
    error = sdk_error(stop_calls(builds, 2)[call], codearts, 401)
    assert "signature does not match" in error.error_msg
    assert [client.get(f"/api/runs/build-task:{n}").json["status"] for n in (1, 2)] == ["IN_PROGRESS"] * 2


@pytest.mark.parametrize("skew", [-901, 901])
def test_a_stale_or_future_date_is_401(client, builds, sdk_clock, skew):
    key = issue_access_key(client)
    codearts = sdk(client, key["accessKey"], key["secretKey"])
    server_now = sdk_clock.now()
    sdk_clock.advance(skew)  # the SDK signs at this time ...
    signed_at = sdk_clock.now()

    def arrive_later(path, headers, body):
        sdk_clock.set(server_now)  # ... and the server reads it at this one
        return path, headers, body

    codearts.adapter.mutate = arrive_later
    error = sdk_error(stop_calls(builds, 2)["v3-path"], codearts, 401)
    assert "15 minutes" in error.error_msg
    assert signed_at != server_now
    assert client.get("/api/runs/build-task:2").json["status"] == "IN_PROGRESS"


def test_within_the_window_is_accepted(client, builds, sdk_clock):
    key = issue_access_key(client)
    codearts = sdk(client, key["accessKey"], key["secretKey"])
    server_now = sdk_clock.now()
    sdk_clock.advance(-900)
    codearts.adapter.mutate = lambda p, h, b: (sdk_clock.set(server_now), (p, h, b))[1]
    assert stop_calls(builds, 2)["v1"](codearts).status_code == 200


def test_a_revoked_key_is_401_at_once(client, builds, sdk_clock):
    key = issue_access_key(client)
    codearts = sdk(client, key["accessKey"], key["secretKey"])
    assert stop_calls(builds, 1)["v1"](codearts).status_code == 200
    revoked = client.delete(f"/api/tokens/{key['id']}")
    assert revoked.status_code == 200 and revoked.json["kind"] == "access-key"
    error = sdk_error(stop_calls(builds, 2)["v1"], codearts, 401)
    assert "unknown or revoked" in error.error_msg
    assert client.get("/api/runs/build-task:2").json["status"] == "IN_PROGRESS"


@pytest.mark.parametrize("call", CALLS)
def test_a_key_limited_to_another_pipeline_gets_404_and_its_own_works(client, builds, sdk_clock, call):
    other = issue_access_key(client, pipelines=["other"])
    sdk_error(stop_calls(builds, 2)[call], sdk(client, other["accessKey"], other["secretKey"]), 404)
    assert client.get("/api/runs/build-task:2").json["status"] == "IN_PROGRESS"
    mine = issue_access_key(client, pipelines=["other", "build-task"])
    assert stop_calls(builds, 2)[call](sdk(client, mine["accessKey"], mine["secretKey"])).status_code == 200


def test_a_read_only_key_is_403(client, builds, sdk_clock):
    key = issue_access_key(client, scopes=["read"])
    sdk_error(stop_calls(builds, 2)["v3-path"], sdk(client, key["accessKey"], key["secretKey"]), 403)


@pytest.mark.parametrize("settings", [Settings(table_name="stagetrack-test", region="us-east-1",
                                                rate_limit_per_minute=3)])
def test_the_rate_limit_counts_signed_requests_only(client, builds, sdk_clock):
    key = issue_access_key(client)
    codearts = sdk(client, key["accessKey"], key["secretKey"])
    forged = sdk(client, key["accessKey"], "st_sk_" + "f" * 43)
    for _ in range(2):
        assert stop_calls(builds, 1)["v1"](codearts).status_code == 200
    for _ in range(5):  # anyone who saw the AK can send these: they must not spend its budget
        sdk_error(stop_calls(builds, 1)["v1"], forged, 401)
    response = stop_calls(builds, 1)["v1"](codearts)
    assert response.status_code == 200
    error = sdk_error(stop_calls(builds, 1)["v1"], codearts, 429)
    assert error.request_id
    sdk_clock.advance(60)  # the next window
    assert stop_calls(builds, 1)["v1"](codearts).status_code == 200


def test_the_sk_cannot_be_used_as_a_token_nor_the_ak(client, builds):
    key = issue_access_key(client)
    for secret in (key["secretKey"], key["accessKey"]):
        response = client._http.request(
            "POST", "/v3/jobs/stop", body=json.dumps({"job_id": builds, "build_no": "2"}),
            headers={"X-Auth-Token": secret, "Content-Type": "application/json"})
        assert response.status_code == 401


# ---- the same signature on native routes -------------------------------------------------------

def test_a_signed_request_works_on_native_routes_with_native_errors(client, builds, sdk_clock):
    """The SDK's generic client signs any request; the native API answers it in its own shape."""
    from huaweicloudsdkcore.auth.credentials import BasicCredentials as Credentials
    from huaweicloudsdkcore.sdk_request import SdkRequest
    from huaweicloudsdkcore.signer.signer import Signer

    key = issue_access_key(client, scopes=["read"])

    def signed_get(path, query, sk):
        request = SdkRequest(
            method="GET",
            schema="https",
            host="codearts.stagetrack.test",
            resource_path=path,
            query_params=query,
            header_params={"Content-Type": "application/json"},
        )
        Signer(Credentials(key["accessKey"], sk)).sign(request)
        return client._http.request("GET", request.uri, headers=dict(request.header_params))

    ok = signed_get("/api/runs", [("pipeline", "build-task")], key["secretKey"])
    assert ok.status_code == 200, ok.body
    assert [run["id"] for run in json.loads(ok.body)["items"]] == ["build-task:2", "build-task:1"]
    bad = signed_get("/api/runs", [("pipeline", "build-task")], "st_sk_" + "y" * 43)
    assert bad.status_code == 401
    assert json.loads(bad.body)["error"]["code"] == "unauthorized"


def test_basic_auth_still_works_on_the_new_paths(client, builds):
    token = client.post("/api/tokens", {"name": "ci", "scopes": ["operate"]}).json["token"]
    response = client._http.request("POST", f"/v3/jobs/{builds}/2/stop",
                                    headers={"Authorization": basic("ci", token)}, body=b"")
    assert response.status_code == 200 and json.loads(response.body) == {"success": True, "result": ""}


def test_the_sk_never_reaches_a_log(client, builds, sdk_clock, capsys, caplog):
    """Issued, used, refused and revoked, with botocore's DEBUG dumps on: the SK appears nowhere
    (the item holds it sealed), and the scrubber would remove it if a bug ever logged it."""
    import logging

    from chalicelib.logging_setup import REDACTED, redact

    caplog.set_level(logging.DEBUG)
    key = issue_access_key(client)
    codearts = sdk(client, key["accessKey"], key["secretKey"])
    stop_calls(builds, 2)["v1"](codearts)
    sdk_error(stop_calls(builds, 2)["v1"], sdk(client, key["accessKey"], "st_sk_" + "z" * 43), 401)
    client.delete(f"/api/tokens/{key['id']}")
    sdk_error(stop_calls(builds, 2)["v1"], codearts, 401)
    logs = capsys.readouterr().out + "\n" + caplog.text
    assert key["accessKey"] in logs  # botocore's dumps name the item: the AK is no secret
    assert key["secretKey"] not in logs and key["secretKey"][6:26] not in logs
    assert key["secretKey"] not in redact(f"oops {key['secretKey']}") and REDACTED in redact(key["secretKey"])
