"""The NEWEST queue discipline of concurrency groups (GitHub's one pending run per group): a new
waiting run replaces the one waiting, cancelled ("replaced by run <id>") in the transaction that
queues the new one. The pure rule, then the service and the API on the in-memory stores; the
race is on DynamoDB Local (tests/integration/test_concurrency_groups_local.py), the store's
write in the group store contract (tests/integration/test_group_store_contract.py)."""
from __future__ import annotations

import json

import pytest
from chalice.test import Client

from chalicelib.domain.concurrency import (
    MAX_QUEUE,
    QUEUE,
    START,
    SUPERSEDE,
    Group,
    Mode,
    Queue,
    Setting,
    admit,
    place,
)
from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
from chalicelib.domain.status import StageStatus as S
from chalicelib.service import concurrency, operations, runs
from tests.fixtures.api import ApiClient

Q, P, X = Mode.QUEUED, Mode.PARALLEL, Mode.SUPERSEDED
ALL, NEWEST = Queue.ALL, Queue.NEWEST


# ---- the pure rule ----------------------------------------------------------------------------------

def test_newest_makes_the_new_run_the_only_one_waiting_and_names_those_it_replaces():
    held = Group("web", "g", active="web:1", version=4)
    first = admit(held, "web:2", Q, NEWEST)
    assert (first.kind, first.group.active, first.group.queue, first.replaced) == (
        QUEUE, "web:1", ("web:2",), ())
    second = admit(first.group, "web:3", Q, NEWEST)
    assert (second.kind, second.group.queue, second.replaced, second.superseded) == (
        QUEUE, ("web:3",), ("web:2",), None)
    assert second.group.version == first.group.version == 4  # conditioned on the version read


def test_newest_replaces_every_run_waiting_and_is_never_full():
    full = Group("web", "g", active="web:1", queue=tuple(f"web:{n}" for n in range(2, 2 + MAX_QUEUE)))
    admission = admit(full, "web:99", Q, NEWEST)
    assert admission.group.queue == ("web:99",) and admission.replaced == full.queue


def test_newest_takes_a_free_group_and_leaves_superseded_as_it_was():
    assert admit(Group("web", "g"), "web:1", Q, NEWEST).kind == START
    superseding = admit(Group("web", "g", active="web:1", queue=("web:2",)), "web:3", X, NEWEST)
    assert (superseding.kind, superseding.group.queue, superseding.replaced) == (SUPERSEDE, ("web:2",), ())


def test_all_is_the_default_and_appends():
    admission = admit(Group("web", "g", active="web:1", queue=("web:2",)), "web:3", Q)
    assert (admission.group.queue, admission.replaced) == (("web:2", "web:3"), ())


@pytest.mark.parametrize("stored,expected", [
    (None, Setting()), ({"mode": "QUEUED", "group": None}, Setting(Q, None, ALL)),  # stored before queue
    ({"mode": "QUEUED", "group": "g", "queue": "NEWEST"}, Setting(Q, "g", NEWEST)),
])
def test_the_setting_keeps_its_queue_and_defaults_to_all(stored, expected):
    assert Setting.of(stored) == expected
    assert Setting.of(expected.as_dict()) == expected


@pytest.mark.parametrize("setting,run_group,expected", [
    (Setting(Q, None, NEWEST), None, ("web", Q, NEWEST)),
    (Setting(P, None, NEWEST), "pr-7", ("pr-7", Q, NEWEST)),  # a PARALLEL pipeline's named groups
    (Setting(P, None, NEWEST), None, None),
    (Setting(Q), "pr-7", ("pr-7", Q, ALL)),
])
def test_place_carries_the_queue_discipline(setting, run_group, expected):
    placed = place("web", setting, run_group)
    assert (None if placed is None else (placed.group, placed.mode, placed.queue)) == expected


# ---- the service on the in-memory stores ---------------------------------------------------------

def create(ctx, pipeline="web", stages=("BUILD",), **extra):
    body = {"pipeline": pipeline, "stages": list(stages), **extra}
    return runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps(body)), actor="alice")


def status(ctx, run_id):
    return runs.get_run(ctx, run_id).run.status


def finish(ctx, run_id):
    runs.patch_stage(ctx, f"{run_id}:1", PatchStageIn(status=S.IN_PROGRESS))
    runs.patch_stage(ctx, f"{run_id}:1", PatchStageIn(status=S.SUCCESS))


