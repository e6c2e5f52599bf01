"""Builds the service context once per Lambda container (or per test, via override)."""
from __future__ import annotations

from . import logging_setup
from .domain.clock import Clock, SystemClock
from .service import ServiceContext
from .service.ports import Metrics, NoMetrics, NoWakeUps, ScheduleWakeUps, SecretBox
from .settings import Settings

_context: ServiceContext | None = None


def secret_box(settings: Settings) -> SecretBox:
    """Imported on first use: only requests that seal or open a secret load the cipher."""
    from .adapters import secretbox

    return secretbox.from_settings(settings)


def metrics(settings: Settings, clock: Clock) -> Metrics:
    """Embedded metric format lines when the settings name a namespace (the deployed stack)."""
    if settings.metrics_namespace is None:
        return NoMetrics()
    from .adapters.metrics import EmfMetrics

    return EmfMetrics(settings.metrics_namespace, clock)


def wakeups(settings: Settings) -> ScheduleWakeUps:
    """EventBridge Scheduler when the settings name a schedule group (the deployed stack);
    otherwise none, and the minute tick fires every schedule (`make run`)."""
    if not settings.schedule_group:
        return NoWakeUps()
    from .adapters import scheduler

    return scheduler.from_settings(settings) or NoWakeUps()


def dynamo_context(settings: Settings, clock: Clock) -> ServiceContext:
    """The stores on DynamoDB (the table ``settings`` name)."""
    from .store.dynamo import build_stores

    return ServiceContext(stores=build_stores(settings), clock=clock, settings=settings, secrets=secret_box,
                          metrics=metrics(settings, clock), wakeups=wakeups(settings))


def memory_context(settings: Settings, clock: Clock) -> ServiceContext:
    """The stores in memory (store/memory.py): the unit tier's context."""
    from .store.memory import build_stores

    return ServiceContext(stores=build_stores(settings), clock=clock, settings=settings, secrets=secret_box)


def context() -> ServiceContext:
    global _context
    if _context is None:
        settings = Settings.from_env()
        if settings.secret_ids:  # a deployed function: the secrets' values, once per container
            from .adapters import secrets

            settings = secrets.resolve(settings)
        logging_setup.scrub_settings(settings)  # event Lambdas never import app.py, which also does
        _context = dynamo_context(settings, SystemClock())
    return _context


def override(ctx: ServiceContext | None) -> None:
    """Tests and the local runner swap in their own context (stores, clock, settings)."""
    global _context
    _context = ctx


def rebuild_launcher(ctx: ServiceContext):
    """How ``POST /api/insights/rebuild`` starts the rebuild (adapters/lambdas.py): an
    asynchronous invoke of the rebuild function when the settings name one (the deployed
    stack); under `make run` (``local_ticker``) a thread of this process running it on ``ctx``;
    anywhere else nothing can run it (the launch fails, so the rebuild is recorded failed
    saying why, rather than a thread outliving the request that started it)."""
    from .adapters import lambdas
    from .service import insights

    function = ctx.settings.insights_rebuild_function
    if function:
        return lambda rebuild_id: lambdas.invoke_async(function, {"rebuild": rebuild_id}, ctx.settings.region)
    if ctx.settings.local_ticker:
        return lambda rebuild_id: lambdas.in_thread(lambda: insights.run_rebuild(ctx, rebuild_id),
                                                    f"insights-rebuild-{rebuild_id}")
    return lambdas.nowhere



