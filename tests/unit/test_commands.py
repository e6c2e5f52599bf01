"""The command table (service/commands.py): total, one handler per command, reachable from the
queue, and the one way every entry point writes: native routes, GoCD, CodeArts, Buddy, the
ingest queue and topic. Then the queue actions added with it (apply_variables, pause_pipeline,
unpause_pipeline, and the dialects' operations), on the in-memory stores."""
from __future__ import annotations

import json
from collections import Counter

import pytest
from chalice.test import Client

from chalicelib.domain import dialect_ids
from chalicelib.domain.errors import Conflict, DomainError, NotFound, ValidationFailed
from chalicelib.domain.operations import seal_secret
from chalicelib.domain.schemas import MAX_VARIABLES
from chalicelib.events import messages
from chalicelib.service import commands, runs
from chalicelib.service.ingest import is_permanent
from tests.fixtures.api import ApiClient
from tests.fixtures.dialects import basic


def _command_classes() -> set[type]:
    found: set[type] = set()
    todo = list(commands.Command.__subclasses__())
    while todo:
        kind = todo.pop()
        if kind.__module__ == commands.__name__:  # not the ones tests make up
            found.add(kind)
        todo.extend(kind.__subclasses__())
    return found


# One message per queue action, each naming what the setup below creates.
SAMPLES = {
    "create_run": {"run": {"pipeline": "web", "stages": ["BUILD"]}},
    "patch_stage": {"stageId": "web:2:1", "patch": {"status": "SUCCESS"}},
    "cancel_run": {"runId": "web:2", "reason": "stop"},
    "cancel_stage": {"stageId": "web:2:1"},
    "retry_run": {"runId": "web:1", "scope": "ALL"},
    "retry_stage": {"stageId": "web:1:1"},
    "approve_stage": {"stageId": "web:2:2", "comment": "ok"},
    "reject_stage": {"stageId": "web:2:2"},
    "apply_variables": {"runId": "web:2", "variables": [{"key": "REGION", "value": "eu"},
                                                        {"key": "TOKEN", "value": "s3cret", "secret": True}]},
    "pause_pipeline": {"pipeline": "web", "cause": "freeze"},
    "unpause_pipeline": {"pipeline": "web"},
    "release_lock": {"pipeline": "web"},
    "schedule_pipeline": {"pipeline": "web", "variables": {"A": "1"}},
    "stop_run": {"pipeline": "web", "counter": 2},
    "cancel_stage_by_name": {"pipeline": "web", "stageName": "BUILD"},
    "cancel_stage_attempt": {"pipeline": "web", "counter": 2, "stageName": "BUILD", "attempt": 1},
    "rerun_stage_by_name": {"pipeline": "web", "counter": 1, "stageName": "BUILD"},
    "approve_waiting": {"runId": "web:2"},
}


def _message(action: str, **extra) -> str:
    return json.dumps({"action": action, **SAMPLES[action], **extra})


# ---- the table ----------------------------------------------------------------------------------

def test_every_command_has_exactly_one_handler_and_every_handler_a_command():
    assert set(commands.HANDLERS) == _command_classes()
    assert len(_command_classes()) == 21


def test_a_second_handler_for_a_command_is_refused():
    with pytest.raises(RuntimeError, match="CancelRun has a handler already"):
        commands.handles(commands.CancelRun)(lambda ctx, command, actor: None)
    assert commands.HANDLERS[commands.CancelRun].__name__ == "_cancel_run"


def test_a_command_without_a_handler_is_refused(memory_ctx):
    class Unknown(commands.Command[None]):
        pass

    with pytest.raises(TypeError, match="no handler for Unknown"):
        commands.execute(memory_ctx, Unknown(), actor="someone")


# A pipeline's configuration (its cron schedules, issue 15), like tokens and subscriptions, is
# changed through the API only: the queue and topic carry operations on runs and pipelines.
CONFIGURATION = {commands.CreateSchedule, commands.ChangeSchedule, commands.DeleteSchedule,
                 commands.SetConcurrency}


