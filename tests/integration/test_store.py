"""The repository on both tiers: moto and a real DynamoDB Local."""
from __future__ import annotations

import json
import uuid

import pytest

from chalicelib import wiring
from chalicelib.domain.errors import ConcurrentModification, PipelinePaused
from chalicelib.domain.model import StageSpec, change_status, new_run
from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
from chalicelib.domain.status import StageStatus
from chalicelib.service import runs
from chalicelib.service.ports import DeliveryAttempt, StoredSource, StoredToken
from chalicelib.settings import Settings
from chalicelib.store.models import PIPELINE_SK, pipeline_pk
from tests.fixtures.backends import create_table, items_of

S = StageStatus


def create(ctx, **body):
    body.setdefault("pipeline", "web")
    return runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps(body)))


def test_round_trip_of_every_field(any_ctx, clock):
    created = create(any_ctx, stages=["BUILD", {"type": "DEPLOY_PROD", "name": "prod", "approval": "MANUAL",
                                                "timeoutSeconds": 60}],
                     commit={"hash": "abcdef0", "message": "m", "committer": "c"},
                     trigger="push", variables={"A": "1"}, timeoutSeconds=30)
    loaded = any_ctx.stores.runs.load_run(created.run.id)
    assert loaded == created
    assert any_ctx.stores.runs.get_stage(created.stages[1].id) == created.stages[1]


def test_counter_is_atomic_and_per_pipeline(any_ctx):
    assert [any_ctx.stores.pipelines.claim_counter("web")[0] for _ in range(3)] == [1, 2, 3]
    assert any_ctx.stores.pipelines.claim_counter("api")[0] == 1


def test_paused_pipeline_refuses_a_counter(any_ctx):
    any_ctx.stores.pipelines.claim_counter("web")[0]
    model = items_of(any_ctx).pipeline
    item = model.get(pipeline_pk("web"), PIPELINE_SK)
    item.update(actions=[model.paused.set(True)])
    with pytest.raises(PipelinePaused):
        any_ctx.stores.pipelines.claim_counter("web")[0]


def test_stale_write_is_refused_and_leaves_everything_as_it_was(any_ctx, clock):
    aggregate = create(any_ctx, stages=["BUILD", "DEPLOY_PROD"])
    mine = any_ctx.stores.runs.load_run(aggregate.run.id)
    theirs = any_ctx.stores.runs.load_run(aggregate.run.id)
    before = theirs.snapshot()
    change_status(theirs.stages[1], S.IN_PROGRESS, clock.now())
    theirs.refresh(clock.now())
    any_ctx.stores.runs.save(before, theirs)

    before = mine.snapshot()
    change_status(mine.stages[0], S.IN_PROGRESS, clock.now())
    mine.refresh(clock.now())
    with pytest.raises(ConcurrentModification):
        any_ctx.stores.runs.save(before, mine)
    assert any_ctx.stores.runs.load_run(aggregate.run.id) == theirs


def test_patch_retries_a_race_lost_to_a_sibling_stage(any_ctx, monkeypatch):
    aggregate = create(any_ctx, stages=["BUILD", "DEPLOY_PROD"])
    first, second = (s.id for s in aggregate.stages)
    real_load = any_ctx.stores.runs.load_stage  # what a PATCH of a status reads (issue 12)
    interfered = []

    def load_then_interfere(stage_id):
        loaded = real_load(stage_id)
        if not interfered:
            interfered.append(True)
            runs.patch_stage(any_ctx, second, PatchStageIn(status=S.IN_PROGRESS))
        return loaded

    monkeypatch.setattr(any_ctx.stores.runs, "load_stage", load_then_interfere)
    stage = runs.patch_stage(any_ctx, first, PatchStageIn(status=S.IN_PROGRESS))
    assert stage.status == S.IN_PROGRESS
    monkeypatch.undo()
    final = any_ctx.stores.runs.load_run(aggregate.run.id)
    assert [s.status for s in final.stages] == [S.IN_PROGRESS, S.IN_PROGRESS]


def test_delete_run_removes_every_item(any_ctx):
    aggregate = create(any_ctx)
    runs.delete_run(any_ctx, aggregate.run.id)
    assert any_ctx.stores.runs.load_run(aggregate.run.id) is None
    assert all(any_ctx.stores.runs.get_stage(s.id) is None for s in aggregate.stages)


def test_list_runs_pages_newest_first(any_ctx):
    for _ in range(5):
        create(any_ctx)
    seen, cursor = [], None
    while True:
        page, cursor = any_ctx.stores.runs.list_runs("web", None, 2, cursor)
        seen += [r.counter for r in page]
        if not cursor:
            break
    assert seen == [5, 4, 3, 2, 1]


def test_sparse_active_index_holds_only_active_stages(any_ctx, clock):
    aggregate = create(any_ctx, stages=["BUILD", "DEPLOY_PROD", {"type": "OTHER", "timeoutSeconds": 60}])
    build, prod, other = (s.id for s in aggregate.stages)
    runs.patch_stage(any_ctx, build, PatchStageIn(status=S.IN_PROGRESS))
    runs.patch_stage(any_ctx, other, PatchStageIn(status=S.IN_PROGRESS))
    runs.patch_stage(any_ctx, build, PatchStageIn(status=S.SUCCESS))
    connection = items_of(any_ctx).stage._get_connection()
    indexed = [item for shard in range(4)
               for item in connection.query(f"ACTIVE#{shard}", index_name="activeStages")["Items"]]
    assert [item["stage_id"]["S"] for item in indexed] == [other]
    assert indexed[0]["due_at"]["S"] == "2026-03-20T17:18:13.760Z"


