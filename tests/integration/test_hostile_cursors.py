"""Paging cursors are signed and bound to their listing: anything else is a 400 (issue 10, item 4)."""
from __future__ import annotations

import base64
import json

import pytest

from chalicelib import wiring
from chalicelib.domain.cursors import CursorCodec
from chalicelib.domain.errors import BadRequest
from chalicelib.service.ports import DeliveryAttempt
from tests.integration.test_api_runs import assert_error

URL = "https://hooks.example.com/stagetrack"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def forge(payload) -> str:
    """A cursor in the old unsigned shape: base64url(JSON)."""
    return b64(json.dumps(payload).encode())


def assert_cursor_refused(response):
    assert_error(response, 400, "bad_request")
    assert response.json["error"]["message"] == "cursor is not valid"


def hostile_cursors(real: str, ctx) -> list[str]:
    body, _, tag = real.partition(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    wrong_key = CursorCodec("some-other-deployment-key")
    return [
        body,                                                  # signature stripped
        f"{body}.",                                            # empty signature
        f"{body}.{tag[:-4]}",                                  # truncated signature
        f"{body[:-2]}.{tag}",                                  # truncated payload
        f"{body}x.{tag}",                                      # edited payload
        f"{body}.{tag}.{tag}",                                 # two signatures
        wrong_key.seal("runs/web/*", payload),                 # re-signed with the wrong key
        f"{b64(json.dumps({**payload, 'counter': {'N': '1' * 400}}).encode())}.{tag}",  # huge number
        forge({"pk": {"S": {"S": {"S": "RUN#web:1"}}}}),        # nested, unsigned
        forge([[[[[[[[]]]]]]]]),
        forge({"pk": {"S": "RUN#web:1"}, "sk": {"N": "9" * 5000}}),
        forge({"pk": {"B": "AAAA"}, "sk": {"S": "RUN"}}),
        forge(1e308),
        "%C3%A9%E2%82%AC." + tag,                               # non-ASCII
        "é" * 10,
        "A" * 2048,
        f"{'A' * 2000}.{tag}",
        "..........",
        "." + tag,
    ]


@pytest.fixture
def web_cursor(client):
    for _ in range(3):
        client.post("/api/runs", {"pipeline": "web"})
        client.post("/api/runs", {"pipeline": "api"})
    cursor = client.get("/api/runs?pipeline=web&limit=1").json["nextCursor"]
    assert cursor and "." in cursor
    return cursor


def test_every_tampered_or_forged_runs_cursor_is_400(client, ctx, web_cursor, ddb_calls):
    ddb_calls.clear()
    for cursor in hostile_cursors(web_cursor, ctx):
        response = client.get(f"/api/runs?pipeline=web&limit=1&cursor={cursor}")
        assert response.status_code == 400, (cursor, response.status_code, response.json)
        assert set(response.json) == {"error"} and response.json["error"]["code"] == "bad_request"
    assert "Query" not in ddb_calls  # refused before it reached the database


def test_cursor_of_another_listing_is_refused(client, web_cursor):
    assert_cursor_refused(client.get(f"/api/runs?pipeline=api&limit=1&cursor={web_cursor}"))
    assert_cursor_refused(client.get(f"/api/runs?pipeline=web&status=IDLE&limit=1&cursor={web_cursor}"))
    idle = client.get("/api/runs?pipeline=web&status=IDLE&limit=1").json["nextCursor"]
    assert_cursor_refused(client.get(f"/api/runs?pipeline=web&limit=1&cursor={idle}"))
    assert_cursor_refused(client.get(f"/api/runs?pipeline=web&status=SUCCESS&limit=1&cursor={idle}"))
    # and each works where it belongs
    assert client.get(f"/api/runs?pipeline=web&limit=1&cursor={web_cursor}").json["items"][0]["counter"] == 2
    assert (
        client.get(f"/api/runs?pipeline=web&status=IDLE&limit=1&cursor={idle}").json["items"][0]["counter"]
        == 2
    )


def test_a_pipeline_name_that_prefixes_another_does_not_share_cursors(client):
    for name in ("web", "web2"):
        for _ in range(2):
            client.post("/api/runs", {"pipeline": name})
    cursor = client.get("/api/runs?pipeline=web&limit=1").json["nextCursor"]
    assert_cursor_refused(client.get(f"/api/runs?pipeline=web2&limit=1&cursor={cursor}"))


def test_codec_verifies_before_decoding():
    codec = CursorCodec("k1")
    sealed = codec.seal("s", {"pk": {"S": "x"}})
    assert codec.open("s", sealed) == {"pk": {"S": "x"}}
    assert codec.seal("s", None) is None and codec.seal("s", {}) is None
    for bad in [CursorCodec("k2").seal("s", {"pk": {"S": "x"}}), sealed + "A", sealed[:-1], "",
                codec.seal("s", {"a": 1}).replace(".", ".."), "x" * 3000]:
        with pytest.raises(BadRequest, match="cursor is not valid"):
            codec.open("s", bad)
    with pytest.raises(BadRequest):
        codec.open("t", sealed)  # another scope


def test_a_signed_cursor_that_is_not_a_plain_key_is_still_400(client, ctx, web_cursor):
    """Defence in depth: even with the key, a cursor carries only S/N attributes of the listing."""
    for payload in ([1], {"pk": {"S": {"nested": "x"}}}, {"pk": {"B": "AAAA"}}, {"other": {"S": "x"}},
                    {"pk": {"S": "x", "N": "1"}}, {"pk": {"N": 5}}):
        cursor = ctx.cursors.seal("runs/web/*", payload)
        assert_cursor_refused(client.get(f"/api/runs?pipeline=web&limit=1&cursor={cursor}"))


# ---- subscription deliveries -----------------------------------------------------------------

@pytest.fixture
def delivery_cursor(client, clock):
    subscription = client.post("/api/subscriptions", {"url": URL, "events": ["*"]}).json
    for attempt in range(1, 4):
        wiring.context().stores.deliveries.record(DeliveryAttempt(
            subscription_id=subscription["id"], delivery_id="dlv_1", event_id="evt_1",
            event_type="stage.status-changed", attempt=attempt, outcome="retrying",
            at=f"2026-03-20T17:1{attempt}:00.000Z", status_code=500, error="HTTP 500", duration_ms=3,
        ), int(clock.now().timestamp()))
    cursor = client.get(f"/api/subscriptions/{subscription['id']}/deliveries?limit=1").json["nextCursor"]
    assert cursor and "." in cursor
    return subscription["id"], cursor


def test_every_tampered_or_forged_deliveries_cursor_is_400(client, ctx, delivery_cursor, ddb_calls):
    subscription_id, real = delivery_cursor
    body, _, tag = real.partition(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    cursors = hostile_cursors(real, ctx) + [
        forge({"pk": {"S": f"DELIV#{subscription_id}"}, "sk": {"S": {"S": {"S": "x"}}}}),
        forge({"pk": {"S": f"DELIV#{subscription_id}"}, "sk": {"M": {"S": {"S": "x"}}}}),
        CursorCodec("wrong").seal(f"deliveries/{subscription_id}", payload),
        ctx.cursors.seal(f"deliveries/{subscription_id}", {"pk": payload["pk"], "sk": {"M": {}}}),
    ]
    ddb_calls.clear()
    for cursor in cursors:
        response = client.get(f"/api/subscriptions/{subscription_id}/deliveries?limit=1&cursor={cursor}")
        assert response.status_code == 400, (cursor, response.status_code, response.json)
        assert set(response.json) == {"error"} and response.json["error"]["code"] == "bad_request"
    assert "Query" not in ddb_calls


def test_deliveries_cursor_of_another_subscription_or_listing_is_refused(client, delivery_cursor, web_cursor):
    subscription_id, cursor = delivery_cursor
    other = client.post("/api/subscriptions", {"url": URL, "events": ["*"]}).json["id"]
    assert_cursor_refused(client.get(f"/api/subscriptions/{other}/deliveries?cursor={cursor}"))
    assert_cursor_refused(client.get(f"/api/subscriptions/{subscription_id}/deliveries?cursor={web_cursor}"))
    assert_cursor_refused(client.get(f"/api/runs?pipeline=web&cursor={cursor}"))
    page = client.get(f"/api/subscriptions/{subscription_id}/deliveries?limit=1&cursor={cursor}").json
    assert [a["attempt"] for a in page["items"]] == [2]


# ---- GoCD history offsets --------------------------------------------------------------------

@pytest.mark.parametrize("offset,status", [
    ("999999999999", 200), ("0", 200), ("1" * 13, 400), ("-1", 400), ("1e3", 400), ("%C3%A9", 400),
    ("1%0A", 400), ("0x10", 400),
])
def test_gocd_history_offsets_never_500(client, offset, status):
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    for path in (f"/go/api/pipelines/web/history/{offset}", f"/go/api/stages/web/BUILD/history/{offset}"):
        response = client.get(path)
        assert response.status_code == status, (path, response.body)
        if status == 200:
            assert response.json["pagination"]["total"] == 1