def test_every_command_is_reachable_from_the_queue_and_every_action_has_a_sample():
    assert set(SAMPLES) == set(messages.MESSAGE_ACTIONS)
    built = {type(messages.parse_message(_message(action)).command()) for action in SAMPLES}
    assert built == set(commands.HANDLERS) - CONFIGURATION


# The canonical form of each message shape that existed before the command table: a message's
# claim is keyed on its hash, so it must not change (a redelivery would read as a reused id).
CANONICAL = {
    "create_run": '{"action":"create_run","run":{"pipeline":"web","stages":["BUILD"],"commit":null,'
                  '"trigger":null,"variables":null,"timeoutSeconds":null,"autoAdvance":false}}',
    "patch_stage": '{"action":"patch_stage","stageId":"web:2:1","patch":{"status":"SUCCESS","name":null,'
                   '"timeoutSeconds":null}}',
    "cancel_run": '{"action":"cancel_run","runId":"web:2","reason":"stop"}',
    "cancel_stage": '{"action":"cancel_stage","stageId":"web:2:1","reason":null}',
    "retry_run": '{"action":"retry_run","runId":"web:1","scope":"ALL"}',
    "retry_stage": '{"action":"retry_stage","stageId":"web:1:1"}',
    "approve_stage": '{"action":"approve_stage","stageId":"web:2:2","comment":"ok"}',
    "reject_stage": '{"action":"reject_stage","stageId":"web:2:2","comment":null}',
}


@pytest.mark.parametrize("action", sorted(CANONICAL))
def test_the_existing_message_shapes_keep_their_canonical_form(action):
    parsed = messages.parse_message(_message(action, idempotencyKey="k-1"))
    assert parsed.model_dump_json(by_alias=True, exclude={"idempotency_key"}) == CANONICAL[action]


# ---- every entry point writes through the table -------------------------------------------------

@pytest.fixture
def spy(monkeypatch):
    """Each handler of the table, wrapped to count the commands it runs."""
    seen: Counter = Counter()
    for kind, handler in list(commands.HANDLERS.items()):
        def counting(ctx, command, actor, _handler=handler):
            seen[type(command).__name__] += 1
            return _handler(ctx, command, actor)
        monkeypatch.setitem(commands.HANDLERS, kind, counting)
    return seen


@pytest.fixture
def app_client(memory_ctx):
    from app import app

    with Client(app) as client:
        yield client


@pytest.fixture
def api(app_client, memory_ctx, spy):
    """Run web:1 (BUILD failed) and run web:2 (BUILD running, GATE waiting for approval)."""
    client = ApiClient(app_client, admin_token=memory_ctx.settings.admin_token)
    assert client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]}).status_code == 201
    for status in ("IN_PROGRESS", "FAILURE"):
        assert client.patch("/api/stages/web:1:1", {"status": status}).status_code == 200
    assert client.post("/api/runs", {"pipeline": "web", "stages": [
        "BUILD", {"type": "DEPLOY_PROD", "name": "GATE", "approval": "MANUAL"}]}).status_code == 201
    assert client.patch("/api/stages/web:2:1", {"status": "IN_PROGRESS"}).status_code == 200
    assert client.patch("/api/stages/web:2:2", {"status": "IN_PROGRESS"}).status_code == 200
    spy.clear()
    return client


def _gocd(token: str, **headers) -> dict:
    return {"Authorization": basic("jez", token), **headers}


JOB = dialect_ids.codearts_job_id("web")
BUDDY = f"/workspaces/w/projects/p/pipelines/{dialect_ids.buddy_pipeline_id('web')}/executions/2"
V1, V2, V3 = "application/vnd.go.cd.v1+json", "application/vnd.go.cd.v2+json", "application/vnd.go.cd.v3+json"

