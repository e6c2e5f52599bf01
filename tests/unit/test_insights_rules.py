"""The insights rules one by one (domain/insights.py) and the stream decoder's reading of what
finished (store/stream.py ``finished_work``); the whole is held to a brute force in
test_insights_property.py."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.domain.insights import (
    INCIDENT_DETECTED,
    INCIDENT_RESOLVED,
    RELATIVE_ERROR,
    ROLLED_BACK,
    AttemptMark,
    Deploy,
    DeploymentSignal,
    FinishedAttempt,
    FinishedRun,
    PipelineState,
    RetryRecorded,
    SignalReceived,
    advance,
    apply_signal,
    attempt_tally,
    bucket_of,
    bucket_value,
    deploys_of,
    percentile,
    ready_at,
    signal_pipeline,
)
from chalicelib.domain.status import StageStatus as S
from chalicelib.store.stream import finished_work

T0 = datetime(2026, 3, 20, 23, 59, 58, tzinfo=UTC)


def test_every_duration_reads_back_within_the_stated_relative_error():
    values = list(range(1, 5000)) + [int(1.37 ** k) for k in range(1, 70)] + [2_592_000_000]
    worst = max(abs(bucket_value(bucket_of(v)) - v) / v for v in values)
    assert worst <= RELATIVE_ERROR + 1e-12 and RELATIVE_ERROR < 0.01
    assert bucket_of(0) == bucket_of(-5) == "Z" and bucket_value("Z") == 0.0


def test_percentiles_are_nearest_rank():
    tally = {"dZ": 1, "dN": 4, "dS": 0}
    for ms in (1000, 2000, 3000):
        key = "d" + bucket_of(ms)
        tally[key] = tally.get(key, 0) + 1
    assert percentile(tally, "d", 25) == 0.0  # rank 1 of 4
    assert percentile(tally, "d", 50) == pytest.approx(1.0, rel=0.01)  # rank 2
    assert percentile(tally, "d", 51) == pytest.approx(2.0, rel=0.01)  # rank 3
    assert percentile(tally, "d", 100) == pytest.approx(3.0, rel=0.01)
    assert percentile({"deploys": 3}, "d", 50) is None  # other counters are not buckets


def attempt(position=2, number=1, status=S.SUCCESS, started=T0, ended=T0 + timedelta(seconds=5), **kw):
    return FinishedAttempt(pipeline="web", run_id="web:1", position=position, name="test", status=status,
                           attempt=number, first_attempt=1, created_at=T0 - timedelta(seconds=60),
                           started_at=started, ended_at=ended, **kw)


def test_ready_is_the_later_of_creation_and_the_previous_stages_end_or_the_recorded_retry():
    previous = [AttemptMark(1, 1, S.SUCCESS, T0 - timedelta(seconds=10)),
                AttemptMark(1, 2, S.SUCCESS, T0 + timedelta(seconds=1))]  # after this one started: parallel
    assert ready_at(attempt(), previous) == T0 - timedelta(seconds=10)
    assert ready_at(attempt(), []) == T0 - timedelta(seconds=60)
    assert ready_at(attempt(number=2), previous) is None  # a retry nobody recorded
    recorded = T0 - timedelta(seconds=2)
    assert ready_at(attempt(number=2, queued_at=recorded), previous) == recorded


def test_a_success_after_a_failed_attempt_of_the_same_stage_is_flaky():
    failed = [AttemptMark(2, 1, S.TIMED_OUT, T0 - timedelta(seconds=30))]
    tally = attempt_tally(attempt(number=2), failed)
    assert tally["flaky"] == 1 and tally["retries"] == 1 and tally["n"] == 1 and tally["SUCCESS"] == 1
    assert "flaky" not in attempt_tally(attempt(number=2), [AttemptMark(2, 1, S.CANCELLED, T0)])
    assert "flaky" not in attempt_tally(attempt(number=2, status=S.FAILURE), failed)
    assert attempt_tally(attempt(status=S.SKIPPED), []) == {}


def run(status=S.SUCCESS, ended=T0, run_id="web:1", environment=None, committed=None):
    return FinishedRun(pipeline="web", run_id=run_id, status=status, created_at=T0 - timedelta(hours=1),
                       started_at=T0 - timedelta(minutes=30), ended_at=ended, order=1,
                       environment=environment, committed_at=committed)


def test_deployments_are_production_stages_that_succeeded_else_the_run_itself():
    marks = [AttemptMark(3, 1, S.FAILURE, T0 - timedelta(seconds=9), "production"),
             AttemptMark(3, 2, S.SUCCESS, T0 - timedelta(seconds=5), "production"),
             AttemptMark(2, 1, S.SUCCESS, T0 - timedelta(seconds=7), "staging")]
    found = deploys_of(run(committed=T0 - timedelta(seconds=65)), marks)
    assert [(d.ended_at, d.lead_millis) for d in found] == [(T0 - timedelta(seconds=5), 60_000)]
    assert [d.ended_at for d in deploys_of(run(environment="production"), [])] == [T0]
    assert deploys_of(run(environment="production", status=S.FAILURE), []) == []


def test_failures_recoveries_and_failed_changes_follow_the_order_of_runs():
    state = PipelineState()
    deployed = advance(state, run(run_id="web:1"), deploys_of(run(environment="production"), []))
    assert deployed.state.pending_run == "web:1" and deployed.tallies == {}
    failed = advance(deployed.state, run(S.FAILURE, T0 + timedelta(seconds=10), "web:2"), [])
    assert failed.tallies == {"2026-03-20": {"failedChanges": 1}}
    assert failed.state.red_since == failed.state.failed_at == T0 + timedelta(seconds=10)
    again = advance(failed.state, run(S.TIMED_OUT, T0 + timedelta(seconds=20), "web:3"), [])
    assert again.tallies == {} and again.state.red_since == T0 + timedelta(seconds=10)  # still the first
    cancelled = advance(again.state, run(S.CANCELLED, T0 + timedelta(seconds=25), "web:4"), [])
    assert cancelled.state == again.state
    fixed = run(S.SUCCESS, T0 + timedelta(seconds=70), "web:5", environment="production")
    recovered = advance(cancelled.state, fixed, deploys_of(fixed, []))
    assert recovered.tallies == {"2026-03-21": {"mN": 1, "mS": 60_000, "m" + bucket_of(60_000): 1,
                                                "tN": 1, "tS": 60_000, "t" + bucket_of(60_000): 1}}
    assert recovered.state.red_since is None and recovered.state.failed_at is None
    assert recovered.state.pending_run == "web:5"  # its own success does not confirm it
    confirmed = advance(recovered.state, run(S.SUCCESS, T0 + timedelta(seconds=90), "web:6"), [])
    assert confirmed.state.pending_run is None and confirmed.state.pending_day is None


# ---- the stream records ---------------------------------------------------------------------------

def image(**attributes) -> dict:
    return {name: {"N": str(value)} if isinstance(value, int) else {"S": value}
            for name, value in attributes.items()}


STAGE = dict(kind="stage", pk="RUN#web:1", sk="STAGE#0002", stage_id="web:1:2", run_id="web:1", position=2,
             name="test", created_at="2026-03-20T17:00:00.000Z", first_attempt=1)


def record(event, new=None, old=None):
    return {"eventName": event, "dynamodb": {**({"NewImage": image(**new)} if new else {}),
                                             **({"OldImage": image(**old)} if old else {})}}


def test_a_stage_attempt_that_ends_is_what_finished():
    running = {**STAGE, "status": "IN_PROGRESS", "attempt": 1, "started_at": "2026-03-20T17:01:00.000Z"}
    done = {**running, "status": "FAILURE", "ended_at": "2026-03-20T17:02:00.000Z",
            "environment": "production"}
    found = finished_work(record("MODIFY", done, running))
    assert isinstance(found, FinishedAttempt)
    assert (found.pipeline, found.run_id, found.position, found.name, found.status, found.attempt) == (
        "web", "web:1", 2, "test", S.FAILURE, 1)
    assert found.ended_at == datetime(2026, 3, 20, 17, 2, tzinfo=UTC) and found.environment == "production"
    assert finished_work(record("MODIFY", {**done, "name": "renamed"}, done)) is None  # no new end
    assert isinstance(finished_work(record("INSERT", done)), FinishedAttempt)  # a sender's finished job
    assert finished_work(record("MODIFY", running, {**running, "status": "IDLE"})) is None
    assert finished_work(record("REMOVE", None, done)) is None
    retried = {**STAGE, "status": "IDLE", "attempt": 2, "updated_at": "2026-03-20T17:05:00.000Z"}
    assert finished_work(record("MODIFY", retried, done)) == RetryRecorded(
        "web", "web:1", 2, 2, datetime(2026, 3, 20, 17, 5, tzinfo=UTC))


RUN = dict(kind="run", pk="RUN#web:1", sk="#RUN", run_id="web:1", pipeline="web",
           created_at="2026-03-20T17:00:00.000Z", started_at="2026-03-20T17:01:00.000Z")


def test_a_run_whose_status_or_end_becomes_final_is_what_finished():
    running = {**RUN, "status": "IN_PROGRESS", "seq": 4}
    commit = json.dumps({"hash": "a" * 40, "committedAt": "2026-03-20T16:00:00.000Z"})
    done = {**running, "status": "SUCCESS", "ended_at": "2026-03-20T17:09:00.000Z", "seq": 5,
            "commit": commit,
            "environment": "production"}
    found = finished_work(record("MODIFY", done, running))
    assert found == FinishedRun(pipeline="web", run_id="web:1", status=S.SUCCESS,
                                created_at=datetime(2026, 3, 20, 17, tzinfo=UTC),
                                started_at=datetime(2026, 3, 20, 17, 1, tzinfo=UTC),
                                ended_at=datetime(2026, 3, 20, 17, 9, tzinfo=UTC), order=5,
                                environment="production", committed_at=datetime(2026, 3, 20, 16, tzinfo=UTC))
    assert finished_work(record("MODIFY", {**done, "seq": 6}, done)) is None  # same status, same end
    later = {**done, "ended_at": "2026-03-20T17:19:00.000Z", "seq": 9}
    assert finished_work(record("MODIFY", later, done)).order == 9  # still final, a new end: finished again
    assert finished_work(record("MODIFY", {**done, "commit": "{not json"}, running)).committed_at is None
    assert finished_work(record("MODIFY", {**RUN, "kind": "pipeline", "status": "SUCCESS"}, running)) is None


# ---- outside signals: incidents and rollbacks ---------------------------------------------------

def signal(kind, at, incident="inc-1", key="k1"):
    return DeploymentSignal(pipeline="web", key=key, kind=kind, at=at, incident=incident)


def test_an_incident_fails_the_pending_deployment_and_its_resolution_ends_the_restore():
    pending = PipelineState(pending_day="2026-03-20", pending_run="web:1")
    detected = apply_signal(pending, signal(INCIDENT_DETECTED, T0 + timedelta(hours=1)))
    assert detected.tallies == {"2026-03-20": {"failedChanges": 1}}  # on the deployment's day
    assert detected.state == PipelineState(failed_at=T0 + timedelta(hours=1), restore_incident="inc-1")
    other = apply_signal(detected.state, signal(INCIDENT_RESOLVED, T0 + timedelta(hours=2), "inc-2", "k2"))
    assert other.tallies == {} and other.state == detected.state  # another incident's resolution
    resolved = apply_signal(detected.state, signal(INCIDENT_RESOLVED, T0 + timedelta(hours=3), key="k3"))
    assert resolved.state == PipelineState()
    assert resolved.tallies["2026-03-21"]["tN"] == 1 and resolved.tallies["2026-03-21"]["tS"] == 7_200_000


def test_a_deployment_ends_an_incidents_restore_first_and_its_later_resolution_adds_nothing():
    open_restore = PipelineState(failed_at=T0, restore_incident="inc-1")
    run = FinishedRun(pipeline="web", run_id="web:2", status=S.SUCCESS, created_at=T0, started_at=T0,
                      ended_at=T0 + timedelta(minutes=30), order=1)
    step = advance(open_restore, run, [Deploy(T0 + timedelta(minutes=30), None)])
    assert step.tallies["2026-03-21"]["tS"] == 1_800_000
    assert step.state.failed_at is None and step.state.restore_incident is None
    late = apply_signal(step.state, signal(INCIDENT_RESOLVED, T0 + timedelta(hours=5)))
    assert late.tallies == {}


def test_a_rollback_fails_the_pending_deployment_and_opens_no_restore():
    pending = PipelineState(pending_day="2026-03-20", pending_run="web:1", red_since=T0)
    step = apply_signal(pending, signal(ROLLED_BACK, T0 + timedelta(minutes=5), incident=None))
    assert step.tallies == {"2026-03-20": {"failedChanges": 1}}
    assert step.state == PipelineState(red_since=T0)  # the time to recover is the runs' own


def test_a_signal_with_nothing_pending_counts_nowhere():
    for kind in (INCIDENT_DETECTED, ROLLED_BACK):
        failing = PipelineState(failed_at=T0)  # the change already failed (a failed run)
        step = apply_signal(failing, signal(kind, T0 + timedelta(minutes=1)))
        assert step.tallies == {} and step.state == failing


def test_a_signal_finds_its_pipeline_by_service_then_source_in_production_only():
    known = {"web", "ops"}.__contains__

    def received(candidates, environment="production"):
        return SignalReceived(kind=INCIDENT_DETECTED, key="k", at=T0, incident="i", candidates=candidates,
                              environment=environment, summary="incident.detected")

    assert signal_pipeline(received(("web", "ops")), known) == ("web", "")
    assert signal_pipeline(received(("myApp", "ops")), known) == ("ops", "")
    assert signal_pipeline(received(("myApp", "ops"), None), known) == ("ops", "")  # not said: taken
    assert signal_pipeline(received(("web",), "Production"), known) == ("web", "")
    pipeline, why = signal_pipeline(received(("web",), "staging"), known)
    assert pipeline is None and "'staging' is not production" in why
    pipeline, why = signal_pipeline(received(("myApp", "monitor")), known)
    assert pipeline is None and why == "no pipeline named 'myApp' or 'monitor': counted nowhere"
