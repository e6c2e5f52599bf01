"""The pure rules of domain/auth.py: credentials from headers, scopes, pipeline limits, windows."""
from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from chalicelib.api.credentials import parse_credentials
from chalicelib.domain import auth
from chalicelib.domain.auth import (
    Credentials,
    Forbidden,
    PipelineRef,
    Principal,
    RateState,
    Unauthorized,
    authorize,
    required_scope,
)
from chalicelib.domain.errors import NotFound
from chalicelib.settings import Settings

TOKEN = "st_" + "a" * 43


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# ---- credentials -----------------------------------------------------------------------------

@pytest.mark.parametrize("headers, expected", [
    ({"authorization": f"Bearer {TOKEN}"}, Credentials(TOKEN, None, "bearer")),
    ({"authorization": f"bearer   {TOKEN}  "}, Credentials(TOKEN, None, "bearer")),
    ({"authorization": basic("alice", TOKEN)}, Credentials(TOKEN, "alice", "basic")),
    ({"authorization": basic("", TOKEN)}, Credentials(TOKEN, None, "basic")),
    ({"x-auth-token": TOKEN}, Credentials(TOKEN, None, "x-auth-token")),
    ({"authorization": f"Bearer {TOKEN}", "x-auth-token": TOKEN}, Credentials(TOKEN, None, "bearer")),
    ({}, None),
    ({"authorization": "  "}, None),
])
def test_credentials_from_each_header(headers, expected):
    assert parse_credentials(headers) == expected


@pytest.mark.parametrize("headers", [
    {"authorization": "Token abc"},
    {"authorization": "Bearer"},
    {"authorization": "Basic !!!notbase64"},
    {"authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
    {"authorization": basic("alice", "")},
    {"authorization": basic("al\x00ice", TOKEN)},
    {"authorization": basic("x" * 101, TOKEN)},
    {"authorization": "Basic " + base64.b64encode(b"u:\xff\xfe").decode()},
    {"authorization": "Bearer " + "a" * 2000},
    {"x-auth-token": "a\x07b"},
    {"authorization": f"Bearer {TOKEN}", "x-auth-token": "st_" + "b" * 43},
])
def test_unreadable_or_conflicting_credentials_are_401(headers):
    with pytest.raises(Unauthorized) as raised:
        parse_credentials(headers)
    assert raised.value.headers["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN not in raised.value.message


def test_credentials_never_print_their_secret():
    assert TOKEN not in repr(Credentials(TOKEN, "alice", "basic"))


# ---- tokens ----------------------------------------------------------------------------------

def test_new_tokens_are_random_well_formed_and_hashed():
    secrets_ = {auth.new_token_secret() for _ in range(50)}
    assert len(secrets_) == 50
    assert all(auth.looks_like_token(s) and len(s) == 46 for s in secrets_)
    digest = auth.hash_token(TOKEN)
    assert len(digest) == 64 and TOKEN not in digest
    assert auth.same_secret(digest, auth.hash_token(TOKEN))
    assert not auth.same_secret(digest, auth.hash_token(TOKEN[:-1] + "b"))
    assert not auth.looks_like_token("st_short") and not auth.looks_like_token("xx_" + "a" * 43)


def test_admin_token_is_not_in_settings_repr():
    settings = Settings.from_env({"STAGETRACK_ADMIN_TOKEN": "very-secret-admin-token-123",
                                  "STAGETRACK_RATE_LIMIT_PER_MINUTE": "42"})
    assert settings.admin_token == "very-secret-admin-token-123"
    assert settings.rate_limit_per_minute == 42
    assert "very-secret" not in repr(settings)
    assert Settings.from_env({}).admin_token == "stagetrack-local-admin"
    assert Settings.from_env({}).rate_limit_per_minute == 600


# ---- scopes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("method, path, declared, expected", [
    ("GET", "/api/runs", None, "read"),
    ("HEAD", "/api/runs", None, "read"),
    ("POST", "/api/runs", None, "operate"),
    ("PATCH", "/api/stages/{stage_id}", None, "operate"),
    ("DELETE", "/api/runs/{run_id}", None, "operate"),
    ("GET", "/api/tokens", None, "admin"),
    ("DELETE", "/api/tokens/{token_id}", None, "admin"),
    ("GET", "/api/subscriptions/{id}/deliveries", None, "admin"),
    ("POST", "/api/sources", None, "admin"),
    ("GET", "/api/tokensmith", None, "read"),
    ("POST", "/api/search", "read", "read"),
    ("GET", "/openapi.json", "public", "public"),
])
def test_required_scope_from_the_route(method, path, declared, expected):
    assert required_scope(method, path, declared) == expected


