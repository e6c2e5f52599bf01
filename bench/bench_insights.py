"""Insights: the reads of one ``GET /api/insights`` answer and the write cost per finished stage,
as history grows, against a real DynamoDB Local (which reports ConsumedCapacity as DynamoDB does).

History: 1,000 and 10,000 finished runs of one pipeline spread over the last 365 days (4 stages
each: build, test, lint, a production deploy; about 1 test in 20 failing and retried), applied by
the consumer's own rules in memory and written as the aggregates it keeps (the rebuild's
``replace_pipeline``: same items). Then, on that table:
- one answer for 1, 30 and 365 days: DynamoDB calls, items read, RCU, time (median of 5);
- 50 more runs finished through the live consumer path (service/insights.py ``add_attempt`` /
  ``add_run``, as the stream hands them over): calls and WCU/RCU per finished stage and per run;
- what arming the overrun and ETA costs per stage start (service/overruns.py ``expect_start``,
  the consumer's step): calls, items read, RCU and WCU, with history and for a stage name
  without any; and what the expectations add to reading the run (its one Query).
Run: .venv/bin/python bench/bench_insights.py
"""
from __future__ import annotations

import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from common import dynamodb_local

SIZES = (1_000, 10_000)
LIVE_RUNS = 50
NOW = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)
STAGES = [("build", None, 120, 600), ("test", None, 60, 900), ("lint", None, 10, 60),
          ("deploy", "production", 30, 180)]


def history(count: int, seed: int, start_counter: int = 1, spread_days: int = 365):
    """The work a stream would hand over for ``count`` runs, in the order it happened."""
    from chalicelib.domain.insights import FinishedAttempt, FinishedRun, RetryRecorded
    from chalicelib.domain.status import StageStatus as S

    rng = random.Random(seed)
    events: list[tuple[datetime, object]] = []
    for number in range(start_counter, start_counter + count):
        run_id = f"web:{number}"
        created = NOW - timedelta(seconds=rng.uniform(0, spread_days * 86_400 - 7_200))
        cursor, start = created, None
        for position, (name, environment, low, high) in enumerate(STAGES, start=1):
            attempts = [S.FAILURE, S.SUCCESS] if name == "test" and rng.random() < 0.05 else [S.SUCCESS]
            ready = cursor
            for attempt, status in enumerate(attempts, start=1):
                if attempt > 1:
                    ready = cursor + timedelta(seconds=rng.uniform(5, 120))
                    events.append((ready, RetryRecorded("web", run_id, position, attempt, ready)))
                began = ready + timedelta(seconds=rng.uniform(1, 30))
                cursor = began + timedelta(seconds=rng.uniform(low, high))
                start = start or began
                events.append((cursor, FinishedAttempt(
                    pipeline="web", run_id=run_id, position=position, name=name, status=status,
                    attempt=attempt, first_attempt=1, created_at=created, started_at=began, ended_at=cursor,
                    environment=environment)))
        events.append((cursor + timedelta(microseconds=1), FinishedRun(
            pipeline="web", run_id=run_id, status=S.SUCCESS, created_at=created, started_at=start,
            ended_at=cursor, order=1, committed_at=created - timedelta(seconds=rng.uniform(60, 86_400)))))
    return [work for _, work in sorted(events, key=lambda e: e[0])]


@dataclass
class Cost:
    count: int = 0
    calls: Counter = field(default_factory=Counter)
    wcu: float = 0.0
    rcu: float = 0.0

    items: int = 0

    def add(self, capacity) -> None:
        self.count += 1
        self.items += capacity.items_read
        self.calls.update(capacity.calls)
        self.wcu += capacity.wcu
        self.rcu += capacity.rcu


def apply(ctx, work) -> tuple[int, int]:
    from chalicelib.domain.insights import FinishedAttempt, RetryRecorded
    from chalicelib.service import insights

    stages = runs = 0
    for item in work:
        if isinstance(item, RetryRecorded):
            ctx.stores.insights.record_retry(item)
        elif isinstance(item, FinishedAttempt):
            insights.add_attempt(ctx, item)
            stages += 1
        else:
            insights.add_run(ctx, item)
            runs += 1
    return stages, runs


START_RUNS = 20


