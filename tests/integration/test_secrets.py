"""The deployment's secrets come from Secrets Manager (moto): read once per container, never from
or into an Environment block, and rotated without losing what the old key sealed."""
from __future__ import annotations

import json
import logging

import botocore.client
import pytest
from chalice.test import Client

from chalicelib import logging_setup, wiring
from chalicelib.adapters import secretbox, secrets
from chalicelib.domain import auth
from chalicelib.settings import Settings, SettingsError
from chalicelib.store.schema import ensure_tables
from tests.fixtures import aws_client

ADMIN = "a" * 48
PEPPER = "p" * 64
KEY_A, KEY_B = "k" * 64, "n" * 64


@pytest.fixture
def container(aws, monkeypatch):
    """A Lambda container of the deployed stack: its environment names the secrets only."""
    sm = aws_client("secretsmanager")
    values = {"admin-token": {"admin_token": ADMIN}, "pepper": {"secret_pepper": PEPPER},
              "sealing-key": {"secret_key": KEY_A, "previous_secret_keys": []}}
    ids = [sm.create_secret(Name=f"stagetrack/{name}", SecretString=json.dumps(value))["ARN"]
           for name, value in values.items()]
    for name in ("STAGETRACK_ADMIN_TOKEN", "STAGETRACK_SECRET_PEPPER", "STAGETRACK_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STAGETRACK_SECRET_IDS", ",".join(ids))
    monkeypatch.setenv("STAGETRACK_TABLE", "stagetrack-secrets")
    ensure_tables(Settings.from_env())
    secrets.forget()
    wiring.override(None)
    yield ids
    secrets.forget()
    wiring.override(None)


@pytest.fixture
def reads(monkeypatch):
    """How many GetSecretValue calls were made."""
    made: list[str] = []
    original = botocore.client.BaseClient._make_api_call

    def counting(self, operation, params):
        if operation == "GetSecretValue":
            made.append(params["SecretId"])
        return original(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", counting)
    return made


def new_container() -> None:
    secrets.forget()
    wiring.override(None)


def test_a_container_reads_each_of_its_secrets_once(container, reads):
    settings = wiring.context().settings
    assert (settings.admin_token, settings.secret_pepper, settings.secret_key) == (ADMIN, PEPPER, KEY_A)
    assert sorted(reads) == sorted(container)  # one GetSecretValue per secret
    wiring.override(None)  # the context is built again (e.g. after a test override) ...
    assert wiring.context().settings.admin_token == ADMIN
    assert len(reads) == 3  # ... from what the container read: no second read
    for value in (ADMIN, PEPPER, KEY_A):
        assert value in logging_setup._extra_secrets  # scrubbed from every log line


def test_the_api_takes_the_admin_token_from_the_secret_not_the_environment(container, reads, monkeypatch):
    from app import app

    monkeypatch.setenv("STAGETRACK_ADMIN_TOKEN", "x" * 40)  # ignored: the secret names the token
    with Client(app) as client:
        answers = [
            client.http.post("/api/tokens", body=json.dumps({"name": "ci", "scopes": ["read"]}), headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/json"}).status_code
            for token in (ADMIN, "x" * 40, ADMIN)
        ]
    assert answers == [201, 401, 201]
    assert len(reads) == 3


def test_rotating_the_sealing_key_keeps_what_the_old_one_sealed(container, reads):
    sm = aws_client("secretsmanager")
    old_box = secretbox.from_settings(wiring.context().settings)
    sealed_by_a = old_box.seal("whsec-1", "source:github-main")

    # step 1: the new key is made readable everywhere before anything seals with it
    sm.put_secret_value(SecretId=container[2], SecretString=json.dumps(
        {"secret_key": KEY_A, "previous_secret_keys": [KEY_B]}))
    new_container()
    step1 = secretbox.from_settings(wiring.context().settings)
    assert step1.open(sealed_by_a, "source:github-main") == "whsec-1"

    # step 2 (once every container runs step 1): seal with the new key, keep the old readable
    sm.put_secret_value(SecretId=container[2], SecretString=json.dumps(
        {"secret_key": KEY_B, "previous_secret_keys": [KEY_A]}))
    new_container()
    step2 = secretbox.from_settings(wiring.context().settings)
    sealed_by_b = step2.seal("whsec-2", "source:gitlab")
    assert step2.open(sealed_by_a, "source:github-main") == "whsec-1"
    assert step1.open(sealed_by_b, "source:gitlab") == "whsec-2"  # a step-1 container still reads it
    with pytest.raises(secretbox.SecretUnreadable):
        old_box.open(sealed_by_b, "source:gitlab")  # why step 1 comes first
    assert KEY_B in logging_setup._extra_secrets


def test_rotating_the_pepper_keeps_issued_tokens_and_sessions_valid(container, reads):
    """Token and session items are keyed by a plain SHA-256 of a random 256-bit value, not by the
    pepper: a pepper rotation changes no credential."""
    from app import app

    sm = aws_client("secretsmanager")
    headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
    with Client(app) as client:
        token = json.loads(client.http.post("/api/tokens", headers=headers, body=json.dumps(
            {"name": "ci", "scopes": ["read"]})).body)["token"]
    sm.put_secret_value(SecretId=container[1], SecretString=json.dumps({"secret_pepper": "q" * 64}))
    new_container()
    with Client(app) as client:
        answer = client.http.get("/api/runs", headers={"Authorization": f"Bearer {token}"})
    assert wiring.context().settings.secret_pepper == "q" * 64
    assert answer.status_code == 200
    assert auth.hash_token(token) == auth.hash_token(token)  # unkeyed: the same before and after


@pytest.mark.parametrize("stored, message", [
    ("not json", "must hold a JSON object"),
    (json.dumps(["a"]), "must hold a JSON object"),
    (json.dumps({"admin_token": ADMIN, "password": "hunter22hunter22"}), "holds 'password'"),
    (json.dumps({"secret_key": ""}), "secret_key must be a non-empty string"),
    (json.dumps({"previous_secret_keys": [1]}), "previous_secret_keys must be a list of strings"),
])
def test_a_secret_that_is_not_as_documented_stops_the_container_without_showing_it(
        aws, monkeypatch, stored, message):
    secret_id = aws_client("secretsmanager").create_secret(Name="bad", SecretString=stored)["ARN"]
    secrets.forget()
    with pytest.raises(SettingsError) as raised:
        secrets.resolve(Settings(secret_ids=(secret_id,)))
    assert message in str(raised.value) and secret_id in str(raised.value)
    assert "hunter22" not in str(raised.value) and ADMIN not in str(raised.value)
    secrets.forget()


def test_a_field_in_two_secrets_is_refused(aws):
    sm = aws_client("secretsmanager")
    ids = tuple(sm.create_secret(Name=f"s{n}", SecretString=json.dumps({"secret_pepper": f"{n}" * 40}))["ARN"]
                for n in (1, 2))
    secrets.forget()
    with pytest.raises(SettingsError, match="secret_pepper is in two secrets"):
        secrets.resolve(Settings(secret_ids=ids))
    secrets.forget()


def test_without_secret_ids_the_environment_and_local_defaults_stay(aws, reads, caplog):
    caplog.set_level(logging.INFO)
    settings = Settings.from_env({"STAGETRACK_SECRET_PEPPER": "env-pepper"})
    assert settings.secret_ids == ()
    assert secrets.resolve(settings) is settings
    assert (settings.secret_pepper, settings.admin_token) == ("env-pepper", "stagetrack-local-admin")
    assert reads == []
