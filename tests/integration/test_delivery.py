"""Deliveries to a real HTTP receiver on 127.0.0.1: signed, retried with exponential backoff
through (moto's) SQS delays, dead-lettered after the last attempt, and shown by
GET /api/subscriptions/{id}/deliveries. moto's SQS runs on the FakeClock: no sleeping."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from chalice.test import Client

from chalicelib.adapters import clients
from chalicelib.adapters.http import WebhookSender
from chalicelib.domain.events import backoff_seconds
from chalicelib.integrations.signed_delivery import verify_delivery
from chalicelib.settings import Settings
from tests.fixtures import (
    Recorded,
    StreamReader,
    allowed_actions,
    assert_items_allowed,
    delete_done,
    iam_actions,
    make_queue,
    make_source,
    receive,
    receiver,
    sqs_event,
    sqs_time_follows,
)

DELIVERIES = "https://sqs.us-east-1.amazonaws.com/123456789012/stagetrack-deliveries"
DLQ = "https://sqs.us-east-1.amazonaws.com/123456789012/stagetrack-deliveries-dlq"
MAX_ATTEMPTS = 3


@pytest.fixture
def settings():
    return Settings(table_name="stagetrack-test", region="us-east-1", delivery_queue_url=DELIVERIES,
                    delivery_dlq_url=DLQ, delivery_max_attempts=MAX_ATTEMPTS, delivery_timeout_seconds=2,
                    allow_local_subscribers=True)


@pytest.fixture
def lam(ctx, clock, monkeypatch):
    from app import app

    clients.reset()
    sqs_time_follows(clock, monkeypatch)
    _, arn = make_queue("stagetrack-deliveries")
    make_queue("stagetrack-deliveries-dlq")
    stream = StreamReader(ctx.settings.table_name)
    with Client(app) as client:
        client.stream, client.queue_arn = stream, arn
        yield client
    clients.reset()


def subscribe(client, url, **extra):
    response = client.post("/api/subscriptions", {"url": url, "events": ["stage.status-changed"], **extra})
    assert response.status_code == 201, response.json
    return response.json


def one_stage_starts(client, lam):
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    client.patch("/api/stages/web:1:1", {"status": "IN_PROGRESS"})
    assert lam.lambda_.invoke("outbox_publisher", lam.stream.event()).payload["deliveries"] == 1


def poll(lam):
    """One pass of Lambda's SQS poller: receive what is visible now, invoke, delete what succeeded."""
    batch = receive(DELIVERIES)
    if not batch:
        return None
    answer = lam.lambda_.invoke("deliver_webhooks", sqs_event(batch, lam.queue_arn))
    failures = answer.payload["batchItemFailures"]
    delete_done(DELIVERIES, batch, failures)
    return failures


