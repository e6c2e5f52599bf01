"""GET /openapi.json: a valid OpenAPI 3.1 document of every route, true to what the API answers."""
from __future__ import annotations

import jsonschema
import pytest
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from app import app
from chalicelib.api.routing import declared_routes
from chalicelib.domain import auth
from chalicelib.domain.schemas import CreateRunIn


@pytest.fixture
def document(client):
    response = client.get("/openapi.json", auth=None)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    return response.json


def conforms(document, instance, schema):
    registry = Registry().with_resource("urn:doc", Resource.from_contents(document, DRAFT202012))
    if "$ref" in schema:
        schema = {"$ref": "urn:doc" + schema["$ref"]}
    elif "items" in schema and "$ref" in schema["items"]:
        schema = {"type": "array", "items": {"$ref": "urn:doc" + schema["items"]["$ref"]}}
    jsonschema.Draft202012Validator(schema, registry=registry).validate(instance)


def success_schema(document, method, path):
    responses = document["paths"][path][method.lower()]["responses"]
    (code,) = [c for c in responses if c.startswith("2")]
    return int(code), responses[code]["content"]["application/json"]["schema"]


def test_the_document_is_valid_openapi_3_1(document):
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_every_route_is_documented_with_the_scope_it_needs(document):
    routes = set(declared_routes(app))  # HEAD and the 405 fallbacks are not operations of their own
    documented = {(p, m.upper()) for p, ops in document["paths"].items() for m in ops}
    assert documented == routes
    for path, method in routes:
        operation = document["paths"][path][method.lower()]
        scope = app.routes[path][method].view_function.route_spec.scope
        assert operation["x-scope"] == scope
        if scope == auth.PUBLIC:
            assert "security" not in operation
            # the browser session routes take no token header, but check one (body or cookie): 429
            assert ("429" in operation["responses"]) == (path == "/api/session")
        else:
            assert operation["security"] == [{"bearer": []}, {"basic": []}, {"authToken": []}]
            assert {"401", "403", "404", "429"} <= set(operation["responses"])
        if method in ("POST", "PUT", "PATCH"):
            assert "requestBody" in operation


def test_request_bodies_come_from_the_pydantic_models(document):
    body = document["paths"]["/api/runs"]["post"]["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/CreateRunIn"}
    expected = CreateRunIn.model_json_schema(ref_template="#/components/schemas/{model}")
    expected.pop("$defs")
    assert document["components"]["schemas"]["CreateRunIn"] == expected
    assert (
        document["components"]["schemas"]["CreateRunIn"]["properties"]["stages"]["anyOf"][0]["maxItems"] == 50
    )
    query = {p["name"]: p for p in document["paths"]["/api/runs"]["get"]["parameters"]}
    # a search across pipelines since issue 13: pipeline is one filter among others
    assert not query["pipeline"]["required"] and query["limit"]["schema"] == {"maximum": 100, "minimum": 1,
                                                                               "type": "integer"}
    filters = {"status", "branch", "actor", "commit", "source", "createdFrom", "createdTo", "cursor"}
    assert filters <= set(query)


