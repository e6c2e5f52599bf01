"""Hypothesis state machines: random sequences of patch / cancel / retry / approve / reject.

``OperationsMachine`` drives the pure domain (fast, many examples). ``ServiceMachine`` drives the
same operations through the service on moto and keeps a pure-domain shadow of the run: after
every step the stored run must equal the shadow in everything the operations decide. Both check
the invariants after every step:
- the run's status is ``derive_run_status`` of its stages;
- startedAt <= endedAt, and every duration is exactly endedAt - startedAt (stages and run);
- a running stage has a start and no end; it has attempt - first_attempt ended attempts (its
  ``attempts`` in the pure domain; the stored records, read apart, through the service);
- every status change is in TRANSITIONS, except the documented operation rules: retry moves a
  finished stage back to IDLE with a new attempt, and only approve opens a gate
  (WAITING_FOR_APPROVAL -> IN_PROGRESS);
- an operation that is refused changes nothing;
- a stopped or cancelled run (``stopping``) is CANCELLING while a stage is active, else
  CANCELLED; it has no stage left to start but ``always`` ones; only running stages carry a
  stop's grace end (``StopMachine`` adds finally stages, timeouts and the timers).
"""
from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from chalicelib.domain import operations as ops
from chalicelib.domain.approvals import TIMER_ACTOR, policy_from_spec
from chalicelib.domain.clock import millis_between
from chalicelib.domain.errors import DomainError
from chalicelib.domain.model import RunMetadata, StageSpec, change_status, new_run
from chalicelib.domain.status import ACTIVE, FINAL, derive_run_status, is_legal
from chalicelib.domain.status import StageStatus as S
from chalicelib.domain.timers import drive, fire, stamp_run_deadline
from tests.fixtures.clock import FakeClock

STATUSES = list(S)
stage_specs = st.lists(st.sampled_from(["AUTO", "MANUAL"]), min_size=1, max_size=5)
positions = st.integers(min_value=0, max_value=4)
seconds = st.integers(min_value=0, max_value=120_000).map(lambda ms: ms / 1000)


def check_invariants(aggregate, history: dict | None = None) -> None:
    """``history``: each stage's ended attempts as stored apart (stage id -> oldest first);
    without it, the ones the pure domain carries on the stage."""
    run, stages = aggregate.run, aggregate.stages
    assert run.status == derive_run_status([s.status for s in stages], stopping=run.stopping is not None)
    if run.stopping is not None:
        assert run.status == (S.CANCELLING if any(s.status in ACTIVE for s in stages) else S.CANCELLED)
        assert all(s.always for s in stages if s.status == S.IDLE), "a stopped run starts only always stages"
    else:
        assert run.status != S.CANCELLING
    for stage in stages:
        ended = stage.attempts if history is None else history[stage.id]
        assert stage.attempt == stage.first_attempt + len(ended) and stage.attempt_count == len(ended) + 1
        assert [e["attempt"] for e in ended] == list(range(stage.first_attempt, stage.attempt))
        if stage.status == S.IN_PROGRESS:
            assert stage.started_at is not None and stage.ended_at is None and stage.duration_ms is None
        if stage.status == S.IDLE:
            assert stage.started_at is None and stage.ended_at is None and stage.duration_ms is None
        if stage.status in FINAL:
            assert stage.ended_at is not None
        if stage.cancel_at is not None:  # a stop's grace end: only on stages it let run on
            assert stage.status == S.IN_PROGRESS and not stage.always and run.stopping is not None
        if stage.started_at is not None and stage.ended_at is not None:
            assert stage.started_at <= stage.ended_at
            assert stage.duration_ms == millis_between(stage.started_at, stage.ended_at)
        else:
            assert stage.duration_ms is None
        for entry in ended:
            if entry["startedAt"] and entry["endedAt"]:
                assert entry["startedAt"] <= entry["endedAt"]
    if run.status in FINAL:
        assert run.ended_at is not None
        if run.started_at is not None:
            assert run.started_at <= run.ended_at
            assert run.duration_ms == millis_between(run.started_at, run.ended_at)
    else:
        assert run.ended_at is None and run.duration_ms is None


