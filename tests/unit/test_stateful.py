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
- automatic retries (domain/retries.py, applied after every change as ``mutate_run`` does): only
  an attempt that ran and ended in a status its policy names moves to RETRY_PENDING, in exactly
  one new attempt, never more than ``max`` times; a pending retry has its moment and reason and
  nothing else does; it leaves RETRY_PENDING only to start (its timer or a report of it running),
  to CANCELLED, or to IDLE by a manual retry that takes it (same attempt: no second one);
- an operation that is refused changes nothing.
"""
from __future__ import annotations

from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from chalicelib.domain import operations as ops
from chalicelib.domain.approvals import TIMER_ACTOR, policy_from_spec
from chalicelib.domain.clock import millis_between
from chalicelib.domain.errors import DomainError
from chalicelib.domain.model import RunMetadata, StageSpec, change_status, new_run
from chalicelib.domain.retries import schedule_retries
from chalicelib.domain.status import ACTIVE, FINAL, derive_run_status, is_legal
from chalicelib.domain.status import StageStatus as S
from chalicelib.domain.timers import fire
from tests.fixtures.clock import FakeClock

STATUSES = list(S)
stage_specs = st.lists(st.sampled_from(["AUTO", "MANUAL"]), min_size=1, max_size=5)
positions = st.integers(min_value=0, max_value=4)
seconds = st.integers(min_value=0, max_value=120_000).map(lambda ms: ms / 1000)


def check_invariants(aggregate, history: dict | None = None) -> None:
    """``history``: each stage's ended attempts as stored apart (stage id -> oldest first);
    without it, the ones the pure domain carries on the stage."""
    run, stages = aggregate.run, aggregate.stages
    assert run.status == derive_run_status([s.status for s in stages])
    for stage in stages:
        ended = stage.attempts if history is None else history[stage.id]
        assert stage.attempt == stage.first_attempt + len(ended) and stage.attempt_count == len(ended) + 1
        assert [e["attempt"] for e in ended] == list(range(stage.first_attempt, stage.attempt))
        if stage.status == S.IN_PROGRESS:
            assert stage.started_at is not None and stage.ended_at is None and stage.duration_ms is None
        if stage.status in (S.IDLE, S.RETRY_PENDING):
            assert stage.started_at is None and stage.ended_at is None and stage.duration_ms is None
        check_retry(stage)
        if stage.status in FINAL:
            assert stage.ended_at is not None
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


def check_retry(stage) -> None:
    """A stage's automatic retry state agrees with its policy."""
    policy = stage.retry_policy
    if policy is None:
        assert stage.auto_retries == 0 and stage.status != S.RETRY_PENDING
        return
    assert 0 <= stage.auto_retries <= policy["max"]
    if stage.status == S.RETRY_PENDING:
        assert stage.next_retry_at is not None and stage.retry_reason in policy["when"]
        assert stage.auto_retries >= 1
    else:
        assert stage.next_retry_at is None and stage.retry_reason is None


def check_transitions(before, after, operation: str, history: dict | None = None) -> None:
    for old, new in zip(before.stages, after.stages, strict=True):
        if old.status == new.status and old.attempt == new.attempt:
            continue
        if new.status == S.RETRY_PENDING and old.status != S.RETRY_PENDING:  # scheduled by the rule
            assert old.status == S.IN_PROGRESS and new.attempt == old.attempt + 1, (operation, old, new)
            assert new.auto_retries == old.auto_retries + 1
            ended = new.attempts if history is None else history[new.id]
            assert ended[-1]["status"] == new.retry_reason and ended[-1]["attempt"] == old.attempt
            continue
        if old.status == S.RETRY_PENDING and new.status == S.IDLE:  # a manual retry took it
            assert operation in ("retry_run", "retry_stage") and new.attempt == old.attempt
            continue
        if new.attempt != old.attempt:
            assert operation in ("retry_run", "retry_stage"), operation
            assert old.status in FINAL and new.status == S.IDLE and new.attempt == old.attempt + 1
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
    if changed:
        schedule_retries(before, aggregate, now)  # as mutate_run does after every change
        aggregate.refresh(now)
    else:
        assert aggregate == before, f"{operation} reported no change but changed the run"
    return changed, None


def expect_outcome(operation, before, after, changed, args) -> None:
    """What each operation promises, beyond the generic invariants."""
    if operation == "cancel_run":
        if changed:
            assert after.run.status == S.CANCELLED
            assert not any(s.status in ACTIVE or s.status == S.IDLE for s in after.stages)
        else:
            assert before.run.status in FINAL
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
        )
    if operation in ("retry_run", "retry_stage") and changed:
        # a pending automatic retry is taken, not refused (domain/retries.py)
        assert not any(s.status in ACTIVE - {S.RETRY_PENDING} for s in before.stages
                       if operation == "retry_run")


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


