"""Attempt history (issue 12): ended attempts live in items of their own, written once with the
change that ends them, read only when asked for (``GET /api/stages/{id}/attempts``,
``?include=attempts``, GoCD's stage instance by counter); items of the previous layout (history
inline on the stage item) are read as they are and moved out on the stage's next write."""
from __future__ import annotations

import json

import pytest

from chalicelib.domain.clock import format_iso
from chalicelib.domain.model import StageSpec, new_run
from chalicelib.domain.operations import MAX_ATTEMPTS, decide, new_attempt
from chalicelib.store import repository
from chalicelib.store.models import AttemptItem, StageItem, attempts_pk, run_pk, stage_sk
from tests.fixtures.backends import current_items
from tests.fixtures.history import retried_run


def create(client, stages=("BUILD", "DEPLOY_PROD"), pipeline="web"):
    response = client.post("/api/runs", {"pipeline": pipeline, "stages": list(stages)})
    assert response.status_code == 201, response.json
    return response.json


def fail_and_retry(client, clock, stage_id, times):
    """``times`` attempts that ran 2 s and failed, each followed by a retry."""
    ended = []
    for _ in range(times):
        started = format_iso(clock.now())
        assert client.patch(f"/api/stages/{stage_id}", {"status": "IN_PROGRESS"}).status_code == 200
        clock.advance(2)
        done = client.patch(f"/api/stages/{stage_id}", {"status": "FAILURE"}).json
        ended.append({"attempt": done["attempt"], "status": "FAILURE", "startedAt": started,
                      "endedAt": format_iso(clock.now()), "duration": 2, "approvalDecision": None})
        assert client.post(f"/api/stages/{stage_id}/retry").status_code == 200
        clock.advance(1)
    return ended


def attempt_items(stage_id):
    return list(current_items().attempt.query(attempts_pk(stage_id), consistent_read=True))


# ---- the API --------------------------------------------------------------------------------------

def test_a_stage_lists_its_ended_attempts_newest_first_in_pages(client, clock):
    build = create(client)["stages"][0]["id"]
    ended = fail_and_retry(client, clock, build, 3)

    first = client.get(f"/api/stages/{build}/attempts?limit=2")
    assert first.status_code == 200
    assert first.json["items"] == [ended[2], ended[1]] and isinstance(first.json["nextCursor"], str)
    second = client.get(f"/api/stages/{build}/attempts?limit=2&cursor={first.json['nextCursor']}")
    assert second.status_code == 200 and second.json == {"items": [ended[0]], "nextCursor": None}
    assert client.get(f"/api/stages/{build}/attempts").json == {"items": ended[::-1], "nextCursor": None}


def test_views_show_the_current_attempt_and_a_count_and_the_history_only_when_asked_for(client, clock):
    run = create(client)
    build, deploy = (s["id"] for s in run["stages"])
    ended = fail_and_retry(client, clock, build, 2)

    stage = client.get(f"/api/stages/{build}").json
    assert (stage["attempt"], stage["attemptCount"], stage["status"]) == (3, 3, "IDLE")
    assert "attempts" not in stage
    assert client.get(f"/api/stages/{build}?include=attempts").json["attempts"] == ended
    plain = client.get(f"/api/runs/{run['id']}").json
    assert [(s["attempt"], s["attemptCount"], "attempts" in s) for s in plain["stages"]] == [
        (3, 3, False), (1, 1, False)]
    full = client.get(f"/api/runs/{run['id']}?include=attempts").json
    assert [s["attempts"] for s in full["stages"]] == [ended, []]
    assert {**full, "stages": None} == {**plain, "stages": None}
    listed = client.get(f"/api/stages?runId={run['id']}").json
    assert [(s["attemptCount"], "attempts" in s) for s in listed] == [(3, False), (1, False)]
    assert client.get(f"/api/stages/{deploy}/attempts").json == {"items": [], "nextCursor": None}