def check_transitions(before, after, operation: str, history: dict | None = None) -> None:
    for old, new in zip(before.stages, after.stages, strict=True):
        if old.status == new.status and old.attempt == new.attempt:
            continue
        if new.attempt != old.attempt:
            assert operation in ("retry_run", "retry_stage"), operation
            # IDLE, or started at once by the driver of an autoAdvance run (a finally stage)
            started = after.run.auto_advance and new.status in ACTIVE
            assert old.status in FINAL and (new.status == S.IDLE or started)
            assert new.attempt == old.attempt + 1
            ended = new.attempts if history is None else history[new.id]
            assert ended[-1]["status"] == old.status.value
            continue
        assert is_legal(old.status, new.status), (operation, old.status, new.status)
        if (old.status, new.status) == (S.WAITING_FOR_APPROVAL, S.IN_PROGRESS):
            assert operation in ("approve", "approve_as", "timer")  # timer: a policy's onTimeout APPROVE


def apply_rule(aggregate, operation: str, now, args: dict) -> bool:
    """One operation on the pure domain, as the service applies it (True: something changed)."""
    if operation == "patch":
        return change_status(aggregate.stages[args["i"]], args["status"], now)
    if operation == "cancel_run":
        return ops.cancel_run(aggregate, now, actor="h", reason=None)
    if operation == "stop":
        return ops.stop_run(aggregate, now, actor="h", grace_seconds=args["grace"])
    if operation == "timers":  # every due timer of the run, as a sweep fires them
        return any([fire(stage, now) for stage in aggregate.stages])
    if operation == "cancel_stage":
        return ops.cancel_stage(aggregate, aggregate.stages[args["i"]].id, now, actor="h")
    if operation == "retry_run":
        ops.retry_run(aggregate, args["scope"], now)
        return True
    if operation == "retry_stage":
        ops.retry_stage(aggregate, aggregate.stages[args["i"]].id, now)
        return True
    if operation in ("approve", "reject"):
        decision = ops.APPROVED if operation == "approve" else ops.REJECTED
        return ops.decide(aggregate, aggregate.stages[args["i"]].id, decision, now, actor="h")
    if operation in ("approve_as", "reject_as"):  # under an approval policy: the token decides
        decision = ops.APPROVED if operation == "approve_as" else ops.REJECTED
        return ops.decide(aggregate, aggregate.stages[args["i"]].id, decision, now,
                          actor=f"basic:{args['who']}", approver=args["who"])
    if operation == "timer":
        return fire(aggregate.stages[args["i"]], now)
    raise AssertionError(operation)


def apply_pure(aggregate, operation, now, args):
    """(changed, error): the aggregate is refreshed when changed and untouched when refused."""
    before = aggregate.snapshot()
    try:
        changed = apply_rule(aggregate, operation, now, args)
    except DomainError as error:
        assert aggregate == before, f"{operation} was refused but changed the run"
        return False, type(error)
    if changed:  # as service.runs.mutate_run completes every change
        drive(aggregate, now)
        stamp_run_deadline(aggregate, now)
        aggregate.refresh(now)
    else:
        assert aggregate == before, f"{operation} reported no change but changed the run"
    return changed, None


def expect_outcome(operation, before, after, changed, args) -> None:
    """What each operation promises, beyond the generic invariants."""
    if operation == "cancel_run":
        if changed:  # immediate: nothing left running or to start but finally stages after it
            assert after.run.status == S.CANCELLED or (
                after.run.status == S.CANCELLING and after.run.auto_advance)  # the driver started one
            assert not any(s.status in ACTIVE or s.status == S.IDLE for s in after.stages if not s.always)
            for old, new in zip(before.stages, after.stages, strict=True):
                if old.status in ACTIVE:
                    assert new.status == S.CANCELLED
        else:
            assert before.run.status in FINAL
    if operation == "stop":
        if changed:
            assert after.run.status in (S.CANCELLING, S.CANCELLED) and after.run.stopping["mode"] == "STOP"
            for old, new in zip(before.stages, after.stages, strict=True):
                if old.status == S.IN_PROGRESS:  # a graceful stop lets running stages run on
                    assert new.status == S.IN_PROGRESS
                    assert (new.cancel_at is None) == new.always
        else:
            assert before.run.status in FINAL or before.run.stopping is not None
    if operation == "cancel_stage" and changed:
        assert after.stages[args["i"]].status == S.CANCELLED
    if operation == "approve" and changed:
        assert after.stages[args["i"]].status == S.IN_PROGRESS
    if operation == "reject" and changed:
        assert after.stages[args["i"]].status == S.FAILURE
        assert after.run.status in (
            S.FAILURE,
            S.CANCELLED,
            S.TIMED_OUT,
            S.IN_PROGRESS,
            S.WAITING_FOR_APPROVAL,
            S.CANCELLING,  # a stopped run whose finally stage the driver started
        )
    if operation in ("retry_run", "retry_stage") and changed:
        assert not any(s.status in ACTIVE for s in before.stages if operation == "retry_run")