# (name, method, path, body, headers(token), paused before, status, command)
ROUTES = [
    ("native create", "POST", "/api/runs", {"pipeline": "web", "stages": ["BUILD"]}, None, False, 201,
     "CreateRun"),
    ("native patch", "PATCH", "/api/stages/web:2:1", {"status": "SUCCESS"}, None, False, 200, "PatchStage"),
    ("native cancel run", "POST", "/api/runs/web:2/cancel", None, None, False, 200, "CancelRun"),
    ("native cancel stage", "POST", "/api/stages/web:2:1/cancel", None, None, False, 200, "CancelStage"),
    ("native stop", "POST", "/api/pipelines/web/runs/2/stop", None, None, False, 200, "StopRun"),
    ("native retry run", "POST", "/api/runs/web:1/retry", None, None, False, 200, "RetryRun"),
    ("native retry stage", "POST", "/api/stages/web:1:1/retry", None, None, False, 200, "RetryStage"),
    ("native approve", "POST", "/api/stages/web:2:2/approve", None, None, False, 200, "DecideStage"),
    ("native reject", "POST", "/api/stages/web:2:2/reject", None, None, False, 200, "DecideStage"),
    ("native variables", "PUT", "/api/runs/web:2/variables", {"variables": [{"key": "A", "value": "1"}]},
     None, False, 200, "ApplyVariables"),
    ("native pause", "POST", "/api/pipelines/web/pause", None, None, False, 200, "PausePipeline"),
    ("native unpause", "POST", "/api/pipelines/web/unpause", None, None, True, 200, "UnpausePipeline"),
    ("native schedule", "POST", "/api/pipelines/web/schedule", None, None, False, 202, "SchedulePipeline"),
    ("create cron schedule", "POST", "/api/pipelines/web/schedules", {"cron": "0 3 * * *"}, None, False, 201,
     "CreateSchedule"),
    ("change cron schedule", "PATCH", "/api/pipelines/web/schedules/sch_00000000000000000000",
     {"enabled": False}, None, False, 404, "ChangeSchedule"),
    ("delete cron schedule", "DELETE", "/api/pipelines/web/schedules/sch_00000000000000000000", None, None,
     False, 404, "DeleteSchedule"),
    ("gocd cancel", "POST", "/go/api/stages/web/BUILD/cancel", None,
     lambda t: _gocd(t, Confirm="true"), False, 200, "CancelStageByName"),
    ("gocd v3 cancel", "POST", "/go/api/stages/web/2/BUILD/1/cancel", None,
     lambda t: _gocd(t, Accept=V3, **{"X-GoCD-Confirm": "true"}), False, 200, "CancelStageAttempt"),
    ("gocd run stage", "POST", "/go/api/stages/web/1/BUILD/run", None,
     lambda t: _gocd(t, Accept=V2, **{"X-GoCD-Confirm": "true"}), False, 202, "RerunStageByName"),
    ("gocd pause", "POST", "/go/api/pipelines/web/pause", None,
     lambda t: _gocd(t, Confirm="true"), False, 200, "PausePipeline"),
    ("gocd unpause", "POST", "/go/api/pipelines/web/unpause", None,
     lambda t: _gocd(t, Confirm="true"), True, 200, "UnpausePipeline"),
    ("native concurrency", "PUT", "/api/pipelines/web/concurrency", {"mode": "QUEUED"}, None, False, 200,
     "SetConcurrency"),
    ("gocd releaseLock", "POST", "/go/api/pipelines/web/releaseLock", None,
     lambda t: _gocd(t, Confirm="true"), False, 200, "ReleaseLock"),
    ("gocd v1 unlock", "POST", "/go/api/pipelines/web/unlock", None,
     lambda t: _gocd(t, Accept=V1, **{"X-GoCD-Confirm": "true"}), False, 200, "ReleaseLock"),
    ("gocd schedule", "POST", "/go/api/pipelines/web/schedule", None,
     lambda t: _gocd(t, Confirm="true"), False, 202, "SchedulePipeline"),
    ("codearts stop", "POST", "/v3/jobs/stop", {"job_id": JOB, "build_no": "2"},
     lambda t: {"X-Auth-Token": t}, False, 200, "StopRun"),
    ("codearts v1 stop", "POST", f"/v1/job/{JOB}/stop?build_no=2", None,
     lambda t: {"X-Auth-Token": t}, False, 200, "StopRun"),
    ("codearts path stop", "POST", f"/v3/jobs/{JOB}/2/stop", None,
     lambda t: {"X-Auth-Token": t}, False, 200, "StopRun"),
    ("buddy cancel", "PATCH", BUDDY, {"operation": "CANCEL"}, None, False, 200, "CancelRun"),
    ("buddy retry", "PATCH", BUDDY.replace("/2", "/1"), {"operation": "RETRY"}, None, False, 200, "RetryRun"),
    ("buddy apply", "PATCH", BUDDY, {"operation": "APPLY"}, None, False, 200, "ApproveWaiting"),
    ("buddy variables", "PATCH", BUDDY, {"operation": "APPLY_VARIABLES",
                                         "variables": [{"key": "A", "value": "1"}]},
     None, False, 200, "ApplyVariables"),
]


