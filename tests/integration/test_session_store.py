"""Browser sessions in DynamoDB (store/tokens.py): found by the hash of their id, holding only the
token's hash, gone at sign-out; on moto and DynamoDB Local."""
from __future__ import annotations

import json

from chalicelib.domain import auth
from chalicelib.service import tokens
from tests.fixtures.backends import items_of


def test_a_session_round_trips_and_its_item_holds_no_secret_in_clear(any_ctx, ddb_calls):
    token, secret = tokens.issue_token(any_ctx, auth.CreateTokenIn(name="dash", scopes=["operate"],
                                                                   pipelines=["web"]),
                                       tokens._bootstrap(None))
    session = tokens.sign_in(any_ctx, secret)
    client = items_of(any_ctx).connection().client
    dump = json.dumps(client.scan(TableName=any_ctx.settings.table_name)["Items"])
    assert secret not in dump and session.session_id not in dump
    assert auth.hash_token(session.session_id) in dump

    ddb_calls.clear()
    resumed, rate = tokens.resume_session(any_ctx, session.session_id)
    assert dict(ddb_calls) == {"GetItem": 1, "UpdateItem": 1}  # the session, then the token's count
    assert resumed.principal.token_id == token.token_id
    assert resumed.principal.pipelines == frozenset({"web"}) and resumed.csrf_token == session.csrf_token
    assert rate is not None and rate.used == 2

    tokens.sign_out(any_ctx, session.session_id)
    assert any_ctx.stores.tokens.get_session(auth.hash_token(session.session_id)) is None
