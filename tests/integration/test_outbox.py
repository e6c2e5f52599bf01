"""The outbox: the table's stream (moto's, read like Lambda's poller) -> one event per state
change -> EventBridge (a moto bus, tapped by a rule into a queue) and the delivery queue."""
from __future__ import annotations

import json

import pytest
from chalice.test import Client

from chalicelib.adapters import clients
from chalicelib.adapters.eventbridge import PublishFailed
from chalicelib.domain.events import delivery_id
from chalicelib.settings import Settings
from tests.fixtures import (
    StreamReader,
    allowed_actions,
    assert_items_allowed,
    event_bus_to_queue,
    iam_actions,
    load,
    make_queue,
    make_source,
    post_github,
    receive,
)

BUS = "stagetrack-events"
DELIVERIES = "https://sqs.us-east-1.amazonaws.com/123456789012/stagetrack-deliveries"
TAP = "https://sqs.us-east-1.amazonaws.com/123456789012/bus-tap"


@pytest.fixture
def settings():
    return Settings(
        table_name="stagetrack-test",
        region="us-east-1",
        event_bus=BUS,
        delivery_queue_url=DELIVERIES,
        public_url="https://stagetrack.example.com/prod",
    )


@pytest.fixture
def lam(ctx):
    from app import app

    clients.reset()
    make_queue("stagetrack-deliveries")
    _, tap_arn = make_queue("bus-tap")
    event_bus_to_queue(BUS, tap_arn)
    stream = StreamReader(ctx.settings.table_name)
    with Client(app) as client:
        client.stream = stream
        yield client
    clients.reset()


def publish(lam):
    return lam.lambda_.invoke("outbox_publisher", lam.stream.event()).payload


def published():
    """What reached the bus: (detail-type, runId, stageId, oldStatus, newStatus, attempt)."""
    events = [json.loads(m["Body"]) for m in receive(TAP, 100)]
    assert all(e["source"] == "stagetrack" for e in events)
    return [(e["detail-type"], e["detail"]["runId"], e["detail"]["stageId"], e["detail"]["oldStatus"],
             e["detail"]["newStatus"], e["detail"]["attempt"]) for e in events]


def test_every_state_change_is_one_event_on_the_bus(lam, client):
    RUN, STAGE = "stagetrack.run.status-changed", "stagetrack.stage.status-changed"
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD", "DEPLOY_PROD"]})
    client.patch("/api/stages/web:1:1", {"status": "IN_PROGRESS"})
    client.patch("/api/stages/web:1:1", {"name": "compile"})  # a change, but not of status
    client.patch("/api/stages/web:1:1", {"status": "SUCCESS"})
    client.patch("/api/stages/web:1:2", {"status": "IN_PROGRESS"})
    client.patch("/api/stages/web:1:2", {"status": "FAILURE"})
    client.post("/api/stages/web:1:2/retry")
    client.delete("/api/runs/web:1")
    report = publish(lam)
    assert report["events"] == report["published"] == 12
    assert sorted(published(), key=repr) == sorted([
        (RUN, "web:1", None, None, "IDLE", None),  # created
        (STAGE, "web:1", "web:1:1", "IDLE", "IN_PROGRESS", 1),
        (RUN, "web:1", None, "IDLE", "IN_PROGRESS", None),
        (STAGE, "web:1", "web:1:1", "IN_PROGRESS", "SUCCESS", 1),
        (STAGE, "web:1", "web:1:2", "IDLE", "IN_PROGRESS", 1),
        (STAGE, "web:1", "web:1:2", "IN_PROGRESS", "FAILURE", 1),
        (RUN, "web:1", None, "IN_PROGRESS", "FAILURE", None),
        (STAGE, "web:1", "web:1:2", "FAILURE", "IDLE", 2),  # the retry: a new attempt
        (RUN, "web:1", None, "FAILURE", "IN_PROGRESS", None),
        (RUN, "web:1", None, "IN_PROGRESS", None, None),  # deleted, with its stages
        (STAGE, "web:1", "web:1:1", "SUCCESS", None, 1),
        (STAGE, "web:1", "web:1:2", "IDLE", None, 2),
    ], key=repr)


