"""The ``GroupStore`` port (service/ports.py) and the pipeline's concurrency setting, held to one
contract on both stores (memory and moto), as tests/integration/test_store_contract.py does for
the others: a write conditioned on a version read is refused once anyone wrote since, with
``ConcurrentModification`` and nothing written; the run, the group, the superseded run, the
promoted run and the link of one write land together or not at all; an Idempotency-Key claim
held is committed with the first write."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from chalicelib import wiring
from chalicelib.domain.clock import format_iso
from chalicelib.domain.concurrency import Group
from chalicelib.domain.errors import ConcurrentModification, NotFound
from chalicelib.domain.model import StageSpec, new_run
from chalicelib.domain.operations import cancel_run
from chalicelib.service.ports import COMMITTED, Record

SPECS = [StageSpec(type="BUILD", name="build")]


@pytest.fixture(params=["memory", "moto"])
def ctx(request, clock, settings):
    if request.param == "moto":
        return request.getfixturevalue("ctx")
    return wiring.memory_context(settings, clock)


def fresh(ctx, pipeline="web"):
    counter = ctx.stores.pipelines.claim(pipeline).counter
    aggregate = new_run(pipeline, counter, SPECS, ctx.clock.now())
    aggregate.run.concurrency_group = "g"
    return aggregate


def test_the_setting_is_stored_and_returned_by_the_claim(ctx):
    ctx.stores.runs.insert_run(fresh(ctx))
    assert ctx.stores.pipelines.claim("web").concurrency is None
    status = ctx.stores.pipelines.set_concurrency("web", {"mode": "QUEUED", "group": "g"})
    assert status.concurrency == {"mode": "QUEUED", "group": "g"}
    assert ctx.stores.pipelines.claim("web").concurrency == {"mode": "QUEUED", "group": "g"}
    assert ctx.stores.pipelines.get("web").concurrency == {"mode": "QUEUED", "group": "g"}
    with pytest.raises(NotFound):
        ctx.stores.pipelines.set_concurrency("nope", {"mode": "QUEUED", "group": None})


def test_a_group_written_from_a_stale_read_is_refused_and_writes_nothing(ctx):
    groups = ctx.stores.groups
    assert groups.get("web", "g") is None
    first = fresh(ctx)
    groups.insert_run(first, None, Group("web", "g", active=first.run.id))
    stored = groups.get("web", "g")
    assert (stored.active, stored.queue, stored.version) == (first.run.id, (), 1)
    assert first.run.version == 1  # as RunStore.insert_run: versions bumped in the objects
    late = fresh(ctx)
    with pytest.raises(ConcurrentModification):  # it read the group before ``first`` took it
        groups.insert_run(late, None, Group("web", "g", active=late.run.id))
    assert ctx.stores.runs.load_run(late.run.id) is None and groups.get("web", "g") == stored
    queued = fresh(ctx)
    queued.run.queued = True
    queued.refresh(ctx.clock.now())
    groups.insert_run(queued, None, replace(stored, queue=(queued.run.id,)))
    loaded = ctx.stores.runs.load_run(queued.run.id)
    assert (loaded.run.status.value, loaded.run.queued, loaded.run.concurrency_group) == ("QUEUED", True, "g")
    assert groups.get("web", "g").queue == (queued.run.id,)


def test_a_superseding_create_cancels_the_old_run_in_the_same_write(ctx):
    groups = ctx.stores.groups
    old = fresh(ctx)
    groups.insert_run(old, None, Group("web", "g", active=old.run.id))
    stored = groups.get("web", "g")
    new = fresh(ctx)
    before = ctx.stores.runs.load_run(old.run.id)
    after = before.snapshot()
    cancel_run(after, ctx.clock.now(), actor="a", reason="superseded")
    after.refresh(ctx.clock.now())
    stale = (before.snapshot(), after.snapshot())  # as read, before this write bumps versions
    groups.insert_run(new, None, replace(stored, active=new.run.id), (before, after))
    assert ctx.stores.runs.load_run(old.run.id).run.status.value == "CANCELLED"
    assert groups.get("web", "g").active == new.run.id
    # the same cancel from the old read, with another new run: refused, nothing written
    third = fresh(ctx)
    with pytest.raises(ConcurrentModification):
        groups.insert_run(third, None, replace(groups.get("web", "g"), active=third.run.id),
                          stale)
    assert ctx.stores.runs.load_run(third.run.id) is None and groups.get("web", "g").active == new.run.id


def test_a_promotion_is_conditioned_on_the_run_that_freed_the_group(ctx):
    groups = ctx.stores.groups
    holder, waiting = fresh(ctx), fresh(ctx)
    groups.insert_run(holder, None, Group("web", "g", active=holder.run.id))
    waiting.run.queued = True
    waiting.refresh(ctx.clock.now())
    groups.insert_run(waiting, None, replace(groups.get("web", "g"), queue=(waiting.run.id,)))
    read_holder = ctx.stores.runs.load_run(holder.run.id).run
    changed = ctx.stores.runs.load_run(holder.run.id)
    again = changed.snapshot()
    again.run.variables = {"A": "1"}
    ctx.stores.runs.save(changed, again)  # the holder changed since it was read
    before = ctx.stores.runs.load_run(waiting.run.id)
    after = before.snapshot()
    after.run.queued = False
    after.refresh(ctx.clock.now())
    freed = Group("web", "g", active=waiting.run.id, version=groups.get("web", "g").version)
    with pytest.raises(ConcurrentModification):
        groups.write(freed, (before, after), checked=read_holder, now=ctx.clock.now())
    assert ctx.stores.runs.load_run(waiting.run.id).run.status.value == "QUEUED"
    groups.write(freed, (before, after), checked=ctx.stores.runs.load_run(holder.run.id).run,
                 now=ctx.clock.now())
    assert ctx.stores.runs.load_run(waiting.run.id).run.status.value == "IDLE"
    assert groups.get("web", "g").active == waiting.run.id


def test_a_taken_link_refuses_the_whole_write(ctx):
    groups = ctx.stores.groups
    first = fresh(ctx)
    groups.insert_run(first, None, Group("web", "g", active=first.run.id), link=("schedule", "k", "t"))
    assert ctx.stores.links.linked_run("schedule", "k") == first.run.id
    second = fresh(ctx)
    with pytest.raises(ConcurrentModification):
        groups.insert_run(second, None, replace(groups.get("web", "g"), queue=(second.run.id,)),
                          link=("schedule", "k", "t"))
    assert ctx.stores.runs.load_run(second.run.id) is None and groups.get("web", "g").queue == ()


def test_groups_with_waiting_runs_are_due_after_a_grace_time(ctx):
    groups = ctx.stores.groups
    holder, waiting = fresh(ctx), fresh(ctx)
    groups.insert_run(holder, None, Group("web", "g", active=holder.run.id))
    assert groups.due_groups(format_iso(ctx.clock.now() + timedelta(hours=1))) == []  # nobody waits
    groups.insert_run(waiting, None, replace(groups.get("web", "g"), queue=(waiting.run.id,)))
    now = ctx.clock.now()
    assert groups.due_groups(format_iso(now + timedelta(seconds=59))) == []
    assert groups.due_groups(format_iso(now + timedelta(seconds=60))) == [("web", "g")]


def test_a_grouped_create_commits_the_held_claim(ctx):
    store = ctx.stores.idempotency
    held = store.claim("k-group", "fp", 1000, lease_seconds=30, ttl_seconds=3600)
    run = fresh(ctx)
    with store.holding("k-group", held):
        ctx.stores.groups.insert_run(run, None, Group("web", "g", active=run.run.id))
    assert store.claim("k-group", "fp", 1010, lease_seconds=30, ttl_seconds=3600) == Record(
        state=COMMITTED, fingerprint="fp", effect={"run": run.run.id})


def _queued(ctx, groups):
    waiting = fresh(ctx)
    waiting.run.queued = True
    waiting.refresh(ctx.clock.now())
    groups.insert_run(waiting, None, replace(groups.get("web", "g"), queue=(waiting.run.id,)))
    return waiting


def _replacing(ctx, waiting_id, by):
    before = ctx.stores.runs.load_run(waiting_id)
    after = before.snapshot()
    cancel_run(after, ctx.clock.now(), actor="a", reason=f"replaced by run {by}", force=True)
    after.run.queued = False
    after.refresh(ctx.clock.now())
    return before, after


def test_a_newest_create_replaces_the_waiting_run_in_the_write_that_queues_it(ctx):
    """The NEWEST queue's write: the new run queued, the run that waited cancelled (no longer
    QUEUED) and the group naming only the new one, together, each on its version as read."""
    groups = ctx.stores.groups
    holder = fresh(ctx)
    groups.insert_run(holder, None, Group("web", "g", active=holder.run.id))
    waiting = _queued(ctx, groups)
    stored = groups.get("web", "g")
    new = fresh(ctx)
    new.run.queued = True
    new.refresh(ctx.clock.now())
    before, after = _replacing(ctx, waiting.run.id, new.run.id)
    stale = (before.snapshot(), after.snapshot())
    groups.insert_run(new, None, replace(stored, queue=(new.run.id,)), (before, after))
    replaced = ctx.stores.runs.load_run(waiting.run.id)
    assert (replaced.run.status.value, replaced.run.queued) == ("CANCELLED", False)
    assert replaced.run.cancellation["reason"] == f"replaced by run {new.run.id}"
    assert ctx.stores.runs.load_run(new.run.id).run.status.value == "QUEUED"
    assert (groups.get("web", "g").active, groups.get("web", "g").queue) == (holder.run.id, (new.run.id,))
    # a second create that read the same group and waiting run: refused, nothing written
    late = fresh(ctx)
    late.run.queued = True
    late.refresh(ctx.clock.now())
    with pytest.raises(ConcurrentModification):
        groups.insert_run(late, None, replace(stored, queue=(late.run.id,)), stale)
    assert ctx.stores.runs.load_run(late.run.id) is None
    assert groups.get("web", "g").queue == (new.run.id,)


def test_a_replace_refused_by_the_waiting_run_writes_nothing(ctx):
    """The group as read, but the run that waited changed since (promoted, cancelled): the
    whole write is refused, the group and the new run not written either."""
    groups = ctx.stores.groups
    holder = fresh(ctx)
    groups.insert_run(holder, None, Group("web", "g", active=holder.run.id))
    waiting = _queued(ctx, groups)
    stored = groups.get("web", "g")
    new = fresh(ctx)
    before, after = _replacing(ctx, waiting.run.id, new.run.id)
    changed = ctx.stores.runs.load_run(waiting.run.id)
    renamed = changed.snapshot()
    renamed.run.variables = {"A": "1"}
    ctx.stores.runs.save(changed, renamed)
    with pytest.raises(ConcurrentModification):
        groups.insert_run(new, None, replace(stored, queue=(new.run.id,)), (before, after))
    assert ctx.stores.runs.load_run(new.run.id) is None
    assert ctx.stores.runs.load_run(waiting.run.id).run.status.value == "QUEUED"
    assert groups.get("web", "g") == stored


def test_a_step_of_a_create_written_without_the_claim_leaves_it_for_the_create(ctx):
    """``save_run(claim=False)``: a run that waited replaced on its own (several waited) does
    not commit the create's Idempotency-Key; the create's own write does, naming its run."""
    groups = ctx.stores.groups
    holder = fresh(ctx)
    groups.insert_run(holder, None, Group("web", "g", active=holder.run.id))
    waiting = _queued(ctx, groups)
    store = ctx.stores.idempotency
    held = store.claim("k-newest", "fp", 1000, lease_seconds=30, ttl_seconds=3600)
    new = fresh(ctx)
    new.run.queued = True
    new.refresh(ctx.clock.now())
    with store.holding("k-newest", held):
        before, after = _replacing(ctx, waiting.run.id, new.run.id)
        group = groups.get("web", "g")
        groups.save_run(before, after, replace(group, queue=()), claim=False)
        assert ctx.stores.runs.load_run(waiting.run.id).run.status.value == "CANCELLED"
        groups.insert_run(new, None, replace(groups.get("web", "g"), queue=(new.run.id,)))
    assert store.claim("k-newest", "fp", 1010, lease_seconds=30, ttl_seconds=3600) == Record(
        state=COMMITTED, fingerprint="fp", effect={"run": new.run.id})