def newest(ctx, pipeline="web"):
    create(ctx, pipeline)
    finish(ctx, f"{pipeline}:1")
    concurrency.set_setting(ctx, pipeline, Q, None, NEWEST)


def test_a_new_waiting_run_replaces_the_one_waiting(memory_ctx, clock):
    newest(memory_ctx)
    create(memory_ctx)  # web:2 holds the group
    create(memory_ctx)  # web:3 waits
    clock.advance(5)
    create(memory_ctx, stages=("BUILD", "DEPLOY_PROD"))  # web:4 replaces web:3
    replaced = runs.get_run(memory_ctx, "web:3")
    assert (replaced.run.status, replaced.run.queued, [s.status for s in replaced.stages]) == (
        S.CANCELLED, False, [S.CANCELLED])
    assert replaced.run.cancellation == {"by": "alice", "at": "2026-03-20T17:17:18.760Z",
                                         "reason": "replaced by run web:4", "stageId": None, "force": True}
    assert status(memory_ctx, "web:4") == S.QUEUED
    group = memory_ctx.stores.groups.get("web", "web")
    assert (group.active, group.queue) == ("web:2", ("web:4",))
    finish(memory_ctx, "web:2")  # the newest starts when the group frees
    assert status(memory_ctx, "web:4") == S.IDLE and status(memory_ctx, "web:3") == S.CANCELLED


def test_a_replaced_run_runs_no_finally_stage(memory_ctx):
    newest(memory_ctx)
    create(memory_ctx)
    cleanup = [{"type": "BUILD"}, {"type": "OTHER", "name": "cleanup", "always": True}]
    body = {"pipeline": "web", "stages": cleanup, "autoAdvance": True}
    runs.create_run(memory_ctx, CreateRunIn.model_validate_json(json.dumps(body)), actor="alice")
    create(memory_ctx)
    replaced = runs.get_run(memory_ctx, "web:3")
    assert (replaced.run.status, [s.status for s in replaced.stages]) == (
        S.CANCELLED, [S.CANCELLED, S.SKIPPED])


def test_a_run_waiting_that_was_cancelled_meanwhile_is_dropped_not_cancelled_again(memory_ctx):
    newest(memory_ctx)
    create(memory_ctx)
    create(memory_ctx)
    operations.cancel_run(memory_ctx, "web:3", actor="bob", reason="not this one")
    create(memory_ctx)
    assert runs.get_run(memory_ctx, "web:3").run.cancellation["reason"] == "not this one"
    assert memory_ctx.stores.groups.get("web", "web").queue == ("web:4",)


def test_switching_from_all_to_newest_replaces_every_run_that_waited(memory_ctx):
    create(memory_ctx)
    finish(memory_ctx, "web:1")
    concurrency.set_setting(memory_ctx, "web", Q, None)
    for _ in range(4):
        create(memory_ctx)  # web:2 holds, web:3..5 wait in order
    assert memory_ctx.stores.groups.get("web", "web").queue == ("web:3", "web:4", "web:5")
    concurrency.set_setting(memory_ctx, "web", Q, None, NEWEST)
    create(memory_ctx)
    assert [status(memory_ctx, f"web:{n}") for n in (2, 3, 4, 5, 6)] == [
        S.IDLE, S.CANCELLED, S.CANCELLED, S.CANCELLED, S.QUEUED]
    assert {runs.get_run(memory_ctx, f"web:{n}").run.cancellation["reason"] for n in (3, 4, 5)} == {
        "replaced by run web:6"}
    group = memory_ctx.stores.groups.get("web", "web")
    assert (group.active, group.queue) == ("web:2", ("web:6",))


def test_a_parallel_pipelines_named_group_follows_its_queue_setting(memory_ctx):
    create(memory_ctx)
    concurrency.set_setting(memory_ctx, "web", P, None, NEWEST)
    for _ in range(3):
        create(memory_ctx, concurrencyGroup="pr-7")
    create(memory_ctx)  # no group: PARALLEL
    assert [status(memory_ctx, f"web:{n}") for n in (2, 3, 4, 5)] == [
        S.IDLE, S.CANCELLED, S.QUEUED, S.IDLE]


