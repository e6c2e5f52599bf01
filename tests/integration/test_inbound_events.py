"""AWS event triggers: EventBridge (CodePipeline, CodeBuild), the SQS queue and the SNS topic
of update messages, fed through chalice.test.Client as Lambda would call the handlers."""
from __future__ import annotations

import json

import pytest
from chalice.test import Client

from chalicelib.domain.clock import format_iso
from chalicelib.domain.errors import ConcurrentModification, ValidationFailed
from chalicelib.service import runs
from chalicelib.settings import Settings
from tests.fixtures import (
    allowed_actions,
    assert_items_allowed,
    aws_client,
    delete_done,
    iam_actions,
    load,
    make_queue,
    receive,
    sqs_event,
    sqs_time_follows,
    variant,
)

DLQ = "https://sqs.us-east-1.amazonaws.com/123456789012/stagetrack-ingest-dlq"
PIPELINE_RUN = "myPipeline:1"


@pytest.fixture
def settings():
    return Settings(table_name="stagetrack-test", region="us-east-1", ingest_dlq_url=DLQ)


@pytest.fixture
def lam(ctx):
    """The Chalice app's Lambda handlers, plus the ingest dead-letter queue they write to."""
    from app import app

    make_queue("stagetrack-ingest-dlq")
    with Client(app) as client:
        yield client


def invoke(lam, name, event):
    return lam.lambda_.invoke(name, event).payload


def dead_letters():
    return [json.loads(m["Body"]) for m in receive(DLQ)]


def statuses(ctx, run_id):
    aggregate = runs.get_run(ctx, run_id)
    return aggregate.run.status.value, [(s.name, s.status.value, s.attempt) for s in aggregate.stages]


def codepipeline(name, event_id, **detail):
    event = load(name)
    event["id"] = event_id
    event["detail"].update(detail)
    return event


# ---- EventBridge: CodePipeline ------------------------------------------------------------------

def test_a_codepipeline_execution_becomes_a_run(lam, ctx):
    assert invoke(lam, "aws_ci_events", load("codepipeline_pipeline_started"))["runCreated"] is True
    assert statuses(ctx, PIPELINE_RUN) == ("IDLE", [])
    assert runs.get_run(ctx, PIPELINE_RUN).run.trigger == "codepipeline:StartPipelineExecution"

    invoke(lam, "aws_ci_events", load("codepipeline_stage_started"))
    build = runs.get_run(ctx, PIPELINE_RUN).stages[0]
    assert (build.name, build.type, build.status.value) == ("Build", "BUILD", "IN_PROGRESS")
    assert build.started_at.isoformat() == "2020-01-24T22:03:44+00:00"
    invoke(lam, "aws_ci_events", codepipeline("codepipeline_stage_started", "e-2", state="SUCCEEDED"))

    invoke(lam, "aws_ci_events", load("codepipeline_action_approval_started"))
    assert statuses(ctx, PIPELINE_RUN) == ("WAITING_FOR_APPROVAL", [
        ("Build", "SUCCESS", 1), ("Approve.ManualApproval", "WAITING_FOR_APPROVAL", 1)])
    invoke(
        lam, "aws_ci_events", codepipeline("codepipeline_action_approval_started", "e-3", state="SUCCEEDED")
    )
    invoke(lam, "aws_ci_events", codepipeline("codepipeline_pipeline_started", "e-4", state="SUCCEEDED"))
    assert statuses(ctx, PIPELINE_RUN) == (
        "SUCCESS",
        [("Build", "SUCCESS", 1), ("Approve.ManualApproval", "SUCCESS", 1)],
    )


