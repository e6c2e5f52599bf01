"""Approval policies through the native API and Buddy's APPLY (moto): N of M, 403 for a token that
is not an approver, 409 for a second decision, self-approval, a policy that cannot be met."""
from __future__ import annotations

import base64
import json

import pytest

GATE = {"type": "DEPLOY_PROD", "name": "prod", "approval": "MANUAL",
        "approvers": ["group:release", "carol"], "required": 2, "preventSelfApproval": True}
GROUPS = {"release": ["alice", "bob", "ci"]}


def token(client, name, scopes=("operate",)):
    response = client.post("/api/tokens", {"name": name, "scopes": list(scopes)})
    assert response.status_code == 201, response.json
    return response.json["token"]


@pytest.fixture
def people(client):
    return {name: token(client, name) for name in ("alice", "bob", "carol", "ci", "mallory")}


def gated(client, people, gate=GATE, groups=GROUPS):
    """A run created by the token "ci" whose stage 2 waits at a policy gate."""
    created = client.post("/api/runs", {"pipeline": "web", "approverGroups": groups,
                                        "stages": ["BUILD", gate]}, auth=people["ci"])
    assert created.status_code == 201, created.json
    build, prod = (s["id"] for s in created.json["stages"])
    for stage, status in ((build, "IN_PROGRESS"), (build, "SUCCESS"), (prod, "IN_PROGRESS")):
        assert client.patch(f"/api/stages/{stage}", {"status": status}).status_code == 200
    return created.json["id"], prod


def approve(client, stage, who, people, comment=None, verb="approve"):
    return client.post(f"/api/stages/{stage}/{verb}", {"comment": comment} if comment else None,
                       auth=people[who])


def assert_error(response, status, code, message=None):
    assert response.status_code == status, response.json
    assert set(response.json) == {"error"} and response.json["error"]["code"] == code
    if message is not None:
        assert response.json["error"]["message"] == message


def test_the_gate_opens_on_the_second_distinct_approval_and_shows_who(client, clock, people):
    run_id, prod = gated(client, people)
    stage = client.get(f"/api/stages/{prod}").json
    assert stage["approvalPolicy"] == {
        "approvers": ["group:release", "carol"], "groups": {"release": ["alice", "bob", "ci"]},
        "required": 2, "preventSelfApproval": True, "onTimeout": "TIMED_OUT", "remindAfterSeconds": None}
    clock.advance(5)
    first = approve(client, prod, "alice", people, "lgtm")
    assert first.status_code == 200, first.json
    assert first.json["status"] == "WAITING_FOR_APPROVAL" and first.json["approvalDecision"] is None
    assert first.json["approvals"] == [{"decision": "APPROVED", "by": "alice",
                                        "at": "2026-03-20T17:17:18.760Z",
                                        "comment": "lgtm", "attempt": 1}]
    second = approve(client, prod, "carol", people)
    assert second.status_code == 200
    assert second.json["status"] == "IN_PROGRESS"
    assert [d["by"] for d in second.json["approvals"]] == ["alice", "carol"]
    assert second.json["approvalDecision"]["by"] == "carol"
    assert client.get(f"/api/runs/{run_id}").json["status"] == "IN_PROGRESS"


def test_a_token_that_is_not_an_approver_gets_403_with_the_reason_and_nothing_changes(client, people):
    _, prod = gated(client, people)
    before = client.get(f"/api/stages/{prod}").json
    assert_error(approve(client, prod, "mallory", people), 403, "not_an_approver",
                 "'mallory' is not an allowed approver of stage 'web:1:2' (approvers: group:release, carol)")
    assert_error(approve(client, prod, "mallory", people, verb="reject"), 403, "not_an_approver")
    assert client.get(f"/api/stages/{prod}").json == before


def test_the_runs_creator_cannot_approve_it(client, people):
    _, prod = gated(client, people)
    assert_error(approve(client, prod, "ci", people), 403, "not_an_approver",
                 "'ci' started this run and stage 'web:1:2' prevents self-approval")


def test_a_basic_auth_user_name_cannot_pose_as_an_approver(client, people):
    """The approver is the token, never the Basic user name the client chose."""
    _, prod = gated(client, people)
    raw = base64.b64encode(f"alice:{people['mallory']}".encode()).decode()
    response = client.post(f"/api/stages/{prod}/approve", headers={"Authorization": f"Basic {raw}"})
    assert_error(response, 403, "not_an_approver")


