"""Insights end to end on moto: the table's stream, read as Lambda does, through the outbox
publisher (which also feeds the aggregates), then ``GET /api/insights``; idempotency against a
redelivered batch; the rebuild giving the live figures; the reads of an answer; the policy."""
from __future__ import annotations

import pytest

from chalicelib.settings import Settings
from tests.fixtures import (
    assert_items_allowed,
    iam_actions,
    make_source,
    outbox_lambda,
    post_cdevent,
    variant,
)

DELIVERIES = "https://sqs.us-east-1.amazonaws.com/123456789012/stagetrack-deliveries"
DAY = "2026-03-20"


@pytest.fixture
def settings():
    return Settings(table_name="stagetrack-test", region="us-east-1", delivery_queue_url=DELIVERIES)


@pytest.fixture
def lam(ctx):
    with outbox_lambda(ctx.settings.table_name) as client:
        yield client


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
    assert reached == {"SUBSCRIPTIONS", "INSIGHTS#", "INSIGHTS", "INSMARK#", "RUN#"}  # RUN#: retention


def issue(client, name, scopes, pipelines=None) -> str:
    body = {"name": name, "scopes": scopes, **({"pipelines": pipelines} if pipelines else {})}
    response = client.post("/api/tokens", body)
    assert response.status_code == 201, response.json
    return response.json["token"]


def history_in_three_pipelines(lam, client, clock):
    for pipeline, status in (("web", "SUCCESS"), ("api", "FAILURE"), ("db", "SUCCESS")):
        client.post("/api/runs", {"pipeline": pipeline, "stages": ["BUILD"]})
        finish(client, clock, f"{pipeline}:1:1", status)
    consume(lam)


RANGE = "from=2026-03-20&to=2026-03-20"


def test_a_token_limited_to_some_pipelines_sees_only_those(lam, client, clock, ddb_calls):
    history_in_three_pipelines(lam, client, clock)
    both = issue(client, "web-and-api", ["read"], ["web", "api"])
    ddb_calls.clear()
    mine = insights(client, RANGE, auth=both)  # no pipeline: both of its own, one Query each
    assert ddb_calls["Query"] == 2 and "Scan" not in ddb_calls
    assert mine["runs"] == {"total": 2, "success": 1, "failure": 1, "cancelled": 0, "timedOut": 0}
    assert insights(client, f"pipeline=api&{RANGE}", auth=both)["runs"]["failure"] == 1
    hidden = client.get(f"/api/insights?pipeline=db&{RANGE}", auth=both)
    assert hidden.status_code == 404 and hidden.json["error"]["code"] == "not_found"
    ddb_calls.clear()
    everything = insights(client, RANGE)  # the admin: the every-pipeline items, one Query
    assert ddb_calls["Query"] == 1
    assert everything["runs"]["total"] == 3
    assert client.get(f"/api/insights?{RANGE}", auth=None).status_code == 401


@pytest.mark.parametrize("query", [
    "from=2026-03-21&to=2026-03-20",          # from after to
    "from=2025-03-19&to=2026-03-20",          # 367 days: more than 366
    "from=2026-02-30",                        # not a date
    "from=20.3.2026",                         # not ISO-8601
    "granularity=month",
    "pipeline=no%20spaces",
    "stage=" + "x" * 201,
    "stage=a%0Ab",                            # a control character
    "days=7",                                 # unknown parameter
])
def test_bad_queries_are_400_with_a_json_error(client, query):
    response = client.get(f"/api/insights?{query}")
    assert response.status_code == 400, (query, response.json)
    assert set(response.json) == {"error"} and response.json["error"]["code"] == "bad_request"


def test_the_first_and_last_days_there_are_answer_too(client):
    assert insights(client, "pipeline=web&to=0001-01-03")["from"] == "0001-01-01"
    body = insights(client, "pipeline=web&from=9999-12-01&to=9999-12-31&granularity=week")
    assert body["series"][-1]["start"] == "9999-12-27"


