"""Fixtures: a moto-backed service context, a fake clock, an HTTP test client, a call counter."""
from __future__ import annotations

import json
import os
from collections import Counter

import pytest

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.pop("STAGETRACK_DYNAMODB_ENDPOINT", None)

import botocore.client  # noqa: E402
from chalice.test import Client  # noqa: E402
from moto import mock_aws  # noqa: E402

from chalicelib import wiring  # noqa: E402
from chalicelib.domain.clock import FakeClock  # noqa: E402
from chalicelib.settings import Settings  # noqa: E402
from chalicelib.store.schema import ensure_tables  # noqa: E402
from tools import local_gateway  # noqa: E402

local_gateway.install()  # the test client answers unknown paths as the deployed gateway does


@pytest.fixture
def clock():
    return FakeClock("2026-03-20T17:17:13.760Z")


@pytest.fixture
def settings():
    return Settings(table_name="stagetrack-test", region="us-east-1", max_body_bytes=64 * 1024)


@pytest.fixture
def aws():
    with mock_aws():
        yield


@pytest.fixture
def ctx(aws, settings, clock):
    ensure_tables(settings)
    context = wiring.dynamo_context(settings, clock)
    wiring.override(context)
    yield context
    wiring.override(None)


@pytest.fixture
def memory_ctx(settings, clock):
    """A service context on the in-memory stores (store/memory.py): no moto, no network."""
    context = wiring.memory_context(settings, clock)
    wiring.override(context)
    yield context
    wiring.override(None)


@pytest.fixture
def client(ctx):
    from app import app

    with Client(app) as test_client:
        yield ApiClient(test_client, admin_token=ctx.settings.admin_token)


class ApiClient:
    """chalice.test.Client with JSON in and out, so tests read like the curl examples.

    Requests authenticate as the bootstrap admin unless the test sends its own Authorization or
    X-Auth-Token header, passes ``auth="<token>"`` (sent as Bearer), or ``auth=None`` (none).
    """

    def __init__(self, client, admin_token=None):
        self._http = client.http
        self.admin_token = admin_token

    def request(self, method, path, body=None, *, raw=None, headers=None, auth=True):
        headers = dict(headers or {})
        has_credentials = any(name.lower() in ("authorization", "x-auth-token") for name in headers)
        if auth is not None and auth is not False and not has_credentials:
            token = self.admin_token if auth is True else auth
            if token:
                headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            raw = json.dumps(body)
        if raw is not None:
            headers.setdefault("Content-Type", "application/json")
        response = self._http.request(method, path, headers=headers, body=raw or b"")
        try:  # dialect endpoints (GoCD) also answer text
            response.json = json.loads(response.body) if response.body else None
        except ValueError:
            response.json = None
        return response

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def patch(self, path, body=None, **kw):
        return self.request("PATCH", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


@pytest.fixture
def ddb_calls(monkeypatch):
    """Counts real DynamoDB API calls (operation name -> count) made through botocore."""
    calls: Counter = Counter()
    original = botocore.client.BaseClient._make_api_call

    def counting(self, operation_name, api_params):
        if self.meta.service_model.service_name == "dynamodb":
            calls[operation_name] += 1
        return original(self, operation_name, api_params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", counting)
    return calls


@pytest.fixture(scope="session")
def ddb_local_endpoint():
    """A real DynamoDB Local for the whole session (never skipped: CI must run this tier)."""
    from tests.ddb_local import DynamoDBLocal

    with DynamoDBLocal() as endpoint:
        yield endpoint


_local_tables = iter(range(1, 1_000_000))


@pytest.fixture
def local_ctx(ddb_local_endpoint, clock):
    """A service context on DynamoDB Local with a fresh table of its own."""
    settings = Settings(table_name=f"stagetrack-t{next(_local_tables)}", region="us-east-1",
                        dynamodb_endpoint=ddb_local_endpoint)
    ensure_tables(settings)
    context = wiring.dynamo_context(settings, clock)
    wiring.override(context)
    yield context
    wiring.override(None)


@pytest.fixture(params=["moto", pytest.param("ddb_local", marks=pytest.mark.ddb_local)])
def any_ctx(request):
    """The same test on moto and on a real DynamoDB Local, to catch what moto accepts wrongly."""
    return request.getfixturevalue("ctx" if request.param == "moto" else "local_ctx")


@pytest.fixture(scope="session")
def start_chalice_local(ddb_local_endpoint, tmp_path_factory):
    """Starts `chalice local` as `make run` starts it (tools.run_local.CHALICE_MAIN) on a free
    127.0.0.1 port over the session's DynamoDB Local: ``start(**env)`` is a context manager giving
    (base URL, log path). ``env`` overrides the process environment (a value of None removes the
    variable); the table named by STAGETRACK_TABLE (default "stagetrack") is created first."""
    import contextlib
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import requests

    from tools import dynamodb_local
    from tools.run_local import CHALICE_MAIN

    root = Path(__file__).resolve().parent.parent

    @contextlib.contextmanager
    def start(**overrides):
        env = dict(os.environ)
        env.pop("STAGETRACK_TABLE", None)
        env.update({
            "STAGETRACK_DYNAMODB_ENDPOINT": ddb_local_endpoint, "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
            "STAGETRACK_LOCAL_TICKER": "0", "PYTHONPATH": str(root),
        })
        for key, value in overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        ensure_tables(Settings.from_env({"STAGETRACK_TABLE": "stagetrack", **env}))
        port = dynamodb_local.free_port()
        log_path = tmp_path_factory.mktemp("chalice-local") / "server.log"
        log = open(log_path, "wb")
        proc = subprocess.Popen(
            [sys.executable, "-c", CHALICE_MAIN, "local", "--host", "127.0.0.1", "--port", str(port),
             "--no-autoreload"],
            cwd=str(root), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"chalice local exited with {proc.returncode}: "
                                       f"{log_path.read_text()[-3000:]}")
                try:
                    if requests.get(f"{base}/health", timeout=1).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("chalice local did not answer within 60 s")
                time.sleep(0.2)
            yield base, log_path
        finally:
            log.close()
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()

    return start


@pytest.fixture(scope="session")
def chalice_local(start_chalice_local):
    """`chalice local` started as `make run` starts it, on a free 127.0.0.1 port over DynamoDB
    Local: (base URL, admin token, log path). One per test session (per xdist worker); stopped at
    its end."""
    import secrets

    admin_token = "admin-" + secrets.token_urlsafe(24)
    with start_chalice_local(STAGETRACK_ADMIN_TOKEN=admin_token) as (base, log_path):
        yield base, admin_token, log_path