def test_real_responses_conform_to_the_document(client, clock, document):
    """The documented response shapes are checked against what the views really answer."""
    created = client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD", {"type": "DEPLOY_PROD",
                                                                              "approval": "MANUAL"}],
                                        "commit": {"hash": "abcdef1"}, "variables": {"A": "1"}})
    client.patch("/api/stages/web:1:1", {"status": "IN_PROGRESS"})
    clock.advance(1.5)
    token = client.post("/api/tokens", {"name": "doc", "scopes": ["read"], "pipelines": ["web"]})
    calls = [
        ("POST", "/api/runs", created),
        ("GET", "/api/runs/{run_id}", client.get("/api/runs/web:1")),
        ("GET", "/api/runs", client.get("/api/runs?pipeline=web&limit=1")),
        ("GET", "/api/stages", client.get("/api/stages?runId=web:1")),
        ("GET", "/api/stages/{stage_id}", client.get("/api/stages/web:1:1")),
        ("PATCH", "/api/stages/{stage_id}", client.patch("/api/stages/web:1:1", {"status": "SUCCESS"})),
        ("POST", "/api/tokens", token),
        ("GET", "/api/tokens", client.get("/api/tokens")),
        ("DELETE", "/api/tokens/{token_id}", client.delete(f"/api/tokens/{token.json['id']}")),
        ("GET", "/health", client.get("/health", auth=None)),
        ("DELETE", "/api/stages/{stage_id}", client.delete("/api/stages/web:1:2")),
        ("DELETE", "/api/runs/{run_id}", client.delete("/api/runs/web:1")),
    ]
    for method, path, response in calls:
        status, schema = success_schema(document, method, path)
        assert response.status_code == status, (method, path, response.json)
        conforms(document, response.json, schema)
    error = client.get("/api/runs/web:404")
    conforms(document, error.json, document["paths"]["/api/runs/{run_id}"]["get"]["responses"]["404"]
             ["content"]["application/json"]["schema"])


def test_health_and_the_document_are_public_and_read_nothing(client, ddb_calls):
    ddb_calls.clear()
    assert client.get("/health", auth=None).json == {"status": "ok"}
    assert client.get("/openapi.json", auth=None).status_code == 200
    assert dict(ddb_calls) == {}


def test_subscription_formats_are_documented_and_answered_as_documented(client, document):
    schemas = document["components"]["schemas"]
    assert schemas["CreateSubscriptionIn"]["properties"]["format"] == {
        "default": "stagetrack", "enum": ["stagetrack", "cdevents"], "title": "Format", "type": "string"}
    assert schemas["SubscriptionOut"]["properties"]["format"]["enum"] == ["stagetrack", "cdevents"]
    assert "format" in schemas["SubscriptionOut"]["required"]
    created = client.post("/api/subscriptions", {"url": "https://hooks.example.com/cd", "events": ["*"],
                                                  "format": "cdevents"})
    calls = [
        ("POST", "/api/subscriptions", created),
        ("GET", "/api/subscriptions", client.get("/api/subscriptions")),
        ("GET", "/api/subscriptions/{subscription_id}", client.get(created.headers["Location"])),
    ]
    for method, path, response in calls:
        status, schema = success_schema(document, method, path)
        assert response.status_code == status, (method, path, response.json)
        conforms(document, response.json, schema)


def test_documented_shapes_list_every_field_the_views_send(client, document):
    """Out models allow extra fields (responses may grow), so conformance alone would not catch
    a field the document forgot: compare the key sets of real answers with the schemas."""
    schemas = document["components"]["schemas"]
    run = client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]}).json
    client.post("/api/pipelines/web/pause", {"cause": "docs"})
    stage_id = run["stages"][0]["id"]
    for status in ("IN_PROGRESS", "SUCCESS"):
        assert client.patch(f"/api/stages/{stage_id}", {"status": status}).status_code == 200
    assert client.post(f"/api/stages/{stage_id}/retry").status_code == 200
    attempts = client.get(f"/api/stages/{stage_id}/attempts").json
    # ``attempts`` is sent only with ?include=attempts
    answers = {"RunOut": run, "StageOut": client.get(f"/api/stages/{stage_id}?include=attempts").json,
               "AttemptListOut": attempts, "AttemptOut": attempts["items"][0],
               "RunSummaryOut": client.get("/api/runs?pipeline=web").json["items"][0],
               "PipelineStatusOut": client.get("/api/pipelines/web/status").json}
    for name, answer in answers.items():
        queued_only = {"queue"} if name == "RunOut" else set()  # GET /api/runs/{id} of a QUEUED run
        assert set(answer) == set(schemas[name]["properties"]) - queued_only, name


