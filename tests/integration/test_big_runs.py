"""Runs of more stages than one DynamoDB transaction holds (100 items): created, updated, cancelled,
retried, closed and deleted whole, through the write-ahead intent of store/repository.py."""
from __future__ import annotations

import copy
import json
import math

import botocore.client
import botocore.exceptions
import pytest

from chalicelib.domain import events
from chalicelib.domain.status import StageStatus as S
from chalicelib.integrations import github, gitlab
from chalicelib.service import ingest, operations, runs, timers
from chalicelib.store import repository
from chalicelib.store.models import RunItem, StageItem, attempts_pk, run_pk
from tests.fixtures import load, make_source, post_gitlab
from tests.fixtures.backends import current_items, items_of

PIPELINE = "gitlab-org.gitlab-test"
RUN = f"{PIPELINE}:1"
JOBS = 256
CHUNKS = math.ceil(JOBS / (repository.MAX_TRANSACTION_ITEMS - 1))  # 3 chunks of at most 99


def gitlab_hook(jobs: int = JOBS, status: str = "running", job_status: str = "running") -> dict:
    """The official example Pipeline Hook with ``jobs`` builds (each a copy of its first build)."""
    payload = load("gitlab_pipeline_hook")
    payload["object_attributes"]["status"] = status
    template = payload["builds"][0]
    payload["builds"] = []
    for n in range(jobs):
        build = copy.deepcopy(template)
        build.update(id=1000 + n, stage="test", name=f"rspec-{n + 1}", status=job_status,
                     finished_at=None if job_status == "running" else build["finished_at"])
        payload["builds"].append(build)
    return payload


@pytest.fixture(autouse=True)
def one_moto_backup_per_transaction(monkeypatch):
    """moto backs a table up (a deep copy) once per *item* of a TransactWriteItems, which makes
    99-item transactions on a few hundred items take minutes. Within one transaction every
    copy of the same table is the same, so the first one is reused: same rollback, one copy."""
    import types

    import moto.dynamodb.models as backend

    copies: dict = {}
    real_deepcopy, real_transact = backend.copy.deepcopy, backend.DynamoDBBackend.transact_write_items

    def deepcopy(value, memo=None):
        if not isinstance(value, backend.Table):
            return real_deepcopy(value, memo)
        if id(value) not in copies:
            copies[id(value)] = real_deepcopy(value, memo)
        return copies[id(value)]

    def transact_write_items(self, transact_items):
        copies.clear()
        try:
            return real_transact(self, transact_items)
        finally:
            copies.clear()

    monkeypatch.setattr(backend, "copy", types.SimpleNamespace(deepcopy=deepcopy))
    monkeypatch.setattr(backend.DynamoDBBackend, "transact_write_items", transact_write_items)


@pytest.fixture
def token(client):
    return make_source(client, "gitlab", "gitlab-main")


def stored(run_id: str = RUN) -> tuple[RunItem | None, dict[str, StageItem]]:
    """What the table holds right now, without applying anything (no repository read)."""
    run, stages = None, {}
    for item in current_items().base.query(run_pk(run_id), consistent_read=True):
        if isinstance(item, RunItem):
            run = item
        else:
            stages[item.sk] = item
    return run, stages


def big_run(ctx, jobs: int = JOBS, job_status: str = "running") -> str:
    parsed = gitlab.parse(
        "Pipeline Hook", gitlab_hook(jobs, job_status=job_status), "gitlab-main"
    )
    outcome = ingest.apply_update(ctx, parsed, actor="gitlab:gitlab-main")
    assert outcome.created
    return outcome.run_id