def test_codepipeline_and_codebuild_runs_record_who_started_them_and_their_console_page(lam, ctx):
    """Issue 13: the official example events' initiator and execution, as the run's metadata."""
    invoke(lam, "aws_ci_events", load("codepipeline_pipeline_started"))
    run = runs.get_run(ctx, PIPELINE_RUN).run
    assert (run.source, run.actor, run.source_url) == (
        "codepipeline", "my-user",
        "https://us-east-1.console.aws.amazon.com/codesuite/codepipeline/pipelines/myPipeline/executions/"
        "12345678-1234-5678-abcd-12345678abcd/timeline?region=us-east-1")
    invoke(lam, "aws_ci_events", load("codebuild_build_state_change"))
    build = runs.get_run(ctx, "my-sample-project:1").run
    assert (build.source, build.actor, build.source_url) == (
        "codebuild", "MyCodeBuildDemoUser",
        "https://us-west-2.console.aws.amazon.com/codesuite/codebuild/projects/my-sample-project/build/"
        "my-sample-project%3A8745a7a9-c340-456a-9166-edf953571bEX?region=us-west-2")


def test_a_rejected_approval_fails_the_run(lam, ctx):
    invoke(lam, "aws_ci_events", load("codepipeline_action_approval_started"))
    invoke(lam, "aws_ci_events", codepipeline("codepipeline_action_approval_started", "e-2", state="FAILED"))
    assert statuses(ctx, PIPELINE_RUN) == ("FAILURE", [("Approve.ManualApproval", "FAILURE", 1)])


def test_a_resumed_stage_is_a_new_attempt(lam, ctx):
    invoke(lam, "aws_ci_events", codepipeline("codepipeline_stage_started", "e-1", state="FAILED"))
    invoke(lam, "aws_ci_events", codepipeline("codepipeline_stage_started", "e-2", state="RESUMED"))
    assert statuses(ctx, PIPELINE_RUN) == ("IN_PROGRESS", [("Build", "IN_PROGRESS", 2)])


def test_a_superseded_execution_is_cancelled(lam, ctx):
    invoke(lam, "aws_ci_events", load("codepipeline_stage_started"))
    invoke(lam, "aws_ci_events", codepipeline("codepipeline_pipeline_started", "e-2", state="SUPERSEDED"))
    run = runs.get_run(ctx, PIPELINE_RUN).run
    assert run.status.value == "CANCELLED" and run.cancellation["by"] == "aws.codepipeline"


def test_actions_other_than_approvals_are_covered_by_their_stage(lam, ctx):
    event = codepipeline("codepipeline_action_approval_started", "e-1")
    event["detail"]["type"] = {"owner": "AWS", "provider": "CodeBuild", "category": "Build", "version": "1"}
    answer = invoke(lam, "aws_ci_events", event)
    assert answer["result"] == "ignored" and "covered by their stage" in answer["notes"][0]


# ---- EventBridge: CodeBuild ---------------------------------------------------------------------

def test_a_codebuild_build_is_a_run_with_one_build_stage(lam, ctx):
    event = load("codebuild_build_state_change")
    generated = lam.events.generate_cw_event(
        source=event["source"],
        detail_type=event["detail-type"],
        detail=variant("codebuild_build_state_change", **{"detail.build-status": "IN_PROGRESS"})["detail"],
        resources=event["resources"],
    )
    assert invoke(lam, "aws_ci_events", generated)["runCreated"] is True
    assert statuses(ctx, "my-sample-project:1") == ("IN_PROGRESS", [("build", "IN_PROGRESS", 1)])
    invoke(lam, "aws_ci_events", event)
    assert statuses(ctx, "my-sample-project:1") == ("SUCCESS", [("build", "SUCCESS", 1)])


def stage_times(ctx, run_id):
    aggregate = runs.get_run(ctx, run_id)
    (stage,) = aggregate.stages
    return tuple(format_iso(t) for t in (stage.started_at, stage.ended_at, aggregate.run.started_at,
                                         aggregate.run.ended_at)) + (stage.duration_ms,)


def test_a_codebuild_build_delivered_late_keeps_the_builds_own_times(lam, ctx, clock):
    """The AWS documented example, delivered long after the build (the clock is 2026): the
    start is ``build-start-time`` ("Sep 1, 2017 4:12:29 PM", UTC), the end the last phase's end
    (4:14:26 PM), never the arrival time."""
    clock.set("2026-03-20T17:17:13.760Z")
    invoke(lam, "aws_ci_events", load("codebuild_build_state_change"))
    assert stage_times(ctx, "my-sample-project:1") == (
        "2017-09-01T16:12:29.000Z", "2017-09-01T16:14:26.000Z",
        "2017-09-01T16:12:29.000Z", "2017-09-01T16:14:26.000Z", 117_000)


