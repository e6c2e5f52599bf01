"""Starts the timer workflow (infra/timer_state_machine.asl.json) for one stage attempt."""
from __future__ import annotations

import hashlib
import json
import os
import re

from ..service.ports import DueTimer

STATE_MACHINE_ENV = "STAGETRACK_TIMER_STATE_MACHINE_ARN"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def execution_name(timer: DueTimer) -> str:
    """Deterministic per (stage, attempt, due moment), so a redelivered stream record cannot
    start a second workflow for the same timer; readable prefix, at most 80 characters."""
    digest = hashlib.sha256(f"{timer.stage_id}|{timer.attempt}|{timer.due_at}".encode()).hexdigest()
    return f"{_UNSAFE.sub('_', timer.stage_id)[:48]}-a{timer.attempt}-{digest[:16]}"[:80]


def execution_arn(state_machine_arn: str, name: str) -> str:
    """arn:<partition>:states:<region>:<account>:execution:<machine name>:<execution name>."""
    return state_machine_arn.replace(":stateMachine:", ":execution:", 1) + ":" + name


def execution_input(timer: DueTimer, wait_seconds: int) -> dict:
    return {"stageId": timer.stage_id, "attempt": timer.attempt, "dueAt": timer.due_at,
            "waitSeconds": wait_seconds}


class StepFunctionsScheduler:
    """One Standard workflow execution per armed timer: Wait ``waitSeconds``, then hand
    ``{stageId, attempt}`` to the timeout handler through the timer queue. A stale timer's
    execution is found again by its name (``execution_name``) and stopped."""

    def __init__(self, state_machine_arn: str, client=None) -> None:
        self.state_machine_arn = state_machine_arn
        self._client = client

    @property
    def client(self):
        if self._client is None:
            import botocore.session

            region = self.state_machine_arn.split(":")[3] or None
            self._client = botocore.session.get_session().create_client(
                "stepfunctions", region_name=region)
        return self._client

    def start(self, timer: DueTimer, wait_seconds: int) -> None:
        try:
            self.client.start_execution(
                stateMachineArn=self.state_machine_arn, name=execution_name(timer),
                input=json.dumps(execution_input(timer, wait_seconds), separators=(",", ":")),
            )
        except self.client.exceptions.ExecutionAlreadyExists:
            pass  # this timer was already started (a redelivered stream record)

    def stop(self, timer: DueTimer) -> None:
        """Stopping an execution that ended already changes nothing; one that was never
        started (its record's retries ran out: the sweeper fired it) is no error either."""
        try:
            self.client.stop_execution(
                executionArn=execution_arn(self.state_machine_arn, execution_name(timer)),
                error="TimerStale", cause="the stage ended, was removed or got another deadline",
            )
        except self.client.exceptions.ExecutionDoesNotExist:
            pass


_scheduler: StepFunctionsScheduler | None = None


def scheduler() -> StepFunctionsScheduler:
    """The process-wide scheduler, built from the environment on first use."""
    global _scheduler
    if _scheduler is None:
        arn = os.environ.get(STATE_MACHINE_ENV)
        if not arn:
            raise RuntimeError(f"{STATE_MACHINE_ENV} is not set; timers cannot be started")
        _scheduler = StepFunctionsScheduler(arn)
    return _scheduler


def override(value: StepFunctionsScheduler | None) -> None:
    """Tests install a scheduler bound to moto's client."""
    global _scheduler
    _scheduler = value
