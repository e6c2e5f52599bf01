"""A graceful stop racing with the stages it lets finish, on a real DynamoDB Local.

The stop is a change of the whole run (conditioned on the run's version and change counter);
each stage ending is a change of that stage alone (conditioned on its own version and the run's
version, its run status set by the counters or settled after). Whatever order they commit in,
every writer lands (no 409), the stages end as their senders said, the run ends CANCELLED, and
the run item's stored status, index key, counters and bounds are exactly what the stages make.
"""
from __future__ import annotations

import json

import pytest

from chalicelib.domain.clock import format_iso
from chalicelib.domain.model import run_status_of
from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
from chalicelib.domain.status import StageStatus as S
from chalicelib.service import commands, operations, runs
from chalicelib.store.models import RUN_SK, run_pk
from tests.fixtures.backends import items_of
from tests.fixtures.threads import run_threads

pytestmark = pytest.mark.ddb_local
ROUNDS = 6


def running_run(ctx, pipeline: str):
    """Stages s0..s2 running, s3 not started."""
    body = {"pipeline": pipeline, "stages": [{"type": "OTHER", "name": f"s{i}"} for i in range(4)]}
    aggregate = runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps(body)))
    for stage in aggregate.stages[:3]:
        runs.patch_stage(ctx, stage.id, PatchStageIn(status=S.IN_PROGRESS))
    return aggregate


def assert_stored_exactly(ctx, run_id: str, pipeline: str, expected: S) -> None:
    final = ctx.stores.runs.load_run(run_id)
    stopping = final.run.stopping is not None
    assert final.run.status == run_status_of(final.stages, stopping=stopping) == expected
    item = items_of(ctx).run.get(run_pk(run_id), RUN_SK, consistent_read=True)
    assert (item.status, item.pipeline_status) == (expected.value, f"{pipeline}#{expected.value}")
    counts = {s: sum(1 for stage in final.stages if stage.status == s) for s in S if s != S.CANCELLING}
    assert {s: int(getattr(item, f"n_{s.value.lower()}") or 0) for s in counts} == counts
    assert item.last_end == format_iso(max(s.ended_at for s in final.stages if s.ended_at))
    assert not any(s.cancel_at for s in final.stages)  # nothing left for a grace timer to do


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_a_stop_racing_with_its_running_stages_finishing_loses_nothing(local_ctx, round_):
    ctx = local_ctx
    pipeline = f"race{round_}"
    aggregate = running_run(ctx, pipeline)
    s0, s1, s2 = (s.id for s in aggregate.stages[:3])
    ends = {s0: S.SUCCESS, s1: S.FAILURE, s2: S.SUCCESS}
    outcomes = run_threads({
        "stop": lambda: commands.execute(ctx, commands.StopRun(pipeline, 1, "race", 60), actor="ops"),
        **{f"end {sid}": (lambda sid=sid, end=end: runs.patch_stage(ctx, sid, PatchStageIn(status=end)))
           for sid, end in ends.items()},
    })
    assert set(outcomes.values()) == {"ok"}, outcomes  # the senders' ends are never refused
    final = ctx.stores.runs.load_run(aggregate.run.id)
    if final.run.stopping is None:  # every stage ended first: a FAILURE run is over, stop a no-op
        assert [s.status for s in final.stages] == [S.SUCCESS, S.FAILURE, S.SUCCESS, S.IDLE]
        assert_stored_exactly(ctx, aggregate.run.id, pipeline, S.FAILURE)
    else:
        assert [s.status for s in final.stages] == [S.SUCCESS, S.FAILURE, S.SUCCESS, S.SKIPPED]
        assert final.run.stopping["mode"] == "STOP"
        assert_stored_exactly(ctx, aggregate.run.id, pipeline, S.CANCELLED)
    assert ctx.stores.timers.due_timers("9999-12-31T23:59:59.999Z").timers == []


def test_a_stop_a_cancel_and_the_stages_ending_all_race_and_the_run_ends_cancelled(local_ctx):
    ctx = local_ctx
    for round_ in range(3):
        pipeline = f"both{round_}"
        aggregate = running_run(ctx, pipeline)
        s0, s1, _ = (s.id for s in aggregate.stages[:3])
        run_id = aggregate.run.id
        outcomes = run_threads({
            "stop": lambda p=pipeline: commands.execute(ctx, commands.StopRun(p, 1, None, 60), actor="ops"),
            "cancel": lambda r=run_id: operations.cancel_run(ctx, r, actor="ops"),
            "end s0": lambda s=s0: runs.patch_stage(ctx, s, PatchStageIn(status=S.SUCCESS)),
            "end s1": lambda s=s1: runs.patch_stage(ctx, s, PatchStageIn(status=S.SUCCESS)),
        })
        # a stage ending after the cancel finds it CANCELLED already: its sender's 409 (read after
        # the cancel: illegal_transition; read before it and lost the write: conflict)
        refused = {("conflict", "illegal_transition"), ("conflict", "conflict")}
        assert set(outcomes.values()) <= {"ok", *refused}, outcomes
        assert outcomes["stop"] == outcomes["cancel"] == "ok"
        final = ctx.stores.runs.load_run(aggregate.run.id)
        assert all(s.status in (S.SUCCESS, S.CANCELLED, S.SKIPPED) for s in final.stages)
        assert final.stages[2].status == S.CANCELLED  # no sender ended it: the cancel did
        assert_stored_exactly(ctx, aggregate.run.id, pipeline, S.CANCELLED)


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_a_force_cancel_racing_the_finally_stage_starting_leaves_it_ended(local_ctx, round_):
    """After a plain cancel the sender starts the cleanup (a finally stage) while someone
    force-cancels: whichever commits first, the force-cancel lands, nothing is left running or
    to start, and the run is CANCELLED (stored exactly): the cleanup SKIPPED (the force came
    first; the sender's start is a 409) or CANCELLED (it had started)."""
    ctx = local_ctx
    pipeline = f"force{round_}"
    body = {"pipeline": pipeline, "stages": ["BUILD", "UNIT_TEST", {"type": "OTHER", "name": "cleanup",
                                                                    "always": True}]}
    aggregate = runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps(body)))
    build, _, cleanup = (s.id for s in aggregate.stages)
    runs.patch_stage(ctx, build, PatchStageIn(status=S.IN_PROGRESS))
    operations.cancel_run(ctx, aggregate.run.id, actor="ops")
    outcomes = run_threads({
        "force": lambda: commands.execute(ctx, commands.CancelRun(aggregate.run.id, "stuck", force=True),
                                          actor="sre"),
        "start cleanup": lambda: runs.patch_stage(ctx, cleanup, PatchStageIn(status=S.IN_PROGRESS)),
    })
    assert outcomes["force"] == "ok", outcomes
    final = ctx.stores.runs.load_run(aggregate.run.id)
    cleanup_status = final.stages[2].status
    if outcomes["start cleanup"] == "ok":
        assert cleanup_status == S.CANCELLED  # it started, then the force-cancel ended it
    else:
        assert outcomes["start cleanup"] in {("conflict", "illegal_transition"), ("conflict", "conflict")}
        assert cleanup_status == S.SKIPPED
    assert [s.status for s in final.stages[:2]] == [S.CANCELLED, S.SKIPPED]
    assert final.run.cancellation["force"] is True and final.run.cancellation["by"] == "sre"
    assert_stored_exactly(ctx, aggregate.run.id, pipeline, S.CANCELLED)