def test_a_late_in_progress_codebuild_event_starts_the_build_at_its_start_time(lam, ctx, clock):
    event = variant("codebuild_build_state_change", **{"detail.build-status": "IN_PROGRESS",
                                                      "detail.current-phase": "BUILD",
                                                      "time": "2017-09-01T16:13:11Z", "id": "in-progress-1"})
    info = event["detail"]["additional-information"]
    info["phases"] = info["phases"][:5]
    invoke(lam, "aws_ci_events", event)
    assert stage_times(ctx, "my-sample-project:1")[:1] == ("2017-09-01T16:12:29.000Z",)
    invoke(lam, "aws_ci_events", load("codebuild_build_state_change"))
    assert stage_times(ctx, "my-sample-project:1")[:2] == (
        "2017-09-01T16:12:29.000Z",
        "2017-09-01T16:14:26.000Z",
    )


@pytest.mark.parametrize(
    "start",
    [
        "Sep 31, 2017 4:12:29 PM",
        "2017-09-01 16:12:29",
        "Sept 1, 2017 4:12:29 PM",
        "Sep 1, 2017 13:12:29 PM",
        1504282349,
    ],
)
def test_an_unreadable_build_start_time_falls_back_to_the_phases_then_the_event_time(lam, ctx, start):
    event = variant(
        "codebuild_build_state_change", **{"detail.additional-information.build-start-time": start}
    )
    invoke(lam, "aws_ci_events", event)
    assert stage_times(ctx, "my-sample-project:1")[:2] == (
        "2017-09-01T16:12:29.000Z",
        "2017-09-01T16:14:26.000Z",
    )
    del event["detail"]["additional-information"]["phases"]
    event["id"] = "another-event"
    event["detail"]["build-id"] += "-2"
    invoke(lam, "aws_ci_events", event)
    assert stage_times(ctx, "my-sample-project:2")[:2] == (
        "2017-09-01T16:14:28.000Z",
        "2017-09-01T16:14:28.000Z",
    )


@pytest.mark.parametrize("text, expected", [
    ("Sep 1, 2017 4:12:29 PM", "2017-09-01T16:12:29.000Z"),
    ("Sep 1, 2017 12:00:00 AM", "2017-09-01T00:00:00.000Z"),
    ("Sep 1, 2017 12:00:00 PM", "2017-09-01T12:00:00.000Z"),
    ("Dec 31, 2024 11:59:59 PM", "2024-12-31T23:59:59.000Z"),
    ("Feb 29, 2023 1:00:00 AM", None), ("Sep 1, 2017 0:12:29 PM", None), ("", None), (None, None),
])
def test_codebuild_times_are_read_exactly_as_utc(text, expected):
    from chalicelib.integrations.aws import parse_codebuild_time

    assert format_iso(parse_codebuild_time(text)) == expected


def test_builds_started_by_codepipeline_are_left_to_the_pipeline(lam, ctx):
    event = variant("codebuild_build_state_change",
                    **{"detail.additional-information.initiator": "codepipeline/myPipeline"})
    answer = invoke(lam, "aws_ci_events", event)
    assert answer["result"] == "ignored"
    assert ctx.stores.runs.load_run("my-sample-project:1") is None


def test_an_eventbridge_event_delivered_twice_is_applied_once(lam, ctx, ddb_calls):
    first = invoke(lam, "aws_ci_events", load("codepipeline_stage_started"))
    ddb_calls.clear()
    again = invoke(lam, "aws_ci_events", load("codepipeline_stage_started"))
    assert again["replayed"] is True and {**again, "replayed": False} == first
    assert "TransactWriteItems" not in ddb_calls


