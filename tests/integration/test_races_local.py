"""Threads racing operations on one run against a real DynamoDB Local: no lost update.

Each round starts cancel, approve, reject-less patch, stage cancel and a variables merge on the
same run at the same moment (a barrier), then checks the result is linearizable: the final run
and every thread's answer (done, or refused with 409) must be exactly what running the same
operations one after another, in some order, gives on the pure domain. A lost update (a write
based on a stale read that overwrote another) matches no order and fails the test.
"""
from __future__ import annotations

import itertools
import json
from functools import partial

import pytest

from chalicelib.domain import operations as rules
from chalicelib.domain.errors import Conflict
from chalicelib.domain.model import change_status, run_status_of
from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
from chalicelib.domain.status import StageStatus as S
from chalicelib.service import operations, runs
from tests.fixtures.threads import run_threads

pytestmark = pytest.mark.ddb_local
ROUNDS = 8


def prepared_run(ctx):
    """Stage A running, stage B waiting at its gate, stage C not started."""
    body = {"pipeline": "race", "stages": [{"type": "BUILD", "name": "A"},
                                           {"type": "DEPLOY_PROD", "name": "B", "approval": "MANUAL"},
                                           {"type": "OTHER", "name": "C"}]}
    aggregate = runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps(body)))
    a, b, _ = (s.id for s in aggregate.stages)
    runs.patch_stage(ctx, a, PatchStageIn(status=S.IN_PROGRESS))
    runs.patch_stage(ctx, b, PatchStageIn(status=S.IN_PROGRESS))
    return ctx.stores.runs.load_run(aggregate.run.id)


def summary(aggregate, outcomes: dict) -> tuple:
    decision = aggregate.stages[1].approval_decision
    return (
        tuple(s.status for s in aggregate.stages),
        decision and decision["decision"],
        tuple(sorted(aggregate.run.variables.items())),
        aggregate.run.cancellation is not None,
        tuple(sorted((name, "ok" if result == "ok" else "409") for name, result in outcomes.items())),
    )


def serial_outcomes(initial, now, names) -> set:
    """Every (final run, answers) some serial order of the operations produces."""
    a, b, _ = (s.id for s in initial.stages)
    pure = {
        "cancel_run": lambda g: rules.cancel_run(g, now, actor="t"),
        "approve_b": lambda g: rules.decide(g, b, rules.APPROVED, now, actor="t"),
        "patch_a": lambda g: change_status(g.stage(a), S.SUCCESS, now),
        "cancel_b": lambda g: rules.cancel_stage(g, b, now, actor="t"),
        "variables": lambda g: rules.apply_variables(g, [rules.VariableChange("RACE", "1")], "p"),
    }
    possible = set()
    for order in itertools.permutations(names):
        aggregate = initial.snapshot()
        outcomes = {}
        for name in order:
            try:
                pure[name](aggregate)
                outcomes[name] = "ok"
            except Conflict:
                outcomes[name] = "conflict"
            aggregate.refresh(now)
        possible.add(summary(aggregate, outcomes))
    return possible


@pytest.mark.parametrize("names", [
    ("cancel_run", "approve_b", "patch_a"),
    ("cancel_run", "approve_b", "patch_a", "cancel_b", "variables"),
    ("approve_b", "cancel_b", "variables"),
])
def test_cancel_approve_and_patch_races_are_linearizable(local_ctx, names):
    ctx = local_ctx
    for _ in range(ROUNDS):
        initial = prepared_run(ctx)
        run_id = initial.run.id
        a, b, _ = (s.id for s in initial.stages)
        real = {
            "cancel_run": partial(operations.cancel_run, ctx, run_id, actor="t"),
            "approve_b": partial(operations.approve_stage, ctx, b, actor="t"),
            "patch_a": partial(runs.patch_stage, ctx, a, PatchStageIn(status=S.SUCCESS)),
            "cancel_b": partial(operations.cancel_stage, ctx, b, actor="t"),
            "variables": partial(
                operations.apply_variables, ctx, run_id, [rules.VariableChange("RACE", "1")]
            ),
        }
        outcomes = run_threads({name: real[name] for name in names})
        assert not [o for o in outcomes.values() if o != "ok" and o[0] == "error"], outcomes
        final = ctx.stores.runs.load_run(run_id)
        actual = summary(final, outcomes)
        assert actual in serial_outcomes(initial, ctx.clock.now(), names), (actual, outcomes)
        assert final.run.status == run_status_of(final.stages)
        # every successful writer bumped the run once; refused ones and no-ops wrote nothing
        writes = sum(1 for o in outcomes.values() if o == "ok")
        assert final.run.version <= initial.run.version + writes


