"""An Idempotency-Key never creates a second effect after a crash (issue 10 item 3), and no
deeply nested body reaches a 500 (item 4), on moto.

A crash is simulated with ``ProcessDied``, a BaseException raised at a chosen point: the
route's error handling does not catch it (a dead process answers nothing) and, unlike a failed
request, the dying request's cleanup (releasing its claim) does not run either.
"""
from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
from pynamodb.exceptions import TransactWriteError

from chalicelib.api import idempotency
from chalicelib.store import repository
from chalicelib.store.idempotency import IdempotencyStore
from chalicelib.store.models import IdempotencyItem
from chalicelib.store.repository import Repository
from tests.fixtures.backends import current_items
from tests.integration.test_operations_api import assert_error, create

LEASE = idempotency.LEASE_SECONDS


class ProcessDied(BaseException):
    """The Lambda was killed here: nothing after this point runs, cleanup included."""


def key(value):
    return {"Idempotency-Key": value}


def runs_of(client, pipeline="web"):
    return [r["counter"] for r in client.get(f"/api/runs?pipeline={pipeline}").json["items"]]


def idem_records():
    return [item for item in current_items().idempotency.scan() if isinstance(item, IdempotencyItem)]


@pytest.fixture
def dying(monkeypatch):
    """``with dying(Owner, "name", after=False):`` the request calling ``Owner.name`` dies there
    (``after=True``: right after the call returned, i.e. after its write committed)."""
    @contextmanager
    def die(owner, name, *, after=False):
        original = getattr(owner, name)

        def killed(*args, **kwargs):
            if after:
                original(*args, **kwargs)
            raise ProcessDied(name)

        with monkeypatch.context() as patch:
            patch.setattr(owner, name, killed)
            patch.setattr(IdempotencyStore, "release", lambda self, *a, **k: None)
            yield

    return die


def crash(client, dying, owner, name, method, path, body=None, *, raw=None, headers=None, after=False):
    with dying(owner, name, after=after), pytest.raises(ProcessDied):
        client.request(method, path, body, raw=raw, headers=headers)


# ---- a crash after the effect committed: the retry answers it, never repeats it ---------------

def test_a_retry_after_a_crash_before_the_response_was_stored_replays_the_run(client, clock, dying):
    body = {"pipeline": "web", "stages": ["BUILD", "OTHER"]}
    crash(client, dying, IdempotencyStore, "complete", "POST", "/api/runs", body, headers=key("c-1"))
    assert [i.state for i in idem_records()] == ["COMMITTED"]
    assert json.loads(idem_records()[0].effect) == {"run": "web:1"}
    clock.advance(LEASE + 1)  # the lease is long gone: a PENDING claim would be taken over now
    again = client.post("/api/runs", body, headers=key("c-1"))
    assert again.status_code == 201, again.json
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == "/api/runs/web:1"
    assert again.json == client.get("/api/runs/web:1").json
    assert runs_of(client) == [1]
    fresh = client.post("/api/runs", body)  # a normal answer has the same shape
    assert set(fresh.json) == set(again.json) and fresh.json["counter"] == 2


def test_a_crash_right_after_the_transaction_committed_is_replayed_too(client, clock, dying):
    body = {"pipeline": "web"}
    crash(client, dying, Repository, "insert_run", "POST", "/api/runs", body, headers=key("c-2"), after=True)
    clock.advance(LEASE)
    again = client.post("/api/runs", body, headers=key("c-2"))
    assert (again.status_code, again.headers["Idempotent-Replayed"]) == (201, "true")
    assert runs_of(client) == [1]
    assert_error(
        client.post("/api/runs", {"pipeline": "x"}, headers=key("c-2")), 422, "idempotency_key_reused"
    )


def test_a_replay_from_the_effect_costs_a_claim_a_read_and_the_run(client, clock, dying, ddb_calls):
    crash(
        client,
        dying,
        IdempotencyStore,
        "complete",
        "POST",
        "/api/runs",
        {"pipeline": "web"},
        headers=key("k"),
    )
    ddb_calls.clear()
    assert client.post("/api/runs", {"pipeline": "web"}, headers=key("k")).status_code == 201
    assert dict(ddb_calls) == {"PutItem": 1, "GetItem": 1, "Query": 1}