def test_an_unusable_event_goes_to_the_dead_letter_queue(lam, ctx):
    broken = variant("codepipeline_stage_started", detail={"pipeline": "myPipeline", "state": "STARTED"})
    assert invoke(lam, "aws_ci_events", broken) == {"result": "dead-lettered"}
    (letter,) = dead_letters()
    assert letter["origin"] == "eventbridge" and letter["error"]["code"] == "validation_failed"
    assert "execution-id" in letter["error"]["message"]
    assert json.loads(letter["message"])["id"] == broken["id"]
    assert ctx.stores.runs.load_run(PIPELINE_RUN) is None


def test_without_a_dead_letter_queue_an_unusable_event_fails_the_invocation(lam, ctx):
    ctx.settings = Settings(table_name="stagetrack-test", region="us-east-1")
    broken = variant("codepipeline_stage_started", detail={})
    with pytest.raises(ValidationFailed):
        invoke(lam, "aws_ci_events", broken)  # Lambda retries, then the function's own DLQ


# ---- the SQS queue of update messages -----------------------------------------------------------

def messages(*bodies):
    return [body if isinstance(body, str) else json.dumps(body) for body in bodies]


def queue_event(lam, bodies, ids=None):
    event = lam.events.generate_sqs_event(message_bodies=bodies, queue_name="stagetrack-ingest")
    for index, record in enumerate(event["Records"]):
        record["messageId"] = (ids or [f"m-{i}" for i in range(len(bodies))])[index]
    return event


def test_a_batch_applies_the_good_messages_and_dead_letters_the_bad_ones(lam, ctx):
    create = {"action": "create_run", "run": {"pipeline": "web", "stages": ["BUILD", "DEPLOY_PROD"]}}
    start = {"action": "patch_stage", "stageId": "web:1:1", "patch": {"status": "IN_PROGRESS"}}
    bad = ["{not json", {"action": "explode"}, {"action": "patch_stage", "stageId": "web:9:1",
                                                 "patch": {"status": "IN_PROGRESS"}},
           {"action": "patch_stage", "stageId": "web:1:2", "patch": {"status": "SUCCESS"}},
           {"action": "create_run", "run": {"pipeline": "web", "extra": 1}}]
    answer = invoke(lam, "ingest_queue", queue_event(lam, messages(create, start, *bad)))
    assert answer == {"batchItemFailures": []}
    assert statuses(ctx, "web:1") == (
        "IN_PROGRESS",
        [("BUILD", "IN_PROGRESS", 1), ("DEPLOY_PROD", "IDLE", 1)],
    )
    letters = dead_letters()
    assert [letter["error"]["code"] for letter in letters] == [
        "bad_request", "validation_failed", "not_found", "illegal_transition", "validation_failed"]
    assert "create_run, patch_stage" in letters[1]["error"]["message"]
    assert letters[4]["error"]["details"][0]["field"] == "create_run.run.extra"
    assert {letter["origin"] for letter in letters} == {"sqs:stagetrack-ingest"}


def test_a_transient_failure_returns_only_that_message_to_the_queue(lam, ctx, monkeypatch):
    runs.create_run(ctx, runs.CreateRunIn.model_validate_json('{"pipeline": "web", "stages": ["BUILD"]}'))
    real = runs.patch_stage

    def busy(ctx_, stage_id, patch):
        if stage_id == "web:1:1":
            raise ConcurrentModification("run 'web:1' is too busy; retry")
        return real(ctx_, stage_id, patch)

    monkeypatch.setattr(runs, "patch_stage", busy)
    bodies = messages({"action": "patch_stage", "stageId": "web:1:1", "patch": {"status": "IN_PROGRESS"}},
                      {"action": "create_run", "run": {"pipeline": "api"}})
    answer = invoke(lam, "ingest_queue", queue_event(lam, bodies, ["m-busy", "m-ok"]))
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-busy"}]}
    assert ctx.stores.runs.load_run("api:1") is not None and dead_letters() == []
    monkeypatch.setattr(runs, "patch_stage", real)
    retried = invoke(lam, "ingest_queue", queue_event(lam, bodies, ["m-busy", "m-ok"]))  # SQS redelivers both
    assert retried == {"batchItemFailures": []}
    assert statuses(ctx, "web:1")[0] == "IN_PROGRESS"
    assert ctx.stores.runs.load_run("api:2") is None  # m-ok was not applied twice


