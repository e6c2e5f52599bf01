"""Property: random histories of runs (stages, retries, deployments, failures, several pipelines)
are fed to the insights consumer (service/insights.py on the in-memory store) in the order they
finished, and every figure of ``GET /api/insights`` is compared with a brute-force computation
over the raw runs: counts and rates exact, percentiles within the stated relative error (nearest
rank, read back from its log-scale bucket). Outside signals (incidents detected and resolved,
rollbacks) are mixed in, in the order they happened. The rebuild (``replay``) of the same stored
runs and signals gives the same figures, and a history applied twice counts once."""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from hypothesis import example, given, note, settings
from hypothesis import strategies as st

from chalicelib.domain import ids
from chalicelib.domain.clock import format_iso, millis_between
from chalicelib.domain.insights import (
    INCIDENT_DETECTED,
    INCIDENT_RESOLVED,
    RELATIVE_ERROR,
    ROLLED_BACK,
    DeploymentSignal,
    FinishedAttempt,
    FinishedRun,
    RetryRecorded,
    figures,
)
from chalicelib.domain.model import Run, RunAggregate, Stage
from chalicelib.domain.schemas import InsightsQuery
from chalicelib.domain.status import StageStatus, run_status_from_counts
from chalicelib.service import insights
from chalicelib.service.ports import RunMarks
from chalicelib.settings import Settings
from chalicelib.wiring import memory_context
from tests.fixtures.clock import FakeClock

S = StageStatus
BASE = datetime(2026, 5, 4, 22, 0, tzinfo=UTC)  # runs cross midnight: several days
FINAL = [S.SUCCESS, S.FAILURE, S.CANCELLED, S.TIMED_OUT]
STAGES = [("build", None), ("test", None), ("deploy", "production")]


@dataclass
class Attempt:
    number: int
    status: StageStatus
    ready: datetime
    start: datetime
    end: datetime
    retried_at: datetime | None  # when this attempt was asked for (a retry), None: the first


@dataclass
class StageRun:
    position: int
    name: str
    environment: str | None
    attempts: list[Attempt] = field(default_factory=list)


@dataclass
class RawRun:
    pipeline: str
    counter: int
    created: datetime
    committed: datetime | None
    environment: str | None
    commit: str | None = None
    stages: list[StageRun] = field(default_factory=list)

    @property
    def id(self) -> str:
        return ids.run_id(self.pipeline, self.counter)

    @property
    def status(self) -> StageStatus:
        counts: dict[StageStatus, int] = {}
        for stage in self.stages:
            last = stage.attempts[-1].status
            counts[last] = counts.get(last, 0) + 1
        return run_status_from_counts(counts)

    def finishes(self) -> list[Finish]:
        """Each time the run's status became final, as the stream shows it: its stages' current
        attempts at every step (a retry, a start, an end), their statuses combined."""
        steps = sorted({m for s in self.stages for a in s.attempts
                        for m in (a.retried_at, a.start, a.end) if m is not None})
        found, previous = [], S.IDLE
        for moment in steps:
            current = []
            for stage in self.stages:
                now = [a for a in stage.attempts if (a.retried_at or self.created) <= moment]
                attempt = now[-1]
                current.append((stage, attempt, attempt.status if attempt.end <= moment else
                                S.IN_PROGRESS if attempt.start <= moment else S.IDLE))
            counted: dict[StageStatus, int] = {}
            for _, _, status in current:
                counted[status] = counted.get(status, 0) + 1
            status = run_status_from_counts(counted)
            ends = [a.end for _, a, st_ in current if st_ in COUNTED | {S.SKIPPED}]
            if status in COUNTED | {S.SKIPPED} and (status != previous or found[-1].end != max(ends)):
                deploys = sorted(a.end for stage, a, st_ in current
                                 if stage.environment == "production" and st_ == S.SUCCESS)
                if not deploys and self.environment == "production" and status == S.SUCCESS:
                    deploys = [max(ends)]
                found.append(Finish(self, status, max(ends), deploys, moment))
            previous = status
        return found

    @property
    def start(self) -> datetime:
        return min(a.start for s in self.stages for a in s.attempts)

    @property
    def end(self) -> datetime:
        return max(a.end for s in self.stages for a in s.attempts)


