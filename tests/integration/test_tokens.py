"""Tokens: issued once, stored as hashes, accepted three ways, revoked at once, cheap to check."""
from __future__ import annotations

import base64
import hashlib
import json
import re

import pytest

from tests.fixtures.backends import items_of

TOKEN_SHAPE = re.compile(r"^st_[A-Za-z0-9_-]{43}$")


def issue(client, scopes=("operate",), pipelines=None, name="ci-bot"):
    body = {"name": name, "scopes": list(scopes)}
    if pipelines is not None:
        body["pipelines"] = pipelines
    response = client.post("/api/tokens", body)
    assert response.status_code == 201, response.json
    return response.json


def raw_table_dump(ctx) -> str:
    """Every attribute of every item, as DynamoDB holds it."""
    client = items_of(ctx).connection().client
    items = client.scan(TableName=ctx.settings.table_name)["Items"]
    return json.dumps(items)


def test_issue_shows_the_secret_once_and_stores_only_its_hash(client, ctx):
    created = issue(client, scopes=["read", "operate"], pipelines=["web", "api"])
    assert TOKEN_SHAPE.match(created["token"])
    assert created["id"].startswith("tok_")
    assert created["name"] == "ci-bot" and created["scopes"] == ["read", "operate"]
    assert created["pipelines"] == ["api", "web"]
    assert created["createdAt"] == "2026-03-20T17:17:13.760Z" and created["createdBy"] == "bootstrap admin"

    dump = raw_table_dump(ctx)
    assert created["token"] not in dump
    assert created["token"][3:] not in dump
    assert hashlib.sha256(created["token"].encode()).hexdigest() in dump

    listed = client.get("/api/tokens")
    assert listed.status_code == 200
    assert listed.json == {"items": [{k: v for k, v in created.items() if k != "token"}]}
    assert created["token"] not in listed.body.decode()


def test_listing_is_oldest_first_and_unrestricted_tokens_have_null_pipelines(client, clock):
    first = issue(client, name="first")
    clock.advance(1)
    second = issue(client, scopes=["admin"], name="second")
    items = client.get("/api/tokens").json["items"]
    assert [t["id"] for t in items] == [first["id"], second["id"]]
    assert items[1]["pipelines"] is None and items[1]["scopes"] == ["admin"]


@pytest.mark.parametrize("how", ["bearer", "basic", "x-auth-token"])
def test_a_token_is_accepted_three_ways(client, how):
    token = issue(client, scopes=["read"])["token"]
    headers = {
        "bearer": {"Authorization": f"Bearer {token}"},
        "basic": {"Authorization": "Basic " + base64.b64encode(f"alice:{token}".encode()).decode()},
        "x-auth-token": {"X-Auth-Token": token},
    }[how]
    response = client.get("/api/runs?pipeline=web", headers=headers)
    assert response.status_code == 200, response.json
    assert response.headers["X-Rate-Limit-Limit"] == "600"


def test_the_basic_user_is_recorded_as_the_actor(client):
    admin = issue(client, scopes=["admin"], name="ops-admin")["token"]
    basic = "Basic " + base64.b64encode(f"alice:{admin}".encode()).decode()
    created = client.post("/api/tokens", {"name": "by-alice", "scopes": ["read"]},
                          headers={"Authorization": basic})
    assert created.status_code == 201 and created.json["createdBy"] == "alice"
    by_token = client.post("/api/tokens", {"name": "by-token", "scopes": ["read"]}, auth=admin)
    assert by_token.json["createdBy"] == "ops-admin"


def test_revoked_tokens_stop_working_at_once(client):
    created = issue(client, scopes=["read"])
    assert client.get("/api/runs?pipeline=web", auth=created["token"]).status_code == 200
    revoked = client.delete(f"/api/tokens/{created['id']}")
    assert revoked.status_code == 200
    assert revoked.json["id"] == created["id"] and "token" not in revoked.json
    after = client.get("/api/runs?pipeline=web", auth=created["token"])
    assert after.status_code == 401 and after.json["error"]["code"] == "unauthorized"
    assert client.get("/api/tokens").json == {"items": []}
    assert client.delete(f"/api/tokens/{created['id']}").status_code == 404
    assert client.delete("/api/tokens/" + "x" * 300).status_code == 404