def test_unknown_declared_scope_is_a_bug_at_import():
    with pytest.raises(ValueError):
        required_scope("GET", "/x", "superuser")


def principal(*scopes, pipelines=None, user=None):
    return Principal("tok_1", "ci", scopes, None if pipelines is None else frozenset(pipelines), user=user)


@pytest.mark.parametrize("scopes, allowed", [
    (("read",), {"read"}),
    (("operate",), {"read", "operate"}),
    (("admin",), {"read", "operate", "admin"}),
    (("read", "admin"), {"read", "operate", "admin"}),
])
def test_scopes_are_cumulative(scopes, allowed):
    for needed in auth.SCOPES:
        if needed in allowed:
            authorize(principal(*scopes), needed, [])
        else:
            with pytest.raises(Forbidden):
                authorize(principal(*scopes), needed, [])


def test_actor_is_the_basic_user_else_the_token_name():
    assert principal("read").actor == "ci"
    assert principal("read", user="alice").actor == "alice"


# ---- pipelines -------------------------------------------------------------------------------

def test_refs_come_from_the_declared_places_only():
    declared = auth.acts_on(path={"run_id": auth.RUN}, query={"stageId": auth.STAGE},
                            body={"pipeline": auth.PIPELINE, "pipelines": auth.PIPELINES})
    refs = auth.named_refs(
        declared, {"run_id": "web:3", "stage_id": "other:1:1"},
        {"stageId": ["api:1:2", "ops:2:1"], "pipeline": ["other"]},
        [("runId", "other:1"), ("pipeline", "gocd"), ("pipelines", ["x", "y"])])
    assert [r.pipeline for r in refs] == ["web", "api", "ops", "gocd", "x", "y"]
    assert refs[0].missing == "run 'web:3' not found"
    assert refs[1].missing == "stage 'api:1:2' not found"


def test_every_body_value_counts_whatever_comes_before_it():
    """A non-string value (or a malformed one) before a pipeline field, in the body's order or
    in a list, must not end the gathering: the pipeline after it is still checked."""
    declared = auth.acts_on(body={"pipeline": auth.PIPELINE, "pipelines": auth.PIPELINES})
    body = [("stages", ["BUILD"]), ("pipeline", 5), ("trigger", None), ("pipeline", "secret"),
            ("pipelines", ["web", 7, {"a": 1}, "bad name", "other"])]
    refs = auth.named_refs(declared, {}, {}, body)
    assert [r.pipeline for r in refs] == [None, "secret", "web", None, None, None, "other"]
    assert refs[0].missing == "pipeline 5 not found"
    limited = principal("admin", pipelines={"web"})
    for after_a_number in ([("pipeline", "web"), ("pipelines", ["web", 7, "other"])],
                           [("pipeline", 5), ("pipeline", "web"), ("pipelines", ["web"])]):
        with pytest.raises(NotFound):
            authorize(limited, "admin", auth.named_refs(declared, {}, {}, after_a_number))
    own = [("pipeline", "web"), ("pipelines", ["web"])]
    authorize(limited, "admin", auth.named_refs(declared, {}, {}, own))


