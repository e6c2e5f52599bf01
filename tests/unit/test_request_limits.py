"""Every documented limit on what a client sends, at the limit (accepted) and one beyond (refused
with a clear error and nothing changed): request bodies, variables, attempts, and cursors, whose
seal also makes them unforgeable and tied to one listing."""
from __future__ import annotations

import base64
import json

import pytest
from pydantic import ValidationError

from chalicelib.domain import cursors, operations, schemas
from chalicelib.domain.cursors import CursorCodec
from chalicelib.domain.errors import BadRequest, Conflict, ValidationFailed
from chalicelib.domain.model import StageSpec, change_status, new_run
from chalicelib.domain.operations import VariableChange, apply_variables, new_attempt
from chalicelib.domain.status import StageStatus
from tests.fixtures.clock import FakeClock

S = StageStatus


def parse(model, body):
    """As the API does: strict, from the raw JSON bytes."""
    return model.model_validate_json(json.dumps(body))


def _aggregate(clock, variables=None):
    return new_run("web", 1, [StageSpec(type="BUILD", name="b")], clock.now(), variables=variables)


# ---- request bodies ----------------------------------------------------------------------------

@pytest.mark.parametrize("count, ok", [(schemas.MAX_STAGES, True), (schemas.MAX_STAGES + 1, False)])
def test_a_run_has_at_most_the_maximum_number_of_stages(count, ok):
    body = {"pipeline": "web", "stages": [{"type": "OTHER", "name": f"s{i}"} for i in range(count)]}
    if ok:
        assert len(parse(schemas.CreateRunIn, body).stages or []) == count
    else:
        with pytest.raises(ValidationError):
            parse(schemas.CreateRunIn, body)


@pytest.mark.parametrize("shape", ["map", "list"])
@pytest.mark.parametrize("count, ok", [(schemas.MAX_VARIABLES, True), (schemas.MAX_VARIABLES + 1, False)])
def test_a_new_run_takes_at_most_the_maximum_number_of_variables_in_either_shape(shape, count, ok):
    variables = ({f"K{i}": "v" for i in range(count)} if shape == "map"
                 else [{"key": f"K{i}", "value": "v"} for i in range(count)])
    body = {"pipeline": "web", "variables": variables}
    if ok:
        assert len(parse(schemas.CreateRunIn, body).variables or ()) == count
    else:
        with pytest.raises(ValidationError):
            parse(schemas.CreateRunIn, body)


def test_variables_errors_name_the_field_of_the_shape_sent():
    with pytest.raises(ValidationError) as raised:
        parse(schemas.CreateRunIn, {"pipeline": "web", "variables": {"K": 1}})
    assert [e["loc"] for e in raised.value.errors()] == [("variables", "K")]
    with pytest.raises(ValidationError) as raised:
        parse(schemas.CreateRunIn, {"pipeline": "web", "variables": [{"key": "K", "value": 1}]})
    assert [e["loc"] for e in raised.value.errors()] == [("variables", 0, "value")]
    with pytest.raises(ValidationError):  # strict: a number is not a string
        parse(schemas.CreateRunIn, {"pipeline": "web", "variables": "K=1"})


def test_a_variable_value_of_the_maximum_length_is_accepted_and_one_longer_refused():
    ok = parse(schemas.CreateRunIn, {"pipeline": "web", "variables": {"K": "v" * 4096}})
    assert ok.variables == {"K": "v" * 4096}
    with pytest.raises(ValidationError):
        parse(schemas.CreateRunIn, {"pipeline": "web", "variables": {"K": "v" * 4097}})


@pytest.mark.parametrize("seconds, ok", [(0, False), (1, True), (schemas.MAX_TIMEOUT_SECONDS, True),
                                         (schemas.MAX_TIMEOUT_SECONDS + 1, False)])
def test_timeouts_run_from_one_second_to_thirty_days(seconds, ok):
    body = {"pipeline": "web", "timeoutSeconds": seconds}
    if ok:
        assert parse(schemas.CreateRunIn, body).timeout_seconds == seconds
    else:
        with pytest.raises(ValidationError):
            parse(schemas.CreateRunIn, body)


@pytest.mark.parametrize("model", [schemas.CreateRunIn, schemas.ApplyVariablesIn])
def test_a_variable_key_may_appear_once(model):
    body = {"variables": [{"key": "B", "value": "1"}, {"key": "A", "value": "2"}, {"key": "B", "value": "3"},
                          {"key": "A", "value": "4"}]}
    if model is schemas.CreateRunIn:
        body["pipeline"] = "web"
    with pytest.raises(ValidationError, match="each key may appear once; repeated: A, B"):
        parse(model, body)
    body["variables"] = body["variables"][:2]
    assert len(parse(model, body).variables) == 2


