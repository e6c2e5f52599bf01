"""Real threads against a real DynamoDB Local: no update is ever lost."""
from __future__ import annotations

import json
import threading
from collections import Counter

import pytest

from chalicelib.domain.errors import Conflict
from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
from chalicelib.domain.status import StageStatus, derive_run_status
from chalicelib.service import runs

pytestmark = pytest.mark.ddb_local
S = StageStatus


def run_threads(targets):
    barrier = threading.Barrier(len(targets))
    outcomes: list = [None] * len(targets)

    def worker(index, target):
        barrier.wait()
        try:
            outcomes[index] = ("ok", target())
        except Conflict as error:
            outcomes[index] = ("conflict", error)
        except Exception as error:  # noqa: BLE001 - surfaced by the assertions below
            outcomes[index] = ("error", error)

    threads = [threading.Thread(target=worker, args=(i, t)) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def test_writers_on_different_stages_of_one_run_all_land(local_ctx):
    body = {"pipeline": "race", "stages": [{"type": "OTHER", "name": f"s{i}"} for i in range(8)]}
    aggregate = runs.create_run(local_ctx, CreateRunIn.model_validate_json(json.dumps(body)))
    patch = PatchStageIn(status=S.IN_PROGRESS)
    outcomes = run_threads([
        (lambda sid=stage.id: runs.patch_stage(local_ctx, sid, patch)) for stage in aggregate.stages
    ])
    assert [kind for kind, _ in outcomes] == ["ok"] * 8, [o for o in outcomes if o[0] != "ok"]
    final = local_ctx.stores.runs.load_run(aggregate.run.id)
    assert [s.status for s in final.stages] == [S.IN_PROGRESS] * 8
    assert final.run.status == S.IN_PROGRESS
    # issue 12: a change of one stage no longer rewrites the run (its version is bumped only by
    # changes of the whole run); each writer wrote its own stage exactly once
    assert final.run.version == 1
    assert [s.version for s in final.stages] == [2] * 8


def test_writers_racing_on_one_stage_one_wins_the_rest_get_409(local_ctx):
    body = {"pipeline": "race", "stages": ["BUILD"]}
    aggregate = runs.create_run(local_ctx, CreateRunIn.model_validate_json(json.dumps(body)))
    stage_id = aggregate.stages[0].id
    runs.patch_stage(local_ctx, stage_id, PatchStageIn(status=S.IN_PROGRESS))
    targets = [S.SUCCESS, S.FAILURE, S.CANCELLED, S.TIMED_OUT] * 2
    outcomes = run_threads([
        (lambda t=t: runs.patch_stage(local_ctx, stage_id, PatchStageIn(status=t))) for t in targets
    ])
    kinds = Counter(kind for kind, _ in outcomes)
    assert kinds["error"] == 0, outcomes
    winners = [value for kind, value in outcomes if kind == "ok"]
    final = local_ctx.stores.runs.load_run(aggregate.run.id)
    stage = final.stages[0]
    # Identical targets may both "win" (the second is a no-op); different ones never both do.
    assert len({w.status for w in winners}) == 1, winners
    assert stage.status == winners[0].status
    assert kinds["conflict"] == len(targets) - len(winners)
    assert stage.version == 3, "exactly one write after IN_PROGRESS"
    assert final.run.status == derive_run_status([stage.status])
