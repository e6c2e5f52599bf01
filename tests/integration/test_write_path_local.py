"""Issue 12 on a real DynamoDB Local: a change costs what it changes.

- consumed capacity (DynamoDB's own ``ReturnConsumedCapacity=INDEXES``, tests/fixtures/capacity.py):
  a one-stage PATCH writes the same units on a 50-stage run as on a 6-stage one, and writes an
  index entry only when the run's indexed key or listed attributes change;
- 32 writers on 32 stages of one run all succeed (no 409) at no less than half the throughput of
  32 writers on 32 runs, and the run's status (as read, and as stored for the status index)
  is what its stages make;
- a run stored in the previous layout (stage summaries on the run item, no counters) reads,
  lists and changes, and is upgraded by its first write.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from chalicelib.domain.errors import Conflict
from chalicelib.domain.model import run_status_of, stage_summary
from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
from chalicelib.domain.status import StageStatus as S
from chalicelib.service import pipelines, runs
from chalicelib.store.models import RUN_SK, SEARCH_INDEXES, run_pk, stage_sk
from tests.fixtures.backends import items_of
from tests.fixtures.capacity import measure

pytestmark = pytest.mark.ddb_local
# the run's own indexes, issue 13's search indexes included (tests/integration/test_browse_local.py)
RUN_INDEXES = ("byPipeline", "byPipelineStatus", *SEARCH_INDEXES)


def create(ctx, pipeline: str, stages: int):
    body = {"pipeline": pipeline, "stages": [{"type": "OTHER", "name": f"s{i}"} for i in range(stages)]}
    return runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps(body)))


def patch(ctx, stage_id: str, **fields):
    return runs.patch_stage(ctx, stage_id, PatchStageIn.model_validate_json(json.dumps(fields)))


def patch_cost(ctx, stages: int, **fields):
    """Consumed capacity of one PATCH of the second stage of a run whose first one runs."""
    aggregate = create(ctx, f"cost{stages}", stages)
    patch(ctx, aggregate.stages[0].id, status="IN_PROGRESS")
    with measure() as capacity:
        patch(ctx, aggregate.stages[1].id, **fields)
    return capacity


def test_one_stage_patch_costs_the_same_on_a_50_stage_run_as_on_a_6_stage_run(local_ctx):
    small = patch_cost(local_ctx, 6, status="IN_PROGRESS")
    big = patch_cost(local_ctx, 50, status="IN_PROGRESS")
    assert big.wcu <= small.wcu, (dict(small.write), dict(big.write))
    assert big.write == small.write
    assert dict(small.calls) == dict(big.calls) == {"BatchGetItem": 1, "TransactWriteItems": 1}
    # the run was running already: its status key and bounds stay, so no run index entry is written
    assert not any(big.write[index] for index in RUN_INDEXES), dict(big.write)


@pytest.mark.parametrize("fields", [{"timeoutSeconds": 77}, {"name": "renamed"}])
def test_a_change_that_leaves_the_run_as_listed_writes_no_run_index_entry(local_ctx, fields):
    capacity = patch_cost(local_ctx, 50, **fields)
    assert not any(capacity.write[index] for index in RUN_INDEXES), dict(capacity.write)
    assert capacity.write["table"] > 0


def test_a_change_of_the_runs_status_rewrites_its_status_index_entry(local_ctx):
    aggregate = create(local_ctx, "moves", 6)
    with measure() as capacity:
        patch(local_ctx, aggregate.stages[0].id, status="IN_PROGRESS")  # IDLE -> IN_PROGRESS
    assert capacity.write["byPipelineStatus"] > 0
    listed, _ = local_ctx.stores.runs.list_runs("moves", S.IN_PROGRESS, 10, None)
    assert [run.id for run in listed] == [aggregate.run.id]


def _stored_run(ctx, run_id):
    return items_of(ctx).run.get(run_pk(run_id), RUN_SK, consistent_read=True)


def _writers(ctx, targets):
    """Run ``targets`` on a bounded pool; (outcomes, seconds taken)."""
    def attempt(target):
        try:
            target()
            return "ok"
        except Conflict as error:
            return f"409 {error.code}"

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        outcomes = list(pool.map(attempt, targets))
    return outcomes, time.perf_counter() - started


def test_32_writers_on_32_stages_of_one_run_all_land_and_keep_up_with_32_runs(local_ctx):
    ctx = local_ctx
    one = create(ctx, "matrix", 32)
    separate = [create(ctx, f"solo{i}", 1) for i in range(32)]
    warm = create(ctx, "warm", 8)  # the first burst of threads pays for connections: not measured
    _writers(ctx, [(lambda sid=s.id: patch(ctx, sid, status="IN_PROGRESS")) for s in warm.stages])
    conflicts_before = getattr(ctx.stores.runs, "conflicts", 0)
    rounds: dict = {}
    stored: dict = {}
    versions: dict = {}
    for target in ("IN_PROGRESS", "SUCCESS"):
        # alternate the two loads so that a burst of machine load hits both alike
        shared, shared_seconds = _writers(ctx, [
            (lambda sid=s.id, target=target: patch(ctx, sid, status=target)) for s in one.stages])
        apart, apart_seconds = _writers(ctx, [
            (lambda sid=a.stages[0].id, target=target: patch(ctx, sid, status=target)) for a in separate])
        assert shared == ["ok"] * 32, shared
        assert apart == ["ok"] * 32, apart
        rounds[target] = (shared_seconds, apart_seconds)
        final = ctx.stores.runs.load_run(one.run.id)
        assert [s.status for s in final.stages] == [S[target]] * 32
        assert final.run.status == run_status_of(final.stages) == S[target]
        stored[target] = _stored_run(ctx, one.run.id)
        assert (stored[target].status, stored[target].pipeline_status) == (target, f"matrix#{target}")
        versions[target] = final.run.version
    shared_total = sum(shared for shared, _ in rounds.values())
    apart_total = sum(apart for _, apart in rounds.values())
    # throughput on one run at least half that on separate runs (a ratio, not a time)
    resent = getattr(ctx.stores.runs, "conflicts", 0) - conflicts_before
    assert shared_total <= 2 * apart_total, (rounds, resent)
    assert set(versions.values()) == {one.run.version}, "no writer rewrote the run"
    assert [(item.n_in_progress or 0, item.n_success or 0) for item in stored.values()] == [(32, 0), (0, 32)]
    listed, _ = ctx.stores.runs.list_runs("matrix", S.SUCCESS, 10, None)
    assert [run.id for run in listed] == [one.run.id]
    last_end = max(s.ended_at for s in ctx.stores.runs.load_run(one.run.id).stages)
    assert stored["SUCCESS"].ended_at == last_end.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_mixed_outcomes_from_concurrent_writers_leave_the_exact_run_status(local_ctx):
    ctx = local_ctx
    aggregate = create(ctx, "mixed", 16)
    _writers(ctx, [(lambda sid=s.id: patch(ctx, sid, status="IN_PROGRESS")) for s in aggregate.stages])
    ends = ["SUCCESS"] * 13 + ["FAILURE", "CANCELLED", "TIMED_OUT"]
    outcomes, _ = _writers(ctx, [(lambda sid=s.id, end=end: patch(ctx, sid, status=end))
                                 for s, end in zip(aggregate.stages, ends, strict=True)])
    assert outcomes == ["ok"] * 16
    final = ctx.stores.runs.load_run(aggregate.run.id)
    assert final.run.status == run_status_of(final.stages) == S.CANCELLED
    stored = _stored_run(ctx, aggregate.run.id)
    assert (stored.status, stored.pipeline_status) == ("CANCELLED", "mixed#CANCELLED")
    assert (stored.n_success, stored.n_failure, stored.n_cancelled, stored.n_timed_out) == (13, 1, 1, 1)


# ---- the previous layout ------------------------------------------------------------------------

def _as_previous_layout(ctx, aggregate):
    """Rewrite a run's items as the layout before issue 12 stored them: the run item with a JSON
    list of stage summaries and no counters, stage items outside the stagesByPipeline index."""
    items = items_of(ctx)
    connection = items.run._get_connection()
    pk = run_pk(aggregate.run.id)
    summary = [stage_summary(s) for s in aggregate.stages]
    removed = [items.run.seq.remove(), items.run.last_end.remove(), items.run.n_idle.remove()]
    connection.update_item(pk, RUN_SK, actions=[
        items.run.stage_summary.set(json.dumps(summary, separators=(",", ":"), sort_keys=True)), *removed])
    for stage in aggregate.stages:
        connection.update_item(pk, stage_sk(stage.position), actions=[
            items.stage.listed_pipeline.remove(), items.stage.listed_at.remove()])


def test_a_run_of_the_previous_layout_reads_lists_and_is_upgraded_by_its_next_write(local_ctx):
    ctx = local_ctx
    aggregate = create(ctx, "legacy", 3)
    _as_previous_layout(ctx, aggregate)
    loaded = ctx.stores.runs.load_run(aggregate.run.id)
    assert loaded.run.seq is None and loaded.run.status == S.IDLE
    _, history = pipelines.history(ctx, "legacy", 0, 10)
    assert [e["name"] for e in history[0].stage_summary] == ["s0", "s1", "s2"]

    with measure() as capacity:  # the first write rewrites the run and every stage
        patch(ctx, aggregate.stages[0].id, status="IN_PROGRESS")
    # read in part first, found in the previous layout, read whole
    assert dict(capacity.calls) == {"BatchGetItem": 1, "Query": 1, "TransactWriteItems": 1}
    stored = _stored_run(ctx, aggregate.run.id)
    assert stored.stage_summary is None and stored.seq == 1
    assert (stored.n_in_progress, stored.n_idle, stored.status) == (1, 2, "IN_PROGRESS")
    _, history = pipelines.history(ctx, "legacy", 0, 10)
    assert [(e["name"], e["status"]) for e in history[0].stage_summary] == [
        ("s0", "IN_PROGRESS"), ("s1", "IDLE"), ("s2", "IDLE")]

    version = stored.version
    patch(ctx, aggregate.stages[1].id, status="IN_PROGRESS")  # now a change of one stage alone
    stored = _stored_run(ctx, aggregate.run.id)
    assert (stored.version, stored.seq, stored.n_in_progress) == (version, 2, 2)


# ---- serialization against changes of the whole run, and the settle step ----------------------------

def test_a_change_of_the_whole_run_read_before_a_stage_changed_is_refused(any_ctx):
    """No write skew on DynamoDB either: the run-wide write is conditioned on the change counter."""
    from chalicelib.domain.errors import ConcurrentModification
    from chalicelib.domain.model import change_status

    ctx = any_ctx
    aggregate = create(ctx, "skew", 3)
    whole = ctx.stores.runs.load_run(aggregate.run.id)
    patch(ctx, aggregate.stages[2].id, status="IN_PROGRESS")  # a change of one stage, meanwhile
    before = whole.snapshot()
    change_status(whole.stages[0], S.SKIPPED, ctx.clock.now())
    whole.refresh(ctx.clock.now())
    with pytest.raises(ConcurrentModification):
        ctx.stores.runs.save(before, whole)
    final = ctx.stores.runs.load_run(aggregate.run.id)
    assert [s.status for s in final.stages] == [S.IDLE, S.IDLE, S.IN_PROGRESS]


def test_a_writer_lost_between_its_commit_and_its_settle_leaves_only_the_index_behind(local_ctx, monkeypatch):
    """The guarantee, precisely: the run view is exact at once; the stored status (the
    ``pipeline#status`` index key) may lag a change whose writer died before settling, until the
    next change of the run that moves a counter settles it."""
    ctx = local_ctx
    repository = ctx.stores.runs
    aggregate = create(ctx, "lost", 3)
    first, second, third = (s.id for s in aggregate.stages)
    patch(ctx, first, status="IN_PROGRESS")
    patch(ctx, second, status="IN_PROGRESS")
    repository._contended[aggregate.run.id] = 99  # as under contention: commit first, settle after
    monkeypatch.setattr(repository, "_settle", lambda *args: None)  # the writer dies right there
    patch(ctx, first, status="SUCCESS")
    patch(ctx, second, status="FAILURE")
    assert _stored_run(ctx, aggregate.run.id).status == "IN_PROGRESS"  # behind
    assert ctx.stores.runs.load_run(aggregate.run.id).run.status == S.FAILURE  # the view is exact
    monkeypatch.undo()
    patch(ctx, second, timeoutSeconds=5)
    assert _stored_run(ctx, aggregate.run.id).status == "IN_PROGRESS", "a change that moves nothing"
    patch(ctx, third, status="SKIPPED")  # moves a counter: its writer settles (and sees it all)
    stored = _stored_run(ctx, aggregate.run.id)
    assert (stored.status, stored.pipeline_status) == ("FAILURE", "lost#FAILURE")
    listed, _ = ctx.stores.runs.list_runs("lost", S.FAILURE, 10, None)
    assert [run.id for run in listed] == [aggregate.run.id]


def test_each_change_of_a_runs_status_is_its_own_event(local_ctx):
    """A run's status now changes without its version: the stream's event ids tell them apart."""
    from chalicelib.store.stream import state_change

    ctx = local_ctx
    aggregate = create(ctx, "events", 2)
    base = {"kind": {"S": "run"}, "pk": {"S": run_pk(aggregate.run.id)}, "sk": {"S": RUN_SK},
            "run_id": {"S": aggregate.run.id}, "created_at": {"S": "2026-01-01T00:00:00.000Z"},
            "version": {"N": "1"}, "updated_at": {"S": "2026-01-01T00:00:00.000Z"}}

    def record(old_status, new_status, old_seq, new_seq):
        return {"eventName": "MODIFY", "dynamodb": {
            "OldImage": {**base, "status": {"S": old_status}, "seq": {"N": str(old_seq)}},
            "NewImage": {**base, "status": {"S": new_status}, "seq": {"N": str(new_seq)}}}}

    now = ctx.clock.now()
    started = state_change(record("IDLE", "IN_PROGRESS", 1, 2), now)
    finished = state_change(record("IN_PROGRESS", "SUCCESS", 3, 3), now)  # a settle at one number
    assert started.id != finished.id
    assert state_change(record("IDLE", "IN_PROGRESS", 1, 2), now).id == started.id  # read twice
