"""Issue 13's finding on a real DynamoDB Local: the same HTTP cases as tests/unit/test_browse.py
and tests/integration/test_browse.py (what moto accepts and DynamoDB does not shows here), and
what it costs, as DynamoDB reports it (``ReturnConsumedCapacity=INDEXES``,
tests/fixtures/capacity.py): the index entries a create writes, none written by a stage's change,
and the reads of a search page."""
from __future__ import annotations

import json

import pytest
from chalice.test import Client

from chalicelib.domain.schemas import CreateRunIn, PatchStageIn, SearchRunsQuery
from chalicelib.service import browse
from chalicelib.service import runs as run_service
from chalicelib.store.models import SEARCH_INDEXES
from tests.fixtures.api import ApiClient
from tests.fixtures.browse_cases import *  # noqa: F403  (the shared test cases)
from tests.fixtures.browse_cases import runs  # noqa: F401  (a fixture)
from tests.fixtures.capacity import measure

pytestmark = pytest.mark.ddb_local
SEARCH = tuple(SEARCH_INDEXES)
OTHER = ("pipelinesByActivity", "approvalsWaiting")


@pytest.fixture
def api(local_ctx):
    from app import app

    with Client(app) as client:
        yield ApiClient(client, admin_token=local_ctx.settings.admin_token)


def make_run(ctx, pipeline, stages=2, actor="ci-bot", **fields):
    body = {"pipeline": pipeline, "stages": [{"type": "OTHER", "name": f"s{i}"} for i in range(stages)],
            **fields}
    return run_service.create_run(ctx, CreateRunIn.model_validate_json(json.dumps(body)), actor=actor)


def change(ctx, stage_id, **fields):
    return run_service.patch_stage(ctx, stage_id, PatchStageIn.model_validate_json(json.dumps(fields)))


def touched(capacity, names=SEARCH + OTHER) -> set[str]:
    """The indexes a change wrote an entry in (DynamoDB Local reports units per index and item
    written in a transaction, 2 per transactional write; the count of entries is what holds)."""
    return {name for name in names if capacity.write[name]}


def test_a_create_writes_an_entry_in_each_index_it_has_a_key_for(local_ctx):
    with measure() as first:
        make_run(local_ctx, "web", branch="main", commit={"hash": "abcdef1234"})
    assert dict(first.calls) == {"UpdateItem": 1, "TransactWriteItems": 1}
    assert touched(first) == set(SEARCH)
    with measure() as bare:  # no branch, no commit: no entry in their indexes (sparse)
        make_run(local_ctx, "web")
    assert touched(bare) == {"runsByTime", "runsByActor", "runsBySource"}
    # per index, what one create writes is what it wrote before issue 13 in byPipeline: one entry
    assert {bare.write[name] for name in touched(bare)} == {bare.write["byPipelineStatus"]}
    print(json.dumps({"create": dict(first.write), "second create": dict(bare.write)}))


def test_a_stage_change_writes_no_search_index_entry_unless_the_runs_status_changes(local_ctx):
    aggregate = make_run(local_ctx, "web", stages=3, branch="main")
    first, second, _gate = (s.id for s in aggregate.stages)
    with measure() as starts:  # IDLE -> IN_PROGRESS: the run's status changes too
        change(local_ctx, first, status="IN_PROGRESS")
    assert touched(starts) == {"runsByTime"}  # the one index holding the status
    with measure() as local:  # another stage starts: the run stays IN_PROGRESS
        change(local_ctx, second, status="IN_PROGRESS")
    assert touched(local) == set()
    with measure() as retimed:
        change(local_ctx, second, timeoutSeconds=60)
    assert touched(retimed) == set()
    # a stage waiting for approval gets its entry; leaving the wait removes it
    manual = CreateRunIn.model_validate_json(json.dumps(
        {"pipeline": "gated", "stages": [{"type": "DEPLOY_PROD", "name": "gate", "approval": "MANUAL"}]}))
    waiting = run_service.create_run(local_ctx, manual, actor="x").stages[0].id
    with measure() as waits:
        change(local_ctx, waiting, status="IN_PROGRESS")  # -> WAITING_FOR_APPROVAL
    assert touched(waits) == {"runsByTime", "approvalsWaiting"}
    with measure() as cancelled:
        change(local_ctx, waiting, status="CANCELLED")
    assert touched(cancelled) == {"runsByTime", "approvalsWaiting"}