def test_a_second_decision_by_the_same_approver_is_409(client, people):
    _, prod = gated(client, people)
    assert approve(client, prod, "alice", people).status_code == 200
    assert_error(approve(client, prod, "alice", people), 409, "already_decided")
    assert_error(approve(client, prod, "alice", people, verb="reject"), 409, "already_decided")
    assert len(client.get(f"/api/stages/{prod}").json["approvals"]) == 1


def test_a_rejection_by_one_allowed_approver_fails_the_gate(client, people):
    run_id, prod = gated(client, people)
    approve(client, prod, "alice", people)
    rejected = approve(client, prod, "bob", people, "not today", verb="reject")
    assert rejected.status_code == 200
    assert rejected.json["status"] == "FAILURE"
    assert rejected.json["approvalDecision"]["decision"] == "REJECTED"
    assert client.get(f"/api/runs/{run_id}").json["status"] == "FAILURE"
    assert_error(approve(client, prod, "carol", people), 409, "illegal_transition")


@pytest.mark.parametrize(("gate", "groups", "field"), [
    ({**GATE, "approvers": ["group:ops"]}, GROUPS, "stages.0.approvers"),
    ({**GATE, "required": 5}, GROUPS, "stages.0.approvers"),
])
def test_a_policy_that_cannot_be_met_is_422_and_claims_no_run_number(client, people, gate, groups, field):
    response = client.post("/api/runs", {"pipeline": "web", "approverGroups": groups, "stages": [gate]})
    assert_error(response, 422, "validation_failed")
    assert response.json["error"]["details"][0]["field"] == field
    created = client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    assert created.json["counter"] == 1


@pytest.mark.parametrize("body", [
    {"type": "DEPLOY_PROD", "approvers": ["alice"]},  # a policy needs approval MANUAL
    {"type": "DEPLOY_PROD", "approval": "MANUAL", "required": 0},
    {"type": "DEPLOY_PROD", "approval": "MANUAL", "onTimeout": "LATER"},
    {"type": "DEPLOY_PROD", "approval": "MANUAL", "approvers": []},
    {"type": "DEPLOY_PROD", "approval": "MANUAL", "approvers": ["group:"]},
])
def test_malformed_policies_are_refused(client, body):
    response = client.post("/api/runs", {"pipeline": "web", "stages": [body]})
    assert response.status_code in (400, 422), response.json
    assert set(response.json) == {"error"}
    assert client.get("/api/runs?pipeline=web").json["items"] == []


def test_buddy_apply_follows_the_same_rules(client, people):
    _, prod = gated(client, people, gate={**GATE, "required": 1})
    execution_path = (f"/workspaces/buddy/projects/p/pipelines/"
                      f"{client.get('/api/pipelines/web/status').json['buddyPipelineId']}/executions/1")

    def apply(who):
        response = client._http.request("PATCH", execution_path, body=json.dumps({"operation": "APPLY"}),
                                        headers={"Content-Type": "application/json",
                                                 "Authorization": f"Bearer {people[who]}"})
        return response.status_code, json.loads(response.body)

    status, body = apply("mallory")
    assert status == 403 and "not an allowed approver" in body["errors"][0]["message"]
    status, body = apply("ci")
    assert status == 403 and "prevents self-approval" in body["errors"][0]["message"]
    status, body = apply("bob")
    assert status == 200 and body["status"] == "INPROGRESS"
    assert client.get(f"/api/stages/{prod}").json["approvalDecision"]["by"] == "bob"


# ---- the timer: the reminder goes out on the change stream, onTimeout ---------------------------