def test_the_default_range_is_the_last_30_days_and_weeks_start_on_monday(client, clock):
    body = insights(client, "pipeline=web")
    assert (body["from"], body["to"]) == ("2026-02-19", "2026-03-20")
    weekly = insights(client, "pipeline=web&from=2026-03-01&to=2026-03-20&granularity=week")
    assert [p["start"] for p in weekly["series"]] == ["2026-03-01", "2026-03-02", "2026-03-09", "2026-03-16"]


def test_a_senders_stage_name_can_be_asked_for(client):
    body = insights(client, f"pipeline=web&stage=build%20(ubuntu-latest,%203.12)&{RANGE}")
    assert body["stages"] == [] and body["runs"]["total"] == 0


def test_a_stage_filter_gives_that_stages_figures(lam, client, clock):
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD", "UNIT_TEST"]})
    finish(client, clock, "web:1:1", seconds=100)
    finish(client, clock, "web:1:2", "FAILURE", seconds=4)
    consume(lam)
    body = insights(client, f"pipeline=web&stage=UNIT_TEST&{RANGE}")
    assert body["runs"] == {"total": 1, "success": 0, "failure": 1, "cancelled": 0, "timedOut": 0}
    assert [s["name"] for s in body["stages"]] == ["UNIT_TEST"]
    assert body["duration"]["mean"] == 4.0


def test_an_answer_reads_only_the_day_items_of_its_range(lam, client, clock, ddb_calls):
    """History outside the range, however long, is not read: one Query of the range's days."""
    for day in range(5):
        client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD", "UNIT_TEST"]})
        finish(client, clock, f"web:{day + 1}:1")
        finish(client, clock, f"web:{day + 1}:2")
        clock.advance(86_400)
    consume(lam)
    ddb_calls.clear()
    response = client.get("/api/insights?pipeline=web&from=2026-03-22&to=2026-03-23")
    assert response.json["runs"]["total"] == 2
    assert dict(ddb_calls) == {"Query": 1}
    from chalicelib import wiring

    read = wiring.context().stores.insights.read_days("web", "2026-03-22", "2026-03-23")
    assert read.items_read == 2 * 3  # per day: the runs' item and one per stage name


def test_the_rebuild_gives_the_live_figures(lam, client, clock, ctx):
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD", "DEPLOY_PROD"],
                              "commit": {"hash": "b" * 40, "committedAt": "2026-03-20T16:00:00.000Z"}})
    finish(client, clock, "web:1:1", "FAILURE")
    client.post("/api/stages/web:1:1/retry")
    clock.advance(7)
    finish(client, clock, "web:1:1", seconds=50)
    finish(client, clock, "web:1:2", seconds=20)
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD", "DEPLOY_PROD"]})
    finish(client, clock, "web:2:1", "FAILURE")
    clock.advance(600)
    client.post("/api/runs", {"pipeline": "api", "stages": ["BUILD"]})
    finish(client, clock, "api:1:1", "TIMED_OUT")
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    finish(client, clock, "web:3:1")
    consume(lam)
    queries = [f"pipeline=web&{RANGE}", f"pipeline=api&{RANGE}", RANGE, f"pipeline=web&stage=BUILD&{RANGE}"]
    live = [insights(client, q) for q in queries]
    assert live[0]["dora"]["changeFailureRate"] == 1.0 and live[0]["mttrSeconds"] is not None
    from chalicelib.service.insights import rebuild

    report = rebuild(ctx)
    assert (report.pipelines, report.runs) == (2, 4)
    assert [insights(client, q) for q in queries] == live


