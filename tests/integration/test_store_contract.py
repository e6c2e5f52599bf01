"""One contract for every storage port (chalicelib/service/ports.py), run against the DynamoDB
store (on moto) and the in-memory store (chalicelib/store/memory.py) alike, so the unit tier's
stores behave as the real ones where the services rely on it: the domain errors of conditional
writes (and that they write nothing), versions, the Idempotency-Key claim carried by a change,
paging with signed cursors, ordering."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from chalicelib import wiring
from chalicelib.domain import dialect_ids
from chalicelib.domain.errors import BadRequest, ConcurrentModification, Conflict, NotFound, PipelinePaused
from chalicelib.domain.model import StageSpec, change_status, new_run
from chalicelib.domain.operations import new_attempt, retry_stage
from chalicelib.domain.status import StageStatus as S
from chalicelib.service.ports import (
    COMMITTED,
    DONE,
    PENDING,
    ClaimTakenOver,
    DeliveryAttempt,
    DueTimer,
    Record,
    StoredSource,
    StoredSubscription,
    StoredToken,
)

SPECS = [StageSpec(type="BUILD", name="build", timeout_seconds=60), StageSpec(type="DEPLOY", name="deploy")]


@pytest.fixture(params=["memory", "moto"])
def ctx(request, clock, settings):
    if request.param == "moto":
        return request.getfixturevalue("ctx")
    return wiring.memory_context(settings, clock)


def make_run(ctx, pipeline="web", layout=None):
    counter, _ = ctx.stores.pipelines.claim_counter(pipeline)
    aggregate = new_run(pipeline, counter, SPECS, ctx.clock.now())
    ctx.stores.runs.insert_run(aggregate, layout=layout)
    return aggregate


# ---- runs ------------------------------------------------------------------------------------

def test_a_run_reads_back_whole_with_versions_starting_at_one(ctx):
    aggregate = make_run(ctx)
    assert aggregate.run.version == 1 and [s.version for s in aggregate.stages] == [1, 1]
    loaded = ctx.stores.runs.load_run("web:1")
    assert loaded == aggregate
    assert [s.position for s in loaded.stages] == [1, 2]
    assert ctx.stores.runs.get_stage("web:1:2") == aggregate.stages[1]
    assert ctx.stores.runs.load_run("web:9") is None
    assert ctx.stores.runs.get_stage("web:1:3") is None and ctx.stores.runs.get_stage("nonsense") is None


def test_save_bumps_what_it_wrote_and_refuses_a_stale_copy(ctx):
    make_run(ctx)
    mine, theirs = ctx.stores.runs.load_run("web:1"), ctx.stores.runs.load_run("web:1")
    before = mine.snapshot()
    change_status(mine.stages[0], S.IN_PROGRESS, ctx.clock.now())
    mine.refresh(ctx.clock.now())
    ctx.stores.runs.save(before, mine)
    assert mine.run.version == 2 and [s.version for s in mine.stages] == [2, 1]
    assert ctx.stores.runs.load_run("web:1") == mine

    stale_before = theirs.snapshot()
    change_status(theirs.stages[1], S.IN_PROGRESS, ctx.clock.now())
    with pytest.raises(ConcurrentModification):
        ctx.stores.runs.save(stale_before, theirs)
    assert ctx.stores.runs.load_run("web:1") == mine  # nothing written


def test_save_adds_and_removes_stages(ctx):
    make_run(ctx)
    aggregate = ctx.stores.runs.load_run("web:1")
    before = aggregate.snapshot()
    removed = aggregate.stages.pop()
    ctx.stores.runs.save(before, aggregate)
    assert [s.id for s in ctx.stores.runs.load_run("web:1").stages] == ["web:1:1"]
    assert ctx.stores.runs.get_stage(removed.id) is None


def test_delete_run_is_conditional(ctx):
    make_run(ctx)
    stale = ctx.stores.runs.load_run("web:1")
    fresh = ctx.stores.runs.load_run("web:1")
    before = fresh.snapshot()
    change_status(fresh.stages[0], S.IN_PROGRESS, ctx.clock.now())
    ctx.stores.runs.save(before, fresh)
    with pytest.raises(ConcurrentModification):
        ctx.stores.runs.delete_run(stale)
    ctx.stores.runs.delete_run(fresh)
    assert ctx.stores.runs.load_run("web:1") is None and ctx.stores.runs.get_stage("web:1:1") is None


def test_list_runs_pages_newest_first_with_scoped_cursors(ctx):
    for _ in range(5):
        make_run(ctx)
    make_run(ctx, pipeline="api")
    page, cursor = ctx.stores.runs.list_runs("web", None, 2, None)
    assert [r.counter for r in page] == [5, 4] and cursor
    page, cursor = ctx.stores.runs.list_runs("web", None, 2, cursor)
    assert [r.counter for r in page] == [3, 2]
    page, last = ctx.stores.runs.list_runs("web", None, 2, cursor)
    assert [r.counter for r in page][:1] == [1]
    with pytest.raises(BadRequest):  # a cursor of another listing
        ctx.stores.runs.list_runs("api", None, 2, cursor)
    with pytest.raises(BadRequest):
        ctx.stores.runs.list_runs("web", None, 2, "forged.cursor")
    assert ctx.stores.runs.list_runs("web", S.IN_PROGRESS, 10, None) == ([], None)
    assert [r.counter for r in ctx.stores.runs.list_runs("web", S.IDLE, 10, None)[0]] == [5, 4, 3, 2, 1]


# ---- attempt history ---------------------------------------------------------------------------

def run_and_retry(ctx, stage_index, times, pipeline="web"):
    """A run whose stage ``stage_index`` ran and was retried ``times`` times, one save each."""
    aggregate = make_run(ctx, pipeline)
    stage_id = aggregate.stages[stage_index].id
    for _ in range(times):
        aggregate = ctx.stores.runs.load_run(aggregate.run.id)
        before = aggregate.snapshot()
        stage = aggregate.stage(stage_id)
        change_status(stage, S.IN_PROGRESS, ctx.clock.now())
        change_status(stage, S.FAILURE, ctx.clock.now())
        retry_stage(aggregate, stage_id, ctx.clock.now())
        aggregate.refresh(ctx.clock.now())
        ctx.stores.runs.save(before, aggregate)
        assert aggregate.stage(stage_id).attempts == []  # stored: the objects passed in hold none
    return ctx.stores.runs.load_run(aggregate.run.id)


def test_ended_attempts_are_stored_apart_and_read_only_when_asked_for(ctx):
    aggregate = run_and_retry(ctx, 0, 1)
    build, deploy = aggregate.stages
    assert (build.attempt, build.attempt_count, build.attempts) == (2, 2, [])  # not read with the run
    assert ctx.stores.runs.get_stage(build.id).attempts == []
    ended = {"attempt": 1, "status": "FAILURE", "startedAt": _iso(ctx.clock.now()),
             "endedAt": _iso(ctx.clock.now()), "duration": 0}
    assert ctx.stores.runs.list_attempts(build, 10, None) == ([ended], None)
    assert ctx.stores.runs.get_attempt(build, 1) == ended
    assert [ctx.stores.runs.get_attempt(build, n) for n in (0, 2, 3)] == [None, None, None]
    assert ctx.stores.runs.attempts_of(aggregate.stages) == {build.id: [ended], deploy.id: []}
    assert ctx.stores.runs.list_attempts(deploy, 10, None) == ([], None)


def test_attempts_page_newest_first_with_cursors_scoped_to_the_stage(ctx):
    build = run_and_retry(ctx, 0, 5).stages[0]
    page, cursor = ctx.stores.runs.list_attempts(build, 2, None)
    assert [a["attempt"] for a in page] == [5, 4] and cursor
    page, cursor = ctx.stores.runs.list_attempts(build, 2, cursor)
    assert [a["attempt"] for a in page] == [3, 2] and cursor
    page, last = ctx.stores.runs.list_attempts(build, 2, cursor)
    assert [a["attempt"] for a in page] == [1] and last is None
    other = run_and_retry(ctx, 1, 2).stages[1]
    with pytest.raises(BadRequest):  # a cursor of another stage's history
        ctx.stores.runs.list_attempts(other, 2, cursor)
    with pytest.raises(BadRequest):
        ctx.stores.runs.list_attempts(build, 2, "forged.cursor")
    assert [a["attempt"] for a in ctx.stores.runs.attempts_of([build])[build.id]] == [1, 2, 3, 4, 5]
    # a stage as read before a later retry: its history is what it had then
    as_read = replace(build, attempt=3)
    assert [a["attempt"] for a in ctx.stores.runs.list_attempts(as_read, 10, None)[0]] == [2, 1]


def test_a_lost_race_stores_no_attempt(ctx):
    make_run(ctx)
    mine, theirs = ctx.stores.runs.load_run("web:1"), ctx.stores.runs.load_run("web:1")
    before = mine.snapshot()
    change_status(mine.stages[0], S.IN_PROGRESS, ctx.clock.now())
    ctx.stores.runs.save(before, mine)
    stale = theirs.snapshot()
    change_status(theirs.stages[1], S.IN_PROGRESS, ctx.clock.now())
    change_status(theirs.stages[1], S.SUCCESS, ctx.clock.now())
    retry_stage(theirs, theirs.stages[1].id, ctx.clock.now())
    with pytest.raises(ConcurrentModification):
        ctx.stores.runs.save(stale, theirs)
    assert ctx.stores.runs.attempts_of([replace(theirs.stages[1], attempts=[])]) == {"web:1:2": []}


def test_a_change_of_one_stage_alone_stores_the_attempts_it_ended(ctx):
    """The stage-local write (``save(local=True)``, issue 12) carries the attempts the change ended
    as the whole-run write does: a sender's rerun read in part keeps its history."""
    make_run(ctx)
    read = ctx.stores.runs.load_stage("web:1:1")
    before = read.snapshot()
    stage = read.stage("web:1:1")
    change_status(stage, S.IN_PROGRESS, ctx.clock.now())
    change_status(stage, S.FAILURE, ctx.clock.now())
    ctx.stores.runs.save(before, read, local=True)
    read = ctx.stores.runs.load_stage("web:1:1")
    before = read.snapshot()
    stage = read.stage("web:1:1")
    new_attempt(stage, ctx.clock.now())  # the sender's attempt 2
    change_status(stage, S.IN_PROGRESS, ctx.clock.now())
    ctx.stores.runs.save(before, read, local=True)
    stored = ctx.stores.runs.get_stage("web:1:1")
    history = ctx.stores.runs.list_attempts(stored, 10, None)[0]
    assert (stored.attempt, stored.attempt_count, stored.attempts) == (2, 2, [])
    assert [(a["attempt"], a["status"]) for a in history] == [(1, "FAILURE")]


