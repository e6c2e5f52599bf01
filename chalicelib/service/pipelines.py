"""Pipelines: pause/unpause, status, and schedule a run like the latest one.

A pipeline comes into existence with its first run; before that every operation here is a 404.
A pipeline is ``locked`` (GoCD) while a run holds its default concurrency group (QUEUED or
SUPERSEDED pipelines: service/concurrency.py); GoCD's releaseLock lets that run go.
"""
from __future__ import annotations

from ..domain import dialect_ids, ids
from ..domain.errors import NotFound
from ..domain.model import Run, RunAggregate, RunMetadata, new_run
from ..domain.operations import Pipeline, VariableChange, apply_variables, specs_of
from . import ServiceContext, concurrency


def known_name(pipeline: str) -> str:
    """``pipeline`` if it is a pipeline name at all (else 404, as an unknown one)."""
    return _known_name(pipeline)


def _known_name(pipeline: str) -> str:
    if not ids.is_pipeline_name(pipeline):
        raise NotFound(f"pipeline {pipeline!r} not found")
    return pipeline


def status(ctx: ServiceContext, pipeline: str) -> Pipeline:
    """One GetItem; one more (its default group: who holds the lock) for a QUEUED or SUPERSEDED
    pipeline."""
    found = ctx.stores.pipelines.get(_known_name(pipeline))
    if found is None:
        raise NotFound(f"pipeline {pipeline!r} not found")
    found.lock_holder = concurrency.holder_of(ctx, found.name, found.concurrency)
    return found


def pause(ctx: ServiceContext, pipeline: str, *, actor: str, cause: str | None = None) -> Pipeline:
    """One conditional UpdateItem. New runs are refused (409) until unpaused; runs already
    going are not touched. Pausing a paused pipeline is a 409, as in GoCD."""
    return ctx.stores.pipelines.set_paused(_known_name(pipeline), True, cause=cause, by=actor,
                                         at=ctx.clock.now())


def unpause(ctx: ServiceContext, pipeline: str) -> Pipeline:
    return ctx.stores.pipelines.set_paused(_known_name(pipeline), False)


def schedule(ctx: ServiceContext, pipeline: str, *, actor: str,
             variables: dict[str, str] | None = None,
             secret_variables: dict[str, str] | None = None,
             commit: dict | None = None, source: str = "native",
             creator: str | None = None) -> RunAggregate:
    """A new run with the stage layout (and run options) of the pipeline's latest run.

    Two round trips, like creating a run: claiming the run number returns the stored layout in
    the same UpdateItem, then run and stages are inserted in one transaction. A pipeline that
    never ran has no layout: 404. A paused pipeline: 409.
    """
    now = ctx.clock.now()
    claimed = ctx.stores.pipelines.claim(_known_name(pipeline), require_layout=True, at=now)
    aggregate = run_like_latest(ctx, pipeline, claimed.counter, claimed.layout,
                                trigger=f"scheduled by {actor}"[:100],
                                variables=variables, secret_variables=secret_variables, commit=commit,
                                metadata=RunMetadata(actor=creator or actor, source=source))
    concurrency.insert_run(ctx, aggregate, layout=None, setting=claimed.concurrency, group=None,
                           actor=creator or actor)
    return aggregate


def run_like_latest(ctx: ServiceContext, pipeline: str, counter: int, layout: dict | None, *,
                    trigger: str, metadata: RunMetadata, variables: dict[str, str] | None = None,
                    secret_variables: dict[str, str] | None = None,
                    commit: dict | None = None) -> RunAggregate:
    """Run number ``counter`` (claimed) with the stored ``layout`` of the pipeline's latest run;
    not written yet (``schedule`` above, and a schedule's firing: service/schedules.py)."""
    assert layout is not None, "require_layout: a pipeline without a layout is NotFound"
    specs, options = specs_of(layout)
    aggregate = new_run(pipeline, counter, specs, ctx.clock.now(), commit=commit, trigger=trigger,
                        variables=variables, metadata=metadata, **options)
    if secret_variables:  # GoCD's secure_variables: kept like native secrets, as a keyed hash only
        apply_variables(aggregate, [VariableChange(key, value, secret=True)
                                    for key, value in secret_variables.items()],
                        ctx.settings.secret_pepper)
    return aggregate


# ---- for the dialect endpoints (api/gocd.py, api/codearts.py, api/buddy.py) ------------------

def by_codearts_job(ctx: ServiceContext, job_id: str) -> Pipeline:
    """The pipeline a CodeArts ``job_id`` names (the MD5 of its name): one Query."""
    found = ctx.stores.dialects.pipeline_by_codearts_key(dialect_ids.CODEARTS_KEY_PREFIX + job_id)
    if found is None:
        raise NotFound(f"build task {job_id!r} not found")
    return found


def by_buddy_id(ctx: ServiceContext, pipeline_id: int) -> Pipeline:
    """The pipeline a Buddy numeric ``pipeline_id`` names: one Query."""
    found = ctx.stores.dialects.pipeline_by_buddy_key(f"{dialect_ids.BUDDY_KEY_PREFIX}{pipeline_id}")
    if found is None:
        raise NotFound(f"pipeline {pipeline_id} not found")
    return found


def latest_run(ctx: ServiceContext, pipeline: str) -> Run | None:
    """The newest run of a pipeline, from the byPipeline index (one Query)."""
    runs, _ = ctx.stores.runs.list_runs(pipeline, None, 1, None)
    return runs[0] if runs else None


def history(ctx: ServiceContext, pipeline: str, offset: int,
            page_size: int) -> tuple[Pipeline, list[Run]]:
    """GoCD's history pages (``page_size`` is GoCD's, api/gocd_wire.py): the pipeline (its
    counter is the total) and the runs numbered ``counter - offset - page_size + 1 .. counter -
    offset``, newest first, each with its
    stage summary. Three round trips (GetItem, a Query of the runs, a Query of their stages'
    summaries on an index)."""
    found = status(ctx, pipeline)
    high = found.counter - offset
    return found, ctx.stores.dialects.runs_between(found.name, high - page_size + 1, high, with_stages=True)
