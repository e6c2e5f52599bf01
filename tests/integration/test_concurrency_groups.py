"""Concurrency groups on moto's DynamoDB: the service flows of the unit tier on the DynamoDB store
(the group item, its conditions, the sparse index the sweeper reads), and the round trips each
create and each end of a grouped run costs (docs/performance.md)."""
from __future__ import annotations

import pytest

from chalicelib import wiring
from chalicelib.domain.concurrency import Mode
from chalicelib.domain.schemas import PatchStageIn
from chalicelib.domain.status import StageStatus as S
from chalicelib.service import concurrency, runs
from tests.integration.test_infra import iam_actions  # noqa: F401 (a fixture)
from tests.integration.test_operations_api import create
from tests.unit import test_concurrency as cases

FLOWS = [
    cases.test_queued_runs_wait_and_start_by_themselves_in_order,
    cases.test_a_queued_run_refuses_to_start_a_stage_and_leaves_the_queue_when_cancelled,
    cases.test_superseded_cancels_the_active_run_with_the_new_ones_creation,
    cases.test_superseded_takes_a_group_whose_holder_already_ended_without_cancelling_it,
    cases.test_a_run_group_key_serializes_only_its_own_group,
    cases.test_a_finished_run_retried_takes_its_group_back_only_if_free,
    cases.test_deleting_the_holder_promotes_the_next_run,
    cases.test_release_lock_lets_the_holder_run_on_and_starts_the_next,
    cases.test_schedule_like_the_latest_follows_the_pipelines_mode,
]


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.__name__[5:])
def test_the_service_flows_hold_on_dynamodb(ctx, flow):
    flow(ctx)


def test_the_sweeper_finds_a_lost_release_on_the_sparse_index(ctx, clock, monkeypatch):
    cases.test_the_sweeper_frees_a_group_whose_holder_ended_without_releasing_it(ctx, clock, monkeypatch)


def test_a_schedule_firing_in_a_group_writes_its_link_with_the_run(ctx, clock):
    cases.test_a_schedule_firing_follows_the_pipelines_mode_once_per_fire_time(ctx, clock)


def test_a_big_layout_is_refused_before_anything_is_written(ctx, clock):
    cases.test_a_run_of_a_group_has_at_most_64_stages(ctx, clock)


def test_superseding_a_run_too_big_to_cancel_in_the_creating_transaction(client, ddb_calls):
    """Two runs of 50 stages: the cancel (51 items) and the new run (52) exceed one transaction,
    so the cancel goes first, conditioned on the group being as read, then the new run."""
    stages = [{"type": "OTHER", "name": f"s{i}"} for i in range(50)]
    _setup(client, "SUPERSEDED")
    create(client, stages)
    assert client.patch("/api/stages/web:2:1", {"status": "IN_PROGRESS"}).status_code == 200
    ddb_calls.clear()
    new = create(client, stages)
    assert (new["id"], new["status"]) == ("web:3", "IDLE")
    assert dict(ddb_calls) == {"UpdateItem": 1, "GetItem": 1, "Query": 1, "TransactWriteItems": 2}
    old = client.get("/api/runs/web:2").json
    assert old["status"] == "CANCELLED" and old["cancellation"]["reason"] == "superseded by run web:3"
    assert client.get("/api/pipelines/web/status").json["lockedBy"] == "web:3"


# ---- round trips -------------------------------------------------------------------------------

def _setup(client, mode: str, group: str | None = None):
    create(client, ["BUILD"])
    body = {"mode": mode, **({"group": group} if group else {})}
    assert client.put("/api/pipelines/web/concurrency", body).status_code == 200


def test_a_parallel_create_costs_what_it_always_did(client, ddb_calls):
    create(client, ["BUILD"])
    ddb_calls.clear()
    create(client, ["BUILD"])
    assert dict(ddb_calls) == {"UpdateItem": 1, "TransactWriteItems": 1}


@pytest.mark.parametrize("mode,expected_status", [("QUEUED", "QUEUED"), ("SUPERSEDED", "IDLE")])
def test_a_grouped_create_reads_its_group_once(client, ddb_calls, mode, expected_status):
    """Free group: 1 GetItem more. Held: QUEUED the same; SUPERSEDED 1 Query more (the run it
    cancels, in the same transaction)."""
    _setup(client, mode)
    ddb_calls.clear()
    assert create(client, ["BUILD"])["status"] == "IDLE"
    assert dict(ddb_calls) == {"UpdateItem": 1, "GetItem": 1, "TransactWriteItems": 1}
    ddb_calls.clear()
    assert create(client, ["BUILD"])["status"] == expected_status
    more = {"Query": 1} if mode == "SUPERSEDED" else {}
    assert dict(ddb_calls) == {"UpdateItem": 1, "GetItem": 1, "TransactWriteItems": 1, **more}


