"""Automatic retries racing people on a real DynamoDB Local (domain/retries.py).

A stage whose attempt failed waits at RETRY_PENDING, its moment come; at the same instant (a
barrier) its timer fires twice (the Step Functions execution and the sweeper), a person retries
it by hand and another cancels it. Whatever the interleaving, the outcome is one that running
the same operations one after another gives on the pure domain: exactly one new attempt comes
from the automatic retry (a cancel wins; a manual retry takes it, never a second one), no
attempt is recorded twice, and the run item's per-status counters and stored status agree with
the stages.
"""
from __future__ import annotations

import itertools
import json
from functools import partial

import pytest

from chalicelib.domain import operations as rules
from chalicelib.domain.errors import Conflict
from chalicelib.domain.model import run_status_of, status_counts
from chalicelib.domain.retries import schedule_retries
from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
from chalicelib.domain.status import StageStatus as S
from chalicelib.domain.timers import fire
from chalicelib.service import operations, runs
from chalicelib.service.timers import expire_stage
from chalicelib.store import models
from chalicelib.store.repository import counts_of
from tests.integration.test_races_local import run_threads

pytestmark = pytest.mark.ddb_local
ROUNDS = 6


def pending_retry(ctx):
    """Stage A failed, its automatic retry due now; stage B not started."""
    body = {"pipeline": "retry-race", "stages": [
        {"type": "BUILD", "name": "A", "retry": {"max": 2, "backoffSeconds": 5}},
        {"type": "OTHER", "name": "B"}]}
    aggregate = runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps(body)))
    a = aggregate.stages[0].id
    runs.patch_stage(ctx, a, PatchStageIn(status=S.IN_PROGRESS))
    assert runs.patch_stage(ctx, a, PatchStageIn(status=S.FAILURE)).status == S.RETRY_PENDING
    ctx.clock.advance(5)
    return ctx.stores.runs.load_run(aggregate.run.id)


def summary(ctx, aggregate) -> tuple:
    stage = aggregate.stages[0]
    history = [entry["status"] for entry in ctx.stores.runs.attempts_of([stage]).get(stage.id, [])]
    return stage.status, stage.attempt, stage.auto_retries, tuple(history), aggregate.stages[1].status


def serial_outcomes(ctx, initial, names) -> set:
    """Every final (stage A, its ended attempts, stage B) some serial order of them produces."""
    now = ctx.clock.now()
    a = initial.stages[0].id
    pure = {
        "timer": lambda g: fire(g.stage(a), now),
        "sweeper": lambda g: fire(g.stage(a), now),
        "retry": lambda g: bool(rules.retry_stage(g, a, now)),
        "cancel": lambda g: rules.cancel_stage(g, a, now, actor="t"),
    }
    known = [entry["status"] for entry in ctx.stores.runs.attempts_of([initial.stages[0]])[a]]
    possible = set()
    for order in itertools.permutations(names):
        aggregate = initial.snapshot()
        history = list(known)
        for name in order:
            before = aggregate.snapshot()
            try:
                changed = pure[name](aggregate)
            except Conflict:
                continue
            if changed:
                schedule_retries(before, aggregate, now)
            history += [entry["status"] for entry in aggregate.stages[0].attempts]
            aggregate.stages[0].attempts = []
        stage = aggregate.stages[0]
        possible.add((stage.status, stage.attempt, stage.auto_retries, tuple(history),
                      aggregate.stages[1].status))
    return possible


@pytest.mark.parametrize("names", [
    ("timer", "sweeper"),
    ("timer", "sweeper", "retry"),
    ("timer", "sweeper", "cancel"),
    ("timer", "retry", "cancel"),
])
def test_an_automatic_retry_racing_people_makes_exactly_one_new_attempt(local_ctx, names):
    ctx = local_ctx
    for _ in range(ROUNDS):
        initial = pending_retry(ctx)
        run_id, a = initial.run.id, initial.stages[0].id
        real = {
            "timer": partial(expire_stage, ctx, a, 2),
            "sweeper": partial(expire_stage, ctx, a, 2),
            "retry": partial(operations.retry_stage, ctx, a),
            "cancel": partial(operations.cancel_stage, ctx, a, actor="t"),
        }
        outcomes = run_threads({name: real[name] for name in names})
        assert not [o for o in outcomes.values() if o != "ok" and o[0] == "error"], outcomes
        final = ctx.stores.runs.load_run(run_id)
        actual = summary(ctx, final)
        assert actual in serial_outcomes(ctx, initial, names), (actual, outcomes)
        status, attempt, retries, history, _ = actual
        assert retries == 1 and history[0] == "FAILURE"  # the one automatic retry, once
        if "retry" not in names or status != S.IDLE:
            assert attempt == 2  # no second attempt from the pending one
        # the run item's summary agrees with its stages (counters, stored status)
        item = ctx.stores.runs.items.run.get(f"RUN#{run_id}", models.RUN_SK, consistent_read=True)
        counts = {s: n for s, n in (counts_of(item) or {}).items() if n}
        assert counts == status_counts(final.stages)
        assert item.status == run_status_of(final.stages).value == final.run.status.value
