"""Credential parsing and permission rules pinned at their edges: only the schemes we name are
read, Basic must be strict base64, and every length or count limit is tested at the limit (allowed)
and one beyond (refused)."""
from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from chalicelib.api import credentials
from chalicelib.api.credentials import parse_credentials
from chalicelib.domain import auth
from chalicelib.domain.auth import (
    CreateTokenIn,
    Credentials,
    Forbidden,
    PipelineRef,
    Principal,
    RateState,
    Unauthorized,
)
from chalicelib.domain.errors import NotFound

TOKEN = "st_" + "a" * 43


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def principal(*scopes, pipelines=None, user=None, name="ci"):
    return Principal("tok_1", name, tuple(scopes), None if pipelines is None else frozenset(pipelines), user)


def refused(headers) -> Unauthorized:
    with pytest.raises(Unauthorized) as raised:
        parse_credentials(headers)
    return raised.value


# ---- schemes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", ["Digest", "Token", "Negotiate", "Basically", "Bearerx",
                                    "AWS4-HMAC-SHA256"])
def test_an_unknown_scheme_is_401_even_with_a_readable_basic_payload(scheme):
    error = refused({"authorization": f"{scheme} {b64('alice:' + TOKEN)}"})
    assert error.message == "use Authorization: Bearer <token>, Basic auth, SDK-HMAC-SHA256 or X-Auth-Token"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(scheme):
    assert parse_credentials({"authorization": f"{scheme} {TOKEN}"}) == Credentials(TOKEN, None, "bearer")


@pytest.mark.parametrize("scheme", ["Basic", "basic", "BASIC"])
def test_the_basic_scheme_is_case_insensitive(scheme):
    assert parse_credentials({"authorization": f"{scheme} {b64('bob:' + TOKEN)}"}) == Credentials(
        TOKEN, "bob", "basic")


@pytest.mark.parametrize("value", [
    b64("alice:" + TOKEN)[:8] + "*" + b64("alice:" + TOKEN)[8:],   # a character outside base64
    b64("alice:" + TOKEN)[:8] + " " + b64("alice:" + TOKEN)[8:],   # a space inside
    b64("alice:" + TOKEN) + "$",
    base64.urlsafe_b64encode(b"alice:st_\xfb\xff").decode(),        # the URL-safe alphabet
])
def test_basic_credentials_must_be_strict_base64(value):
    error = refused({"authorization": "Basic " + value})
    assert error.message in ("Basic credentials must be base64 of user:token",
                             "the credential is not a stagetrack token")


def test_basic_with_no_token_after_the_colon_is_401():
    error = refused({"authorization": "Basic " + b64("alice:")})
    assert error.message == "Basic credentials must be user:token, the token as password"


def test_the_basic_password_is_the_token_and_may_contain_colons():
    creds = parse_credentials({"authorization": "Basic " + b64("alice:st_a:b")})
    assert creds == Credentials("st_a:b", "alice", "basic")


def test_a_scheme_without_a_value_is_401():
    for value in ("Bearer", "Basic", "Bearer    ", "Basic  "):
        assert refused({"authorization": value}).message.startswith("use Authorization")


# ---- lengths: at the limit allowed, one beyond refused ------------------------------------------

@pytest.mark.parametrize("header", ["authorization", "x-auth-token"])
def test_a_credential_of_the_maximum_length_is_read_and_one_longer_is_401(header):
    at_limit = "a" * credentials.MAX_CREDENTIAL_CHARS
    prefix = "Bearer " if header == "authorization" else ""
    assert parse_credentials({header: prefix + at_limit}).secret == at_limit
    error = refused({header: prefix + at_limit + "a"})
    assert error.message == "the credential is not a stagetrack token"


def test_a_basic_password_of_the_maximum_length_is_read_and_one_longer_is_401():
    at_limit = "a" * credentials.MAX_CREDENTIAL_CHARS
    user = "u" * credentials.MAX_USER_CHARS
    assert parse_credentials({"authorization": "Basic " + b64(f"{user}:{at_limit}")}) == Credentials(
        at_limit, user, "basic")
    assert refused({"authorization": "Basic " + b64(f"{user}:{at_limit}a")}).message == (
        "the credential is not a stagetrack token")