def test_ending_the_holder_promotes_the_next_run_in_one_more_transaction(ctx, ddb_calls):
    """A stage change of a grouped run reads the whole run (its end is decided on every stage);
    the change that ends it then frees the group: 1 GetItem (group) + 1 Query (the queued run)
    + 1 TransactWriteItems (group + promoted run, conditioned on the ended run)."""
    cases.configure(ctx, Mode.QUEUED)
    cases.create(ctx)
    cases.create(ctx)
    runs.patch_stage(ctx, "web:2:1", PatchStageIn(status=S.IN_PROGRESS))
    ddb_calls.clear()
    runs.patch_stage(ctx, "web:2:1", PatchStageIn(status=S.SUCCESS))
    assert dict(ddb_calls) == {"BatchGetItem": 1, "Query": 2, "TransactWriteItems": 2, "GetItem": 1}
    assert cases.status(ctx, "web:3") == S.IDLE


def test_the_status_of_a_grouped_pipeline_reads_its_default_group(client, ddb_calls):
    _setup(client, "QUEUED", group="deploy")
    create(client, ["BUILD"])
    ddb_calls.clear()
    body = client.get("/api/pipelines/web/status").json
    assert (body["locked"], body["lockedBy"]) == (True, "web:2")
    assert dict(ddb_calls) == {"GetItem": 2}


def test_a_queued_run_is_listed_by_its_status(client):
    _setup(client, "QUEUED")
    create(client, ["BUILD"])
    create(client, ["BUILD"])
    listed = client.get("/api/runs?pipeline=web&status=QUEUED").json["items"]
    assert [(run["id"], run["status"]) for run in listed] == [("web:3", "QUEUED")]
    # across pipelines: the runsByTime index, whose entry holds the status
    assert [run["id"] for run in client.get("/api/runs?status=QUEUED").json["items"]] == ["web:3"]
    promoted = concurrency.release_lock(wiring.context(), "web")
    assert promoted == "web:3"
    assert client.get("/api/runs?pipeline=web&status=QUEUED").json["items"] == []
    assert client.get("/api/runs?status=QUEUED").json["items"] == []
    assert client.get("/api/runs?pipeline=web&status=IDLE").json["items"][0]["id"] == "web:3"


# ---- least privilege: the functions that end runs may reach the group items ----------------------

def test_a_timer_ending_a_holder_and_the_sweepers_repair_stay_within_their_policies(
        ctx, clock, iam_actions):  # noqa: F811 (the fixture imported above)
    from chalicelib.service.timers import expire_stage, sweep
    from tests.fixtures import assert_items_allowed
    from tests.integration.test_infra import _allowed

    actions, _indexes = iam_actions
    cases.configure(ctx, Mode.QUEUED)
    cases.create(ctx, stages=[{"type": "BUILD", "timeoutSeconds": 5}])
    cases.create(ctx)
    runs.patch_stage(ctx, "web:2:1", PatchStageIn(status=S.IN_PROGRESS))
    clock.advance(5)
    actions.clear()
    assert expire_stage(ctx, "web:2:1", 1) == S.TIMED_OUT  # the timer Lambda frees the group
    assert actions <= _allowed("timer_fired")
    assert assert_items_allowed(actions, "timer_fired") == {"RUN#", "GROUP#"}
    assert cases.status(ctx, "web:3") == S.IDLE
    # a lost release, repaired by the sweeper
    cases.create(ctx)
    real = concurrency.after_save
    concurrency.after_save = lambda *args: None  # (not monkeypatch.undo: it would stop the recording)
    try:
        cases.finish(ctx, "web:3")
    finally:
        concurrency.after_save = real
    clock.advance(61)
    actions.clear()
    assert sweep(ctx).groups_freed == 1
    assert actions <= _allowed("timer_sweeper")
    assert assert_items_allowed(actions, "timer_sweeper") == {"RUN#", "GROUP#"}


# ---- the service state machine of tests/unit/test_stateful.py on the DynamoDB store -------------