def test_a_delivery_is_signed_retried_with_backoff_and_then_delivered(lam, client, clock):
    with receiver([500, 503, 200]) as hook:
        subscription = subscribe(client, hook.url)
        secret = subscription["secret"]
        one_stage_starts(client, lam)

        assert poll(lam) == []  # attempt 1: 500
        first_delay = backoff_seconds(1, hook.requests[0]["headers"]["X-Stagetrack-Delivery"])
        assert 30 <= first_delay <= 33
        clock.advance(first_delay - 1)
        assert poll(lam) is None  # not due yet: SQS keeps it delayed
        clock.advance(1)
        assert poll(lam) == []  # attempt 2: 503
        clock.advance(66)  # 60 s doubled, plus at most 10 % jitter
        assert poll(lam) == []  # attempt 3: 200
        clock.advance(3600)
        assert poll(lam) is None and receive(DLQ) == []

    assert [r["path"] for r in hook.requests] == ["/hooks/stagetrack"] * 3
    bodies = {r["body"] for r in hook.requests}
    assert len(bodies) == 1  # every attempt sends the same bytes
    event = json.loads(bodies.pop())
    assert (event["type"], event["stageId"], event["oldStatus"], event["newStatus"]) == (
        "stage.status-changed", "web:1:1", "IDLE", "IN_PROGRESS")
    headers = [r["headers"] for r in hook.requests]
    assert [h["X-Stagetrack-Attempt"] for h in headers] == ["1", "2", "3"]
    assert len({h["X-Stagetrack-Delivery"] for h in headers}) == 1
    assert all(h["X-Stagetrack-Event"] == "stage.status-changed" and h["Content-Type"] == "application/json"
               and h["User-Agent"] == "stagetrack-webhooks/1" for h in headers)
    # each attempt is signed at its own time; a receiver verifies as the README shows
    stamps = [int(h["X-Stagetrack-Timestamp"]) for h in headers]
    assert stamps[1] - stamps[0] == first_delay and stamps[2] > stamps[1]
    for request in hook.requests:
        at = datetime.fromtimestamp(int(request["headers"]["X-Stagetrack-Timestamp"]), UTC)
        assert verify_delivery(secret, request["body"], request["headers"]["X-Stagetrack-Timestamp"],
                               request["headers"]["X-Stagetrack-Signature"], at)
        assert not verify_delivery(
            secret,
            request["body"] + b" ",
            request["headers"]["X-Stagetrack-Timestamp"],
            request["headers"]["X-Stagetrack-Signature"],
            at,
        )
        assert not verify_delivery(
            "whsec_other",
            request["body"],
            request["headers"]["X-Stagetrack-Timestamp"],
            request["headers"]["X-Stagetrack-Signature"],
            at,
        )
    assert not verify_delivery(secret, hook.requests[0]["body"], headers[0]["X-Stagetrack-Timestamp"],
                               headers[0]["X-Stagetrack-Signature"], clock.now())  # 5 minutes later: stale

    attempts = client.get(f"/api/subscriptions/{subscription['id']}/deliveries").json["items"]
    assert [(a["attempt"], a["outcome"], a["statusCode"]) for a in attempts] == [
        (3, "delivered", 200), (2, "retrying", 503), (1, "retrying", 500)]
    assert attempts[2]["error"] == "HTTP 500" and attempts[0]["error"] is None
    assert attempts[2]["nextAttemptAt"] == attempts[1]["at"]  # retried exactly when announced
    assert all(a["deliveryId"] == headers[0]["X-Stagetrack-Delivery"] for a in attempts)


# ---- format "cdevents": CloudEvents binary mode, and our own webhook reads it back ----------------

def test_a_cdevents_delivery_is_a_signed_cloudevent_in_binary_mode(lam, client, clock):
    with receiver([503, 200]) as hook:
        subscription = subscribe(client, hook.url, format="cdevents")
        assert subscription["format"] == "cdevents"
        one_stage_starts(client, lam)
        assert poll(lam) == []
        clock.advance(40)
        assert poll(lam) == []
    first, second = hook.requests
    assert first["body"] == second["body"]  # the same bytes on every attempt
    event = json.loads(first["body"])
    assert event == {
        "context": {"version": "0.4.1", "id": event["context"]["id"], "source": "/stagetrack/web",
                    "type": "dev.cdevents.taskrun.started.0.2.0", "timestamp": "2026-03-20T17:17:13.760Z"},
        "subject": {"id": "web:1:1", "source": "/stagetrack/web", "type": "taskRun",
                    "content": {"taskName": "BUILD", "url": "/api/stages/web:1:1",
                                "pipelineRun": {"id": "web:1", "source": "/stagetrack/web"}}},
    }
    assert event["context"]["id"].startswith("evt_")
    for request in (first, second):
        headers = request["headers"]
        assert {name: value for name, value in headers.items() if name.startswith("ce-")} == {
            "ce-specversion": "1.0", "ce-id": event["context"]["id"], "ce-source": "/stagetrack/web",
            "ce-type": "dev.cdevents.taskrun.started.0.2.0", "ce-time": "2026-03-20T17:17:13.760Z"}
        assert headers["Content-Type"] == "application/json"
        assert headers["X-Stagetrack-Event"] == "dev.cdevents.taskrun.started.0.2.0"
        at = datetime.fromtimestamp(int(headers["X-Stagetrack-Timestamp"]), UTC)
        stamp, signature = headers["X-Stagetrack-Timestamp"], headers["X-Stagetrack-Signature"]
        assert verify_delivery(subscription["secret"], request["body"], stamp, signature, at)
        assert not verify_delivery(subscription["secret"], request["body"] + b" ", stamp, signature, at)
    assert [h["X-Stagetrack-Attempt"] for h in (first["headers"], second["headers"])] == ["1", "2"]
    assert first["headers"]["X-Stagetrack-Delivery"] == second["headers"]["X-Stagetrack-Delivery"]
    attempts = client.get(f"/api/subscriptions/{subscription['id']}/deliveries").json["items"]
    assert [(a["attempt"], a["outcome"], a["eventType"], a["eventId"]) for a in attempts] == [
        (2, "delivered", "dev.cdevents.taskrun.started.0.2.0", event["context"]["id"]),
        (1, "retrying", "dev.cdevents.taskrun.started.0.2.0", event["context"]["id"])]