def test_an_oversized_basic_value_is_refused_before_decoding():
    error = refused({"authorization": "Basic " + "A" * (credentials.MAX_CREDENTIAL_CHARS * 2 + 4)})
    assert error.message == "the credential is not a stagetrack token"


def test_a_basic_user_of_the_maximum_length_is_read_and_one_longer_is_401():
    user = "u" * credentials.MAX_USER_CHARS
    assert parse_credentials({"authorization": "Basic " + b64(f"{user}:{TOKEN}")}).user == user
    error = refused({"authorization": "Basic " + b64(f"{user}u:{TOKEN}")})
    assert error.message == "the Basic user name must be printable ASCII, at most 100 characters"


def test_a_non_printable_credential_is_401():
    assert refused({"authorization": "Bearer st_\u200babc"}).message == (
        "the credential is not a stagetrack token")


def test_authorization_and_x_auth_token_agreeing_is_one_credential():
    creds = parse_credentials({"authorization": "Basic " + b64("al:" + TOKEN), "x-auth-token": TOKEN})
    assert creds == Credentials(TOKEN, "al", "basic")
    error = refused({"authorization": f"Bearer {TOKEN}", "x-auth-token": TOKEN + "b"})
    assert error.message == "send one credential: Authorization and X-Auth-Token disagree"


# ---- tokens ----------------------------------------------------------------------------------

def test_only_st_plus_43_url_safe_characters_looks_like_a_token():
    assert auth.looks_like_token(TOKEN)
    assert auth.looks_like_token("st_" + "-_aZ9" * 8 + "abc")
    for value in ("st_" + "a" * 42, "st_" + "a" * 44, "xt_" + "a" * 43, "st_" + "a" * 42 + "!", " " + TOKEN):
        assert not auth.looks_like_token(value), value


def test_same_secret_compares_whole_hashes():
    digest = auth.hash_token(TOKEN)
    assert auth.same_secret(digest, auth.hash_token(TOKEN))
    assert not auth.same_secret(digest, auth.hash_token(TOKEN + "x"))
    assert not auth.same_secret(digest, digest[:-1])


def test_new_token_ids_and_secrets_have_their_documented_shape():
    assert auth.new_token_id().startswith("tok_") and len(auth.new_token_id()) == 4 + 16
    assert auth.looks_like_token(auth.new_token_secret())


@pytest.mark.parametrize("count, ok", [(auth.MAX_TOKEN_PIPELINES, True),
                                       (auth.MAX_TOKEN_PIPELINES + 1, False)])
def test_a_token_names_at_most_the_maximum_number_of_pipelines(count, ok):
    body = {"name": "ci", "scopes": ["read"], "pipelines": [f"p{i}" for i in range(count)]}
    if ok:
        assert len(CreateTokenIn.model_validate(body).pipelines or []) == count
    else:
        with pytest.raises(ValidationError):
            CreateTokenIn.model_validate(body)


def test_a_token_name_that_looks_like_a_token_is_refused():
    with pytest.raises(ValidationError, match="must not look like a token"):
        CreateTokenIn.model_validate({"name": "st_" + "a" * 20, "scopes": ["read"]})
    short = "st_" + "a" * 19
    assert CreateTokenIn.model_validate({"name": short, "scopes": ["read"]}).name == short


@pytest.mark.parametrize("field, value", [("scopes", ["read", "read"]), ("pipelines", ["web", "web"])])
def test_token_scopes_and_pipelines_must_be_unique(field, value):
    body = {"name": "ci", "scopes": ["read"], field: value}
    with pytest.raises(ValidationError, match="entries must be unique"):
        CreateTokenIn.model_validate(body)


# ---- permissions -------------------------------------------------------------------------------

def test_a_principal_reports_its_level_actor_and_dict():
    p = principal("read", "admin", "operate", user=None, name="deploy-bot")
    assert (p.level, p.actor) == ("admin", "deploy-bot")
    assert p.as_dict() == {"tokenId": "tok_1", "name": "deploy-bot", "user": None, "actor": "deploy-bot"}
    q = principal("operate", user="alice")
    assert q.as_dict() == {"tokenId": "tok_1", "name": "ci", "user": "alice", "actor": "alice"}


