"""Real threads against a real DynamoDB Local: no two runs of a QUEUED or SUPERSEDED group are
ever active at once, whatever order concurrent creates (and the holder's end) commit in."""
from __future__ import annotations

import pytest

from chalicelib.domain.concurrency import Mode
from chalicelib.domain.schemas import PatchStageIn
from chalicelib.domain.status import FINAL
from chalicelib.domain.status import StageStatus as S
from chalicelib.service import runs
from tests.integration.test_concurrency_local import run_threads
from tests.unit import test_concurrency as cases

pytestmark = pytest.mark.ddb_local
WRITERS = 8


def _runs(ctx, last: int) -> dict[str, S]:
    return {f"web:{n}": cases.status(ctx, f"web:{n}") for n in range(2, last + 1)}


def _active(statuses: dict[str, S]) -> list[str]:
    return [run_id for run_id, status in statuses.items() if status not in FINAL and status != S.QUEUED]


def test_concurrent_creates_in_a_queued_group_leave_one_active_and_the_rest_waiting(local_ctx):
    cases.configure(local_ctx, Mode.QUEUED)
    outcomes = run_threads([lambda: cases.create(local_ctx) for _ in range(WRITERS)])
    assert [kind for kind, _ in outcomes] == ["ok"] * WRITERS, outcomes
    statuses = _runs(local_ctx, WRITERS + 1)
    active = _active(statuses)
    assert len(active) == 1, statuses
    group = local_ctx.stores.groups.get("web", "web")
    assert group.active == active[0]
    assert sorted(group.queue) == sorted(r for r, s in statuses.items() if s == S.QUEUED)
    assert len(group.queue) == WRITERS - 1
    # each end promotes exactly the next one, in the queue's order
    order = [group.active, *group.queue]
    for index, run_id in enumerate(order):
        cases.finish(local_ctx, run_id)
        now = _runs(local_ctx, WRITERS + 1)
        assert _active(now) == order[index + 1:index + 2], now
    assert local_ctx.stores.groups.get("web", "web").active is None


def test_concurrent_creates_in_a_superseded_group_leave_only_the_last_one_active(local_ctx):
    cases.configure(local_ctx, Mode.SUPERSEDED)
    cases.create(local_ctx)
    runs.patch_stage(local_ctx, "web:2:1", PatchStageIn(status=S.IN_PROGRESS))
    outcomes = run_threads([lambda: cases.create(local_ctx) for _ in range(WRITERS)])
    assert [kind for kind, _ in outcomes] == ["ok"] * WRITERS, outcomes
    statuses = _runs(local_ctx, WRITERS + 2)
    active = _active(statuses)
    assert len(active) == 1, statuses
    assert local_ctx.stores.groups.get("web", "web").active == active[0]
    cancelled = [run_id for run_id, status in statuses.items() if status == S.CANCELLED]
    assert sorted(cancelled + active) == sorted(statuses)  # every other run was superseded
    for run_id in cancelled:
        reason = runs.get_run(local_ctx, run_id).run.cancellation["reason"]
        assert reason.startswith("superseded by run web:")


def test_creates_racing_the_holders_end_never_make_two_active(local_ctx):
    """The holder ends (and frees the group) while new runs are created: whichever commits
    first, one run holds the group afterwards and the others wait."""
    cases.configure(local_ctx, Mode.QUEUED)
    cases.create(local_ctx)
    runs.patch_stage(local_ctx, "web:2:1", PatchStageIn(status=S.IN_PROGRESS))
    targets = [lambda: runs.patch_stage(local_ctx, "web:2:1", PatchStageIn(status=S.SUCCESS))]
    targets += [lambda: cases.create(local_ctx) for _ in range(WRITERS - 1)]
    outcomes = run_threads(targets)
    assert [kind for kind, _ in outcomes] == ["ok"] * WRITERS, outcomes
    statuses = _runs(local_ctx, WRITERS + 1)
    assert statuses["web:2"] == S.SUCCESS
    active = _active(statuses)
    assert len(active) == 1, statuses
    group = local_ctx.stores.groups.get("web", "web")
    assert group.active == active[0] and len(group.queue) == WRITERS - 2


def test_concurrent_creates_in_a_newest_group_leave_one_holder_and_one_waiting(local_ctx):
    """The NEWEST queue (GitHub's one pending run): concurrent creates behind a running holder.
    Whatever order they commit in, exactly one run waits afterwards and every other one was
    cancelled by the create that came after it ("replaced by run <id>"): the replacements form
    one chain through the batch, so no create lost its write nor replaced a run twice."""
    from chalicelib.domain.concurrency import Queue
    from chalicelib.service import concurrency
    from tests.fixtures.threads import run_threads as run_named

    cases.create(local_ctx)
    cases.finish(local_ctx, "web:1")
    concurrency.set_setting(local_ctx, "web", Mode.QUEUED, None, Queue.NEWEST)
    cases.create(local_ctx)
    runs.patch_stage(local_ctx, "web:2:1", PatchStageIn(status=S.IN_PROGRESS))
    outcomes = run_named({f"w{n}": lambda: cases.create(local_ctx) for n in range(WRITERS)})
    assert set(outcomes.values()) == {"ok"}, outcomes
    statuses = _runs(local_ctx, WRITERS + 2)
    assert _active(statuses) == ["web:2"], statuses
    batch = [f"web:{n}" for n in range(3, WRITERS + 3)]
    waiting = [run_id for run_id in batch if statuses[run_id] == S.QUEUED]
    assert len(waiting) == 1, statuses
    group = local_ctx.stores.groups.get("web", "web")
    assert (group.active, group.queue) == ("web:2", tuple(waiting))
    replaced_by = {}
    for run_id in batch:
        if run_id == waiting[0]:
            continue
        aggregate = runs.get_run(local_ctx, run_id)
        assert (aggregate.run.status, aggregate.run.queued) == (S.CANCELLED, False), run_id
        reason = aggregate.run.cancellation["reason"]
        assert reason.startswith("replaced by run web:"), reason
        replaced_by[run_id] = reason[len("replaced by run "):]
    assert len(set(replaced_by.values())) == WRITERS - 1  # each create replaced at most one run
    assert set(replaced_by.values()) <= set(batch) and waiting[0] in replaced_by.values()
    first = (set(batch) - set(replaced_by.values())).pop()  # the one that found nobody waiting
    chain, seen = first, [first]
    while chain in replaced_by:
        chain = replaced_by[chain]
        seen.append(chain)
    assert chain == waiting[0] and sorted(seen) == sorted(batch)
    cases.finish(local_ctx, "web:2")  # the one waiting starts by itself
    assert cases.status(local_ctx, waiting[0]) == S.IDLE
