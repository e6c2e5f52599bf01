"""The timer workflow really executing on moto (``execute_state_machine``): a committed change
goes out on the table's stream, the armer starts a Standard execution, its Wait state really
waits (one second here), its Task sends {stageId, attempt} to the timer queue, and the timeout
handler consumes that message and times the stage out. Only the Lambda plumbing is simulated
(stream polling and SQS delivery into chalice's test harness), since moto cannot run Lambda."""
from __future__ import annotations

import json
import time

import boto3
import pytest
from botocore.config import Config
from chalice.test import Client
from moto import mock_aws

from chalicelib import wiring
from chalicelib.adapters import stepfunctions
from chalicelib.adapters.stepfunctions import StepFunctionsScheduler
from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
from chalicelib.domain.status import StageStatus
from chalicelib.events.timers import TIMER_QUEUE
from chalicelib.service import runs
from chalicelib.store.schema import ensure_tables
from infra.part_timers import render_definition

S = StageStatus


class StreamPoller:
    """Reads new records of the table's stream and shapes them as Lambda delivers them."""

    def __init__(self, table: str) -> None:
        # moto's in-process DynamoDB Streams needs this with current botocore.
        self.streams = boto3.client("dynamodbstreams",
                                    config=Config(account_id_endpoint_mode="disabled"))
        self.arn = boto3.client("dynamodb").describe_table(TableName=table)["Table"]["LatestStreamArn"]
        shards = self.streams.describe_stream(StreamArn=self.arn)["StreamDescription"]["Shards"]
        self.iterators = [
            self.streams.get_shard_iterator(StreamArn=self.arn, ShardId=shard["ShardId"],
                                            ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            for shard in shards
        ]

    def poll(self) -> dict:
        records = []
        for n, iterator in enumerate(self.iterators):
            page = self.streams.get_records(ShardIterator=iterator)
            self.iterators[n] = page["NextShardIterator"]
            for record in page["Records"]:
                record["eventSourceARN"] = self.arn
                created = record["dynamodb"]["ApproximateCreationDateTime"]
                record["dynamodb"]["ApproximateCreationDateTime"] = created.timestamp()
                records.append(record)
        return {"Records": records}


class Harness:
    def __init__(self, ctx, table, queue_url, machine_arn, lambdas):
        self.ctx = ctx
        self.stream = StreamPoller(table)
        self.sqs = boto3.client("sqs")
        self.sfn = boto3.client("stepfunctions")
        self.queue_url = queue_url
        self.machine_arn = machine_arn
        self.lambdas = lambdas

    def deliver_stream(self):
        """What Lambda's event source mapping does for the armer."""
        return self.lambdas.lambda_.invoke("timer_armer", self.stream.poll())

    def executions(self):
        return self.sfn.list_executions(stateMachineArn=self.machine_arn)["executions"]

    def wait_for(self, execution_arn, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            described = self.sfn.describe_execution(executionArn=execution_arn)
            if described["status"] != "RUNNING":
                return described
            time.sleep(0.05)
        raise AssertionError("execution did not finish")

    def deliver_queue(self):
        """What Lambda's SQS event source mapping does for the timeout handler."""
        messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get(
            "Messages", []
        )
        bodies = [m["Body"] for m in messages]
        if bodies:
            event = self.lambdas.events.generate_sqs_event(message_bodies=bodies, queue_name=TIMER_QUEUE)
            self.lambdas.lambda_.invoke("timer_fired", event)
            for message in messages:
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return [json.loads(b) for b in bodies]


@pytest.fixture
def harness(settings, clock):
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        ensure_tables(settings)
        ctx = wiring.dynamo_context(settings, clock)
        wiring.override(ctx)
        queue_url = boto3.client("sqs").create_queue(QueueName=TIMER_QUEUE)["QueueUrl"]
        machine_arn = boto3.client("stepfunctions").create_state_machine(
            name="stagetrack-timers", definition=render_definition(queue_url),
            roleArn="arn:aws:iam::123456789012:role/stagetrack-timers", type="STANDARD",
        )["stateMachineArn"]
        stepfunctions.override(StepFunctionsScheduler(machine_arn))
        from app import app

        with Client(app) as lambdas:
            h = Harness(ctx, settings.table_name, queue_url, machine_arn, lambdas)
            yield h
            for execution in h.executions():  # never leave a workflow running past the mock
                if execution["status"] == "RUNNING":
                    h.wait_for(execution["executionArn"])
        stepfunctions.override(None)
        wiring.override(None)


def _run(ctx, *stages):
    return runs.create_run(
        ctx, CreateRunIn.model_validate_json(json.dumps({"pipeline": "web", "stages": list(stages)}))
    )


def test_workflow_waits_then_hands_the_stage_to_the_timeout_handler(harness, clock):
    ctx = harness.ctx
    aggregate = _run(ctx, {"type": "BUILD", "timeoutSeconds": 30}, "DEPLOY_PROD")
    build = aggregate.stages[0].id
    runs.patch_stage(ctx, build, PatchStageIn(status=S.IN_PROGRESS))
    clock.advance(29)

    started = time.monotonic()
    harness.deliver_stream()  # the run's and stages' INSERTs arm nothing; the start arms one
    [execution] = harness.executions()
    described = harness.sfn.describe_execution(executionArn=execution["executionArn"])
    assert described["status"] == "RUNNING"
    assert json.loads(described["input"]) == {
        "stageId": build, "attempt": 1, "dueAt": "2026-03-20T17:17:43.760Z", "waitSeconds": 1}

    clock.advance(1)  # the fake clock reaches the deadline while the workflow really waits
    assert harness.wait_for(execution["executionArn"])["status"] == "SUCCEEDED"
    assert time.monotonic() - started >= 0.9  # the Wait state waited its second
    assert harness.deliver_queue() == [{"stageId": build, "attempt": 1, "dueAt": "2026-03-20T17:17:43.760Z"}]

    loaded = runs.get_run(ctx, aggregate.run.id)
    assert [s.status for s in loaded.stages] == [S.TIMED_OUT, S.IDLE]
    assert loaded.run.status == S.TIMED_OUT
    assert loaded.stages[0].duration_ms == 30_000

    harness.deliver_stream()  # the TIMED_OUT write arms nothing new
    assert len(harness.executions()) == 1


def test_a_stale_workflow_changes_nothing_and_a_redelivered_record_starts_none(harness, clock):
    ctx = harness.ctx
    aggregate = _run(ctx, {"type": "BUILD", "timeoutSeconds": 1})
    build = aggregate.stages[0].id
    runs.patch_stage(ctx, build, PatchStageIn(status=S.IN_PROGRESS))
    event = harness.stream.poll()
    harness.lambdas.lambda_.invoke("timer_armer", event)
    harness.lambdas.lambda_.invoke("timer_armer", event)  # at-least-once delivery
    [execution] = harness.executions()

    done = runs.patch_stage(ctx, build, PatchStageIn(status=S.SUCCESS))  # finishes in time
    clock.advance(5)
    assert harness.wait_for(execution["executionArn"])["status"] == "SUCCEEDED"
    assert harness.deliver_queue() == [{"stageId": build, "attempt": 1, "dueAt": "2026-03-20T17:17:14.760Z"}]
    assert ctx.stores.runs.get_stage(build) == done  # the late timer found it final: nothing written


def test_a_stage_that_ends_early_stops_its_workflow_so_nothing_is_sent(harness, clock):
    ctx = harness.ctx
    aggregate = _run(ctx, {"type": "BUILD", "timeoutSeconds": 600})
    build = aggregate.stages[0].id
    runs.patch_stage(ctx, build, PatchStageIn(status=S.IN_PROGRESS))
    harness.deliver_stream()
    [execution] = harness.executions()
    assert execution["status"] == "RUNNING"

    clock.advance(60)
    runs.patch_stage(ctx, build, PatchStageIn(status=S.SUCCESS))
    harness.deliver_stream()  # the SUCCESS write makes the timer stale: its execution is stopped
    assert harness.wait_for(execution["executionArn"])["status"] == "ABORTED"
    assert harness.deliver_queue() == []
    assert len(harness.executions()) == 1


def test_a_new_deadline_stops_the_old_workflow_and_starts_one_for_the_new(harness, clock):
    ctx = harness.ctx
    aggregate = _run(ctx, {"type": "BUILD", "timeoutSeconds": 600})
    build = aggregate.stages[0].id
    runs.patch_stage(ctx, build, PatchStageIn(status=S.IN_PROGRESS))
    harness.deliver_stream()
    [first] = harness.executions()

    runs.patch_stage(ctx, build, PatchStageIn.model_validate({"timeoutSeconds": 900}))
    harness.deliver_stream()
    harness.wait_for(first["executionArn"])
    by_status = {e["status"]: e for e in harness.executions()}
    assert set(by_status) == {"ABORTED", "RUNNING"}
    assert by_status["ABORTED"]["executionArn"] == first["executionArn"]
    second = harness.sfn.describe_execution(executionArn=by_status["RUNNING"]["executionArn"])
    assert json.loads(second["input"])["waitSeconds"] == 900

    runs.delete_run(ctx, aggregate.run.id)  # a removed stage's timer is stale too
    harness.deliver_stream()
    harness.wait_for(by_status["RUNNING"]["executionArn"])
    assert {e["status"] for e in harness.executions()} == {"ABORTED"}
    assert harness.deliver_queue() == []


def test_a_deadline_past_the_horizon_starts_no_workflow_and_the_sweeper_fires_it(harness, clock):
    from chalicelib.service.timers import sweep

    ctx = harness.ctx
    horizon = ctx.settings.timer_horizon_seconds
    aggregate = _run(ctx, {"type": "BUILD", "timeoutSeconds": horizon + 1},
                     {"type": "UNIT_TEST", "timeoutSeconds": horizon})
    build, test = (s.id for s in aggregate.stages)
    runs.patch_stage(ctx, build, PatchStageIn(status=S.IN_PROGRESS))
    runs.patch_stage(ctx, test, PatchStageIn(status=S.IN_PROGRESS))
    harness.deliver_stream()
    [execution] = harness.executions()  # only the stage due within the horizon waits in one
    assert json.loads(harness.sfn.describe_execution(executionArn=execution["executionArn"])["input"])[
        "stageId"] == test
    runs.patch_stage(ctx, test, PatchStageIn(status=S.SUCCESS))
    harness.deliver_stream()
    assert harness.wait_for(execution["executionArn"])["status"] == "ABORTED"

    clock.advance(horizon)
    assert sweep(ctx).fired == {}
    clock.advance(1)
    assert sweep(ctx).fired == {"TIMED_OUT": 1}  # within the minute the sweeper runs in
    assert runs.get_run(ctx, aggregate.run.id).stages[0].status == S.TIMED_OUT
    harness.deliver_stream()
    assert len(harness.executions()) == 1