@pytest.mark.parametrize("body, field", [
    ({"scopes": ["read"]}, "name"),
    ({"name": "x", "scopes": []}, "scopes"),
    ({"name": "x", "scopes": ["root"]}, "scopes.0"),
    ({"name": "x", "scopes": ["read", "read"]}, "scopes"),
    ({"name": "x", "scopes": "read"}, "scopes"),
    ({"name": "x" * 101, "scopes": ["read"]}, "name"),
    ({"name": "bad\nname", "scopes": ["read"]}, "name"),
    ({"name": "x", "scopes": ["read"], "pipelines": []}, "pipelines"),
    ({"name": "x", "scopes": ["read"], "pipelines": ["a:b"]}, "pipelines.0"),
    ({"name": "x", "scopes": ["read"], "pipelines": ["p"] * 2}, "pipelines"),
    ({"name": "x", "scopes": ["read"], "pipelines": [f"p{i}" for i in range(51)]}, "pipelines"),
    ({"name": "x", "scopes": ["read"], "token": "st_" + "a" * 43}, "token"),
])
def test_bad_token_requests_are_422_naming_the_field(client, ctx, body, field):
    response = client.post("/api/tokens", body)
    assert response.status_code == 422, response.json
    assert any(d["field"].startswith(field) for d in response.json["error"]["details"])
    assert client.get("/api/tokens").json == {"items": []}


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_token_management_needs_admin_and_a_limited_admin_stays_inside_its_pipelines(client):
    limited_admin = issue(client, scopes=["admin"], pipelines=["web"], name="web-admin")["token"]
    operator = issue(client, scopes=["operate"])["token"]
    assert client.get("/api/tokens", auth=operator).status_code == 403
    assert client.post("/api/tokens", {"name": "x", "scopes": ["read"], "pipelines": ["web"]},
                       auth=operator).status_code == 403
    # The limited admin issues tokens for its own pipeline, at most its own level ...
    made = client.post("/api/tokens", {"name": "web-ci", "scopes": ["admin"], "pipelines": ["web"]},
                       auth=limited_admin)
    assert made.status_code == 201, made.json
    assert (made.json["scopes"], made.json["pipelines"]) == (["admin"], ["web"])
    assert made.json["createdBy"] == "web-admin"
    # ... and may still operate its own pipeline.
    assert client.post("/api/runs", {"pipeline": "web"}, auth=limited_admin).status_code == 201


ESCALATIONS = [  # raw JSON bodies, so that a repeated field can be sent
    ('{"name": "x", "scopes": ["admin"]}', 403, "forbidden"),  # unlimited: names no pipeline
    ('{"name": "x", "scopes": ["admin"], "pipelines": null}', 403, "forbidden"),
    ('{"name": "x", "scopes": ["read"], "pipelines": ["other"]}', 404, "not_found"),
    ('{"name": "x", "scopes": ["read"], "pipelines": ["web", "other"]}', 404, "not_found"),
    ('{"name": "x", "scopes": ["read"], "pipelines": ["other", "web"]}', 404, "not_found"),
    ('{"name": "x", "scopes": ["read"], "pipelines": ["web", 5, "other"]}', 404, "not_found"),
    ('{"name": "x", "scopes": ["read"], "pipelines": ["web", null, "other"]}', 404, "not_found"),
    ('{"pipelines": ["web"], "scopes": ["read"], "name": "x", "pipelines": ["other"]}', 404, "not_found"),
    ('{"pipelines": ["other"], "scopes": ["read"], "name": "x", "pipelines": ["web"]}', 404, "not_found"),
    ('{"name": "x", "scopes": ["read"], "pipelines": "web"}', 422, "validation_failed"),  # not a list
]


@pytest.mark.parametrize("query", ["", "?pipeline=web", "?pipeline_name=web", "?runId=web:1",
                                   "?stageId=web:1:1", "?pipeline=web&pipelines=web"])
@pytest.mark.parametrize("raw, status, code", ESCALATIONS)
def test_a_limited_admin_cannot_issue_a_broader_token(client, query, raw, status, code):
    """Not by naming no pipeline, another pipeline or a list with one (after a number or not),
    nor by adding a query parameter that names its own pipeline (which used to open the route)."""
    limited_admin = issue(client, scopes=["admin"], pipelines=["web"], name="web-admin")["token"]
    response = client.request("POST", f"/api/tokens{query}", raw=raw.encode(), headers=bearer(limited_admin))
    assert (response.status_code, response.json["error"]["code"]) == (status, code), response.json
    assert [t["name"] for t in client.get("/api/tokens").json["items"]] == ["web-admin"]