class OperationRules(RuleBasedStateMachine):
    """The random operations both machines draw; each machine says what ``_do`` means."""

    clock: FakeClock

    def _do(self, operation, **args):
        raise NotImplementedError

    @rule(seconds=seconds)
    def advance(self, seconds):
        self.clock.advance(seconds)

    @rule(i=positions, status=st.sampled_from(STATUSES))
    def patch(self, i, status):
        self._do("patch", i=i, status=status)

    @rule()
    def cancel_run(self):
        self._do("cancel_run")

    @rule(grace=st.integers(min_value=0, max_value=90))
    def stop(self, grace):
        self._do("stop", grace=grace)

    @rule(i=positions)
    def cancel_stage(self, i):
        self._do("cancel_stage", i=i)

    @rule(scope=st.sampled_from(["FAILED", "ALL"]))
    def retry_run(self, scope):
        self._do("retry_run", scope=scope)

    @rule(i=positions)
    def retry_stage(self, i):
        self._do("retry_stage", i=i)

    @rule(i=positions)
    def approve(self, i):
        self._do("approve", i=i)

    @rule(i=positions)
    def reject(self, i):
        self._do("reject", i=i)


class OperationsMachine(OperationRules):
    @initialize(approvals=stage_specs)
    def start(self, approvals):
        self.clock = FakeClock("2026-03-20T17:17:13.760Z")
        specs = [StageSpec(type="OTHER", name=f"s{i}", approval=a) for i, a in enumerate(approvals)]
        self.aggregate = new_run("web", 1, specs, self.clock.now())

    def _do(self, operation, **args):
        if "i" in args:
            args["i"] %= len(self.aggregate.stages)
        before = self.aggregate.snapshot()
        changed, _ = apply_pure(self.aggregate, operation, self.clock.now(), args)
        check_transitions(before, self.aggregate, operation)
        expect_outcome(operation, before, self.aggregate, changed, args)


    @invariant()
    def consistent(self):
        if hasattr(self, "aggregate"):
            check_invariants(self.aggregate)


OperationsMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=30, deadline=None, derandomize=True, database=None,
)
test_operations_on_the_pure_domain = OperationsMachine.TestCase


# ---- approval policies: N of M distinct approvers, self-approval, onTimeout (domain/approvals.py) --

PEOPLE = ["alice", "bob", "carol", "dave", "creator"]
ELIGIBLE = {"alice", "bob", "carol", "creator"}  # group:release + carol + creator