@pytest.mark.parametrize("path, expected", [
    ("/api/tokens", "admin"), ("/api/tokens/tok_1", "admin"), ("/api/tokensx", "operate"),
    ("/api/subscriptions/x", "admin"), ("/api/sources", "admin"), ("/api/runs", "operate"),
])
def test_admin_paths_are_the_prefix_or_below_it(path, expected):
    assert auth.required_scope("POST", path) == expected


def test_read_methods_need_read_whatever_their_case():
    assert [auth.required_scope(m, "/api/runs") for m in ("get", "HEAD", "options", "post", "DELETE")] == [
        "read", "read", "read", "operate", "operate"]
    assert auth.required_scope("GET", "/api/tokens") == "admin"
    assert auth.required_scope("POST", "/x", "public") == "public"


def test_check_scope_is_403_naming_both_scopes():
    with pytest.raises(Forbidden) as raised:
        auth.check_scope(principal("read"), "operate")
    assert raised.value.message == "this token has scope 'read'; this needs 'operate'"
    auth.check_scope(principal("operate"), "operate")


def test_every_named_pipeline_must_be_covered():
    limited = principal("operate", pipelines={"web"})
    auth.authorize(limited, "operate", [PipelineRef("web", "")])
    with pytest.raises(NotFound) as raised:
        auth.authorize(limited, "operate", [PipelineRef("web", ""),
                                                PipelineRef("api", "pipeline 'api' not found")])
    assert raised.value.message == "pipeline 'api' not found"
    with pytest.raises(NotFound):
        auth.authorize(limited, "operate", [PipelineRef(None, "run 'x' not found")])
    auth.authorize(limited, "operate", None)  # the route checks its own records


@pytest.mark.parametrize("scopes, pipelines, allowed", [
    (("operate",), ["web"], True),
    (("operate",), ["web", "api"], False),
    (("operate",), None, False),
    (("admin",), ["web"], False),
    ((), ["web"], True),
    ((), [], True),
])
def test_a_grant_is_never_broader_than_a_limited_caller(scopes, pipelines, allowed):
    caller = principal("operate", pipelines={"web"})
    assert auth.within(caller, scopes, pipelines) is allowed
    if allowed:
        auth.check_grant(caller, scopes, pipelines)
    else:
        with pytest.raises(Forbidden):
            auth.check_grant(caller, scopes, pipelines)


def test_an_unlimited_caller_grants_up_to_its_own_level():
    caller = principal("operate")
    assert auth.within(caller, ("operate",), None) and auth.within(caller, ("read",), ["web"])
    with pytest.raises(Forbidden) as raised:
        auth.check_grant(caller, ("admin", "read"), None)
    assert raised.value.message == "this token has scope 'operate'; it cannot grant 'admin'"


# ---- rate windows ------------------------------------------------------------------------------

@pytest.mark.parametrize("used, exceeded, remaining", [(0, False, 3), (2, False, 1), (3, False, 0),
                                                       (4, True, 0),
                                                       (9, True, 0)])
def test_a_rate_limit_allows_exactly_its_limit(used, exceeded, remaining):
    state = RateState(limit=3, used=used)
    assert (state.exceeded, state.remaining) == (exceeded, remaining)
    assert state.headers() == {"X-Rate-Limit-Limit": "3", "X-Rate-Limit-Remaining": str(remaining)}


@pytest.mark.parametrize("second, microsecond, wait", [(0, 0, 60), (0, 1, 60), (30, 0, 30), (59, 0, 1),
                                                       (59, 999_999, 1)])
def test_retry_after_is_whole_seconds_to_the_window_end_at_least_one(second, microsecond, wait):
    now = datetime(2026, 1, 1, 0, 5, second, microsecond, tzinfo=UTC)
    window = auth.rate_window(now)
    assert window == auth.rate_window(datetime(2026, 1, 1, 0, 5, tzinfo=UTC))
    assert window + 1 == auth.rate_window(datetime(2026, 1, 1, 0, 6, tzinfo=UTC))
    assert auth.retry_after(now, window) == wait


def test_rate_limited_carries_retry_after():
    error = auth.RateLimited("slow down", retry_after=7)
    assert (error.headers, error.details) == ({"Retry-After": "7"}, {"retryAfter": 7})