def arming(ctx, size: int) -> dict[str, Cost]:
    """Stage starts of new runs (build with history, a renamed stage without), through the
    consumer's step; and the run's Query before and after its expectations were written."""
    import json

    from chalicelib.domain.overruns import StageStarted
    from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
    from chalicelib.domain.status import StageStatus as S
    from chalicelib.service import overruns, runs
    from tests.fixtures.capacity import measure

    costs = {"start (history)": Cost(), "start (none)": Cost(), "run read before": Cost(),
             "run read after": Cost()}
    for n in range(START_RUNS):
        name = "build" if n % 2 == 0 else f"new-{n}"
        body = {"pipeline": "web", "stages": [{"type": "OTHER", "name": name}] + [
            {"type": "OTHER", "name": stage} for stage, *_ in STAGES[1:]]}
        run = runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps(body)))
        stage = runs.patch_stage(ctx, run.stages[0].id, PatchStageIn(status=S.IN_PROGRESS))
        assert stage.started_at is not None
        started = StageStarted("web", stage.run_id, stage.id, stage.name, stage.attempt, stage.started_at)
        with measure() as capacity:
            ctx.stores.runs.load_run(run.run.id)
        costs["run read before"].add(capacity)
        with measure() as capacity:
            outcome = overruns.expect_start(ctx, started)
        assert outcome == (overruns.WRITTEN if name == "build" else overruns.NO_HISTORY), (size, outcome)
        costs["start (history)" if name == "build" else "start (none)"].add(capacity)
        with measure() as capacity:
            ctx.stores.runs.load_run(run.run.id)
        costs["run read after"].add(capacity)
    return costs


def main() -> None:
    with dynamodb_local() as endpoint:
        from chalicelib import wiring
        from chalicelib.domain.schemas import InsightsQuery
        from chalicelib.service import insights
        from chalicelib.settings import Settings
        from chalicelib.store.schema import ensure_tables
        from tests.fixtures.capacity import measure
        from tests.fixtures.clock import FakeClock

        print(f"{'runs':>6} {'days':>4} {'calls':>5} {'items read':>10} {'RCU':>6} {'answer (median)':>15}")
        writes = []
        starts = []
        for size in SIZES:
            clock = FakeClock(NOW)
            memory = wiring.memory_context(Settings(table_name="bench-memory", region="us-east-1"), clock)
            apply(memory, history(size, seed=size))
            settings = Settings(table_name=f"bench-insights-{size}", region="us-east-1",
                                dynamodb_endpoint=endpoint)
            ensure_tables(settings)
            ctx = wiring.dynamo_context(settings, clock)
            days = memory.stores.insights.read_days("web", "2000-01-01", "2100-01-01").items
            every = memory.stores.insights.read_days(None, "2000-01-01", "2100-01-01").items
            ctx.stores.insights.replace_pipeline(
                "web", {(i.day, i.stage): dict(i.tally) for i in days},
                memory.stores.insights.pipeline_state("web"), {})
            ctx.stores.insights.replace_all_pipelines({(i.day, i.stage): dict(i.tally) for i in every})
            for span in (1, 30, 365):
                first = (NOW - timedelta(days=span - 1)).date().isoformat()
                query = InsightsQuery.model_validate({"pipeline": "web", "from": first,
                                                      "to": NOW.date().isoformat()})
                insights.answer(ctx, None, query)  # warm
                samples = []
                for _ in range(5):
                    with measure() as capacity:
                        began = time.perf_counter()
                        found = insights.answer(ctx, None, query)
                        samples.append(time.perf_counter() - began)
                assert found.body["runs"]["total"] > 0 or span == 1
                print(f"{size:>6} {span:>4} {sum(capacity.calls.values()):>5} {capacity.items_read:>10} "
                      f"{capacity.rcu:>6.1f} {statistics.median(samples) * 1000:>12.1f} ms")
            live = history(LIVE_RUNS, seed=size + 1, start_counter=size + 1, spread_days=1)
            totals = {"stage": Cost(), "run": Cost()}
            for item in live:
                with measure() as capacity:
                    applied = apply(ctx, [item])
                key = "stage" if applied == (1, 0) else "run" if applied == (0, 1) else None
                if key is not None:
                    totals[key].add(capacity)
            writes.append((size, totals))
            starts.append((size, arming(ctx, size)))
        print(f"\n{'history':>7} {'finished':>9} {'count':>5} {'calls each':>30} {'WCU each':>8} "
              f"{'RCU each':>8}")
        for size, totals in writes:
            for kind, cost in totals.items():
                each = ", ".join(f"{op} {n / cost.count:.2f}" for op, n in sorted(cost.calls.items()))
                print(f"{size:>7} {kind:>9} {cost.count:>5} {each:>30} {cost.wcu / cost.count:>8.2f} "
                      f"{cost.rcu / cost.count:>8.2f}")
        print(f"\n{'history':>7} {'step':>16} {'count':>5} {'calls each':>34} {'items':>6} {'WCU each':>8} "
              f"{'RCU each':>8}")
        for size, costs in starts:
            for kind, cost in costs.items():
                each = ", ".join(f"{op} {n / cost.count:.2f}" for op, n in sorted(cost.calls.items()))
                print(f"{size:>7} {kind:>16} {cost.count:>5} {each:>34} {cost.items / cost.count:>6.1f} "
                      f"{cost.wcu / cost.count:>8.2f} {cost.rcu / cost.count:>8.2f}")


if __name__ == "__main__":
    main()
