"""The operations state machine of tests/unit/test_stateful.py driven through the service and the
store (moto), against a pure-domain shadow of the run."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import initialize, rule, run_state_machine_as_test

from chalicelib.domain.errors import DomainError
from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
from tests.unit.test_stateful import (
    OperationRules,
    apply_pure,
    check_invariants,
    check_transitions,
    expect_outcome,
    positions,
    stage_specs,
)


@pytest.mark.parametrize("store, examples", [("memory", 40), ("moto", 8)])
def test_operations_through_the_service(request, store, examples, clock):
    """In memory: many runs of operations, cheaply; on moto: the same rules through the DynamoDB
    store, fewer (the store's own contract is tests/integration/test_store_contract.py)."""
    ctx = request.getfixturevalue("memory_ctx" if store == "memory" else "ctx")
    from chalicelib.service import operations as service_ops
    from chalicelib.service import runs
    from chalicelib.service.timers import expire_stage

    def service_call(operation, stage_id, args):
        if operation == "patch":
            runs.patch_stage(ctx, stage_id, PatchStageIn(status=args["status"]))
        elif operation == "cancel_run":
            service_ops.cancel_run(ctx, run_id, actor="h")
        elif operation == "force_cancel":
            service_ops.cancel_run(ctx, run_id, actor="h", force=True)
        elif operation == "stop":
            pipeline, counter = run_id.split(":")
            service_ops.stop_run(ctx, pipeline, counter, actor="h", grace_seconds=args["grace"])
        elif operation == "cancel_stage":
            service_ops.cancel_stage(ctx, stage_id, actor="h")
        elif operation == "retry_run":
            service_ops.retry_run(ctx, run_id, args["scope"])
        elif operation == "retry_stage":
            service_ops.retry_stage(ctx, stage_id)
        elif operation == "approve":
            service_ops.approve_stage(ctx, stage_id, actor="h")
        elif operation == "reject":
            service_ops.reject_stage(ctx, stage_id, actor="h")
        elif operation == "timer":  # the stage's timer: a timeout, or a pending retry starting
            expire_stage(ctx, stage_id, args["attempt"])

    run_id = None

    class ServiceMachine(OperationRules):
        @initialize(approvals=stage_specs)
        def start(self, approvals):
            nonlocal run_id
            # every other stage retries automatically (domain/retries.py), and times out; a
            # fourth stage is a finally stage (what a force-cancel skips and a cancel spares)
            body = {"pipeline": "web", "stages": [
                {"type": "OTHER", "name": f"s{i}", "approval": a, "timeoutSeconds": 60,
                 **({"retry": {"max": 2, "backoffSeconds": 5}} if i % 2 == 0 else {}),
                 **({"always": True} if i == 3 else {})}
                for i, a in enumerate(approvals)]}
            created = runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps(body)))
            run_id = created.run.id
            self.clock = clock
            self.shadow = ctx.stores.runs.load_run(run_id)

        @rule(i=positions)
        def timer(self, i):
            self._do("timer", i=i)

        @rule()
        def force_cancel(self):
            self._do("force_cancel")

        def _do(self, operation, **args):
            if "i" in args:
                args["i"] %= len(self.shadow.stages)
            stage_id = self.shadow.stages[args["i"]].id if "i" in args else None
            if operation == "timer":
                args["attempt"] = self.shadow.stages[args["i"]].attempt
            stored_before = ctx.stores.runs.load_run(run_id)
            history_before = ctx.stores.runs.attempts_of(stored_before.stages)
            changed, expected_error = apply_pure(self.shadow, operation, clock.now(), args)
            try:
                service_call(operation, stage_id, args)
                error = None
            except DomainError as raised:
                error = type(raised)
            assert error == expected_error, (operation, error, expected_error)
            stored = ctx.stores.runs.load_run(run_id)
            history = ctx.stores.runs.attempts_of(stored.stages)  # kept apart, read when asked for
            check_invariants(stored, history)
            check_transitions(stored_before, stored, operation, history)
            expect_outcome(operation, stored_before, stored, changed, args)
            if not changed:
                assert stored == stored_before, f"{operation} wrote although nothing changed"
            # the store holds exactly what the pure rules decided (the shadow, loaded like the
            # store's run, carries only the attempts this step ended)
            for mine, theirs in zip(stored.stages, self.shadow.stages, strict=True):
                assert (mine.status, mine.attempt, history[mine.id], mine.started_at, mine.ended_at,
                        mine.duration_ms, mine.approval_decision, mine.auto_retries, mine.next_retry_at,
                        mine.retry_reason) == \
                       (theirs.status, theirs.attempt, history_before[theirs.id] + theirs.attempts,
                        theirs.started_at,
                        theirs.ended_at, theirs.duration_ms, theirs.approval_decision, theirs.auto_retries,
                        theirs.next_retry_at, theirs.retry_reason)
            assert (stored.run.status, stored.run.started_at, stored.run.ended_at,
                    stored.run.cancellation, stored.run.stopping) == (
                self.shadow.run.status, self.shadow.run.started_at, self.shadow.run.ended_at,
                self.shadow.run.cancellation, self.shadow.run.stopping)
            # the status the store keeps for listings (its counters) is the derived one
            listed, _ = ctx.stores.runs.list_runs("web", stored.run.status, 100, None)
            assert run_id in [run.id for run in listed]
            self.shadow = stored


    run_state_machine_as_test(ServiceMachine, settings=settings(
        max_examples=examples, stateful_step_count=16, deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    ))