@pytest.mark.ddb_local
def test_make_runs_local_outbox_keeps_the_aggregates_and_expiries_current(local_ctx, clock):
    """`make run`'s path: DynamoDB Local's stream read by StreamTail, one tick of the local
    outbox thread, and the answer has it (DynamoDB Local also checks the requests' syntax and
    the transactions, which moto accepts more loosely); the finished run got its expiry too."""
    import json

    import boto3

    from chalicelib.adapters.local import MemoryQueue, StreamTail
    from chalicelib.domain.schemas import CreateRunIn, InsightsQuery, PatchStageIn
    from chalicelib.events.outbound import LocalOutbox
    from chalicelib.service import insights as service
    from chalicelib.service import runs
    from chalicelib.service.retention import expiry_of
    from chalicelib.store.models import RUN_SK, run_pk

    settings = local_ctx.settings
    tail = StreamTail(settings.table_name, settings.region, settings.dynamodb_endpoint)
    run = runs.create_run(local_ctx, CreateRunIn.model_validate_json(
        '{"pipeline": "web", "stages": ["BUILD", "DEPLOY_PROD"]}'))
    for stage in run.stages:
        for status in ("IN_PROGRESS", "SUCCESS"):
            clock.advance(30)
            change = PatchStageIn.model_validate_json(json.dumps({"status": status}))
            runs.patch_stage(local_ctx, stage.id, change)
    local = LocalOutbox(local_ctx, tail, queue=MemoryQueue(now=lambda: clock.now().timestamp()))
    local.tick()
    local.tick()  # nothing new: nothing added twice
    day = clock.now().date().isoformat()
    body = service.answer(local_ctx, None, InsightsQuery.model_validate(
        {"pipeline": "web", "from": day, "to": day})).body
    assert body["runs"]["total"] == 1 and body["dora"]["deploymentFrequency"] == 1.0
    assert body["duration"]["mean"] == 90.0 and [s["runs"] for s in body["stages"]] == [1, 1]
    table = boto3.client("dynamodb", region_name=settings.region, endpoint_url=settings.dynamodb_endpoint)
    item = table.get_item(TableName=settings.table_name, Key={"pk": {"S": run_pk(run.run.id)},
                                                              "sk": {"S": RUN_SK}})["Item"]
    assert int(item["expires_at"]["N"]) == expiry_of(item["ended_at"]["S"], settings.run_retention_days)


@pytest.mark.ddb_local
def test_consumers_racing_on_dynamodb_local_count_each_record_once(local_ctx, clock):
    """Four consumers apply the same records at once (a redelivery overlapping the first
    delivery, shards of one pipeline): the markers' conditions and the state's version keep every
    count exact, and conflicting transactions are sent again."""
    from concurrent.futures import ThreadPoolExecutor
    from datetime import timedelta

    from chalicelib.domain.insights import FinishedAttempt, FinishedRun
    from chalicelib.domain.status import StageStatus as S
    from chalicelib.service import insights as service

    now = clock.now()
    attempts = [FinishedAttempt(pipeline="web", run_id=f"web:{n}", position=1, name="build",
                                status=S.FAILURE if n % 4 == 0 else S.SUCCESS, attempt=1, first_attempt=1,
                                created_at=now, started_at=now, ended_at=now + timedelta(seconds=n))
                for n in range(1, 21)]
    finished = [FinishedRun(pipeline="web", run_id=a.run_id, status=a.status, created_at=now, started_at=now,
                            ended_at=a.ended_at, order=2) for a in attempts]

    def consume_all(_):
        for attempt in attempts:
            service.add_attempt(local_ctx, attempt)
        for run in finished:
            service.add_run(local_ctx, run)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(consume_all, range(4)))
    day = now.date().isoformat()
    read = local_ctx.stores.insights.read_days("web", day, day).items
    runs = next(i.tally for i in read if i.stage is None)
    build = next(i.tally for i in read if i.stage == "build")
    assert (runs["n"], runs["SUCCESS"], runs["FAILURE"]) == (20, 15, 5)
    assert (build["n"], build["SUCCESS"], build["FAILURE"]) == (20, 15, 5)
    every = {i.stage: i.tally["n"] for i in local_ctx.stores.insights.read_days(None, day, day).items}
    assert every == {None: 20, "build": 20}


def test_a_stage_failing_then_passing_on_the_same_commit_is_flaky(lam, client, clock, ctx):
    commit = {"hash": "C" * 40}
    for counter, status in ((1, "FAILURE"), (2, "SUCCESS"), (3, "SUCCESS")):
        client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"], "commit": commit})
        finish(client, clock, f"web:{counter}:1", status)
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"], "commit": {"hash": "d" * 40}})
    finish(client, clock, "web:4:1")
    consume(lam)
    build = insights(client, f"pipeline=web&{RANGE}")["stages"][0]
    assert (build["runs"], build["flakyRate"]) == (4, 0.25)  # run 2 only: run 3 follows a success
    from chalicelib.service.insights import rebuild

    rebuild(ctx)
    assert insights(client, f"pipeline=web&{RANGE}")["stages"][0] == build