@pytest.mark.parametrize("query, body", [
    ({}, [("pipeline", "web")]),  # the declared query parameter is missing
    ({"pipeline": []}, [("pipeline", "web")]),
    ({"pipeline": ["web"]}, None),  # no JSON object body
    ({"pipeline": ["web"]}, [("pipeline", None)]),  # null names nothing
    ({"pipeline": ["web"]}, [("pipelines", ["web"])]),  # not the declared field
    ({"pipeline": ["web"]}, [("pipeline", [])]),
])
def test_a_declared_place_that_names_nothing_is_403(query, body):
    declared = auth.acts_on(query={"pipeline": auth.PIPELINE}, body={"pipeline": auth.PIPELINES})
    with pytest.raises(Forbidden):
        auth.named_refs(declared, {}, query, body)


@pytest.mark.parametrize("kind, value", [(auth.RUN, "garbage"), (auth.STAGE, "web:1"),
                                         (auth.PIPELINE, "has space"), (auth.RUN, ""), (auth.RUN, 3)])
def test_malformed_ids_name_no_pipeline(kind, value):
    assert auth.ref_of(kind, value).pipeline is None


@pytest.mark.parametrize("build", [
    lambda: auth.acts_on(),
    lambda: auth.acts_on(path={"pipeline": "pipelines"}),  # lists only in bodies
    lambda: auth.acts_on(query={"runId": "runs"}),
    lambda: auth.resolved_by("not callable"),
])
def test_bad_declarations_fail_when_built(build):
    with pytest.raises(ValueError):
        build()


@pytest.mark.parametrize("caller_scopes, caller_pipelines, scopes, pipelines, allowed", [
    (("admin",), None, ["admin"], None, True),  # unlimited: anything
    (("admin",), None, ["read"], ["x"], True),
    (("admin",), {"a"}, ["admin"], ["a"], True),  # limited: its own pipelines, its level
    (("admin",), {"a", "b"}, ["read"], ["b"], True),
    (("admin",), {"a"}, ["read"], None, False),  # every pipeline is broader
    (("admin",), {"a"}, ["read"], ["a", "b"], False),
    (("admin",), {"a"}, ["read"], ["b"], False),
    (("operate",), None, ["admin"], None, False),  # a higher scope is broader
    (("operate",), None, ["read", "admin"], ["a"], False),
    (("operate",), {"a"}, ["operate"], ["a"], True),
])
def test_a_token_is_never_broader_than_its_issuer(caller_scopes, caller_pipelines, scopes, pipelines,
                                                  allowed):
    caller = principal(*caller_scopes, pipelines=caller_pipelines)
    assert auth.within(caller, scopes, pipelines) is allowed
    if allowed:
        auth.check_grant(caller, scopes, pipelines)
    else:
        with pytest.raises(Forbidden):
            auth.check_grant(caller, scopes, pipelines)


def test_limited_token_gets_404_for_other_pipelines_and_403_when_none_is_named():
    limited = principal("operate", pipelines={"web"})
    authorize(limited, "operate", [PipelineRef("web", "")])
    authorize(limited, "operate", None)  # a route that reveals nothing about pipelines
    with pytest.raises(NotFound) as raised:
        authorize(
            limited, "operate", [PipelineRef("web", ""), PipelineRef("other", "run 'other:1' not found")]
        )
    assert raised.value.message == "run 'other:1' not found"
    with pytest.raises(NotFound):
        authorize(limited, "read", [PipelineRef(None, "run 'x' not found")])
    with pytest.raises(Forbidden):
        authorize(limited, "operate", [])
    with pytest.raises(Forbidden):  # scope is checked first: 403 says nothing about pipelines
        authorize(limited, "admin", [PipelineRef("other", "")])
    authorize(principal("operate"), "operate", [])  # unlimited tokens need no pipeline


# ---- rate windows ----------------------------------------------------------------------------

def test_fixed_windows_and_retry_after():
    now = datetime(2026, 1, 1, 0, 0, 59, 200_000, tzinfo=UTC)
    window = auth.rate_window(now)
    assert window == int(now.timestamp()) // 60
    assert auth.retry_after(now, window) == 1
    assert auth.retry_after(datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC), window) == 60
    state = RateState(limit=3, used=3)
    assert state.remaining == 0 and not state.exceeded
    assert RateState(limit=3, used=4).exceeded
    assert state.headers() == {"X-Rate-Limit-Limit": "3", "X-Rate-Limit-Remaining": "0"}