@dataclass
class Finish:
    run: RawRun
    status: StageStatus
    end: datetime
    deploys: list[datetime]
    moment: datetime  # when it happened (the stream's order): a retry can move a failed run's end back


millis = st.integers(min_value=0, max_value=3_000_000)
gaps = st.integers(min_value=1, max_value=3_000_000)  # never two steps of one run at the same moment


@st.composite
def signals(draw, runs: list[RawRun]) -> list[DeploymentSignal]:
    """Incidents detected and resolved (two incident ids, so a resolution may be of another
    incident, or come with no detection) and rollbacks, each around a deployment's end (where
    one may be pending), or a run's end when there is none."""
    found = []
    for number in range(draw(st.integers(min_value=0, max_value=6))):
        after = draw(st.sampled_from([d for r in runs for d in deployments(r)] or [r.end for r in runs]))
        offset = st.one_of(st.integers(min_value=1, max_value=60_000),
                           st.integers(min_value=-600_000, max_value=3_600_000))
        at = after + timedelta(milliseconds=draw(offset))
        kind = draw(st.sampled_from([INCIDENT_DETECTED, INCIDENT_RESOLVED, ROLLED_BACK]))
        incident = None if kind == ROLLED_BACK else draw(st.sampled_from(["i1", "i2"]))
        found.append(DeploymentSignal(pipeline=draw(st.sampled_from(["web", "api"])), key=f"event-{number}",
                                      kind=kind, at=at, incident=incident))
    return found


@st.composite
def histories(draw) -> list[RawRun]:
    runs = []
    counters = {"web": 0, "api": 0}
    for _ in range(draw(st.integers(min_value=1, max_value=10))):
        pipeline = draw(st.sampled_from(sorted(counters)))
        counters[pipeline] += 1
        created = BASE + timedelta(milliseconds=draw(st.integers(min_value=0, max_value=2 * 86_400_000)))
        committed = (created - timedelta(milliseconds=draw(millis))) if draw(st.booleans()) else None
        run = RawRun(pipeline, counters[pipeline], created, committed,
                     "production" if draw(st.integers(0, 3)) == 0 else None,
                     draw(st.sampled_from(["c0ffee", "beef", None])))
        cursor = created
        for position, (name, environment) in enumerate(STAGES[:draw(st.integers(1, 3))], start=1):
            stage = StageRun(position, name, environment)
            for number in range(1, draw(st.integers(1, 3)) + 1):
                status = draw(st.sampled_from(FINAL))
                if number == 1:
                    ready, retried = cursor, None
                else:
                    retried = ready = stage.attempts[-1].end + timedelta(milliseconds=draw(gaps))
                start = ready + timedelta(milliseconds=draw(gaps))
                end = start + timedelta(milliseconds=draw(millis))
                stage.attempts.append(Attempt(number, status, ready, start, end, retried))
            cursor = stage.attempts[-1].end
            run.stages.append(stage)
        runs.append(run)
    return runs


# ---- what the consumer is given ------------------------------------------------------------------

def work_of(runs: list[RawRun], outside: Iterable[DeploymentSignal] = ()) -> list:
    """Retries, finished attempts, runs and signals, in the order they happened (ties: attempts
    first, signals last)."""
    events: list[tuple[datetime, int, object]] = [(signal.at, 3, signal) for signal in outside]
    for run in runs:
        for stage in run.stages:
            for attempt in stage.attempts:
                if attempt.retried_at is not None:
                    events.append((attempt.retried_at, 0, RetryRecorded(run.pipeline, run.id, stage.position,
                                                                        attempt.number, attempt.retried_at)))
                events.append((attempt.end, 1, FinishedAttempt(
                    pipeline=run.pipeline, run_id=run.id, position=stage.position, name=stage.name,
                    status=attempt.status, attempt=attempt.number, first_attempt=1, created_at=run.created,
                    started_at=attempt.start, ended_at=attempt.end, environment=stage.environment)))
        for order, finish in enumerate(run.finishes(), start=1):
            events.append((finish.moment, 2, FinishedRun(
                pipeline=run.pipeline, run_id=run.id, status=finish.status, created_at=run.created,
                started_at=run.start, ended_at=finish.end, order=order, environment=run.environment,
                committed_at=run.committed, commit=run.commit)))
    return [work for _, _, work in sorted(events, key=lambda e: (e[0], e[1]))]