def test_an_idempotent_create_replacing_several_records_the_new_run(memory_ctx):
    """The older runs are replaced in writes of their own that do not carry the create's
    Idempotency-Key commit: the key's record names the run created, not a run replaced."""
    create(memory_ctx)
    concurrency.set_setting(memory_ctx, "web", Q, None)
    for _ in range(3):
        create(memory_ctx)
    concurrency.set_setting(memory_ctx, "web", Q, None, NEWEST)
    from app import app

    with Client(app) as client:
        api = ApiClient(client, admin_token=memory_ctx.settings.admin_token)
        headers = {"Idempotency-Key": "make-5"}
        first = api.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]}, headers=headers)
        again = api.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]}, headers=headers)
    assert first.status_code == 201, first.body
    assert (first.json["id"], first.json["status"]) == ("web:5", "QUEUED")
    assert again.json["id"] == "web:5" and again.headers.get("Idempotent-Replayed") == "true"
    records = list(memory_ctx.stores.idempotency.db.idempotency.values())
    assert [record["effect"] for record in records] == [{"run": "web:5"}]  # what a crash replays
    assert [status(memory_ctx, f"web:{n}") for n in (3, 4, 5)] == [S.CANCELLED, S.CANCELLED, S.QUEUED]


# ---- the API ---------------------------------------------------------------------------------------

@pytest.fixture
def api(memory_ctx):
    from app import app

    with Client(app) as client:
        yield ApiClient(client, admin_token=memory_ctx.settings.admin_token)


def test_put_concurrency_with_queue_newest_and_the_replaced_run_as_read(api):
    api.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    response = api.put("/api/pipelines/web/concurrency", {"mode": "QUEUED", "queue": "NEWEST"})
    assert response.status_code == 200, response.body
    assert response.json["concurrency"] == {"mode": "QUEUED", "group": None, "queue": "NEWEST"}
    for _ in range(3):
        api.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    replaced = api.get("/api/runs/web:3").json
    assert (replaced["status"], replaced["concurrencyGroup"]) == ("CANCELLED", "web")
    assert {k: replaced["cancellation"][k] for k in ("by", "reason", "stageId")} == {
        "by": "bootstrap admin", "reason": "replaced by run web:4", "stageId": None}
    assert [s["status"] for s in replaced["stages"]] == ["CANCELLED"]
    waiting = api.get("/api/runs?pipeline=web&status=QUEUED").json
    assert [run["id"] for run in waiting["items"]] == ["web:4"]
    all_again = api.put("/api/pipelines/web/concurrency", {"mode": "QUEUED"})
    assert all_again.json["concurrency"]["queue"] == "ALL"  # a PUT replaces the whole setting


@pytest.mark.parametrize("body,field", [
    ({"mode": "SUPERSEDED", "queue": "NEWEST"}, "queue"),
    ({"mode": "QUEUED", "queue": "LATEST"}, "queue"),
    ({"mode": "QUEUED", "queue": "newest"}, "queue"),
    ({"mode": "QUEUED", "queue": 1}, "queue"),
])
def test_put_concurrency_refuses_a_bad_queue_and_changes_nothing(api, body, field):
    api.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    response = api.put("/api/pipelines/web/concurrency", body)
    assert response.status_code == 422, response.body
    assert response.json["error"]["code"] == "validation_failed"
    assert [d["field"] for d in response.json["error"]["details"]] == [field]
    assert api.get("/api/pipelines/web/status").json["concurrency"] == {
        "mode": "PARALLEL", "group": None, "queue": "ALL"}


def test_superseded_with_queue_all_is_accepted(api):
    api.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    response = api.put("/api/pipelines/web/concurrency", {"mode": "SUPERSEDED", "queue": "ALL"})
    assert response.status_code == 200 and response.json["concurrency"]["queue"] == "ALL"


def test_switching_to_newest_with_a_full_queue_replaces_all_fifty(memory_ctx):
    create(memory_ctx)
    concurrency.set_setting(memory_ctx, "web", Q, None)
    for _ in range(1 + MAX_QUEUE):
        create(memory_ctx)  # web:2 holds, web:3..52 wait
    concurrency.set_setting(memory_ctx, "web", Q, None, NEWEST)
    create(memory_ctx)
    last = 3 + MAX_QUEUE
    assert [status(memory_ctx, f"web:{n}") for n in range(3, last)] == [S.CANCELLED] * MAX_QUEUE
    assert memory_ctx.stores.groups.get("web", "web").queue == (f"web:{last}",)
