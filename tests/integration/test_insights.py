"""Insights end to end on moto: the table's stream, read as Lambda does, through the outbox
publisher (which also feeds the aggregates), then ``GET /api/insights``; idempotency against a
redelivered batch; the rebuild giving the live figures; the reads of an answer; the policy."""
from __future__ import annotations

import pytest
from chalice.test import Client

from chalicelib.adapters import clients
from chalicelib.settings import Settings
from tests.fixtures import StreamReader, assert_items_allowed, iam_actions, make_queue

DELIVERIES = "https://sqs.us-east-1.amazonaws.com/123456789012/stagetrack-deliveries"
DAY = "2026-03-20"


@pytest.fixture
def settings():
    return Settings(table_name="stagetrack-test", region="us-east-1", delivery_queue_url=DELIVERIES)


@pytest.fixture
def lam(ctx):
    from app import app

    clients.reset()
    make_queue("stagetrack-deliveries")
    stream = StreamReader(ctx.settings.table_name)
    with Client(app) as client:
        client.stream = stream
        yield client
    clients.reset()


def consume(lam, records=None):
    return lam.lambda_.invoke("outbox_publisher", records or lam.stream.event()).payload


def finish(client, clock, stage_id, status="SUCCESS", seconds=10):
    client.patch(f"/api/stages/{stage_id}", {"status": "IN_PROGRESS"})
    clock.advance(seconds)
    client.patch(f"/api/stages/{stage_id}", {"status": status})


def insights(client, query="pipeline=web&from=2026-03-20&to=2026-03-20", **kw):
    response = client.get(f"/api/insights?{query}", **kw)
    assert response.status_code == 200, response.json
    return response.json


def test_finished_runs_and_stages_answer_from_the_aggregates(lam, client, clock):
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD", "DEPLOY_PROD"],
                              "commit": {"hash": "a" * 40, "committedAt": "2026-03-20T17:00:00.000Z"}})
    clock.advance(5)
    finish(client, clock, "web:1:1", seconds=60)
    clock.advance(3)
    finish(client, clock, "web:1:2", seconds=30)
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD", "DEPLOY_PROD"]})
    finish(client, clock, "web:2:1", "FAILURE", seconds=20)
    client.post("/api/stages/web:2:1/retry")
    clock.advance(2)
    finish(client, clock, "web:2:1", seconds=40)
    client.patch("/api/stages/web:2:2", {"status": "SKIPPED"})
    report = consume(lam)
    assert report["insights"] == {"attempts": 5, "runs": 3, "duplicates": 0}  # web:2 finished twice
    body = insights(client)
    assert body["runs"] == {"total": 2, "success": 2, "failure": 0, "cancelled": 0, "timedOut": 0}
    assert body["successRate"] == 1.0
    assert body["from"] == body["to"] == DAY and body["granularity"] == "day"
    build = next(s for s in body["stages"] if s["name"] == "BUILD")
    assert build["runs"] == 3 and build["retries"] == 1 and build["flakyRate"] == round(1 / 3, 4)
    assert build["successRate"] == round(2 / 3, 4)
    assert body["dora"]["deploymentFrequency"] == 1.0
    lead = body["dora"]["leadTimeSeconds"]["p50"]
    # committed 17:00, deployed 17:18:51.76
    assert lead == pytest.approx(17 * 60 + 13.76 + 5 + 60 + 3 + 30, rel=0.01)
    assert body["series"] == [{"start": DAY, "runs": 2, "successRate": 1.0, "p50": body["series"][0]["p50"],
                               "p95": body["series"][0]["p95"]}]


def test_a_batch_delivered_twice_counts_once(lam, client, clock):
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    finish(client, clock, "web:1:1")
    records = lam.stream.event()
    first = consume(lam, records)
    again = consume(lam, records)  # Lambda retrying the batch
    assert first["insights"] == {"attempts": 1, "runs": 1, "duplicates": 0}
    assert again["insights"] == {"attempts": 0, "runs": 0, "duplicates": 2}
    assert insights(client)["runs"]["total"] == 1


def test_the_consumer_reaches_only_its_partitions(lam, client, clock, monkeypatch):
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD", "DEPLOY_PROD"]})
    finish(client, clock, "web:1:1")
    finish(client, clock, "web:1:2", "FAILURE")
    client.post("/api/stages/web:1:2/retry")
    finish(client, clock, "web:1:2")
    records = lam.stream.event()
    with iam_actions(monkeypatch) as actions:
        report = consume(lam, records)
    assert report["insights"]["attempts"] == 3
    reached = assert_items_allowed(actions, "outbox_publisher")
    assert reached == {"SUBSCRIPTIONS", "INSIGHTS#", "INSIGHTS", "INSMARK#"}