# ---- incidents and rollbacks through the CDEvents webhook -----------------------------------------

def incident(kind: str, at: str, **changes) -> dict:
    changes = {"context.timestamp": at, "subject.content.service.id": "web", **changes}
    return variant(f"cdevents_incident_{kind}", **changes)


def deploy(client, clock, counter: int) -> None:
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD", "DEPLOY_PROD"]})
    finish(client, clock, f"web:{counter}:1")
    finish(client, clock, f"web:{counter}:2", seconds=20)


def test_an_incident_fails_the_deployment_once_and_its_resolution_is_the_restore(lam, client, clock, ctx,
                                                                                   ddb_calls):
    token = make_source(client, "cdevents", "pagerduty")
    deploy(client, clock, 1)  # deployed at 17:17:43.760
    consume(lam)
    before = insights(client, f"pipeline=web&{RANGE}")["dora"]
    assert (before["changeFailureRate"], before["timeToRestoreSeconds"]["p50"]) == (0.0, None)
    ddb_calls.clear()
    detected = post_cdevent(client, incident("detected", "2026-03-20T18:00:00.000Z"), token=token,
                            source="pagerduty")
    assert detected.status_code == 200
    assert detected.json == {"result": "applied", "event": "incident.detected", "pipeline": "web"}
    # the source's secret, the pipeline, its state; the delivery's receipt claimed and completed;
    # one transaction (the signal's item, the state, the pipeline's and every pipeline's day)
    assert dict(ddb_calls) == {"GetItem": 3, "PutItem": 1, "UpdateItem": 1, "TransactWriteItems": 1}
    assert insights(client, f"pipeline=web&{RANGE}")["dora"]["changeFailureRate"] == 1.0
    # the same CDEvent again (a redelivery) is the first answer; under another delivery receipt
    # (its receipt expired), the kept signal still counts it once
    again = post_cdevent(client, incident("detected", "2026-03-20T18:00:00.000Z"), token=token,
                         source="pagerduty")
    assert again.headers["Idempotent-Replayed"] == "true"
    from chalicelib.domain.insights import SignalReceived
    from chalicelib.service import insights as service

    repeat = service.receive_signal(ctx, SignalReceived(
        kind="incident.detected", key='["/monitoring/prod1", "F4BD2B55-B6F6-4F44-AF72-BD2D0E7A8708"]',
        at=clock.now(), incident="incident-123", candidates=("web",), environment="production",
        summary="incident.detected"))
    assert repeat["result"] == "unchanged"
    resolved = post_cdevent(client, incident("resolved", "2026-03-20T18:30:00.000Z"), token=token,
                            source="pagerduty")
    assert resolved.json["result"] == "applied"
    dora = insights(client, f"pipeline=web&{RANGE}")["dora"]
    assert dora["changeFailureRate"] == 1.0
    assert dora["timeToRestoreSeconds"]["p50"] == pytest.approx(1800, rel=0.01)
    every = insights(client, RANGE)["dora"]
    assert every["changeFailureRate"] == 1.0  # the every-pipeline items too
    from chalicelib.service.insights import rebuild

    rebuild(ctx)
    assert insights(client, f"pipeline=web&{RANGE}")["dora"] == dora  # the rebuild reads the kept signals


def test_a_rollback_fails_the_pending_deployment_found_by_the_source_name(lam, client, clock):
    token = make_source(client, "cdevents", "web")  # the rollback's service is no pipeline: the source's is
    deploy(client, clock, 1)
    consume(lam)
    rolled = post_cdevent(client, variant("cdevents_service_rolledback",
                                          **{"context.timestamp": "2026-03-20T18:00:00.000Z"}),
                          token=token, source="web")
    assert rolled.json == {"result": "applied", "event": "service.rolledback", "pipeline": "web"}
    dora = insights(client, f"pipeline=web&{RANGE}")["dora"]
    assert (dora["changeFailureRate"], dora["timeToRestoreSeconds"]["p50"]) == (1.0, None)


