"""Overruns and ETA: what a stage is expected to take, from its pipeline's recent history
(docs/insights.md, "Overruns and ETA", states every rule and why).

- **Expectation** of a stage name: the nearest-rank p50 and p95 of the durations of its finished
  attempts in the pipeline's day aggregates of the ``WINDOW_DAYS`` UTC days up to the day the
  attempt started (domain/insights.py buckets: within ``RELATIVE_ERROR``), known only with at
  least ``MIN_SAMPLES`` of them. The stream consumer (service/overruns.py) computes it when a
  stage starts and stores it on that stage (``Stage.expectations``: its own name's and the
  pipeline's other names', ``{name: [p50 ms, p95 ms, samples]}``), so the run view reads it
  for free.
- **Overrun**: an attempt still running at ``startedAt + p95`` is overrunning. That moment
  (``Stage.overrun_at``) is a timer of the stage like its timeout, set only when it comes before
  the stage's hard deadline (a stage timed out is not also overrunning); when it fires on the
  same attempt still IN_PROGRESS, ``Stage.overrunning_at`` is set once, and the change stream
  carries it out as one ``stage.overrunning`` event (store/stream.py).
- **ETA** of a run: now + the sum over its unfinished stages of max(0, p50 - elapsed) for a
  running one and p50 for one not started (stages assumed sequential); null when any of them
  has no expectation, or the run is final or stopping.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .clock import millis_between
from .insights import DayItem, merge, percentile
from .model import RunAggregate, Stage
from .status import FINAL, StageStatus

S = StageStatus
WINDOW_DAYS = 14  # the recent history: two weeks of UTC days, the start's day included
MIN_SAMPLES = 5  # fewer finished attempts than this in the window: no expectation
MAX_NAMES = 32  # stage names stored on one stage at most (about 1 KB: the run view reads them)


@dataclass(frozen=True)
class Expectation:
    """How long a stage name recently took: nearest-rank p50 and p95 (milliseconds) of
    ``samples`` finished attempts."""

    p50_ms: int
    p95_ms: int
    samples: int

    def stored(self) -> list[int]:
        return [self.p50_ms, self.p95_ms, self.samples]

    @classmethod
    def of(cls, stored: object) -> Expectation | None:
        if (isinstance(stored, list) and len(stored) == 3
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in stored)):
            return cls(stored[0], stored[1], stored[2])
        return None


@dataclass(frozen=True)
class StageStarted:
    """A stream record of a stage attempt entering IN_PROGRESS (store/stream.py)."""

    pipeline: str
    run_id: str
    stage_id: str
    name: str
    attempt: int
    started_at: datetime


def window(started_at: datetime) -> tuple[str, str]:
    """The first and last UTC day (ISO) of the history an attempt started at ``started_at`` reads."""
    last = started_at.date()
    return (last - timedelta(days=WINDOW_DAYS - 1)).isoformat(), last.isoformat()


def expectations(items: Iterable[DayItem], first_day: str, last_day: str) -> dict[str, Expectation]:
    """Every stage name's expectation from the pipeline's day items of [first_day, last_day]
    (other items ignored); names with fewer than ``MIN_SAMPLES`` timed attempts are left out."""
    by_name: dict[str, list[Mapping[str, int]]] = {}
    for item in items:
        if item.stage is not None and first_day <= item.day <= last_day:
            by_name.setdefault(item.stage, []).append(item.tally)
    found = {}
    for name, tallies in by_name.items():
        tally = merge(tallies)
        samples = tally.get("dN", 0)
        p50, p95 = percentile(tally, "d", 50), percentile(tally, "d", 95)
        if samples >= MIN_SAMPLES and p50 is not None and p95 is not None:
            found[name] = Expectation(round(p50 * 1000), round(p95 * 1000), samples)
    return found


def to_store(known: Mapping[str, Expectation], own: str) -> dict[str, list[int]]:
    """What a starting stage stores: its own name's expectation and the pipeline's other names'
    (by name, at most ``MAX_NAMES`` in all), so the run view finds every later stage's p50 on
    the latest started stage without the consumer reading the run."""
    names = [own] + sorted(name for name in known if name != own)
    return {name: known[name].stored() for name in names[:MAX_NAMES] if name in known}


def own_expectation(stage: Stage) -> Expectation | None:
    """The expectation stored on ``stage`` for its own name (None: none known at its start)."""
    return Expectation.of((stage.expectations or {}).get(stage.name))


def overrun_due(stage: Stage) -> datetime | None:
    """When this running attempt passes its p95: only before its hard deadline (own timeout or
    its run's), since a stage that times out then is not overrunning, it is ending."""
    expected = own_expectation(stage)
    if stage.status != S.IN_PROGRESS or stage.started_at is None or expected is None:
        return None
    moment = stage.started_at + timedelta(milliseconds=expected.p95_ms)
    deadline = stage.deadline()
    return moment if deadline is None or moment < deadline else None


def set_expectations(stage: Stage, stored: dict[str, list[int]]) -> bool:
    """Store what the consumer found on the started ``stage`` (and its overrun moment). False:
    nothing to store (its own name has too little history) or nothing changed."""
    if Expectation.of(stored.get(stage.name)) is None or stage.status != S.IN_PROGRESS:
        return False
    before = (stage.expectations, stage.overrun_at)
    stage.expectations = dict(stored)
    stage.overrun_at = overrun_due(stage)
    return (stage.expectations, stage.overrun_at) != before


def pending_overrun(stage: Stage) -> datetime | None:
    """The overrun moment still to notice on this running attempt (a timer of the stage)."""
    if stage.status != S.IN_PROGRESS or stage.overrun_at is None or stage.overrunning_at is not None:
        return None
    return stage.overrun_at


def notice_overrun(stage: Stage, now: datetime) -> bool:
    """The timer's step: mark the attempt overrunning once its moment passed. False: not due,
    already noticed, or no longer running (ended, retried: a new attempt clears it)."""
    due = pending_overrun(stage)
    if due is None or due > now:
        return False
    stage.overrunning_at = due  # the change stream carries it out (one stage.overrunning event)
    stage.updated_at = now
    return True


# ---- the run view ----------------------------------------------------------------------------------

def _latest_table(stages: Sequence[Stage]) -> Mapping[str, object]:
    """The expectations stored by the latest start in the run (the freshest history)."""
    carrying = [s for s in stages if s.expectations and s.started_at is not None]
    if not carrying:
        return {}
    latest = max(carrying, key=lambda s: (s.started_at, s.position))
    return latest.expectations or {}


def stage_expectations(stages: Sequence[Stage]) -> dict[str, Expectation]:
    """Each stage's expectation (by stage id): its own, else the run's latest start's."""
    table = _latest_table(stages)
    found = {}
    for stage in stages:
        expected = own_expectation(stage) or Expectation.of(table.get(stage.name))
        if expected is not None:
            found[stage.id] = expected
    return found


def eta(aggregate: RunAggregate, now: datetime) -> datetime | None:
    """When the run should end: ``now`` + sum over its unfinished stages of max(0, p50 -
    elapsed) (running) or p50 (not started). None when the run is final or stopping, has no
    unfinished stage, or one of them has no expectation (an ETA missing a stage would be early)."""
    run = aggregate.run
    if run.status in FINAL or run.stopping is not None:
        return None
    expected = stage_expectations(aggregate.stages)
    remaining = [s for s in aggregate.stages if s.status not in FINAL]
    if not remaining:
        return None
    total = 0
    for stage in remaining:
        if stage.id not in expected:
            return None
        p50 = expected[stage.id].p50_ms
        if stage.status == S.IN_PROGRESS and stage.started_at is not None:
            total += max(0, p50 - millis_between(stage.started_at, now))
        else:
            total += p50
    return now + timedelta(milliseconds=total)