def feed(ctx, work: Iterable) -> None:
    for item in work:
        if isinstance(item, RetryRecorded):
            ctx.stores.insights.record_retry(item)
        elif isinstance(item, DeploymentSignal):
            insights.add_signal(ctx, item)
        elif isinstance(item, FinishedAttempt):
            insights.add_attempt(ctx, item)
        else:
            insights.add_run(ctx, item)


def stored(run: RawRun) -> insights.StoredRun:
    """The run as the store keeps it: each stage at its latest attempt, the others as ended
    attempt records, and the retries the consumer recorded."""
    stages, ended, marks = [], {}, RunMarks()
    for stage in run.stages:
        last = stage.attempts[-1]
        stage_id = ids.stage_id(run.id, stage.position)
        stages.append(Stage(id=stage_id, run_id=run.id, position=stage.position, type="OTHER",
                            name=stage.name,
                            status=last.status, created_at=run.created, updated_at=last.end,
                            started_at=last.start, ended_at=last.end, attempt=last.number,
                            environment=stage.environment))
        ended[stage_id] = [{"attempt": a.number, "status": a.status.value, "startedAt": format_iso(a.start),
                            "endedAt": format_iso(a.end)} for a in stage.attempts[:-1]]
        for attempt in stage.attempts:
            if attempt.retried_at is not None:
                marks.retries[(stage.position, attempt.number)] = attempt.retried_at
    commit = {"committedAt": format_iso(run.committed)} if run.committed else {}
    commit = {**commit, "hash": run.commit} if run.commit else commit or None
    aggregate = RunAggregate(run=Run(id=run.id, pipeline=run.pipeline, counter=run.counter, status=run.status,
                                     created_at=run.created, updated_at=run.end, started_at=run.start,
                                     ended_at=run.end, commit=commit, environment=run.environment, seq=1),
                             stages=stages)
    return aggregate, ended, marks


# ---- brute force over the raw runs -----------------------------------------------------------------

def nearest_rank(values: list[int], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1] / 1000


def rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def close(got: float | None, exact: float | None) -> bool:
    if exact is None or got is None:
        return got is exact
    return abs(got - exact) <= exact * RELATIVE_ERROR + 0.0011


COUNTED = {S.SUCCESS, S.FAILURE, S.CANCELLED, S.TIMED_OUT}


def counts(statuses: list[StageStatus]) -> dict:
    return {"total": len(statuses), "success": statuses.count(S.SUCCESS),
            "failure": statuses.count(S.FAILURE),
            "cancelled": statuses.count(S.CANCELLED), "timedOut": statuses.count(S.TIMED_OUT)}


def success_rate(statuses: list[StageStatus]) -> float | None:
    return rate(statuses.count(S.SUCCESS), len(statuses) - statuses.count(S.CANCELLED))


def in_range(moment: datetime, start: date, end: date) -> bool:
    return start <= moment.date() <= end


def attempt_rows(runs: list[RawRun]):
    for run in runs:
        for stage in run.stages:
            for index, attempt in enumerate(stage.attempts):
                flaky = attempt.status == S.SUCCESS and any(
                    a.status in (S.FAILURE, S.TIMED_OUT) for a in stage.attempts[:index])
                yield run, stage, attempt, flaky


def deployments(run: RawRun) -> list[datetime]:
    ends = sorted(s.attempts[-1].end for s in run.stages
                  if s.environment == "production" and s.attempts[-1].status == S.SUCCESS)
    if not ends and run.environment == "production" and run.status == S.SUCCESS:
        ends = [run.end]
    return ends