def test_bad_requests_for_attempts_are_clear_errors(client, clock):
    run = create(client)
    build, deploy = (s["id"] for s in run["stages"])
    fail_and_retry(client, clock, build, 3)
    fail_and_retry(client, clock, deploy, 1)
    cursor = client.get(f"/api/stages/{build}/attempts?limit=1").json["nextCursor"]

    def error(path):
        response = client.get(path)
        return response.status_code, response.json["error"]["code"]

    assert error(f"/api/stages/{run['id']}:9/attempts") == (404, "not_found")
    assert error("/api/stages/nonsense/attempts") == (404, "not_found")
    assert error(f"/api/stages/{deploy}/attempts?cursor={cursor}") == (400, "bad_request")  # another stage's
    assert error(f"/api/stages/{build}/attempts?cursor=forged.cursor") == (400, "bad_request")
    assert error(f"/api/stages/{build}/attempts?limit=0") == (400, "bad_request")
    assert error(f"/api/stages/{build}/attempts?limit=101") == (400, "bad_request")
    assert error(f"/api/stages/{build}/attempts?order=oldest") == (400, "bad_request")
    assert error(f"/api/runs/{run['id']}?include=everything") == (400, "bad_request")
    assert error(f"/api/stages/{build}?include=steps") == (400, "bad_request")


def test_a_token_limited_to_another_pipeline_reads_no_history(client, clock, ddb_calls):
    build = create(client)["stages"][0]["id"]
    fail_and_retry(client, clock, build, 1)
    token = client.post("/api/tokens", {"name": "other-reader", "scopes": ["read"],
                                        "pipelines": ["other"]}).json
    ddb_calls.clear()
    response = client.get(f"/api/stages/{build}/attempts", auth=token["token"])
    assert response.status_code == 404 and response.json["error"]["code"] == "not_found"
    assert "Query" not in ddb_calls and "GetItem" not in ddb_calls


def test_reading_a_run_reads_no_attempt_items(client, clock, ddb_calls):
    run = create(client, ["BUILD", "UNIT_TEST", "DEPLOY_PROD"])
    for stage in run["stages"][:2]:
        fail_and_retry(client, clock, stage["id"], 2)
    ddb_calls.clear()
    assert client.get(f"/api/runs/{run['id']}").status_code == 200
    assert (ddb_calls["Query"], ddb_calls["GetItem"]) == (1, 0)
    ddb_calls.clear()
    assert client.get(f"/api/runs/{run['id']}?include=attempts").status_code == 200
    assert (ddb_calls["Query"], ddb_calls["GetItem"]) == (3, 0)  # the run, and the 2 retried stages
    ddb_calls.clear()
    assert client.get(f"/api/stages/{run['stages'][2]['id']}?include=attempts").status_code == 200
    assert (ddb_calls["Query"], ddb_calls["GetItem"]) == (0, 1)  # never retried: no history to read


def test_gocd_stage_instance_by_counter_reads_one_attempt_item_by_key(client, clock, ddb_calls):
    run = create(client, [{"type": "BUILD", "name": "s"}], pipeline="p")
    stage_id = run["stages"][0]["id"]
    fail_and_retry(client, clock, stage_id, 2)
    ddb_calls.clear()
    old = client.get("/go/api/stages/p/s/instance/1/1")
    assert old.status_code == 200 and (old.json["counter"], old.json["result"]) == (1, "Failed")
    assert (ddb_calls["Query"], ddb_calls["GetItem"]) == (1, 1)
    ddb_calls.clear()
    current = client.get("/go/api/stages/p/s/instance/1/3")
    assert current.status_code == 200 and (current.json["counter"], current.json["result"]) == (3, "Unknown")
    assert (ddb_calls["Query"], ddb_calls["GetItem"]) == (1, 0)
    ddb_calls.clear()
    assert client.get("/go/api/stages/p/s/instance/1/4").status_code == 404
    assert (ddb_calls["Query"], ddb_calls["GetItem"]) == (1, 0)  # never an attempt: nothing to read