def fail_transaction(monkeypatch, number: int):
    """Make the ``number``-th TransactWriteItems from now fail (a crash of the writer there)."""
    original = botocore.client.BaseClient._make_api_call
    seen = {"n": 0}

    def failing(self, operation, params):
        if operation == "TransactWriteItems":
            seen["n"] += 1
            if seen["n"] == number:
                raise botocore.exceptions.ClientError(
                    {"Error": {"Code": "InternalServerError", "Message": "injected"}}, operation)
        return original(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", failing)
    return lambda: monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", original)


# ---- webhooks -------------------------------------------------------------------------------------

def test_a_256_job_pipeline_hook_fits_the_webhook_limit_but_not_the_default_one():
    size = len(json.dumps(gitlab_hook()).encode())
    assert 64 * 1024 < size < 2 * 1024 * 1024  # ~180 KB: 413 under the 64 KiB default


def test_a_gitlab_pipeline_of_256_jobs_makes_a_run_and_a_second_delivery_updates_it(client, token, ddb_calls):
    ddb_calls.clear()
    first = post_gitlab(client, "Pipeline Hook", gitlab_hook(), token=token, uuid="u-1")
    assert first.status_code == 200, first.json
    assert first.json["runCreated"] is True and len(first.json["stages"]) == JOBS
    # source + link, delivery claim, run number, then the run: one transaction with the intent,
    # its stages in chunks, the intent removed; the answer kept
    assert dict(ddb_calls) == {"GetItem": 2, "PutItem": 1, "UpdateItem": 3, "TransactWriteItems": 1 + CHUNKS}
    run = client.get(f"/api/runs/{RUN}").json
    assert [s["name"] for s in run["stages"]] == [f"rspec-{n}" for n in range(1, JOBS + 1)]
    assert {s["status"] for s in run["stages"]} == {"IN_PROGRESS"}

    done = post_gitlab(client, "Pipeline Hook", gitlab_hook(status="success", job_status="success"),
                       token=token, uuid="u-2")
    assert done.status_code == 200 and done.json["result"] == "applied"
    run = client.get(f"/api/runs/{RUN}").json
    assert run["status"] == "SUCCESS" and {s["status"] for s in run["stages"]} == {"SUCCESS"}
    item, stages = stored()
    assert item.intent_id is None and len(stages) == JOBS and all(s.big_run for s in stages.values())


def test_jobs_past_the_stage_cap_are_ignored_and_reported_not_retried(client, token):
    extra = 7
    response = post_gitlab(
        client, "Pipeline Hook", gitlab_hook(events.MAX_EXTERNAL_STAGES + extra), token=token
    )
    assert response.status_code == 200
    assert response.json["notes"] == [
        f"{extra} stage(s) ignored: a run holds at most {events.MAX_EXTERNAL_STAGES} stages "
        "(rspec-501, rspec-502, rspec-503, rspec-504, rspec-505, ...)"]
    assert len(client.get(f"/api/stages?runId={RUN}").json) == events.MAX_EXTERNAL_STAGES


def test_webhook_bodies_have_their_own_limit(client, token, ctx):
    limit = ctx.settings.webhook_max_body_bytes
    payload = gitlab_hook(2)
    payload["padding"] = "x" * limit
    response = post_gitlab(client, "Pipeline Hook", payload, token=token)
    assert response.status_code == 413 and response.json["error"]["code"] == "payload_too_large"
    other = client.post("/api/runs", {"pipeline": "web", "trigger": "x" * (64 * 1024)})
    assert other.status_code == 413  # the other routes keep the 64 KiB default


@pytest.mark.ddb_local
def test_a_github_run_grown_to_256_jobs_by_workflow_job_events_can_be_cancelled(local_ctx, ddb_calls):
    """On DynamoDB Local, which refuses a transaction of more than 100 items for real."""
    ctx = local_ctx
    job = load("github_workflow_job_in_progress")
    for n in range(1, JOBS + 1):
        job["workflow_job"].update(id=9000 + n, name=f"matrix ({n})")
        update = github.parse("workflow_job", job, "github-main")
        assert ingest.apply_update(ctx, update, actor="github:github-main").result == "applied"
    run_id = ctx.stores.links.linked_run("github:github-main", str(job["workflow_job"]["run_id"]))
    ddb_calls.clear()
    assert runs.get_stage(ctx, f"{run_id}:1").status == S.IN_PROGRESS
    assert dict(ddb_calls) == {"GetItem": 1, "TransactGetItems": 1}  # a big run's stage: run read too

    ddb_calls.clear()
    cancelled = operations.cancel_run(ctx, run_id, actor="alice", reason="too many")
    assert cancelled.run.status == S.CANCELLED
    assert dict(ddb_calls) == {"Query": 1, "TransactWriteItems": 1 + CHUNKS, "UpdateItem": 1}
    assert {s.status for s in ctx.stores.runs.load_run(run_id).stages} == {S.CANCELLED}
    assert stored(run_id)[0].intent_id is None


# ---- operations on a 256-stage run ------------------------------------------------------------------

def test_cancel_retry_close_and_delete_of_a_256_stage_run(client, ctx, ddb_calls):
    run_id = big_run(ctx)
    ddb_calls.clear()
    cancelled = client.post(f"/api/runs/{run_id}/cancel", {"reason": "stop"})
    assert cancelled.status_code == 200 and {s["status"] for s in cancelled.json["stages"]} == {"CANCELLED"}
    assert dict(ddb_calls) == {"Query": 1, "TransactWriteItems": 1 + CHUNKS, "UpdateItem": 1}

    retried = client.post(f"/api/runs/{run_id}/retry", {})
    assert retried.status_code == 200, retried.json
    assert {(s["status"], s["attempt"]) for s in retried.json["stages"]} == {("IDLE", 2)}
    assert [i.attempt for i in current_items().attempt.query(attempts_pk(f"{run_id}:{JOBS}"))] == [1]

    closed = ingest.apply_update(ctx, gitlab.parse(
        "Pipeline Hook", gitlab_hook(status="failed", job_status="running"), "gitlab-main"),
        actor="gitlab:gitlab-main")
    assert closed.result == "applied"
    run = client.get(f"/api/runs/{run_id}").json
    assert run["status"] == "FAILURE" and {s["status"] for s in run["stages"]} == {"FAILURE"}

    ddb_calls.clear()
    deleted = client.delete(f"/api/runs/{run_id}")
    assert deleted.status_code == 200
    # the run item takes the intent, the stages and their ended attempts (one each: the retry
    # above) go in chunks, then the run item itself
    attempt_chunks = math.ceil(2 * JOBS / (repository.MAX_TRANSACTION_ITEMS - 1))
    assert dict(ddb_calls) == {"Query": 1, "TransactWriteItems": 1 + attempt_chunks, "DeleteItem": 1}
    assert client.get(f"/api/runs/{run_id}").status_code == 404
    assert stored(run_id) == (None, {})
    assert list(current_items().attempt.query(attempts_pk(f"{run_id}:{JOBS}"))) == []


def test_native_runs_keep_their_cap_of_50_stages(client):
    response = client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"] * 51})
    assert response.status_code == 422 and response.json["error"]["details"][0]["field"] == "stages"


# ---- crashes: readers see the whole change, the next reader, writer or sweep completes it ---------

@pytest.mark.parametrize("crash_at", [2, 3], ids=["after-transaction-1", "after-a-middle-chunk"])
def test_a_cancel_interrupted_mid_way_is_seen_whole_and_completed_by_the_next_write(client, ctx, monkeypatch,
                                                                                    crash_at):
    run_id = big_run(ctx)
    restore = fail_transaction(monkeypatch, crash_at)
    response = client.post(f"/api/runs/{run_id}/cancel", {"reason": "stop"})
    restore()
    assert response.status_code == 200  # committed with transaction 1; the rest is catch-up
    item, stages = stored(run_id)
    assert item.intent_id is not None and item.status == "CANCELLED"
    left_behind = [s for s in stages.values() if s.status == "IN_PROGRESS"]
    assert len(left_behind) == JOBS - 99 * (crash_at - 2)

    # a stage read (which never writes) already sees the change
    assert runs.get_stage(ctx, f"{run_id}:{JOBS}").status == S.CANCELLED
    assert stored(run_id)[0].intent_id is not None

    # the next write finds the intent, completes it, then applies itself on top
    patched = client.patch(f"/api/stages/{run_id}:1", {"name": "renamed"})
    assert patched.status_code == 200 and patched.json["status"] == "CANCELLED"
    item, stages = stored(run_id)
    assert item.intent_id is None and item.active_shard is None
    assert {s.status for s in stages.values()} == {"CANCELLED"} and stages["STAGE#0001"].name == "renamed"


@pytest.mark.parametrize("crash_at", [2, 5], ids=["after-transaction-1", "after-a-middle-chunk"])
def test_a_retry_interrupted_mid_way_shows_the_whole_history_and_completes_it(client, ctx, monkeypatch,
                                                                             crash_at):
    run_id = big_run(ctx)
    assert client.post(f"/api/runs/{run_id}/cancel", {}).status_code == 200
    restore = fail_transaction(monkeypatch, crash_at)
    assert client.post(f"/api/runs/{run_id}/retry", {}).status_code == 200  # committed with transaction 1
    restore()
    last = f"{run_id}:{JOBS}"
    assert stored(run_id)[0].intent_id is not None
    assert list(current_items().attempt.query(attempts_pk(last))) == []  # not written yet
    # the history read sees the change whole: it completes the pending change first
    history = client.get(f"/api/stages/{last}/attempts").json
    assert [(a["attempt"], a["status"]) for a in history["items"]] == [(1, "CANCELLED")]
    assert stored(run_id)[0].intent_id is None
    assert [i.attempt for i in current_items().attempt.query(attempts_pk(last))] == [1]
    assert client.get(f"/go/api/stages/{PIPELINE}/rspec-{JOBS}/instance/1/1").json["counter"] == 1


def test_a_big_run_creation_interrupted_mid_way_is_visible_whole_and_the_sweeper_completes_it(ctx, clock,
                                                                                              monkeypatch):
    restore = fail_transaction(monkeypatch, 2)
    run_id = big_run(ctx)
    restore()
    assert len(stored(run_id)[1]) == 0  # only the run item (and its intent) made it
    assert runs.get_stage(ctx, f"{run_id}:200").name == "rspec-200"  # from the intent

    assert timers.sweep(ctx).completed == 0  # not due yet: its writer may still be at it
    clock.advance(repository.INTENT_GRACE_SECONDS)
    assert timers.sweep(ctx).completed == 1
    item, stages = stored(run_id)
    assert item.intent_id is None and len(stages) == JOBS
    assert runs.get_stage(ctx, f"{run_id}:200") == ctx.stores.runs.load_run(run_id).stages[199]


def test_a_writer_never_overwrites_a_pending_change(ctx, monkeypatch):
    run_id = big_run(ctx)
    restore = fail_transaction(monkeypatch, 2)
    operations.cancel_run(ctx, run_id, actor="alice")
    restore()
    monkeypatch.setattr(repository.Repository, "_roll_forward", lambda self, run_id, intent: False)
    mine = ctx.stores.runs.load_run(run_id)  # completing failed for now: the change is applied in memory
    assert {s.status for s in mine.stages} == {S.CANCELLED}
    before = mine.snapshot()
    mine.stages[0].name = "mine"
    with pytest.raises(repository.ConcurrentModification):
        ctx.stores.runs.save(before, mine)
    monkeypatch.undo()
    healed = ctx.stores.runs.load_run(run_id)
    assert {s.status for s in healed.stages} == {S.CANCELLED} and healed.stages[0].name == "rspec-1"
    assert stored(run_id)[0].intent_id is None


def test_a_query_that_raced_a_writer_reads_again(ctx, ddb_calls):
    run_id = big_run(ctx, jobs=3)
    item = items_of(ctx).stage.get(run_pk(run_id), "STAGE#0002")
    item.update(actions=[StageItem.run_version.set(99)])  # a stage newer than its run item
    ddb_calls.clear()
    with pytest.raises(repository.ConcurrentModification):
        ctx.stores.runs.load_run(run_id)
    assert ddb_calls["Query"] == repository.LOAD_ATTEMPTS


# ---- the run item stays under DynamoDB's 400 KB ---------------------------------------------------

def test_the_largest_run_with_a_pending_change_of_every_stage_fits_in_one_item(ctx, clock):
    """500 stages with 100-character names, every one changed at once."""
    from chalicelib.domain.model import StageSpec, new_run
    from chalicelib.domain.operations import cancel_run

    names = [f"{n:03d}" + "".join(chr(65 + (n * 7 + i * 13) % 58) for i in range(97))
             for n in range(events.MAX_EXTERNAL_STAGES)]
    aggregate = new_run("p", 1, [StageSpec(type="OTHER", name=name) for name in names], clock.now())
    aggregate.run.version = 1
    cancel_run(aggregate, clock.now(), actor="a" * 100, reason="r" * 1000)
    aggregate.refresh(clock.now())
    intent = repository.Intent(
        id="x" * 32,
        puts=[
            repository._written_form(
                repository.stage_to_item(items_of(ctx).stage, s, big_run=True, run_version=2))
            for s in aggregate.stages
        ],
    )
    item = repository.run_to_item(items_of(ctx).run, aggregate.run)
    item.intent_id, item.intent = intent.id, intent.encode()
    size = repository.item_bytes(item.serialize())
    assert size < 300_000 < repository.MAX_RUN_ITEM_BYTES < 400 * 1024, size


# ---- DynamoDB Local enforces the 100-item limit for real -------------------------------------------

@pytest.mark.ddb_local
def test_a_256_stage_run_on_dynamodb_local(local_ctx):
    ctx = local_ctx
    run_id = big_run(ctx)
    assert len(ctx.stores.runs.load_run(run_id).stages) == JOBS
    cancelled = operations.cancel_run(ctx, run_id, actor="alice")
    assert {s.status for s in cancelled.stages} == {S.CANCELLED}
    assert {s.status for s in ctx.stores.runs.load_run(run_id).stages} == {S.CANCELLED}
    assert runs.get_stage(ctx, f"{run_id}:{JOBS}").status == S.CANCELLED
    operations.retry_run(ctx, run_id)
    assert {s.attempt for s in ctx.stores.runs.load_run(run_id).stages} == {2}
    runs.delete_run(ctx, run_id)
    assert ctx.stores.runs.load_run(run_id) is None and stored(run_id) == (None, {})
