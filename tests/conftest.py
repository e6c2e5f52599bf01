"""Fixtures every tier uses: a fake clock and test settings. The AWS-backed fixtures (moto,
DynamoDB Local, chalice local) live in tests/fixtures/backends.py and are imported by the
conftest.py of tests/integration and tests/e2e only; tests/unit/conftest.py keeps that tier off
AWS and the network."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.pop("STAGETRACK_DYNAMODB_ENDPOINT", None)

from chalicelib.settings import Settings  # noqa: E402
from tests.fixtures.clock import FakeClock  # noqa: E402


@pytest.fixture
def clock():
    return FakeClock("2026-03-20T17:17:13.760Z")


@pytest.fixture
def settings():
    return Settings(table_name="stagetrack-test", region="us-east-1", max_body_bytes=64 * 1024)


@pytest.fixture
def memory_ctx(settings, clock):
    """A service context on the in-memory stores (store/memory.py): no moto, no network, so
    every tier may use it."""
    from chalicelib import wiring

    context = wiring.memory_context(settings, clock)
    wiring.override(context)
    yield context
    wiring.override(None)