def test_the_issuer_check_holds_below_the_route_too(ctx):
    """The service refuses a broader token itself, should a route ever let one through."""
    from chalicelib.domain.auth import CreateTokenIn, Forbidden, Principal
    from chalicelib.service import tokens

    limited = Principal("tok_1", "web-admin", ("operate",), frozenset({"web"}))
    for body in ({"name": "x", "scopes": ["admin"], "pipelines": ["web"]},
                 {"name": "x", "scopes": ["read"]},
                 {"name": "x", "scopes": ["read"], "pipelines": ["web", "api"]}):
        with pytest.raises(Forbidden):
            tokens.issue_token(ctx, CreateTokenIn.model_validate(body), limited)
    assert tokens.list_tokens(ctx, limited) == []


def test_a_limited_admin_lists_and_revokes_only_tokens_inside_its_pipelines(client):
    limited_admin = issue(client, scopes=["admin"], pipelines=["web", "api"], name="web-admin")
    mine = issue(client, scopes=["read"], pipelines=["web"], name="web-read")
    both = issue(client, scopes=["operate"], pipelines=["api", "web"], name="both")
    broader = [issue(client, scopes=["read"], name="everything"),
               issue(client, scopes=["admin"], pipelines=["web", "ops"], name="web-ops"),
               issue(client, scopes=["read"], pipelines=["ops"], name="ops")]
    token = limited_admin["token"]
    for query in ("", "?pipeline=web", "?pipeline_name=web", "?runId=web:1", "?stageId=web:1:1"):
        listed = client.get(f"/api/tokens{query}", auth=token)
        assert listed.status_code == 200
        assert sorted(t["name"] for t in listed.json["items"]) == ["both", "web-admin", "web-read"]
    for other in broader:
        for query in ("", "?pipeline=web", "?runId=web:1"):
            response = client.delete(f"/api/tokens/{other['id']}{query}", auth=token)
            assert response.status_code == 404, response.json
            assert response.json["error"] == {"code": "not_found",
                                              "message": f"token {other['id']!r} not found"}
        assert client.get("/api/runs?pipeline=ops", auth=other["token"]).status_code == 200  # not revoked
    assert client.delete("/api/tokens/bootstrap", auth=token).status_code == 404
    assert client.delete(f"/api/tokens/{mine['id']}", auth=token).json["name"] == "web-read"
    assert client.delete(f"/api/tokens/{both['id']}", auth=token).json["name"] == "both"
    assert client.get("/api/runs?pipeline=web", auth=mine["token"]).status_code == 401
    assert len(client.get("/api/tokens").json["items"]) == 4  # the bootstrap admin sees every token


def test_limited_tokens_see_nothing_of_other_pipelines(client):
    """404 for anything about another pipeline, whether it exists or not: same status, same
    shape, so the answer says nothing about what the other pipeline holds."""
    client.post("/api/runs", {"pipeline": "secret", "stages": ["BUILD"]})
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    token = issue(client, scopes=["operate"], pipelines=["web"])["token"]
    for exists, absent in [
        ("/api/runs/secret:1", "/api/runs/nothing:1"),
        ("/api/stages/secret:1:1", "/api/stages/nothing:1:1"),
        ("/api/runs?pipeline=secret", "/api/runs?pipeline=nothing"),
        ("/api/stages?runId=secret:1", "/api/stages?runId=nothing:1"),
    ]:
        a = client.get(exists, auth=token)
        b = client.get(absent, auth=token)
        assert a.status_code == b.status_code == 404
        assert a.json["error"]["code"] == b.json["error"]["code"] == "not_found"
        assert set(a.json["error"]) == set(b.json["error"]) == {"code", "message"}
    # Every value of a declared query parameter counts, whichever one the view reads.
    for listing in ("/api/runs?pipeline=web&pipeline=secret", "/api/runs?pipeline=secret&pipeline=web",
                    "/api/stages?runId=web:1&runId=secret:1"):
        assert client.get(listing, auth=token).status_code == 404, listing
    # A query parameter the route does not declare changes nothing: the answer is about web:1.
    assert client.get("/api/runs/web:1?pipeline=secret", auth=token).json["id"] == "web:1"
    # A body naming another pipeline than the query: the body is what the route acts on.
    assert client.post("/api/runs?pipeline=web", {"pipeline": "secret"}, auth=token).status_code == 404
    assert client.post("/api/runs?pipeline=secret", {"pipeline": "web"}, auth=token).json["pipeline"] == "web"
    assert client.post("/api/runs", {"pipeline": "secret"}, auth=token).status_code == 404
    assert client.get("/api/runs/web:1", auth=token).status_code == 200
    # Nothing was created in the other pipeline.
    assert client.get("/api/runs?pipeline=secret").json["items"][0]["counter"] == 1


# ---- DynamoDB round trips -------------------------------------------------------------------