def test_a_rejected_access_key_signature_is_401_with_its_reason():
    error = refused({"authorization": "SDK-HMAC-SHA256 garbage"})
    assert error.message == (
        "Authorization must be 'SDK-HMAC-SHA256 Access=<AK>, SignedHeaders=<a;b>, Signature=<hex>'")


def test_rate_limited_says_why():
    assert auth.RateLimited("too many requests", retry_after=3).message == "too many requests"


# ---- route declarations and the refs they yield ------------------------------------------------

def test_a_declaration_describes_where_the_pipeline_is_named():
    declared = auth.acts_on(path={"runId": "run"}, query={"pipeline": "pipeline"},
                            body={"pipelines": "pipelines"})
    assert declared.describe() == "path runId (run), query pipeline (pipeline), body pipelines (pipelines)"
    assert auth.ACTS_ON_OWN_RECORDS.describe() == "own records"
    assert auth.resolved_by(lambda request: None).describe() == "resolved"


def test_bad_declarations_say_what_is_wrong():
    with pytest.raises(ValueError, match=r"^acts_on\(\) needs a path parameter, query parameter or body"):
        auth.acts_on()
    with pytest.raises(ValueError, match=r"^query p: kind 'pipelines' is not one of"):
        auth.acts_on(query={"p": "pipelines"})
    with pytest.raises(ValueError, match=r"^resolved_by\(\) takes a callable$"):
        auth.resolved_by("not callable")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^unknown scope 'root'$"):
        auth.required_scope("GET", "/x", "root")


def test_a_resolved_declaration_keeps_its_resolver():
    def resolver(request):
        return None

    declared = auth.resolved_by(resolver)
    assert (declared.rule, declared.resolver) == (auth.RESOLVED, resolver)
    assert auth.acts_on(path={"id": "run"}).rule == auth.NAMED


@pytest.mark.parametrize("kind, value, ref", [
    ("pipelines", 5, PipelineRef(None, "pipeline 5 not found")),
    ("run", None, PipelineRef(None, "run None not found")),
    ("pipeline", "Bad name!", PipelineRef(None, "pipeline 'Bad name!' not found")),
    ("pipelines", "web", PipelineRef("web", "pipeline 'web' not found")),
    ("stage", "web:1:2", PipelineRef("web", "stage 'web:1:2' not found")),
])
def test_each_value_names_one_pipeline_or_none(kind, value, ref):
    assert auth.ref_of(kind, value) == ref


@pytest.mark.parametrize("length", [39, 40, 41])
def test_a_value_that_is_no_name_is_shown_short(length):
    value = ["x" * (length - 4)]  # repr: ['xxx...'] is length characters long
    text = repr(value)
    assert len(text) == length
    message = auth.ref_of("run", value).missing
    if length <= 40:
        assert message == f"run {text} not found"
    else:
        assert message == f"run {text[:37]}... not found"


def test_named_refs_read_each_kind_and_say_what_is_missing():
    declared = auth.acts_on(query={"run": "run"}, body={"pipeline": "pipeline"})
    refs = auth.named_refs(declared, {}, {"run": ["web:1"]}, [("pipeline", ["web"])])
    assert refs == [PipelineRef("web", "run 'web:1' not found"),
                    PipelineRef(None, "pipeline ['web'] not found")]
    with pytest.raises(Forbidden) as raised:
        auth.named_refs(declared, {}, {}, [("pipeline", "web")])
    assert raised.value.message == "this token is limited to some pipelines: query parameter run is required"
    with pytest.raises(Forbidden) as raised:
        auth.named_refs(declared, {}, {"run": ["web:1"]}, None)
    assert raised.value.message == (
        "this token is limited to some pipelines: the body must name them in pipeline")


def test_limited_tokens_are_told_why_they_are_refused():
    limited = principal("admin", pipelines={"web"})
    with pytest.raises(Forbidden) as raised:
        auth.authorize(limited, "read", [])
    assert raised.value.message == "this token is limited to some pipelines; this request names none"
    with pytest.raises(Forbidden) as raised:
        auth.check_grant(limited, ("read",), None)
    assert raised.value.message == (
        "this token is limited to some pipelines: name pipelines, all of them its own")