@pytest.mark.parametrize("name, method, path, body, headers, paused, status, command", ROUTES,
                         ids=[r[0] for r in ROUTES])
def test_each_route_writes_through_the_command_table(api, memory_ctx, spy, name, method, path, body,
                                                      headers, paused, status, command):
    token = memory_ctx.settings.admin_token
    if paused:
        assert api.post("/api/pipelines/web/pause").status_code == 200
        spy.clear()
    response = api.request(method, path, body, headers=headers(token) if headers else None)
    assert response.status_code == status, response.body
    assert spy == Counter({command: 1})


# Routes that write but run no command: deletes are native-only and no operation (nothing else
# dispatches them).
NOT_COMMANDS = {("DELETE", "/api/runs/{run_id}"), ("DELETE", "/api/stages/{stage_id}")}
OPERATION_PATHS = ("/api/runs", "/api/stages", "/api/pipelines", "/go/", "/v1/", "/v3/", "/workspaces/")


def test_every_write_route_on_runs_and_pipelines_is_in_the_list_above():
    """A route that changes runs or pipelines and is not listed would escape the check above
    (tokens, webhook sources and subscriptions have their own services)."""
    from app import app

    listed = {(method, _shape(path)) for _, method, path, *_ in ROUTES}
    writes = {(method, route) for route, entries in app.routes.items() for method, entry in entries.items()
              if method in ("POST", "PUT", "PATCH", "DELETE") and route.startswith(OPERATION_PATHS)
              and entry.view_function.route_spec.methods}  # not a 405 fallback (api/fallbacks.py)
    assert writes - NOT_COMMANDS == listed


def _shape(path: str) -> str:
    """The route a listed path is served by (its literal segments replaced by the variables)."""
    from app import app

    parts = path.split("?")[0].strip("/").split("/")
    serving = [route for route in app.routes if len(route.strip("/").split("/")) == len(parts) and all(
        p.startswith("{") or p == q for p, q in zip(route.strip("/").split("/"), parts, strict=True))]
    if serving:  # the most literal one, as the router picks
        return max(serving, key=lambda route: sum(not p.startswith("{") for p in route.split("/")))
    raise AssertionError(f"no route serves {path}")


