"""Insights: what finished runs and stages add to the daily aggregates, and the figures read back
from them (docs/insights.md states every definition and the anchor it follows).

Nothing here reads history: the stream consumer (service/insights.py) turns each finished stage
attempt and each finished run into a ``Tally`` of counters for one day, which the store adds to
that day's aggregate item with atomic ADDs; ``figures`` answers from those items alone.

- **Durations** go into fixed log-scale buckets: a value of ``v`` milliseconds (v >= 1) falls in
  bucket ``b = floor(log(v) / log(GAMMA))``, i.e. ``[GAMMA**b, GAMMA**(b+1))``, and is read back
  as ``2 * GAMMA**(b+1) / (1 + GAMMA)``, whose relative error is at most
  ``(GAMMA - 1) / (GAMMA + 1)`` = 0.99 % (``RELATIVE_ERROR``). 0 ms has a bucket of its own and
  is read back exactly. Buckets of any items add up, so days, weeks and pipelines merge exactly.
- **Percentiles** are nearest-rank: the p-th percentile of n values is the ceil(p/100 * n)-th
  smallest. Read from the buckets, it is that value within ``RELATIVE_ERROR`` (plus half a
  millisecond of rounding). Means are exact (sums of milliseconds are counted too).
- **Days** are UTC days of the moment a thing finished, by its own timestamps (``ended_at``), so
  a late or out-of-order record lands on the day it happened.

A ``Tally`` is a flat ``dict[str, int]``: ``n`` finished, one counter per final status, and per
histogram ``h`` (d: duration, q: queue, m: time to recover, l: lead time, t: time to restore) the
count ``hN``, the sum of milliseconds ``hS`` and the buckets ``h<b>`` (``hZ`` for 0 ms); a stage's
tally adds ``retries`` and ``flaky``, a run's ``deploys`` and ``failedChanges``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

from .clock import millis_between
from .status import StageStatus, run_status_from_counts

S = StageStatus
GAMMA = 1.02
RELATIVE_ERROR = (GAMMA - 1) / (GAMMA + 1)  # 0.0099: stated in docs/insights.md
_LOG_GAMMA = math.log(GAMMA)
PRODUCTION = "production"
COUNTED = (S.SUCCESS, S.FAILURE, S.CANCELLED, S.TIMED_OUT)  # SKIPPED did not run: not counted
FAILED = (S.FAILURE, S.TIMED_OUT)
FINAL_RUN = (S.SUCCESS, S.FAILURE, S.CANCELLED, S.TIMED_OUT, S.SKIPPED)
MAX_DAYS = 366  # one answer covers at most a year (and a day, for a leap year)
DAY, WEEK = "day", "week"

Tally = dict[str, int]


# ---- histograms ----------------------------------------------------------------------------------

def bucket_of(millis: int) -> str:
    """The bucket suffix of a duration in milliseconds (negative ones count as 0)."""
    if millis < 1:
        return "Z"
    return str(int(math.floor(math.log(millis) / _LOG_GAMMA)))


def bucket_value(suffix: str) -> float:
    """The milliseconds a bucket stands for (the point of least relative error)."""
    if suffix == "Z":
        return 0.0
    return 2 * GAMMA ** (int(suffix) + 1) / (1 + GAMMA)


def add_sample(tally: Tally, histogram: str, millis: int) -> None:
    millis = max(0, int(millis))
    key = histogram + bucket_of(millis)
    tally[key] = tally.get(key, 0) + 1
    tally[histogram + "N"] = tally.get(histogram + "N", 0) + 1
    tally[histogram + "S"] = tally.get(histogram + "S", 0) + millis


def percentile(tally: Mapping[str, int], histogram: str, p: float) -> float | None:
    """Nearest-rank percentile (seconds, 3 decimals) of a histogram; None without samples."""
    buckets = []
    for key, count in tally.items():
        if count > 0 and key.startswith(histogram) and key[len(histogram):] not in ("N", "S"):
            suffix = key[len(histogram):]
            if suffix == "Z" or suffix.lstrip("-").isdigit():
                buckets.append((-1 if suffix == "Z" else int(suffix), suffix, count))
    total = sum(count for _, _, count in buckets)
    if total == 0:
        return None
    rank = max(1, math.ceil(p / 100 * total))
    seen = 0
    for _, suffix, count in sorted(buckets):
        seen += count
        if seen >= rank:
            return seconds(bucket_value(suffix))
    raise AssertionError("unreachable: rank <= total")  # pragma: no cover


def mean(tally: Mapping[str, int], histogram: str) -> float | None:
    count = tally.get(histogram + "N", 0)
    return seconds(tally.get(histogram + "S", 0) / count) if count else None


def seconds(millis: float) -> float:
    return round(millis / 1000, 3)


def merge(tallies: Iterable[Mapping[str, int]]) -> Tally:
    merged: Tally = {}
    for tally in tallies:
        for key, value in tally.items():
            merged[key] = merged.get(key, 0) + value
    return merged


def difference(new: Mapping[str, int], old: Mapping[str, int]) -> Tally:
    """What to ADD to turn ``old`` into ``new`` (zero entries left out)."""
    keys = set(new) | set(old)
    return {k: new.get(k, 0) - old.get(k, 0) for k in keys if new.get(k, 0) != old.get(k, 0)}


def day_of(moment: datetime) -> str:
    return moment.date().isoformat()


# ---- what finished ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class FinishedAttempt:
    """One attempt of a stage that reached a final status (a stream record, or a stored run)."""

    pipeline: str
    run_id: str
    position: int
    name: str
    status: StageStatus
    attempt: int
    first_attempt: int
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime
    environment: str | None = None
    queued_at: datetime | None = None  # when this attempt became ready, if recorded


@dataclass(frozen=True)
class AttemptMark:
    """What the consumer keeps of a finished attempt, beside its run (the idempotency marker):
    enough for the next stage's queue time, a retry's flakiness and the run's deployments."""

    position: int
    attempt: int
    status: StageStatus
    ended_at: datetime
    environment: str | None = None
    name: str | None = None  # the stage's name (for flakiness across runs of one commit)