def test_approve_and_reject_race_one_decision_wins(local_ctx):
    ctx = local_ctx
    for _ in range(ROUNDS):
        initial = prepared_run(ctx)
        b = initial.stages[1].id
        outcomes = run_threads({
            "approve": partial(operations.approve_stage, ctx, b, actor="x"),
            "reject": partial(operations.reject_stage, ctx, b, actor="y"),
            "approve_again": partial(operations.approve_stage, ctx, b, actor="z"),
        })
        stage = ctx.stores.runs.load_run(initial.run.id).stages[1]
        decision = stage.approval_decision["decision"]
        if decision == rules.APPROVED:
            assert stage.status == S.IN_PROGRESS
            assert outcomes["approve"] == outcomes["approve_again"] == "ok"
            assert outcomes["reject"] == ("conflict", "already_decided")
        else:
            assert stage.status == S.FAILURE and outcomes["reject"] == "ok"
            assert {outcomes["approve"], outcomes["approve_again"]} == {("conflict", "already_decided")}
        assert stage.version == initial.stages[1].version + 1, "exactly one decision was written"


def test_many_concurrent_cancels_write_once(local_ctx):
    ctx = local_ctx
    initial = prepared_run(ctx)
    outcomes = run_threads(
        {
            f"cancel{i}": (lambda i=i: operations.cancel_run(ctx, initial.run.id, actor=f"u{i}"))
            for i in range(6)
        }
    )
    assert set(outcomes.values()) == {"ok"}, outcomes
    final = ctx.stores.runs.load_run(initial.run.id)
    assert [s.status for s in final.stages] == [S.CANCELLED, S.CANCELLED, S.SKIPPED]
    assert final.run.version == initial.run.version + 1, "the first cancel wrote; the others were no-ops"


def policy_gate(ctx, required: int, approvers: list[str]):
    """A run whose one stage waits at a gate that ``required`` of ``approvers`` must approve."""
    body = {"pipeline": "race", "stages": [{"type": "DEPLOY_PROD", "name": "G", "approval": "MANUAL",
                                            "approvers": approvers, "required": required}]}
    aggregate = runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps(body)), actor="creator")
    gate = aggregate.stages[0].id
    runs.patch_stage(ctx, gate, PatchStageIn(status=S.IN_PROGRESS))
    return gate


@pytest.mark.parametrize("required", [4, 2])
def test_concurrent_approvals_by_different_approvers_all_count(local_ctx, required):
    """Four approvers deciding at the same moment: no decision is lost. With 4 of 4 every one is
    recorded and the gate opens; with 2 of 4 the first two open it and the others find it no
    longer waiting (409), never a gate opened with a decision missing."""
    ctx = local_ctx
    people = ["p1", "p2", "p3", "p4"]
    for _ in range(ROUNDS // 2):
        gate = policy_gate(ctx, required, people)
        outcomes = run_threads({who: partial(operations.approve_stage, ctx, gate, actor=who, comment=who)
                                for who in people})
        stage = ctx.stores.runs.load_stage(gate).stage(gate)
        ok = sorted(who for who, result in outcomes.items() if result == "ok")
        assert stage.status == S.IN_PROGRESS
        assert sorted(d["by"] for d in stage.approvals) == ok and len(ok) == required, outcomes
        assert all(result == ("conflict", "illegal_transition") for who, result in outcomes.items()
                   if who not in ok), outcomes
        assert stage.approval_decision["by"] == stage.approvals[-1]["by"]