def test_the_concurrency_group_machine_holds_on_dynamodb(ctx):
    """Fewer examples than in memory: each step is a few moto round trips."""
    from hypothesis import HealthCheck, settings
    from hypothesis.stateful import run_state_machine_as_test

    from tests.unit.test_stateful import ConcurrencyGroupMachine

    class OnDynamoDB(ConcurrencyGroupMachine):
        def ctx_factory(self, clock):
            from dataclasses import replace

            return replace(ctx, clock=clock)  # the same table, the machine's own clock

    run_state_machine_as_test(OnDynamoDB, settings=settings(
        max_examples=5, stateful_step_count=15, deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]))


def test_a_newest_create_replacing_the_waiting_run_costs_one_query_more(client, ddb_calls):
    """NEWEST with a run waiting: as a QUEUED create, plus 1 Query (the run it replaces), whose
    cancel rides in the same transaction; with nobody waiting, exactly a QUEUED create."""
    create(client, ["BUILD"])
    newest = client.put("/api/pipelines/web/concurrency", {"mode": "QUEUED", "queue": "NEWEST"})
    assert newest.status_code == 200
    create(client, ["BUILD"])  # web:2 holds the group
    ddb_calls.clear()
    assert create(client, ["BUILD"])["status"] == "QUEUED"  # web:3: nobody waited
    assert dict(ddb_calls) == {"UpdateItem": 1, "GetItem": 1, "TransactWriteItems": 1}
    ddb_calls.clear()
    assert create(client, ["BUILD", "DEPLOY_PROD"])["status"] == "QUEUED"  # web:4 replaces web:3
    assert dict(ddb_calls) == {"UpdateItem": 1, "GetItem": 1, "Query": 1, "TransactWriteItems": 1}
    replaced = client.get("/api/runs/web:3").json
    assert (replaced["status"], replaced["cancellation"]["reason"]) == ("CANCELLED", "replaced by run web:4")


def test_a_newest_create_replacing_a_run_too_big_for_its_transaction(client, ddb_calls):
    """Two runs of 50 stages: the replaced run's cancel goes first, conditioned on the group
    being as read, then the new run with the group, as a supersede of that size does."""
    stages = [{"type": "OTHER", "name": f"s{i}"} for i in range(50)]
    create(client, ["BUILD"])
    client.put("/api/pipelines/web/concurrency", {"mode": "QUEUED", "queue": "NEWEST"})
    create(client, ["BUILD"])
    create(client, stages)  # web:3 waits
    ddb_calls.clear()
    new = create(client, stages)
    assert (new["id"], new["status"]) == ("web:4", "QUEUED")
    assert dict(ddb_calls) == {"UpdateItem": 1, "GetItem": 1, "Query": 1, "TransactWriteItems": 2}
    assert client.get("/api/runs/web:3").json["status"] == "CANCELLED"
    assert client.get("/api/runs?pipeline=web&status=QUEUED").json["items"][0]["id"] == "web:4"


def test_a_queued_run_shows_its_place_in_the_queue_for_one_getitem_more(client, ddb_calls):
    """GET /api/runs/{id} of a QUEUED run: the run holding its group, its place (1: next to
    start) and how many wait -- what the dashboard and `stagetrack runs show` print. A run that
    does not wait reads nothing more and has no ``queue``."""
    _setup(client, "QUEUED")  # web:1 ran before the setting: it holds nothing
    assert [create(client, ["BUILD"])["status"] for _ in range(3)] == ["IDLE", "QUEUED", "QUEUED"]
    ddb_calls.clear()
    third = client.get("/api/runs/web:4").json
    assert third["queue"] == {"group": "web", "holder": "web:2", "position": 2, "waiting": 2}
    assert dict(ddb_calls) == {"Query": 1, "GetItem": 1}
    ddb_calls.clear()
    holder = client.get("/api/runs/web:2").json
    assert "queue" not in holder and dict(ddb_calls) == {"Query": 1}
    # the first in line leaves: the other moves up; the holder ends: it holds the group
    assert client.post("/api/runs/web:3/cancel").status_code == 200
    assert client.get("/api/runs/web:4").json["queue"] == {"group": "web", "holder": "web:2", "position": 1,
                                                           "waiting": 1}
    assert client.post("/api/runs/web:2/cancel").status_code == 200
    promoted = client.get("/api/runs/web:4").json
    assert promoted["status"] == "IDLE" and "queue" not in promoted