def test_new_run_on_local_is_one_transaction_of_run_and_stages(any_ctx, clock):
    specs = [StageSpec("OTHER", f"s{i}") for i in range(50)]
    aggregate = new_run("big", any_ctx.stores.pipelines.claim_counter("big")[0], specs, clock.now())
    any_ctx.stores.runs.insert_run(aggregate)
    assert len(any_ctx.stores.runs.load_run(aggregate.run.id).stages) == 50


# ---- contexts on different tables or endpoints, in one process -----------------------------------

def write_everything(ctx, name):
    """One write through every store of ``ctx`` (names it by ``name``)."""
    create(ctx, pipeline=name, stages=[{"type": "BUILD", "timeoutSeconds": 60}])
    runs.patch_stage(ctx, f"{name}:1:1", PatchStageIn(status=S.IN_PROGRESS))
    ctx.stores.tokens.insert(StoredToken(token_id=name, name=name, scopes=["read"], pipelines=None,
                                         created_at="2026-01-01T00:00:00.000Z"), f"hash-{name}", 1)
    ctx.stores.sources.insert_source(StoredSource(name=name, type="github", sealed_secret="s",
                                                  created_at="2026-01-01T00:00:00.000Z"))
    ctx.stores.deliveries.record(DeliveryAttempt(subscription_id="sub", delivery_id=name, event_id="e",
                                                 event_type="t", attempt=1, outcome="delivered",
                                                 at="2026-01-01T00:00:00.000Z"), 0)
    assert isinstance(ctx.stores.idempotency.claim(name, "fp", 0, lease_seconds=30, ttl_seconds=60), str)


def seen(ctx):
    """What ``ctx`` reads back of both contexts' writes ("a" and "b")."""
    due = ctx.stores.timers.due_timers("9999-12-31T00:00:00.000Z").timers
    return {
        "runs": [n for n in "ab" if ctx.stores.runs.load_run(f"{n}:1")],
        "pipelines": [n for n in "ab" if ctx.stores.pipelines.get(n)],
        "tokens": [t.token_id for t in ctx.stores.tokens.list_all()],
        "sources": [s.name for s in ctx.stores.sources.list_sources()],
        "deliveries": sorted(a.delivery_id for a in ctx.stores.deliveries.list_attempts("sub", 10, None)[0]),
        "timers": sorted(t.stage_id for t in due),
        "claims": [n for n in "ab" if not isinstance(
            ctx.stores.idempotency.claim(n, "fp", 1, lease_seconds=30, ttl_seconds=60), str)],
    }


def only(name):
    return {"runs": [name], "pipelines": [name], "tokens": [name], "sources": [name], "deliveries": [name],
            "timers": [f"{name}:1:1"], "claims": [name]}


def test_two_contexts_on_two_tables_coexist_in_one_process(aws, clock):
    """Nothing binds the store to one table process-wide: a context built later on another table
    leaves an earlier one on its own, and a write through one is invisible through the other."""
    contexts = {}
    for name in "ab":
        settings = Settings(table_name=f"stagetrack-{name}", region="us-east-1")
        create_table(settings)
        contexts[name] = wiring.dynamo_context(settings, clock)
    for name in "ab":
        write_everything(contexts[name], name)
    assert seen(contexts["a"]) == only("a")
    assert seen(contexts["b"]) == only("b")


@pytest.mark.ddb_local
def test_the_same_table_name_on_two_endpoints_are_two_tables(aws, ddb_local_endpoint, clock):
    """moto (no endpoint) and DynamoDB Local, one table name: the endpoint is part of the binding."""
    name = f"stagetrack-{uuid.uuid4().hex[:8]}"
    contexts = {}
    for key, endpoint in (("a", None), ("b", ddb_local_endpoint)):
        settings = Settings.on_local(endpoint, table_name=name, region="us-east-1")
        create_table(settings)
        contexts[key] = wiring.dynamo_context(settings, clock)
    for key in "ab":
        write_everything(contexts[key], key)
    assert seen(contexts["a"]) == only("a")
    assert seen(contexts["b"]) == only("b")


def test_a_claim_held_on_one_table_rides_only_on_that_tables_writes(aws, clock):
    """A held Idempotency-Key claim belongs to the stores that made it: a write through another
    context (another table) neither carries it nor fails on it, and the claim stays for its own
    table's next write."""
    contexts = {}
    for name in "ab":
        settings = Settings(table_name=f"stagetrack-claims-{name}", region="us-east-1")
        create_table(settings)
        contexts[name] = wiring.dynamo_context(settings, clock)
    a, b = contexts["a"], contexts["b"]
    token = a.stores.idempotency.claim("k", "fp", 0, lease_seconds=30, ttl_seconds=60)
    with a.stores.idempotency.holding("k", token):
        create(b, pipeline="web")  # another table's write: not this claim's effect
        assert b.stores.runs.load_run("web:1") is not None
        create(a, pipeline="api")
    held = a.stores.idempotency.claim("k", "fp", 1, lease_seconds=30, ttl_seconds=60)
    assert (held.state, held.effect) == ("COMMITTED", {"run": "api:1"})
