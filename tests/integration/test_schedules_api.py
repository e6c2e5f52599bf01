"""Schedules through the native API on moto: shapes, errors, scopes, the minute tick firing them
(one run per fire time, skipped while paused) and its round trips."""
from __future__ import annotations

import pytest

from chalicelib import wiring
from chalicelib.service import schedules as service
from chalicelib.ticker import minute_tick
from tests.integration.test_operations_api import ISO, as_user, assert_error, create

BASE = "/api/pipelines/web/schedules"


def token(client, scopes, pipelines=None):
    body = {"name": f"t-{'-'.join(scopes)}-{len(pipelines or [])}", "scopes": scopes}
    if pipelines is not None:
        body["pipelines"] = pipelines
    response = client.post("/api/tokens", body)
    assert response.status_code == 201, response.json
    return response.json["token"]


@pytest.fixture
def web(client):
    return create(client, ["BUILD", "UNIT_TEST"])


def test_create_get_list_patch_delete(client, web, clock):
    response = client.post(BASE, {"cron": "0 9 * * MON-FRI", "timeZone": "Europe/Paris",
                                  "variables": {"ENV": "prod"}, "description": "weekday builds"},
                           headers=as_user(client, "alice"))
    assert response.status_code == 201, response.json
    created = response.json
    assert response.headers["Location"] == f"{BASE}/{created['id']}"
    assert created == {
        "id": created["id"], "pipeline": "web", "cron": "0 9 * * MON-FRI", "timeZone": "Europe/Paris",
        "enabled": True, "variables": {"ENV": "prod"}, "description": "weekday builds",
        "nextFireAt": created["nextFireAt"], "lastFiredAt": None, "lastRunId": None, "lastSkipped": None,
        "createdAt": created["createdAt"], "createdBy": "alice", "updatedAt": created["updatedAt"],
    }
    assert ISO.match(created["nextFireAt"]) and created["nextFireAt"] > created["createdAt"]
    assert client.get(f"{BASE}/{created['id']}").json == created
    assert client.get(BASE).json == {"items": [created]}

    response = client.patch(f"{BASE}/{created['id']}", {"enabled": False})
    assert response.status_code == 200
    assert (response.json["enabled"], response.json["nextFireAt"]) == (False, None)
    response = client.patch(f"{BASE}/{created['id']}", {"enabled": True, "cron": "30 2 * * *",
                                                          "timeZone": "UTC"})
    assert (response.json["cron"], response.json["nextFireAt"][11:]) == ("30 2 * * *", "02:30:00.000Z")

    response = client.delete(f"{BASE}/{created['id']}")
    assert response.status_code == 200 and response.json["id"] == created["id"]
    assert_error(client.get(f"{BASE}/{created['id']}"), 404, "not_found")
    assert_error(client.delete(f"{BASE}/{created['id']}"), 404, "not_found")
    assert client.get(BASE).json == {"items": []}


@pytest.mark.parametrize(("body", "field", "message"), [
    ({"cron": "61 * * * *"}, "cron", "minute: 61 is out of range 0-59"),
    ({"cron": "* * * *"}, "cron", "has 5 fields"),
    ({"cron": "0 0 30 2 *"}, "cron", "never fires"),
    ({"cron": "* * * * *", "timeZone": "Mars/Olympus"}, "timeZone", "IANA time zone"),
    ({"cron": "* * * * *", "timeZone": "../../etc/passwd"}, "timeZone", "IANA time zone"),
    ({"cron": "* * * * *", "enabled": "true"}, "enabled", "boolean"),
    ({"cron": "* * * * *", "variables": {"1bad": "x"}}, "variables.1bad.[key]", "pattern"),
    ({"cron": "* * * * *", "owner": "me"}, "owner", "Extra inputs"),
])
def test_bad_bodies_are_422_naming_the_field_and_change_nothing(client, web, body, field, message):
    response = client.post(BASE, body)
    assert_error(response, 422, "validation_failed")
    details = response.json["error"]["details"]
    assert [d["field"] for d in details] == [field] and message in details[0]["message"], details
    assert client.get(BASE).json == {"items": []}


def test_bad_patches(client, web):
    schedule = client.post(BASE, {"cron": "* * * * *"}).json
    for body in ({}, {"enabled": None}, {"cron": "* * * 0 *"}):
        assert_error(client.patch(f"{BASE}/{schedule['id']}", body), 422, "validation_failed")
    assert_error(client.request("PATCH", f"{BASE}/{schedule['id']}", raw="{not json"), 400, "bad_request")
    assert client.get(f"{BASE}/{schedule['id']}").json == schedule


