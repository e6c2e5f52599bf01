"""Issue 12: what each operation costs as the run grows and as a stage's history grows, its
latency against the bare DynamoDB calls it needs, and writers on one run against many.

Against a real DynamoDB Local with ``ReturnConsumedCapacity=INDEXES`` on every call
(tests/fixtures/capacity.py), through the service functions the endpoints call:
- per operation and run size (1, 10, 50, 256 stages), and per read, PATCH and retry of a stage
  retried 0, 10 and 99 times (a stage has at most 100 attempts): DynamoDB calls, items read,
  bytes read, read and write units (table + indexes), and the floor: the items the operation
  must read and write at the least (a one-stage change: that stage and the run's summary);
- the median latency of each of those operations and of its floor's bare calls, sent by hand
  with boto3's low-level client on a twin of the run in the same table (bench/floor.py), and
  their ratio (what stagetrack adds on top of the DynamoDB work that cannot be avoided);
- 8 and 32 writers, each moving its own stage through IN_PROGRESS and SUCCESS, on one run against
  the same writers on separate runs: throughput and p50/p99 latency of one change.
Capacity comes from a first, untimed round; latency from ROUNDS more (the retry rows: one
sample per stage of the run). Times are printed, never asserted.
Run: .venv/bin/python bench/bench_writes.py [ROUNDS]   (default 5; the writers: 3 rounds)
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from common import ROOT, dynamodb_local

from bench.floor import Floor, Snapshot, timed  # common put the repository on sys.path

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
WRITER_ROUNDS = 3
SIZES = (1, 10, 50, 256)
RETRIES = (0, 10, 99)  # ended attempts of every stage: 99 is the most (MAX_ATTEMPTS = 100)
RETRIED_STAGES = 6  # the run whose stages carry that history (the 6-stage case)
TABLE = "stagetrack-bench-writes"


class Rows:
    """Capacity (first round) and latencies (later rounds) of each row, printed in order."""

    def __init__(self) -> None:
        self.capacity: dict[tuple, Any] = {}  # tests.fixtures.capacity.Capacity
        self.floor_text: dict[tuple, str] = {}
        self.op: dict[tuple, list[float]] = {}
        self.bare: dict[tuple, list[float]] = {}

    def run(self, key: tuple, action: Callable[[], object], floor: Callable[[], Callable[[], object]],
            floor_text: str, measured: bool) -> None:
        """``action`` is the operation; ``floor()`` (after it, untimed) reads what it needs and
        returns the bare calls, which are then timed. The first round measures capacity."""
        from tests.fixtures.capacity import measure

        self.floor_text[key] = floor_text
        if measured:
            with measure() as capacity:
                action()
            self.capacity[key] = capacity
            floor()()
            return
        self.op.setdefault(key, []).append(timed(action))
        self.bare.setdefault(key, []).append(timed(floor()))

    def print(self, heading: str) -> None:
        print(f"| operation | {heading} | DynamoDB calls | items read | bytes read | RCU | WCU table | "
              "WCU indexes | floor (items read / written) | p50 ms | floor ms | ratio |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for key, c in self.capacity.items():
            calls = ", ".join(f"{n} {op}" for op, n in sorted(c.calls.items()))
            indexes = sum(v for k, v in c.write.items() if k != "table")
            op_ms = statistics.median(self.op[key]) * 1000
            bare_ms = statistics.median(self.bare[key]) * 1000
            print(f"| {key[0]} | {key[1]} | {calls} | {c.items_read} | {c.bytes_read:,} | {c.rcu:g} | "
                  f"{c.write['table']:g} | {indexes:g} | {self.floor_text[key]} | {op_ms:.1f} | "
                  f"{bare_ms:.1f} | {op_ms / bare_ms:.2f} |", flush=True)
        print()


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from chalicelib import wiring
    from chalicelib.domain.model import StageSpec, new_run
    from chalicelib.domain.operations import MAX_ATTEMPTS
    from chalicelib.domain.schemas import PatchStageIn
    from chalicelib.domain.status import StageStatus
    from chalicelib.service import operations, runs
    from chalicelib.settings import Settings
    from chalicelib.store.schema import ensure_tables
    from tests.fixtures.clock import FakeClock
    from tests.fixtures.history import retried_run

    with dynamodb_local() as endpoint:
        settings = Settings.on_local(endpoint, table_name=TABLE, region="us-east-1")
        ensure_tables(settings)
        clock = FakeClock()
        ctx = wiring.dynamo_context(settings, clock)
        floor = Floor(endpoint, TABLE)
        counters: dict[str, int] = {}

        def make(pipeline: str, stages: int):
            """A run inserted directly (the writers' setup: no counter claim)."""
            counters[pipeline] = counters.get(pipeline, 0) + 1
            specs = [StageSpec(type="OTHER", name=f"s{i}") for i in range(stages)]
            aggregate = new_run(pipeline, counters[pipeline], specs, clock.now())
            ctx.stores.runs.insert_run(aggregate)
            return aggregate

        def create(pipeline: str, stages: int):
            """runs.create_run's two round trips (the counter, then the run's transaction(s));
            the API's CreateRunIn allows 50 stages, a sender's run (the hardening issue) 256."""
            counter, _ = ctx.stores.pipelines.claim_counter(pipeline)
            specs = [StageSpec(type="OTHER", name=f"s{i}") for i in range(stages)]
            aggregate = new_run(pipeline, counter, specs, clock.now())
            ctx.stores.runs.insert_run(aggregate)
            return aggregate

        def patch(stage_id: str, **fields):
            return runs.patch_stage(ctx, stage_id, PatchStageIn.model_validate_json(json.dumps(fields)))

        def twin_of(snapshot: Snapshot, twin: str) -> Snapshot:
            return snapshot.renamed(twin)

        # ---- run sizes: the chain create .. delete, once measured, then ROUNDS timed ----------
        sizes = Rows()

        def size_round(size: int, measured: bool) -> None:
            made: list = []
            twin = floor.twin_id()
            key = lambda operation: (operation, size)  # noqa: E731
            pipeline = f"size{size}"

            def after(run_id: str, attempts_of: tuple[str, ...] = ()) -> Snapshot:
                return twin_of(floor.snapshot(run_id, attempts_of), twin)

            def on_twin(stage_id: str) -> str:
                return stage_id.replace(made[0].run.id, twin, 1)

            sizes.run(key("create run"), lambda: made.append(create(pipeline, size)),
                      lambda: partial(floor.create, after(made[0].run.id)),
                      f"0 / {size + 1} + counter", measured)
            aggregate = made[0]
            run_id, first = aggregate.run.id, aggregate.stages[0].id
            one = "2 / 2"
            sizes.run(key("PATCH status (first start)"), lambda: patch(first, status="IN_PROGRESS"),
                      lambda: partial(floor.stage_change, after(run_id), on_twin(first)), one, measured)
            if size > 1:
                second = aggregate.stages[1].id
                sizes.run(key("PATCH status (run already running)"),
                          lambda: patch(second, status="IN_PROGRESS"),
                          lambda: partial(floor.stage_change, after(run_id), on_twin(second)), one,
                          measured)
            sizes.run(key("PATCH status (stage ends)"), lambda: patch(first, status="SUCCESS"),
                      lambda: partial(floor.stage_change, after(run_id), on_twin(first)), one, measured)
            sizes.run(key("PATCH name"), lambda: patch(first, name="renamed"),
                      lambda: partial(floor.rename, after(run_id), on_twin(first)), f"{size + 1} / 2",
                      measured)
            def retried() -> Callable[[], object]:
                s = after(run_id, (first,))
                return partial(floor.stage_change, s, on_twin(first), s.attempts[on_twin(first)][-1])

            sizes.run(key("retry stage"), lambda: operations.retry_stage(ctx, first), retried, "2 / 3",
                      measured)
            sizes.run(key("GET run"), lambda: runs.get_run(ctx, run_id),
                      lambda: partial(floor.get_run, after(run_id)), f"{size + 1} / 0", measured)
            before = after(run_id)
            sizes.run(key("cancel run"), lambda: operations.cancel_run(ctx, run_id, actor="bench"),
                      lambda: partial(floor.cancel, before, after(run_id)), f"{size + 1} / {size + 1}",
                      measured)
            before = after(run_id, (first,))
            sizes.run(key("delete run"), lambda: runs.delete_run(ctx, run_id),
                      lambda: partial(floor.delete, before), f"{size + 1} / {size + 1}", measured)

        for size in SIZES:
            for round_ in range(ROUNDS + 1):
                size_round(size, measured=round_ == 0)
        sizes.print("stages")

        # ---- retry history: a 6-stage run whose stages were each retried N times -------------
        history = Rows()

        def history_rows(retries: int) -> None:
            base = min(retries, MAX_ATTEMPTS - 2)  # a stage at attempt 100 can no longer be retried
            aggregate = retried_run(ctx, clock, stages=RETRIED_STAGES, retries=base,
                                    pipeline=f"retried{retries}", outcome=StageStatus.FAILURE)
            run_id, stage_ids = aggregate.run.id, [s.id for s in aggregate.stages]
            twin = floor.twin_id()

            def snap() -> Snapshot:
                return floor.snapshot(run_id).renamed(twin)

            def on_twin(stage_id: str) -> str:
                return stage_id.replace(run_id, twin, 1)

            def retry_each(level) -> None:
                """Every stage running, each fails and is retried in turn (the first untimed: it
                moves the run); the second is measured, the others timed: one sample per stage."""
                for index, stage_id in enumerate(stage_ids):
                    patch(stage_id, status="FAILURE")
                    if index == 0:
                        operations.retry_stage(ctx, stage_id)
                        continue

                    def ended_floor(stage_id=stage_id):
                        s = snap()
                        ended = s.attempts[on_twin(stage_id)][-1]
                        return lambda: floor.stage_change(s, on_twin(stage_id), ended)

                    history.run(("retry stage", level), partial(operations.retry_stage, ctx, stage_id),
                                ended_floor, "2 / 3", index == 1)

            label = retries if retries == base else f"{retries} ({base} → {retries})"
            floor.plant(snap())
            if retries != base:  # the retry that makes the 99th ended attempt, then the reads
                for stage_id in stage_ids:
                    patch(stage_id, status="IN_PROGRESS")
                retry_each(label)
            first = stage_ids[0]
            ended = retries * RETRIED_STAGES
            page = min(retries, 21)  # a page of 20 and whether there is more
            for round_ in range(ROUNDS + 1):
                measured = round_ == 0
                history.run(("GET run", retries), lambda: runs.get_run(ctx, run_id),
                            lambda: partial(floor.get_run, snap()), f"{RETRIED_STAGES + 1} / 0", measured)
                history.run(("GET stage", retries), lambda: runs.get_stage(ctx, first),
                            lambda: partial(floor.get_stage, snap(), on_twin(first)), "1 / 0", measured)
                history.run(("GET run ?include=attempts", retries),
                            lambda: runs.attempts_of_run(ctx, runs.get_run(ctx, run_id)),
                            lambda: partial(floor.get_run_with_attempts, snap()),
                            f"{RETRIED_STAGES + 1 + ended} / 0", measured)
                history.run(("GET attempts (first page)", retries),
                            lambda: runs.stage_attempts(ctx, first, 20, None),
                            lambda: partial(floor.attempts_page, snap(), on_twin(first)),
                            f"{1 + page} / 0", measured)
            # a status PATCH of each stage (the first untimed: it starts the run)
            for index, stage_id in enumerate(stage_ids):
                def patched_floor(stage_id=stage_id):
                    s = snap()
                    return lambda: floor.stage_change(s, on_twin(stage_id))

                if index == 0:
                    patch(stage_id, status="IN_PROGRESS")
                    continue
                history.run(("PATCH status", retries), partial(patch, stage_id, status="IN_PROGRESS"),
                            patched_floor, "2 / 2", index == 1)
            if retries == base:
                retry_each(retries)  # every stage is running (the PATCH rows)

        for retries in RETRIES:
            history_rows(retries)
        history.print("retries")

        print()
        print("| writers | on | changes | seconds | changes/s | p50 ms | p99 ms | 409s | "
              "resent after a conflict |")
        print("|---|---|---|---|---|---|---|---|---|")
        for writers in (8, 32):
            results: dict[str, list] = {"one run": [], "separate runs": []}
            for _ in range(WRITER_ROUNDS):
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