def test_the_finding_answers_list_every_field_their_documented_shapes_do(client, document):
    """GET /api/pipelines and GET /api/approvals (issue 13): the key sets of real answers are
    those of their schemas, down to a recent run, its stages and an approval's run."""
    schemas = document["components"]["schemas"]
    created = client.post("/api/runs", {"pipeline": "web", "stages": [
        "BUILD", {"type": "DEPLOY_PROD", "name": "gate", "approval": "MANUAL"}]}).json
    gate = created["stages"][1]["id"]
    assert client.patch(f"/api/stages/{gate}", {"status": "IN_PROGRESS"}).status_code == 200
    pipelines = client.get("/api/pipelines").json
    approvals = client.get("/api/approvals").json
    answers = {"PipelineListOut": pipelines, "PipelineOverviewOut": pipelines["items"][0],
               "RecentRunOut": pipelines["items"][0]["recentRuns"][0],
               "RecentStageOut": pipelines["items"][0]["recentRuns"][0]["stages"][0],
               "ApprovalListOut": approvals, "ApprovalOut": approvals["items"][0],
               "ApprovalRunOut": approvals["items"][0]["run"], "StageOut": approvals["items"][0]["stage"],
               "RunOut": created}
    for name, answer in answers.items():
        # attempts: only with ?include=attempts; queue: GET /api/runs/{id} of a QUEUED run only
        optional = {"StageOut": {"attempts"}, "RunOut": {"queue"}}.get(name, set())
        assert set(answer) == set(schemas[name]["properties"]) - optional, name
    operations = document["paths"]
    assert operations["/api/pipelines"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] \
        == {"$ref": "#/components/schemas/PipelineListOut"}
    parameters = {p["name"] for p in operations["/api/pipelines"]["get"]["parameters"]}
    assert parameters >= {"limit", "runs", "cursor"}


def test_the_graceful_stop_is_documented(document):
    """Issue 15: the stop's body (graceSeconds), CANCELLING among the statuses, the run's stop
    record and its stages' grace end and run deadline, finally stages at create."""
    stop = document["paths"]["/api/pipelines/{pipeline}/runs/{counter}/stop"]["post"]
    body = stop["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/StopIn"}
    grace = document["components"]["schemas"]["StopIn"]["properties"]["graceSeconds"]
    assert grace["anyOf"][0] == {"maximum": 86400, "minimum": 0, "type": "integer"}
    schemas = document["components"]["schemas"]
    assert "CANCELLING" in schemas["StageStatus"]["enum"]
    assert {"stopping", "stopGraceSeconds"} <= set(schemas["RunOut"]["properties"])
    assert {"always", "cancelsAt", "runDeadline"} <= set(schemas["StageOut"]["properties"])
    assert "stopGraceSeconds" in schemas["CreateRunIn"]["properties"]
    assert "always" in schemas["StageSpecIn"]["properties"]


def test_force_cancel_and_the_queue_discipline_are_documented(document):
    """Issue 15: a run cancel's ``force`` (a stage cancel has none), the concurrency setting's
    ``queue`` in the request and in the pipeline status."""
    schemas = document["components"]["schemas"]
    cancel = document["paths"]["/api/runs/{run_id}/cancel"]["post"]
    assert cancel["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CancelRunIn"}
    assert schemas["CancelRunIn"]["properties"]["force"]["type"] == "boolean"
    stage_cancel = document["paths"]["/api/stages/{stage_id}/cancel"]["post"]
    assert stage_cancel["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CancelIn"}
    assert "force" not in schemas["CancelIn"]["properties"]
    queue = schemas["ConcurrencyIn"]["properties"]["queue"]
    assert queue["anyOf"] == [{"$ref": "#/components/schemas/Queue"}, {"type": "null"}]
    assert schemas["Queue"]["enum"] == ["ALL", "NEWEST"]
    assert schemas["ConcurrencyOut"]["properties"]["queue"]["enum"] == ["ALL", "NEWEST"]
    assert "queue" in schemas["ConcurrencyOut"]["required"]


