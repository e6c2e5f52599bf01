"""POST/GET/DELETE /api/subscriptions and GET /api/subscriptions/{id}/deliveries (admin)."""
from __future__ import annotations

import pytest

from chalicelib.adapters.secretbox import SecretBox, SecretUnreadable
from chalicelib.domain.errors import ValidationFailed
from chalicelib.domain.events import check_subscriber_url
from chalicelib.service.ports import DeliveryAttempt
from chalicelib.settings import Settings
from tests.fixtures.backends import current_items

URL = "https://hooks.example.com/stagetrack"


def test_create_shows_the_secret_once_and_stores_it_sealed(client, capsys):
    response = client.post("/api/subscriptions", {"url": URL, "events": ["stage.status-changed"],
                                                  "pipelines": ["web"], "statuses": ["FAILURE", "SUCCESS"],
                                                  "description": "chat notifications"})
    assert response.status_code == 201, response.json
    body = response.json
    assert response.headers["Location"] == f"/api/subscriptions/{body['id']}"
    assert response.headers["Cache-Control"] == "no-store"
    assert body["id"].startswith("sub_") and body["secret"].startswith("whsec_")
    assert (body["url"], body["events"], body["pipelines"], body["statuses"]) == (
        URL, ["stage.status-changed"], ["web"], ["FAILURE", "SUCCESS"])
    shown = client.get(f"/api/subscriptions/{body['id']}").json
    assert "secret" not in shown and shown["description"] == "chat notifications"
    assert [s["id"] for s in client.get("/api/subscriptions").json["items"]] == [body["id"]]
    stored = current_items().subscription.get("SUBSCRIPTIONS", f"SUB#{body['id']}")
    assert stored.secret.startswith("v1.") and body["secret"] not in stored.secret
    assert body["secret"] not in capsys.readouterr().out


def test_the_format_is_stagetrack_unless_cdevents_is_asked_for_and_shown_in_every_view(client):
    plain = client.post("/api/subscriptions", {"url": URL, "events": ["*"]}).json
    cd = client.post("/api/subscriptions", {"url": URL, "events": ["*"], "format": "cdevents"})
    assert cd.status_code == 201, cd.json
    cd = cd.json
    explicit = client.post("/api/subscriptions", {"url": URL, "events": ["*"], "format": "stagetrack"}).json
    assert (plain["format"], cd["format"], explicit["format"]) == ("stagetrack", "cdevents", "stagetrack")
    assert client.get(f"/api/subscriptions/{cd['id']}").json["format"] == "cdevents"
    assert client.get(f"/api/subscriptions/{plain['id']}").json["format"] == "stagetrack"
    listed = {s["id"]: s["format"] for s in client.get("/api/subscriptions").json["items"]}
    assert listed == {plain["id"]: "stagetrack", cd["id"]: "cdevents", explicit["id"]: "stagetrack"}
    assert current_items().subscription.get("SUBSCRIPTIONS", f"SUB#{cd['id']}").payload_format == "cdevents"
    assert client.delete(f"/api/subscriptions/{cd['id']}").json["format"] == "cdevents"


def test_a_subscription_stored_before_formats_existed_is_a_stagetrack_one(client):
    body = client.post("/api/subscriptions", {"url": URL, "events": ["*"], "format": "cdevents"}).json
    item = current_items().subscription.get("SUBSCRIPTIONS", f"SUB#{body['id']}")
    item.update(actions=[current_items().subscription.payload_format.remove()])
    assert current_items().subscription.get("SUBSCRIPTIONS", f"SUB#{body['id']}").payload_format is None
    assert client.get(f"/api/subscriptions/{body['id']}").json["format"] == "stagetrack"


def test_a_secret_of_the_subscribers_choosing_is_used(client):
    chosen = "my-receiver-shared-secret-0123456789"
    body = client.post("/api/subscriptions", {"url": URL, "events": ["*"], "secret": chosen}).json
    assert body["secret"] == chosen


def test_delete(client):
    body = client.post("/api/subscriptions", {"url": URL, "events": ["*"]}).json
    assert client.delete(f"/api/subscriptions/{body['id']}").json["id"] == body["id"]
    assert client.delete(f"/api/subscriptions/{body['id']}").status_code == 404
    assert client.get(f"/api/subscriptions/{body['id']}").status_code == 404
    assert client.get(f"/api/subscriptions/{body['id']}/deliveries").status_code == 404
    assert client.get("/api/subscriptions").json["items"] == []


