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
- an operation that is refused changes nothing;
- a stopped or cancelled run (``stopping``) is CANCELLING while a stage is active, else
  CANCELLED; it has no stage left to start but ``always`` ones; only running stages carry a
  stop's grace end (``StopMachine`` adds finally stages, timeouts and the timers).
"""
from __future__ import annotations

import itertools
import json

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
        if stage.status in (S.IDLE, S.RETRY_PENDING):
            assert stage.started_at is None and stage.ended_at is None and stage.duration_ms is None
        check_retry(stage)
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
    if operation == "force_cancel":
        return ops.cancel_run(aggregate, now, actor="h", reason=None, force=True)
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
        schedule_retries(before, aggregate, now)
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
    if operation == "force_cancel":
        if changed:  # nothing runs and nothing will start, finally stages included: CANCELLED now
            assert after.run.status == S.CANCELLED and after.run.cancellation["force"] is True
            assert all(s.status in FINAL for s in after.stages)
            for old, new in zip(before.stages, after.stages, strict=True):
                if old.status in ACTIVE:
                    assert new.status == S.CANCELLED
                elif old.status == S.IDLE:
                    assert new.status in (S.SKIPPED, S.CANCELLED)
                else:
                    assert new.status == old.status
        else:  # finished, with no finally stage left to start
            assert before.run.status in FINAL
            assert not any(s.status == S.IDLE and s.always for s in before.stages)
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


# ---- graceful stop, finally stages, the run's deadline (domain/operations.py, timers.py) ------------

class StopMachine(OperationsMachine):
    """The operations above on runs with ``always`` (finally) stages, stage timeouts and a whole-run
    ``timeoutSeconds``, some driven by the run driver, plus the timers firing as a sweep does:
    after a sweep no stage runs past a stop's grace end or the run's deadline (finally stages
    excepted), and a finally stage is never skipped by a stop, a cancel or a failure -- only by a
    force-cancel, after which the run is CANCELLED with every stage final, until a retry."""

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

    @rule()
    def force_cancel(self):
        """GitHub's force-cancel, Argo's terminate: finally stages skipped or cancelled too."""
        self._do("force_cancel")
        self.force_cancelled = self.aggregate.run.cancellation is not None and bool(
            self.aggregate.run.cancellation.get("force"))

    def _do(self, operation, **args):
        before = self.aggregate.snapshot()
        super()._do(operation, **args)
        if operation not in ("patch", "force_cancel"):  # only these may skip a finally stage
            for old, new in zip(before.stages, self.aggregate.stages, strict=True):
                assert not (new.always and new.status == S.SKIPPED and old.status != S.SKIPPED), operation

    @invariant()
    def a_force_cancelled_run_stays_cancelled_until_a_retry(self):
        """Once force-cancelled, nothing starts again by itself (the driver, the timers): the run
        stays CANCELLED, never CANCELLING, until a retry takes it up (clearing ``stopping``)."""
        if not getattr(self, "force_cancelled", False):
            return
        run = self.aggregate.run
        if run.stopping is None or not run.stopping.get("force"):
            self.force_cancelled = False  # retried (or a later plain stop/cancel record)
            return
        assert run.status == S.CANCELLED
        assert all(s.status in FINAL for s in self.aggregate.stages)


StopMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=30, deadline=None, derandomize=True, database=None,
)
test_stop_finally_and_deadline_on_the_pure_domain = StopMachine.TestCase


# ---- the same through the service and the store (moto) -----------------------------------------



# ---- concurrency groups (issue 15 item 2): the pure rules, then through the service -------------

class GroupRulesMachine(RuleBasedStateMachine):
    """``domain/concurrency.py`` alone: runs arrive under either mode (a group may be shared by
    QUEUED and SUPERSEDED runs, and QUEUED ones under either queue discipline), end, are
    cancelled while they wait, come back (a retry). Each run is "active", "queued" or "ended"
    here, as the service would write it from the rules' answers. After every step: at most one
    run is active and it holds the group; every queued run is in the queue, and the queue is in
    arrival order; after a NEWEST run queued, it is the only one waiting (every run that waited
    was named to be replaced); a refused rule changes nothing."""

    @initialize()
    def start(self):
        from chalicelib.domain.concurrency import Group

        self.group = Group("web", "g")
        self.state: dict[str, str] = {}
        self.arrived: list[str] = []

    @rule(mode=st.sampled_from(["QUEUED", "SUPERSEDED", "NEWEST"]))
    def create(self, mode):
        """NEWEST: a QUEUED run under the NEWEST queue discipline (GitHub's one pending run)."""
        from chalicelib.domain.concurrency import QUEUE, SUPERSEDE, Mode, Queue, QueueFull, admit

        run_id = f"web:{len(self.arrived) + 1}"
        newest = mode == "NEWEST"
        waiting_before = [r for r, s in self.state.items() if s == "queued"]
        try:
            admission = admit(self.group, run_id, Mode.QUEUED if newest else Mode(mode),
                              Queue.NEWEST if newest else Queue.ALL)
        except QueueFull:
            assert len(self.group.queue) >= 50 and not newest
            return
        if admission.kind == SUPERSEDE:
            assert self.state[admission.superseded] == "active"
            self.state[admission.superseded] = "ended"  # cancelled with the create
        assert set(waiting_before) <= set(admission.replaced) or not (newest and admission.kind == QUEUE)
        for replaced in admission.replaced:  # cancelled with the create if still waiting
            assert newest and replaced in self.group.queue
            if self.state[replaced] == "queued":
                self.state[replaced] = "ended"
        self.state[run_id] = "queued" if admission.kind == QUEUE else "active"
        self.arrived.append(run_id)
        self.group = admission.group
        if admission.kind == QUEUE:  # the discipline of the latest run to wait
            self.newest_last = newest

    @rule(n=st.integers(0, 30))
    def end(self, n):
        from chalicelib.domain.concurrency import release

        if not self.arrived:
            return
        run_id = self.arrived[n % len(self.arrived)]
        if self.state[run_id] == "queued":  # cancelled while waiting: it leaves the queue
            self.state[run_id] = "ended"
            return
        if self.state[run_id] != "active":
            return
        self.state[run_id] = "ended"
        waiting = {r for r, s in self.state.items() if s == "queued"}
        freed = release(self.group, run_id, waiting)
        if freed is None:
            assert self.group.active != run_id
            return
        if freed.promoted is not None:
            assert self.state[freed.promoted] == "queued"
            assert all(self.state[r] != "queued" for r in freed.dropped)  # only stale ids dropped
            self.state[freed.promoted] = "active"
        self.group = freed.group

    @rule(n=st.integers(0, 30))
    def retry(self, n):
        from chalicelib.domain.concurrency import GroupBusy, reacquire

        if not self.arrived:
            return
        run_id = self.arrived[n % len(self.arrived)]
        if self.state[run_id] != "ended":
            return
        before = self.group
        try:
            taken = reacquire(self.group, run_id)
        except GroupBusy:
            assert self.group == before and self.group.active is not None
            return
        self.group = taken or self.group
        self.state[run_id] = "active"

    @invariant()
    def one_active_holding_the_group(self):
        if not hasattr(self, "group"):
            return
        active = [r for r, s in self.state.items() if s == "active"]
        assert len(active) <= 1, self.state
        assert self.group.active == (active[0] if active else self.group.active)
        if self.group.active is not None and not active:
            assert self.state[self.group.active] == "ended"  # held by a run that ended: released next
        queued = [r for r, s in self.state.items() if s == "queued"]
        assert set(queued) <= set(self.group.queue)
        assert list(self.group.queue) == sorted(self.group.queue, key=self.arrived.index)
        if queued:
            assert self.group.active is not None  # nobody waits for a free group
        if getattr(self, "newest_last", False):  # the latest run to wait was NEWEST: it alone may
            assert len(queued) <= 1 and len(self.group.queue) <= 1


GroupRulesMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None, derandomize=True, database=None,
)
test_concurrency_group_rules_on_the_pure_domain = GroupRulesMachine.TestCase


