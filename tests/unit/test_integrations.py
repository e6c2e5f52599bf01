"""The integrations registry (chalicelib/integrations/__init__.py) and what each integration
module does on its own, without HTTP: verify a request, parse it, name its delivery, and the
headers the logs scrub because of it."""
from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

import pytest

from chalicelib import integrations, logging_setup, wiring
from chalicelib.domain.errors import BadRequest, ValidationFailed
from chalicelib.domain.events import ExternalUpdate, Ignored
from chalicelib.integrations import Integration, Received, Reply, WebhookRoute, aws, cdevents, github, gitlab
from chalicelib.logging_setup import REDACTED
from chalicelib.service import ingest, outbox
from chalicelib.settings import Settings
from tests.fixtures.clock import FakeClock

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SECRET = "whsec_" + "k" * 43


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


# ---- the registry --------------------------------------------------------------------------------

def test_every_entry_names_a_module_with_the_functions_of_its_kind():
    expected = {integrations.WEBHOOK: ("verify", "receive"), integrations.EVENT: ("parse",),
                integrations.OUTBOUND: ()}
    assert len({i.name for i in integrations.INTEGRATIONS}) == len(integrations.INTEGRATIONS)
    for integration in integrations.INTEGRATIONS:
        module = importlib.import_module(f"chalicelib.integrations.{integration.module}")
        assert all(callable(getattr(module, name)) for name in expected[integration.kind]), integration.name
        assert all(h == h.lower() for h in integration.redact_headers)
        assert (integration.webhook is not None) == (integration.kind == integrations.WEBHOOK)


# The credential header each module reads or writes, and the registry line that scrubs it: the
# registry cannot import the modules (cold start), so the two names are checked against each other.
CREDENTIAL_HEADERS = {"github": "SIGNATURE_HEADER", "gitlab": "TOKEN_HEADER",
                      "signed_delivery": "SIGNATURE_HEADER"}


def test_the_header_a_module_reads_its_credential_from_is_the_one_its_registry_line_scrubs():
    for integration in integrations.INTEGRATIONS:
        constant = CREDENTIAL_HEADERS.get(integration.module)
        if constant is None:
            continue
        module = importlib.import_module(f"chalicelib.integrations.{integration.module}")
        assert getattr(module, constant).lower() in integration.redact_headers, integration.name
    assert set(CREDENTIAL_HEADERS) <= {i.module for i in integrations.INTEGRATIONS}


def test_webhook_routes_and_source_types_come_from_the_registry():
    assert integrations.webhook_names() == ("github", "gitlab", "cdevents")
    assert [i.webhook.path for i in integrations.of_kind(integrations.WEBHOOK) if i.webhook] == [
        "/api/webhooks/github", "/api/webhooks/gitlab", "/api/webhooks/cdevents"]
    assert ingest.CreateSourceIn.model_json_schema()["properties"]["type"]["enum"] == [
        "github", "gitlab", "cdevents"]
    # the union, in registry order: what every webhook route accepted before the registry
    assert integrations.webhook_content_types() == [
        "application/json", "application/x-www-form-urlencoded", "text/plain", "application/octet-stream",
        "application/cloudevents+json", "application/cloudevents-batch+json"]


def test_the_event_pattern_is_what_the_aws_module_parses():
    pattern = integrations.event_pattern()
    assert pattern == {"source": list(aws.SOURCES),
                       "detail-type": list(aws.CODEPIPELINE_DETAIL_TYPES + aws.CODEBUILD_DETAIL_TYPES)}
    assert integrations.for_event({"source": "aws.codebuild"}).name == "aws"
    assert integrations.for_event({"source": "aws.s3"}) is None


def test_an_event_no_integration_claims_is_ignored_and_a_claimed_one_parsed():
    assert ingest.parse_event({"source": "aws.s3", "detail-type": "Object Created"}) == Ignored(
        "aws.s3 'Object Created' events are not handled")
    parsed = ingest.parse_event(fixture("codepipeline_stage_started"))
    assert isinstance(parsed, ExternalUpdate)
    assert (parsed.pipeline, [(s.name, s.status.value) for s in parsed.stages]) == (
        "myPipeline", [("Build", "IN_PROGRESS")])