def test_a_new_run_stores_the_attempts_its_stages_ended_already(ctx):
    counter, _ = ctx.stores.pipelines.claim_counter("web")
    aggregate = new_run("web", counter, SPECS, ctx.clock.now())
    build = aggregate.stages[0]
    build.attempt = build.first_attempt = 3  # a sender's attempt 3, the first we hear of
    new_attempt(build, ctx.clock.now())  # ... and at once its attempt 4
    ctx.stores.runs.insert_run(aggregate)
    stored = ctx.stores.runs.load_run(aggregate.run.id).stages[0]
    assert (stored.attempt, stored.first_attempt, stored.attempt_count) == (4, 3, 2)
    assert [a["attempt"] for a in ctx.stores.runs.list_attempts(stored, 10, None)[0]] == [3]


def test_deleting_a_stage_or_a_run_deletes_its_attempts(ctx):
    aggregate = run_and_retry(ctx, 1, 3)
    deploy = aggregate.stages[1]
    before = aggregate.snapshot()
    aggregate.remove_stage(deploy.id)
    ctx.stores.runs.save(before, aggregate)
    assert ctx.stores.runs.list_attempts(deploy, 10, None) == ([], None)  # same id, history gone

    aggregate = run_and_retry(ctx, 0, 2)
    build = aggregate.stages[0]
    ctx.stores.runs.delete_run(aggregate)
    assert ctx.stores.runs.list_attempts(build, 10, None) == ([], None)
    assert ctx.stores.runs.get_attempt(build, 1) is None