def test_the_reminder_is_one_event_on_the_stream_and_the_timeout_applies_on_timeout(
        client, ctx, clock, people):
    from chalicelib.domain.events import APPROVAL_REMINDER
    from chalicelib.service.timers import expire_stage
    from chalicelib.store.stream import armed_timer, state_change
    from tests.fixtures import StreamReader

    stream = StreamReader(ctx.settings.table_name)
    _, prod = gated(client, people, gate={**GATE, "remindAfterSeconds": 30, "timeoutSeconds": 120,
                                          "onTimeout": "REJECT"})
    armed = [t for t in (armed_timer(r) for r in stream.read()) if t is not None and t.stage_id == prod]
    assert [t.due_at for t in armed] == ["2026-03-20T17:17:43.760Z"]  # the reminder comes first
    clock.advance(29)
    assert expire_stage(ctx, prod, 1) is None  # not yet
    clock.advance(2)
    assert expire_stage(ctx, prod, 1).value == "WAITING_FOR_APPROVAL"
    records = stream.read()
    changes = [c for c in (state_change(r, clock.now()) for r in records) if c is not None]
    assert [(c.type, c.stage_id, c.old_status, c.new_status) for c in changes] == [
        (APPROVAL_REMINDER, prod, "WAITING_FOR_APPROVAL", "WAITING_FOR_APPROVAL")]
    assert [t.due_at for t in (armed_timer(r) for r in records) if t is not None] == [
        "2026-03-20T17:19:13.760Z"]  # then the timeout
    assert expire_stage(ctx, prod, 1) is None  # once per wait
    clock.advance(120)
    assert expire_stage(ctx, prod, 1).value == "FAILURE"
    decision = client.get(f"/api/stages/{prod}").json["approvalDecision"]
    assert (decision["decision"], decision["by"], decision["at"]) == (
        "REJECTED", "stagetrack:timeout", "2026-03-20T17:19:13.760Z")


# ---- every decision on the change stream ---------------------------------------------------------

def test_every_decision_is_on_the_stream_with_who_when_the_comment_and_the_count(client, ctx, clock, people):
    """A decision that leaves the gate waiting is a ``stage.approval-decided`` event; the one that
    opens (or fails) it rides on the gate's ``stage.status-changed``; both carry ``approval``. A
    refused decision and a repeat write nothing, so they are no event."""
    from chalicelib.domain.events import APPROVAL_DECIDED, STAGE_CHANGED, SubscriptionFilter
    from chalicelib.integrations.cdevents import to_cdevent
    from chalicelib.store.stream import state_change
    from tests.fixtures import StreamReader

    stream = StreamReader(ctx.settings.table_name)
    _, prod = gated(client, people)
    stream.read()  # the run's creation and moves so far
    clock.advance(5)

    def events():
        return [c for c in (state_change(r, clock.now()) for r in stream.read()) if c is not None]

    assert approve(client, prod, "alice", people, "lgtm").status_code == 200
    assert approve(client, prod, "mallory", people).status_code == 403  # refused: nothing written
    assert approve(client, prod, "alice", people).status_code == 409  # her second decision: nothing
    (partial,) = events()
    assert (partial.type, partial.old_status, partial.new_status) == (
        APPROVAL_DECIDED, "WAITING_FOR_APPROVAL", "WAITING_FOR_APPROVAL")
    assert partial.as_dict()["approval"] == {"decision": "APPROVED", "by": "alice",
                                             "at": "2026-03-20T17:17:18.760Z", "comment": "lgtm",
                                             "approved": 1, "required": 2}
    assert SubscriptionFilter(events=("stage.approval-decided",)).matches(partial)
    assert not SubscriptionFilter(events=("stage.status-changed",)).matches(partial)
    assert to_cdevent(partial) is None  # CDEvents has no word for it (as for the reminder)

    assert approve(client, prod, "carol", people, "go").status_code == 200
    (opened,) = [c for c in events() if c.stage_id == prod]
    assert (opened.type, opened.new_status) == (STAGE_CHANGED, "IN_PROGRESS")
    assert opened.approval == {"decision": "APPROVED", "by": "carol", "at": "2026-03-20T17:17:18.760Z",
                               "comment": "go", "approved": 2, "required": 2}

    # a plain gate (no policy): its one decision rides on its status change; a retry is none
    plain = client.post("/api/runs", {"pipeline": "plain", "stages": [
        {"type": "DEPLOY_PROD", "name": "gate", "approval": "MANUAL"}]}).json["stages"][0]["id"]
    assert client.patch(f"/api/stages/{plain}", {"status": "IN_PROGRESS"}).status_code == 200
    stream.read()
    assert approve(client, plain, "bob", people, verb="reject").status_code == 200
    (rejected,) = [c for c in events() if c.stage_id == plain]
    assert (rejected.type, rejected.new_status) == (STAGE_CHANGED, "FAILURE")
    assert rejected.approval == {"decision": "REJECTED", "by": "bob", "at": "2026-03-20T17:17:18.760Z",
                                 "comment": None, "approved": 0, "required": 1}
    assert client.post(f"/api/stages/{plain}/retry").status_code == 200
    assert [c.approval for c in events() if c.stage_id == plain] == [None]
