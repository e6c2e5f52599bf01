"""Builds the service context once per Lambda container (or per test, via override)."""
from __future__ import annotations

from .domain.clock import SystemClock
from .service import ServiceContext
from .settings import Settings

_context: ServiceContext | None = None


def context() -> ServiceContext:
    global _context
    if _context is None:
        from .store.repository import Repository

        settings = Settings.from_env()
        _context = ServiceContext(repo=Repository(settings), clock=SystemClock())
    return _context


def override(ctx: ServiceContext | None) -> None:
    """Tests and the local runner swap in their own repository or clock."""
    global _context
    _context = ctx