# ---- pipelines and dialect lookups -------------------------------------------------------------

def test_counters_pause_and_layout(ctx):
    assert [ctx.stores.pipelines.claim_counter("web")[0] for _ in range(3)] == [1, 2, 3]
    assert ctx.stores.pipelines.get("nope") is None
    with pytest.raises(NotFound):
        ctx.stores.pipelines.claim_counter("web", require_layout=True)
    make_run(ctx, layout={"stages": ["x"]})
    assert ctx.stores.pipelines.claim_counter("web", require_layout=True) == (5, {"stages": ["x"]})
    paused = ctx.stores.pipelines.set_paused("web", True, cause="maintenance", by="ops", at=ctx.clock.now())
    assert (paused.paused, paused.pause_cause, paused.paused_by, paused.paused_at) == (
        True, "maintenance", "ops", ctx.clock.now())
    with pytest.raises(PipelinePaused):
        ctx.stores.pipelines.claim_counter("web")
    with pytest.raises(Conflict):
        ctx.stores.pipelines.set_paused("web", True)
    with pytest.raises(NotFound):
        ctx.stores.pipelines.set_paused("nope", True)
    resumed = ctx.stores.pipelines.set_paused("web", False)
    assert (resumed.paused, resumed.pause_cause, resumed.counter) == (False, None, 5)
    with pytest.raises(Conflict):
        ctx.stores.pipelines.set_paused("web", False)
    assert ctx.stores.pipelines.claim_counter("web")[0] == 6
    found = ctx.stores.pipelines.get("web")
    assert (found.name, found.counter, found.paused, found.layout) == ("web", 6, False, {"stages": ["x"]})


def test_dialect_lookups(ctx):
    for _ in range(3):
        make_run(ctx)
    assert ctx.stores.dialects.pipeline_by_codearts_key(dialect_ids.codearts_key("web")).name == "web"
    assert ctx.stores.dialects.pipeline_by_buddy_key(dialect_ids.buddy_key("web")).name == "web"
    assert ctx.stores.dialects.pipeline_by_codearts_key(dialect_ids.codearts_key("api")) is None
    assert ctx.stores.dialects.pipeline_by_buddy_key(dialect_ids.buddy_key("api")) is None
    assert [r.counter for r in ctx.stores.dialects.runs_between("web", 2, 3)] == [3, 2]
    assert [r.counter for r in ctx.stores.dialects.runs_between("web", -5, 1)] == [1]
    assert ctx.stores.dialects.runs_between("web", 3, 2) == []