# ---- automatic retry policies (domain/retries.py) -------------------------------------------------

retry_policies = st.fixed_dictionaries({  # the simplest draws (which come first) retry the most
    "max": st.integers(0, 2).map(lambda n: 3 - n),
    "when": st.sampled_from([["FAILURE", "TIMED_OUT"], ["FAILURE"], ["TIMED_OUT"]]),
    "backoffSeconds": st.sampled_from([5, 0, 20]),
})


class RetryPolicyMachine(RuleBasedStateMachine):
    """Runs whose stages carry random retry policies (one none), driven by what makes and meets
    automatic retries: stages started and ending (by a report or their timeout), the stage
    timers (a sweep), time passing, cancels, manual retries and approvals. Every ended attempt
    that ran is retried exactly as its policy says, a pending retry starts only when due and in
    its own attempt, a cancel wins and a manual retry takes it (the checks of ``_do``)."""

    _do = OperationsMachine._do
    consistent = OperationsMachine.consistent

    @initialize(approvals=stage_specs, policies=st.lists(retry_policies, min_size=5, max_size=5),
                bare=positions, timeout=st.sampled_from([None, 5, 60]))
    def start(self, approvals, policies, bare, timeout):
        self.clock = FakeClock("2026-03-20T17:17:13.760Z")
        specs = [StageSpec(type="OTHER", name=f"s{i}", approval=a, timeout_seconds=timeout,
                           retry_policy=None if i == bare else policies[i]) for i, a in enumerate(approvals)]
        self.aggregate = new_run("web", 1, specs, self.clock.now())
        self._do("patch", i=0, status=S.IN_PROGRESS)  # under way: most steps then meet retries

    @rule(seconds=seconds)
    def advance(self, seconds):
        self.clock.advance(seconds)

    @rule(i=positions)
    def start_stage(self, i):
        self._do("patch", i=i, status=S.IN_PROGRESS)

    @rule(i=positions, ending=st.sampled_from([S.FAILURE, S.TIMED_OUT, S.SUCCESS]))
    def end_stage(self, i, ending):
        self._do("patch", i=i, status=ending)

    @rule(ending=st.sampled_from([S.FAILURE, S.TIMED_OUT]))
    def fail_running(self, ending):
        running = [i for i, s in enumerate(self.aggregate.stages) if s.status == S.IN_PROGRESS]
        if running:
            self._do("patch", i=running[0], status=ending)

    @rule(seconds=st.sampled_from([30, 0, 1, 5, 10, 90]))  # the first (simplest) lets any backoff pass
    def timers(self, seconds):  # time passes, then every stage's timer, as a sweep does
        self.clock.advance(seconds)
        for i, stage in enumerate(self.aggregate.stages):
            was, due = (stage.status, stage.attempt), stage.next_retry_at
            self._do("timer", i=i)
            now = self.aggregate.stages[i]
            if was[0] == S.RETRY_PENDING:  # starts when due, never before, in its own attempt
                assert (now.status != S.RETRY_PENDING) == (due <= self.clock.now())
                assert now.attempt == was[1]

    # people's operations, once a retry happened (earlier, they mostly end the run before any)
    @precondition(lambda self: any(s.auto_retries for s in self.aggregate.stages))
    @rule(i=positions)
    def cancel_stage(self, i):
        self._do("cancel_stage", i=i)

    @precondition(lambda self: any(s.auto_retries for s in self.aggregate.stages))
    @rule()
    def cancel_run(self):
        self._do("cancel_run")

    @precondition(lambda self: any(s.auto_retries for s in self.aggregate.stages))
    @rule(i=positions)
    def retry_stage(self, i):
        self._do("retry_stage", i=i)

    @precondition(lambda self: any(s.auto_retries for s in self.aggregate.stages))
    @rule(scope=st.sampled_from(["FAILED", "ALL"]))
    def retry_run(self, scope):
        self._do("retry_run", scope=scope)

    @rule(i=positions)
    def approve(self, i):
        self._do("approve", i=i)

    @invariant()
    def ended_attempts_were_retried_as_the_policy_says(self):
        if not hasattr(self, "aggregate"):
            return
        for stage in self.aggregate.stages:
            policy = stage.retry_policy
            if policy is None or stage.status not in (S.FAILURE, S.TIMED_OUT):
                continue
            if stage.status.value in policy["when"] and stage.started_at is not None:
                # a failure that ran and was not retried: the budget is spent
                assert stage.auto_retries == policy["max"] or stage.attempt >= ops.MAX_ATTEMPTS


RetryPolicyMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, derandomize=True, database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # a failure is reported unshrunk: fast
)
test_retry_policies_on_the_pure_domain = RetryPolicyMachine.TestCase


# ---- the same through the service and the store (moto) -----------------------------------------

