"""What a concurrency group adds to creating a run, and to the end of the run holding it,
against a real DynamoDB Local (service calls, no HTTP: the difference is the group's round trips).

For each case it prints the DynamoDB calls of one operation and the median time of N of them:
a create on a PARALLEL pipeline (the baseline), on a QUEUED pipeline whose group is free, on one
whose group is held (the run queues), on a SUPERSEDED pipeline whose holder is running (its cancel
joins the create's transaction), on a QUEUED pipeline with the NEWEST queue whose group is held
and has a run waiting (that run's cancel joins the create's transaction: it is replaced), and a
stage change that ends a holder with a run waiting (the promotion follows).
Run: .venv/bin/python bench/bench_concurrency.py [operations per case]
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from collections import Counter

from common import dynamodb_local, record_calls

N = int(sys.argv[1]) if len(sys.argv) > 1 else 30


def main() -> None:
    with dynamodb_local() as endpoint:
        from chalicelib import wiring
        from chalicelib.domain.concurrency import Mode, Queue
        from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
        from chalicelib.domain.status import StageStatus
        from chalicelib.service import concurrency, runs
        from chalicelib.settings import Settings
        from chalicelib.store.schema import ensure_tables
        from tests.fixtures.clock import FakeClock

        settings = Settings(table_name="bench-concurrency", region="us-east-1", dynamodb_endpoint=endpoint)
        ensure_tables(settings)
        ctx = wiring.dynamo_context(settings, FakeClock())
        body = CreateRunIn.model_validate_json(json.dumps({"pipeline": "p", "stages": ["BUILD"]}))

        def create(pipeline: str):
            return runs.create_run(ctx, body.model_copy(update={"pipeline": pipeline}), actor="bench")

        def patch(stage_id: str, status: StageStatus) -> None:
            runs.patch_stage(ctx, stage_id, PatchStageIn(status=status))

        for pipeline, mode in (("par", Mode.PARALLEL), ("free", Mode.QUEUED), ("held", Mode.QUEUED),
                               ("sup", Mode.SUPERSEDED)):
            create(pipeline)
            concurrency.set_setting(ctx, pipeline, mode, None)
        create("newest")
        concurrency.set_setting(ctx, "newest", Mode.QUEUED, None, Queue.NEWEST)
        for _ in range(100):  # warm the JVM
            create("par")

        def measure(name: str, before, operation) -> None:
            times: list[float] = []
            calls: Counter[str] = Counter()
            for _ in range(N):
                argument = before()
                with record_calls() as recorded:
                    start = time.perf_counter()
                    operation(argument)
                    times.append((time.perf_counter() - start) * 1000)
                calls = Counter(op for op, _ in recorded)
            shown = ", ".join(f"{count} {op}" for op, count in sorted(calls.items()))
            print(f"| {name} | {shown} | {statistics.median(times):.1f} |")

        def free_group():
            group = ctx.stores.groups.get("free", "free")
            if group is not None and group.active:  # end the holder first: the group is free again
                patch(f"{group.active}:1", StageStatus.IN_PROGRESS)
                patch(f"{group.active}:1", StageStatus.SUCCESS)

        def running_holder():
            run = create("sup")
            patch(f"{run.run.id}:1", StageStatus.IN_PROGRESS)

        fresh = iter(range(10**6))

        def holder_with_a_waiter():
            pipeline = f"end{next(fresh)}"  # a pipeline of its own each time: its group is free
            create(pipeline)
            concurrency.set_setting(ctx, pipeline, Mode.QUEUED, None)
            holder = create(pipeline)
            create(pipeline)
            patch(f"{holder.run.id}:1", StageStatus.IN_PROGRESS)
            return holder.run.id

        print("| operation | DynamoDB calls | p50 ms |\n|---|---|---|")
        measure("create, PARALLEL", lambda: None, lambda _: create("par"))
        measure("create, QUEUED, group free", free_group, lambda _: create("free"))
        create("held")
        measure("create, QUEUED, group held (queues)", lambda: None, lambda _: create("held"))
        measure("create, SUPERSEDED, holder running", running_holder, lambda _: create("sup"))
        create("newest")  # holds the group
        create("newest")  # waits: each create below replaces the one waiting
        measure("create, QUEUED NEWEST, a run waiting (replaced)", lambda: None, lambda _: create("newest"))
        measure("holder's last stage ends, next run promoted", holder_with_a_waiter,
                lambda run_id: patch(f"{run_id}:1", StageStatus.SUCCESS))


if __name__ == "__main__":
    main()