# ---- links -------------------------------------------------------------------------------------

def test_a_linked_run_is_made_once(ctx):
    counter, _ = ctx.stores.pipelines.claim_counter("web")
    first = new_run("web", counter, SPECS, ctx.clock.now())
    assert ctx.stores.links.insert_linked_run(first, "github", "run-1", "2026-01-01T00:00:00.000Z") is True
    assert ctx.stores.links.linked_run("github", "run-1") == "web:1"
    counter, _ = ctx.stores.pipelines.claim_counter("web")
    second = new_run("web", counter, SPECS, ctx.clock.now())
    assert ctx.stores.links.insert_linked_run(second, "github", "run-1", "2026-01-01T00:00:00.000Z") is False
    assert ctx.stores.runs.load_run("web:2") is None  # nothing written
    assert ctx.stores.links.linked_run("gitlab", "run-1") is None


# ---- idempotency -------------------------------------------------------------------------------

def claim(ctx, key="k1", fingerprint="fp", now=1000, lease=30, ttl=3600):
    return ctx.stores.idempotency.claim(key, fingerprint, now, lease_seconds=lease, ttl_seconds=ttl)


def test_a_claim_is_held_until_completed_released_abandoned_or_expired(ctx):
    store = ctx.stores.idempotency
    token = claim(ctx)
    assert isinstance(token, str)
    assert claim(ctx, now=1010) == Record(state=PENDING, fingerprint="fp")
    assert store.complete("k1", "not-mine", 200, {}, b"{}", max_stored=1000) == "lost"
    assert store.complete("k1", token, 201, {"Location": "/x"}, b'{"a":1}', max_stored=1000) == "stored"
    assert claim(ctx, now=1020) == Record(state=DONE, fingerprint="fp", status_code=201,
                                          headers={"Location": "/x"}, body=b'{"a":1}')
    assert isinstance(claim(ctx, now=1000 + 3600), str)  # expired: free again

    token = claim(ctx, key="k2")
    store.release("k2", token)
    assert isinstance(claim(ctx, key="k2"), str)
    assert isinstance(claim(ctx, key="k2", now=1000 + 30), str)  # abandoned past its lease
    token = claim(ctx, key="k3")
    assert store.complete("k3", token, 200, {}, b"x" * 5000, max_stored=10) == "too_large"
    assert isinstance(claim(ctx, key="k3"), str)  # released


def test_a_held_claim_commits_with_the_change_it_guards(ctx):
    store = ctx.stores.idempotency
    token = claim(ctx)
    counter, _ = ctx.stores.pipelines.claim_counter("web")
    aggregate = new_run("web", counter, SPECS, ctx.clock.now())
    with store.holding("k1", token):
        ctx.stores.runs.insert_run(aggregate)
        ctx.stores.pipelines.set_paused("web", True, at=ctx.clock.now())  # later writes leave it alone
    assert claim(ctx, now=1010) == Record(state=COMMITTED, fingerprint="fp", effect={"run": "web:1"})
    store.release("k1", token)  # a committed record stays
    assert claim(ctx, now=1010).state == COMMITTED
    assert store.complete("k1", token, 201, {}, None, max_stored=1000) == "stored"
    assert claim(ctx, now=1010) == Record(state=DONE, fingerprint="fp", status_code=201, headers={},
                                          effect={"run": "web:1"})


def test_a_claim_taken_over_writes_nothing(ctx):
    store = ctx.stores.idempotency
    token = claim(ctx, lease=30)
    assert isinstance(claim(ctx, now=1030, lease=30), str)  # another request took it over
    counter, _ = ctx.stores.pipelines.claim_counter("web")
    with store.holding("k1", token), pytest.raises(ClaimTakenOver):
        ctx.stores.runs.insert_run(new_run("web", counter, SPECS, ctx.clock.now()))
    assert ctx.stores.runs.load_run("web:1") is None


