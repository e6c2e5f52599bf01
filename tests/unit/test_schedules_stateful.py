"""Schedules as a hypothesis state machine (issue 15 item 4): random sequences of creates,
changes, enables, deletes, pauses, time passing, sweeper ticks and EventBridge wake-ups (on time,
late, early, repeated, for deleted schedules) on the in-memory stores with the injected clock.

After every step:
- one run per (schedule, fire time), never fired before its fire time, and each fire time one
  the schedule's cron names;
- no run while the pipeline is paused (a firing then is a skip, noted on the schedule);
- no run for a schedule after its delete;
- the EventBridge wake-ups are exactly those the stored schedules call for
  (``domain.schedules.wakeups_of``): the sync never leaves one behind nor misses one;
- after a sweeper tick, no enabled schedule is left due beyond the backstop grace.
"""
from __future__ import annotations

import json
from datetime import timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from chalicelib import wiring
from chalicelib.adapters.scheduler import MemoryWakeUps
from chalicelib.domain import cron as cron_rules
from chalicelib.domain import schedules as rules
from chalicelib.domain.clock import parse_iso
from chalicelib.domain.schemas import CreateRunIn, CreateScheduleIn, PatchScheduleIn
from chalicelib.service import pipelines, runs
from chalicelib.service import schedules as service
from chalicelib.settings import Settings
from tests.fixtures.clock import FakeClock

# EventBridge expresses the first three (one or two wake-ups); the last only the sweeper fires
CRONS = ["*/7 * * * *", "0 * * * *", "30 2 13 * FRI", "*/10 * */2 * MON"]
ZONES = ["UTC", "Europe/Paris", "America/New_York"]