def test_the_same_message_id_is_applied_once(lam, ctx):
    body = messages({"action": "create_run", "run": {"pipeline": "web"}})
    invoke(lam, "ingest_queue", queue_event(lam, body, ["same"]))
    invoke(lam, "ingest_queue", queue_event(lam, body, ["same"]))
    assert ctx.stores.runs.load_run("web:2") is None


def test_operations_arrive_with_their_actor(lam, ctx):
    runs.create_run(ctx, runs.CreateRunIn.model_validate_json('{"pipeline": "web", "stages": ["BUILD"]}'))
    invoke(
        lam,
        "ingest_queue",
        queue_event(
            lam,
            messages(
                {"action": "patch_stage", "stageId": "web:1:1", "patch": {"status": "IN_PROGRESS"}},
                {"action": "cancel_run", "runId": "web:1", "reason": "release frozen"},
                {"action": "retry_run", "runId": "web:1"},
                {
                    "action": "patch_stage",
                    "stageId": "web:1:1",
                    "patch": {"status": "IN_PROGRESS"},
                    "idempotencyKey": "p2",
                },
                {"action": "patch_stage", "stageId": "web:1:1", "patch": {"status": "FAILURE"}},
                {"action": "retry_stage", "stageId": "web:1:1"},
            ),
        ),
    )
    run = runs.get_run(ctx, "web:1")
    assert run.run.cancellation["by"] == "sqs:stagetrack-ingest"
    assert run.run.cancellation["reason"] == "release frozen"
    assert (run.stages[0].attempt, run.stages[0].status.value) == (3, "IDLE")
    assert dead_letters() == []


def test_without_a_dead_letter_queue_bad_messages_go_back_to_the_queue(lam, ctx):
    ctx.settings = Settings(table_name="stagetrack-test", region="us-east-1")
    answer = invoke(lam, "ingest_queue", queue_event(lam, messages("{bad", {"action": "create_run",
                                                                          "run": {"pipeline": "web"}})))
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-0"}]}  # its redrive policy dead-letters it


def test_a_message_failing_every_time_ends_in_the_queues_dead_letter_queue(lam, ctx, clock, monkeypatch):
    """Through real (moto) queues: the poller redelivers a failed message after its visibility
    timeout until maxReceiveCount, then SQS moves it to the queue's dead-letter queue."""
    ctx.settings = Settings(table_name="stagetrack-test", region="us-east-1")  # no direct DLQ
    sqs_time_follows(clock, monkeypatch)
    dlq_url, dlq_arn = make_queue("stagetrack-ingest-redrive-dlq")
    url, arn = make_queue("stagetrack-ingest", VisibilityTimeout=60, RedrivePolicy=json.dumps(
        {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3}))
    aws_client("sqs").send_message(QueueUrl=url, MessageBody="{broken")
    aws_client("sqs").send_message(QueueUrl=url, MessageBody=json.dumps({"action": "create_run",
                                                                          "run": {"pipeline": "web"}}))
    for _ in range(4):
        batch = receive(url)
        if batch:
            failures = invoke(lam, "ingest_queue", sqs_event(batch, arn))["batchItemFailures"]
            delete_done(url, batch, failures)
        clock.advance(61)
    assert receive(url) == []
    assert [m["Body"] for m in receive(dlq_url)] == ["{broken"]
    assert ctx.stores.runs.load_run("web:1") is not None and ctx.stores.runs.load_run("web:2") is None


# ---- the SNS topic --------------------------------------------------------------------------------

