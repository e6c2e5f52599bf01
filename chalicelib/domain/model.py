"""Runs and stages as plain objects, and the rules that change them.

The service loads a run with all its stages (one Query), applies these rules in memory and
writes the changed items back in one transaction, so the run's derived fields can never
disagree with its stages.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from . import ids
from .clock import format_iso, millis_between, parse_iso
from .errors import IllegalTransition, NotFound
from .status import ACTIVE, APPROVAL_ONLY, FINAL, StageStatus, is_legal, run_status_from_counts

S = StageStatus


@dataclass
class Stage:
    id: str
    run_id: str
    position: int
    type: str
    name: str
    status: StageStatus
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_ms: int | None = None
    timeout_seconds: int | None = None
    expected_seconds: int | None = None  # self-driven stages: completed by the timer (timers.py)
    approval: str = "AUTO"
    attempt: int = 1
    # Ended attempts not stored yet: each one that ``operations.new_attempt`` archives lands
    # here, and the store writes them as attempt items of their own with the stage's change
    # (then empties this list). Loading a run reads no attempt history, so this is empty on a
    # loaded stage, except for a stage item of the previous layout, which kept its history
    # inline: those are moved out on the stage's next write.
    attempts: list[dict] = field(default_factory=list)
    # The attempt this stage was first seen at (a sender may report its job's attempt 3 first):
    # its ended attempts are numbered first_attempt .. attempt - 1, one item each.
    first_attempt: int = 1
    waiting_since: datetime | None = None
    approval_decision: dict | None = None  # this attempt's approve/reject (operations.decide)
    # A MANUAL stage's approval policy (domain/approvals.py: ApprovalPolicy.as_dict), None: one
    # decision by any operate token opens or fails the gate. ``approvals``: every decision of
    # the current attempt; ``reminded_at``: when its reminder went out during this wait.
    approval_policy: dict | None = None
    approvals: list[dict] = field(default_factory=list)
    reminded_at: datetime | None = None
    # The sender lets this stage fail without failing the run (GitLab ``allow_failure``): its
    # FAILURE shows on the stage, and the run's status counts it as passed (run_status_of).
    allow_failure: bool = False
    environment: str | None = None  # where a deploy stage deploys to (DEPLOY_PROD: "production")
    # Its automatic retry policy (domain/retries.py: RetryPolicy.as_dict), None: none. How many
    # automatic retries it has had in this run (never more than the policy's ``max``), and while
    # one is pending (RETRY_PENDING): when it starts and the status the attempt before it ended.
    retry_policy: dict | None = None
    auto_retries: int = 0
    next_retry_at: datetime | None = None
    retry_reason: str | None = None
    # A finally stage (Tekton's ``finally``, GitHub's ``if: always()``): it still runs after a
    # failure, a stop or a cancel, and neither a stop's grace period nor the run's deadline
    # ends it (its own ``timeoutSeconds`` does). See operations.stop_run and timers.drive.
    always: bool = False
    # When a stop's grace period ends for this running stage: its timer then cancels it
    # (operations.stop_run); None when no stop is pending on it.
    cancel_at: datetime | None = None
    # The run's whole deadline (its ``timeoutSeconds`` from its first start), stamped on the
    # stage when it becomes active (timers.stamp_run_deadline): its timer times it out then.
    run_deadline: datetime | None = None
    # Recent history (domain/overruns.py), stored by the stream consumer when this attempt
    # started: the run's unfinished stage names' {name: [p50 ms, p95 ms, samples]}; when this
    # attempt passes its p95 (a timer, only before its deadline) and when the timer saw it pass.
    expectations: dict | None = None
    overrun_at: datetime | None = None
    overrunning_at: datetime | None = None
    version: int | None = None

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE

    @property
    def attempt_count(self) -> int:
        """How many attempts this stage has had that stagetrack saw, the current one included."""
        return self.attempt - self.first_attempt + 1

    def has_attempt(self, number: int) -> bool:
        """Whether ``number`` is one of this stage's attempts (current or ended)."""
        return self.first_attempt <= number <= self.attempt

    def deadline(self) -> datetime | None:
        """When a timer should time this stage out: the earlier of its own timeout, counted from
        entering its state, and its run's deadline (``run_deadline``)."""
        own = self.own_deadline()
        if self.run_deadline is None or not self.is_active:
            return own
        return self.run_deadline if own is None else min(own, self.run_deadline)

    def own_deadline(self) -> datetime | None:
        """This stage's own timeout, counted from entering its state (None: it has none)."""
        if self.timeout_seconds is None:
            return None
        if self.status == S.IN_PROGRESS and self.started_at is not None:
            return self.started_at + timedelta(seconds=self.timeout_seconds)
        if self.status == S.WAITING_FOR_APPROVAL and self.waiting_since is not None:
            return self.waiting_since + timedelta(seconds=self.timeout_seconds)
        return None

    def elapsed_ms(self, now: datetime) -> int | None:
        """Live for a running stage, frozen once it ended, absent before it started."""
        if self.started_at is None:
            return None
        if self.status == S.IN_PROGRESS:
            return max(0, millis_between(self.started_at, now))
        return self.duration_ms