def test_every_first_write_of_a_change_carries_the_held_claim(ctx):
    """Not only runs: a pipeline's pause, a link's run, a token issued or revoked, a source, a
    subscription each commit the held claim with what they wrote (``IdempotencyStore.holding``)."""
    store = ctx.stores.idempotency
    counter, _ = ctx.stores.pipelines.claim_counter("web")
    linked = new_run("web", counter, SPECS, ctx.clock.now())
    source = StoredSource(name="gh", type="github", sealed_secret="s", created_at="2026-01-01T00:00:00.000Z")
    writes = [
        ("k-link", lambda: ctx.stores.links.insert_linked_run(linked, "github", "r-1", "x"),
         {"run": "web:1"}),
        ("k-pause", lambda: ctx.stores.pipelines.set_paused("web", True, at=ctx.clock.now()),
         {"pipeline": "web"}),
        ("k-token", lambda: ctx.stores.tokens.insert(token("t1"), "hash1", 100), {"token": "t1"}),
        ("k-revoke", lambda: ctx.stores.tokens.delete("t1"), {"token": "t1", "deleted": True}),
        ("k-source", lambda: ctx.stores.sources.insert_source(source), {"source": "gh"}),
        ("k-sub", lambda: ctx.stores.subscriptions.insert(subscription("sub_a", "x")),
         {"subscription": "sub_a"}),
    ]
    for key, write, effect in writes:
        held = claim(ctx, key=key)
        with store.holding(key, held):
            write()
        assert claim(ctx, key=key, now=1010) == Record(state=COMMITTED, fingerprint="fp", effect=effect), key
    assert ctx.stores.links.linked_run("github", "r-1") == "web:1" and ctx.stores.pipelines.get("web").paused
    assert ctx.stores.tokens.list_all() == [] and ctx.stores.sources.get_source("gh") == source
    assert ctx.stores.subscriptions.get("sub_a") is not None


# ---- tokens ------------------------------------------------------------------------------------

def token(token_id, created_at="2026-01-01T00:00:00.000Z", **kw):
    return StoredToken(token_id=token_id, name=f"n-{token_id}", scopes=["runs:read"], pipelines=None,
                       created_at=created_at, created_by="admin", **kw)


def test_tokens_count_per_window(ctx):
    tokens = ctx.stores.tokens
    tokens.insert(token("t2", "2026-01-02T00:00:00.000Z"), "hash2", 100)
    tokens.insert(token("t1"), "hash1", 100)
    assert [t.token_id for t in tokens.list_all()] == ["t1", "t2"]
    assert tokens.list_all()[0].created_by == "admin"
    assert [(t.window, t.hits) for t in (tokens.hit("hash1", 100), tokens.hit("hash1", 100))] == [
        (100, 1),
        (100, 2),
    ]
    # a late clock counts now
    assert (tokens.hit("hash1", 99).window, tokens.hit("hash1", 99).hits) == (100, 4)
    seen = tokens.hit("hash1", 101)
    assert (seen.token_id, seen.scopes, seen.window, seen.hits) == ("t1", ["runs:read"], 101, 1)
    assert tokens.hit("unknown", 100) is None
    assert tokens.delete("t1", lambda t: False) is None and tokens.hit("hash1", 101).hits == 2
    assert tokens.delete("t1").token_id == "t1"
    assert tokens.hit("hash1", 101) is None and tokens.delete("t1") is None


def test_access_keys(ctx):
    tokens = ctx.stores.tokens
    tokens.insert(token("t3", access_key="AKEXAMPLE", sealed_secret_key="sealed"), None, 100)
    stored = tokens.get_access_key("AKEXAMPLE")
    assert (stored.token_id, stored.sealed_secret_key, stored.access_key, stored.hits) == (
        "t3",
        "sealed",
        "AKEXAMPLE",
        0,
    )
    assert tokens.hit_access_key("AKEXAMPLE", 100).hits == 1
    assert tokens.get_access_key("AKOTHER") is None and tokens.hit_access_key("AKOTHER", 100) is None
    assert [t.access_key for t in tokens.list_all()] == ["AKEXAMPLE"]
    tokens.delete("t3")
    assert tokens.get_access_key("AKEXAMPLE") is None


# ---- sources, subscriptions, deliveries --------------------------------------------------------

def test_sources(ctx):
    sources = ctx.stores.sources
    github = StoredSource(name="gh", type="github", sealed_secret="s1", created_at="2026-01-01T00:00:00.000Z")
    assert sources.insert_source(github) is True
    assert (
        sources.insert_source(StoredSource(name="gh", type="gitlab", sealed_secret="s2", created_at="x"))
        is False
    )
    sources.insert_source(StoredSource(name="a-lab", type="gitlab", sealed_secret="s3", created_at="x"))
    assert sources.get_source("gh") == github and sources.get_source("none") is None
    assert sorted(s.name for s in sources.list_sources()) == ["a-lab", "gh"]
    assert sources.delete_source("gh") == github
    assert sources.delete_source("gh") is None and sources.get_source("gh") is None


def subscription(subscription_id, created_at):
    return StoredSubscription(subscription_id=subscription_id, url="https://example.com/hook",
                              events=("run.finished",), pipelines=("web",), statuses=None,
                              sealed_secret="sealed", created_at=created_at, format="cdevents")


def test_subscriptions(ctx):
    subs = ctx.stores.subscriptions
    subs.insert(subscription("sub_b", "2026-01-02T00:00:00.000Z"))
    subs.insert(subscription("sub_a", "2026-01-03T00:00:00.000Z"))
    assert [s.subscription_id for s in subs.list_all()] == ["sub_b", "sub_a"]
    assert subs.get("sub_a") == subscription("sub_a", "2026-01-03T00:00:00.000Z")
    assert subs.delete("sub_a", lambda s: False) is None and subs.get("sub_a") is not None
    assert subs.delete("sub_a").subscription_id == "sub_a"
    assert subs.get("sub_a") is None and subs.delete("sub_a") is None