def pipeline_samples(runs: list[RawRun], outside: Iterable[DeploymentSignal] = ()) -> dict:
    """Time to recover, failed changes and times to restore, by their definitions (docs), over
    every finish of the pipeline's runs and its signals in the order they happened (a retried
    run finishes more than once; each finish brings the deployments since its run's previous
    one)."""
    recover, failed_changes, restore = [], [], []
    finishes = sorted((f for r in runs for f in r.finishes()), key=lambda f: f.moment)
    seen: dict[str, datetime] = {}
    timeline: list[tuple[datetime, int, Finish | DeploymentSignal]] = [(s.at, 1, s) for s in outside]
    timeline += [(finish.moment, 0, finish) for finish in finishes]
    steps: list[tuple[Finish | DeploymentSignal, list[datetime]]] = []
    for _, _, step in sorted(timeline, key=lambda t: (t[0], t[1])):
        if isinstance(step, DeploymentSignal):
            steps.append((step, []))
            continue
        new = [d for d in step.deploys if step.run.id not in seen or d > seen[step.run.id]]
        seen[step.run.id] = step.end
        steps.append((step, new))
    red_since = None
    for finish, _ in steps:  # a streak of failures (cancellations do not end it) ended by a success
        if isinstance(finish, DeploymentSignal):
            continue
        if finish.status in (S.FAILURE, S.TIMED_OUT) and red_since is None:
            red_since = finish.end
        elif finish.status == S.SUCCESS and red_since is not None:
            recover.append((finish.end, millis_between(red_since, finish.end)))
            red_since = None
    # a deployment is failed when, before another deployment or a success of another run, the
    # finish that brought it or a later one is a failure, or an incident is detected or a
    # rollback told; time to restore: from that failure (or detection) to the next deployment's
    # end, or, for an incident, to its resolution if that comes first; a rollback opens none
    for index, (finish, new) in enumerate(steps):
        if not new:
            continue
        assert isinstance(finish, Finish)
        verdict = None
        if finish.status in (S.FAILURE, S.TIMED_OUT):
            verdict = index
        else:
            for later_index in range(index + 1, len(steps)):
                later, later_new = steps[later_index]
                if isinstance(later, DeploymentSignal):
                    if later.kind in (INCIDENT_DETECTED, ROLLED_BACK):
                        verdict = later_index
                        break
                    continue
                if later_new:
                    break
                if later.status in (S.FAILURE, S.TIMED_OUT):
                    verdict = later_index
                    break
                if later.status == S.SUCCESS and later.run.id != finish.run.id:
                    break
        if verdict is None:
            continue
        failed_changes.append(new[-1])
        cause = steps[verdict][0]
        if isinstance(cause, DeploymentSignal) and cause.kind == ROLLED_BACK:
            continue
        failed_at = cause.at if isinstance(cause, DeploymentSignal) else cause.end
        for later, later_new in steps[verdict + 1:]:
            if later_new:
                restore.append((later_new[0], millis_between(failed_at, later_new[0])))
                break
            if (isinstance(later, DeploymentSignal) and isinstance(cause, DeploymentSignal)
                    and later.kind == INCIDENT_RESOLVED and later.incident == cause.incident):
                restore.append((later.at, max(0, millis_between(failed_at, later.at))))
                break
    return {"recover": recover, "failed": failed_changes, "restore": restore}