def test_a_search_page_reads_its_index_and_the_runs_it_keeps(local_ctx):
    for i in range(12):
        make_run(local_ctx, ("web", "api", "ops")[i % 3], stages=1, branch="main" if i % 2 else "dev")
    query = SearchRunsQuery.model_validate({"limit": "5"}, strict=False)
    with measure() as page:
        found, cursor = browse.search_runs(local_ctx, None, query)
    assert len(found) == 5 and cursor
    assert dict(page.calls) == {"Query": 1, "BatchGetItem": 1}
    assert page.rcu <= 3  # DynamoDB Local reports 2.5: the Query's keys and the five runs read
    by_branch = SearchRunsQuery.model_validate({"limit": "5", "branch": "main"}, strict=False)
    with measure() as branch_page:
        found, _ = browse.search_runs(local_ctx, None, by_branch)
    assert [r.branch for r in found] == ["main"] * 5
    assert dict(branch_page.calls) == {"Query": 1, "BatchGetItem": 1}
    assert branch_page.rcu <= 3
    # a token limited to two of the three pipelines: other pipelines' runs are dropped by key,
    # never read (the runs read are those returned)
    with measure() as limited:
        found, _ = browse.search_runs(local_ctx, frozenset({"web", "api"}), query)
    assert {r.pipeline for r in found} == {"web", "api"} and len(found) == 5
    assert dict(limited.calls) == {"Query": 1, "BatchGetItem": 1} and limited.rcu <= 3
    print(json.dumps({"page": dict(page.read), "branch": dict(branch_page.read),
                      "limited": dict(limited.read)}))


def test_a_table_made_before_issue_13_gets_the_new_indexes_and_keeps_its_items():
    """``ensure_tables`` on a table of the previous definition adds each index it lacks (one
    UpdateTable each), so `make run` on kept data serves the new listings; its items stay.

    On a DynamoDB Local of its own, as `make run` has: the session's instance, holding a table for
    every test before, has been seen to leave a new index CREATING for good."""
    from chalicelib.settings import Settings
    from chalicelib.store.schema import dynamodb_client, ensure_tables, table_definition
    from tests.fixtures.ddb_local import DynamoDBLocal

    with DynamoDBLocal() as endpoint:
        settings = Settings.on_local(endpoint, table_name="stagetrack", region="us-east-1")
        client = dynamodb_client(settings)
        old = table_definition(settings.table_name)
        new_indexes = {*SEARCH, *OTHER}
        kept = [index for index in old["GlobalSecondaryIndexes"] if index["IndexName"] not in new_indexes]
        old["GlobalSecondaryIndexes"] = kept
        used = {key["AttributeName"] for index in kept for key in index["KeySchema"]} | {"pk", "sk"}
        old["AttributeDefinitions"] = [a for a in old["AttributeDefinitions"] if a["AttributeName"] in used]
        client.create_table(**old)
        key = {"pk": {"S": "KEEP"}, "sk": {"S": "ME"}}
        client.put_item(TableName=settings.table_name, Item=key)
        assert ensure_tables(settings, client) is False
        table = client.describe_table(TableName=settings.table_name)["Table"]
        assert {i["IndexName"] for i in table["GlobalSecondaryIndexes"]} >= new_indexes
        assert all(i["IndexStatus"] == "ACTIVE" for i in table["GlobalSecondaryIndexes"])
        assert "Item" in client.get_item(TableName=settings.table_name, Key=key)
        assert ensure_tables(settings, client) is False  # nothing left to add