@dataclass(frozen=True)
class FinishedRun:
    """A run that reached a final status. ``order`` grows with every write of the run item, so a
    redelivered record (same order) is recognised, and a later finish (a retried run) replaces
    what the earlier one added."""

    pipeline: str
    run_id: str
    status: StageStatus
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime
    order: int
    environment: str | None = None
    committed_at: datetime | None = None
    commit: str | None = None  # the commit's hash, lower case


@dataclass(frozen=True)
class RetryRecorded:
    """A stage moved to a new attempt (a retry): that attempt became ready to start ``at``."""

    pipeline: str
    run_id: str
    position: int
    attempt: int
    at: datetime


def mark_of(attempt: FinishedAttempt) -> AttemptMark:
    return AttemptMark(position=attempt.position, attempt=attempt.attempt, status=attempt.status,
                       ended_at=attempt.ended_at, environment=attempt.environment, name=attempt.name)


def ready_at(attempt: FinishedAttempt, marks: Iterable[AttemptMark]) -> datetime | None:
    """When the attempt became ready to start (its queue time starts there): as recorded (a
    retry, a sender's queued event), else for a first attempt the later of its creation (the run
    was created: the first stage) and the previous stage's latest end before it started; for a
    later attempt whose retry was not recorded: unknown (no queue sample)."""
    if attempt.queued_at is not None:
        return attempt.queued_at
    if attempt.attempt != attempt.first_attempt or attempt.started_at is None:
        return None
    ready = attempt.created_at
    before = [m.ended_at for m in marks if m.position == attempt.position - 1
              and m.ended_at <= attempt.started_at]
    return max([ready, *before])


def is_flaky(attempt: FinishedAttempt, marks: Iterable[AttemptMark]) -> bool:
    """A success after a failed (or timed out) attempt of the same stage in the same run."""
    return attempt.status == S.SUCCESS and any(
        m.position == attempt.position and m.attempt < attempt.attempt and m.status in FAILED
        for m in marks)


def attempt_tally(attempt: FinishedAttempt, marks: Iterable[AttemptMark]) -> Tally:
    """What a finished attempt adds to its stage's day (empty for a skipped one)."""
    if attempt.status not in COUNTED:
        return {}
    marks = list(marks)
    tally: Tally = {"n": 1, attempt.status.value: 1}
    if attempt.started_at is not None:
        add_sample(tally, "d", millis_between(attempt.started_at, attempt.ended_at))
        ready = ready_at(attempt, marks)
        if ready is not None:
            add_sample(tally, "q", millis_between(ready, attempt.started_at))
    if attempt.attempt > attempt.first_attempt:
        tally["retries"] = 1
    if is_flaky(attempt, marks):
        tally["flaky"] = 1
    return tally