def test_an_sns_message_is_applied_and_a_bad_one_dead_lettered(lam, ctx):
    good = lam.events.generate_sns_event(json.dumps({"action": "create_run", "run": {"pipeline": "web"}}))
    assert invoke(lam, "ingest_topic", good)["results"][0]["runId"] == "web:1"
    bad = lam.events.generate_sns_event(json.dumps({"action": "cancel_run"}))
    bad["Records"][0]["Sns"]["MessageId"] = "another"
    assert invoke(lam, "ingest_topic", bad) == {"results": [{"result": "dead-lettered"}]}
    (letter,) = dead_letters()
    assert (
        letter["origin"] == "sns:TopicName" and letter["error"]["details"][0]["field"] == "cancel_run.runId"
    )


def test_an_idempotency_key_applies_once_across_queue_and_topic(lam, ctx):
    body = json.dumps({"action": "create_run", "run": {"pipeline": "web"}, "idempotencyKey": "deploy-42"})
    invoke(lam, "ingest_queue", queue_event(lam, [body], ["sqs-id"]))
    replay = invoke(lam, "ingest_topic", lam.events.generate_sns_event(body))
    assert replay["results"][0]["replayed"] is True
    assert ctx.stores.runs.load_run("web:2") is None


# ---- least privilege ------------------------------------------------------------------------------

def test_the_inbound_functions_call_only_what_their_policies_allow(lam, ctx, monkeypatch):
    body = json.dumps({"action": "create_run", "run": {"pipeline": "web", "stages": ["BUILD"]}})
    with iam_actions(monkeypatch) as actions:
        invoke(lam, "aws_ci_events", load("codepipeline_stage_started"))
        invoke(lam, "aws_ci_events", load("codepipeline_stage_started"))  # replay
        invoke(lam, "aws_ci_events", variant("codepipeline_stage_started", detail={}))  # dead-lettered
    assert {"dynamodb:PutItem", "dynamodb:UpdateItem", "sqs:SendMessage"} <= actions
    assert actions <= allowed_actions("aws_ci_events")
    assert assert_items_allowed(actions, "aws_ci_events") == {"RUN#", "PIPE#", "IDEM#", "LINK#"}
    with iam_actions(monkeypatch) as actions:
        invoke(lam, "ingest_queue", queue_event(lam, messages(body, "{bad", {
            "action": "patch_stage", "stageId": "web:1:1", "patch": {"status": "IN_PROGRESS"}},
            {"action": "cancel_run", "runId": "web:1"}, {"action": "retry_run", "runId": "web:1"})))
    assert actions <= allowed_actions("ingest_queue")
    assert assert_items_allowed(actions, "ingest_queue") == {"RUN#", "PIPE#", "IDEM#", "ATTEMPTS#"}
    with iam_actions(monkeypatch) as actions:
        invoke(lam, "ingest_topic", lam.events.generate_sns_event(body))
    assert actions <= allowed_actions("ingest_topic")
    assert assert_items_allowed(actions, "ingest_topic") == {"RUN#", "PIPE#", "IDEM#"}


