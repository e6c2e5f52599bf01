"""Concurrency groups on the change stream (moto's stream, read as Lambda's poller does): a run
born waiting is one run event to QUEUED, its promotion QUEUED -> IDLE, a run superseded one to
CANCELLED; the group item itself publishes nothing."""
from __future__ import annotations

from tests.integration.test_outbox import lam, publish, published, settings  # noqa: F401 (fixtures)

RUN, STAGE = "stagetrack.run.status-changed", "stagetrack.stage.status-changed"


def test_queue_promotion_and_supersede_are_run_status_events(lam, client):  # noqa: F811
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    client.put("/api/pipelines/web/concurrency", {"mode": "QUEUED"})
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    client.patch("/api/stages/web:2:1", {"status": "IN_PROGRESS"})
    client.patch("/api/stages/web:2:1", {"status": "SUCCESS"})  # web:3 starts by itself
    client.put("/api/pipelines/web/concurrency", {"mode": "SUPERSEDED"})
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})  # cancels web:3
    publish(lam)
    events = [e for e in published() if e[1] != "web:1"]
    assert sorted(events, key=repr) == sorted([
        (RUN, "web:2", None, None, "IDLE", None),
        (RUN, "web:3", None, None, "QUEUED", None),  # born waiting
        (STAGE, "web:2", "web:2:1", "IDLE", "IN_PROGRESS", 1),
        (RUN, "web:2", None, "IDLE", "IN_PROGRESS", None),
        (STAGE, "web:2", "web:2:1", "IN_PROGRESS", "SUCCESS", 1),
        (RUN, "web:2", None, "IN_PROGRESS", "SUCCESS", None),
        (RUN, "web:3", None, "QUEUED", "IDLE", None),  # promoted
        (RUN, "web:4", None, None, "IDLE", None),
        (STAGE, "web:3", "web:3:1", "IDLE", "CANCELLED", 1),  # superseded, in web:4's transaction
        (RUN, "web:3", None, "IDLE", "CANCELLED", None),
    ], key=repr)


def test_a_run_replaced_in_a_newest_queue_is_a_run_cancel_event_with_its_reason(lam, client):  # noqa: F811
    import json

    from tests.integration.test_outbox import TAP, receive

    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    client.put("/api/pipelines/web/concurrency", {"mode": "QUEUED", "queue": "NEWEST"})
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})  # web:2 holds the group
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})  # web:3 waits
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})  # web:4 replaces web:3
    publish(lam)
    events = [json.loads(m["Body"]) for m in receive(TAP, 100)]
    mine = sorted(((e["detail-type"], e["detail"]["runId"], e["detail"]["stageId"], e["detail"]["oldStatus"],
                    e["detail"]["newStatus"]) for e in events if e["detail"]["runId"] in ("web:3", "web:4")),
                  key=repr)
    assert mine == sorted([
        (RUN, "web:3", None, None, "QUEUED"),
        (RUN, "web:4", None, None, "QUEUED"),
        (STAGE, "web:3", "web:3:1", "IDLE", "CANCELLED"),  # in web:4's transaction
        (RUN, "web:3", None, "QUEUED", "CANCELLED"),
    ], key=repr)
    cancel = next(e["detail"] for e in events if e["detail"]["runId"] == "web:3"
                  and e["detail-type"] == RUN and e["detail"]["newStatus"] == "CANCELLED")
    assert cancel["cancellation"] == {"by": "bootstrap admin", "at": cancel["cancellation"]["at"],
                                      "reason": "replaced by run web:4", "stageId": None, "force": True}
    assert all("cancellation" not in e["detail"] for e in events if e["detail"]["newStatus"] != "CANCELLED")
