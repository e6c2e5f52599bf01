"""DynamoDB round trips and latency per endpoint, against a real DynamoDB Local.

For every endpoint it prints the DynamoDB calls one request makes, and its median latency as a
ratio to the bare DynamoDB calls it needs: the exact calls the request made (same payloads,
same conditions) replayed through a plain botocore client against an identical twin run, so
the ratio is what stagetrack adds on top of DynamoDB (routing, validation, mapping, JSON).
Run: .venv/bin/python bench/bench_endpoints.py [N]
"""
from __future__ import annotations

import json
import sys
import time
from collections import Counter

from common import ADMIN_TOKEN, dynamodb_local, median_ms, record_calls

N = int(sys.argv[1]) if len(sys.argv) > 1 else 30
A, B = "benchaaaa", "benchbbbb"  # twin pipelines: the op runs on A, its bare replay on B


def main() -> None:
    with dynamodb_local() as endpoint:
        import os

        os.environ["STAGETRACK_DYNAMODB_ENDPOINT"] = endpoint
        os.environ["STAGETRACK_TABLE"] = "stagetrack-bench"
        import logging

        import botocore.session
        from chalice.test import Client

        from app import app
        from chalicelib import wiring
        from chalicelib.domain import auth
        from chalicelib.settings import Settings
        from chalicelib.store.schema import ensure_tables

        logging.getLogger("stagetrack").setLevel(logging.WARNING)  # the access log would drown the table
        settings = Settings.from_env()
        ensure_tables(settings)
        wiring.override(None)
        bare = botocore.session.get_session().create_client(
            "dynamodb", region_name="us-east-1", endpoint_url=endpoint)
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}

        with Client(app) as client:
            def call(method, path, body=None, token=None):
                auth = {"Authorization": f"Bearer {token}"} if token else {}
                response = client.http.request(method, path, headers={**headers, **auth},
                                               body=json.dumps(body) if body is not None else b"")
                assert response.status_code < 300, (method, path, response.status_code, response.body)
                return json.loads(response.body)

            def twin_runs(stages=None, setup=()):
                """Two runs in the same state: the request runs on A's, its replay on B's."""
                twins = []
                for pipeline in (A, B):
                    body = (
                        {"pipeline": pipeline} if stages is None else {"pipeline": pipeline, "stages": stages}
                    )
                    run = call("POST", "/api/runs", body)["id"]
                    for position, status in setup:
                        call("PATCH", f"/api/stages/{run}:{position}", {"status": status})
                    twins.append(run)
                return twins

            # twin tokens too: the rate-limit counter update is conditioned on the token's window
            issued, twin_token = (call("POST", "/api/tokens", {"name": name, "scopes": ["admin"]})["token"]
                                  for name in ("bench-a", "bench-b"))
            twin_keys = {A: B, auth.hash_token(issued): auth.hash_token(twin_token)}
            gate = [{"type": "BUILD"}, {"type": "DEPLOY_PROD", "approval": "MANUAL"}]
            failed = ((1, "IN_PROGRESS"), (1, "FAILURE"))
            waiting = ((1, "IN_PROGRESS"), (1, "SUCCESS"), (2, "IN_PROGRESS"))
            variables = {"variables": [{"key": "ENV", "value": "prod"},
                                       {"key": "DEPLOY_TOKEN", "value": "hunter2", "secret": True}]}
            # name -> (request for run id, stages, setup applied to both twins, token)
            plain = (None, (), None)
            cases = {
                "POST /api/runs": lambda run: ("POST", "/api/runs", {"pipeline": run.split(":")[0]}),
                "GET /api/runs/{id}": lambda run: ("GET", f"/api/runs/{run}", None),
                "GET /api/runs?pipeline=": lambda run: (
                    "GET",
                    f"/api/runs?pipeline={run.split(':')[0]}&limit=20",
                    None,
                ),
                "GET /api/stages?runId=": lambda run: ("GET", f"/api/stages?runId={run}", None),
                "GET /api/stages/{id}": lambda run: ("GET", f"/api/stages/{run}:1", None),
                "PATCH /api/stages/{id}": lambda run: (
                    "PATCH",
                    f"/api/stages/{run}:1",
                    {"status": "IN_PROGRESS"},
                ),
                "DELETE /api/stages/{id}": lambda run: ("DELETE", f"/api/stages/{run}:2", None),
                "DELETE /api/runs/{id}": lambda run: ("DELETE", f"/api/runs/{run}", None),
                "POST /api/runs/{id}/cancel": lambda run: (
                    "POST",
                    f"/api/runs/{run}/cancel",
                    {"reason": "bench"},
                ),
                "POST /api/runs/{id}/retry": (
                    lambda run: ("POST", f"/api/runs/{run}/retry", None),
                    None,
                    failed,
                    None,
                ),
                "POST /api/stages/{id}/retry": (
                    lambda run: ("POST", f"/api/stages/{run}:1/retry", None),
                    None,
                    failed,
                    None,
                ),
                "POST /api/stages/{id}/approve": (
                    lambda run: ("POST", f"/api/stages/{run}:2/approve", None),
                    gate,
                    waiting,
                    None,
                ),
                "PUT /api/runs/{id}/variables": lambda run: ("PUT", f"/api/runs/{run}/variables", variables),
                "GET /api/runs/{id} (issued token)": (
                    lambda run: ("GET", f"/api/runs/{run}", None),
                    None,
                    (),
                    issued,
                ),
            }
            print(f"{'endpoint':34} {'DynamoDB calls':36} {'p50 ms':>8} {'bare ms':>8} {'ratio':>6}")
            for name, case in cases.items():
                make, stages, setup, token = case if isinstance(case, tuple) else (case, *plain)
                op_times: list[float] = []
                bare_times: list[float] = []
                kinds: Counter[str] = Counter()
                for _ in range(N):
                    run_a, run_b = twin_runs(stages, setup)
                    method, path, body = make(run_a)
                    with record_calls() as calls:
                        started = time.perf_counter()
                        call(method, path, body, token)
                        op_times.append(time.perf_counter() - started)
                    kinds = Counter(op for op, _ in calls)
                    replay = [(op, json.loads(_swap(json.dumps(params), twin_keys))) for op, params in calls]
                    started = time.perf_counter()
                    for op, params in replay:
                        try:
                            getattr(bare, _snake(op))(**params)
                        except bare.exceptions.ConditionalCheckFailedException:
                            pass  # refused as it was for the request (a new rate-limit window)
                    bare_times.append(time.perf_counter() - started)
                desc = ", ".join(f"{count} {op}" for op, count in sorted(kinds.items()))
                op_ms, bare_ms = median_ms(op_times), median_ms(bare_times)
                print(f"{name:34} {desc:36} {op_ms:8.2f} {bare_ms:8.2f} {op_ms / bare_ms:6.2f}")


def _swap(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        text = text.replace(old, new)
    return text


def _snake(operation: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")


if __name__ == "__main__":
    main()
