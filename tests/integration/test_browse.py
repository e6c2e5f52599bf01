"""Issue 13's API for finding things on moto's DynamoDB: the Queries of store/finder.py behind the
same cases the unit tier runs in memory (tests/fixtures/browse_cases.py)."""
from __future__ import annotations

import pytest

from tests.fixtures.browse_cases import *  # noqa: F403  (the shared test cases)


@pytest.fixture
def api(client):
    return client


@pytest.mark.parametrize("query, index_calls", [
    ("", {"Query": 1, "BatchGetItem": 1}), ("status=FAILURE", {"Query": 1, "BatchGetItem": 1}),
    ("branch=main", {"Query": 1, "BatchGetItem": 1}), ("actor=robot", {"Query": 1, "BatchGetItem": 1}),
    ("commit=506a3963507943d6908154f4bc9646e829128a08", {"Query": 1, "BatchGetItem": 1}),
    ("source=native", {"Query": 1, "BatchGetItem": 1}),
    ("createdFrom=2026-03-20T17:17:15Z", {"Query": 1, "BatchGetItem": 1}),
    ("pipeline=web", {"Query": 1}), ("pipeline=web&status=IDLE", {"Query": 1}),
])
def test_each_filter_is_one_query_on_an_index_never_a_scan(api, runs, ddb_calls, query, index_calls):
    ddb_calls.clear()
    assert api.get(f"/api/runs?{query}").status_code == 200
    assert dict(ddb_calls) == index_calls  # the bootstrap admin costs no call


def test_the_pipelines_and_approvals_pages_cost_what_the_docs_say(api, runs, ddb_calls):
    ddb_calls.clear()
    assert len(api.get("/api/pipelines").json["items"]) == 3
    assert dict(ddb_calls) == {"Query": 1 + 3 * 2}  # the page, then each pipeline's runs and stages
    ddb_calls.clear()
    api.get("/api/pipelines?runs=0")
    assert dict(ddb_calls) == {"Query": 1}
    ddb_calls.clear()
    assert api.get("/api/approvals").json == {"items": [], "nextCursor": None}
    assert dict(ddb_calls) == {"Query": 1}  # nothing waits: no BatchGetItem
