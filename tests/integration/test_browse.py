"""Issue 13's API for finding things on moto's DynamoDB: the Queries of store/finder.py behind the
same cases the unit tier runs in memory (tests/fixtures/browse_cases.py)."""
from __future__ import annotations

import pytest

from tests.fixtures.browse_cases import *  # noqa: F403  (the shared test cases)
from tests.fixtures.browse_cases import runs  # noqa: F401  (a fixture)


@pytest.fixture
def api(client):
    return client