@pytest.mark.parametrize("handler", ["ingest_queue", "ingest_topic"])
@pytest.mark.parametrize("action", sorted(SAMPLES))
def test_each_queue_action_writes_through_the_command_table(api, app_client, spy, handler, action):
    if action == "unpause_pipeline":
        assert api.post("/api/pipelines/web/pause").status_code == 200
        spy.clear()
    body = _message(action)
    if handler == "ingest_queue":
        event = app_client.events.generate_sqs_event([body], queue_name="stagetrack-ingest")
        assert app_client.lambda_.invoke(handler, event).payload == {"batchItemFailures": []}
    else:
        event = app_client.events.generate_sns_event(body)
        [answer] = app_client.lambda_.invoke(handler, event).payload["results"]
        assert answer["result"] == "applied" and answer["action"] == action
    expected = type(messages.parse_message(body).command()).__name__
    assert spy == Counter({expected: 1})


# ---- the queue actions added with the table ---------------------------------------------------

def _ingest(ctx, body: str, transport_id: str = "m-1"):
    return messages.ingest_message(ctx, body, transport_id=transport_id, actor="sqs:stagetrack-ingest")


@pytest.fixture
def run(memory_ctx):
    body = runs.CreateRunIn.model_validate_json('{"pipeline": "web", "stages": ["BUILD"]}')
    return runs.create_run(memory_ctx, body)


def test_apply_variables_message_merges_variables_and_keeps_secrets_as_a_keyed_hash(memory_ctx, run):
    answer, replayed = _ingest(memory_ctx, _message("apply_variables", runId="web:1"))
    assert (answer, replayed) == ({"result": "applied", "action": "apply_variables", "runId": "web:1",
                                   "status": "IDLE"}, False)
    stored = memory_ctx.stores.runs.load_run("web:1").run
    assert stored.variables == {"REGION": "eu"}
    assert stored.secrets == {"TOKEN": seal_secret("s3cret", memory_ctx.settings.secret_pepper)}
    assert "s3cret" not in json.dumps(answer)


@pytest.mark.parametrize("variables, field", [
    ([], "apply_variables.variables"),
    ([{"key": f"K{i}", "value": "v"} for i in range(MAX_VARIABLES + 1)], "apply_variables.variables"),
    ([{"key": "A", "value": "1"}, {"key": "A", "value": "2"}], "apply_variables"),  # repeated key
    ([{"key": "1bad", "value": "1"}], "apply_variables.variables.0.key"),
    ([{"key": "A", "value": "x" * 4097}], "apply_variables.variables.0.value"),
    ([{"key": "A", "value": "1", "colour": "red"}], "apply_variables.variables.0.colour"),
])
def test_apply_variables_message_has_the_limits_of_the_route_and_changes_nothing(
        memory_ctx, run, variables, field):
    body = json.dumps({"action": "apply_variables", "runId": "web:1", "variables": variables})
    with pytest.raises(ValidationFailed) as caught:
        _ingest(memory_ctx, body)
    assert is_permanent(caught.value)
    assert [d["field"] for d in caught.value.details] == [field]
    assert memory_ctx.stores.runs.load_run("web:1").run.variables == {}


def test_apply_variables_message_past_the_run_limit_is_refused_and_changes_nothing(memory_ctx, run):
    first = [{"key": f"K{i}", "value": "v"} for i in range(MAX_VARIABLES)]
    _ingest(memory_ctx, json.dumps({"action": "apply_variables", "runId": "web:1", "variables": first}))
    more = json.dumps({"action": "apply_variables", "runId": "web:1",
                       "variables": [{"key": "X", "value": "1"}]})
    with pytest.raises(ValidationFailed, match=f"at most {MAX_VARIABLES} variables"):
        _ingest(memory_ctx, more, "m-2")
    assert len(memory_ctx.stores.runs.load_run("web:1").run.variables) == MAX_VARIABLES


def test_apply_variables_message_for_an_unknown_run_is_a_permanent_404(memory_ctx, run):
    with pytest.raises(NotFound) as caught:
        _ingest(memory_ctx, _message("apply_variables", runId="web:9"))
    assert is_permanent(caught.value)


