"""The local timer: `make run` sweeps due timers on a daemon thread, since `chalice local` runs
no schedules, streams or Step Functions. It calls the very same ``service.timers.sweep`` as the
AWS sweeper, so timeouts, expectedSeconds and the run driver behave the same on a laptop; and
then fires the due schedules (``service.schedules.fire_due``), as the AWS sweeper does."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from . import wiring
from .service import ServiceContext
from .service.schedules import fire_due
from .service.timers import sweep

log = logging.getLogger(__name__)


class Ticker:
    """Calls ``tick`` every ``interval`` seconds until stopped; a failing tick is logged and
    the next one still runs (DynamoDB Local restarting must not kill the timers for good)."""

    def __init__(self, tick: Callable[[], object], interval: float) -> None:
        self.tick = tick
        self.interval = interval
        self.ticks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stagetrack-ticker", daemon=True)

    def start(self) -> Ticker:
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def tick_once(self) -> None:
        try:
            self.tick()
        except Exception:  # noqa: BLE001 - keep ticking whatever happened
            log.exception("local ticker: sweep failed; retrying next tick")
        self.ticks += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick_once()


def minute_tick(ctx: ServiceContext) -> None:
    """What the AWS sweeper does every minute: due stage timers, then due schedules (a failed
    sweep does not hold the schedules back)."""
    try:
        sweep(ctx)
    finally:
        fire_due(ctx)


_ticker: Ticker | None = None


def start_local(interval: float) -> Ticker:
    """Start the process's one ticker (idempotent), sweeping with the wired service context."""
    global _ticker
    if _ticker is None or not _ticker.alive:
        _ticker = Ticker(lambda: minute_tick(wiring.context()), interval).start()
    return _ticker