def forward(client, requests, token: str) -> list:
    """What a CloudEvents-aware relay does with our deliveries: POST each body, byte for byte,
    with the headers it came with, to another stagetrack's CDEvents webhook (here: ours, source
    "mirror")."""
    answers = []
    for request in requests:
        headers = {name: value for name, value in request["headers"].items()
                   if name.lower().startswith(("ce-", "x-stagetrack-")) or name.lower() == "content-type"}
        headers["Authorization"] = f"Bearer {token}"
        answers.append(client.post("/api/webhooks/cdevents?source=mirror", raw=request["body"],
                                   headers=headers, auth=None))
    return answers


def stages_of(client, run_id: str) -> list[tuple]:
    return [(s["name"], s["type"], s["status"], s["startedAt"], s["endedAt"], s["duration"])
            for s in client.get(f"/api/stages?runId={run_id}").json]


def test_delivered_cdevents_make_the_same_run_through_our_own_cdevents_webhook(lam, client, clock):
    token = make_source(client, "cdevents", "mirror")
    with receiver([200]) as hook:
        subscribe(client, hook.url, events=["*"], format="cdevents")
        client.post("/api/runs", {"pipeline": "app", "stages": ["BUILD", "UNIT_TEST", "DEPLOY_PROD"]})
        for seconds, stage, status in [(1, 1, "IN_PROGRESS"), (2, 1, "SUCCESS"), (1, 2, "IN_PROGRESS"),
                                       (3, 2, "FAILURE")]:
            clock.advance(seconds)
            client.patch(f"/api/stages/app:1:{stage}", {"status": status})
        assert lam.lambda_.invoke("outbox_publisher", lam.stream.event()).payload["deliveries"] == 7
        assert poll(lam) == []
    assert sorted(r["headers"]["ce-type"] for r in hook.requests) == [
        "dev.cdevents.pipelinerun.finished.0.2.0", "dev.cdevents.pipelinerun.queued.0.2.0",
        "dev.cdevents.pipelinerun.started.0.2.0", "dev.cdevents.taskrun.finished.0.2.0",
        "dev.cdevents.taskrun.finished.0.2.0", "dev.cdevents.taskrun.started.0.2.0",
        "dev.cdevents.taskrun.started.0.2.0"]

    clock.advance(60)
    answers = forward(client, hook.requests, token)
    assert all(a.status_code == 200 for a in answers), [a.json for a in answers]
    assert {a.json["runId"] for a in answers} == {"app:2"}
    mirrored = client.get("/api/runs/app:2").json
    assert (mirrored["status"], mirrored["trigger"]) == ("FAILURE", "cdevents")
    original = stages_of(client, "app:1")
    assert original[2][2] == "IDLE"  # DEPLOY_PROD never started: no CDEvent ever named it
    assert stages_of(client, "app:2") == original[:2] == [
        ("BUILD", "BUILD", "SUCCESS", "2026-03-20T17:17:14.760Z", "2026-03-20T17:17:16.760Z", 2),
        ("UNIT_TEST", "UNIT_TEST", "FAILURE", "2026-03-20T17:17:17.760Z", "2026-03-20T17:17:20.760Z", 3)]

    again = forward(client, hook.requests, token)  # at-least-once: the same events again change nothing
    assert all(a.headers["Idempotent-Replayed"] == "true" for a in again)
    assert stages_of(client, "app:2") == original[:2]