# ---- variables held by a run ---------------------------------------------------------------------

@pytest.mark.parametrize("count, ok", [(schemas.MAX_VARIABLES, True), (schemas.MAX_VARIABLES + 1, False)])
def test_a_run_holds_at_most_the_maximum_number_of_variables_counting_secrets(count, ok):
    clock = FakeClock()
    aggregate = _aggregate(clock, variables={"PLAIN": "x"})
    changes = [VariableChange(f"S{i}", "v", secret=True) for i in range(count - 1)]
    if ok:
        assert apply_variables(aggregate, changes, "pep") is True
        assert len(aggregate.run.variables) + len(aggregate.run.secrets) == count
    else:
        with pytest.raises(ValidationFailed) as raised:
            apply_variables(aggregate, changes, "pep")
        assert raised.value.details == [{"field": "variables", "message": "at most 100 variables per run"}]
        assert (aggregate.run.variables, aggregate.run.secrets) == ({"PLAIN": "x"}, {})


@pytest.mark.parametrize("extra, ok", [(0, True), (1, False)])
def test_a_runs_variables_total_at_most_the_maximum_bytes(extra, ok):
    clock = FakeClock()
    aggregate = _aggregate(clock)
    # key "K" (1 byte) + value: the whole run at exactly the limit, then one byte more
    change = VariableChange("K", "v" * (operations.MAX_VARIABLES_BYTES - 1 + extra))
    if ok:
        assert apply_variables(aggregate, [change], "pep") is True
    else:
        with pytest.raises(ValidationFailed) as raised:
            apply_variables(aggregate, [change], "pep")
        assert raised.value.details == [{"field": "variables", "message": "at most 65536 bytes per run"}]
        assert aggregate.run.variables == {}


def test_a_secret_replaces_a_plain_variable_of_the_same_name_and_back():
    clock = FakeClock()
    aggregate = _aggregate(clock, variables={"K": "plain"})
    assert apply_variables(aggregate, [VariableChange("K", "s3cret", secret=True)], "pep") is True
    assert aggregate.run.variables == {} and aggregate.run.secrets["K"] != "s3cret"
    assert apply_variables(aggregate, [VariableChange("K", "s3cret", secret=True)], "pep") is False
    assert apply_variables(aggregate, [VariableChange("K", "plain")], "pep") is True
    assert (aggregate.run.variables, aggregate.run.secrets) == ({"K": "plain"}, {})
    assert apply_variables(aggregate, [VariableChange("K", "plain")], "pep") is False


# ---- attempts ----------------------------------------------------------------------------------

def test_a_stage_retries_up_to_the_maximum_attempts_and_no_further():
    clock = FakeClock()
    stage = _aggregate(clock).stages[0]
    stage.attempt = operations.MAX_ATTEMPTS - 1
    change_status(stage, S.IN_PROGRESS, clock.now())
    change_status(stage, S.FAILURE, clock.advance(1.5))
    new_attempt(stage, clock.advance(1))
    assert (stage.attempt, stage.status, stage.started_at, stage.ended_at, stage.updated_at) == (
        operations.MAX_ATTEMPTS, S.IDLE, None, None, clock.now())
    assert stage.attempts[-1] == {"attempt": 99, "status": "FAILURE", "startedAt": "2026-01-01T00:00:00.000Z",
                                  "endedAt": "2026-01-01T00:00:01.500Z", "duration": 1.5}
    change_status(stage, S.IN_PROGRESS, clock.now())
    change_status(stage, S.FAILURE, clock.now())
    with pytest.raises(Conflict, match="has reached 100 attempts; start a new run"):
        new_attempt(stage, clock.now())
    assert (stage.attempt, stage.status, len(stage.attempts)) == (100, S.FAILURE, 1)


# ---- cursors -----------------------------------------------------------------------------------

def test_a_cursor_opens_to_what_was_sealed_for_the_same_listing_only():
    codec = CursorCodec("secret")
    cursor = codec.seal("runs:web", {"k": "v", "n": 1})
    assert codec.open("runs:web", cursor) == {"k": "v", "n": 1}
    assert "=" not in cursor and set(cursor) <= set(cursors._ALPHABET) | {"."}
    for scope in ("runs:api", "runs:we", "runs:web\x00", ""):
        with pytest.raises(BadRequest, match="cursor is not valid"):
            codec.open(scope, cursor)
    with pytest.raises(BadRequest):
        CursorCodec("other secret").open("runs:web", cursor)
    assert CursorCodec("secret").open("runs:web", cursor) == {"k": "v", "n": 1}