class ApprovalPolicyMachine(OperationsMachine):
    """The operations above, plus decisions by named approvers and the stage timers, on runs
    whose MANUAL stages carry a policy: the gate opens only with ``required`` distinct allowed
    approvals, never with the creator's (preventSelfApproval), each approver decides once per
    attempt, and a rejection ends it."""

    @initialize(approvals=stage_specs, required=st.integers(1, 3),
                on_timeout=st.sampled_from(["TIMED_OUT", "FAILURE", "APPROVE", "REJECT"]))
    def start(self, approvals, required=1, on_timeout="TIMED_OUT"):  # type: ignore[override]
        self.clock = FakeClock("2026-03-20T17:17:13.760Z")
        self.required = required
        policy = policy_from_spec(["group:release", "carol", "creator"], required, True, on_timeout, 30,
                                  {"release": ["alice", "bob"]}).as_dict()
        specs = [StageSpec(type="OTHER", name=f"s{i}", approval=a, timeout_seconds=90,
                           approval_policy=policy if a == "MANUAL" else None)
                 for i, a in enumerate(approvals)]
        self.aggregate = new_run("web", 1, specs, self.clock.now(), metadata=RunMetadata(actor="creator"))

    @rule(i=positions, who=st.sampled_from(PEOPLE))
    def approve_as(self, i, who):
        self._do("approve_as", i=i, who=who)

    @rule(i=positions, who=st.sampled_from(PEOPLE))
    def reject_as(self, i, who):
        self._do("reject_as", i=i, who=who)

    @rule(i=positions)
    def timer(self, i):
        self._do("timer", i=i)

    @invariant()
    def policy_holds(self):
        if not hasattr(self, "aggregate"):
            return
        for stage in self.aggregate.stages:
            if stage.approval_policy is None:
                continue
            people = [d["by"] for d in stage.approvals if d["by"] != TIMER_ACTOR]
            assert len(people) == len(set(people))  # once per approver per attempt
            assert set(people) <= ELIGIBLE - {"creator"}  # allowed, never the run's creator
            assert all(d["attempt"] == stage.attempt for d in stage.approvals)
            approved = [d for d in stage.approvals if d["decision"] == ops.APPROVED]
            rejected = [d for d in stage.approvals if d["decision"] == ops.REJECTED]
            if stage.status == S.WAITING_FOR_APPROVAL:
                assert not rejected and len(approved) < self.required
            if rejected:
                assert len(rejected) == 1 and stage.approval_decision == rejected[0]
            decided = stage.approval_decision
            if decided is not None and decided["decision"] == ops.APPROVED and decided["by"] != TIMER_ACTOR:
                assert len(approved) == self.required


ApprovalPolicyMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None, derandomize=True, database=None,
)
test_approval_policies_on_the_pure_domain = ApprovalPolicyMachine.TestCase


# ---- graceful stop, finally stages, the run's deadline (domain/operations.py, timers.py) ------------

class StopMachine(OperationsMachine):
    """The operations above on runs with ``always`` (finally) stages, stage timeouts and a whole-run
    ``timeoutSeconds``, some driven by the run driver, plus the timers firing as a sweep does:
    after a sweep no stage runs past a stop's grace end or the run's deadline (finally stages
    excepted), and a finally stage is never skipped by a stop, a cancel or a failure."""

    @initialize(approvals=stage_specs, always=st.lists(st.booleans(), min_size=5, max_size=5),
                run_timeout=st.sampled_from([None, 60, 200]), auto_advance=st.booleans())
    def start(self, approvals, always=(), run_timeout=None, auto_advance=False):  # type: ignore[override]
        self.clock = FakeClock("2026-03-20T17:17:13.760Z")
        specs = [StageSpec(type="OTHER", name=f"s{i}", approval=a, timeout_seconds=150, always=always[i])
                 for i, a in enumerate(approvals)]
        self.aggregate = new_run("web", 1, specs, self.clock.now(), timeout_seconds=run_timeout,
                                 auto_advance=auto_advance)

    @rule()
    def timers(self):
        self._do("timers")
        now = self.clock.now()
        for stage in self.aggregate.stages:
            if stage.status in ACTIVE:
                assert stage.cancel_at is None or stage.cancel_at > now
                assert stage.deadline() is None or stage.deadline() > now
                if not stage.always and self.aggregate.run.timeout_seconds is not None:
                    assert stage.run_deadline is not None  # stamped when it became active

    def _do(self, operation, **args):
        before = self.aggregate.snapshot()
        super()._do(operation, **args)
        if operation != "patch":  # only its sender may skip a finally stage
            for old, new in zip(before.stages, self.aggregate.stages, strict=True):
                assert not (new.always and new.status == S.SKIPPED and old.status != S.SKIPPED), operation


StopMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=30, deadline=None, derandomize=True, database=None,
)
test_stop_finally_and_deadline_on_the_pure_domain = StopMachine.TestCase


# ---- the same through the service and the store (moto) -----------------------------------------