def test_a_cancelled_run_mirrors_as_failed_and_its_skipped_stages_as_successes(lam, client, clock):
    """The lossy rows of the mapping, end to end: CDEvents v0.4.1 has no "skipped" and no
    "cancel" outcome, so a stage skipped here arrives as a success, and the cancel arrives as
    outcome "error" (its ``errors`` says CANCELLED), which a receiver reads as a failure."""
    token = make_source(client, "cdevents", "mirror")
    with receiver([200]) as hook:
        subscribe(client, hook.url, events=["*"], format="cdevents")
        client.post("/api/runs", {"pipeline": "app", "stages": ["BUILD", "DEPLOY_PROD"]})
        clock.advance(1)
        client.patch("/api/stages/app:1:1", {"status": "IN_PROGRESS"})
        clock.advance(2)
        client.post("/api/runs/app:1/cancel", {"reason": "superseded"})
        assert lam.lambda_.invoke("outbox_publisher", lam.stream.event()).payload["deliveries"] == 6
        assert poll(lam) == []
    finished = [json.loads(r["body"])["subject"] for r in hook.requests
                if r["headers"]["ce-type"].endswith(".finished.0.2.0")]
    assert sorted((s["type"], s["content"]["outcome"], s["content"].get("errors")) for s in finished) == [
        ("pipelineRun", "error", "run app:1 ended CANCELLED"),
        ("taskRun", "error", "stage BUILD of run app:1 ended CANCELLED"),
        ("taskRun", "success", None)]
    assert all(a.status_code == 200 for a in forward(client, hook.requests, token))
    assert [client.get(f"/api/runs/{run}").json["status"] for run in ("app:1", "app:2")] == [
        "CANCELLED",
        "FAILURE",
    ]
    assert [(s[0], s[2]) for s in stages_of(client, "app:1")] == [
        ("BUILD", "CANCELLED"),
        ("DEPLOY_PROD", "SKIPPED"),
    ]
    assert [(s[0], s[2]) for s in stages_of(client, "app:2")] == [
        ("BUILD", "FAILURE"),
        ("DEPLOY_PROD", "SUCCESS"),
    ]


def test_after_the_last_attempt_a_delivery_is_dead_lettered(lam, client, clock):
    with receiver([500]) as hook:
        subscription = subscribe(client, hook.url)
        one_stage_starts(client, lam)
        for _ in range(MAX_ATTEMPTS):
            assert poll(lam) == []
            clock.advance(200)
        assert poll(lam) is None
    assert len(hook.requests) == MAX_ATTEMPTS
    (dead,) = [json.loads(m["Body"]) for m in receive(DLQ)]
    assert (dead["attempt"], dead["lastStatus"], dead["lastError"]) == (MAX_ATTEMPTS, 500, "HTTP 500")
    assert dead["subscriptionId"] == subscription["id"]
    outcomes = [
        a["outcome"] for a in client.get(f"/api/subscriptions/{subscription['id']}/deliveries").json["items"]
    ]
    assert outcomes == ["dead-lettered", "retrying", "retrying"]


def test_an_unreachable_subscriber_is_retried_like_an_error(lam, client, clock):
    with receiver([200]) as hook:
        url = hook.url
    subscription = subscribe(client, url)  # nobody listens there any more
    one_stage_starts(client, lam)
    assert poll(lam) == []
    (attempt,) = client.get(f"/api/subscriptions/{subscription['id']}/deliveries").json["items"]
    assert attempt["outcome"] == "retrying" and attempt["statusCode"] is None
    assert "ConnectionRefused" in attempt["error"]


def test_a_deleted_subscription_gets_nothing_more(lam, client, clock):
    with receiver([500]) as hook:
        subscription = subscribe(client, hook.url)
        one_stage_starts(client, lam)
        poll(lam)
        client.delete(f"/api/subscriptions/{subscription['id']}")
        clock.advance(200)
        assert poll(lam) == []  # the queued retry is dropped
        assert len(hook.requests) == 1 and receive(DLQ) == []


def test_a_malformed_delivery_message_is_dead_lettered(lam, client):
    event = sqs_event([{"MessageId": "m-1", "ReceiptHandle": "r", "Body": '{"v": 1}', "MD5OfBody": "x"}],
                      lam.queue_arn)
    assert lam.lambda_.invoke("deliver_webhooks", event).payload == {"batchItemFailures": []}
    assert [m["Body"] for m in receive(DLQ)] == ['{"v": 1}']


def test_the_sender_refuses_private_addresses_unless_local_is_allowed():
    with receiver([200]) as hook:
        refused = WebhookSender(timeout=2, allow_local=False).post(hook.url, b"{}", {})
        assert refused.status is None and "non-public address" in refused.error
        assert hook.requests == []
        allowed = WebhookSender(timeout=2, allow_local=True).post(hook.url, b"{}", {})
        assert allowed.ok and len(hook.requests) == 1


