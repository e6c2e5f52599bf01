"""Issue 12: what each operation costs as the run grows, and writers on one run against many.

Against a real DynamoDB Local with ``ReturnConsumedCapacity=INDEXES`` on every call
(tests/fixtures/capacity.py), through the service functions the endpoints call:
- per operation and run size (1, 10, 50, 256 stages): DynamoDB calls, items read, bytes read,
  read and write units (table + indexes), and the floor: the items the operation must read and
  write at the least (a one-stage change: that stage and the run's summary);
- 8 and 32 writers, each moving its own stage through IN_PROGRESS and SUCCESS, on one run against
  the same writers on separate runs: throughput and p50/p99 latency of one change.
Run: .venv/bin/python bench/bench_writes.py [ROUNDS]
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from common import ROOT, dynamodb_local

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
SIZES = (1, 10, 50, 256)


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from chalicelib import wiring
    from chalicelib.domain.model import StageSpec, new_run
    from chalicelib.domain.schemas import PatchStageIn
    from chalicelib.service import operations, runs
    from chalicelib.settings import Settings
    from chalicelib.store.schema import ensure_tables
    from tests.fixtures.capacity import measure
    from tests.fixtures.clock import FakeClock

    with dynamodb_local() as endpoint:
        settings = Settings(table_name="stagetrack-bench-writes", region="us-east-1",
                            dynamodb_endpoint=endpoint)
        ensure_tables(settings)
        clock = FakeClock()
        ctx = wiring.dynamo_context(settings, clock)
        counters: dict[str, int] = {}

        def make(pipeline: str, stages: int):
            counters[pipeline] = counters.get(pipeline, 0) + 1
            specs = [StageSpec(type="OTHER", name=f"s{i}") for i in range(stages)]
            aggregate = new_run(pipeline, counters[pipeline], specs, clock.now())
            ctx.stores.runs.insert_run(aggregate)
            return aggregate

        def patch(stage_id: str, **fields):
            return runs.patch_stage(ctx, stage_id, PatchStageIn.model_validate_json(json.dumps(fields)))

        def row(operation: str, size: int, action, floor: str) -> None:
            with measure() as c:
                action()
            calls = ", ".join(f"{n} {op}" for op, n in sorted(c.calls.items()))
            indexes = sum(v for k, v in c.write.items() if k != "table")
            print(f"| {operation} | {size} | {calls} | {c.items_read} | {c.bytes_read:,} | {c.rcu:g} | "
                  f"{c.write['table']:g} | {indexes:g} | {floor} |", flush=True)

        print("| operation | stages | DynamoDB calls | items read | bytes read | RCU | WCU table | "
              "WCU indexes | floor (items read / written) |")
        print("|---|---|---|---|---|---|---|---|---|")
        def one_size(size: int) -> None:
            made: list = []
            row("create run", size, lambda: made.append(make(f"size{size}", size)),
                f"0 / {size + 1} + counter")
            aggregate = made[0]
            run_id, first = aggregate.run.id, aggregate.stages[0].id
            row("PATCH status (first start)", size, lambda: patch(first, status="IN_PROGRESS"), "2 / 2")
            if size > 1:
                second = aggregate.stages[1].id
                row("PATCH status (run already running)", size,
                    lambda: patch(second, status="IN_PROGRESS"), "2 / 2")
            row("PATCH status (stage ends)", size, lambda: patch(first, status="SUCCESS"), "2 / 2")
            row("PATCH name", size, lambda: patch(first, name="renamed"), f"{size + 1} / 2")
            row("GET run", size, lambda: ctx.stores.runs.load_run(run_id), f"{size + 1} / 0")
            row("cancel run", size, lambda: operations.cancel_run(ctx, run_id, actor="bench"),
                f"{size + 1} / {size + 1}")
            row("delete run", size, lambda: runs.delete_run(ctx, run_id), f"{size + 1} / {size + 1}")

        for size in SIZES:
            one_size(size)

        print()
        print("| writers | on | changes | seconds | changes/s | p50 ms | p99 ms | 409s | "
              "resent after a conflict |")
        print("|---|---|---|---|---|---|---|---|---|")
        for writers in (8, 32):
            results: dict[str, list] = {"one run": [], "separate runs": []}
            for _ in range(ROUNDS):
                one = make(f"one{writers}", writers)
                apart = [make(f"apart{writers}x{i}", 1) for i in range(writers)]
                for label, stage_ids in (("one run", [s.id for s in one.stages]),
                                         ("separate runs", [a.stages[0].id for a in apart])):
                    for status in ("IN_PROGRESS", "SUCCESS"):
                        before = ctx.stores.runs.conflicts if hasattr(ctx.stores.runs, "conflicts") else 0

                        def timed(stage_id, status=status):
                            started = time.perf_counter()
                            try:
                                patch(stage_id, status=status)
                                return time.perf_counter() - started, 0
                            except Exception:  # noqa: BLE001 - a 409 (too busy / changed) counts
                                return time.perf_counter() - started, 1

                        started = time.perf_counter()
                        with ThreadPoolExecutor(max_workers=writers) as pool:
                            outcomes = list(pool.map(timed, stage_ids))
                        elapsed = time.perf_counter() - started
                        after = ctx.stores.runs.conflicts if hasattr(ctx.stores.runs, "conflicts") else 0
                        results[label].append((elapsed, outcomes, after - before))
            for label, rounds in results.items():
                seconds = sum(r[0] for r in rounds)
                latencies = sorted(t for r in rounds for t, _ in r[1])
                failed = sum(f for r in rounds for _, f in r[1])
                resent = sum(r[2] for r in rounds)
                p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
                print(f"| {writers} | {label} | {len(latencies)} | {seconds:.2f} | "
                      f"{len(latencies) / seconds:.0f} | {statistics.median(latencies) * 1000:.0f} | "
                      f"{p99 * 1000:.0f} | {failed} | {resent} |", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("STAGETRACK_LOG_LEVEL", "WARNING")
    import logging

    logging.getLogger("stagetrack").setLevel(logging.WARNING)
    logging.getLogger("chalicelib").setLevel(logging.ERROR)
    main()