# ---- storage: one item per ended attempt, deleted with its stage or run ----------------------------

def test_each_ended_attempt_is_one_item_written_with_the_retry(client, clock, ddb_calls):
    run = create(client)
    build = run["stages"][0]["id"]
    fail_and_retry(client, clock, build, 1)
    ddb_calls.clear()
    fail_and_retry(client, clock, build, 1)
    # start, fail, retry: three transactions; the retry's holds the stage, the run and the attempt
    assert ddb_calls["TransactWriteItems"] == 3
    items = attempt_items(build)
    assert [(i.sk, i.attempt, i.stage_id) for i in items] == [("ATTEMPT#0001", 1, build),
                                                              ("ATTEMPT#0002", 2, build)]
    stage_item = current_items().stage.get(run_pk(run["id"]), stage_sk(1))
    assert stage_item.attempts is None and (stage_item.attempt, stage_item.first_attempt) == (3, 1)


def test_deleting_a_run_or_a_stage_deletes_its_attempts(client, clock):
    run = create(client, ["BUILD", "UNIT_TEST", "DEPLOY_PROD"])
    build, test, deploy = (s["id"] for s in run["stages"])
    fail_and_retry(client, clock, build, 2)
    fail_and_retry(client, clock, test, 1)
    fail_and_retry(client, clock, deploy, 1)
    assert client.delete(f"/api/stages/{deploy}").status_code == 200
    assert attempt_items(deploy) == [] and len(attempt_items(build)) == 2
    assert client.delete(f"/api/runs/{run['id']}").status_code == 200
    assert attempt_items(build) == [] and attempt_items(test) == []


def test_deleting_a_run_with_more_attempts_than_one_transaction_holds_deletes_them_all(client, ctx, clock):
    """6 stages retried 20 times: 120 attempt items, so the delete goes through the intent."""
    aggregate = retried_run(ctx, clock, stages=6, retries=20)
    assert sum(len(attempt_items(s.id)) for s in aggregate.stages) == 120
    assert client.delete(f"/api/runs/{aggregate.run.id}").status_code == 200
    assert client.get(f"/api/runs/{aggregate.run.id}").status_code == 404
    assert [attempt_items(s.id) for s in aggregate.stages] == [[]] * 6
    assert list(current_items().base.query(run_pk(aggregate.run.id))) == []


# ---- items of the previous layout: read both, move on the next write ------------------------------

def _plant_legacy_stage(ctx, clock, *, inline: int):
    """A run whose first stage item is as the previous layout wrote it: attempt ``inline + 1``,
    its ``inline`` ended attempts in the item's ``attempts`` attribute, no ``first_attempt``."""
    counter, _ = ctx.stores.pipelines.claim_counter("web")
    aggregate = new_run("web", counter, [StageSpec(type="BUILD", name="build"),
                                         StageSpec(type="DEPLOY_PROD", name="deploy")], clock.now())
    ctx.stores.runs.insert_run(aggregate)
    history = [{"attempt": n, "status": "FAILURE", "startedAt": format_iso(clock.now()),
                "endedAt": format_iso(clock.now()), "duration": 0} for n in range(1, inline + 1)]
    item = current_items().stage.get(run_pk(aggregate.run.id), stage_sk(1))
    item.update(actions=[StageItem.attempts.set(json.dumps(history)), StageItem.attempt.set(inline + 1),
                         StageItem.first_attempt.remove()])
    shown = [{**entry, "approvalDecision": None} for entry in history]
    return aggregate.run.id, aggregate.stages[0].id, shown


