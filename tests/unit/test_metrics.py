"""Counts in CloudWatch embedded metric format (adapters/metrics.py) and where the service
counts them: runs finished by status (the outbox, from committed changes), timers fired or
stale (expire_stage, behind every timer source), deliveries failed and dead-lettered."""
from __future__ import annotations

import io
import json

import pytest

from chalicelib import wiring
from chalicelib.adapters.http import HttpResult
from chalicelib.adapters.metrics import EmfMetrics
from chalicelib.domain.model import change_status
from chalicelib.domain.schemas import CreateRunIn
from chalicelib.domain.status import StageStatus
from chalicelib.service import outbox, runs
from chalicelib.service.ports import NoMetrics, StoredSubscription
from chalicelib.service.subscriptions import _context
from chalicelib.service.timers import expire_stage
from chalicelib.settings import Settings, SettingsError
from tests.fixtures.clock import FakeClock

S = StageStatus


class Recorded:
    def __init__(self) -> None:
        self.counts: list[tuple[str, int, dict]] = []

    def count(self, name, value=1, dimensions=None):
        self.counts.append((name, value, dict(dimensions or {})))


@pytest.fixture
def clock():
    return FakeClock("2026-03-01T12:00:00.000Z")


@pytest.fixture
def ctx(clock):
    context = wiring.memory_context(Settings(table_name="unused", region="us-east-1"), clock)
    context.metrics = Recorded()
    return context


# ---- the emitter ----------------------------------------------------------------------------------

def test_one_count_is_one_emf_line_on_stdout(clock):
    out = io.StringIO()
    emf = EmfMetrics("Stagetrack/prod", clock, out=lambda: out)
    emf.count("RunsFinished", dimensions={"Status": "SUCCESS"})
    (line,) = out.getvalue().splitlines()
    assert json.loads(line) == {
        "_aws": {"Timestamp": 1772366400000, "CloudWatchMetrics": [{
            "Namespace": "Stagetrack/prod", "Dimensions": [["Status"]],
            "Metrics": [{"Name": "RunsFinished", "Unit": "Count"}]}]},
        "Status": "SUCCESS", "RunsFinished": 1}


def test_a_count_without_dimensions_has_one_empty_dimension_set(clock):
    document = json.loads(EmfMetrics("N", clock).line("DeliveriesFailed", 3))
    assert document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [[]]
    assert document["DeliveriesFailed"] == 3 and set(document) == {"_aws", "DeliveriesFailed"}


@pytest.mark.parametrize("name,value,dimensions", [
    ("", 1, None), ("1st", 1, None), ("Runs Finished", 1, None), ("RunsFinished", -1, None),
    ("RunsFinished", 1.5, None), ("RunsFinished", True, None), ("RunsFinished", 1, {"_aws": "x"}),
    ("RunsFinished", 1, {"Status": ""}), ("RunsFinished", 1, {"RunsFinished": "x"}),
    ("RunsFinished", 1, {f"D{i}": "x" for i in range(31)}),
])
def test_a_malformed_count_is_refused_not_written(clock, name, value, dimensions):
    out = io.StringIO()
    with pytest.raises(ValueError):
        EmfMetrics("N", clock, out=lambda: out).count(name, value, dimensions)
    assert out.getvalue() == ""


def test_metrics_are_written_only_when_a_namespace_is_set(clock):
    assert isinstance(wiring.metrics(Settings(), clock), NoMetrics)
    emf = wiring.metrics(Settings.from_env({"STAGETRACK_METRICS_NAMESPACE": "Stagetrack/prod"}), clock)
    assert isinstance(emf, EmfMetrics) and emf.namespace == "Stagetrack/prod"


@pytest.mark.parametrize("raw", ["AWS/Lambda", "aws/x", "has space", "x" * 256, "a\nb"])
def test_a_namespace_that_cloudwatch_refuses_stops_start_up(raw):
    with pytest.raises(SettingsError, match="STAGETRACK_METRICS_NAMESPACE"):
        Settings.from_env({"STAGETRACK_METRICS_NAMESPACE": raw})


def test_an_empty_namespace_means_no_metrics():
    assert Settings.from_env({"STAGETRACK_METRICS_NAMESPACE": " "}).metrics_namespace is None


# ---- where the service counts ---------------------------------------------------------------------

