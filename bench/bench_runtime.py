"""Memory size of the functions, from a model fed with local measurements.

Lambda gives a function CPU in proportion to its memory: 1,769 MB is one full vCPU (Lambda's
documentation), so at M MB a single-threaded Python process gets M / 1769 of a core. What a
request costs in CPU therefore stretches by 1769 / M below that, while the time it waits on
DynamoDB does not. Measured here, in fresh interpreters against DynamoDB Local (a separate
JVM, so the CPU figures are this process's own: app, chalice, pydantic, PynamoDB, botocore):
- the CPU time of a cold start: ``import app`` (bytecode compiled as `make package` ships it),
  then the first request (building the stores, the first client, the request itself);
- the CPU time of a warm request (median): GET /api/runs/{id} and PATCH /api/stages/{id}
  (timeoutSeconds) alternately, with an issued token; and the DynamoDB calls each makes.
Modelled at M MB: CPU / min(1, M / 1769) + DynamoDB calls x DYNAMODB_CALL_MS (DynamoDB's
"single-digit milliseconds" taken as 6 ms a call). Cost per million warm requests on arm64 at
us-east-1 list prices ($0.0000133334 per GB-second, $0.20 per million requests).
The CPU time per core is taken as the same on Graviton (arm64) as measured here (x86_64): an
assumption, the model's largest; arm64 is chosen for its 20% lower price per GB-second.
Run: .venv/bin/python bench/bench_runtime.py [cold starts] [warm requests]
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ADMIN_TOKEN, dynamodb_local

COLD = int(sys.argv[1]) if len(sys.argv) > 1 else 7
WARM = int(sys.argv[2]) if len(sys.argv) > 2 else 60
FULL_CORE_MB = 1769
MEMORY_SIZES = (128, 512, 1024, FULL_CORE_MB)
DYNAMODB_CALL_MS = 6.0
GB_SECOND_ARM64 = 0.0000133334
PER_MILLION_REQUESTS = 0.20

PROBE = r"""
import json, sys, time
cpu, wall = time.process_time(), time.perf_counter()
import app
import_cpu = time.process_time() - cpu
import botocore.client
from chalice.test import Client

calls = []
original = botocore.client.BaseClient._make_api_call
def counting(self, operation, params):
    calls.append(operation)
    return original(self, operation, params)
botocore.client.BaseClient._make_api_call = counting

run_id, stage_id, admin, warm = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def request(client, method, path, token, body=None):
    response = client.http.request(method, path, body=json.dumps(body).encode() if body else b"",
                                   headers={"Authorization": "Bearer " + token,
                                            "Content-Type": "application/json"})
    assert response.status_code < 300, (path, response.status_code, response.body)
    return json.loads(response.body)

with Client(app.app) as client:
    cpu = time.process_time()
    request(client, "GET", "/api/runs/" + run_id, admin)
    first_cpu = time.process_time() - cpu
    token = request(client, "POST", "/api/tokens", admin, {"name": "bench", "scopes": ["admin"]})["token"]
    samples = []
    for n in range(warm):
        del calls[:]
        cpu, wall = time.process_time(), time.perf_counter()
        if n % 2:
            request(client, "PATCH", "/api/stages/" + stage_id, token, {"timeoutSeconds": 600 + n})
        else:
            request(client, "GET", "/api/runs/" + run_id, token)
        samples.append((time.process_time() - cpu, time.perf_counter() - wall, len(calls)))