# ---- concurrency groups (issue 15 item 2): many runs of one group, through the service ---------

class ConcurrencyGroupMachine(RuleBasedStateMachine):
    """Runs of one QUEUED (either queue discipline) or SUPERSEDED group created, started, ended,
    cancelled, retried and deleted in any order, GoCD's releaseLock, and a holder's end whose
    release is lost (the writer died after its commit) until the sweeper's pass. After every step:
    - at most one run of the group is active (neither final nor QUEUED), the runs a releaseLock
      let go aside (they run on by design), and it is the group's holder;
    - the group's queue is exactly its QUEUED runs, oldest first, and a QUEUED run has only IDLE
      stages; QUEUED runs exist only while the group is held (by a run that is active, or ended
      with its release lost and not yet swept);
    - a refused operation changes nothing;
    - NEWEST: at most one run waits, and a run replaced was cancelled by a newer one.
    ``ctx_factory`` builds the context (memory here; moto in tests/integration)."""

    _pipelines = itertools.count(1)

    def ctx_factory(self, clock):
        from chalicelib import wiring
        from chalicelib.settings import Settings

        return wiring.memory_context(Settings(table_name="stagetrack-test", region="us-east-1"), clock)

    @initialize(mode=st.sampled_from(["QUEUED", "SUPERSEDED", "NEWEST"]))
    def start(self, mode):
        """NEWEST: QUEUED with the NEWEST queue discipline (GitHub's one pending run)."""
        from chalicelib.domain.concurrency import Mode, Queue
        from chalicelib.service import concurrency

        self.clock = FakeClock("2026-03-20T17:17:13.760Z")
        self.ctx = self.ctx_factory(self.clock)
        # a pipeline of its own per example: a context may be shared (tests/integration)
        self.pipeline = f"web{next(ConcurrencyGroupMachine._pipelines)}"
        self.newest = mode == "NEWEST"
        self.mode = Mode.QUEUED if self.newest else Mode(mode)
        self.counter = 1
        self.released: set[str] = set()  # let go by releaseLock while active
        self.lost = False  # a holder ended and its release was lost
        self._create()  # run 1, before the setting: outside any group
        concurrency.set_setting(self.ctx, self.pipeline, self.mode, None,
                                Queue.NEWEST if self.newest else Queue.ALL)

    def _create(self):
        from chalicelib.domain.schemas import CreateRunIn
        from chalicelib.service import runs

        body = CreateRunIn.model_validate_json(json.dumps({"pipeline": self.pipeline,
                                                           "stages": ["BUILD", "DEPLOY_PROD"]}))
        self.counter = runs.create_run(self.ctx, body, actor="alice").run.counter

    def _run(self, n):
        return f"{self.pipeline}:{(n % self.counter) + 1}"

    def _all(self):
        from chalicelib.service import runs

        found = {}
        for n in range(1, self.counter + 1):
            try:
                found[f"{self.pipeline}:{n}"] = runs.get_run(self.ctx, f"{self.pipeline}:{n}")
            except DomainError:
                continue
        return found

    def _try(self, action):
        before = {k: (v.run.version, v.run.status) for k, v in self._all().items()}
        try:
            action()
        except DomainError:
            assert {k: (v.run.version, v.run.status) for k, v in self._all().items()} == before

    @rule()
    def create(self):
        self._try(self._create)

    @rule(n=st.integers(0, 20), status=st.sampled_from([S.IN_PROGRESS, S.SUCCESS, S.FAILURE]),
          position=st.sampled_from([1, 2]))
    def patch(self, n, status, position):
        from chalicelib.domain.schemas import PatchStageIn
        from chalicelib.service import runs

        stage_id = f"{self._run(n)}:{position}"
        self._try(lambda: runs.patch_stage(self.ctx, stage_id, PatchStageIn(status=status)))

    @rule(n=st.integers(0, 20))
    def cancel(self, n):
        from chalicelib.service import operations

        self._try(lambda: operations.cancel_run(self.ctx, self._run(n), actor="bob"))

    @rule(n=st.integers(0, 20))
    def retry(self, n):
        from chalicelib.service import operations

        self._try(lambda: operations.retry_run(self.ctx, self._run(n), ops.SCOPE_ALL))

    @rule(n=st.integers(0, 20))
    def delete(self, n):
        from chalicelib.service import runs

        self._try(lambda: runs.delete_run(self.ctx, self._run(n)))

    @rule()
    def release_lock(self):
        from chalicelib.service import concurrency

        group = self.ctx.stores.groups.get(self.pipeline, self.pipeline)
        holder = group.active if group else None
        concurrency.release_lock(self.ctx, self.pipeline)
        if holder is not None:
            self.released.add(holder)

    @rule(n=st.integers(0, 20))
    def end_and_lose_the_release(self, n):
        """The change that ends a run commits, and its writer dies before freeing the group."""
        from chalicelib.domain.schemas import PatchStageIn
        from chalicelib.service import concurrency, runs

        real = concurrency.after_save
        concurrency.after_save = lambda *args: None
        try:
            run_id = self._run(n)
            self._try(lambda: runs.patch_stage(self.ctx, f"{run_id}:1", PatchStageIn(status=S.FAILURE)))
        finally:
            concurrency.after_save = real
        self.lost = True

    @rule()
    def sweep(self):
        from chalicelib.service import timers

        self.clock.advance(61)
        timers.sweep(self.ctx)
        self.lost = False

    @invariant()
    def one_active_at_most(self):
        if not hasattr(self, "ctx"):
            return
        found = self._all()
        group = self.ctx.stores.groups.get(self.pipeline, self.pipeline)
        holder = group.active if group else None
        queue = list(group.queue) if group else []
        active = [k for k, a in found.items() if a.run.concurrency_group is not None
                  and a.run.status not in FINAL and a.run.status != S.QUEUED and k not in self.released]
        assert len(active) <= 1, {k: a.run.status for k, a in found.items()}
        if active:
            assert holder == active[0]
        queued = [k for k, a in found.items() if a.run.status == S.QUEUED]
        assert queue == queued == sorted(queued, key=lambda k: int(k.rsplit(":", 1)[1]))
        for run_id in queued:
            assert all(s.status == S.IDLE for s in found[run_id].stages)
        if queued and not self.lost:  # a run waits only behind an active holder
            assert holder is not None and holder in found and found[holder].run.status not in FINAL
        if self.newest:  # never two waiting; a replaced run names the newer run that replaced it
            assert len(queued) <= 1
            for run_id, aggregate in found.items():
                reason = (aggregate.run.cancellation or {}).get("reason") or ""
                if reason.startswith("replaced by run "):
                    newer = reason[len("replaced by run "):]
                    assert int(newer.rsplit(":", 1)[1]) > int(run_id.rsplit(":", 1)[1])
                    assert not aggregate.run.queued  # (a retry may have taken it up since)


ConcurrencyGroupMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None, derandomize=True, database=None,
)
test_concurrency_groups_through_the_service = ConcurrencyGroupMachine.TestCase