def commit_flaky(runs: list[RawRun]) -> dict[tuple[date, str], int]:
    """Flaky across runs of one commit, by its definition (docs), over a pipeline's finishes in
    the order they happened: a stage whose latest attempt at a finish succeeded, after it had
    failed at a finish of another run of the same commit (and was not flaky in its own run)."""
    found: dict[tuple[date, str], int] = {}
    failed: dict[tuple[str, str], set[str]] = {}
    for finish in sorted((f for r in runs for f in r.finishes()), key=lambda f: f.moment):
        run = finish.run
        if run.commit is None:
            continue
        for stage in run.stages:
            ended = [a for a in stage.attempts if a.end <= finish.end]
            if not ended:
                continue
            latest, key = ended[-1], (run.commit, stage.name)
            if latest.status in (S.FAILURE, S.TIMED_OUT):
                failed.setdefault(key, set()).add(run.id)
            elif latest.status == S.SUCCESS:
                within = any(a.status in (S.FAILURE, S.TIMED_OUT) for a in ended[:-1])
                if failed.get(key, set()) - {run.id} and not within:
                    found[(latest.end.date(), stage.name)] = found.get((latest.end.date(), stage.name), 0) + 1
                failed.pop(key, None)
    return found


def expected(runs: list[RawRun], start: date, end: date, granularity: str,
             outside: Iterable[DeploymentSignal] = ()) -> dict:
    outside = list(outside)
    finished = [r for r in runs if r.status in COUNTED and in_range(r.end, start, end)]
    statuses = [r.status for r in finished]
    durations = [millis_between(r.start, r.end) for r in finished]
    rows = [(run, stage, a, flaky) for run, stage, a, flaky in attempt_rows(runs)
            if a.status in COUNTED and in_range(a.end, start, end)]
    queue = [millis_between(a.ready, a.start) for _, _, a, _ in rows]
    across: dict[str, int] = {}
    for pipeline in sorted({r.pipeline for r in runs}):
        for (day, name), count in commit_flaky([r for r in runs if r.pipeline == pipeline]).items():
            if start <= day <= end:
                across[name] = across.get(name, 0) + count
    stages = []
    for name in sorted({stage.name for _, stage, _, _ in rows}):
        mine = [(a, flaky) for _, stage, a, flaky in rows if stage.name == name]
        times = [millis_between(a.start, a.end) for a, _ in mine]
        stages.append({"name": name, "runs": len(mine),
                       "successRate": success_rate([a.status for a, _ in mine]),
                       "p50": nearest_rank(times, 50), "p95": nearest_rank(times, 95),
                       "flakyRate": rate(sum(flaky for _, flaky in mine) + across.get(name, 0), len(mine)),
                       "retries": sum(a.number > 1 for a, _ in mine)})
    series = []
    day = start
    while day <= end:
        point = day if granularity == "day" else max(start, day - timedelta(days=day.weekday()))
        if not series or series[-1]["start"] != point:
            series.append({"start": point, "runs": []})
        series[-1]["runs"] += [r for r in finished if r.end.date() == day]
        day += timedelta(days=1)
    deploys, leads, recover, failed, restore = 0, [], [], 0, []
    for pipeline in sorted({r.pipeline for r in runs} | {s.pipeline for s in outside}):
        mine = [r for r in runs if r.pipeline == pipeline]
        for run in mine:
            for deploy_end in deployments(run):
                if in_range(deploy_end, start, end):
                    deploys += 1
                    if run.committed is not None and run.committed <= deploy_end:
                        leads.append(millis_between(run.committed, deploy_end))
        samples = pipeline_samples(mine, [s for s in outside if s.pipeline == pipeline])
        recover += [ms for at, ms in samples["recover"] if in_range(at, start, end)]
        failed += sum(1 for at in samples["failed"] if in_range(at, start, end))
        restore += [ms for at, ms in samples["restore"] if in_range(at, start, end)]
    return {
        "runs": counts(statuses), "successRate": success_rate(statuses),
        "duration": {"p50": nearest_rank(durations, 50), "p90": nearest_rank(durations, 90),
                     "p95": nearest_rank(durations, 95),
                     "mean": round(sum(durations) / len(durations) / 1000, 3) if durations else None},
        "queue": {"p50": nearest_rank(queue, 50), "p95": nearest_rank(queue, 95)},
        "mttr": round(sum(recover) / len(recover) / 1000, 3) if recover else None,
        "stages": stages,
        "series": [{"start": p["start"].isoformat(), "runs": len(p["runs"]),
                    "successRate": success_rate([r.status for r in p["runs"]]),
                    "p50": nearest_rank([millis_between(r.start, r.end) for r in p["runs"]], 50),
                    "p95": nearest_rank([millis_between(r.start, r.end) for r in p["runs"]], 95)}
                   for p in series],
        "dora": {"deploymentFrequency": round(deploys / ((end - start).days + 1), 4),
                 "lead": nearest_rank(leads, 50), "cfr": rate(failed, deploys),
                 "restore": nearest_rank(restore, 50)},
    }