def test_the_event_body(lam, client, clock):
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    clock.advance(2)
    client.patch("/api/stages/web:1:1", {"status": "IN_PROGRESS"})
    publish(lam)
    events = [json.loads(m["Body"]) for m in receive(TAP)]
    stage = next(e for e in events if e["detail-type"] == "stagetrack.stage.status-changed")
    assert stage["detail"] == {
        "id": stage["detail"]["id"], "type": "stage.status-changed", "time": "2026-03-20T17:17:15.760Z",
        "pipeline": "web", "runId": "web:1", "stageId": "web:1:1", "stageName": "BUILD",
        "oldStatus": "IDLE", "newStatus": "IN_PROGRESS", "attempt": 1,
    }
    assert stage["detail"]["id"].startswith("evt_") and stage["time"] == "2026-03-20T17:17:15Z"


def test_a_batch_read_twice_gives_the_same_event_ids(lam, client):
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    records = lam.stream.event()
    lam.lambda_.invoke("outbox_publisher", records)
    lam.lambda_.invoke("outbox_publisher", records)  # Lambda retrying the batch
    ids = [json.loads(m["Body"])["detail"]["id"] for m in receive(TAP)]
    assert len(ids) == 2 and ids[0] == ids[1]


def test_a_stage_a_sender_reports_already_running_is_born_with_its_event(lam, client):
    secret = make_source(client, "github", "github-main")
    post_github(client, "workflow_job", load("github_workflow_job_in_progress"), secret=secret)
    publish(lam)
    assert ("stagetrack.stage.status-changed", "octo-org.example-workflow.Greeting-Actions:1",
            "octo-org.example-workflow.Greeting-Actions:1:1", None, "IN_PROGRESS", 1) in published()


def test_subscribers_get_one_delivery_per_matching_event(lam, client, ddb_calls):
    failures = client.post("/api/subscriptions", {"url": "https://hooks.example.com/a",
                                                  "events": ["stage.status-changed"], "pipelines": ["web"],
                                                  "statuses": ["FAILURE", "SUCCESS"]}).json
    everything = client.post(
        "/api/subscriptions", {"url": "https://hooks.example.com/b", "events": ["*"]}
    ).json
    client.post(
        "/api/subscriptions", {"url": "https://hooks.example.com/c", "events": ["*"], "pipelines": ["api"]}
    )
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    client.patch("/api/stages/web:1:1", {"status": "IN_PROGRESS"})
    client.patch("/api/stages/web:1:1", {"status": "SUCCESS"})
    event = lam.stream.event()
    ddb_calls.clear()
    report = lam.lambda_.invoke("outbox_publisher", event).payload
    assert (report["events"], report["deliveries"]) == (5, 6)
    # the subscriptions, once for the whole batch; then the insights of what finished (one stage
    # attempt: its run's markers + 1 transaction; the run: markers, its pipeline's state + 1);
    # then the stage's start: its window of day items (nothing more: no history yet); last,
    # retention: the finished run's expiry (one conditional UpdateItem)
    assert ddb_calls == {"Query": 1 + 2 + 1, "GetItem": 1, "TransactWriteItems": 2, "UpdateItem": 1}
    messages = [json.loads(m["Body"]) for m in receive(DELIVERIES)]
    mine = [m for m in messages if m["subscriptionId"] == failures["id"]]
    assert [json.loads(m["payload"])["newStatus"] for m in mine] == ["SUCCESS"]
    assert sum(m["subscriptionId"] == everything["id"] for m in messages) == 5
    (message,) = mine
    payload = json.loads(message["payload"])
    assert message["attempt"] == 1 and message["eventId"] == payload["id"]
    assert message["deliveryId"] == delivery_id(payload["id"], failures["id"])


def test_records_of_other_items_publish_nothing_and_read_nothing(lam, client, ddb_calls):
    client.post("/api/tokens", {"name": "ci", "scopes": ["read"]})
    make_source(client, "gitlab", "gitlab-main")
    client.post("/api/subscriptions", {"url": "https://hooks.example.com/a", "events": ["*"]})
    event = lam.stream.event()
    assert event["Records"]
    ddb_calls.clear()
    assert lam.lambda_.invoke("outbox_publisher", event).payload["events"] == 0
    assert dict(ddb_calls) == {} and receive(TAP) == [] and receive(DELIVERIES) == []


def test_a_bus_refusing_events_fails_the_batch_so_lambda_retries_it(lam, ctx, client, monkeypatch):
    client.post("/api/subscriptions", {"url": "https://hooks.example.com/a", "events": ["*"]})
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    bus = clients.event_bus(ctx.settings)
    monkeypatch.setattr(type(bus.client), "put_events", lambda self, **kw: {
        "FailedEntryCount": len(kw["Entries"]),
        "Entries": [{"ErrorCode": "InternalFailure", "ErrorMessage": "try again"} for _ in kw["Entries"]]})
    with pytest.raises(PublishFailed):
        publish(lam)
    assert receive(DELIVERIES) == []  # nothing half-sent: the retry sends it all