@dataclass(frozen=True)
class Deploy:
    ended_at: datetime
    lead_millis: int | None


def deploys_of(run: FinishedRun, marks: Iterable[AttemptMark]) -> list[Deploy]:
    """A run's deployments: each stage deploying to production whose latest attempt succeeded;
    if it has none, the run itself when it deploys to production (its ``environment``) and
    succeeded. Lead time: from the run's ``commit.committedAt`` to the deploy's end."""
    latest: dict[int, AttemptMark] = {}
    for mark in marks:
        if mark.position not in latest or latest[mark.position].attempt < mark.attempt:
            latest[mark.position] = mark
    ends = sorted(m.ended_at for m in latest.values()
                  if m.status == S.SUCCESS and m.environment == PRODUCTION)
    if not ends and run.environment == PRODUCTION and run.status == S.SUCCESS:
        ends = [run.ended_at]

    def lead(end: datetime) -> int | None:
        if run.committed_at is None or run.committed_at > end:
            return None
        return millis_between(run.committed_at, end)

    return [Deploy(end, lead(end)) for end in ends]


def run_tallies(run: FinishedRun, marks: Iterable[AttemptMark]) -> dict[str, Tally]:
    """What a finished run adds by day (its own counts and duration, its deployments): replaced
    as a whole when the same run finishes again (``difference``)."""
    by_day: dict[str, Tally] = {}
    if run.status in COUNTED:
        tally: Tally = {"n": 1, run.status.value: 1}
        if run.started_at is not None:
            add_sample(tally, "d", millis_between(run.started_at, run.ended_at))
        by_day[day_of(run.ended_at)] = tally
    for deploy in deploys_of(run, marks):
        tally = by_day.setdefault(day_of(deploy.ended_at), {})
        tally["deploys"] = tally.get("deploys", 0) + 1
        if deploy.lead_millis is not None:
            add_sample(tally, "l", deploy.lead_millis)
    return by_day


@dataclass(frozen=True)
class PastAttempt:
    """One attempt of a stored stage, as the rebuild sees it: when it was asked for (a retry's
    recorded moment, None for the first), started and ended, and how it ended."""

    status: StageStatus
    retried_at: datetime | None
    started_at: datetime | None
    ended_at: datetime


def run_finishes(run: FinishedRun, stages: list[tuple[list[PastAttempt], bool]], *,
                 final: bool = True) -> list[tuple[datetime, FinishedRun]]:
    """Every time a stored run reached a final status, reconstructed from its stages' attempts
    (each stage: its finished attempts in order, and whether it may fail), as the stream showed
    them live: the run's status is the one of its stages' current statuses
    (``run_status_from_counts``) after each start, end and retry; a finish is a change into a
    final status, or of a final run's end (a retried stage ending again, the run still failed);
    its end the latest end among the current attempts, its start the earliest
    start so far. ``run`` gives the run's own fields; when it is ``final`` (stored with a final
    status) the last finish is ``run`` itself (its status, bounds and order as stored). Each
    comes with the moment it happened (the order of the stream), which is not always its end:
    a retry of one stage moves a failed run's end back to its other stages' latest."""
    events: list[tuple[datetime, int, int, int]] = []  # (moment, kind, stage, attempt)
    for index, (attempts, _) in enumerate(stages):
        for number, attempt in enumerate(attempts):
            if number > 0:
                retried = attempt.retried_at or attempt.started_at or attempt.ended_at
                events.append((retried, 0, index, number))
            if attempt.started_at is not None:
                events.append((attempt.started_at, 1, index, number))
            events.append((attempt.ended_at, 2, index, number))
    current: list[tuple[StageStatus, int | None]] = [(S.IDLE, None) for _ in stages]
    ends: list[datetime | None] = [None for _ in stages]
    finishes: list[tuple[datetime, FinishedRun]] = []
    status = S.IDLE
    started: datetime | None = None
    for moment, kind, index, number in sorted(events, key=lambda e: (e[0], e[1], e[2], e[3])):
        attempts, may_fail = stages[index]
        if kind == 0:
            current[index], ends[index] = (S.IDLE, number), None
        elif kind == 1:
            current[index] = (S.IN_PROGRESS, number)
            started = moment if started is None else min(started, moment)
        else:
            ended = attempts[number].status
            current[index] = (S.SUCCESS if may_fail and ended == S.FAILURE else ended, number)
            ends[index] = moment
        counts: dict[StageStatus, int] = {}
        for stage_status, _ in current:
            counts[stage_status] = counts.get(stage_status, 0) + 1
        after = run_status_from_counts(counts)
        if after in FINAL_RUN:
            end = max(e for e in ends if e is not None)
            if after != status or (finishes and finishes[-1][1].ended_at != end):
                finishes.append((moment, replace(run, status=after, started_at=started, ended_at=end,
                                                 order=len(finishes))))
        status = after
    if not final:
        return finishes
    if finishes:
        finishes[-1] = (finishes[-1][0], run)
    return finishes or [(run.ended_at, run)]