print(json.dumps({"import_cpu": import_cpu, "first_cpu": first_cpu, "warm": samples}))
"""


def probe(cwd: Path, run_id: str, stage_id: str, warm: int) -> dict:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "STAGETRACK_LOCAL_TICKER": "",
           "PYTHONPATH": str(cwd)}
    out = subprocess.run([sys.executable, "-c", PROBE, run_id, stage_id, ADMIN_TOKEN, str(warm)],
                         cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def modelled_ms(cpu_seconds: float, calls: float, memory_mb: int) -> float:
    share = min(1.0, memory_mb / FULL_CORE_MB)
    return cpu_seconds * 1000 / share + calls * DYNAMODB_CALL_MS


def cost_per_million(duration_ms: float, memory_mb: int) -> float:
    return memory_mb / 1024 * duration_ms / 1000 * GB_SECOND_ARM64 * 1e6 + PER_MILLION_REQUESTS


def main() -> None:
    from tools.package import compile_tree, stage_project

    with dynamodb_local() as endpoint, tempfile.TemporaryDirectory() as scratch:
        os.environ.update(STAGETRACK_DYNAMODB_ENDPOINT=endpoint, STAGETRACK_TABLE="stagetrack-runtime")
        from chalicelib import wiring
        from chalicelib.domain.clock import SystemClock
        from chalicelib.domain.model import change_status
        from chalicelib.domain.schemas import CreateRunIn
        from chalicelib.domain.status import StageStatus
        from chalicelib.service import runs
        from chalicelib.settings import Settings
        from chalicelib.store.schema import ensure_tables

        settings = Settings.from_env()
        ensure_tables(settings)
        ctx = wiring.dynamo_context(settings, SystemClock())
        run = runs.create_run(ctx, CreateRunIn.model_validate_json(
            '{"pipeline": "bench", "stages": ["BUILD", "UNIT_TEST", "DEPLOY_STAGING", "DEPLOY_PROD"]}'))
        stage_id = run.stages[0].id
        runs.mutate_run(ctx, run.run.id, lambda agg: change_status(
            agg.stage(stage_id), StageStatus.IN_PROGRESS, ctx.clock.now()))
        compiled = stage_project(Path(scratch) / "compiled", requirements="")
        compile_tree(compiled)  # as `make package` compiles deployment.zip
        results = [probe(compiled, run.run.id, stage_id, WARM if n == 0 else 4) for n in range(COLD)]

    import_cpu = statistics.median(r["import_cpu"] for r in results)
    first_cpu = statistics.median(r["first_cpu"] for r in results)
    warm = results[0]["warm"][4:]  # the first few settle caches (token lookups, connections)
    kinds = {"GET /api/runs/{id}": warm[0::2], "PATCH /api/stages/{id}": warm[1::2]}
    print(f"measured ({COLD} cold starts, {len(warm)} warm requests; CPU time of this process):")
    print(f"  cold: import app {import_cpu * 1000:.0f} ms CPU + first request {first_cpu * 1000:.0f} ms CPU")
    figures = {}
    for kind, samples in kinds.items():
        cpu = statistics.median(s[0] for s in samples)
        calls = statistics.median(s[2] for s in samples)
        figures[kind] = (cpu, calls)
        print(f"  {kind}: {cpu * 1000:.1f} ms CPU (median), {calls:g} DynamoDB calls, "
              f"{statistics.median(s[1] for s in samples) * 1000:.1f} ms wall against DynamoDB Local")
    print(f"modelled on Lambda (CPU / min(1, MB/{FULL_CORE_MB}) + {DYNAMODB_CALL_MS:g} ms "
          "per DynamoDB call):")
    print(f"  {'memory MB':>9} {'CPU share':>9} {'cold start ms':>13} {'p50 GET ms':>10} {'p50 PATCH ms':>12}"
          f" {'$ per 1M (arm64)':>17}")
    for memory in MEMORY_SIZES:
        cold = modelled_ms(import_cpu + first_cpu, 0, memory)
        get, patch = (modelled_ms(cpu, calls, memory) for cpu, calls in figures.values())
        print(f"  {memory:9d} {min(1, memory / FULL_CORE_MB):9.2f} {cold:13.0f} {get:10.1f} {patch:12.1f} "
              f"{cost_per_million((get + patch) / 2, memory):17.2f}")

if __name__ == "__main__":
    main()
