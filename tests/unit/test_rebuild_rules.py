"""The insights rebuild as an API operation, in memory (domain/rebuilds.py, service/insights.py
``start_rebuild``/``run_rebuild``): one at a time, taken for dead after 20 minutes without
progress, its progress and end on its record. The same on moto and DynamoDB Local:
tests/integration/test_insights_rebuild.py, test_store_contract.py, test_insights.py."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.domain import rebuilds
from chalicelib.domain.errors import Conflict
from chalicelib.service import insights
from chalicelib.settings import Settings
from chalicelib.wiring import memory_context
from tests.fixtures.clock import FakeClock

NOW = datetime(2026, 3, 20, 17, 0, tzinfo=UTC)


@pytest.fixture
def ctx():
    return memory_context(Settings(table_name="stagetrack-test", region="us-east-1"),
                          FakeClock("2026-03-20T17:00:00.000Z"))


def test_the_record_words_are_the_apis():
    assert (rebuilds.RUNNING, rebuilds.SUCCEEDED, rebuilds.FAILED) == ("running", "succeeded", "failed")


def test_a_rebuild_is_stale_after_twenty_minutes_without_progress():
    assert rebuilds.STALE_AFTER == timedelta(minutes=20)
    assert rebuilds.stale_before(NOW) == datetime(2026, 3, 20, 16, 40, tzinfo=UTC)


def test_a_failure_is_its_type_and_message_cut_at_500_characters():
    assert rebuilds.failure(RuntimeError("the table is gone")) == "RuntimeError: the table is gone"
    long = rebuilds.failure(ValueError("x" * 1000))
    assert len(long) == 500 and long.startswith("ValueError: xxx")


def test_one_rebuild_at_a_time_until_the_running_one_is_stale(ctx):
    launched: list[str] = []
    first = insights.start_rebuild(ctx, "ops", launched.append)
    assert (first.status, first.by, first.started_at, first.updated_at) == ("running", "ops", NOW, NOW)
    assert first.id.startswith("rb_") and len(first.id) == 35 and launched == [first.id]
    with pytest.raises(Conflict) as refused:
        insights.start_rebuild(ctx, "ops", launched.append)
    assert refused.value.code == "rebuild_running"
    assert str(refused.value) == ("a rebuild is running (started 2026-03-20T17:00:00.000Z); "
                                  "see GET /api/insights/rebuild")
    ctx.clock.advance(20 * 60 - 1)
    with pytest.raises(Conflict):
        insights.start_rebuild(ctx, "ops", launched.append)
    ctx.clock.advance(1)
    second = insights.start_rebuild(ctx, "ops", launched.append)
    assert launched == [first.id, second.id] and second.id != first.id
    assert insights.run_rebuild(ctx, first.id) is None  # taken for dead: it does nothing
    assert insights.rebuild_status(ctx) == second


def test_a_run_records_its_end_and_a_launch_that_fails_fails_the_record(ctx):
    record = insights.start_rebuild(ctx, None, lambda _: None)
    ctx.clock.advance(5)
    done = insights.run_rebuild(ctx, record.id)
    assert done is not None
    assert (done.status, done.pipelines, done.runs, done.error) == ("succeeded", 0, 0, None)
    assert done.finished_at == done.updated_at == NOW + timedelta(seconds=5)
    assert done.items == 0  # nothing stored: the every-pipeline items only, none
    assert insights.run_rebuild(ctx, record.id) is None  # ended: a second invoke does nothing

    def unreachable(_):
        raise ConnectionError("no route to Lambda")

    failed = insights.start_rebuild(ctx, "ops", unreachable)
    assert (failed.status, failed.error) == ("failed", "ConnectionError: no route to Lambda")
    assert insights.rebuild_status(ctx) == failed and failed.finished_at == NOW + timedelta(seconds=5)


def test_without_any_rebuild_the_status_is_404(ctx):
    from chalicelib.domain.errors import NotFound

    with pytest.raises(NotFound):
        insights.rebuild_status(ctx)