@dataclass
class Run:
    id: str
    pipeline: str
    counter: int
    status: StageStatus
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_ms: int | None = None
    commit: dict | None = None
    trigger: str | None = None
    variables: dict = field(default_factory=dict)
    timeout_seconds: int | None = None
    auto_advance: bool = False  # the run driver (timers.drive) starts the next stage itself
    secrets: dict = field(default_factory=dict)  # key -> keyed hash, never the value (operations)
    cancellation: dict | None = None  # the latest cancel: by, at, reason, stageId (operations)
    # The run was stopped (a graceful stop) or cancelled and not retried since: mode (STOP or
    # CANCEL), by, at, reason and, for a stop, graceSeconds and graceUntil. Its status is then
    # CANCELLING while a stage is active, else CANCELLED (status.run_status_from_counts).
    stopping: dict | None = None
    # How long a stop of this run lets running stages finish unless the stop says (seconds;
    # None: operations.DEFAULT_STOP_GRACE_SECONDS). Kept in the pipeline's layout.
    stop_grace_seconds: int | None = None
    # Where the run comes from, recorded at create and never changed (``RunMetadata``): what
    # people search runs by (GET /api/runs) besides the pipeline and status.
    branch: str | None = None
    actor: str | None = None  # the creating token's name, or the sender's user (webhooks)
    source_url: str | None = None  # the run in the system it came from
    source: str | None = None  # SOURCES: native, github, gitlab, cdevents, ...
    environment: str | None = None
    # Its concurrency group (domain/concurrency.py; None: the run overlaps freely), chosen at
    # create and never changed, and whether it still waits there: a queued run's status is QUEUED
    # whatever its (all IDLE) stages say, until it is promoted or cancelled.
    concurrency_group: str | None = None
    queued: bool = False
    # Every stage in brief (``stage_summary``), kept on the run item by ``refresh`` so that run
    # listings (GoCD's pipeline and stage history) need no read of the stages. None: not known
    # (the stores keep it no longer: listings read it from the stage items, service/pipelines.py).
    stage_summary: list[dict] | None = field(default=None, compare=False)
    version: int | None = None
    # The run's change counter as read (store/repository.py): every write of the run or of one
    # of its stages adds one, so a change of the whole run can be conditioned on no stage having
    # changed since it read them. None: not known (a run stored in the layout before counters).
    seq: int | None = field(default=None, compare=False)
    # Store-private: the derived fields (status, bounds) as the stored item holds them, which
    # may lag what the stages make; a write sets those that differ (store/repository.py).
    stored: dict | None = field(default=None, compare=False)

    def elapsed_ms(self, now: datetime) -> int | None:
        if self.started_at is None:
            return None
        if self.status in ACTIVE:
            return max(0, millis_between(self.started_at, now))
        return self.duration_ms


@dataclass(frozen=True)
class StageSpec:
    type: str
    name: str
    timeout_seconds: int | None = None
    approval: str = "AUTO"
    expected_seconds: int | None = None
    environment: str | None = None  # None: the type's default (DEFAULT_ENVIRONMENTS)
    approval_policy: dict | None = None  # a MANUAL stage's policy (domain/approvals.py)
    retry_policy: dict | None = None  # its automatic retry policy (domain/retries.py)
    always: bool = False  # a finally stage (Stage.always)


# What a run's ``source`` may be: where it was created (the native API, or the integration whose
# sender's run it mirrors, or a dialect endpoint that schedules one).
SOURCES = ("native", "github", "gitlab", "cdevents", "codepipeline", "codebuild", "buddy", "gocd",
           "codearts", "schedule")
# The environment a deploy stage deploys to unless its spec names one.
DEFAULT_ENVIRONMENTS = {"DEPLOY_PROD": "production", "DEPLOY_STAGING": "staging"}


def stage_environment(stage_type: str, environment: str | None = None) -> str | None:
    return environment if environment is not None else DEFAULT_ENVIRONMENTS.get(stage_type)


@dataclass(frozen=True)
class RunMetadata:
    """Where a run comes from (``new_run``); every field None when unknown."""

    branch: str | None = None
    actor: str | None = None
    source_url: str | None = None
    source: str | None = None
    environment: str | None = None