class SchedulesMachine(RuleBasedStateMachine):
    schedules = Bundle("schedules")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock("2026-03-28T23:50:00.000Z")  # Paris and New York change clocks soon
        self.wakeups = MemoryWakeUps()
        self.ctx = wiring.memory_context(Settings(table_name="unused", region="us-east-1"), self.clock)
        self.ctx.wakeups = self.wakeups
        runs.create_run(self.ctx, CreateRunIn.model_validate_json('{"pipeline": "web", "stages": ["BUILD"]}'),
                        actor="alice")
        self.paused = False
        self.deleted: dict[str, object] = {}  # id -> the moment it was deleted
        self.known: dict[str, list[tuple[object, str, str]]] = {}  # id -> [(since, cron, zone)]
        self.runs_seen = self._scheduled_runs()

    # ---- helpers ---------------------------------------------------------------------------

    def _scheduled_runs(self) -> set[str]:
        found, _ = self.ctx.stores.runs.list_runs("web", None, 1000, None)
        return {r.id for r in found if r.source == rules.SOURCE}

    def _firings(self) -> dict[str, str]:
        """link key (schedule id @ fire time) -> run id."""
        return {key: run for (ns, key), run in self.ctx.stores.links.db.links.items()
                if ns == rules.LINK_NAMESPACE}

    # ---- rules -----------------------------------------------------------------------------

    @rule(target=schedules, cron=st.sampled_from(CRONS), zone=st.sampled_from(ZONES), enabled=st.booleans())
    def create(self, cron, zone, enabled):
        body = {"cron": cron, "timeZone": zone, "enabled": enabled}
        made = service.create(self.ctx, "web", CreateScheduleIn.model_validate_json(json.dumps(body)),
                              actor="alice")
        self.known[made.id] = [(self.clock.now(), cron, zone)]
        return made.id

    @rule(schedule_id=schedules, cron=st.sampled_from(CRONS), zone=st.sampled_from(ZONES))
    def change(self, schedule_id, cron, zone):
        if schedule_id in self.deleted:
            return
        body = {"cron": cron, "timeZone": zone}
        service.change(self.ctx, "web", schedule_id, PatchScheduleIn.model_validate_json(json.dumps(body)))
        self.known[schedule_id].append((self.clock.now(), cron, zone))

    @rule(schedule_id=schedules, enabled=st.booleans())
    def enable(self, schedule_id, enabled):
        if schedule_id in self.deleted:
            return
        body = {"enabled": enabled}
        service.change(self.ctx, "web", schedule_id, PatchScheduleIn.model_validate_json(json.dumps(body)))

    @rule(schedule_id=consumes(schedules))
    def delete(self, schedule_id):
        if schedule_id not in self.deleted:
            service.delete(self.ctx, "web", schedule_id)
            self.deleted[schedule_id] = self.clock.now()

    @rule(paused=st.booleans())
    def pause(self, paused):
        if paused and not self.paused:
            pipelines.pause(self.ctx, "web", actor="alice", cause="freeze")
        elif not paused and self.paused:
            pipelines.unpause(self.ctx, "web")
        self.paused = paused

    @rule(seconds=st.sampled_from([1, 30, 59, 61, 119, 121, 600, 3600, 86400 * 3]))
    def advance(self, seconds):
        self.clock.advance(seconds)

    @rule()
    def sweep(self):
        before = self._scheduled_runs()
        service.fire_due(self.ctx, self.clock.now())
        self._check_new_runs(before)
        overdue = self.clock.now() - rules.BACKSTOP_GRACE
        for schedule in self.ctx.stores.schedules.list_for("web"):
            if schedule.enabled and schedule.next_fire_at is not None:
                assert schedule.next_fire_at > overdue, (schedule.id, schedule.next_fire_at)

    @rule(schedule_id=schedules, skew=st.sampled_from([0, 1, 4, 6, -30, -200]))
    def wake(self, schedule_id, skew):
        """A wake-up at the schedule's fire time (skew 0), a little early, or late: EventBridge
        only wakes; the store decides."""
        stored = self.ctx.stores.schedules.get("web", schedule_id)
        at = stored.next_fire_at if stored is not None and stored.next_fire_at else self.clock.now()
        self.clock.set(max(self.clock.now(), at - timedelta(seconds=skew)))
        before = self._scheduled_runs()
        outcome = service.fire_woken(self.ctx, "web", schedule_id, at)
        self._check_new_runs(before)
        if schedule_id in self.deleted:
            assert outcome == service.GONE

    def _check_new_runs(self, before: set[str]) -> None:
        created = self._scheduled_runs() - before
        if self.paused:
            assert created == set()
        self.runs_seen |= created

    # ---- invariants ------------------------------------------------------------------------

    @invariant()
    def one_run_per_fire_time_never_early_and_at_a_cron_time(self):
        firings = self._firings()
        assert set(firings.values()) == self.runs_seen  # every run has its own firing, no two
        for key, run_id in firings.items():
            schedule_id, _, at = key.partition("@")
            fire_at = parse_iso(at)
            run = self.ctx.stores.runs.load_run(run_id).run
            assert run.created_at >= fire_at - rules.WAKE_TOLERANCE, (key, run.created_at)
            if schedule_id in self.deleted:
                assert fire_at <= self.deleted[schedule_id] + rules.WAKE_TOLERANCE  # woken early
            # the fire time is one the schedule's cron named at some point (before a change)
            assert any(cron_rules.next_fire(cron_rules.parse(c), cron_rules.zone(z),
                                            fire_at - timedelta(seconds=1)) == fire_at
                       for _since, c, z in self.known[schedule_id]), key

    @invariant()
    def wakeups_are_exactly_what_the_stored_schedules_call_for(self):
        wanted = {w.name: w for s in self.ctx.stores.schedules.list_for("web") for w in rules.wakeups_of(s)}
        assert self.wakeups.wakeups == wanted


TestSchedulesMachine = SchedulesMachine.TestCase
TestSchedulesMachine.settings = settings(max_examples=60, stateful_step_count=25, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])