def test_pause_and_unpause_messages_pause_the_pipeline_as_the_queue(memory_ctx, clock, run):
    answer, _ = _ingest(memory_ctx, _message("pause_pipeline"))
    assert answer == {"result": "applied", "action": "pause_pipeline", "pipeline": "web", "paused": True}
    paused = memory_ctx.stores.pipelines.get("web")
    assert (paused.paused, paused.pause_cause, paused.paused_by, paused.paused_at) == (
        True, "freeze", "sqs:stagetrack-ingest", clock.now())
    with pytest.raises(Conflict):  # a paused pipeline refuses new runs, as over HTTP
        runs.create_run(memory_ctx, runs.CreateRunIn.model_validate_json('{"pipeline": "web"}'))
    answer, _ = _ingest(memory_ctx, _message("unpause_pipeline"), "m-2")
    assert answer == {"result": "applied", "action": "unpause_pipeline", "pipeline": "web", "paused": False}
    assert memory_ctx.stores.pipelines.get("web").paused is False


def test_pausing_a_paused_pipeline_by_message_is_a_permanent_409(memory_ctx, run):
    _ingest(memory_ctx, _message("pause_pipeline"))
    with pytest.raises(Conflict) as caught:
        _ingest(memory_ctx, _message("pause_pipeline"), "m-2")
    assert is_permanent(caught.value)


@pytest.mark.parametrize("body, field", [
    ({"action": "pause_pipeline"}, "pause_pipeline.pipeline"),
    ({"action": "pause_pipeline", "pipeline": "web", "cause": ""}, "pause_pipeline.cause"),
    ({"action": "pause_pipeline", "pipeline": "web", "cause": "x" * 1001}, "pause_pipeline.cause"),
    ({"action": "pause_pipeline", "pipeline": "no spaces"}, "pause_pipeline.pipeline"),
    ({"action": "unpause_pipeline", "pipeline": "web", "cause": "x"}, "unpause_pipeline.cause"),
])
def test_bad_pause_messages_are_refused_naming_the_field(memory_ctx, run, body, field):
    with pytest.raises(ValidationFailed) as caught:
        _ingest(memory_ctx, json.dumps(body))
    assert [d["field"] for d in caught.value.details] == [field]
    assert memory_ctx.stores.pipelines.get("web").paused is False


def test_pausing_an_unknown_pipeline_by_message_is_a_permanent_404(memory_ctx, run):
    with pytest.raises(NotFound) as caught:
        _ingest(memory_ctx, _message("pause_pipeline", pipeline="nope"))
    assert is_permanent(caught.value)


def test_a_repeated_pause_message_applies_once(memory_ctx, run, spy):
    body = _message("pause_pipeline", idempotencyKey="freeze-1")
    first = _ingest(memory_ctx, body, "m-1")
    again = _ingest(memory_ctx, body, "m-2")  # the same key by the topic, say
    assert first == (again[0], False) and again[1] is True
    assert spy == Counter({"PausePipeline": 1})


def test_a_pause_whose_write_committed_before_the_process_died_answers_from_the_pipeline(
        memory_ctx, clock, run, monkeypatch):
    from chalicelib.service import ingest
    from chalicelib.store.memory import MemoryIdempotencyStore

    body = _message("pause_pipeline", idempotencyKey="k-1")

    class ProcessDied(BaseException):
        pass

    with monkeypatch.context() as patch:
        def died(*args, **kwargs):
            raise ProcessDied("after the write")
        patch.setattr(MemoryIdempotencyStore, "complete", died)
        patch.setattr(MemoryIdempotencyStore, "release", lambda self, *a, **k: None)
        with pytest.raises(ProcessDied):
            _ingest(memory_ctx, body, "m-1")
    clock.advance(seconds=ingest.RECEIPT_LEASE_SECONDS + 1)
    answer, replayed = _ingest(memory_ctx, body, "m-2")
    assert (answer, replayed) == ({"result": "applied", "action": "pause_pipeline",
                                   "replayedFromEffect": True, "pipeline": "web", "paused": True}, True)


