"""The front door in code (issue 16 item 2): what a credential that is not ours costs, and the
DynamoDB client's limits that keep a stalled call inside the API function's timeout."""
from __future__ import annotations

from collections import Counter

import pytest

from chalicelib import wiring
from chalicelib.domain import auth
from chalicelib.domain.auth import Credentials, Unauthorized
from chalicelib.service import tokens
from chalicelib.settings import Settings
from chalicelib.store.dynamo import client_limits
from chalicelib.store.models import ClientLimits, item_models
from tests.fixtures.clock import FakeClock

PEPPER = "p" * 40
API_TIMEOUT_SECONDS = 25  # infra/part_gateway.py API_TIMEOUT_SECONDS (checked in the template)


class CountingTokens:
    """The memory token store, counting the calls the service makes."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, Counter()

    def __getattr__(self, name):
        attribute = getattr(self.inner, name)
        if not callable(attribute):
            return attribute

        def counted(*args, **kwargs):
            self.calls[name] += 1
            return attribute(*args, **kwargs)
        return counted


@pytest.fixture
def ctx():
    context = wiring.memory_context(Settings(table_name="unused", region="us-east-1",
                                             secret_pepper=PEPPER), FakeClock())
    context.stores.tokens = CountingTokens(context.stores.tokens)
    return context


def _bearer(secret: str) -> Credentials:
    return Credentials(secret, None, "bearer")


def test_a_checked_token_carries_a_check_only_its_key_makes():
    token = auth.new_token_secret(PEPPER)
    assert auth.looks_like_token(token) and len(token) == 46
    assert auth.token_check_holds(token, PEPPER)
    assert not auth.token_check_holds(token, PEPPER + "x")
    assert not auth.token_check_holds(token[:-1] + ("A" if token[-1] != "A" else "B"), PEPPER)
    assert not auth.token_check_holds(token[:10] + ("A" if token[10] != "A" else "B") + token[11:], PEPPER)
    assert not auth.token_check_holds(auth.new_token_secret(), PEPPER)  # unchecked (legacy) shape


def test_issued_tokens_carry_the_check(ctx):
    body = auth.CreateTokenIn(name="ci", scopes=["read"])
    admin = tokens.authenticate(ctx, _bearer(ctx.settings.admin_token))[0]
    _token, secret = tokens.issue_token(ctx, body, admin)
    assert auth.token_check_holds(secret, PEPPER)


@pytest.mark.parametrize("secret", ["not-a-token", "st_short", "xx_" + "a" * 43, "st_" + "a" * 44,
                                    "st_" + "a" * 42 + "!"])
def test_a_credential_of_the_wrong_shape_costs_nothing(ctx, secret):
    with pytest.raises(Unauthorized, match="not a valid token"):
        tokens.authenticate(ctx, _bearer(secret))
    assert ctx.stores.tokens.calls == Counter()


def test_a_well_formed_guess_costs_one_read_and_no_write(ctx):
    with pytest.raises(Unauthorized) as refused:
        tokens.authenticate(ctx, _bearer("st_" + "z" * 43))
    assert str(refused.value) == tokens.UNKNOWN_TOKEN
    assert ctx.stores.tokens.calls == Counter({"known": 1})


def test_a_checked_token_goes_straight_to_the_count(ctx):
    admin = tokens.authenticate(ctx, _bearer(ctx.settings.admin_token))[0]
    _token, secret = tokens.issue_token(ctx, auth.CreateTokenIn(name="ci", scopes=["read"]), admin)
    ctx.stores.tokens.calls.clear()
    principal, rate = tokens.authenticate(ctx, _bearer(secret))
    assert principal.name == "ci" and rate is not None and rate.used == 1
    assert ctx.stores.tokens.calls == Counter({"hit": 1})


def test_a_checked_but_revoked_token_says_what_an_unknown_one_says(ctx):
    admin = tokens.authenticate(ctx, _bearer(ctx.settings.admin_token))[0]
    token, secret = tokens.issue_token(ctx, auth.CreateTokenIn(name="ci", scopes=["read"]), admin)
    tokens.revoke_token(ctx, token.token_id, admin)
    with pytest.raises(Unauthorized) as refused:
        tokens.authenticate(ctx, _bearer(secret))
    assert str(refused.value) == tokens.UNKNOWN_TOKEN


def test_an_unchecked_token_that_exists_is_read_then_counted(ctx):
    from chalicelib.service.ports import StoredToken

    legacy = auth.new_token_secret()
    ctx.stores.tokens.insert(StoredToken(token_id="tok_old", name="old", scopes=["read"], pipelines=None,
                                         created_at="2026-03-20T17:17:13.760Z", created_by="ops"),
                             auth.hash_token(legacy), auth.rate_window(ctx.clock.now()))
    ctx.stores.tokens.calls.clear()
    principal, _rate = tokens.authenticate(ctx, _bearer(legacy))
    assert principal.name == "old"
    assert ctx.stores.tokens.calls == Counter({"known": 1, "hit": 1})


# ---- the DynamoDB client's limits ---------------------------------------------------------------

def test_the_client_limits_come_from_the_settings_and_reach_pynamodb():
    settings = Settings.from_env({"STAGETRACK_TABLE": "front-door-limits",
                                  "STAGETRACK_DYNAMODB_CONNECT_TIMEOUT": "0.5",
                                  "STAGETRACK_DYNAMODB_READ_TIMEOUT": "1.5",
                                  "STAGETRACK_DYNAMODB_MAX_RETRIES": "1"})
    limits = client_limits(settings)
    assert limits == ClientLimits(connect_timeout_seconds=0.5, read_timeout_seconds=1.5, max_retries=1)
    items = item_models(settings.table_name, "us-east-1", None, limits)
    connection = items.base._get_connection().connection  # no client is made until a call
    assert (connection._connect_timeout_seconds, connection._read_timeout_seconds,
            connection._max_retry_attempts_exception) == (0.5, 1.5, 1)
    assert items.token._get_connection().connection is connection  # one client per table


def test_the_default_limits_fit_twice_inside_the_api_timeout():
    """PynamoDB's own defaults (15 s connect, 30 s read, 3 retries) would let one stalled call
    run past API Gateway's 29 s; ours let two stalled calls fail before the function's 25 s."""
    settings = Settings()
    assert (settings.dynamodb_connect_timeout_seconds, settings.dynamodb_read_timeout_seconds,
            settings.dynamodb_max_retries) == (1.0, 2.0, 2)
    assert settings.dynamodb_call_budget() == 3 * (1.0 + 2.0) + 1 + 2 == 12
    assert 2 * settings.dynamodb_call_budget() < API_TIMEOUT_SECONDS


def test_with_a_local_endpoint_the_defaults_wait_longer_unless_set():
    """DynamoDB Local on a loaded machine stalls past 2 s now and then; AWS is held to the budget."""
    local = Settings.from_env({"STAGETRACK_DYNAMODB_ENDPOINT": "http://127.0.0.1:8001"})
    assert (local.dynamodb_connect_timeout_seconds, local.dynamodb_read_timeout_seconds) == (5.0, 30.0)
    assert Settings.from_env({}).dynamodb_read_timeout_seconds == 2.0
    chosen = Settings.from_env({"STAGETRACK_DYNAMODB_ENDPOINT": "http://127.0.0.1:8001",
                                "STAGETRACK_DYNAMODB_READ_TIMEOUT": "3"})
    assert chosen.dynamodb_read_timeout_seconds == 3.0


@pytest.mark.parametrize("name, value", [("STAGETRACK_DYNAMODB_CONNECT_TIMEOUT", "0"),
                                         ("STAGETRACK_DYNAMODB_READ_TIMEOUT", "31"),
                                         ("STAGETRACK_DYNAMODB_MAX_RETRIES", "-1")])
def test_limits_out_of_range_fail_at_start_up(name, value):
    from chalicelib.settings import SettingsError

    with pytest.raises(SettingsError):
        Settings.from_env({name: value})
