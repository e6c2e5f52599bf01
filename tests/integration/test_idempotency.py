"""Idempotency-Key on every POST (api/idempotency.py, store/idempotency.py), on moto."""
from __future__ import annotations

import json

import pytest

from tests.integration.test_operations_api import assert_error, create


def key(value):
    return {"Idempotency-Key": value}


def runs_of(client, pipeline="web"):
    return [r["counter"] for r in client.get(f"/api/runs?pipeline={pipeline}").json["items"]]


def test_repeat_with_same_key_and_body_replays_the_first_response(client, ddb_calls):
    body = {"pipeline": "web", "stages": ["BUILD"]}
    first = client.post("/api/runs", body, headers=key("create-1"))
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    ddb_calls.clear()
    again = client.post("/api/runs", body, headers=key("create-1"))
    assert again.status_code == 201
    assert again.json == first.json
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert dict(ddb_calls) == {"PutItem": 1, "GetItem": 1}  # refused claim, then the stored answer
    assert runs_of(client) == [1]


def test_same_json_with_other_spacing_is_the_same_request(client):
    client.post("/api/runs", raw='{"pipeline": "web", "stages": ["BUILD"]}', headers=key("k"))
    again = client.post("/api/runs", raw='{"stages":["BUILD"],"pipeline":"web"}', headers=key("k"))
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert runs_of(client) == [1]


def test_same_key_with_a_different_body_is_422(client):
    client.post("/api/runs", {"pipeline": "web"}, headers=key("k"))
    response = client.post("/api/runs", {"pipeline": "web", "trigger": "push"}, headers=key("k"))
    assert_error(response, 422, "idempotency_key_reused")
    assert runs_of(client) == [1]


def test_same_key_on_another_resource_of_the_same_route_is_422(client):
    a = create(client, ["BUILD"])
    b = create(client, ["BUILD"])
    assert client.post(f"/api/runs/{a['id']}/cancel", headers=key("c")).status_code == 200
    assert_error(client.post(f"/api/runs/{b['id']}/cancel", headers=key("c")), 422, "idempotency_key_reused")
    assert client.get(f"/api/runs/{b['id']}").json["status"] == "IDLE"


def test_keys_are_scoped_per_route(client):
    run = create(client, ["BUILD"])
    assert client.post("/api/runs", {"pipeline": "web"}, headers=key("shared")).status_code == 201
    response = client.post(f"/api/runs/{run['id']}/cancel", headers=key("shared"))
    assert response.status_code == 200 and response.json["status"] == "CANCELLED"
    assert "Idempotent-Replayed" not in response.headers


def test_keys_are_scoped_per_caller(client):
    issued = client.post("/api/tokens", {"name": "ci", "scopes": ["operate"]})
    assert issued.status_code == 201, issued.json
    other = issued.json["token"]
    body = {"pipeline": "web"}
    assert client.post("/api/runs", body, headers=key("same")).json["counter"] == 1
    second = client.post("/api/runs", body, headers=key("same"), auth=other)
    assert second.status_code == 201 and second.json["counter"] == 2
    assert "Idempotent-Replayed" not in second.headers


def test_a_repeat_of_an_operation_does_not_operate_again(client, clock):
    run = create(client, ["BUILD", "OTHER"])
    build = run["stages"][0]["id"]
    client.patch(f"/api/stages/{build}", {"status": "IN_PROGRESS"})
    client.patch(f"/api/stages/{build}", {"status": "FAILURE"})
    first = client.post(f"/api/runs/{run['id']}/retry", headers=key("retry-1"))
    assert first.json["stages"][0]["attempt"] == 2
    client.patch(f"/api/stages/{build}", {"status": "IN_PROGRESS"})
    client.patch(f"/api/stages/{build}", {"status": "FAILURE"})
    clock.advance(3600)
    again = client.post(f"/api/runs/{run['id']}/retry", headers=key("retry-1"))
    assert again.status_code == 200 and again.json == first.json
    assert client.get(f"/api/runs/{run['id']}").json["stages"][0]["attempt"] == 2  # not retried twice


def test_schedule_with_key_schedules_once(client):
    create(client, ["BUILD"])
    first = client.post("/api/pipelines/web/schedule", headers=key("s"))
    again = client.post("/api/pipelines/web/schedule", headers=key("s"))
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json == first.json and again.headers["Location"] == "/api/runs/web:2"
    assert runs_of(client) == [2, 1]