def test_a_crash_before_the_effect_gives_the_key_up_after_the_lease(client, clock, dying):
    """Nothing was written (the run's transaction never ran): the claim stays PENDING, is 409
    while its lease runs, and then the retry does the work, once."""
    body = {"pipeline": "web"}
    crash(client, dying, Repository, "insert_run", "POST", "/api/runs", body, headers=key("k"))
    assert [i.state for i in idem_records()] == ["PENDING"]
    assert_error(client.post("/api/runs", body, headers=key("k")), 409, "idempotency_key_in_use")
    assert_error(client.post("/api/runs", {"pipeline": "x"}, headers=key("k")), 422, "idempotency_key_reused")
    clock.advance(LEASE)
    again = client.post("/api/runs", body, headers=key("k"))
    assert again.status_code == 201 and "Idempotent-Replayed" not in again.headers
    assert runs_of(client) == [2]  # number 1 was claimed by the request that died: a gap


def _failed_build(client):
    run = create(client, ["BUILD", "OTHER"])
    build = run["stages"][0]["id"]
    client.patch(f"/api/stages/{build}", {"status": "IN_PROGRESS"})
    client.patch(f"/api/stages/{build}", {"status": "FAILURE"})
    return run, build


def test_an_operation_that_committed_before_the_crash_is_not_applied_twice(client, clock, dying):
    run, build = _failed_build(client)
    crash(
        client, dying, IdempotencyStore, "complete", "POST", f"/api/runs/{run['id']}/retry", headers=key("r")
    )
    client.patch(f"/api/stages/{build}", {"status": "IN_PROGRESS"})
    client.patch(f"/api/stages/{build}", {"status": "FAILURE"})  # failed again: retryable again
    clock.advance(LEASE + 60)
    again = client.post(f"/api/runs/{run['id']}/retry", headers=key("r"))
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json == client.get(f"/api/runs/{run['id']}").json
    assert again.json["stages"][0]["attempt"] == 2  # retried once, not twice


def test_a_pause_that_committed_is_not_repeated_after_an_unpause(client, clock, dying):
    create(client, ["BUILD"])
    crash(client, dying, IdempotencyStore, "complete", "POST", "/api/pipelines/web/pause",
          {"cause": "freeze"}, headers=key("p"))
    assert client.get("/api/pipelines/web/status").json["paused"] is True
    assert client.post("/api/pipelines/web/unpause").status_code == 200
    clock.advance(LEASE)
    again = client.post("/api/pipelines/web/pause", {"cause": "freeze"}, headers=key("p"))
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json == client.get("/api/pipelines/web/status").json
    assert again.json["paused"] is False  # the pipeline as it is now; not paused a second time


@pytest.mark.parametrize("path, body, location", [
    ("/api/tokens", {"name": "ci", "scopes": ["read"]}, "/api/tokens/"),
    ("/api/sources", {"type": "github", "name": "gh"}, "/api/sources/gh"),
    ("/api/subscriptions", {"url": "https://hooks.example.com/x", "events": ["*"]}, "/api/subscriptions/"),
])
def test_a_secret_shown_once_is_created_once_after_a_crash(client, clock, dying, path, body, location):
    crash(client, dying, IdempotencyStore, "complete", "POST", path, body, headers=key("s"))
    clock.advance(LEASE)
    again = client.post(path, body, headers=key("s"))
    assert_error(again, 409, "idempotency_response_not_kept")
    assert again.json["error"]["details"]["status"] == 201
    assert again.json["error"]["details"]["Location"].startswith(location)
    assert len(client.get(path).json["items"]) == 1


def test_dialect_posts_are_replayed_in_their_own_shapes(client, clock, dying):
    run = create(client, ["BUILD"])
    crash(client, dying, IdempotencyStore, "complete", "POST", "/go/api/pipelines/web/schedule",
          raw="", headers={**key("g"), "Confirm": "true"})
    clock.advance(LEASE)
    again = client.post("/go/api/pipelines/web/schedule", raw="", headers={**key("g"), "Confirm": "true"})
    assert (again.status_code, again.body) == (202, b"Request to schedule pipeline web accepted")
    assert runs_of(client) == [2, 1]
    from chalicelib.domain import dialect_ids

    stop = {"job_id": dialect_ids.codearts_job_id("web"), "build_no": "1"}
    crash(client, dying, IdempotencyStore, "complete", "POST", "/v3/jobs/stop", stop, headers=key("h"))
    clock.advance(LEASE)
    again = client.post("/v3/jobs/stop", stop, headers=key("h"))
    assert (again.status_code, again.json, again.headers["Idempotent-Replayed"]) == (
        200,
        {"result": True},
        "true",
    )
    assert client.get(f"/api/runs/{run['id']}").json["status"] == "CANCELLED"


