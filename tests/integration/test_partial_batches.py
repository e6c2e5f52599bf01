"""Partial batch responses (issue 16 item 5): every queue consumer and the timer armer's stream
report exactly the items that failed in ``batchItemFailures`` (their event sources carry
``FunctionResponseTypes: [ReportBatchItemFailures]``, tests/integration/test_capture.py), so one
bad item neither fails the whole batch nor is lost."""
from __future__ import annotations

import json

import pytest
from chalice.test import Client
from moto import mock_aws

from chalicelib import wiring
from chalicelib.adapters import stepfunctions
from chalicelib.domain.schemas import PatchStageIn
from chalicelib.domain.status import StageStatus
from chalicelib.service import runs
from chalicelib.service import timers as timer_service
from chalicelib.store.schema import ensure_tables
from tests.integration.test_state_machine import StreamPoller, _run
from tests.integration.test_timer_handlers import running_stage_past_its_time

S = StageStatus


class FlakyScheduler:
    """Starts timers (records them), except for the stages in ``broken``: those raise, as a
    throttled or unavailable Step Functions does."""

    def __init__(self, broken: set[str]) -> None:
        self.broken = broken
        self.started: list[str] = []

    def start(self, timer, wait_seconds) -> None:
        if timer.stage_id in self.broken:
            raise RuntimeError("ThrottlingException")
        self.started.append(timer.stage_id)


@pytest.fixture
def armed_world(settings, clock):
    with mock_aws():
        ensure_tables(settings)
        ctx = wiring.dynamo_context(settings, clock)
        wiring.override(ctx)
        from app import app

        with Client(app) as lambdas:
            yield ctx, StreamPoller(settings.table_name), lambdas
        stepfunctions.override(None)
        wiring.override(None)


def _started_stage_records(ctx, stream, count):
    """``count`` timed stages started; the stream event and the stage ids in stream order."""
    stage_ids = []
    for _ in range(count):
        aggregate = _run(ctx, {"type": "BUILD", "timeoutSeconds": 30})
        stage_ids.append(aggregate.stages[0].id)
        runs.patch_stage(ctx, stage_ids[-1], PatchStageIn(status=S.IN_PROGRESS))
    return stream.poll(), stage_ids


def _sequence_of_start(event, stage_id) -> str:
    """The sequence number of the record that started ``stage_id`` (the one that arms it)."""
    for record in event["Records"]:
        image = record["dynamodb"].get("NewImage", {})
        if record["eventName"] == "MODIFY" and json.dumps(image).count(stage_id) and \
                image.get("kind", {}).get("S") == "stage":
            return record["dynamodb"]["SequenceNumber"]
    raise AssertionError(f"no record starts {stage_id}")


def test_the_timer_armer_reports_the_first_record_it_could_not_arm(armed_world):
    ctx, stream, lambdas = armed_world
    event, (first, second, third) = _started_stage_records(ctx, stream, 3)
    scheduler = FlakyScheduler(broken={second})
    stepfunctions.override(scheduler)  # type: ignore[arg-type]

    answer = lambdas.lambda_.invoke("timer_armer", event).payload

    assert answer == {"batchItemFailures": [{"itemIdentifier": _sequence_of_start(event, second)}]}
    # the one before it is armed (and not again on the retry, which starts at `second`);
    # the ones after it wait for the retry, so the stream's order holds
    assert scheduler.started == [first]

    scheduler.broken.clear()
    retried = {"Records": [r for r in event["Records"]
                           if int(r["dynamodb"]["SequenceNumber"])
                           >= int(_sequence_of_start(event, second))]}
    assert lambdas.lambda_.invoke("timer_armer", retried).payload == {"batchItemFailures": []}
    assert scheduler.started == [first, second, third]


def test_the_timer_armer_reports_nothing_when_every_record_is_armed(armed_world):
    ctx, stream, lambdas = armed_world
    event, stage_ids = _started_stage_records(ctx, stream, 2)
    scheduler = FlakyScheduler(broken=set())
    stepfunctions.override(scheduler)  # type: ignore[arg-type]
    assert lambdas.lambda_.invoke("timer_armer", event).payload == {"batchItemFailures": []}
    assert scheduler.started == stage_ids


def test_timer_fired_reports_exactly_the_message_that_failed(memory_ctx, clock, monkeypatch):
    from app import app

    good = running_stage_past_its_time(memory_ctx, clock, '"timeoutSeconds":5')
    bad = "web:999:1"
    real = timer_service.expire_stage
    calls = []

    def expire(ctx, stage_id, attempt):
        calls.append(stage_id)
        if stage_id == bad:
            raise RuntimeError("lost a write race")
        return real(ctx, stage_id, attempt)

    monkeypatch.setattr(timer_service, "expire_stage", expire)
    bodies = [json.dumps({"stageId": bad, "attempt": 1}), "not json",
              json.dumps({"stageId": good, "attempt": 1})]
    with Client(app) as lambdas:
        event = lambdas.events.generate_sqs_event(message_bodies=bodies, queue_name="stagetrack-timers")
        answer = lambdas.lambda_.invoke("timer_fired", event).payload
    assert answer == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    assert calls == [bad, good]  # the failure did not stop the rest of the batch
    assert memory_ctx.stores.runs.get_stage(good).status == S.TIMED_OUT
