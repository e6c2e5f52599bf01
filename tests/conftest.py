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

from hypothesis import Phase  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402

from chalicelib.settings import Settings  # noqa: E402
from tests.fixtures.clock import FakeClock  # noqa: E402

# `make mutate` runs the property tests once per mutant with ``--hypothesis-profile=mutation``
# ([tool.mutmut] in pyproject.toml): a failing example kills the mutant, so shrinking it to the
# smallest one (seconds of a busy machine per mutant, the bulk of the run) is skipped. The
# examples tried are the same: the tests' own settings (max_examples, derandomize) still apply.
hypothesis_settings.register_profile("mutation", phases=(Phase.explicit, Phase.reuse, Phase.generate))


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


def pytest_collection_modifyitems(config, items):
    """Under `make mutate` (the ``mutation`` profile) the property tests run after the others:
    mutmut stops at the first failing test, so a mutant a fast test kills never waits for the
    seconds of a property test, which then runs only for mutants the others let through."""
    if config.getoption("hypothesis_profile", None) != "mutation":
        return
    from hypothesis import is_hypothesis_test

    items.sort(key=lambda item: is_hypothesis_test(getattr(item, "obj", None)))