def test_variables_and_pause_messages_apply_through_the_queue_handler(lam, ctx):
    """apply_variables, pause_pipeline and unpause_pipeline on the real queue handler and store:
    applied as the HTTP routes apply them, the actor being the queue; a message past the
    routes' limits is dead-lettered naming the field and changes nothing."""
    runs.create_run(ctx, runs.CreateRunIn.model_validate_json('{"pipeline": "web", "stages": ["BUILD"]}'))
    variables = {"action": "apply_variables", "runId": "web:1",
                 "variables": [{"key": "REGION", "value": "eu"},
                               {"key": "TOKEN", "value": "s3cret", "secret": True}]}
    too_many = {"action": "apply_variables", "runId": "web:1",
                "variables": [{"key": "PASSWORD", "value": "hunter2-long", "secret": True},
                              *({"key": f"K{i}", "value": "v"} for i in range(100))]}
    pause = {"action": "pause_pipeline", "pipeline": "web", "cause": "release freeze"}
    answer = invoke(lam, "ingest_queue", queue_event(lam, messages(variables, too_many, pause)))
    assert answer == {"batchItemFailures": []}
    run = ctx.stores.runs.load_run("web:1").run
    assert run.variables == {"REGION": "eu"} and list(run.secrets) == ["TOKEN"]
    assert "s3cret" not in run.secrets["TOKEN"]
    pipeline = ctx.stores.pipelines.get("web")
    assert (pipeline.paused, pipeline.pause_cause, pipeline.paused_by) == (
        True, "release freeze", "sqs:stagetrack-ingest")
    [letter] = dead_letters()
    assert letter["error"]["code"] == "validation_failed"
    assert letter["error"]["details"][0]["field"] == "apply_variables.variables"
    assert "hunter2-long" not in json.dumps(letter)  # a secret is never kept in clear, applied or not
    assert json.loads(letter["message"])["variables"][0] == {"key": "PASSWORD", "value": "[REDACTED]",
                                                             "secret": True}
    assert json.loads(letter["message"])["variables"][1] == {"key": "K0", "value": "v"}
    answer = invoke(lam, "ingest_queue", queue_event(lam, messages(
        {"action": "unpause_pipeline", "pipeline": "web"}), ["m-unpause"]))
    assert answer == {"batchItemFailures": []}
    assert ctx.stores.pipelines.get("web").paused is False


class ProcessDied(BaseException):
    """The Lambda was killed here: nothing after this point runs, cleanup included."""


@pytest.mark.parametrize("action, message", [
    ("create_run", {"action": "create_run", "run": {"pipeline": "web", "stages": ["BUILD"]}}),
    ("retry_stage", {"action": "retry_stage", "stageId": "web:1:1"}),
    ("pause_pipeline", {"action": "pause_pipeline", "pipeline": "web", "cause": "freeze"}),
])
def test_a_message_whose_write_committed_before_the_process_died_is_not_applied_again(
        lam, ctx, clock, monkeypatch, action, message):
    """The action's write carries the delivery's claim (store/repository.py Writer.transact_write):
    a redelivery after the process died between the write and keeping the answer, even after
    the lease, answers from what was written and applies nothing again."""
    from chalicelib.events import messages as wire
    from chalicelib.service import ingest
    from chalicelib.store.idempotency import IdempotencyStore

    if action != "create_run":
        runs.create_run(ctx, runs.CreateRunIn.model_validate_json('{"pipeline": "web", "stages": ["BUILD"]}'))
    if action == "retry_stage":
        runs.patch_stage(ctx, "web:1:1", runs.PatchStageIn.model_validate_json('{"status": "IN_PROGRESS"}'))
        runs.patch_stage(ctx, "web:1:1", runs.PatchStageIn.model_validate_json('{"status": "FAILURE"}'))
    body = messages({**message, "idempotencyKey": "k-1"})
    with monkeypatch.context() as patch:
        def died(*args, **kwargs):
            raise ProcessDied("after the write")

        patch.setattr(IdempotencyStore, "complete", died)
        # a dead process cleans nothing
        patch.setattr(IdempotencyStore, "release", lambda self, *a, **k: None)
        with pytest.raises(ProcessDied):
            wire.ingest_message(ctx, body[0], transport_id="m-1", actor="queue")
    clock.advance(seconds=ingest.RECEIPT_LEASE_SECONDS + 1)
    answer, replayed = wire.ingest_message(ctx, body[0], transport_id="m-2", actor="queue")
    assert replayed and answer["replayedFromEffect"] and answer["action"] == action
    if action == "create_run":
        assert answer["runId"] == "web:1" and ctx.stores.runs.load_run("web:2") is None
    elif action == "pause_pipeline":  # a second pause would be a 409: it was not applied again
        assert (answer["pipeline"], answer["paused"]) == ("web", True)
        assert ctx.stores.pipelines.get("web").pause_cause == "freeze"
    else:
        assert answer["stageId"] == "web:1:1"
        assert [s.attempt for s in ctx.stores.runs.load_run("web:1").stages] == [2]  # one retry, not two
    assert dead_letters() == []
