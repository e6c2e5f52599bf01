"""Use cases. Each takes a ServiceContext (repository + clock) and domain inputs."""
from __future__ import annotations

from dataclasses import dataclass

from ..domain.clock import Clock
from ..store.repository import Repository


@dataclass
class ServiceContext:
    repo: Repository
    clock: Clock