def test_subscriptions_are_admin_only(client):
    operate = client.post("/api/tokens", {"name": "ci", "scopes": ["operate"]}).json["token"]
    assert client.post("/api/subscriptions", {"url": URL, "events": ["*"]}, auth=operate).status_code == 403
    assert client.get("/api/subscriptions", auth=operate).status_code == 403
    assert client.get("/api/subscriptions", auth=None).status_code == 401


@pytest.mark.parametrize("body, field", [
    ({"url": URL, "events": []}, "events"),
    ({"url": URL, "events": ["run.deleted"]}, "events.0"),
    ({"url": URL}, "events"),
    ({"url": URL, "events": ["*"], "pipelines": ["a:b"]}, "pipelines.0"),
    ({"url": URL, "events": ["*"], "statuses": ["DONE"]}, "statuses.0"),
    ({"url": URL, "events": ["*"], "secret": "short"}, "secret"),
    ({"url": URL, "events": ["*"], "extra": True}, "extra"),
    ({"url": "ftp://hooks.example.com/x", "events": ["*"]}, "url"),
    ({"url": "http://hooks.example.com/x", "events": ["*"]}, "url"),
    ({"url": "https://127.0.0.1/x", "events": ["*"]}, "url"),
    ({"url": "https://localhost/x", "events": ["*"]}, "url"),
    ({"url": "https://10.1.2.3/x", "events": ["*"]}, "url"),
    ({"url": "https://169.254.169.254/latest/meta-data", "events": ["*"]}, "url"),
    ({"url": "https://[::1]/x", "events": ["*"]}, "url"),
    ({"url": "https://user:pw@hooks.example.com/x", "events": ["*"]}, "url"),
    ({"url": "https://hooks.example.com:99999/x", "events": ["*"]}, "url"),
    ({"url": URL, "events": ["*"], "format": "CDEvents"}, "format"),
    ({"url": URL, "events": ["*"], "format": "cloudevents"}, "format"),
    ({"url": URL, "events": ["*"], "format": None}, "format"),
    ({"url": URL, "events": ["*"], "format": ["cdevents"]}, "format"),
])
def test_bad_subscriptions_are_422_naming_the_field(client, body, field):
    response = client.post("/api/subscriptions", body)
    assert response.status_code == 422, response.json
    assert any(d["field"] == field for d in response.json["error"]["details"]), response.json
    assert client.get("/api/subscriptions").json["items"] == []


def test_local_subscribers_only_with_the_local_setting():
    assert check_subscriber_url("http://127.0.0.1:9999/x", allow_local=True)
    assert check_subscriber_url("http://localhost:9999/x", allow_local=True)
    with pytest.raises(ValidationFailed):
        check_subscriber_url("http://127.0.0.1:9999/x", allow_local=False)
    with pytest.raises(ValidationFailed):
        check_subscriber_url("http://10.0.0.1/x", allow_local=True)  # local means this machine only
    assert check_subscriber_url("https://93.184.216.34/hook", allow_local=False)


def test_deliveries_are_listed_newest_first_in_pages(client, ctx, clock):
    subscription = client.post("/api/subscriptions", {"url": URL, "events": ["*"]}).json
    for attempt in range(1, 6):
        ctx.stores.deliveries.record(DeliveryAttempt(
            subscription_id=subscription["id"], delivery_id="dlv_1", event_id="evt_1",
            event_type="stage.status-changed", attempt=attempt, outcome="retrying",
            at=f"2026-03-20T17:1{attempt}:00.000Z", status_code=500, error="HTTP 500", duration_ms=3,
        ), int(clock.now().timestamp()))
    first = client.get(f"/api/subscriptions/{subscription['id']}/deliveries?limit=2").json
    assert [a["attempt"] for a in first["items"]] == [5, 4] and first["nextCursor"]
    second = client.get(
        f"/api/subscriptions/{subscription['id']}/deliveries?limit=2&cursor={first['nextCursor']}"
    ).json
    assert [a["attempt"] for a in second["items"]] == [3, 2]
    other = client.post("/api/subscriptions", {"url": URL, "events": ["*"]}).json
    forged = client.get(f"/api/subscriptions/{other['id']}/deliveries?cursor={first['nextCursor']}")
    assert forged.status_code == 400
    assert client.get(f"/api/subscriptions/{subscription['id']}/deliveries?limit=0").status_code == 400