def test_the_publisher_calls_only_what_its_policy_allows(lam, client, monkeypatch):
    client.post("/api/subscriptions", {"url": "https://hooks.example.com/a", "events": ["*"]})
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    event = lam.stream.event()
    with iam_actions(monkeypatch) as actions:
        lam.lambda_.invoke("outbox_publisher", event)
    assert actions == {"dynamodb:Query", "events:PutEvents", "sqs:SendMessage"}
    assert actions <= allowed_actions("outbox_publisher")
    assert assert_items_allowed(actions, "outbox_publisher") == {"SUBSCRIPTIONS"}


def test_the_publisher_also_applies_run_retention_after_publishing(lam, ctx, client, monkeypatch):
    """Retention rides on this reader (DynamoDB Streams throttles a third): a finished run gets
    its expiry, and when the table's TTL removes the run item, its stages go (events/outbound.py)."""
    import boto3

    from chalicelib.store.models import RUN_SK, run_pk
    from chalicelib.store.stream import TTL_PRINCIPAL

    client.post("/api/subscriptions", {"url": "https://hooks.example.com/a", "events": ["*"]})
    run_id = client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]}).json["id"]
    client.patch(f"/api/stages/{run_id}:1", {"status": "IN_PROGRESS"})
    client.patch(f"/api/stages/{run_id}:1", {"status": "SUCCESS"})
    with iam_actions(monkeypatch) as actions:
        report = publish(lam)
    assert report["events"] > 0 and report["retention"] == {"expiring": 1, "kept": 0, "purged": 0}
    assert {"dynamodb:UpdateItem", "events:PutEvents"} <= actions
    reached = assert_items_allowed(actions, "outbox_publisher")
    assert reached == {"SUBSCRIPTIONS", "INSIGHTS#", "INSIGHTS", "INSMARK#", "RUN#"}  # RUN#: the expiry
    table = boto3.client("dynamodb", region_name="us-east-1")
    key = {"pk": {"S": run_pk(run_id)}, "sk": {"S": RUN_SK}}
    assert "expires_at" in table.get_item(TableName=ctx.settings.table_name, Key=key)["Item"]
    assert publish(lam)["retention"] == {"expiring": 0, "kept": 0, "purged": 0}  # the expiry's own record

    table.delete_item(TableName=ctx.settings.table_name, Key=key)  # as the TTL does
    event = lam.stream.event()
    for record in event["Records"]:
        record["userIdentity"] = {"type": "Service", "principalId": TTL_PRINCIPAL}
    with iam_actions(monkeypatch) as actions:
        report = lam.lambda_.invoke("outbox_publisher", event).payload
    assert report["retention"]["purged"] == 1  # its one stage
    assert assert_items_allowed(actions, "outbox_publisher") == {"SUBSCRIPTIONS", "RUN#"}
    left = table.query(TableName=ctx.settings.table_name, KeyConditionExpression="pk = :pk",
                       ExpressionAttributeValues={":pk": {"S": run_pk(run_id)}})["Items"]
    assert left == []
    assert lam.lambda_.invoke("outbox_publisher", event).payload["retention"]["purged"] == 0  # retried


# ---- subscriptions in format "cdevents" -----------------------------------------------------------

