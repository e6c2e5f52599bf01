"""Shared bench plumbing: a DynamoDB Local, a service bound to it, a call recorder."""
from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

ADMIN_TOKEN = os.environ.get("STAGETRACK_ADMIN_TOKEN", "stagetrack-local-admin")


@contextlib.contextmanager
def dynamodb_local():
    from tests.fixtures.ddb_local import DynamoDBLocal

    with DynamoDBLocal() as endpoint:
        yield endpoint


@contextlib.contextmanager
def record_calls() -> Iterator[list[tuple[str, dict]]]:
    """Records every DynamoDB API call (operation, params) made through botocore."""
    import botocore.client

    calls: list[tuple[str, dict]] = []
    original = botocore.client.BaseClient._make_api_call

    def recording(self, operation_name, api_params):
        if self.meta.service_model.service_name == "dynamodb":
            calls.append((operation_name, json.loads(json.dumps(api_params))))
        return original(self, operation_name, api_params)

    botocore.client.BaseClient._make_api_call = recording
    try:
        yield calls
    finally:
        botocore.client.BaseClient._make_api_call = original


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000
