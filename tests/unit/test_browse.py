"""Issue 13's API for finding things on the in-memory stores (the cases: tests/fixtures/browse_cases.py;
the same cases on moto's DynamoDB: tests/integration/test_browse.py)."""
from __future__ import annotations

import pytest
from chalice.test import Client

from tests.fixtures.api import ApiClient
from tests.fixtures.browse_cases import *  # noqa: F403  (the shared test cases)
from tests.fixtures.browse_cases import runs  # noqa: F401  (a fixture)


@pytest.fixture
def api(memory_ctx):
    from app import app

    with Client(app) as client:
        yield ApiClient(client, admin_token=memory_ctx.settings.admin_token)