# ---- claims that fail, and claims taken over --------------------------------------------------

def test_a_transaction_that_fails_leaves_the_claim_droppable(client, monkeypatch):
    def refused(self, items, effect=None):
        raise TransactWriteError("DynamoDB said no")

    with monkeypatch.context() as patch:
        patch.setattr(repository.Writer, "transact_write", refused)
        assert_error(client.post("/api/runs", {"pipeline": "web"}, headers=key("k")), 500, "internal_error")
    assert idem_records() == []  # released: the request wrote nothing
    again = client.post("/api/runs", {"pipeline": "web"}, headers=key("k"))
    assert again.status_code == 201 and "Idempotent-Replayed" not in again.headers


def test_an_error_after_the_effect_committed_keeps_the_record(client, clock, monkeypatch):
    """A failure after the write (here: rendering) must not release the key: the run exists."""
    from chalicelib.api import native

    with monkeypatch.context() as patch:
        patch.setattr(native, "run_view", lambda *a: 1 / 0)
        assert_error(client.post("/api/runs", {"pipeline": "web"}, headers=key("k")), 500, "internal_error")
    assert [i.state for i in idem_records()] == ["COMMITTED"]
    again = client.post("/api/runs", {"pipeline": "web"}, headers=key("k"))
    assert (again.status_code, again.headers["Idempotent-Replayed"]) == (201, "true")
    assert runs_of(client) == [1]


def test_a_claim_taken_over_after_its_lease_cannot_be_committed_by_the_first(client, clock, monkeypatch):
    """The first request stalls past its lease and a second caller takes the key over. When the
    first one finally writes, its transaction fails on the claim token: nothing is written."""
    original = Repository.insert_run
    takeover = []

    def stalled(self, aggregate, layout=None):
        clock.advance(LEASE)
        (record,) = idem_records()
        takeover.append(IdempotencyStore(self.items, self.writer).claim(
            record.pk[len("IDEM#"):], record.fingerprint, int(clock.now().timestamp()),
            lease_seconds=LEASE, ttl_seconds=idempotency.TTL_SECONDS))
        return original(self, aggregate, layout)

    with monkeypatch.context() as patch:
        patch.setattr(Repository, "insert_run", stalled)
        first = client.post("/api/runs", {"pipeline": "web"}, headers=key("k"))
    assert isinstance(takeover[0], str)  # the second caller holds the key now
    assert_error(first, 409, "idempotency_key_in_use")
    assert runs_of(client) == []
    (record,) = idem_records()
    assert (record.state, record.token) == ("PENDING", takeover[0])  # not released by the first


# ---- round trips -------------------------------------------------------------------------------

def test_pause_without_a_key_is_one_update_and_with_a_key_one_transaction(client, ddb_calls):
    create(client, ["BUILD"])
    ddb_calls.clear()
    assert client.post("/api/pipelines/web/pause").status_code == 200
    assert dict(ddb_calls) == {"UpdateItem": 1}
    client.post("/api/pipelines/web/unpause")
    ddb_calls.clear()
    paused = client.post("/api/pipelines/web/pause", {"cause": "x"}, headers=key("p"))
    assert paused.status_code == 200 and paused.json["paused"] is True
    # claim, pause + the key's commit, the pipeline for the answer, the stored answer
    assert dict(ddb_calls) == {"PutItem": 1, "TransactWriteItems": 1, "GetItem": 1, "UpdateItem": 1}


def test_an_operation_with_a_key_carries_it_in_its_transaction(client, ddb_calls):
    run = create(client, ["BUILD"])
    ddb_calls.clear()
    assert client.post(f"/api/runs/{run['id']}/cancel", headers=key("c")).status_code == 200
    assert dict(ddb_calls) == {"PutItem": 1, "Query": 1, "TransactWriteItems": 1, "UpdateItem": 1}
    assert [i.state for i in idem_records()] == ["DONE"]