def test_a_lazy_function_imports_its_module_on_the_first_call(monkeypatch):
    calls = []
    monkeypatch.setattr(importlib, "import_module", lambda name: calls.append(name) or github)
    check = Integration("probe", integrations.WEBHOOK, "github", webhook=WebhookRoute("/p", "p")).verify
    assert calls == []
    assert check(SECRET, {}, b"{}") is False
    assert calls == ["chalicelib.integrations.github"]


# ---- log redaction reads the registry ------------------------------------------------------------

def test_a_registered_integrations_header_is_scrubbed_from_log_lines(monkeypatch):
    line = 'received X-Acme-Signature: sha1=0123456789 and {"x-acme-signature": "sha1=0123456789"}'
    assert logging_setup.redact(line) == line  # nobody said it is a credential
    monkeypatch.setattr(integrations, "INTEGRATIONS", [
        *integrations.INTEGRATIONS,
        Integration("acme", integrations.WEBHOOK, "acme", redact_headers=("x-acme-signature",),
                    webhook=WebhookRoute("/api/webhooks/acme", "Acme CI")),
    ])
    assert logging_setup.redact(line) == (
        f'received X-Acme-Signature: {REDACTED} and {{"x-acme-signature": "{REDACTED}"}}')


@pytest.mark.parametrize("header", ["X-Hub-Signature-256", "X-Gitlab-Token", "Authorization", "X-Auth-Token",
                                    "X-Stagetrack-Signature"])
def test_every_credential_header_is_scrubbed(header):
    assert logging_setup.redact(f"{header}: v1=0a1b2c3d4e5f") == f"{header}: {REDACTED}"
    assert logging_setup.redact(f'"{header.lower()}":"v1=0a1b2c3d4e5f"') == f'"{header.lower()}":"{REDACTED}"'


# ---- GitHub --------------------------------------------------------------------------------------

def github_headers(raw: bytes, event: str = "workflow_job", delivery: str | None = "d-1") -> dict:
    headers = {"x-hub-signature-256": github.signature(SECRET, raw), "x-github-event": event,
               "content-type": "application/json"}
    return headers if delivery is None else {**headers, "x-github-delivery": delivery}


def test_github_verifies_the_hmac_of_the_exact_body():
    raw = json.dumps(fixture("github_workflow_job_completed")).encode()
    assert github.verify(SECRET, github_headers(raw), raw)
    assert not github.verify(SECRET, github_headers(raw), raw + b" ")
    assert not github.verify("whsec_other", github_headers(raw), raw)
    assert not github.verify(SECRET, {}, raw)


def test_github_answers_ping_without_parsing():
    assert github.receive({"x-github-event": "ping"}, b"not json", "main") == Reply({"result": "pong"})


def test_github_needs_a_delivery_id_for_what_it_applies_not_for_what_it_ignores():
    raw = json.dumps(fixture("github_workflow_job_completed")).encode()
    received = github.receive(github_headers(raw), raw, "main")
    assert isinstance(received, Received) and (received.delivery_id, received.fingerprint) == ("d-1", raw)
    assert isinstance(received.update, ExternalUpdate) and received.update.namespace == "github:main"
    with pytest.raises(BadRequest, match="X-GitHub-Delivery header is required"):
        github.receive(github_headers(raw, delivery=None), raw, "main")
    push = json.dumps(fixture("github_push")).encode()
    ignored = github.receive(github_headers(push, event="push", delivery=None), push, "main")
    assert isinstance(ignored, Received) and isinstance(ignored.update, Ignored)


# ---- GitLab --------------------------------------------------------------------------------------