def assert_matches(body: dict, want: dict) -> None:
    assert body["runs"] == want["runs"]
    assert body["successRate"] == want["successRate"]
    for key in ("p50", "p90", "p95"):
        assert close(body["duration"][key], want["duration"][key]), (key, body["duration"], want["duration"])
    assert body["duration"]["mean"] == want["duration"]["mean"]
    for key in ("p50", "p95"):
        assert close(body["queue"][key], want["queue"][key]), (key, body["queue"], want["queue"])
    assert body["mttrSeconds"] == want["mttr"]
    assert [s["name"] for s in body["stages"]] == [s["name"] for s in want["stages"]]
    for got, exact in zip(body["stages"], want["stages"], strict=True):
        assert (got["runs"], got["successRate"], got["flakyRate"], got["retries"]) == (
            exact["runs"], exact["successRate"], exact["flakyRate"], exact["retries"]), (got, exact)
        assert close(got["duration"]["p50"], exact["p50"]) and close(got["duration"]["p95"], exact["p95"])
    assert [(p["start"], p["runs"], p["successRate"]) for p in body["series"]] == [
        (p["start"], p["runs"], p["successRate"]) for p in want["series"]]
    for got, exact in zip(body["series"], want["series"], strict=True):
        assert close(got["p50"], exact["p50"]) and close(got["p95"], exact["p95"])
    dora = body["dora"]
    assert dora["deploymentFrequency"] == want["dora"]["deploymentFrequency"]
    assert dora["changeFailureRate"] == want["dora"]["cfr"]
    assert close(dora["leadTimeSeconds"]["p50"], want["dora"]["lead"])
    assert close(dora["timeToRestoreSeconds"]["p50"], want["dora"]["restore"])


def context():
    return memory_context(Settings(table_name="stagetrack-test", region="us-east-1"),
                          FakeClock("2026-05-07T12:00:00.000Z"))


@st.composite
def histories_with_signals(draw) -> tuple[list[RawRun], list[DeploymentSignal]]:
    runs = draw(histories())
    return runs, draw(signals(runs))


def deployed(counter: int, at: datetime) -> RawRun:
    """A run of web deploying to production at ``at`` + 2 minutes (one stage, one attempt)."""
    run = RawRun("web", counter, at, at - timedelta(hours=1), "production")
    run.stages.append(StageRun(1, "build", None, [Attempt(1, S.SUCCESS, at, at + timedelta(minutes=1),
                                                          at + timedelta(minutes=2), None)]))
    return run


def signal_at(number: int, kind: str, at: datetime, incident: str | None = None) -> DeploymentSignal:
    return DeploymentSignal(pipeline="web", key=f"event-{number}", kind=kind, at=at, incident=incident)