# ---- what follows from the order of runs (per pipeline) ---------------------------------------------

@dataclass(frozen=True)
class PipelineState:
    """What the next finished run of a pipeline needs to know: since when it is failing (for the
    time to recover), the latest deployment not yet followed by a success of another run (its
    day and run), and since when a deployed change is failing (for the time to restore)."""

    red_since: datetime | None = None
    pending_day: str | None = None
    pending_run: str | None = None
    failed_at: datetime | None = None
    # (commit, stage name, run id) of the stages whose run ended with them failed on a commit,
    # not yet followed by a success of that stage on that commit: the latest ones only
    commit_failures: tuple[tuple[str, str, str], ...] = ()
    version: int = 0
    # the incident whose ``incident.resolved`` ends the open restore (``failed_at``), if an
    # incident opened it: the restore then ends at that resolution or the next deployment
    restore_incident: str | None = None


@dataclass
class Advance:
    state: PipelineState
    tallies: dict[str, Tally] = field(default_factory=dict)

    def add(self, day: str, key: str, value: int = 1) -> None:
        tally = self.tallies.setdefault(day, {})
        tally[key] = tally.get(key, 0) + value

    def sample(self, day: str, histogram: str, millis: int) -> None:
        add_sample(self.tallies.setdefault(day, {}), histogram, millis)


def advance(state: PipelineState, run: FinishedRun, deploys: list[Deploy]) -> Advance:
    """The pipeline's next state after ``run`` finished (runs are taken in the order they are
    recorded), and the samples that adds:

    - each deployment restores a failed change (time to restore: from the failure that marked
      the change failed to this deployment's end) and becomes the pending one;
    - a failed (or timed out) run marks the pipeline failing since its end (if not already), and
      marks the pending deployment a failed change (counted on that deployment's day);
    - a successful run ends the failure (time to recover: from the first failure to this end,
      on this run's day) and, if it is not the deploying run itself, confirms the pending
      deployment.
    """
    result = Advance(state)
    for deploy in deploys:
        current = result.state
        if current.failed_at is not None:
            result.sample(day_of(deploy.ended_at), "t", millis_between(current.failed_at, deploy.ended_at))
        result.state = replace(current, failed_at=None, restore_incident=None,
                               pending_day=day_of(deploy.ended_at), pending_run=run.run_id)
    current = result.state
    if run.status in FAILED:
        if current.pending_day is not None:
            result.add(current.pending_day, "failedChanges")
            current = replace(current, failed_at=run.ended_at, restore_incident=None, pending_day=None,
                              pending_run=None)
        if current.red_since is None:
            current = replace(current, red_since=run.ended_at)
    elif run.status == S.SUCCESS:
        if current.red_since is not None:
            result.sample(day_of(run.ended_at), "m", millis_between(current.red_since, run.ended_at))
            current = replace(current, red_since=None)
        if current.pending_run is not None and current.pending_run != run.run_id:
            current = replace(current, pending_day=None, pending_run=None)
    result.state = current
    return result


INCIDENT_DETECTED = "incident.detected"
INCIDENT_RESOLVED = "incident.resolved"
ROLLED_BACK = "service.rolledback"


@dataclass(frozen=True)
class DeploymentSignal:
    """A word from outside the pipeline about what it deployed (a CDEvents ``incident.detected``,
    ``incident.resolved`` or ``service.rolledback`` through the webhook), once its pipeline is
    found. ``key`` is the sender's event identity (CloudEvents source and id): a signal is
    applied once per key. ``incident`` pairs a detection with its resolution (the incident's
    subject id)."""

    pipeline: str
    key: str
    kind: str
    at: datetime
    incident: str | None = None