def test_gitlab_compares_its_token_and_names_a_delivery_by_its_headers_else_the_body():
    raw = json.dumps(fixture("gitlab_job_hook")).encode()
    assert gitlab.verify(SECRET, {"x-gitlab-token": SECRET}, raw)
    assert not gitlab.verify(SECRET, {"x-gitlab-token": SECRET + "x"}, raw)
    assert not gitlab.verify(SECRET, {}, raw)
    hook = {"x-gitlab-event": "Job Hook"}
    assert gitlab.receive({**hook, "idempotency-key": "k-1", "x-gitlab-event-uuid": "u-1"}, raw,
                          "main").delivery_id == "k-1"
    assert gitlab.receive({**hook, "x-gitlab-event-uuid": "u-1"}, raw, "main").delivery_id == "u-1"
    assert gitlab.receive(hook, raw, "main").delivery_id == "sha256:" + hashlib.sha256(raw).hexdigest()


# ---- CDEvents ------------------------------------------------------------------------------------

@pytest.mark.parametrize("authorization, accepted", [
    (f"Bearer {SECRET}", True), (f"bearer  {SECRET} ", True), (f"Basic {SECRET}", False), (SECRET, False),
    ("Bearer", False), (None, False)])
def test_cdevents_takes_the_secret_as_a_bearer_token_only(authorization, accepted):
    headers = {} if authorization is None else {"authorization": authorization}
    assert cdevents.verify(SECRET, headers, b"{}") is accepted


def test_a_cloudevent_is_the_same_delivery_in_binary_and_structured_mode():
    event = fixture("cdevents_pipelinerun_started")
    binary = cdevents.receive({"ce-specversion": "1.0", "ce-id": "e-1", "ce-source": "/ci",
                               "ce-type": event["context"]["type"], "content-type": "application/json"},
                              json.dumps(event).encode(), "main")
    structured = cdevents.receive(
        {"content-type": "application/cloudevents+json"},
        json.dumps({"specversion": "1.0", "id": "e-1", "source": "/ci", "type": event["context"]["type"],
                    "data": event}).encode(), "main")
    assert binary == structured
    assert binary.delivery_id == '["/ci", "e-1"]' and isinstance(binary.update, ExternalUpdate)


def test_a_cloudevent_batch_is_refused():
    with pytest.raises(BadRequest, match="batched CloudEvents are not accepted"):
        cdevents.receive({"content-type": "application/cloudevents-batch+json"}, b"[]", "main")


# ---- AWS -----------------------------------------------------------------------------------------

def test_an_aws_event_that_is_not_an_eventbridge_envelope_names_the_field():
    with pytest.raises(ValidationFailed) as caught:
        aws.parse({"source": "aws.codepipeline", "detail-type": "CodePipeline Stage Execution State Change"})
    assert {d["field"] for d in caught.value.details} == {"id", "detail"}


# ---- the outbox reads state changes through the store's port -------------------------------------

def test_the_outbox_decodes_change_records_through_the_stores_change_stream(monkeypatch):
    """Only the store knows item attributes: the outbox hands each record to
    ``ctx.stores.changes`` and keeps what it returns."""
    ctx = wiring.memory_context(Settings(table_name="unused", region="us-east-1"), FakeClock())
    image = {"pk": {"S": "RUN#web:1"}, "sk": {"S": "RUN"}, "kind": {"S": "run"}, "run_id": {"S": "web:1"},
             "pipeline": {"S": "web"}, "status": {"S": "IDLE"}, "version": {"N": "1"},
             "updated_at": {"S": "2026-01-01T00:00:00.000Z"}}
    inserted = {"eventName": "INSERT", "dynamodb": {"NewImage": image}}
    unrelated = {"eventName": "INSERT", "dynamodb": {"NewImage": {"kind": {"S": "token"}}}}
    seen = []
    decode = ctx.stores.changes.state_change
    monkeypatch.setattr(ctx.stores.changes, "state_change", lambda record, now: seen.append(record)
                        or decode(record, now))
    (change,) = outbox.changes_of([inserted, unrelated], ctx)
    assert seen == [inserted, unrelated]
    assert (change.type, change.run_id, change.old_status, change.new_status) == (
        "run.status-changed", "web:1", None, "IDLE")