def test_the_delivery_worker_calls_only_what_its_policy_allows(lam, client, clock, monkeypatch):
    with receiver([500]) as hook:
        subscribe(client, hook.url)
        one_stage_starts(client, lam)
        actions = Recorded()
        for _ in range(MAX_ATTEMPTS):  # retry, retry, dead letter
            batch = receive(DELIVERIES)
            with iam_actions(monkeypatch) as made:
                lam.lambda_.invoke("deliver_webhooks", sqs_event(batch, lam.queue_arn))
            actions |= made
            actions.calls += made.calls
            delete_done(DELIVERIES, batch, [])
            clock.advance(200)
        assert len(hook.requests) == MAX_ATTEMPTS and receive(DLQ)
    assert actions == {"dynamodb:GetItem", "dynamodb:PutItem", "sqs:SendMessage"}
    assert actions <= allowed_actions("deliver_webhooks")
    assert assert_items_allowed(actions, "deliver_webhooks") == {"SUBSCRIPTIONS", "DELIV#"}


# ---- `make run`: the same outbox on a thread, over the local stream ------------------------------

def test_locally_the_stream_is_followed_and_deliveries_retried_in_memory(ctx, client, clock):
    from chalicelib.adapters.local import MemoryQueue, StreamTail
    from chalicelib.events.outbound import LocalOutbox

    with receiver([502, 204]) as hook:
        subscribe(client, hook.url)
        local = LocalOutbox(ctx, StreamTail(ctx.settings.table_name, "us-east-1", None, start="TRIM_HORIZON"),
                            queue=MemoryQueue(now=lambda: clock.now().timestamp()))
        client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
        client.patch("/api/stages/web:1:1", {"status": "IN_PROGRESS"})
        local.tick()
        assert [r["headers"]["X-Stagetrack-Attempt"] for r in hook.requests] == ["1"]
        local.tick()
        assert len(hook.requests) == 1 and len(local.queue) == 1  # waiting for its backoff
        clock.advance(40)
        local.tick()
        assert [r["headers"]["X-Stagetrack-Attempt"] for r in hook.requests] == ["1", "2"]
        local.tick()
        assert len(hook.requests) == 2 and len(local.queue) == 0


@pytest.mark.ddb_local
def test_dynamodb_local_streams_feed_the_local_outbox(local_ctx, clock):
    """The real thing `make run` uses: DynamoDB Local's stream, read through StreamTail."""
    import dataclasses

    from chalicelib.adapters.local import MemoryQueue, StreamTail
    from chalicelib.domain.auth import Principal
    from chalicelib.domain.events import CreateSubscriptionIn
    from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
    from chalicelib.events.outbound import LocalOutbox
    from chalicelib.service import runs, subscriptions

    settings = dataclasses.replace(local_ctx.settings, allow_local_subscribers=True)
    local_ctx.settings = settings
    tail = StreamTail(settings.table_name, settings.region, settings.dynamodb_endpoint)  # LATEST: from now on
    with receiver([200]) as hook:
        subscription, secret = subscriptions.create(local_ctx, CreateSubscriptionIn.model_validate_json(
            json.dumps({"url": hook.url, "events": ["*"]})), Principal("tok_test", "test", ("admin",), None))
        run = runs.create_run(
            local_ctx, CreateRunIn.model_validate_json('{"pipeline": "web", "stages": ["BUILD"]}')
        )
        for status in ("IN_PROGRESS", "SUCCESS"):
            runs.patch_stage(
                local_ctx, run.stages[0].id, PatchStageIn.model_validate_json(json.dumps({"status": status}))
            )
        local = LocalOutbox(local_ctx, tail, queue=MemoryQueue(now=lambda: clock.now().timestamp()))
        local.tick()
    changes = [(json.loads(r["body"])["type"], json.loads(r["body"])["newStatus"]) for r in hook.requests]
    assert sorted(changes) == sorted(
        [
            ("run.status-changed", "IDLE"),
            ("stage.status-changed", "IN_PROGRESS"),
            ("run.status-changed", "IN_PROGRESS"),
            ("stage.status-changed", "SUCCESS"),
            ("run.status-changed", "SUCCESS"),
        ]
    )
    assert all(verify_delivery(secret, r["body"], r["headers"]["X-Stagetrack-Timestamp"],
                               r["headers"]["X-Stagetrack-Signature"], clock.now()) for r in hook.requests)
