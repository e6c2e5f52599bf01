"""The sweeper's reads and time as finished history grows, against a real DynamoDB Local.

For 10, 1,000 and 10,000 finished stages (plus 5 running stages, 3 of them due) it prints what
one sweep reads from the sparse activeStages index (Query calls, items read = ScannedCount),
the time of a sweep that fires the 3 due stages, the median time of an idle sweep (nothing
due), and, for contrast, the items a Scan-based sweeper would have read.
Run: .venv/bin/python bench/bench_sweeper.py [idle sweeps per size]
"""
from __future__ import annotations

import json
import statistics
import sys
import time

from common import dynamodb_local, record_calls

SIZES = (10, 1_000, 10_000)
IDLE_SWEEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 20


def main() -> None:
    with dynamodb_local() as endpoint:
        import botocore.session

        from chalicelib import wiring
        from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
        from chalicelib.domain.status import StageStatus
        from chalicelib.service import runs
        from chalicelib.service.timers import sweep
        from chalicelib.settings import Settings
        from chalicelib.store.schema import ensure_tables
        from tests.fixtures.clock import FakeClock

        bare = botocore.session.get_session().create_client(
            "dynamodb", region_name="us-east-1", endpoint_url=endpoint)
        warm = Settings.on_local(endpoint, table_name="bench-sweeper-warmup", region="us-east-1")
        ensure_tables(warm)
        warm_ctx = wiring.dynamo_context(warm, FakeClock())
        for _ in range(200):  # let DynamoDB Local's JVM warm up before anything is timed
            sweep(warm_ctx)
        print(f"{'finished stages':>15} {'table items':>11} {'queries':>7} {'items read':>10} "
              f"{'sweep firing 3':>14} {'idle sweep (median)':>19} {'a Scan would read':>17}")
        from chalicelib.store.models import item_models
        from tests.fixtures.history import write_finished_history

        for size in SIZES:
            settings = Settings.on_local(endpoint, table_name=f"bench-sweeper-{size}", region="us-east-1")
            ensure_tables(settings)
            clock = FakeClock()
            ctx = wiring.dynamo_context(settings, clock)
            items = item_models(settings.table_name, settings.region, settings.dynamodb_endpoint)
            write_finished_history(items, clock, size)

            body = {"pipeline": "live", "stages": [
                {"type": "OTHER", "name": f"live{i}", "timeoutSeconds": 10 if i < 3 else 3600}
                for i in range(5)]}
            aggregate = runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps(body)))
            for stage in aggregate.stages:
                runs.patch_stage(ctx, stage.id, PatchStageIn(status=StageStatus.IN_PROGRESS))
            clock.advance(10)

            with record_calls() as calls:
                started = time.perf_counter()
                report = sweep(ctx)
                firing = time.perf_counter() - started
            assert report.fired == {"TIMED_OUT": 3}, report
            assert not [c for c in calls if c[0] == "Scan"]

            idle = []
            for _ in range(IDLE_SWEEPS):
                started = time.perf_counter()
                quiet = sweep(ctx)
                idle.append(time.perf_counter() - started)
                assert quiet.due == 0

            scanned = 0
            pages = bare.get_paginator("scan").paginate(TableName=settings.table_name, Select="COUNT")
            for page in pages:
                scanned += page["ScannedCount"]
            print(f"{size:>15,} {scanned:>11,} {report.queries:>7} {report.items_read:>10} "
                  f"{firing * 1000:>11.1f} ms {statistics.median(idle) * 1000:>16.1f} ms "
                  f"{scanned:>17,}")


if __name__ == "__main__":
    main()