def test_delivery_attempts_page_newest_first(ctx):
    log = ctx.stores.deliveries
    for n in range(5):
        log.record(DeliveryAttempt(subscription_id="sub_a", delivery_id=f"d{n}", event_id="e", event_type="t",
                                   attempt=1, outcome="delivered", at=f"2026-01-01T00:00:0{n}.000Z",
                                   status_code=200, error="x" * 600 if n == 0 else None), 0)
    page, cursor = log.list_attempts("sub_a", 3, None)
    assert [a.delivery_id for a in page] == ["d4", "d3", "d2"] and cursor
    page, _ = log.list_attempts("sub_a", 3, cursor)
    assert [a.delivery_id for a in page] == ["d1", "d0"] and len(page[1].error) == 500
    with pytest.raises(BadRequest):
        log.list_attempts("sub_b", 3, cursor)
    assert log.list_attempts("sub_b", 3, None) == ([], None)


# ---- active timers -----------------------------------------------------------------------------

def test_due_timers_are_the_active_stages_past_their_moment(ctx):
    make_run(ctx)
    aggregate = ctx.stores.runs.load_run("web:1")
    before = aggregate.snapshot()
    change_status(aggregate.stages[0], S.IN_PROGRESS, ctx.clock.now())
    ctx.stores.runs.save(before, aggregate)
    timers = ctx.stores.timers
    assert timers.due_timers(_iso(ctx.clock.now() + timedelta(seconds=59))).timers == []
    due = timers.due_timers(_iso(ctx.clock.now() + timedelta(seconds=60)))
    assert [(t.stage_id, t.attempt) for t in due.timers] == [("web:1:1", 1)] and not due.truncated
    assert timers.armed_timer({"eventName": "REMOVE"}) is None


def test_due_timers_stop_at_the_limit_and_say_so(ctx):
    make_run(ctx)
    aggregate = ctx.stores.runs.load_run("web:1")
    before = aggregate.snapshot()
    for stage in aggregate.stages:
        stage.timeout_seconds = 60
        change_status(stage, S.IN_PROGRESS, ctx.clock.now())
    ctx.stores.runs.save(before, aggregate)
    moment = _iso(ctx.clock.now() + timedelta(seconds=60))
    first = ctx.stores.timers.due_timers(moment, limit=1)
    assert len(first.timers) == 1 and first.truncated
    every = ctx.stores.timers.due_timers(moment, limit=5)
    assert sorted(t.stage_id for t in every.timers) == ["web:1:1", "web:1:2"] and not every.truncated


def test_a_started_stages_expectations_are_written_on_its_version_only_and_move_its_timer(ctx):
    """domain/overruns.py: the consumer's write is conditioned on the stage's version as read,
    bumps it (so a writer that read before loses its condition), and the stage's timer (the
    sweeper's due index) moves to the overrun; a stale copy writes nothing."""
    from chalicelib.domain.overruns import set_expectations

    make_run(ctx)
    aggregate = ctx.stores.runs.load_run("web:1")
    before = aggregate.snapshot()
    change_status(aggregate.stages[0], S.IN_PROGRESS, ctx.clock.now())
    ctx.stores.runs.save(before, aggregate)
    read = ctx.stores.runs.get_stage("web:1:1")
    stale = ctx.stores.runs.get_stage("web:1:1")
    assert set_expectations(read, {"build": [20_000, 30_000, 5], "deploy": [9_000, 9_000, 6]})
    assert ctx.stores.runs.record_expectations(read) is True and read.version == stale.version + 1
    stored = ctx.stores.runs.get_stage("web:1:1")
    assert (stored.expectations, stored.overrun_at, stored.version) == (
        read.expectations, ctx.clock.now() + timedelta(seconds=30), read.version)
    due = ctx.stores.timers.due_timers(_iso(ctx.clock.now() + timedelta(seconds=30)))
    assert [(t.stage_id, t.due_at) for t in due.timers] == [("web:1:1", _iso(stored.overrun_at))]
    assert ctx.stores.runs.load_run("web:1").stages[0] == stored  # the run view reads them too
    stale.expectations = {"build": [1, 1, 5]}
    assert ctx.stores.runs.record_expectations(stale) is False  # a change since: nothing written
    assert ctx.stores.runs.get_stage("web:1:1") == stored
    later = ctx.stores.runs.load_run("web:1")
    old = later.snapshot()
    change_status(later.stages[0], S.SUCCESS, ctx.clock.now() + timedelta(seconds=5))
    ctx.stores.runs.save(old, later, local=True)  # the stage's own writer keeps them
    assert ctx.stores.runs.get_stage("web:1:1").expectations == read.expectations