def test_unknown_pipelines_and_ids_are_404(client, web):
    assert_error(client.post("/api/pipelines/never-ran/schedules", {"cron": "* * * * *"}), 404, "not_found")
    assert_error(client.get("/api/pipelines/never-ran/schedules"), 404, "not_found")
    for schedule_id in ("sch_00000000000000000000", "nope", "sch_%00"):
        assert_error(client.get(f"{BASE}/{schedule_id}"), 404, "not_found")
        assert_error(client.patch(f"{BASE}/{schedule_id}", {"enabled": False}), 404, "not_found")


def test_scopes_as_pause_read_lists_operate_changes_limited_reach_only_their_pipelines(client, web):
    create(client, ["BUILD"], pipeline="api")
    schedule = client.post(BASE, {"cron": "* * * * *"}).json
    reader, operator = token(client, ["read"]), token(client, ["operate"], ["web"])
    other = token(client, ["operate", "read"], ["api"])
    assert client.get(BASE, auth=reader).status_code == 200
    assert_error(client.post(BASE, {"cron": "* * * * *"}, auth=reader), 403, "forbidden")
    assert_error(client.patch(f"{BASE}/{schedule['id']}", {"enabled": False}, auth=reader), 403, "forbidden")
    assert_error(client.delete(f"{BASE}/{schedule['id']}", auth=reader), 403, "forbidden")
    assert client.post(BASE, {"cron": "0 * * * *"}, auth=operator).status_code == 201
    assert client.patch(f"{BASE}/{schedule['id']}", {"enabled": False}, auth=operator).status_code == 200
    for method, path in (("GET", BASE), ("POST", BASE), ("GET", f"{BASE}/{schedule['id']}"),
                         ("DELETE", f"{BASE}/{schedule['id']}")):
        assert_error(client.request(method, path, {"cron": "* * * * *"} if method == "POST" else None,
                                    auth=other), 404, "not_found")
    assert client.post("/api/pipelines/api/schedules", {"cron": "* * * * *"}, auth=other).status_code == 201
    assert_error(client.get(BASE, auth=None), 401, "unauthorized")
    assert len(client.get(BASE).json["items"]) == 2


def test_the_minute_tick_fires_each_fire_time_once(client, web, clock, ddb_calls):
    schedule = client.post(BASE, {"cron": "* * * * *", "variables": {"ENV": "prod"}},
                           headers=as_user(client, "alice")).json
    clock.advance(120)
    ddb_calls.clear()
    minute_tick(wiring.context())
    tick = dict(ddb_calls)
    fired = client.get(f"{BASE}/{schedule['id']}").json
    run = client.get(f"/api/runs/{fired['lastRunId']}").json
    assert (run["counter"], run["source"], run["actor"], run["variables"]) == (2, "schedule", "alice",
                                                                                 {"ENV": "prod"})
    assert run["trigger"] == f"schedule {schedule['id']} (* * * * * UTC)"
    assert fired["lastFiredAt"] == schedule["nextFireAt"]
    assert fired["nextFireAt"] > clock.now().isoformat()[:16]
    # sweep: one Query per stage shard and one of the concurrency groups with waiting runs;
    # schedules: the due Query, GetItem schedule + GetItem link, the counter's UpdateItem, the run's
    # transaction (run, stages, link), the schedule's PutItem
    assert tick == {"Query": 4 + 1 + 1, "GetItem": 2, "UpdateItem": 1, "TransactWriteItems": 1, "PutItem": 1}
    ddb_calls.clear()
    assert service.fire_due(wiring.context()).due == 0  # a second tick in the same minute
    assert dict(ddb_calls) == {"Query": 1}
    assert [r["counter"] for r in client.get("/api/runs?pipeline=web").json["items"]] == [2, 1]


