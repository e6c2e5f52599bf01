"""Structured JSON logs with request ids; no token, secret or signature in any log or error body."""
from __future__ import annotations

import base64
import json
import logging

import pytest

from app import app
from chalicelib.logging_setup import REDACTED, redact
from chalicelib.service import runs, tokens
from tests.integration.test_infra import ROOT


def access_lines(text: str) -> list[dict]:
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "stagetrack.access"]


def test_one_json_line_per_request_with_its_request_id(client, capsys):
    response = client.post("/api/runs", {"pipeline": "web"})
    client.get("/api/runs/web:1", auth=None)
    lines = access_lines(capsys.readouterr().out)
    assert len(lines) == 2
    first, second = lines
    assert first["requestId"] == response.headers["X-Request-Id"]
    assert first["method"] == "POST" and first["path"] == "/api/runs" and first["status"] == 201
    assert first["route"] == "/api/runs" and first["tokenId"] == "bootstrap"
    assert first["actor"] == "bootstrap admin" and first["level"] == "INFO"
    assert isinstance(first["latencyMs"], float) and first["latencyMs"] >= 0
    assert first["time"].endswith("+00:00")
    assert second["status"] == 401 and second["tokenId"] is None and second["path"] == "/api/runs/web:1"
    assert second["requestId"] != first["requestId"]


def api_gateway_event(method: str, resource: str, path: str, headers: dict, params=None) -> dict:
    return {
        "resource": resource, "path": path, "httpMethod": method, "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None, "multiValueQueryStringParameters": None,
        "pathParameters": params, "stageVariables": None, "body": None, "isBase64Encoded": False,
        "requestContext": {"resourcePath": resource, "httpMethod": method, "path": f"/api{path}",
                           "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "stage": "api",
                           "identity": {"sourceIp": "203.0.113.9"}},
    }


def test_api_gateway_request_id_is_used_and_returned(ctx, capsys):
    event = api_gateway_event("GET", "/api/runs/{run_id}", "/api/runs/web:9",
                              {"authorization": f"Bearer {ctx.settings.admin_token}"},
                              {"run_id": "web:9"})
    response = app(event, None)
    assert response["statusCode"] == 404
    assert response["headers"]["X-Request-Id"] == "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
    (line,) = access_lines(capsys.readouterr().out)
    assert line["requestId"] == "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
    assert line["path"] == "/api/api/runs/web:9" and line["route"] == "/api/runs/{run_id}"


def test_no_token_or_signature_reaches_a_log_or_an_error_body(client, ctx, capsys, caplog):
    """Every way a token is sent, accepted or refused."""
    caplog.set_level(logging.DEBUG)
    tokens._bootstrap_hash_of.cache_clear()
    admin = ctx.settings.admin_token
    issued = client.post("/api/tokens", {"name": "ci", "scopes": ["operate"], "pipelines": ["web"]}).json
    secret = issued["token"]
    reader = client.post("/api/tokens", {"name": "reader", "scopes": ["read"]}).json["token"]
    bad = "st_" + "Q" * 43
    basic = base64.b64encode(f"alice:{secret}".encode()).decode()
    bodies = []

    def send(*args, **kw):
        response = client.request(*args, **kw)
        bodies.append(response.body.decode() if isinstance(response.body, bytes) else str(response.body))
        return response

    send("POST", "/api/runs", {"pipeline": "web"}, auth=secret)
    send("GET", "/api/runs/web:1", headers={"Authorization": f"Basic {basic}"})
    send("GET", "/api/runs/web:1", headers={"X-Auth-Token": secret})
    send("GET", "/api/runs/other:1", auth=secret)                      # 404: other pipeline
    send("POST", "/api/runs", {"pipeline": "web"}, auth=reader)        # 403: scope
    send("GET", "/api/runs/web:1", auth=bad)                           # 401: unknown
    send("GET", "/api/runs/web:1", headers={"Authorization": f"Bearer {secret}", "X-Auth-Token": reader})
    send("GET", "/api/runs/web:1", headers={"Authorization": f"Token {secret}"})
    send("GET", "/api/tokens", auth=secret)
    pasted = send("POST", "/api/tokens", raw=json.dumps({"name": secret, "scopes": ["read"]}))
    assert pasted.status_code == 422  # a token pasted as a name is refused, not echoed

    client.delete(f"/api/tokens/{issued['id']}")
    send("GET", "/api/runs/web:1", auth=secret)                        # 401: revoked

    # Everything that was written (our JSON lines) and every record any library made, botocore's
    # DEBUG request dumps included.
    out = capsys.readouterr().out
    assert len(access_lines(out)) == 14  # 2 tokens issued, 11 requests sent, 1 revocation
    logs = out + "\n" + caplog.text
    for value in (secret, reader, bad, admin, basic, secret[3:20]):
        assert value not in logs, f"{value[:8]}... leaked into the logs"
        for body in bodies:
            assert value not in body, f"{value[:8]}... leaked into an error body"
    info_and_up = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert "Signature=" not in info_and_up and "Authorization" not in info_and_up


