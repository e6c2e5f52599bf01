"""Attempt history on the in-memory stores: the rules (what a retry stores, the count, which
numbers a stage has), the views (current attempt and count by default, history when asked for)
and the services that read it."""
from __future__ import annotations

import pytest

from chalicelib.domain.errors import NotFound
from chalicelib.domain.events import ExternalUpdate, StageUpdate, apply_update
from chalicelib.domain.model import StageSpec, change_status, new_run
from chalicelib.domain.operations import new_attempt, retry_run
from chalicelib.domain.status import StageStatus as S
from chalicelib.domain.views import attempt_view, run_view, stage_view
from chalicelib.service import commands, operations, runs

SPECS = [StageSpec(type="BUILD", name="build"), StageSpec(type="DEPLOY_PROD", name="deploy")]


def stored_run(ctx):
    counter, _ = ctx.stores.pipelines.claim_counter("web")
    aggregate = new_run("web", counter, SPECS, ctx.clock.now())
    ctx.stores.runs.insert_run(aggregate)
    return aggregate


def run_and_fail(ctx, stage_id):
    for status in (S.IN_PROGRESS, S.FAILURE):
        ctx.clock.advance(5)
        runs.mutate_run(ctx, runs.run_id_of_stage(stage_id),
                        lambda a, status=status: change_status(a.stage(stage_id), status, ctx.clock.now()))


def test_a_retry_stores_the_ended_attempt_apart_from_the_stage(memory_ctx):
    ctx = memory_ctx
    build = stored_run(ctx).stages[0].id
    run_and_fail(ctx, build)
    retried = commands.execute(ctx, commands.RetryStage(build), actor="alice")
    assert (retried.attempt, retried.attempt_count, retried.attempts) == (2, 2, [])
    assert ctx.stores.runs.load_run("web:1").stages[0].attempts == []  # the run's load reads no history
    items, cursor = runs.stage_attempts(ctx, build, 10, None)
    assert cursor is None
    assert [(a["attempt"], a["status"], a["duration"]) for a in items] == [(1, "FAILURE", 5)]
    assert runs.ended_attempt(ctx, retried, 1) == items[0]
    assert [runs.ended_attempt(ctx, retried, n) for n in (0, 2, 3)] == [None, None, None]
    with pytest.raises(NotFound):
        runs.stage_attempts(ctx, "web:1:9", 10, None)


def test_a_run_keeps_its_start_when_every_stage_is_retried(memory_ctx):
    """The run's start was derived from its stages' attempts; the ended ones are no longer
    loaded with it, so the run keeps the start it had."""
    ctx = memory_ctx
    aggregate = stored_run(ctx)
    for stage in aggregate.stages:
        run_and_fail(ctx, stage.id)
    first_start = ctx.stores.runs.load_run("web:1").run.started_at
    ctx.clock.advance(60)
    retried = commands.execute(ctx, commands.RetryRun("web:1", "ALL"), actor="alice")
    assert {s.started_at for s in retried.stages} == {None}
    assert retried.run.started_at == first_start == ctx.stores.runs.load_run("web:1").run.started_at
    # the next change reloads the run without its history: the start stays all the same
    renamed = runs.mutate_run(ctx, "web:1", lambda a: setattr(a.stages[0], "name", "compile") or True)
    assert renamed.run.started_at == first_start


def update(stage: StageUpdate) -> ExternalUpdate:
    return ExternalUpdate(namespace="github:main", run_key="1", pipeline="web", stages=(stage,))


def test_a_sender_s_later_attempt_archives_the_ones_in_between_and_counts_from_the_first_seen(memory_ctx):
    ctx = memory_ctx
    aggregate = stored_run(ctx)
    now = ctx.clock.now()
    before = aggregate.snapshot()
    apply_update(aggregate, update(StageUpdate(name="lint", status=S.IN_PROGRESS, attempt=3)), now,
                 actor="github")
    lint = aggregate.stages[2]
    assert (lint.first_attempt, lint.attempt, lint.attempt_count) == (3, 3, 1)
    apply_update(aggregate, update(StageUpdate(name="lint", status=S.SUCCESS, attempt=5)), now,
                 actor="github")
    assert (lint.attempt, lint.attempt_count, [a["attempt"] for a in lint.attempts]) == (5, 3, [3, 4])
    assert [lint.has_attempt(n) for n in (2, 3, 5, 6)] == [False, True, True, False]
    aggregate.refresh(now)
    ctx.stores.runs.save(before, aggregate)
    stored = ctx.stores.runs.get_stage(lint.id)
    assert [a["attempt"] for a in runs.stage_attempts(ctx, lint.id, 10, None)[0]] == [4, 3]
    assert stored.attempt_count == 3 and stored.attempts == []


def test_gocd_cancel_of_an_ended_attempt_is_a_no_op_and_of_one_never_had_a_404(memory_ctx):
    ctx = memory_ctx
    build = stored_run(ctx).stages[0].id
    run_and_fail(ctx, build)
    commands.execute(ctx, commands.RetryStage(build), actor="alice")
    before = ctx.stores.runs.load_run("web:1")
    assert operations.cancel_stage_attempt(ctx, "web", 1, "build", 1, actor="ops").attempt == 2
    assert ctx.stores.runs.load_run("web:1") == before  # nothing written
    with pytest.raises(NotFound):
        operations.cancel_stage_attempt(ctx, "web", 1, "build", 3, actor="ops")


def test_views_show_the_current_attempt_and_a_count_the_history_when_asked_for(memory_ctx):
    ctx = memory_ctx
    aggregate = new_run("web", 1, SPECS, ctx.clock.now())
    build = aggregate.stages[0]
    change_status(build, S.IN_PROGRESS, ctx.clock.now())
    change_status(build, S.FAILURE, ctx.clock.now())
    retry_run(aggregate, "FAILED", ctx.clock.now())
    ended = build.attempts[0]
    view = stage_view(build, ctx.clock.now())
    assert (view["attempt"], view["attemptCount"], "attempts" in view) == (2, 2, False)
    assert stage_view(build, ctx.clock.now(), [ended])["attempts"] == [attempt_view(ended)]
    assert set(attempt_view(ended)) == {"attempt", "status", "startedAt", "endedAt", "duration",
                                        "approvalDecision"}
    shown = run_view(aggregate, ctx.clock.now(), {build.id: [ended]})
    assert [s["attempts"] for s in shown["stages"]] == [[attempt_view(ended)], []]
    assert all("attempts" not in s for s in run_view(aggregate, ctx.clock.now())["stages"])


def test_the_cap_on_attempts_holds(memory_ctx):
    aggregate = new_run("web", 1, SPECS, memory_ctx.clock.now())
    build = aggregate.stages[0]
    for _ in range(98):
        new_attempt(build, memory_ctx.clock.now())
    new_attempt(build, memory_ctx.clock.now())
    assert build.attempt == 100 and len(build.attempts) == 99
    with pytest.raises(Exception, match="100 attempts"):
        new_attempt(build, memory_ctx.clock.now())