def test_a_stage_item_of_the_previous_layout_reads_as_before_and_moves_out_on_its_next_write(client, ctx,
                                                                                             clock):
    run_id, build, history = _plant_legacy_stage(ctx, clock, inline=3)

    stage = client.get(f"/api/stages/{build}").json
    assert (stage["attempt"], stage["attemptCount"], "attempts" in stage) == (4, 4, False)
    assert client.get(f"/api/stages/{build}/attempts").json == {"items": history[::-1], "nextCursor": None}
    assert client.get(f"/api/runs/{run_id}?include=attempts").json["stages"][0]["attempts"] == history
    page = client.get(f"/api/stages/{build}/attempts?limit=2").json
    assert [a["attempt"] for a in page["items"]] == [3, 2]
    assert client.get(f"/api/stages/{build}/attempts?limit=2&cursor={page['nextCursor']}").json["items"] == \
        history[:1]
    assert client.get("/go/api/stages/web/build/instance/1/2").json["counter"] == 2
    assert attempt_items(build) == []  # reading moved nothing

    # the stage's next write moves its history out, in the same transaction
    assert client.patch(f"/api/stages/{build}", {"name": "compile"}).status_code == 200
    item = current_items().stage.get(run_pk(run_id), stage_sk(1))
    assert item.attempts is None and item.first_attempt == 1
    assert [i.attempt for i in attempt_items(build)] == [1, 2, 3]
    assert client.get(f"/api/stages/{build}/attempts").json == {"items": history[::-1], "nextCursor": None}
    assert client.get("/go/api/stages/web/compile/instance/1/2").json["counter"] == 2
    # and a later retry adds to it
    assert client.patch(f"/api/stages/{build}", {"status": "IN_PROGRESS"}).status_code == 200
    assert client.patch(f"/api/stages/{build}", {"status": "SUCCESS"}).status_code == 200
    assert client.post(f"/api/stages/{build}/retry").status_code == 200
    assert [a["attempt"] for a in client.get(f"/api/stages/{build}/attempts").json["items"]] == [4, 3, 2, 1]


def test_deleting_a_run_of_the_previous_layout_leaves_nothing(client, ctx, clock):
    run_id, build, _ = _plant_legacy_stage(ctx, clock, inline=2)
    assert client.delete(f"/api/runs/{run_id}").status_code == 200
    assert list(current_items().base.query(run_pk(run_id))) == [] and attempt_items(build) == []


# ---- bounds: the largest item any input can produce -----------------------------------------------

def test_the_largest_stage_and_attempt_items_are_small_and_history_no_longer_grows_the_stage(ctx, clock):
    """The worst case: a 100-character stage name on the longest stage id, every attempt up to
    MAX_ATTEMPTS decided at its gate by a 100-character actor with a 1000-character comment of
    characters JSON escapes at 12 bytes each (astral: a surrogate pair of \\uXXXX)."""
    pipeline = "p" * 100
    name = "n" * 100
    comment = "\U0001F600" * 1000
    aggregate = new_run(pipeline, 10**12 - 1, [StageSpec(type="DEPLOY_STAGING", name=name, timeout_seconds=1,
                                                         approval="MANUAL", expected_seconds=1)],
                        clock.now())
    stage = aggregate.stages[0]
    items = current_items()
    attempts = []
    while stage.attempt < MAX_ATTEMPTS:
        stage.status = stage.status.__class__("WAITING_FOR_APPROVAL")
        decide(aggregate, stage.id, "REJECTED", clock.now(), actor="a" * 100, comment=comment)
        new_attempt(stage, clock.now())
        attempts.append(repository.attempt_to_item(items.attempt, stage.id, stage.attempts[-1]))
    stage.status = stage.status.__class__("WAITING_FOR_APPROVAL")
    decide(aggregate, stage.id, "REJECTED", clock.now(), actor="a" * 100, comment=comment)
    stage_item = repository.stage_to_item(items.stage, stage, big_run=True, run_version=10**6)
    stage_bytes = repository.item_bytes(stage_item.serialize())
    attempt_bytes = max(repository.item_bytes(a.serialize()) for a in attempts)
    assert stage.attempt == MAX_ATTEMPTS and len(attempts) == MAX_ATTEMPTS - 1
    assert stage_bytes < 16 * 1024 and attempt_bytes < 16 * 1024, (stage_bytes, attempt_bytes)
    # the previous layout kept all of them inline: far past DynamoDB's 400 KB item limit
    inline = stage_bytes + len(json.dumps(stage.attempts))
    assert inline > 400 * 1024, inline
    assert isinstance(stage_item, StageItem) and isinstance(attempts[0], AttemptItem)