def test_a_bug_carrying_a_token_is_logged_redacted(client, ctx, capsys, monkeypatch):
    """Second line of defence: even a message or trace holding a token is scrubbed on output."""
    admin = ctx.settings.admin_token
    tokens._bootstrap_hash_of.cache_clear()
    secret = client.post("/api/tokens", {"name": "ci", "scopes": ["read"]}).json["token"]

    def boom(ctx_, run_id):
        raise RuntimeError(f"bug while holding {secret} and {admin}")

    monkeypatch.setattr(runs, "get_run", boom)
    crashed = client.get("/api/runs/web:1", auth=secret)
    assert crashed.status_code == 500
    assert crashed.json == {"error": {"code": "internal_error", "message": "internal error"}}
    out = capsys.readouterr().out
    (error,) = [json.loads(line) for line in out.splitlines() if '"level":"ERROR"' in line]
    assert "RuntimeError" in error["exception"] and REDACTED in error["exception"]
    assert secret not in out and admin not in out and secret[3:20] not in out


def test_the_local_default_admin_token_is_a_loud_warning_against_real_dynamodb(client, caplog):
    tokens._bootstrap_hash_of.cache_clear()
    client.get("/api/runs?pipeline=web")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "SECURITY" in r.getMessage()]
    assert len(warnings) == 1 and "STAGETRACK_ADMIN_TOKEN" in warnings[0].getMessage()
    assert "stagetrack-local-admin" not in caplog.text


@pytest.mark.parametrize("text, leaked", [
    ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
    ('{"x-auth-token": "s3cr3t-value"}', "s3cr3t-value"),
    ("basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
    ("token st_" + "k" * 43 + " used", "k" * 43),
    ("X-Hub-Signature-256=sha256=abcdef0123", "abcdef0123"),
])
def test_redaction(text, leaked):
    assert leaked not in redact(text) and REDACTED in redact(text)


# ---- the event functions log as the API does ----------------------------------------------------

# What a Lambda of an event function runs: the runtime puts its plain-text handler on the root
# logger, then imports the handler module named in the template (never app.py), which builds its
# context and logs. Run in a fresh interpreter, where nothing has imported app.py.
LAMBDA_PROBE = r"""
import logging, sys
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="[%(levelname)s] %(message)s")
import importlib
module = importlib.import_module(sys.argv[1])
from chalicelib import wiring
wiring.context()
logging.getLogger(module.__name__).warning("handler line with pepper=%s", sys.argv[2])
logging.getLogger("botocore.example").warning("library line %s", sys.argv[2])
"""


@pytest.mark.parametrize("module", ["chalicelib.events.timers", "chalicelib.events.inbound",
                                    "chalicelib.events.outbound"])
def test_event_function_logs_are_scrubbed_json_lines_like_the_apis(module):
    import os
    import subprocess
    import sys

    secret = "event-lambda-pepper-0123456789abcdef0123"
    env = {**os.environ, "AWS_LAMBDA_FUNCTION_NAME": "stagetrack-x", "STAGETRACK_SECRET_PEPPER": secret,
           "AWS_DEFAULT_REGION": "us-east-1", "STAGETRACK_LOCAL_TICKER": "0"}
    done = subprocess.run([sys.executable, "-c", LAMBDA_PROBE, module, secret], capture_output=True,
                          text=True, timeout=120, env=env, cwd=str(ROOT))
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is JSON (pynamodb's too)
    assert [(e["logger"], e["level"], e["message"]) for e in entries if e["level"] == "WARNING"] == [
        (module, "WARNING", f"handler line with pepper={REDACTED}"),
        ("botocore.example", "WARNING", f"library line {REDACTED}"),
    ]
    assert secret not in done.stdout + done.stderr