# Every kind of signal on a pending deployment, then the deployment that follows it: a rollback
# (no restore), an incident resolved before the next deployment (restored by its resolution),
# an incident the next deployment restores first (its later resolution adds nothing).
SIGNALS_EVERY_WAY = (
    [deployed(1, BASE), deployed(2, BASE + timedelta(hours=1)), deployed(3, BASE + timedelta(hours=2)),
     deployed(4, BASE + timedelta(hours=3))],
    [signal_at(0, ROLLED_BACK, BASE + timedelta(minutes=10)),
     signal_at(1, INCIDENT_DETECTED, BASE + timedelta(minutes=70), "i1"),
     signal_at(2, INCIDENT_RESOLVED, BASE + timedelta(minutes=100), "i1"),
     signal_at(3, INCIDENT_DETECTED, BASE + timedelta(minutes=130), "i2"),
     signal_at(4, INCIDENT_RESOLVED, BASE + timedelta(minutes=200), "i2")],
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(histories_with_signals(), st.sampled_from(["day", "week"]), st.integers(0, 3), st.integers(0, 3))
@example(SIGNALS_EVERY_WAY, "day", 0, 1)
def test_every_figure_matches_a_brute_force_over_the_raw_runs(history, granularity, first, span):
    runs, outside = history
    note(repr(runs))
    note(repr(outside))
    ctx = context()
    work = work_of(runs, outside)
    feed(ctx, work)
    feed(ctx, work)  # every record delivered twice: counted once
    start = BASE.date() + timedelta(days=first)
    end = start + timedelta(days=span)
    query = InsightsQuery.model_validate({"from": start.isoformat(), "to": end.isoformat(),
                                          "granularity": granularity})
    for pipeline in (None, "web", "api"):
        mine = [r for r in runs if pipeline is None or r.pipeline == pipeline]
        told = [s for s in outside if pipeline is None or s.pipeline == pipeline]
        body = insights.answer(ctx, None, query.model_copy(update={"pipeline": pipeline})).body
        assert (body["from"], body["to"]) == (start.isoformat(), end.isoformat())
        assert body["granularity"] == granularity
        assert_matches(body, expected(mine, start, end, granularity, told))
    # the same runs as stored and the signals as kept, replayed by the rebuild: the same day items
    for pipeline in ("web", "api"):
        kept = ctx.stores.insights.signals_of(pipeline)
        assert sorted(kept, key=lambda s: s.key) == sorted((s for s in outside if s.pipeline == pipeline),
                                                           key=lambda s: s.key)
        rebuilt = insights.replay([stored(r) for r in runs if r.pipeline == pipeline], kept)
        live = ctx.stores.insights.read_days(pipeline, "2000-01-01", "2100-01-01").items
        nonzero = {(i.day, i.stage): {k: v for k, v in i.tally.items() if v} for i in live}
        # (a run that finished again on another day leaves zeros on the first: the same figures)
        assert {key: tally for key, tally in nonzero.items() if tally} == rebuilt.days
    # one batch of the stream's records between two signals, as the consumer applies a batch
    # (its stage records first; signals come through the webhook, not the stream): the same
    batched = context()
    batch: list = []
    for item in [*work, None]:
        if item is None or isinstance(item, DeploymentSignal):
            feed(batched, sorted(batch, key=lambda w: isinstance(w, FinishedRun)))
            feed(batched, [item] if item is not None else [])
            batch = []
        else:
            batch.append(item)
    for pipeline in ("web", "api", None):
        assert (batched.stores.insights.read_days(pipeline, "2000-01-01", "2100-01-01").items
                == ctx.stores.insights.read_days(pipeline, "2000-01-01", "2100-01-01").items)
    # a token seeing both pipelines, without naming one, gets the every-pipeline figures
    both = insights.answer(ctx, frozenset({"web", "api"}), query).body
    assert both == insights.answer(ctx, None, query).body


def test_figures_of_nothing_are_zero_and_null():
    body = figures([], date(2026, 5, 4), date(2026, 5, 5), "day")
    assert body == {
        "from": "2026-05-04", "to": "2026-05-05", "granularity": "day",
        "runs": {"total": 0, "success": 0, "failure": 0, "cancelled": 0, "timedOut": 0},
        "successRate": None, "duration": {"p50": None, "p90": None, "p95": None, "mean": None},
        "queue": {"p50": None, "p95": None}, "mttrSeconds": None, "stages": [],
        "series": [{"start": "2026-05-04", "runs": 0, "successRate": None, "p50": None, "p95": None},
                   {"start": "2026-05-05", "runs": 0, "successRate": None, "p50": None, "p95": None}],
        "dora": {"deploymentFrequency": 0.0, "leadTimeSeconds": {"p50": None}, "changeFailureRate": None,
                 "timeToRestoreSeconds": {"p50": None}},
    }