def test_sealing_nothing_gives_no_cursor():
    assert CursorCodec("s").seal("x", None) is None
    assert CursorCodec("s").seal("x", {}) is None


def test_a_cursor_is_deterministic_and_sixteen_bytes_of_tag():
    codec = CursorCodec("s")
    cursor = codec.seal("x", {"b": 1, "a": 2})
    assert cursor == codec.seal("x", {"a": 2, "b": 1})
    body, tag = cursor.split(".")
    assert json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))) == {"a": 2, "b": 1}
    assert len(base64.urlsafe_b64decode(tag + "=" * (-len(tag) % 4))) == cursors.TAG_BYTES


@pytest.mark.parametrize("mangle", [
    lambda c: c + "A",
    lambda c: c.replace(".", ""),
    lambda c: "." + c.split(".")[1],
    lambda c: c.split(".")[0] + ".",
    lambda c: c.split(".")[0] + "!." + c.split(".")[1],
    lambda c: c + "!",
    lambda c: c[1:],
    lambda c: "",
])
def test_a_tampered_cursor_is_400(mangle):
    codec = CursorCodec("s")
    with pytest.raises(BadRequest, match="cursor is not valid"):
        codec.open("x", mangle(codec.seal("x", {"a": 1})))


def _signed(codec, scope, raw: bytes) -> str:
    body = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return f"{body}.{codec._tag(scope, body)}"


@pytest.mark.parametrize("raw", [b"[1, 2]", b"not json", b"\xff\xfe", b'"text"', b"[" * 5000])
def test_a_validly_tagged_cursor_must_still_hold_a_json_object(raw):
    codec = CursorCodec("s")
    with pytest.raises(BadRequest, match="cursor is not valid"):
        codec.open("x", _signed(codec, "x", raw))


def test_the_longest_cursor_opens_and_a_longer_valid_one_is_400():
    # A cursor is body "." 22-character tag; unpadded base64 is never 1 more than a multiple of
    # 4 long, so 2047 characters is the longest cursor under the limit of 2048, and 2049 the
    # shortest over it. Both carry a valid tag: only the length refuses the second.
    codec = CursorCodec("s")
    longest = _signed(codec, "x", json.dumps({"p": "a" * 1509}).encode())
    assert len(longest) == cursors.MAX_CURSOR_CHARS - 1
    assert codec.open("x", longest) == {"p": "a" * 1509}
    longer = _signed(codec, "x", json.dumps({"p": "a" * 1510}).encode())
    assert len(longer) == cursors.MAX_CURSOR_CHARS + 1
    with pytest.raises(BadRequest, match="cursor is not valid"):
        codec.open("x", longer)
    with pytest.raises(BadRequest):
        codec.open("x", None)  # type: ignore[arg-type]


def test_a_cursor_is_the_compact_json_body_and_a_tag_under_a_key_for_cursors_only():
    # The documented format (domain/cursors.py): base64url(JSON, compact, sorted keys) "." the
    # first 16 bytes of HMAC-SHA256 over scope NUL body, under a key derived from the secret for
    # this one purpose; both parts unpadded. Checked for payloads of every length mod 3.
    import hashlib
    import hmac

    key = hmac.new(b"s", b"stagetrack/cursor/v1", hashlib.sha256).digest()
    codec = CursorCodec("s")
    for n in range(70):
        payload = {"k": "x" * n, "a": n}
        cursor = codec.seal("runs:web", payload)
        body = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        tag = hmac.new(key, b"runs:web\x00" + body.rstrip(b"="), hashlib.sha256).digest()[:16]
        assert cursor == body.decode().rstrip("=") + "." + base64.urlsafe_b64encode(tag).decode().rstrip("=")
        assert codec.open("runs:web", cursor) == payload


def test_a_validly_tagged_body_outside_the_alphabet_is_still_400():
    codec = CursorCodec("s")
    body = base64.urlsafe_b64encode(b'{"a":1}').decode()  # keeps its "=" padding
    assert "=" in body
    with pytest.raises(BadRequest, match="cursor is not valid"):
        codec.open("x", f"{body}.{codec._tag('x', body)}")


def test_variables_are_strict_in_either_shape():
    with pytest.raises(ValidationError):
        parse(schemas.CreateRunIn, {"pipeline": "web", "variables": [{"key": "K", "value": "v", "secret": 1}]}
              )
    variables = [{"key": "K", "value": "v", "secret": True}]
    ok = parse(schemas.CreateRunIn, {"pipeline": "web", "variables": variables})
    assert ok.variables is not None and ok.variables[0].secret is True