def test_a_failed_request_releases_its_key(client):
    assert_error(
        client.post("/api/runs", {"pipeline": "bad name"}, headers=key("k")), 422, "validation_failed"
    )
    response = client.post("/api/runs", {"pipeline": "web"}, headers=key("k"))
    assert response.status_code == 201 and "Idempotent-Replayed" not in response.headers
    create(client, ["BUILD"], pipeline="p2")
    assert_error(client.post("/api/runs/p2:1/retry", headers=key("r")), 409, "nothing_to_retry")
    assert_error(client.post("/api/runs/p2:1/retry", headers=key("r")), 409, "nothing_to_retry")


def test_records_expire_after_24_hours(client, ctx, clock):
    client.post("/api/runs", {"pipeline": "web"}, headers=key("k"))
    from chalicelib.store.models import IdempotencyItem
    from tests.fixtures.backends import items_of

    items = [i for i in items_of(ctx).idempotency.scan() if isinstance(i, IdempotencyItem)]
    assert len(items) == 1
    assert int(items[0].expires_at) == int(clock.now().timestamp()) + 24 * 3600
    clock.advance(24 * 3600 - 1)
    assert_error(
        client.post("/api/runs", {"pipeline": "other"}, headers=key("k")), 422, "idempotency_key_reused"
    )
    clock.advance(1)  # expired (TTL deletion may lag; the claim checks expiry itself)
    response = client.post("/api/runs", {"pipeline": "other"}, headers=key("k"))
    assert response.status_code == 201 and response.json["pipeline"] == "other"


@pytest.mark.parametrize("value", ["x" * 256, "has space", "tab\there", "é"])
def test_bad_keys_are_400(client, value):
    response = client.post("/api/runs", {"pipeline": "web"}, headers=key(value))
    assert_error(response, 400, "bad_request")
    assert client.get("/api/runs?pipeline=web").json["items"] == []


def test_longest_key_is_accepted(client):
    assert client.post("/api/runs", {"pipeline": "web"}, headers=key("k" * 255)).status_code == 201


def test_without_the_header_there_is_no_extra_round_trip(client, ddb_calls):
    run = create(client, ["BUILD"])
    ddb_calls.clear()
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    client.post(f"/api/runs/{run['id']}/cancel")
    assert dict(ddb_calls) == {"UpdateItem": 1, "TransactWriteItems": 2, "Query": 1}


def test_with_the_header_a_first_request_costs_one_put_and_one_update(client, ddb_calls):
    ddb_calls.clear()
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]}, headers=key("k"))
    assert dict(ddb_calls) == {"PutItem": 1, "UpdateItem": 2, "TransactWriteItems": 1}


def test_secret_values_are_not_kept_in_the_idempotency_record(client, ctx):
    create(client, ["BUILD"])
    client.post("/api/pipelines/web/schedule", {"variables": {"PLAIN": "visible"}}, headers=key("k"))
    from chalicelib.store.schema import dynamodb_client

    items = dynamodb_client(ctx.settings).scan(TableName=ctx.settings.table_name)["Items"]
    idem = [i for i in items if i["pk"]["S"].startswith("IDEM#")]
    assert len(idem) == 1
    assert "k" != idem[0]["pk"]["S"][5:] and len(idem[0]["pk"]["S"]) == 5 + 64  # an HMAC, not the key
    assert "visible" not in json.dumps(idem[0]["fingerprint"])


def test_a_response_showing_a_secret_once_is_not_kept(client, ctx):
    issued = client.post("/api/tokens", {"name": "ci", "scopes": ["read"]}, headers=key("tok"))
    assert issued.status_code == 201
    secret = issued.json["token"]
    from chalicelib.store.schema import dynamodb_client

    items = dynamodb_client(ctx.settings).scan(TableName=ctx.settings.table_name)["Items"]
    assert secret not in json.dumps(items, default=str)
    again = client.post("/api/tokens", {"name": "ci", "scopes": ["read"]}, headers=key("tok"))
    assert_error(again, 409, "idempotency_response_not_kept")
    assert again.json["error"]["details"]["Location"] == issued.headers["Location"]
    assert secret not in json.dumps(again.json)
    assert len(client.get("/api/tokens").json["items"]) == 1