def test_a_stream_record_of_a_stage_entering_a_timer_arms_it(ctx):
    def record(event, new, old=None):
        images = {"NewImage": new} | ({"OldImage": old} if old else {})
        return {"eventName": event, "dynamodb": images}

    started = {"kind": {"S": "stage"}, "stage_id": {"S": "web:1:1"}, "attempt": {"N": "2"},
               "due_at": {"S": "2026-01-01T00:01:00.000Z"}}
    timers = ctx.stores.timers
    assert timers.armed_timer(record("MODIFY", started)) == DueTimer(
        stage_id="web:1:1", attempt=2, due_at="2026-01-01T00:01:00.000Z")
    assert timers.armed_timer(record("MODIFY", started, old=started)) is None  # nothing new
    assert timers.armed_timer(record("INSERT", {**started, "kind": {"S": "run"}})) is None
    # an attempt item (written when an attempt ends) is history: no state change, no timer
    ended = {"kind": {"S": "attempt"}, "pk": {"S": "ATTEMPTS#web:1:1"}, "sk": {"S": "ATTEMPT#0001"},
             "stage_id": {"S": "web:1:1"}, "attempt": {"N": "1"}, "record": {"S": "{}"}}
    assert timers.armed_timer(record("INSERT", ended)) is None
    assert ctx.stores.changes.state_change(record("INSERT", ended), ctx.clock.now()) is None
    assert ctx.stores.changes.state_change(record("REMOVE", {}, old=ended), ctx.clock.now()) is None


def _iso(moment):
    from chalicelib.domain.clock import format_iso

    return format_iso(moment)


# ---- insights (store/insights.py) ------------------------------------------------------------

def _finished(ctx, position=1, attempt=1, status=S.SUCCESS, run_id="web:1"):
    from chalicelib.domain.insights import FinishedAttempt

    now = ctx.clock.now()
    return FinishedAttempt(pipeline="web", run_id=run_id, position=position, name=f"s{position}",
                           status=status,
                           attempt=attempt, first_attempt=1, created_at=now, started_at=now,
                           ended_at=now + timedelta(seconds=3), environment="production")


def test_an_attempt_is_added_once_with_its_marker(ctx):
    insights = ctx.stores.insights
    attempt = _finished(ctx)
    assert insights.add_attempt(attempt, {"n": 1, "SUCCESS": 1}) is True
    assert insights.add_attempt(attempt, {"n": 1, "SUCCESS": 1}) is False  # redelivered: nothing added
    day = attempt.ended_at.date().isoformat()
    read = insights.read_days("web", day, day)
    assert [(i.day, i.stage, dict(i.tally)) for i in read.items] == [(day, "s1", {"n": 1, "SUCCESS": 1})]
    assert [(i.stage, dict(i.tally)) for i in insights.read_days(None, day, day).items] == [
        ("s1", {"n": 1, "SUCCESS": 1})]
    assert insights.read_days("web", "2000-01-01", "2000-01-02").items == []
    marks = insights.run_marks("web:1")
    assert [(m.position, m.attempt, m.status, m.environment, m.name) for m in marks.attempts] == [
        (1, 1, S.SUCCESS, "production", "s1")]
    assert marks.counted is None and insights.run_marks("web:2").attempts == []


def test_a_run_replaces_its_earlier_finish_and_conditions_on_what_it_read(ctx):
    from chalicelib.domain.insights import FinishedRun, PipelineState, RetryRecorded
    from chalicelib.service.ports import RunCounted

    insights = ctx.stores.insights
    now = ctx.clock.now()
    day = now.date().isoformat()
    run = FinishedRun(pipeline="web", run_id="web:1", status=S.FAILURE, created_at=now, started_at=now,
                      ended_at=now, order=3)
    state = insights.pipeline_state("web")
    assert state == PipelineState()
    red = PipelineState(red_since=now, commit_failures=(("c0ffee", "s1", "web:1"),))
    first = {day: {"n": 1, "FAILURE": 1}}
    added = {(day, None): first[day], (day, "s1"): {"flaky": 1}}
    assert insights.add_run(run, None, first, added, state, red)
    assert insights.pipeline_state("web") == replace(red, version=1)
    counted = insights.run_marks("web:1").counted
    assert counted == RunCounted(3, {day: {"n": 1, "FAILURE": 1}}, now)
    with pytest.raises(ConcurrentModification):  # the marker moved on since "None" was read
        insights.add_run(run, None, {}, {(day, None): {"n": 5}}, insights.pipeline_state("web"),
                         PipelineState())
    with pytest.raises(ConcurrentModification):  # the state moved on since version 0 was read
        insights.add_run(replace(run, order=4), counted, {}, {}, state, PipelineState(pending_day=day))
    again = replace(run, status=S.SUCCESS, order=5)
    assert insights.add_run(again, counted, {day: {"n": 1, "SUCCESS": 1}},
                            {(day, None): {"FAILURE": -1, "SUCCESS": 1}},
                            insights.pipeline_state("web"), PipelineState())
    items = insights.read_days("web", day, day).items
    tallies = {i.stage: {k: v for k, v in i.tally.items() if v} for i in items}
    assert tallies == {None: {"n": 1, "SUCCESS": 1}, "s1": {"flaky": 1}}
    insights.record_retry(RetryRecorded("web", "web:1", 2, 2, now))
    insights.record_retry(RetryRecorded("web", "web:1", 2, 2, now))
    assert insights.run_marks("web:1").retries == {(2, 2): now}


