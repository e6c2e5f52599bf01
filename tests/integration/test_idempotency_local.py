"""The Idempotency-Key commit carried in the effect's transaction, against a real DynamoDB Local
(cancellation reasons and conditions on a second item are what moto may get wrong)."""
from __future__ import annotations

import json

import pytest

from chalicelib.domain.errors import Conflict
from chalicelib.domain.schemas import CreateRunIn
from chalicelib.service import pipelines, runs
from chalicelib.service.ports import ClaimTakenOver
from chalicelib.store.models import IDEMPOTENCY_SK, idempotency_pk
from tests.fixtures.backends import current_items

pytestmark = pytest.mark.ddb_local
LEASE, TTL = 300, 86400


def record(key_hash):
    return current_items().idempotency.get(idempotency_pk(key_hash), IDEMPOTENCY_SK, consistent_read=True)


def claim(ctx, clock, key_hash):
    return ctx.stores.idempotency.claim(key_hash, "fp", int(clock.now().timestamp()),
                                      lease_seconds=LEASE, ttl_seconds=TTL)


def test_the_run_and_the_key_commit_together_and_a_committed_key_is_not_claimed_again(local_ctx, clock):
    token = claim(local_ctx, clock, "k1")
    with local_ctx.stores.idempotency.holding("k1", token):
        aggregate = runs.create_run(local_ctx, CreateRunIn(pipeline="web"))
    item = record("k1")
    assert (item.state, json.loads(item.effect)) == ("COMMITTED", {"run": aggregate.run.id})
    clock.advance(LEASE + 1)
    held = claim(local_ctx, clock, "k1")
    assert held.state == "COMMITTED" and held.effect == {"run": aggregate.run.id}
    local_ctx.stores.idempotency.release("k1", token)  # a committed record is never dropped
    assert record("k1").state == "COMMITTED"
    assert local_ctx.stores.idempotency.complete("k1", token, 201, {}, b"{}", max_stored=1000) == "stored"
    assert record("k1").state == "DONE"


def test_a_claim_taken_over_cannot_commit_and_writes_nothing(local_ctx, clock):
    first = claim(local_ctx, clock, "k2")
    clock.advance(LEASE)
    second = claim(local_ctx, clock, "k2")
    assert isinstance(second, str) and second != first
    with local_ctx.stores.idempotency.holding("k2", first), pytest.raises(ClaimTakenOver):
        runs.create_run(local_ctx, CreateRunIn(pipeline="web"))
    assert local_ctx.stores.runs.load_run("web:1") is None
    assert (record("k2").state, record("k2").token) == ("PENDING", second)


def test_a_pause_carrying_a_key_maps_its_own_condition_failure_to_409(local_ctx, clock):
    runs.create_run(local_ctx, CreateRunIn(pipeline="web"))
    with local_ctx.stores.idempotency.holding("k3", claim(local_ctx, clock, "k3")):
        assert pipelines.pause(local_ctx, "web", actor="me").paused is True
    held = claim(local_ctx, clock, "k4")
    with local_ctx.stores.idempotency.holding("k4", held), pytest.raises(Conflict) as refused:
        pipelines.pause(local_ctx, "web", actor="me")
    assert not isinstance(refused.value, ClaimTakenOver)
    assert record("k4").state == "PENDING"  # nothing committed: the request may release it