def test_secrets_open_only_with_the_key_and_the_item_they_were_sealed_for():
    box = SecretBox("key-one")
    sealed = box.seal("whsec_abc", "subscription:sub_1")
    assert box.open(sealed, "subscription:sub_1") == "whsec_abc"
    assert sealed != box.seal("whsec_abc", "subscription:sub_1")  # a fresh nonce each time
    with pytest.raises(SecretUnreadable):
        box.open(sealed, "subscription:sub_2")  # copied onto another item
    with pytest.raises(SecretUnreadable):
        SecretBox("key-two").open(sealed, "subscription:sub_1")
    rotated = SecretBox("key-two", previous=("key-one",))
    assert rotated.open(sealed, "subscription:sub_1") == "whsec_abc"
    assert rotated.seal("x", "c").split(".")[1] != sealed.split(".")[1]  # new values use the new key
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(SecretUnreadable):
        box.open(tampered, "subscription:sub_1")
    assert "key-one" not in repr(box) and "key-one" not in repr(Settings(secret_key="key-one"))


def test_webhooks_and_their_admin_api_call_only_what_the_api_policy_allows(client, monkeypatch):
    from tests.fixtures import allowed_actions, iam_actions, load, make_source, post_github

    with iam_actions(monkeypatch) as actions:
        secret = make_source(client, "github", "github-main")
        post_github(client, "workflow_job", load("github_workflow_job_queued"), secret=secret, delivery="d-1")
        post_github(
            client, "workflow_job", load("github_workflow_job_completed"), secret=secret, delivery="d-2"
        )
        post_github(
            client, "workflow_job", load("github_workflow_job_completed"), secret=secret, delivery="d-2"
        )
        client.get("/api/sources")
        client.delete("/api/sources/github-main")
        created = client.post("/api/subscriptions", {"url": URL, "events": ["*"]}).json
        client.get(f"/api/subscriptions/{created['id']}/deliveries")
        client.delete(f"/api/subscriptions/{created['id']}")
    assert {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:Query"} <= actions
    assert actions <= allowed_actions("api_handler")


def test_a_limited_admin_manages_only_subscriptions_for_its_own_pipelines(client):
    limited = client.post("/api/tokens", {"name": "web-admin", "scopes": ["admin"],
                                          "pipelines": ["web", "api"]}).json["token"]
    everything = client.post("/api/subscriptions", {"url": URL, "events": ["*"]}).json
    web_ops = client.post("/api/subscriptions", {"url": URL, "events": ["*"],
                                                 "pipelines": ["web", "ops"]}).json
    strays = ("", "?pipeline=web", "?pipeline_name=web", "?runId=web:1", "?stageId=web:1:1")
    for query in strays:
        for body, status in (({"url": URL, "events": ["*"]}, 403),  # every pipeline: broader
                             ({"url": URL, "events": ["*"], "pipelines": ["ops"]}, 404),
                             ({"url": URL, "events": ["*"], "pipelines": ["web", "ops"]}, 404),
                             ({"url": URL, "events": ["*"], "pipelines": ["web", 3, "ops"]}, 404)):
            response = client.post(f"/api/subscriptions{query}", body, auth=limited)
            assert response.status_code == status, (query, body, response.json)
    mine = client.post("/api/subscriptions", {"url": URL, "events": ["*"], "pipelines": ["api"]},
                       auth=limited)
    assert mine.status_code == 201 and mine.json["createdBy"] == "web-admin"
    for query in strays:
        listed = client.get(f"/api/subscriptions{query}", auth=limited)
        assert [s["id"] for s in listed.json["items"]] == [mine.json["id"]]
        for other in (everything, web_ops):
            for path in (f"/api/subscriptions/{other['id']}", f"/api/subscriptions/{other['id']}/deliveries"):
                response = client.get(path + query, auth=limited)
                assert response.status_code == 404, (path, query, response.json)
                assert response.json["error"] == {"code": "not_found",
                                                  "message": f"subscription {other['id']!r} not found"}
            assert client.delete(f"/api/subscriptions/{other['id']}{query}", auth=limited).status_code == 404
    assert client.get(f"/api/subscriptions/{mine.json['id']}/deliveries", auth=limited).json["items"] == []
    assert client.delete(f"/api/subscriptions/{mine.json['id']}", auth=limited).status_code == 200
    left = client.get("/api/subscriptions").json["items"]  # the bootstrap admin sees every one
    assert sorted(s["id"] for s in left) == sorted([everything["id"], web_ops["id"]])