def test_cdevents_subscribers_get_the_cdevent_of_each_matching_change_it_has_a_word_for(lam, client):
    hooks = "https://hooks.example.com"
    everything = client.post("/api/subscriptions", {"url": f"{hooks}/all", "events": ["*"],
                                                    "format": "cdevents"}).json
    failed_stages = client.post(
        "/api/subscriptions",
        {
            "url": f"{hooks}/failed",
            "events": ["stage.status-changed"],
            "pipelines": ["web"],
            "statuses": ["FAILURE"],
            "format": "cdevents",
        },
    ).json
    gates = client.post("/api/subscriptions", {"url": f"{hooks}/gates", "events": ["*"], "format": "cdevents",
                                               "statuses": ["WAITING_FOR_APPROVAL"]}).json
    other = client.post("/api/subscriptions", {"url": f"{hooks}/api", "events": ["*"], "pipelines": ["api"],
                                               "format": "cdevents"}).json
    plain = client.post("/api/subscriptions", {"url": f"{hooks}/plain", "events": ["*"]}).json
    gate = {"type": "DEPLOY_PROD", "approval": "MANUAL"}
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD", gate]})
    client.patch("/api/stages/web:1:1", {"status": "IN_PROGRESS"})
    client.patch("/api/stages/web:1:1", {"status": "SUCCESS"})
    client.patch("/api/stages/web:1:2", {"status": "IN_PROGRESS"})  # a gate: WAITING_FOR_APPROVAL
    client.post("/api/stages/web:1:2/reject", {"comment": "not today"})
    report = publish(lam)
    # 8 changes: run created, stage 1 starts, run starts, stage 1 succeeds, stage 2 and the run wait,
    # stage 2 and the run fail. CDEvents has nothing for the two waits.
    assert (report["events"], report["deliveries"]) == (8, 8 + 6 + 1)
    messages = [json.loads(m["Body"]) for m in receive(DELIVERIES, 100)]

    def of(subscription):
        return [m for m in messages if m["subscriptionId"] == subscription["id"]]

    assert of(gates) == [] and of(other) == []  # the filter applies first, then the mapping
    assert [m["format"] for m in of(plain)] == ["stagetrack"] * 8
    assert {m["eventType"] for m in of(plain)} == {"run.status-changed", "stage.status-changed"}
    cd = of(everything)
    assert sorted((m["eventType"], json.loads(m["payload"])["subject"]["id"]) for m in cd) == [
        ("dev.cdevents.pipelinerun.finished.0.2.0", "web:1"),
        ("dev.cdevents.pipelinerun.queued.0.2.0", "web:1"),
        ("dev.cdevents.pipelinerun.started.0.2.0", "web:1"),
        ("dev.cdevents.taskrun.finished.0.2.0", "web:1:1"),
        ("dev.cdevents.taskrun.finished.0.2.0", "web:1:2"),
        ("dev.cdevents.taskrun.started.0.2.0", "web:1:1")]
    for message in cd:
        context = json.loads(message["payload"])["context"]
        assert (message["format"], context["type"], context["id"], context["source"]) == (
            "cdevents", message["eventType"], message["eventId"], "/stagetrack/web")
        assert message["deliveryId"] == delivery_id(message["eventId"], everything["id"])
    (rejected,) = of(failed_stages)
    assert json.loads(rejected["payload"])["subject"] == {
        "id": "web:1:2", "source": "/stagetrack/web", "type": "taskRun",
        "content": {"taskName": "DEPLOY_PROD", "url": "https://stagetrack.example.com/prod/api/stages/web:1:2",
                    "pipelineRun": {"id": "web:1", "source": "/stagetrack/web"},
                    "outcome": "failure", "errors": "stage DEPLOY_PROD of run web:1 ended FAILURE"}}
    # the same change to a stagetrack and a cdevents subscriber: one event id, two deliveries
    same = next(m for m in of(plain) if m["eventId"] == rejected["eventId"])
    assert json.loads(same["payload"])["newStatus"] == "FAILURE"
    assert same["deliveryId"] != rejected["deliveryId"]


def test_delivery_messages_queued_before_formats_existed_still_parse():
    from chalicelib.service.outbox import parse_delivery

    old = ('{"v":1,"deliveryId":"dlv_1","subscriptionId":"sub_1","eventId":"evt_1",'
           '"eventType":"stage.status-changed","attempt":2,"payload":"{}"}')
    assert parse_delivery(old)["format"] == "stagetrack"


@pytest.mark.parametrize("change", [
    {"format": "xml"}, {"format": None}, {"format": 1},
    {"format": "cdevents"},  # the payload is no CDEvent
    {"format": "cdevents", "payload": '{"context": {"id": "evt_1", "source": "/s", "type": "t"}}'},
])
def test_delivery_messages_with_a_bad_format_are_refused(change):
    from chalicelib.service.outbox import BadDeliveryMessage, parse_delivery

    message = {"v": 1, "deliveryId": "dlv_1", "subscriptionId": "sub_1", "eventId": "evt_1",
               "eventType": "stage.status-changed", "attempt": 1, "payload": "{}", **change}
    with pytest.raises(BadDeliveryMessage):
        parse_delivery(json.dumps(message))


@pytest.mark.parametrize("deep", ["message", "cdevents payload"])
def test_delivery_messages_nested_too_deep_are_refused(deep):
    from chalicelib.service.outbox import BadDeliveryMessage, parse_delivery

    nested = "[" * 50_000 + "]" * 50_000
    message = {"v": 1, "deliveryId": "dlv_1", "subscriptionId": "sub_1", "eventId": "evt_1",
               "eventType": "stage.status-changed", "attempt": 1, "format": "cdevents", "payload": nested}
    with pytest.raises(BadDeliveryMessage):
        parse_delivery(nested if deep == "message" else json.dumps(message))