def test_a_paused_pipeline_skips_with_a_note(client, web, clock):
    schedule = client.post(BASE, {"cron": "*/5 * * * *"}).json
    assert client.post("/api/pipelines/web/pause", {"cause": "freeze"}).status_code == 200
    clock.advance(600)
    report = service.fire_due(wiring.context())
    assert report.outcomes == {"skipped": 1}
    skipped = client.get(f"{BASE}/{schedule['id']}").json
    assert skipped["lastSkipped"] == {"at": schedule["nextFireAt"], "reason": "pipeline_paused",
                                      "message": "pipeline 'web' is paused; it accepts no new runs"}
    assert skipped["lastRunId"] is None and skipped["nextFireAt"] > schedule["nextFireAt"]
    assert [r["counter"] for r in client.get("/api/runs?pipeline=web").json["items"]] == [1]


def test_the_openapi_document_describes_the_schedule_routes(client):
    document = client.get("/openapi.json", auth=None).json
    paths = document["paths"]
    assert set(paths[BASE.replace("web", "{pipeline}")]) >= {"get", "post"}
    one = paths["/api/pipelines/{pipeline}/schedules/{schedule_id}"]
    assert set(one) >= {"get", "patch", "delete"}
    post = paths["/api/pipelines/{pipeline}/schedules"]["post"]
    assert set(post["responses"]) >= {"201", "401", "403", "404", "422"}
    schemas = document["components"]["schemas"]
    assert {"CreateScheduleIn", "PatchScheduleIn", "ScheduleOut", "ScheduleListOut"} <= set(schemas)
    assert schemas["PatchScheduleIn"]["minProperties"] == 1


def test_each_firing_is_an_event_on_the_stream_fired_or_skipped_and_nothing_else_is(client, web, clock):
    """``schedule.fired`` names the run the firing created (whose own run event follows, as for
    any new run); ``schedule.skipped`` says why none was; creating, editing or disabling a
    schedule is no event."""
    from chalicelib.domain.events import RUN_CHANGED, SCHEDULE_FIRED, SCHEDULE_SKIPPED, SubscriptionFilter
    from chalicelib.integrations.cdevents import to_cdevent
    from chalicelib.store.stream import state_change
    from tests.fixtures import StreamReader

    stream = StreamReader(wiring.context().settings.table_name)
    stream.read()

    def events():
        return [c for c in (state_change(r, clock.now()) for r in stream.read()) if c is not None]

    schedule = client.post(BASE, {"cron": "*/5 * * * *", "timeZone": "Europe/Paris"}).json
    assert client.patch(f"{BASE}/{schedule['id']}", {"description": "every five minutes"}).status_code == 200
    assert events() == []
    clock.advance(300)
    service.fire_due(wiring.context())
    changes = events()
    fired = next(c for c in changes if c.type == SCHEDULE_FIRED)
    assert fired.run_id == "web:2" and fired.pipeline == "web"
    assert fired.as_dict()["schedule"] == {"id": schedule["id"], "cron": "*/5 * * * *",
                                           "timeZone": "Europe/Paris", "at": schedule["nextFireAt"]}
    assert [(c.type, c.run_id) for c in changes if c.type == RUN_CHANGED] == [(RUN_CHANGED, "web:2")]

    assert client.post("/api/pipelines/web/pause", {"cause": "freeze"}).status_code == 200
    stream.read()
    clock.advance(300)
    service.fire_due(wiring.context())
    (skipped,) = events()
    assert (skipped.type, skipped.run_id, skipped.new_status) == (SCHEDULE_SKIPPED, None, None)
    assert skipped.as_dict()["schedule"]["reason"] == "pipeline_paused"
    assert skipped.as_dict()["runId"] is None
    assert SubscriptionFilter(events=("schedule.skipped",), pipelines=("web",)).matches(skipped)
    assert to_cdevent(skipped) is None and to_cdevent(fired) is None  # CDEvents has no word for them
    assert client.patch(f"{BASE}/{schedule['id']}", {"enabled": False}).status_code == 200
    assert events() == []


def test_the_list_the_dashboard_polls_answers_304_while_unchanged_for_a_getitem_and_a_query(
        client, web, ddb_calls):
    schedule = client.post(BASE, {"cron": "0 9 * * *"}).json
    ddb_calls.clear()
    first = client.get(BASE)
    assert dict(ddb_calls) == {"GetItem": 1, "Query": 1}  # the pipeline (404 if unknown), its schedules
    tag = first.headers["ETag"]
    assert client.get(BASE, headers={"If-None-Match": tag}).status_code == 304
    assert client.patch(f"{BASE}/{schedule['id']}", {"enabled": False}).status_code == 200
    changed = client.get(BASE, headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.json["items"][0]["enabled"] is False