def test_the_controls_of_issue_15_are_documented(client, document):
    """Concurrency (the setting's route, a QUEUED run's place), approval policies (who may decide,
    the 403), automatic retries and schedules: each route and field in the document, and a real
    answer of each conforming to it."""
    paths, schemas = document["paths"], document["components"]["schemas"]
    concurrency = paths["/api/pipelines/{pipeline}/concurrency"]["put"]
    assert concurrency["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ConcurrencyIn"}
    assert "concurrency mode" in concurrency["summary"]
    assert set(schemas["QueueOut"]["properties"]) == {"group", "holder", "position", "waiting"}
    assert {"concurrencyGroup", "queue"} <= set(schemas["RunOut"]["properties"])
    assert "QUEUED" in schemas["StageStatus"]["enum"] and "RETRY_PENDING" in schemas["StageStatus"]["enum"]
    approve = paths["/api/stages/{stage_id}/approve"]["post"]
    assert "not_an_approver" in approve["summary"]
    assert "not_an_approver" in approve["responses"]["403"]["description"]
    policy = {"approvers", "required", "preventSelfApproval", "onTimeout", "remindAfterSeconds", "retry"}
    assert policy <= set(schemas["StageSpecIn"]["properties"])
    assert {"approvalPolicy", "approvals", "retry", "autoRetries", "nextRetryAt", "retryReason"} <= set(
        schemas["StageOut"]["properties"])
    assert set(paths["/api/pipelines/{pipeline}/schedules"]) == {"get", "post"}
    assert set(paths["/api/pipelines/{pipeline}/schedules/{schedule_id}"]) == {"get", "patch", "delete"}
    assert "lastSkipped" in schemas["ScheduleOut"]["properties"]

    create = {"pipeline": "web", "stages": ["BUILD"]}
    assert client.post("/api/runs", create).status_code == 201
    setting = client.put("/api/pipelines/web/concurrency", {"mode": "QUEUED"})
    client.post("/api/runs", create)
    client.post("/api/runs", create)
    queued = client.get("/api/runs/web:3")
    assert queued.json["queue"]["position"] == 1
    assert set(queued.json) == set(schemas["RunOut"]["properties"])  # every field, queue included
    schedule = client.post("/api/pipelines/web/schedules",
                           {"cron": "0 9 * * MON-FRI", "timeZone": "Europe/Paris"})
    calls = [("PUT", "/api/pipelines/{pipeline}/concurrency", setting),
             ("GET", "/api/runs/{run_id}", queued),
             ("POST", "/api/pipelines/{pipeline}/schedules", schedule),
             ("GET", "/api/pipelines/{pipeline}/schedules", client.get("/api/pipelines/web/schedules")),
             ("PATCH", "/api/pipelines/{pipeline}/schedules/{schedule_id}",
              client.patch(schedule.headers["Location"], {"enabled": False}))]
    # a graceful stop, then a cancel of the stopping run: the stop record and what it followed
    stopped = client.post("/api/runs", {"pipeline": "halt", "stages": ["BUILD", "UNIT_TEST"]}).json
    client.patch(f"/api/stages/{stopped['id']}:1", {"status": "IN_PROGRESS"})
    stop = client.post("/api/pipelines/halt/runs/1/stop", {"graceSeconds": 60, "reason": "freeze"})
    cancel = client.post(f"/api/runs/{stopped['id']}/cancel", {"reason": "now"})
    assert cancel.json["stopping"]["after"]["graceSeconds"] == 60
    after = schemas["StoppingOut"]["properties"]["after"]["anyOf"][0]
    assert after == {"$ref": "#/components/schemas/StopRecordOut"}
    calls += [("POST", "/api/pipelines/{pipeline}/runs/{counter}/stop", stop),
              ("POST", "/api/runs/{run_id}/cancel", cancel)]
    for method, path, response in calls:
        status, schema = success_schema(document, method, path)
        assert response.status_code == status, (method, path, response.json)
        conforms(document, response.json, schema)


def test_the_rebuild_takes_no_body_so_its_body_is_optional(document):
    """POST /api/insights/rebuild answers 202 without a body (schemathesis sent none): the
    document may not call a body required."""
    body = document["paths"]["/api/insights/rebuild"]["post"]["requestBody"]
    assert body["required"] is False
    assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/RebuildIn"}