def _running(ctx, clock, **spec):
    aggregate = runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps(
        {"pipeline": "web", "stages": [{"type": "BUILD", **spec}]})))
    stage_id = aggregate.stages[0].id
    runs.mutate_run(ctx, aggregate.run.id,
                    lambda agg: change_status(agg.stage(stage_id), S.IN_PROGRESS, clock.now()))
    return stage_id


def test_a_timer_that_fires_counts_by_the_status_it_set(ctx, clock):
    stage_id = _running(ctx, clock, timeoutSeconds=5)
    clock.advance(5)
    assert expire_stage(ctx, stage_id, 1) == S.TIMED_OUT
    assert ctx.metrics.counts == [("TimersFired", 1, {"Status": "TIMED_OUT"})]


def test_a_stale_timer_counts_as_stale(ctx, clock):
    stage_id = _running(ctx, clock, timeoutSeconds=5)
    clock.advance(4)
    assert expire_stage(ctx, stage_id, 1) is None  # not due yet
    assert expire_stage(ctx, "web:99:1", 1) is None  # run gone
    assert ctx.metrics.counts == [("TimersStale", 1, {}), ("TimersStale", 1, {})]


def _run_record(old: str | None, new: str, version: int) -> dict:
    def image(status, v):
        return {"pk": {"S": "RUN#web:1"}, "sk": {"S": "RUN"}, "kind": {"S": "run"}, "run_id": {"S": "web:1"},
                "pipeline": {"S": "web"}, "status": {"S": status}, "version": {"N": str(v)},
                "updated_at": {"S": "2026-03-01T12:00:00.000Z"}}
    record = {"eventName": "MODIFY" if old else "INSERT", "dynamodb": {"NewImage": image(new, version)}}
    if old:
        record["dynamodb"]["OldImage"] = image(old, version - 1)
    return record


def test_the_outbox_counts_each_run_that_ends_once_by_status(ctx):
    records = [_run_record(None, "IDLE", 1), _run_record("IDLE", "IN_PROGRESS", 2),
               _run_record("IN_PROGRESS", "FAILURE", 3)]
    outbox.publish(ctx, records, bus=None, deliveries=None)
    assert ctx.metrics.counts == [("RunsFinished", 1, {"Status": "FAILURE"})]


def test_a_retried_run_that_ends_again_counts_again_but_a_final_to_final_change_does_not(ctx):
    records = [_run_record("FAILURE", "IN_PROGRESS", 4), _run_record("IN_PROGRESS", "SUCCESS", 5),
               _run_record("SUCCESS", "CANCELLED", 6)]
    outbox.publish(ctx, records, bus=None, deliveries=None)
    assert ctx.metrics.counts == [("RunsFinished", 1, {"Status": "SUCCESS"})]


class Sender:
    def __init__(self, status):
        self.status = status

    def post(self, url, body, headers):
        return HttpResult(self.status, None if self.status else "refused", 3)


class Queue:
    def __init__(self):
        self.sent = []

    def send(self, body, delay_seconds=0, attributes=None):
        self.sent.append(body)
        return "m"

    def send_batch(self, bodies):
        self.sent.extend(bodies)
        return len(bodies)


def _delivery(ctx, attempt):
    sealed = ctx.box().seal("whsec_0123456789abcdef", _context("sub_1"))
    ctx.stores.subscriptions.insert(StoredSubscription(
        subscription_id="sub_1", url="https://hooks.example.com/x", events=("*",), pipelines=None,
        statuses=None, sealed_secret=sealed, created_at="2026-03-01T12:00:00.000Z"))
    return json.dumps({"v": 1, "deliveryId": "dlv_1", "subscriptionId": "sub_1", "eventId": "e1",
                       "eventType": "run.status-changed", "attempt": attempt, "payload": "{}"})


@pytest.mark.parametrize("status,attempt,counts", [
    (200, 1, []),
    (500, 1, [("DeliveriesFailed", 1, {})]),
    (None, 8, [("DeliveriesFailed", 1, {}), ("DeliveriesDeadLettered", 1, {})]),
])
def test_each_failed_delivery_attempt_counts_and_the_last_one_also_as_dead_lettered(ctx, status, attempt,
                                                                                   counts):
    body = _delivery(ctx, attempt)
    result = outbox.deliver(ctx, body, sender=Sender(status), retries=Queue(), dead_letters=Queue(),
                            max_attempts=8)
    assert result.outcome == {200: "delivered", 500: "retrying", None: "dead-lettered"}[status]
    assert ctx.metrics.counts == counts
