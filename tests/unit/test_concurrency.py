"""Concurrency groups (issue 15 item 2): the pure rules, then the service and the API on the
in-memory stores. The races are on DynamoDB Local (tests/integration/test_concurrency_groups_local.py),
the round trips on moto (tests/integration/test_concurrency_groups_cost.py)."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
from chalice.test import Client

from chalicelib.domain.concurrency import (
    MAX_QUEUE,
    QUEUE,
    START,
    SUPERSEDE,
    Group,
    GroupBusy,
    Mode,
    QueueFull,
    Setting,
    admit,
    place,
    queue_place,
    reacquire,
    release,
)
from chalicelib.domain.errors import Conflict, ValidationFailed
from chalicelib.domain.model import StageSpec, new_run
from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
from chalicelib.domain.status import StageStatus as S
from chalicelib.service import commands, concurrency, operations, pipelines, runs
from chalicelib.service import timers as timer_service
from tests.fixtures.api import ApiClient

Q, P, X = Mode.QUEUED, Mode.PARALLEL, Mode.SUPERSEDED


# ---- the pure rules ------------------------------------------------------------------------------

@pytest.mark.parametrize("setting,run_group,expected", [
    (Setting(), None, None),
    (Setting(P, "shared"), None, None),  # a PARALLEL pipeline's default group is never used
    (Setting(), "deploy", ("deploy", Q)),  # naming a group asks for no overlap: QUEUED
    (Setting(Q), None, ("web", Q)),
    (Setting(Q, "prod"), None, ("prod", Q)),
    (Setting(X), None, ("web", X)),
    (Setting(X, "prod"), "pr-7", ("pr-7", X)),  # the run's group, the pipeline's mode
    (Setting(Q, "prod"), "pr-7", ("pr-7", Q)),
])
def test_place_chooses_the_group_and_the_mode(setting, run_group, expected):
    placed = place("web", setting, run_group)
    assert (None if placed is None else (placed.group, placed.mode)) == expected


def test_setting_round_trips_and_defaults_to_parallel():
    assert Setting.of(None) == Setting() == Setting.of({})
    assert Setting.of({"group": "g"}) == Setting(P, "g")
    assert Setting.of(Setting(X, "g").as_dict()) == Setting(X, "g")
    assert Setting().as_dict() == {"mode": "PARALLEL", "group": None, "queue": "ALL"}


@pytest.mark.parametrize("mode", [Q, X])
def test_a_free_group_is_taken_whatever_the_mode(mode):
    admission = admit(Group("web", "g", version=3), "web:1", mode)
    assert (admission.kind, admission.group.active, admission.group.queue, admission.superseded) == (
        START, "web:1", (), None)
    assert admission.group.version == 3  # the write is conditioned on the version read


def test_queued_appends_in_order_and_refuses_past_the_limit():
    group = Group("web", "g", active="web:1")
    for counter in range(2, 2 + MAX_QUEUE):
        admission = admit(group, f"web:{counter}", Q)
        assert admission.kind == QUEUE and admission.group.active == "web:1"
        group = admission.group
    assert group.queue == tuple(f"web:{c}" for c in range(2, 2 + MAX_QUEUE))
    with pytest.raises(QueueFull) as refused:
        admit(group, "web:99", Q)
    assert refused.value.code == "concurrency_queue_full"
    assert refused.value.details == {"group": "g", "active": "web:1"}
    assert refused.value.message == (f"{MAX_QUEUE} runs already wait in concurrency group 'g' of pipeline "
                                     "'web'; let some finish or cancel them")


def test_superseded_takes_the_group_and_names_the_run_to_cancel_keeping_the_queue():
    admission = admit(Group("web", "g", active="web:1", queue=("web:2",)), "web:3", X)
    assert (admission.kind, admission.superseded, admission.group.active, admission.group.queue) == (
        SUPERSEDE, "web:1", "web:3", ("web:2",))


def test_release_promotes_the_oldest_run_still_waiting_and_drops_the_others():
    group = Group("web", "g", active="web:1", queue=("web:2", "web:3", "web:4"))
    freed = release(group, "web:1", {"web:3", "web:4"})
    assert (freed.promoted, freed.group.active, freed.group.queue, freed.dropped) == (
        "web:3", "web:3", ("web:4",), ("web:2",))
    empty = release(Group("web", "g", active="web:1", queue=("web:2",)), "web:1", set())
    assert (empty.promoted, empty.group.active, empty.group.queue, empty.dropped) == (
        None, None, (), ("web:2",))
    assert release(group, "web:9", {"web:2"}) is None  # not the holder: nothing to write


def test_reacquire_takes_a_free_group_keeps_its_own_and_refuses_a_held_one():
    assert reacquire(Group("web", "g"), "web:1").active == "web:1"
    assert reacquire(Group("web", "g", active="web:1"), "web:1") is None
    with pytest.raises(GroupBusy) as busy:
        reacquire(Group("web", "g", active="web:2"), "web:1")
    assert busy.value.details == {"group": "g", "active": "web:2"}


# ---- the service on the in-memory stores ---------------------------------------------------------

def create(ctx, pipeline="web", stages=("BUILD",), **extra):
    body = {"pipeline": pipeline, "stages": list(stages), **extra}
    return runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps(body)), actor="alice")


def status(ctx, run_id):
    return runs.get_run(ctx, run_id).run.status


def finish(ctx, run_id, outcome=S.SUCCESS):
    runs.patch_stage(ctx, f"{run_id}:1", PatchStageIn(status=S.IN_PROGRESS))
    runs.patch_stage(ctx, f"{run_id}:1", PatchStageIn(status=outcome))


def configure(ctx, mode, group=None, pipeline="web"):
    create(ctx, pipeline)  # a pipeline exists with its first run
    finish(ctx, f"{pipeline}:1")
    concurrency.set_setting(ctx, pipeline, mode, group)


def test_queued_runs_wait_and_start_by_themselves_in_order(memory_ctx):
    configure(memory_ctx, Q)
    create(memory_ctx)
    create(memory_ctx)
    create(memory_ctx)
    assert [status(memory_ctx, f"web:{n}") for n in (2, 3, 4)] == [S.IDLE, S.QUEUED, S.QUEUED]
    group = memory_ctx.stores.groups.get("web", "web")
    assert (group.active, group.queue) == ("web:2", ("web:3", "web:4"))
    assert runs.get_run(memory_ctx, "web:3").run.concurrency_group == "web"
    finish(memory_ctx, "web:2", S.FAILURE)  # a failed run frees the group as a passed one does
    assert [status(memory_ctx, f"web:{n}") for n in (2, 3, 4)] == [S.FAILURE, S.IDLE, S.QUEUED]
    finish(memory_ctx, "web:3")
    assert status(memory_ctx, "web:4") == S.IDLE
    finish(memory_ctx, "web:4")
    group = memory_ctx.stores.groups.get("web", "web")
    assert (group.active, group.queue) == (None, ())


def test_a_queued_run_refuses_to_start_a_stage_and_leaves_the_queue_when_cancelled(memory_ctx):
    configure(memory_ctx, Q)
    create(memory_ctx)
    create(memory_ctx, stages=("BUILD", "DEPLOY_PROD"))
    with pytest.raises(Conflict) as refused:
        runs.patch_stage(memory_ctx, "web:3:1", PatchStageIn(status=S.IN_PROGRESS))
    assert refused.value.code == "run_queued" and refused.value.details == {"group": "web"}
    assert status(memory_ctx, "web:3") == S.QUEUED
    # what does not start anything is allowed while it waits
    runs.patch_stage(memory_ctx, "web:3:1", PatchStageIn(timeout_seconds=30))
    runs.patch_stage(memory_ctx, "web:3:1", PatchStageIn(name="compile"))
    runs.delete_stage(memory_ctx, "web:3:2")
    assert [s.name for s in runs.get_run(memory_ctx, "web:3").stages] == ["compile"]
    assert status(memory_ctx, "web:3") == S.QUEUED
    cancelled = operations.cancel_run(memory_ctx, "web:3", actor="bob")
    assert cancelled.run.status == S.CANCELLED and not cancelled.run.queued
    assert memory_ctx.stores.groups.get("web", "web").queue == ()
    finish(memory_ctx, "web:2")
    assert memory_ctx.stores.groups.get("web", "web").active is None


def test_superseded_cancels_the_active_run_with_the_new_ones_creation(memory_ctx):
    configure(memory_ctx, X)
    create(memory_ctx)
    runs.patch_stage(memory_ctx, "web:2:1", PatchStageIn(status=S.IN_PROGRESS))
    create(memory_ctx)
    old, new = runs.get_run(memory_ctx, "web:2"), runs.get_run(memory_ctx, "web:3")
    assert old.run.status == S.CANCELLED and new.run.status == S.IDLE
    assert old.run.cancellation["reason"] == "superseded by run web:3"
    assert old.run.cancellation["by"] == "alice"
    assert memory_ctx.stores.groups.get("web", "web").active == "web:3"


def test_superseded_takes_a_group_whose_holder_already_ended_without_cancelling_it(memory_ctx):
    configure(memory_ctx, X)
    create(memory_ctx)
    finish(memory_ctx, "web:2")
    create(memory_ctx)
    assert status(memory_ctx, "web:2") == S.SUCCESS and status(memory_ctx, "web:3") == S.IDLE


def test_a_run_group_key_serializes_only_its_own_group(memory_ctx):
    create(memory_ctx, concurrencyGroup="deploy-prod")
    create(memory_ctx, concurrencyGroup="deploy-prod")
    create(memory_ctx, concurrencyGroup="deploy-staging")
    create(memory_ctx)  # no group: PARALLEL as ever
    assert [status(memory_ctx, f"web:{n}") for n in (1, 2, 3, 4)] == [S.IDLE, S.QUEUED, S.IDLE, S.IDLE]
    assert runs.get_run(memory_ctx, "web:4").run.concurrency_group is None


def test_a_finished_run_retried_takes_its_group_back_only_if_free(memory_ctx):
    configure(memory_ctx, Q)
    create(memory_ctx)
    finish(memory_ctx, "web:2", S.FAILURE)
    create(memory_ctx)  # web:3 holds the group now
    with pytest.raises(Conflict) as busy:
        operations.retry_run(memory_ctx, "web:2")
    assert busy.value.code == "concurrency_group_busy" and status(memory_ctx, "web:2") == S.FAILURE
    finish(memory_ctx, "web:3")
    operations.retry_run(memory_ctx, "web:2")
    assert status(memory_ctx, "web:2") == S.IDLE
    assert memory_ctx.stores.groups.get("web", "web").active == "web:2"
    create(memory_ctx)
    assert status(memory_ctx, "web:4") == S.QUEUED


def test_deleting_the_holder_promotes_the_next_run(memory_ctx):
    configure(memory_ctx, Q)
    create(memory_ctx)
    create(memory_ctx)
    runs.delete_run(memory_ctx, "web:2")
    assert status(memory_ctx, "web:3") == S.IDLE
    assert memory_ctx.stores.groups.get("web", "web").active == "web:3"


def test_release_lock_lets_the_holder_run_on_and_starts_the_next(memory_ctx):
    configure(memory_ctx, Q)
    create(memory_ctx)
    runs.patch_stage(memory_ctx, "web:2:1", PatchStageIn(status=S.IN_PROGRESS))
    create(memory_ctx)
    seen = pipelines.status(memory_ctx, "web")
    assert (seen.locked, seen.lock_holder, seen.schedulable) == (True, "web:2", False)
    commands.execute(memory_ctx, commands.ReleaseLock("web"), actor="jez")
    assert status(memory_ctx, "web:2") == S.IN_PROGRESS and status(memory_ctx, "web:3") == S.IDLE
    assert pipelines.status(memory_ctx, "web").lock_holder == "web:3"
    finish(memory_ctx, "web:2")  # no longer the holder: frees nothing
    assert memory_ctx.stores.groups.get("web", "web").active == "web:3"


def test_release_lock_of_a_pipeline_not_locked_changes_nothing(memory_ctx):
    configure(memory_ctx, P)
    assert concurrency.release_lock(memory_ctx, "web") is None
    assert pipelines.status(memory_ctx, "web").locked is False


def test_the_sweeper_frees_a_group_whose_holder_ended_without_releasing_it(memory_ctx, clock, monkeypatch):
    configure(memory_ctx, Q)
    create(memory_ctx)
    create(memory_ctx)
    real_free = concurrency.free

    def dies(*args, **kwargs):
        raise RuntimeError("the Lambda died between the run's end and the promotion")
    monkeypatch.setattr(concurrency, "free", dies)
    finish(memory_ctx, "web:2")
    monkeypatch.setattr(concurrency, "free", real_free)
    assert status(memory_ctx, "web:2") == S.SUCCESS and status(memory_ctx, "web:3") == S.QUEUED
    assert timer_service.sweep(memory_ctx).groups_freed == 0  # within its grace time: not due yet
    clock.advance(61)
    report = timer_service.sweep(memory_ctx)
    assert report.groups_freed == 1 and status(memory_ctx, "web:3") == S.IDLE
    assert timer_service.sweep(memory_ctx).groups_freed == 0  # nobody waits any more


def test_the_sweeper_leaves_a_group_whose_holder_still_runs(memory_ctx, clock):
    configure(memory_ctx, Q)
    create(memory_ctx)
    create(memory_ctx)
    clock.advance(120)
    assert timer_service.sweep(memory_ctx).groups_freed == 0
    assert status(memory_ctx, "web:3") == S.QUEUED


def test_a_run_of_a_group_has_at_most_64_stages(memory_ctx, clock):
    """Native creates have at most 50 stages; a sender's layout repeated by ``schedule`` may
    have more, and a grouped run is created in one transaction with its group."""
    configure(memory_ctx, Q)
    big = new_run("web", 2, [StageSpec(type="OTHER", name=f"s{i}") for i in range(65)], clock.now())
    with pytest.raises(ValidationFailed):
        concurrency.insert_run(memory_ctx, big, layout=None, setting={"mode": "QUEUED"}, group=None,
                               actor="alice")
    assert memory_ctx.stores.groups.get("web", "web") is None
    assert memory_ctx.stores.runs.load_run("web:2") is None


def test_schedule_like_the_latest_follows_the_pipelines_mode(memory_ctx):
    configure(memory_ctx, Q)
    create(memory_ctx)
    scheduled = pipelines.schedule(memory_ctx, "web", actor="jez")
    assert scheduled.run.status == S.QUEUED and scheduled.run.concurrency_group == "web"


def test_a_schedule_firing_follows_the_pipelines_mode_once_per_fire_time(memory_ctx, clock):
    from chalicelib.domain.schemas import CreateScheduleIn
    from chalicelib.service import schedules

    configure(memory_ctx, Q)
    create(memory_ctx)  # web:2 holds the group
    schedule = schedules.create(memory_ctx, "web", CreateScheduleIn.model_validate_json(
        '{"cron": "* * * * *"}'), actor="alice")
    clock.advance(60)
    stale = schedules.get(memory_ctx, "web", schedule.id)
    assert schedules.fire(memory_ctx, "web", schedule.id, clock.now()) == schedules.CREATED
    fired = runs.get_run(memory_ctx, "web:3")
    assert (fired.run.status, fired.run.concurrency_group, fired.run.source) == (S.QUEUED, "web", "schedule")
    assert memory_ctx.stores.groups.get("web", "web").queue == ("web:3",)
    # a second ticker that read the schedule before the first advanced it finds the link
    memory_ctx.stores.schedules.replace(replace(schedules.get(memory_ctx, "web", schedule.id),
                                                next_fire_at=stale.next_fire_at))
    assert schedules.fire(memory_ctx, "web", schedule.id, clock.now()) == schedules.DUPLICATE
    assert memory_ctx.stores.groups.get("web", "web").queue == ("web:3",)
    finish(memory_ctx, "web:2")
    assert status(memory_ctx, "web:3") == S.IDLE


# ---- the API ---------------------------------------------------------------------------------------

@pytest.fixture
def api(memory_ctx):
    from app import app

    with Client(app) as client:
        yield ApiClient(client, admin_token=memory_ctx.settings.admin_token)


def issue(api, scopes, pipelines=None):
    body = {"name": "t", "scopes": scopes, **({"pipelines": pipelines} if pipelines else {})}
    response = api.post("/api/tokens", body)
    assert response.status_code == 201, response.body
    return response.json["token"]


def test_put_concurrency_answers_the_pipeline_status(api):
    assert api.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]}).status_code == 201
    response = api.put("/api/pipelines/web/concurrency", {"mode": "QUEUED", "group": "deploy"})
    assert response.status_code == 200, response.body
    assert response.json["concurrency"] == {"mode": "QUEUED", "group": "deploy", "queue": "ALL"}
    assert (response.json["locked"], response.json["lockedBy"]) == (False, None)
    second = api.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]}).json
    assert (second["status"], second["concurrencyGroup"]) == ("IDLE", "deploy")
    third = api.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]}).json
    assert third["status"] == "QUEUED"
    seen = api.get("/api/pipelines/web/status").json
    assert (seen["locked"], seen["lockedBy"]) == (True, "web:2")
    listed = api.get("/api/runs?pipeline=web&status=QUEUED").json
    assert [run["id"] for run in listed["items"]] == ["web:3"]
    searched = api.get("/api/runs?status=QUEUED").json  # across pipelines (the finder's index)
    assert [(run["id"], run["status"]) for run in searched["items"]] == [("web:3", "QUEUED")]
    refused = api.patch("/api/stages/web:3:1", {"status": "IN_PROGRESS"})
    assert refused.status_code == 409 and refused.json["error"]["code"] == "run_queued"


@pytest.mark.parametrize("body,field", [
    ({"mode": "SOMETIMES"}, "mode"), ({}, "mode"), ({"mode": "QUEUED", "group": "a b"}, "group"),
    ({"mode": "QUEUED", "extra": 1}, "extra"),
])
def test_put_concurrency_refuses_a_bad_body_and_changes_nothing(api, body, field):
    api.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    response = api.put("/api/pipelines/web/concurrency", body)
    assert response.status_code == 422, response.body
    assert field in json.dumps(response.json["error"]["details"])
    assert api.get("/api/pipelines/web/status").json["concurrency"]["mode"] == "PARALLEL"


def test_put_concurrency_needs_operate_on_that_pipeline(api):
    api.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    api.post("/api/runs", {"pipeline": "ops", "stages": ["BUILD"]})
    reader = issue(api, ["read"])
    other = issue(api, ["operate"], pipelines=["ops"])
    body = {"mode": "QUEUED"}
    assert api.put("/api/pipelines/web/concurrency", body, headers={"Authorization": f"Bearer {reader}"}
                   ).status_code == 403
    assert api.put("/api/pipelines/web/concurrency", body, headers={"Authorization": f"Bearer {other}"}
                   ).status_code == 404
    assert api.put("/api/pipelines/nope/concurrency", body).status_code == 404
    assert api.get("/api/pipelines/web/status").json["concurrency"]["mode"] == "PARALLEL"


def test_a_bad_group_key_at_create_is_a_422_that_claims_no_number(api):
    response = api.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"], "concurrencyGroup": "#x"})
    assert response.status_code == 422 and "concurrencyGroup" in json.dumps(response.json)


def test_gocd_release_lock_promotes_the_next_run(api, memory_ctx):
    from tests.fixtures.dialects import basic

    api.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    api.put("/api/pipelines/web/concurrency", {"mode": "QUEUED"})
    api.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    api.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    token = memory_ctx.settings.admin_token
    locked = api.get("/go/api/pipelines/web/status", headers={"Authorization": basic("jez", token)})
    assert locked.json == {"locked": True, "paused": False, "schedulable": False}
    response = api.post("/go/api/pipelines/web/releaseLock",
                        headers={"Authorization": basic("jez", token), "Confirm": "true"})
    assert response.status_code == 200 and response.body == b"pipeline lock released for web"
    assert api.get("/api/runs/web:3").json["status"] == "IDLE"


def test_a_waiting_runs_place_is_its_order_in_the_queue_and_the_holder_has_none():
    group = Group(pipeline="web", name="deploys", active="web:1", queue=("web:2", "web:3", "web:4"))
    assert queue_place(group, "web:3") == {"group": "deploys", "holder": "web:1", "position": 2, "waiting": 3}
    assert queue_place(group, "web:2")["position"] == 1  # the next to start, as release promotes
    assert queue_place(group, "web:1") is None  # it holds the group: no place in line
    assert queue_place(group, "web:9") is None  # not (or no longer) waiting here
    promoted = release(group, "web:1", {"web:2", "web:3", "web:4"})
    assert promoted is not None and queue_place(promoted.group, "web:3")["position"] == 1