@dataclass(frozen=True)
class SignalReceived:
    """A signal as its sender told it, before its pipeline is found (service/insights.py
    ``receive_signal``): the names that may name the pipeline, in the order they are tried (the
    service, then the webhook source), and the environment it is about (None: not said)."""

    kind: str
    key: str
    at: datetime
    incident: str | None
    candidates: tuple[str, ...]
    environment: str | None
    summary: str


def signal_pipeline(received: SignalReceived, exists: Callable[[str], bool]) -> tuple[str | None, str]:
    """The pipeline a received signal is about, or None and why it is counted nowhere: its
    environment must be ``production`` (deployments are production's only), and the first of
    its candidate names that is a known pipeline (``exists(name)``) is it."""
    if received.environment is not None and received.environment.lower() != PRODUCTION:
        return None, (f"environment {received.environment!r} is not production: "
                      "only production deployments are counted")
    for name in received.candidates:
        if exists(name):
            return name, ""
    return None, f"no pipeline named {' or '.join(repr(c) for c in received.candidates)}: counted nowhere"


def apply_signal(state: PipelineState, signal: DeploymentSignal) -> Advance:
    """The pipeline's next state after an outside signal, and what it adds (docs/insights.md,
    Definitions):

    - ``incident.detected`` and ``service.rolledback`` fail the pending deployment, as a failed
      run does (counted on that deployment's day); with nothing pending (no deployment, or it
      was already confirmed by another run's success, or already failed) they change nothing;
    - an incident opens a restore at its detection that ends at the first of its own
      ``incident.resolved`` (Four Keys) and the next deployment's end (GitLab, and the rule for
      a failed run); a rollback opens none: it is the restore itself, and when the failure
      began is unknown;
    - ``incident.resolved`` of the incident that opened the open restore ends it (time to
      restore, on the resolution's day); any other resolution changes nothing.
    """
    result = Advance(state)
    if signal.kind in (INCIDENT_DETECTED, ROLLED_BACK):
        if state.pending_day is None:
            return result
        result.add(state.pending_day, "failedChanges")
        if signal.kind == INCIDENT_DETECTED:
            result.state = replace(state, pending_day=None, pending_run=None, failed_at=signal.at,
                                   restore_incident=signal.incident)
        else:
            result.state = replace(state, pending_day=None, pending_run=None, failed_at=None,
                                   restore_incident=None)
    elif signal.kind == INCIDENT_RESOLVED:
        if (state.failed_at is None or state.restore_incident is None
                or state.restore_incident != signal.incident):
            return result
        result.sample(day_of(signal.at), "t", millis_between(state.failed_at, signal.at))
        result.state = replace(state, failed_at=None, restore_incident=None)
    return result


MAX_COMMIT_FAILURES = 200  # the pipeline state keeps this many (commit, stage, run) failures


def commit_flakiness(state: PipelineState, run: FinishedRun, marks: Iterable[AttemptMark]
                     ) -> tuple[PipelineState, dict[tuple[str, str], Tally]]:
    """Flakiness across runs of one commit, when ``run`` finishes: a stage whose latest attempt
    in this run succeeded, that failed (or timed out) at the end of another run of the same
    commit before, is flaky (once, on its success's day) -- unless this run already counted it
    flaky (a failed attempt before it in the same run). A stage whose latest attempt failed is
    kept as failed on the commit. Runs without a known commit add nothing."""
    if run.commit is None:
        return state, {}
    latest: dict[int, AttemptMark] = {}
    earlier_failed: set[int] = set()
    for mark in sorted(marks, key=lambda m: (m.position, m.attempt)):
        if mark.position in latest and latest[mark.position].status in FAILED:
            earlier_failed.add(mark.position)
        latest[mark.position] = mark
    failures = list(state.commit_failures)
    added: dict[tuple[str, str], Tally] = {}
    for position, mark in sorted(latest.items()):
        if mark.name is None:
            continue
        if mark.status in FAILED:
            entry = (run.commit, mark.name, run.run_id)
            if entry not in failures:
                failures.append(entry)
        elif mark.status == S.SUCCESS:
            before = [f for f in failures if f[0] == run.commit and f[1] == mark.name]
            if any(f[2] != run.run_id for f in before) and position not in earlier_failed:
                added[(day_of(mark.ended_at), mark.name)] = {"flaky": 1}
            failures = [f for f in failures if f not in before]
    failures = failures[-MAX_COMMIT_FAILURES:]
    return replace(state, commit_failures=tuple(failures)), added


# ---- reading the figures -----------------------------------------------------------------------------