def test_round_trips_auth_adds(client, clock, ddb_calls):
    """Issued token: 1 UpdateItem per request (lookup and rate count together), 2 on the first
    request of a new minute; bootstrap admin and malformed credentials: 0; a well-formed token
    that was not issued here (its keyed check fails): 1 GetItem, no write (issue 16)."""
    token = issue(client, scopes=["read"])["token"]
    client.post("/api/runs", {"pipeline": "web"})

    def calls(**kw):
        ddb_calls.clear()
        response = client.get("/api/runs/web:1", **kw)
        return response.status_code, dict(ddb_calls)

    assert calls() == (200, {"Query": 1})  # bootstrap admin: nothing added
    assert calls(auth=token) == (200, {"UpdateItem": 1, "Query": 1})
    assert calls(auth=token) == (200, {"UpdateItem": 1, "Query": 1})
    clock.advance(60)
    assert calls(auth=token) == (200, {"UpdateItem": 2, "Query": 1})  # a new window starts
    assert calls(auth=token) == (200, {"UpdateItem": 1, "Query": 1})
    assert calls(auth="st_" + "z" * 43) == (401, {"GetItem": 1})  # unknown: one read, no write
    assert calls(auth="not-a-token") == (401, {})
    assert calls(auth=None) == (401, {})
    assert calls(headers={"Authorization": "Basic %%%"}) == (401, {})


def test_a_token_from_before_checks_costs_one_read_more_and_still_works(client, ctx, clock, ddb_calls):
    """A token issued without a keyed check (before issue 16) is read, then counted."""
    from chalicelib.domain import auth
    from chalicelib.service.ports import StoredToken

    legacy = auth.new_token_secret()  # no check
    assert not auth.token_check_holds(legacy, ctx.settings.secret_pepper)
    ctx.stores.tokens.insert(StoredToken(token_id="tok_legacy", name="old", scopes=["read"],
                                         pipelines=None, created_at="2026-03-20T17:17:13.760Z",
                                         created_by="ops"), auth.hash_token(legacy),
                             auth.rate_window(clock.now()))
    client.post("/api/runs", {"pipeline": "web"})
    ddb_calls.clear()
    response = client.get("/api/runs/web:1", auth=legacy)
    assert (response.status_code, dict(ddb_calls)) == (200, {"GetItem": 1, "UpdateItem": 1, "Query": 1})


def test_a_revoked_checked_token_is_refused_like_an_unknown_one(client, ddb_calls):
    issued = issue(client, scopes=["read"])
    assert client.delete(f"/api/tokens/{issued['id']}").status_code == 200
    ddb_calls.clear()
    revoked = client.get("/api/runs?pipeline=web", auth=issued["token"])
    assert (revoked.status_code, dict(ddb_calls)) == (401, {"UpdateItem": 1})  # nothing written
    unknown = client.get("/api/runs?pipeline=web", auth="st_" + "z" * 43)
    assert revoked.json == unknown.json == {"error": {"code": "unauthorized",
                                                      "message": "the token is unknown or revoked"}}


def test_an_unknown_token_creates_no_item(client, ctx):
    before = raw_table_dump(ctx)
    assert client.get("/api/runs?pipeline=web", auth="st_" + "q" * 43).status_code == 401
    assert raw_table_dump(ctx) == before


# ---- the store on moto and on a real DynamoDB Local ------------------------------------------

def test_token_store_round_trip_on_both_backends(any_ctx):
    """ReturnValuesOnConditionCheckFailure and the conditional counter on real DynamoDB too."""
    from chalicelib.domain import auth
    from chalicelib.service.ports import StoredToken

    store = any_ctx.stores.tokens
    token = StoredToken(token_id="tok_1", name="ci", scopes=["read"], pipelines=["web"],
                              created_at="2026-03-20T17:17:13.760Z", created_by="ops")
    digest = auth.hash_token("st_" + "r" * 43)
    store.insert(token, digest, window=100)
    assert [t.token_id for t in store.list_all()] == ["tok_1"]
    hits = [store.hit(digest, 100).hits for _ in range(3)]
    assert hits == [1, 2, 3]
    moved = store.hit(digest, 101)
    assert (moved.window, moved.hits, moved.pipelines, moved.scopes) == (101, 1, ["web"], ["read"])
    assert store.hit(digest, 100).window == 101  # a late clock counts in the newer window
    assert store.hit(auth.hash_token("st_" + "s" * 43), 101) is None
    assert store.delete("tok_1").created_by == "ops"
    assert store.hit(digest, 101) is None and store.list_all() == [] and store.delete("tok_1") is None