def test_a_rebuild_replaces_a_pipelines_items(ctx):
    from chalicelib.domain.insights import PipelineState
    from chalicelib.service.ports import RunMarks

    insights = ctx.stores.insights
    insights.add_attempt(_finished(ctx), {"n": 1})
    day = ctx.clock.now().date().isoformat()
    insights.replace_pipeline("web", {("2026-01-02", None): {"n": 2}},
                              PipelineState(pending_day="2026-01-02"),
                              {"web:1": RunMarks()})
    insights.replace_all_pipelines({("2026-01-02", None): {"n": 2}})
    for scope in ("web", None):
        items = insights.read_days(scope, "2026-01-01", day).items
        assert [(i.day, i.stage, dict(i.tally)) for i in items] == [
            ("2026-01-02", None, {"n": 2})]
    assert insights.pipeline_state("web").pending_day == "2026-01-02"
    assert insights.run_marks("web:1").attempts == []


def test_a_signal_is_kept_once_with_the_state_and_counts_it_brings(ctx):
    from chalicelib.domain.insights import INCIDENT_DETECTED, ROLLED_BACK, DeploymentSignal, PipelineState

    insights = ctx.stores.insights
    now = ctx.clock.now()
    day = now.date().isoformat()
    detected = DeploymentSignal(pipeline="web", key='["/pd", "e1"]', kind=INCIDENT_DETECTED, at=now,
                                incident="inc-1")
    pending = insights.pipeline_state("web")
    after = PipelineState(failed_at=now, restore_incident="inc-1")
    assert insights.add_signal(detected, {day: {"failedChanges": 1}}, pending, after) is True
    assert insights.pipeline_state("web") == replace(after, version=1)
    # the same event again: nothing written, whatever state it brings
    assert insights.add_signal(detected, {day: {"failedChanges": 1}}, insights.pipeline_state("web"),
                               PipelineState()) is False
    for scope in ("web", None):
        assert [dict(i.tally) for i in insights.read_days(scope, day, day).items] == [{"failedChanges": 1}]
    rolled = DeploymentSignal(pipeline="web", key='["/argo", "e2"]', kind=ROLLED_BACK,
                              at=now - timedelta(minutes=1))
    with pytest.raises(ConcurrentModification):  # the state moved on since version 0 was read
        insights.add_signal(rolled, {}, pending, PipelineState(pending_day=day))
    assert insights.add_signal(rolled, {}, pending, pending) is True  # no state change: no condition
    assert insights.signals_of("web") == [rolled, detected]  # in the order they happened
    assert insights.signals_of("api") == []
    # a rebuild keeps the signals (they are what it reads), replacing the days and the state
    insights.replace_pipeline("web", {}, PipelineState(), {})
    assert insights.signals_of("web") == [rolled, detected]
    assert insights.read_days("web", day, day).items == []


def test_the_rebuild_record_is_claimed_once_until_stale_and_saved_by_its_own_rebuild_only(ctx):
    from chalicelib.domain.rebuilds import FAILED, RUNNING, SUCCEEDED, RebuildRecord

    insights = ctx.stores.insights
    now = ctx.clock.now()
    assert insights.rebuild_record() is None
    first = RebuildRecord(id="rb_1", status=RUNNING, started_at=now, updated_at=now, by="ops")
    assert insights.claim_rebuild(first, now - timedelta(minutes=20)) is True
    assert insights.rebuild_record() == first
    second = replace(first, id="rb_2")
    assert insights.claim_rebuild(second, now - timedelta(minutes=20)) is False  # running, fresh
    progress = replace(first, updated_at=now + timedelta(minutes=1), pipelines=1, runs=7, items=12)
    assert insights.save_rebuild(progress) is True and insights.rebuild_record() == progress
    # no progress since: at the staleness limit it is taken for dead, and the dead one stops
    assert insights.claim_rebuild(second, progress.updated_at) is True
    assert insights.save_rebuild(replace(progress, runs=9)) is False
    assert insights.rebuild_record() == second
    ended = replace(second, status=FAILED, finished_at=now, error="RuntimeError: boom")
    assert insights.save_rebuild(ended) is True and insights.rebuild_record() == ended
    assert insights.save_rebuild(replace(ended, status=SUCCEEDED)) is False  # an ended one stays
    assert insights.claim_rebuild(replace(first, id="rb_3"), now - timedelta(minutes=20)) is True  # ended