# ---- DynamoDB Local: consumed capacity ------------------------------------------------------------

@pytest.fixture
def consumed(monkeypatch):
    """Asks DynamoDB for the consumed capacity of every read and write and adds it up per
    operation: {"Query": units, ...} (what DynamoDB Local reports, as DynamoDB bills)."""
    import botocore.client

    totals: dict[str, float] = {}
    original = botocore.client.BaseClient._make_api_call

    def measuring(self, operation, params):
        if self.meta.service_model.service_name != "dynamodb" or operation not in _MEASURED:
            return original(self, operation, params)
        response = original(self, operation, {**params, "ReturnConsumedCapacity": "TOTAL"})
        used = response.get("ConsumedCapacity")
        for entry in used if isinstance(used, list) else [used] if used else []:
            totals[operation] = totals.get(operation, 0.0) + float(entry.get("CapacityUnits", 0))
        return response

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", measuring)
    return totals


_MEASURED = {"Query", "GetItem", "TransactGetItems", "BatchGetItem", "TransactWriteItems", "PutItem",
             "UpdateItem", "DeleteItem"}


@pytest.mark.ddb_local
def test_reading_a_run_costs_the_same_whatever_its_retry_history_on_dynamodb_local(local_ctx, clock,
                                                                                   consumed):
    """A run of 6 stages retried 0, 10 and 99 times (MAX_ATTEMPTS - 1: the most a stage can have):
    ``GET /api/runs/{id}`` reads the same units; the history costs only when it is asked for."""
    from chalice.test import Client

    from app import app
    from tests.fixtures.api import ApiClient

    runs = {retries: retried_run(local_ctx, clock, stages=6, retries=retries, pipeline=f"r{retries}")
            for retries in (0, 10, MAX_ATTEMPTS - 1)}
    units = {}
    with Client(app) as http:
        client = ApiClient(http, admin_token=local_ctx.settings.admin_token)
        for retries, aggregate in runs.items():
            consumed.clear()
            response = client.get(f"/api/runs/{aggregate.run.id}")
            assert response.status_code == 200
            units[retries] = (dict(consumed), [s["attempt"] for s in response.json["stages"]])
        assert units[0][0] == units[10][0] == units[MAX_ATTEMPTS - 1][0] == {"Query": 1.0}, units
        assert [units[n][1] for n in units] == [[1] * 6, [11] * 6, [MAX_ATTEMPTS] * 6]
        assert {s["attemptCount"] for s in response.json["stages"]} == {MAX_ATTEMPTS}
        consumed.clear()
        full = client.get(f"/api/runs/{runs[MAX_ATTEMPTS - 1].run.id}?include=attempts").json
        assert [len(s["attempts"]) for s in full["stages"]] == [MAX_ATTEMPTS - 1] * 6
        assert consumed["Query"] > 6  # what asking for 594 attempts costs
        consumed.clear()
        page = client.get(f"/api/stages/{runs[MAX_ATTEMPTS - 1].stages[0].id}/attempts?limit=20").json
        assert [a["attempt"] for a in page["items"]] == list(range(MAX_ATTEMPTS - 1, MAX_ATTEMPTS - 21, -1))
        assert consumed == {"GetItem": 1.0, "Query": 1.0}, consumed