@pytest.mark.parametrize("body, kept", [
    ('{"action":"apply_variables","variables":[{"key":"A","value":"pw","secret":true},{"key":"B","value":"b"}]}',
     '{"action":"apply_variables","variables":[{"key":"A","value":"[REDACTED]","secret":true},'
     '{"key":"B","value":"b"}]}'),
    # a message that failed validation because "secret" is no boolean is still treated as secret
    ('{"action":"apply_variables","variables":[{"key":"A","value":"pw","secret":"yes"}]}',
     '{"action":"apply_variables","variables":[{"key":"A","value":"[REDACTED]","secret":"yes"}]}'),
    ('{"action":"apply_variables","variables":[{"key":"A","value":"pw","secret":false}]}',
     '{"action":"apply_variables","variables":[{"key":"A","value":"pw","secret":false}]}'),
    ('{not json "secret": true', '{not json "secret": true'),
    ('{"action": "cancel_run", "runId": "web:1"}', '{"action": "cancel_run", "runId": "web:1"}'),
    ('["variables"]', '["variables"]'),
])
def test_the_dead_letter_copy_of_a_message_hides_its_secret_values(body, kept):
    assert messages.redacted(body) == kept


def test_the_queue_stop_carries_its_grace_period_and_leaves_it_out_of_the_hash_when_unset():
    command = messages.parse_message(_message("stop_run", graceSeconds=30, reason="superseded")).command()
    assert command == commands.StopRun("web", 2, "superseded", 30)
    unset = messages.parse_message(_message("stop_run"))
    assert unset.command() == commands.StopRun("web", 2, None, None)
    assert unset.model_dump_json(by_alias=True, exclude={"idempotency_key"}) == (
        '{"action":"stop_run","pipeline":"web","counter":2,"reason":null}')  # as before graceSeconds
    with pytest.raises(DomainError):
        messages.parse_message(_message("stop_run", graceSeconds=86401))


def test_the_queue_cancel_carries_force_and_leaves_it_out_of_the_hash_when_false(memory_ctx):
    forced = messages.parse_message(_message("cancel_run", force=True))
    assert forced.command() == commands.CancelRun("web:2", "stop", force=True)
    assert forced.model_dump_json(by_alias=True, exclude={"idempotency_key"}) == (
        '{"action":"cancel_run","runId":"web:2","reason":"stop","force":true}')
    plain = messages.parse_message(_message("cancel_run", force=False))
    assert plain.command() == commands.CancelRun("web:2", "stop")
    assert plain.model_dump_json(by_alias=True, exclude={"idempotency_key"}) == CANONICAL["cancel_run"]
    with pytest.raises(ValidationFailed):  # strict: a string is no boolean
        messages.parse_message(_message("cancel_run", force="true"))
    run = runs.create_run(memory_ctx, runs.CreateRunIn.model_validate_json(
        '{"pipeline": "web", "stages": ["BUILD", {"type": "OTHER", "name": "cleanup", "always": true}],'
        ' "autoAdvance": true}'))
    started = runs.PatchStageIn.model_validate_json('{"status": "IN_PROGRESS"}')
    runs.patch_stage(memory_ctx, run.stages[0].id, started)
    message = json.dumps({"action": "cancel_run", "runId": run.run.id, "force": True})
    messages.ingest_message(memory_ctx, message, transport_id="m-1", actor="sqs:stagetrack-ingest")
    after = runs.get_run(memory_ctx, run.run.id)
    assert after.run.status.value == "CANCELLED"
    assert [s.status.value for s in after.stages] == ["CANCELLED", "SKIPPED"]
    assert after.run.cancellation["force"] is True and after.run.cancellation["by"] == "sqs:stagetrack-ingest"