@pytest.mark.parametrize("changes, note", [
    ({"subject.content.service.id": "nowhere"},
     "no pipeline named 'nowhere' or 'pagerduty': counted nowhere"),
    ({"subject.content.environment.id": "staging"},
     "environment 'staging' is not production: only production deployments are counted"),
])
def test_an_incident_that_finds_no_production_pipeline_is_accepted_and_counted_nowhere(
        lam, client, clock, changes, note, caplog):
    token = make_source(client, "cdevents", "pagerduty")
    deploy(client, clock, 1)
    consume(lam)
    response = post_cdevent(client, incident("detected", "2026-03-20T18:00:00.000Z", **changes), token=token,
                            source="pagerduty")
    assert response.status_code == 202
    assert response.json == {"result": "ignored", "event": "incident.detected", "notes": [note]}
    assert insights(client, f"pipeline=web&{RANGE}")["dora"]["changeFailureRate"] == 0.0
    assert note in caplog.text


def test_an_incident_with_no_deployment_pending_is_kept_and_says_so(lam, client, clock):
    token = make_source(client, "cdevents", "pagerduty")
    deploy(client, clock, 1)
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    finish(client, clock, "web:2:1")  # another run's success confirms the deployment
    consume(lam)
    response = post_cdevent(client, incident("detected", "2026-03-20T18:00:00.000Z"), token=token,
                            source="pagerduty")
    assert response.status_code == 200 and response.json["notes"] == [
        "no deployment of the pipeline was pending: no change counted as failed"]
    assert insights(client, f"pipeline=web&{RANGE}")["dora"]["changeFailureRate"] == 0.0


@pytest.mark.ddb_local
def test_signals_and_runs_racing_on_dynamodb_local_keep_every_count(local_ctx, clock):
    """A deployment's run finishes while the same incident is delivered four times at once and a
    rollback arrives: the state's version orders them, the signal's item makes the incident count
    once, and whichever comes first after the deployment fails it (once)."""
    from datetime import timedelta

    from chalicelib.domain.insights import INCIDENT_DETECTED, ROLLED_BACK, DeploymentSignal, FinishedRun
    from chalicelib.domain.status import StageStatus as S
    from chalicelib.service import insights as service
    from tests.fixtures.threads import run_threads

    now = clock.now()
    deployed = FinishedRun(pipeline="web", run_id="web:1", status=S.SUCCESS, created_at=now, started_at=now,
                           ended_at=now, order=1, environment="production")
    assert service.add_run(local_ctx, deployed)
    incident = DeploymentSignal(pipeline="web", key='["/pd", "i-1"]', kind=INCIDENT_DETECTED,
                                at=now + timedelta(minutes=1), incident="i-1")
    rollback = DeploymentSignal(pipeline="web", key='["/argo", "r-1"]', kind=ROLLED_BACK,
                                at=now + timedelta(minutes=1))
    applied: list[bool] = []
    targets = {f"incident {n}": (lambda: applied.append(service.add_signal(local_ctx, incident) is not None))
               for n in range(4)}
    targets["rollback"] = lambda: applied.append(service.add_signal(local_ctx, rollback) is not None)
    outcomes = run_threads(targets)
    assert set(outcomes.values()) == {"ok"}, outcomes
    assert sorted(applied) == [False, False, False, True, True]  # the incident once, the rollback once
    day = now.date().isoformat()
    for scope in ("web", None):
        items = local_ctx.stores.insights.read_days(scope, day, day).items
        runs = next(i.tally for i in items if i.stage is None)
        assert (runs["deploys"], runs["failedChanges"]) == (1, 1)
    assert {s.key for s in local_ctx.stores.insights.signals_of("web")} == {incident.key, rollback.key}


@pytest.mark.ddb_local
def test_rebuilds_asked_for_at_once_on_dynamodb_local_start_one(local_ctx):
    from chalicelib.service import insights as service
    from tests.fixtures.threads import run_threads

    launched: list[str] = []
    outcomes = run_threads({f"admin {n}": (lambda: service.start_rebuild(local_ctx, "ops", launched.append))
                            for n in range(4)})
    assert sorted(map(str, outcomes.values())) == ["('conflict', 'rebuild_running')"] * 3 + ["ok"]
    record = local_ctx.stores.insights.rebuild_record()
    assert launched == [record.id] and record.status == "running"