def fill_metadata(run: Run, metadata: RunMetadata) -> bool:
    """Record what ``metadata`` knows and the run does not (a sender's later event may say what
    its first did not: GitHub's job event before its run's); a value recorded is never changed.
    True if anything was filled."""
    filled = False
    for name in ("branch", "actor", "source_url", "source", "environment"):
        value = getattr(metadata, name)
        if value is not None and getattr(run, name) is None:
            setattr(run, name, value)
            filled = True
    return filled


@dataclass
class RunAggregate:
    run: Run
    stages: list[Stage]
    # Only some stages were read (a change of one stage: RunStore.load_stage): the run's derived
    # fields are as stored, and ``refresh`` leaves them to the store, which keeps them from its
    # per-status counters.
    partial: bool = field(default=False, compare=False)

    def stage(self, stage_id: str) -> Stage:
        for stage in self.stages:
            if stage.id == stage_id:
                return stage
        raise NotFound(f"stage {stage_id!r} not found")

    def snapshot(self) -> RunAggregate:
        return copy.deepcopy(self)

    def refresh(self, now: datetime) -> None:
        """Re-derive the run's status and timing from its stages; always bumps updatedAt."""
        self.run.updated_at = now
        if self.partial:
            return
        self.rederive(now)
        self.run.stage_summary = [stage_summary(s) for s in sorted(self.stages, key=lambda s: s.position)]

    def rederive(self, now: datetime | None = None) -> None:
        """The run's status, start, end and duration as its stages make them: the status from
        ``status_counts`` (the same function the store's counters feed), the start the earliest
        start of any attempt, the end the latest end once the run is final (``now`` if no stage
        has one; without ``now`` the end already known is kept)."""
        run = self.run
        run.status = S.QUEUED if run.queued else run_status_of(self.stages, stopping=run.stopping is not None)
        starts = [s.started_at for s in self.stages if s.started_at is not None]
        starts += [parse_iso(a["startedAt"]) for s in self.stages for a in s.attempts
                   if a.get("startedAt")]
        # Ended attempts are not loaded with the run (their items are read only when asked
        # for), so a run that started keeps its start: a retry cannot make it later.
        if run.started_at is not None:
            starts.append(run.started_at)
        run.started_at = min(starts) if starts else None
        if run.status in FINAL:
            ends = [s.ended_at for s in self.stages if s.ended_at is not None]
            run.ended_at = max(ends) if ends else (now or run.ended_at)
            # A run never ends before it starts: the stage that started it may be back at IDLE
            # (a retry of a cancelled run's stage) while the run stays final by an earlier end.
            if run.ended_at is not None and run.started_at is not None and run.ended_at < run.started_at:
                run.ended_at = run.started_at
            run.duration_ms = (
                millis_between(run.started_at, run.ended_at)
                if run.started_at is not None and run.ended_at is not None else None
            )
        else:
            run.ended_at = None
            run.duration_ms = None

    def remove_stage(self, stage_id: str) -> Stage:
        stage = self.stage(stage_id)
        self.stages.remove(stage)
        return stage


def run_status_of(stages: list[Stage], *, stopping: bool = False) -> StageStatus:
    """The run status its stages make (``run_status_from_counts`` of ``status_counts``);
    ``stopping``: the run's ``stopping`` is set."""
    return run_status_from_counts(status_counts(stages), stopping=stopping)


def counted_status(stage: Stage) -> StageStatus:
    """The status a stage counts as for its run's status: a stage allowed to fail counts as
    passed when it failed (GitLab's own pipeline status does the same)."""
    return S.SUCCESS if stage.allow_failure and stage.status == S.FAILURE else stage.status


def status_counts(stages: list[Stage]) -> dict[StageStatus, int]:
    """How many stages count as each status (``counted_status``): the multiset the run's status
    is derived from, and what the store keeps as per-status counters on the run item."""
    counts: dict[StageStatus, int] = {}
    for stage in stages:
        counted = counted_status(stage)
        counts[counted] = counts.get(counted, 0) + 1
    return counts


# The run's own fields: a change that leaves them (and every stage but one) as they were is a
# change of that one stage (``single_stage_change``). The others are derived from the stages.
_DERIVED_RUN_FIELDS = frozenset({"status", "updated_at", "started_at", "ended_at", "duration_ms",
                                 "stage_summary", "version", "seq", "stored"})


def single_stage_change(before: RunAggregate, after: RunAggregate) -> tuple[Stage, Stage] | None:
    """(old, new) of the one stage ``after`` changed, when that is all it changed: the same
    stages (none added or removed), exactly one of them different, the run's own fields (not the
    ones derived from its stages) untouched. None otherwise (several stages, or the run itself).
    Such a change can be written without rewriting the run: only its summary follows."""
    changed = stage_changes(before, after)
    return changed[0] if changed is not None and len(changed) == 1 else None