@dataclass(frozen=True)
class DayItem:
    """One aggregate item read back: its day, the stage it is about (None: the runs) and tally."""

    day: str
    stage: str | None
    tally: Mapping[str, int]


def days_between(start: date, end: date) -> int:
    return (end - start).days + 1


def _rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator > 0 else None


def success_rate(tally: Mapping[str, int]) -> float | None:
    """success / (total - cancelled); None when nothing but cancellations (or nothing) counted."""
    return _rate(tally.get("SUCCESS", 0), tally.get("n", 0) - tally.get("CANCELLED", 0))


def runs_view(tally: Mapping[str, int]) -> dict:
    return {"total": tally.get("n", 0), "success": tally.get("SUCCESS", 0),
            "failure": tally.get("FAILURE", 0), "cancelled": tally.get("CANCELLED", 0),
            "timedOut": tally.get("TIMED_OUT", 0)}


def period_start(day: date, granularity: str, start: date) -> date:
    """The first day of the series point ``day`` belongs to: itself, or its ISO week's Monday
    (never before the range's own start)."""
    if granularity == DAY:
        return day
    return max(start, day - timedelta(days=day.weekday()))


def figures(items: Iterable[DayItem], start: date, end: date, granularity: str,
            stage: str | None = None) -> dict:
    """The answer of ``GET /api/insights`` from the day items of [start, end] (UTC days, both
    included). With ``stage``, the runs, duration, queue and series are that stage's attempts;
    without, the runs' (queue: every stage's attempts). MTTR and DORA are the pipeline's."""
    run_days: dict[str, list[Mapping[str, int]]] = {}
    stage_days: dict[str, list[Mapping[str, int]]] = {}
    by_stage: dict[str, list[Mapping[str, int]]] = {}
    for item in items:
        if not start.isoformat() <= item.day <= end.isoformat():
            continue
        if item.stage is None:
            run_days.setdefault(item.day, []).append(item.tally)
        elif stage is None or item.stage == stage:
            stage_days.setdefault(item.day, []).append(item.tally)
            by_stage.setdefault(item.stage, []).append(item.tally)
    runs_all = merge(t for tallies in run_days.values() for t in tallies)
    stages_all = merge(t for tallies in stage_days.values() for t in tallies)
    subject_days = stage_days if stage is not None else run_days
    subject = stages_all if stage is not None else runs_all
    series = []
    points: dict[date, list[Mapping[str, int]]] = {}
    for offset in range(days_between(start, end)):  # never a day past ``end`` (9999-12-31 is one)
        day = start + timedelta(days=offset)
        points.setdefault(period_start(day, granularity, start), []).extend(
            subject_days.get(day.isoformat(), []))
    for point_start, tallies in sorted(points.items()):
        point = merge(tallies)
        series.append({"start": point_start.isoformat(), "runs": point.get("n", 0),
                       "successRate": success_rate(point), "p50": percentile(point, "d", 50),
                       "p95": percentile(point, "d", 95)})
    stages = []
    for name in sorted(by_stage):
        tally = merge(by_stage[name])
        stages.append({"name": name, "runs": tally.get("n", 0), "successRate": success_rate(tally),
                       "duration": {"p50": percentile(tally, "d", 50), "p95": percentile(tally, "d", 95)},
                       "flakyRate": _rate(tally.get("flaky", 0), tally.get("n", 0)),
                       "retries": tally.get("retries", 0)})
    deploys = runs_all.get("deploys", 0)
    return {
        "from": start.isoformat(), "to": end.isoformat(), "granularity": granularity,
        "runs": runs_view(subject),
        "successRate": success_rate(subject),
        "duration": {"p50": percentile(subject, "d", 50), "p90": percentile(subject, "d", 90),
                     "p95": percentile(subject, "d", 95), "mean": mean(subject, "d")},
        "queue": {"p50": percentile(stages_all, "q", 50), "p95": percentile(stages_all, "q", 95)},
        "mttrSeconds": mean(runs_all, "m"),
        "stages": stages,
        "series": series,
        "dora": {
            "deploymentFrequency": round(deploys / days_between(start, end), 4),
            "leadTimeSeconds": {"p50": percentile(runs_all, "l", 50)},
            "changeFailureRate": _rate(runs_all.get("failedChanges", 0), deploys),
            "timeToRestoreSeconds": {"p50": percentile(runs_all, "t", 50)},
        },
    }
