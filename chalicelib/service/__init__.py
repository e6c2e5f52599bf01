"""Use cases. Each takes a ServiceContext (stores behind ports, clock, settings) and domain inputs."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..domain.clock import Clock
from ..domain.cursors import CursorCodec
from ..settings import Settings
from .ports import Metrics, NoMetrics, NoWakeUps, ScheduleWakeUps, SecretBox, Stores


@dataclass
class ServiceContext:
    """What every use case runs with. ``stores`` are the storage ports (service/ports.py),
    built by ``chalicelib/wiring.py`` on DynamoDB or in memory; ``secrets`` makes the secret box
    for the settings (wiring passes one that loads the cipher on first use); ``metrics`` counts
    what the use cases do (runs finished, timers fired, deliveries failed: docs/runbook.md);
    ``wakeups`` keeps EventBridge Scheduler's schedules in step with stagetrack's (none locally)."""

    stores: Stores
    clock: Clock
    settings: Settings
    secrets: Callable[[Settings], SecretBox] | None = None
    metrics: Metrics = field(default_factory=NoMetrics)
    wakeups: ScheduleWakeUps = field(default_factory=NoWakeUps)

    def box(self) -> SecretBox:
        if self.secrets is None:
            raise RuntimeError("this ServiceContext was built without a secret box")
        return self.secrets(self.settings)

    @property
    def cursors(self) -> CursorCodec:
        """The codec that seals listing cursors (the stores use one made the same way)."""
        return CursorCodec(self.settings.secret_key)