def stage_changes(before: RunAggregate, after: RunAggregate) -> list[tuple[Stage, Stage]] | None:
    """(old, new) of every stage ``after`` changed, when the change is of stages only: the same
    stages (none added or removed), the run's own fields untouched. None otherwise."""
    if [s.id for s in before.stages] != [s.id for s in after.stages]:
        return None
    old_run, new_run_ = asdict(before.run), asdict(after.run)
    if any(old_run[name] != new_run_[name] for name in old_run if name not in _DERIVED_RUN_FIELDS):
        return None
    return [(old, new) for old, new in zip(before.stages, after.stages, strict=True)
            if asdict(old) != asdict(new)]


def stage_summary(stage: Stage) -> dict:
    """What a run listing shows of a stage: enough for GoCD's histories, small enough to keep
    on the run item for every stage (a few hundred bytes each)."""
    decision = stage.approval_decision or {}
    return {
        "position": stage.position, "name": stage.name, "type": stage.type,
        "status": stage.status.value, "attempt": stage.attempt, "approval": stage.approval,
        "approvedBy": decision.get("by") if decision.get("decision") == "APPROVED" else None,
        "startedAt": format_iso(stage.started_at), "endedAt": format_iso(stage.ended_at),
    }


def new_run(pipeline: str, counter: int, specs: list[StageSpec], now: datetime, *,
            commit: dict | None = None, trigger: str | None = None,
            variables: dict | None = None, timeout_seconds: int | None = None,
            auto_advance: bool = False, metadata: RunMetadata | None = None,
            stop_grace_seconds: int | None = None) -> RunAggregate:
    rid = ids.run_id(pipeline, counter)
    meta = metadata or RunMetadata()
    run = Run(id=rid, pipeline=pipeline, counter=counter, status=S.IDLE, created_at=now,
              updated_at=now, commit=commit, trigger=trigger, variables=dict(variables or {}),
              timeout_seconds=timeout_seconds, auto_advance=auto_advance, branch=meta.branch,
              actor=meta.actor, source_url=meta.source_url, source=meta.source,
              environment=meta.environment, stop_grace_seconds=stop_grace_seconds)
    stages = [
        Stage(id=ids.stage_id(rid, position), run_id=rid, position=position, type=spec.type,
              name=spec.name, status=S.IDLE, created_at=now, updated_at=now,
              timeout_seconds=spec.timeout_seconds if spec.timeout_seconds is not None else timeout_seconds,
              approval=spec.approval, expected_seconds=spec.expected_seconds,
              environment=stage_environment(spec.type, spec.environment),
              approval_policy=dict(spec.approval_policy) if spec.approval_policy is not None else None,
              retry_policy=dict(spec.retry_policy) if spec.retry_policy is not None else None,
              always=spec.always)
        for position, spec in enumerate(specs, start=1)
    ]
    aggregate = RunAggregate(run=run, stages=stages)
    aggregate.refresh(now)
    return aggregate


def change_status(stage: Stage, target: StageStatus, now: datetime, *,
                  via_approval: bool = False) -> bool:
    """Apply one status change by the transition table. Returns False for a no-op.

    Asking an IDLE stage with MANUAL approval to start puts it at its gate
    (WAITING_FOR_APPROVAL) instead; only the approve operation lets it through. So does the
    start of a pending automatic retry: a new attempt of a gated stage asks for a new approval.
    """
    current = stage.status
    if target == S.IN_PROGRESS and current in (S.IDLE, S.RETRY_PENDING) and stage.approval == "MANUAL":
        target = S.WAITING_FOR_APPROVAL
    if target == current:
        return False
    if not is_legal(current, target):
        raise IllegalTransition(
            f"stage {stage.id!r} cannot go from {current.value} to {target.value}",
            details={"from": current.value, "to": target.value},
        )
    if (current, target) in APPROVAL_ONLY and not via_approval:
        raise IllegalTransition(
            f"stage {stage.id!r} is waiting for approval; approve it to start it",
            details={"from": current.value, "to": target.value},
        )
    stage.status = target
    stage.updated_at = now
    if current == S.RETRY_PENDING:  # started or cancelled: the pending retry is used up
        stage.next_retry_at = None
        stage.retry_reason = None
    if target == S.WAITING_FOR_APPROVAL:
        stage.waiting_since = now
        stage.reminded_at = None
        stage.approvals = []
    elif target == S.IN_PROGRESS:
        stage.started_at = now
        stage.ended_at = None
        stage.duration_ms = None
        stage.overrun_at = None  # a new start has its own overrun (domain/overruns.py)
        stage.overrunning_at = None
    elif target in FINAL:
        stage.cancel_at = None  # nothing left for a stop's timer to cancel
        stage.ended_at = now
        stage.duration_ms = (
            millis_between(stage.started_at, now) if stage.started_at is not None else None
        )
    return True
